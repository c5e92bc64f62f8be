//! Limits on request bodies, applied to every call before its handler runs
//! (a tower layer in front of all services).
//!
//! * **Uploads in progress**: the client-streamed methods (`Screen`,
//!   `ScreenFingerprints`, `RegisterWork`) may be receiving at most
//!   `max_uploads` request streams at once; one more is refused at once with
//!   `RESOURCE_EXHAUSTED`. This bounds the memory of uploads in progress
//!   (`max_uploads × max_upload_bytes`). The refusal carries the reason
//!   `OVERLOADED` and a retry delay, as a refused CPU job does. A screening or registration takes a
//!   CPU slot (`max_in_flight`) only once its upload is complete, so streams
//!   that never send hold no CPU slot.
//! * **Idle and trickling streams**: a request body that delivers nothing for
//!   `upload_idle` is cut, and so is one still arriving `max_upload_time`
//!   after the call started (a trickle of small messages). The handler gets
//!   `DEADLINE_EXCEEDED` ("no data for 30s (the idle limit): upload cut") as the next message
//!   of its stream and fails the call; the stream's upload slot is freed.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::codegen::{Bytes, Service};

use super::error::ServiceError;
use super::state::Stats;

/// Paths of the client-streamed methods, whose bodies are uploads.
const UPLOAD_PATHS: &[&str] = &[
    "/earmark.v1.Screening/Screen",
    "/earmark.v1.Screening/ScreenFingerprints",
    "/earmark.v1.Registry/RegisterWork",
];

/// The body limits of a server.
#[derive(Clone)]
pub struct UploadLimitLayer {
    gate: Arc<Semaphore>,
    max_uploads: usize,
    idle: Duration,
    max_time: Duration,
    stats: Arc<Stats>,
}

impl UploadLimitLayer {
    pub fn new(max_uploads: usize, idle: Duration, max_time: Duration, stats: Arc<Stats>) -> Self {
        let max_uploads = max_uploads.max(1);
        Self {
            gate: Arc::new(Semaphore::new(max_uploads)),
            max_uploads,
            idle,
            max_time,
            stats,
        }
    }
}

impl<S> tower_layer::Layer<S> for UploadLimitLayer {
    type Service = UploadLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        UploadLimit {
            inner,
            limits: self.clone(),
        }
    }
}

/// The service wrapper made by [`UploadLimitLayer`].
#[derive(Clone)]
pub struct UploadLimit<S> {
    inner: S,
    limits: UploadLimitLayer,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> Service<Request<Body>> for UploadLimit<S>
where
    S: Service<Request<LimitedBody>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let limits = &self.limits;
        let permit = if UPLOAD_PATHS.contains(&request.uri().path()) {
            match Arc::clone(&limits.gate).try_acquire_owned() {
                Ok(permit) => {
                    let open = limits.max_uploads - limits.gate.available_permits();
                    limits.stats.peak_uploads.fetch_max(open, Ordering::Relaxed);
                    Some(permit)
                }
                Err(_) => {
                    limits.stats.uploads_refused.fetch_add(1, Ordering::Relaxed);
                    super::metrics::shed(upload_method(request.uri().path()));
                    let request_id = request
                        .headers()
                        .get(super::REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    let status = ServiceError::Overloaded(format!(
                        "{} uploads already in progress (the limit); retry later",
                        limits.max_uploads
                    ))
                    .into_status(request_id);
                    return Box::pin(std::future::ready(Ok(status.into_http())));
                }
            }
        } else {
            None
        };
        let (idle, max_time) = (limits.idle, limits.max_time);
        let request = request.map(|body| LimitedBody::new(body, idle, max_time, permit));
        // The inner service was polled ready; a clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(inner.call(request))
    }
}

/// The method name of an upload path (for the shed metric).
fn upload_method(path: &str) -> &'static str {
    match path {
        "/earmark.v1.Screening/Screen" => "Screen",
        "/earmark.v1.Screening/ScreenFingerprints" => "ScreenFingerprints",
        _ => "RegisterWork",
    }
}

/// A request body cut when idle or late; holds its upload slot until it ends.
pub struct LimitedBody {
    inner: Body,
    idle: Duration,
    max_time: Duration,
    idle_timer: Pin<Box<Sleep>>,
    deadline: Pin<Box<Sleep>>,
    permit: Option<OwnedSemaphorePermit>,
    ended: bool,
}

impl LimitedBody {
    fn new(
        inner: Body,
        idle: Duration,
        max_time: Duration,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Self {
        let now = Instant::now();
        Self {
            inner,
            idle,
            max_time,
            idle_timer: Box::pin(tokio::time::sleep_until(now + idle)),
            deadline: Box::pin(tokio::time::sleep_until(now + max_time)),
            permit,
            ended: false,
        }
    }

    fn end(&mut self) {
        self.ended = true;
        self.permit = None;
    }
}

impl http_body::Body for LimitedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let next = Instant::now() + this.idle;
                this.idle_timer.as_mut().reset(next);
                return Poll::Ready(Some(Ok(frame)));
            }
            Poll::Ready(Some(Err(status))) => {
                this.end();
                return Poll::Ready(Some(Err(status)));
            }
            Poll::Ready(None) => {
                this.end();
                return Poll::Ready(None);
            }
            Poll::Pending => {}
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.end();
            return Poll::Ready(Some(Err(Status::deadline_exceeded(format!(
                "upload still arriving after {:?} (the limit): upload cut",
                this.max_time
            )))));
        }
        if this.idle_timer.as_mut().poll(cx).is_ready() {
            this.end();
            return Poll::Ready(Some(Err(Status::deadline_exceeded(format!(
                "no data for {:?} (the idle limit): upload cut",
                this.idle
            )))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

//! Per-request plumbing: request id, deadline, the one log line and metrics
//! per call, and reading client-streamed uploads within their limits.

use std::time::{Duration, Instant};

use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Response, Status, Streaming};

use super::error::ServiceError;
use super::metrics;
use super::pb;

/// Metadata key of the request id (taken from the client if present, else
/// generated; always echoed in the response and in error details).
pub const REQUEST_ID: &str = "x-request-id";
/// Longest client-supplied request id kept.
const MAX_REQUEST_ID_LEN: usize = 128;
/// Random bytes of a generated request id.
const REQUEST_ID_BYTES: usize = 8;
/// Header carrying the client's deadline.
const GRPC_TIMEOUT: &str = "grpc-timeout";

/// One in-flight RPC.
#[derive(Debug)]
pub struct Call {
    pub method: &'static str,
    pub request_id: String,
    pub started: Instant,
    /// When the caller stops waiting (from `grpc-timeout`), capped by the
    /// server's maximum request time.
    pub deadline: Option<Instant>,
}

impl Call {
    pub fn start<T>(
        method: &'static str,
        request: &Request<T>,
        max_request_time: Duration,
    ) -> Self {
        let md = request.metadata();
        let request_id = md
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|id| !id.is_empty() && id.len() <= MAX_REQUEST_ID_LEN)
            .map(str::to_owned)
            .unwrap_or_else(new_request_id);
        let started = Instant::now();
        let client = parse_grpc_timeout(md).map(|t| started + t);
        let server = started + max_request_time;
        let deadline = Some(client.map_or(server, |c| c.min(server)));
        tracing::debug!(request_id, method, "request started");
        Self {
            method,
            request_id,
            started,
            deadline,
        }
    }

    /// Logs the outcome, records metrics and builds the response or status.
    /// `detail` is a short outcome (the verdict of a screening) for the log.
    pub fn finish<R>(
        self,
        result: Result<(R, Option<String>), ServiceError>,
    ) -> Result<Response<R>, Status> {
        let elapsed = self.started.elapsed();
        let latency_ms = elapsed.as_secs_f64() * 1e3;
        match result {
            Ok((body, detail)) => {
                metrics::request(self.method, tonic::Code::Ok, elapsed);
                tracing::info!(
                    request_id = %self.request_id,
                    method = self.method,
                    code = "OK",
                    verdict = detail.as_deref().unwrap_or(""),
                    latency_ms,
                    "request done"
                );
                let mut response = Response::new(body);
                self.tag(response.metadata_mut());
                Ok(response)
            }
            Err(err) => {
                let code = err.code();
                metrics::request(self.method, code, elapsed);
                tracing::info!(
                    request_id = %self.request_id,
                    method = self.method,
                    code = ?code,
                    error = %err,
                    latency_ms,
                    "request failed"
                );
                let mut status = err.into_status(&self.request_id);
                self.tag(status.metadata_mut());
                Err(status)
            }
        }
    }

    fn tag(&self, md: &mut MetadataMap) {
        if let Ok(v) = MetadataValue::try_from(self.request_id.as_str()) {
            md.insert(REQUEST_ID, v);
        }
    }
}

fn new_request_id() -> String {
    let mut buf = [0u8; REQUEST_ID_BYTES];
    if getrandom::fill(&mut buf).is_err() {
        // Not a secret: a clock-based id is good enough to correlate logs.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        return format!("t{nanos:x}");
    }
    hex::encode(buf)
}

/// Parses `grpc-timeout` (`<1-8 digits><H|M|S|m|u|n>`).
fn parse_grpc_timeout(md: &MetadataMap) -> Option<Duration> {
    let text = md.get(GRPC_TIMEOUT)?.to_str().ok()?;
    if text.len() < 2 {
        return None;
    }
    let (digits, unit) = text.split_at(text.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A message of a client-streamed upload: metadata first, then chunks.
pub enum Part<M> {
    Meta(M),
    Chunk(Vec<u8>),
}

/// Client-streamed upload messages (`Screen`, `RegisterWork`).
pub trait UploadMessage: Sized {
    type Meta;
    fn into_part(self) -> Option<Part<Self::Meta>>;
    /// Upload size the client declared in the metadata (0 = not declared).
    fn declared_bytes(meta: &Self::Meta) -> u64;
}

impl UploadMessage for pb::ScreenRequest {
    type Meta = pb::SubmissionMetadata;
    fn into_part(self) -> Option<Part<Self::Meta>> {
        self.part.map(|p| match p {
            pb::screen_request::Part::Metadata(m) => Part::Meta(m),
            pb::screen_request::Part::Chunk(c) => Part::Chunk(c),
        })
    }
    fn declared_bytes(meta: &Self::Meta) -> u64 {
        meta.total_bytes
    }
}

impl UploadMessage for pb::RegisterWorkRequest {
    type Meta = pb::WorkMetadata;
    fn into_part(self) -> Option<Part<Self::Meta>> {
        self.part.map(|p| match p {
            pb::register_work_request::Part::Metadata(m) => Part::Meta(m),
            pb::register_work_request::Part::Chunk(c) => Part::Chunk(c),
        })
    }
    fn declared_bytes(meta: &Self::Meta) -> u64 {
        meta.total_bytes
    }
}

/// Reads the next message; stream errors (caller gone, oversized message)
/// become [`ServiceError::Stream`].
pub async fn next_message<M>(stream: &mut Streaming<M>) -> Result<Option<M>, ServiceError> {
    stream
        .message()
        .await
        .map_err(|s| ServiceError::Stream(Box::new(s)))
}

/// Reads the metadata message that must come first.
pub async fn read_metadata<M: UploadMessage>(
    stream: &mut Streaming<M>,
) -> Result<M::Meta, ServiceError> {
    match next_message(stream)
        .await?
        .and_then(UploadMessage::into_part)
    {
        Some(Part::Meta(meta)) => Ok(meta),
        Some(Part::Chunk(_)) => Err(ServiceError::invalid(
            "metadata",
            "the first message must carry the metadata, not audio bytes",
        )),
        None => Err(ServiceError::invalid(
            "metadata",
            "the stream ended before any metadata",
        )),
    }
}

/// Reads the audio chunks after the metadata, refusing as soon as the total
/// passes `max_bytes` (or the declared size already does).
pub async fn read_chunks<M: UploadMessage>(
    stream: &mut Streaming<M>,
    meta: &M::Meta,
    max_bytes: u64,
) -> Result<Vec<u8>, ServiceError> {
    let declared = M::declared_bytes(meta);
    if declared > max_bytes {
        return Err(ServiceError::UploadTooLarge {
            bytes: declared,
            max_bytes,
        });
    }
    let capacity = usize::try_from(declared).unwrap_or(0);
    let mut bytes = Vec::with_capacity(capacity);
    while let Some(message) = next_message(stream).await? {
        match message.into_part() {
            Some(Part::Chunk(chunk)) => {
                let total = bytes.len() as u64 + chunk.len() as u64;
                if total > max_bytes {
                    return Err(ServiceError::UploadTooLarge {
                        bytes: total,
                        max_bytes,
                    });
                }
                bytes.extend_from_slice(&chunk);
            }
            Some(Part::Meta(_)) => {
                return Err(ServiceError::invalid(
                    "metadata",
                    "metadata may only be sent once, in the first message",
                ));
            }
            None => {}
        }
    }
    if bytes.is_empty() {
        return Err(ServiceError::invalid("chunk", "no audio bytes were sent"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units() {
        let mut md = MetadataMap::new();
        assert_eq!(parse_grpc_timeout(&md), None);
        md.insert(GRPC_TIMEOUT, "250m".parse().unwrap());
        assert_eq!(parse_grpc_timeout(&md), Some(Duration::from_millis(250)));
        md.insert(GRPC_TIMEOUT, "2S".parse().unwrap());
        assert_eq!(parse_grpc_timeout(&md), Some(Duration::from_secs(2)));
        md.insert(GRPC_TIMEOUT, "xS".parse().unwrap());
        assert_eq!(parse_grpc_timeout(&md), None);
    }

    #[test]
    fn request_ids_are_hex() {
        let id = new_request_id();
        assert_eq!(id.len(), 2 * REQUEST_ID_BYTES);
    }
}

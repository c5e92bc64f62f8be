//! Prometheus metrics (the `metrics` facade; exported at `--metrics-listen`).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `earmark_grpc_requests_total` | counter | `method`, `code` |
//! | `earmark_grpc_request_duration_seconds` | histogram | `method` |
//! | `earmark_grpc_load_shed_total` | counter | `method` |
//! | `earmark_jobs_abandoned_total` | counter | |
//! | `earmark_audio_seconds_screened_total` | counter | |
//! | `earmark_audio_seconds_per_request` | summary | |
//! | `earmark_verdicts_total` | counter | `decision` |
//! | `earmark_index_works`, `earmark_index_postings`, `earmark_index_generation` | gauge | |
//! | `earmark_ready` | gauge (0/1) | |
//!
//! Without an installed recorder (tests, `--metrics-listen` not given) every
//! call is a no-op.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::error::ServiceError;
use crate::index::Index;

/// Latency buckets (seconds) of the request histogram.
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];
/// How often histograms are compacted.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);
/// Path of the scrape endpoint.
pub const METRICS_PATH: &str = "/metrics";

pub fn request(method: &'static str, code: tonic::Code, elapsed: Duration) {
    counter!("earmark_grpc_requests_total", "method" => method, "code" => code_name(code))
        .increment(1);
    histogram!("earmark_grpc_request_duration_seconds", "method" => method)
        .record(elapsed.as_secs_f64());
}

pub fn shed(method: &'static str) {
    counter!("earmark_grpc_load_shed_total", "method" => method).increment(1);
}

pub fn abandoned() {
    counter!("earmark_jobs_abandoned_total").increment(1);
}

/// Microseconds of audio screened since start; the counter exported in whole
/// seconds follows it, rounded (`metrics` counters are integers, and rounding each
/// request would drift: 1000 clips of 4.4 s are 4400 s, not 4000).
static AUDIO_MICROS: AtomicU64 = AtomicU64::new(0);

pub fn screened(audio_seconds: f64, decision: crate::policy::Decision) {
    if audio_seconds.is_finite() && audio_seconds > 0.0 {
        let micros = (audio_seconds * 1e6).round() as u64;
        let before = AUDIO_MICROS.fetch_add(micros, Ordering::Relaxed);
        // The exported total is the running total rounded to whole seconds.
        let seconds = |us: u64| (us + 500_000) / 1_000_000;
        let whole = seconds(before + micros) - seconds(before);
        counter!("earmark_audio_seconds_screened_total").increment(whole);
        histogram!("earmark_audio_seconds_per_request").record(audio_seconds);
    }
    counter!("earmark_verdicts_total", "decision" => decision.as_str()).increment(1);
}

pub fn index_size(index: &Index) {
    let stats = index.stats();
    gauge!("earmark_index_works").set(stats.live_works as f64);
    gauge!("earmark_index_postings").set(stats.postings as f64);
    gauge!("earmark_index_generation").set(stats.generation as f64);
}

pub fn ready(up: bool) {
    gauge!("earmark_ready").set(if up { 1.0 } else { 0.0 });
}

/// `Code` as the upper-case name Prometheus users expect (`OK`, `NOT_FOUND`…).
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Installs the global Prometheus recorder and serves it over HTTP on
/// `listener` until `shutdown` resolves. Returns the bound address.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<SocketAddr, ServiceError> {
    let handle = install()?;
    let addr = listener
        .local_addr()
        .map_err(|e| ServiceError::Internal(format!("metrics listener: {e}")))?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(UPKEEP_EVERY).await;
            upkeep.run_upkeep();
        }
    });
    let app = axum::Router::new().route(
        METRICS_PATH,
        axum::routing::get(move || {
            let handle = handle.clone();
            async move { handle.render() }
        }),
    );
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %err, "metrics endpoint failed");
        }
    });
    tracing::info!(%addr, path = METRICS_PATH, "serving Prometheus metrics");
    Ok(addr)
}

fn install() -> Result<PrometheusHandle, ServiceError> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("earmark_grpc_request_duration_seconds".into()),
            LATENCY_BUCKETS,
        )
        .map_err(|e| ServiceError::Internal(format!("metrics buckets: {e}")))?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| {
        ServiceError::Internal(format!("a metrics recorder is already installed: {e}"))
    })?;
    Ok(handle)
}

//! Building, starting and stopping the gRPC server.
//!
//! Startup: the listener accepts at once, with `grpc.health.v1` reporting
//! NOT_SERVING, while a background task opens the data directory (registry,
//! reconciliation under the index write lock, index checksum verification).
//! It retries until that succeeds (e.g. while another process holds the
//! index lock), then flips health to SERVING. Until then every earmark call
//! is `UNAVAILABLE`. Once serving, health follows the registry database and
//! the index's generation (NOT_SERVING while the database does not answer or
//! the index lags the registry).
//!
//! Shutdown (SIGTERM/SIGINT, or [`ServerHandle::shutdown`]): health goes
//! NOT_SERVING, the server waits `drain_grace` so load balancers notice, stops
//! accepting, and lets in-flight requests finish.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::server::NamedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use super::auth::AuthMode;
use super::error::ServiceError;
use super::metrics;
use super::pb::registry_server::RegistryServer;
use super::pb::screening_server::ScreeningServer;
use super::state::{Limits, Ready, Settings, Shared};
use super::upload_limits::UploadLimitLayer;
use super::{Service, pb};
use crate::data_dir::DataDir;
use crate::matcher::MatcherConfig;
use crate::policy::PolicyConfig;

/// Default time between health going NOT_SERVING and the listener closing.
pub const DEFAULT_DRAIN_GRACE: Duration = Duration::from_secs(2);
/// Default wait between attempts to open the data directory.
pub const DEFAULT_OPEN_RETRY: Duration = Duration::from_secs(2);
/// Longest wait at shutdown for CPU jobs whose callers have gone (they stop
/// at their next cancellation check; a registry write in progress completes).
pub const JOB_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for one health check of the registry and the index before
/// health goes NOT_SERVING (the check itself is left to finish).
const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// Poll interval of [`ServerHandle::wait_ready`].
const READY_POLL: Duration = Duration::from_millis(20);
/// HTTP/2 keepalive ping interval (detects callers that vanished).
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// Time to wait for a keepalive ack.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Concurrent HTTP/2 streams per connection announced to clients.
const MAX_CONCURRENT_STREAMS: u32 = 128;
/// Rapid-reset hardening: pending accept resets tolerated per connection.
const MAX_PENDING_RESETS: usize = 32;

/// PEM material for TLS.
#[derive(Debug, Clone)]
pub struct TlsPem {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
    /// Clients must present a certificate signed by this CA (mTLS).
    pub client_ca: Option<Vec<u8>>,
}

/// Everything `earmark serve` can set.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data: DataDir,
    pub auth: AuthMode,
    pub limits: Limits,
    /// Threads of the CPU pool.
    pub workers: usize,
    pub matcher: MatcherConfig,
    pub policy: PolicyConfig,
    pub tls: Option<TlsPem>,
    pub drain_grace: Duration,
    /// Wait between attempts to open the data directory, and between
    /// health checks of the registry and the index once serving.
    pub open_retry: Duration,
    /// Longest wait for the index to catch up with the generation the
    /// registry vouches for before a screening is refused (`UNAVAILABLE`).
    pub index_sync_timeout: Duration,
}

impl ServerConfig {
    /// Defaults for `data` (API keys, one worker per core).
    pub fn new(data: DataDir) -> Self {
        let workers = std::thread::available_parallelism().map_or(1, usize::from);
        Self {
            data,
            auth: AuthMode::ApiKeys,
            limits: Limits::for_workers(workers),
            workers,
            matcher: MatcherConfig::default(),
            policy: PolicyConfig::default(),
            tls: None,
            drain_grace: DEFAULT_DRAIN_GRACE,
            open_retry: DEFAULT_OPEN_RETRY,
            index_sync_timeout: super::state::DEFAULT_INDEX_SYNC_TIMEOUT,
        }
    }
}

/// A running server.
pub struct ServerHandle {
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    join: JoinHandle<Result<(), ServiceError>>,
    shared: Arc<Shared>,
}

impl ServerHandle {
    /// The address the gRPC server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address of the Prometheus endpoint, if any.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// True once the data directory is open and verified.
    pub fn is_ready(&self) -> bool {
        self.shared.is_ready()
    }

    /// Load-shedding and abandoned-job counters.
    pub fn stats(&self) -> &super::state::Stats {
        &self.shared.stats
    }

    /// Waits until the server is ready, at most `timeout`; returns readiness.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let until = tokio::time::Instant::now() + timeout;
        while !self.is_ready() && tokio::time::Instant::now() < until {
            tokio::time::sleep(READY_POLL).await;
        }
        self.is_ready()
    }

    /// Starts a graceful shutdown without waiting for it.
    pub fn trigger_shutdown(&self) {
        let _ = self.stop.send(true);
    }

    /// Shuts down gracefully and waits until in-flight requests have finished.
    pub async fn shutdown(self) -> Result<(), ServiceError> {
        self.trigger_shutdown();
        self.wait().await
    }

    /// Waits for the server to stop: in-flight requests have finished, and so
    /// have CPU jobs whose callers went away (at most [`JOB_DRAIN_TIMEOUT`]), so
    /// no registration is cut off halfway when the process exits.
    pub async fn wait(self) -> Result<(), ServiceError> {
        let served = self
            .join
            .await
            .map_err(|e| ServiceError::Internal(format!("server task failed: {e}")))?;
        let jobs = self.shared.jobs();
        if jobs > 0 {
            tracing::info!(jobs, "waiting for abandoned CPU jobs to finish");
            if !self.shared.wait_idle(JOB_DRAIN_TIMEOUT).await {
                tracing::warn!(
                    jobs = self.shared.jobs(),
                    "CPU jobs still running after the drain timeout"
                );
            }
        }
        served
    }
}

/// Starts serving on `listener` (and Prometheus metrics on `metrics`).
pub async fn start(
    config: ServerConfig,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
) -> Result<ServerHandle, ServiceError> {
    if config.auth == AuthMode::InsecureNoAuth {
        for _ in 0..3 {
            tracing::warn!(
                "INSECURE: --insecure-no-auth is set: EVERY caller is an ADMIN without any key. Development only; never expose this server."
            );
        }
    }
    let addr = listener
        .local_addr()
        .map_err(|e| ServiceError::Internal(format!("listener address: {e}")))?;
    let settings = Settings {
        data: config.data.clone(),
        limits: config.limits.clone(),
        matcher: config.matcher,
        policy: config.policy.clone(),
        index_sync_timeout: config.index_sync_timeout,
    };
    let shared = Arc::new(Shared::new(settings, config.workers)?);
    let service = Service {
        shared: Arc::clone(&shared),
        auth: config.auth,
    };
    let (reporter, health) = tonic_health::server::health_reporter();
    set_health(&reporter, ServingStatus::NotServing).await;
    metrics::ready(false);

    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_err =
        |e: tonic_reflection::server::Error| ServiceError::Internal(format!("reflection: {e}"));
    let reflection_v1 = reflection().build_v1().map_err(reflection_err)?;
    let reflection_v1alpha = reflection().build_v1alpha().map_err(reflection_err)?;

    let limits = &config.limits;
    let screening = ScreeningServer::new(service.clone())
        .max_decoding_message_size(limits.max_message_bytes)
        .max_encoding_message_size(limits.max_send_message_bytes);
    let registry = RegistryServer::new(service)
        .max_decoding_message_size(limits.max_message_bytes)
        .max_encoding_message_size(limits.max_send_message_bytes);

    let mut builder = Server::builder()
        .concurrency_limit_per_connection(limits.per_connection.max(1))
        .load_shed(true)
        .timeout(limits.max_request_time)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_RESETS))
        .tcp_nodelay(true)
        .layer(UploadLimitLayer::new(
            limits.max_uploads,
            limits.upload_idle,
            limits.max_upload_time,
            Arc::clone(&shared.stats),
        ));
    if let Some(tls) = &config.tls {
        builder = builder
            .tls_config(tls_config(tls))
            .map_err(|e| ServiceError::Internal(format!("TLS configuration: {e}")))?;
    }
    let router = builder
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(screening)
        .add_service(registry);

    let (stop, stop_rx) = watch::channel(false);
    let metrics_addr = match metrics_listener {
        Some(l) => Some(metrics::serve(l, stopped(stop_rx.clone())).await?),
        None => None,
    };
    tokio::spawn(open_when_possible(
        Arc::clone(&shared),
        reporter.clone(),
        config.data.clone(),
        config.open_retry,
        stop_rx.clone(),
    ));
    let drain_grace = config.drain_grace;
    let shutdown = async move {
        stopped(stop_rx).await;
        tracing::info!(
            grace_s = drain_grace.as_secs_f64(),
            "shutting down: health NOT_SERVING, draining"
        );
        set_health(&reporter, ServingStatus::NotServing).await;
        metrics::ready(false);
        tokio::time::sleep(drain_grace).await;
        tracing::info!("no longer accepting; waiting for in-flight requests");
    };
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let join = tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
            .map_err(|e| ServiceError::Internal(format!("gRPC server: {e}")))?;
        tracing::info!("server stopped");
        Ok(())
    });
    tracing::info!(%addr, tls = config.tls.is_some(), "earmark gRPC server listening");
    Ok(ServerHandle {
        addr,
        metrics_addr,
        stop,
        join,
        shared,
    })
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn tls_config(tls: &TlsPem) -> ServerTlsConfig {
    let mut config = ServerTlsConfig::new().identity(Identity::from_pem(&tls.cert, &tls.key));
    if let Some(ca) = &tls.client_ca {
        config = config.client_ca_root(Certificate::from_pem(ca));
    }
    config
}

/// Sets the whole server ("") and each earmark service to `status`.
async fn set_health(reporter: &HealthReporter, status: ServingStatus) {
    for name in [
        "",
        <ScreeningServer<Service> as NamedService>::NAME,
        <RegistryServer<Service> as NamedService>::NAME,
    ] {
        reporter.set_service_status(name, status).await;
    }
}

/// Opens and verifies the data directory, retrying until it works or the
/// server stops; then reports SERVING.
async fn open_when_possible(
    shared: Arc<Shared>,
    reporter: HealthReporter,
    data: DataDir,
    retry: Duration,
    stop: watch::Receiver<bool>,
) {
    loop {
        let d = data.clone();
        let opened = tokio::task::spawn_blocking(move || Ready::open(&d))
            .await
            .map_err(|e| ServiceError::Internal(format!("opening task failed: {e}")))
            .and_then(|r| r);
        match opened {
            Ok(ready) => {
                let index = ready.cached_index();
                metrics::index_size(&index);
                tracing::info!(
                    data = %data.root.display(),
                    generation = index.generation(),
                    works = index.live_work_count(),
                    "index and registry open and verified: SERVING"
                );
                shared.set_ready(ready);
                if *stop.borrow() {
                    return;
                }
                set_health(&reporter, ServingStatus::Serving).await;
                metrics::ready(true);
                watch_registry(shared, reporter, retry, stop).await;
                return;
            }
            Err(err) => {
                tracing::error!(data = %data.root.display(), error = %err, retry_s = retry.as_secs_f64(), "cannot open the data directory yet: NOT_SERVING");
            }
        }
        let mut stop = stop.clone();
        tokio::select! {
            () = tokio::time::sleep(retry) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// While serving, checks every `every` that the registry database answers
/// and that the index is no older than the generation the registry vouches
/// for (re-opening it once if it is): health goes NOT_SERVING while either
/// fails (a PostgreSQL server down or unreachable, or an index that lags
/// the registry; calls that need them fail with `UNAVAILABLE`), and SERVING
/// again once both hold. Ends when the server stops.
async fn watch_registry(
    shared: Arc<Shared>,
    reporter: HealthReporter,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut serving = true;
    // A check that has not finished (a hung file system or database): it is
    // awaited again rather than started anew.
    let mut pending: Option<JoinHandle<Result<(), ServiceError>>> = None;
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let Ok(ready) = shared.ready() else {
            continue;
        };
        let mut check = pending.take().unwrap_or_else(|| {
            tokio::task::spawn_blocking(move || ready.current_index(Duration::ZERO).map(|_| ()))
        });
        let checked = match tokio::time::timeout(HEALTH_CHECK_TIMEOUT, &mut check).await {
            Ok(joined) => joined
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string())),
            Err(_) => {
                pending = Some(check);
                Err(format!(
                    "the registry and index check has not answered for {} s",
                    HEALTH_CHECK_TIMEOUT.as_secs()
                ))
            }
        };
        if *stop.borrow() {
            return;
        }
        match checked {
            Ok(()) if !serving => {
                tracing::info!("registry database reachable and index current: SERVING");
                set_health(&reporter, ServingStatus::Serving).await;
                metrics::ready(true);
                serving = true;
            }
            Err(error) if serving => {
                tracing::error!(%error, "registry database unreachable or index behind it: NOT_SERVING");
                set_health(&reporter, ServingStatus::NotServing).await;
                metrics::ready(false);
                serving = false;
            }
            _ => {}
        }
    }
}

/// Binds `listen` (and `metrics_listen`), serves until SIGTERM or SIGINT,
/// then shuts down gracefully. For `earmark serve`.
pub async fn run(
    config: ServerConfig,
    listen: SocketAddr,
    metrics_listen: Option<SocketAddr>,
) -> Result<(), ServiceError> {
    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|e| ServiceError::Internal(format!("cannot listen on {addr}: {e}")))
    };
    let listener = bind(listen).await?;
    let metrics_listener = match metrics_listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let handle = start(config, listener, metrics_listener).await?;
    termination_signal().await;
    tracing::info!("termination signal received");
    handle.shutdown().await
}

/// Resolves on SIGINT, or SIGTERM on Unix.
async fn termination_signal() {
    let interrupt = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    () = interrupt => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    interrupt.await;
}

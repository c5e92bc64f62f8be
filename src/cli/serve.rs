//! `earmark serve` (the gRPC service) and `earmark fingerprint` (client-side
//! fingerprints for `ScreenFingerprints`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;

use super::{EXIT_CLEAN, Thresholds};
use crate::data_dir::DataDir;
use crate::decode::DecodeLimits;
use crate::fingerprint::file::FingerprintFile;
use crate::policy::{PolicyConfig, UnknownConsent};
use crate::registry::Territory;
use crate::service::{AuthMode, Limits, ServerConfig, TlsPem};

/// Default gRPC listen address.
const DEFAULT_LISTEN: &str = "127.0.0.1:50051";

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on for gRPC.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
    /// Server certificate chain (PEM); enables TLS (with --tls-key).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Server private key (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM): mutual TLS.
    #[arg(long, requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// DEVELOPMENT ONLY: accept every caller as an admin, without API keys.
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// Largest upload (encoded audio) per request, in bytes.
    #[arg(long, default_value_t = crate::service::state::DEFAULT_MAX_UPLOAD_BYTES)]
    pub max_upload_bytes: u64,
    /// Longest audio per request, in seconds.
    #[arg(long, default_value_t = crate::service::state::DEFAULT_MAX_AUDIO_S)]
    pub max_audio_seconds: f64,
    /// Largest single gRPC message received, in bytes (uploads are chunked).
    #[arg(long, default_value_t = crate::service::state::DEFAULT_MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,
    /// Concurrent requests per connection; more are refused (RESOURCE_EXHAUSTED).
    #[arg(long, default_value_t = crate::service::state::DEFAULT_PER_CONNECTION)]
    pub max_per_connection: usize,
    /// Screening/registration jobs admitted at once (running + queued);
    /// more are refused with RESOURCE_EXHAUSTED. Default: 4 per worker.
    #[arg(long)]
    pub max_in_flight: Option<usize>,
    /// Uploads (Screen, ScreenFingerprints, RegisterWork streams) received at
    /// once; more are refused with RESOURCE_EXHAUSTED. Default: 2 per
    /// admitted job (--max-in-flight).
    #[arg(long)]
    pub max_uploads: Option<usize>,
    /// Seconds an upload may send nothing before it is cut (DEADLINE_EXCEEDED).
    #[arg(long, default_value_t = crate::service::state::DEFAULT_UPLOAD_IDLE.as_secs_f64())]
    pub upload_idle_seconds: f64,
    /// Seconds an upload may take in all before it is cut (slow trickles).
    #[arg(long, default_value_t = crate::service::state::DEFAULT_MAX_UPLOAD_TIME.as_secs_f64())]
    pub max_upload_seconds: f64,
    /// Threads fingerprinting and matching (default: one per core).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Longest time any request may take, in seconds (the client's deadline
    /// applies when shorter).
    #[arg(long, default_value_t = 600)]
    pub max_request_seconds: u64,
    /// Seconds between health going NOT_SERVING and the listener closing on
    /// SIGTERM/SIGINT (lets load balancers notice).
    #[arg(long, default_value_t = 2.0)]
    pub drain_seconds: f64,
    /// Longest wait, in seconds, for this server's index to catch up with
    /// the generation the registry vouches for (a replica on a shared index
    /// that has not seen another replica's write yet) before a screening is
    /// refused with UNAVAILABLE (INDEX_BEHIND).
    #[arg(long, default_value_t = crate::service::state::DEFAULT_INDEX_SYNC_TIMEOUT.as_secs_f64())]
    pub index_sync_timeout: f64,
    /// Verdict for a confident match of a work without consent on record.
    #[arg(long, value_enum, default_value = "flag")]
    pub unknown: super::UnknownArg,
    /// Where the screened uses happen (ISO 3166-1 alpha-2); a request may override it.
    #[arg(long)]
    pub territory: Option<String>,
    #[command(flatten)]
    pub thresholds: Thresholds,
}

/// Runs the server until SIGTERM/SIGINT.
pub fn run_serve(data: &DataDir, args: &ServeArgs) -> Result<u8> {
    let config = server_config(data, args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("earmark-async")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(crate::service::run(
        config,
        args.listen,
        args.metrics_listen,
    ))?;
    Ok(EXIT_CLEAN)
}

fn server_config(data: &DataDir, args: &ServeArgs) -> Result<ServerConfig> {
    let mut config = ServerConfig::new(data.clone());
    if let Some(workers) = args.workers {
        if workers == 0 {
            bail!("--workers must be at least 1");
        }
        config.workers = workers;
    }
    if !(args.max_audio_seconds.is_finite() && args.max_audio_seconds > 0.0) {
        bail!("--max-audio-seconds must be a positive number");
    }
    if !(args.drain_seconds.is_finite() && args.drain_seconds >= 0.0) {
        bail!("--drain-seconds must be zero or more");
    }
    let positive = |value: f64, flag: &str| {
        if value.is_finite() && value > 0.0 {
            Ok(Duration::from_secs_f64(value))
        } else {
            Err(anyhow::anyhow!(
                "{flag} must be a positive number of seconds"
            ))
        }
    };
    let upload_idle = positive(args.upload_idle_seconds, "--upload-idle-seconds")?;
    let max_upload_time = positive(args.max_upload_seconds, "--max-upload-seconds")?;
    let defaults = Limits::for_workers(config.workers);
    let max_in_flight = args.max_in_flight.unwrap_or(defaults.max_in_flight);
    config.limits = Limits {
        max_upload_bytes: args.max_upload_bytes,
        max_audio_s: args.max_audio_seconds,
        max_message_bytes: args.max_message_bytes,
        per_connection: args.max_per_connection,
        max_in_flight,
        max_request_time: Duration::from_secs(args.max_request_seconds.max(1)),
        max_uploads: args
            .max_uploads
            .unwrap_or(max_in_flight.max(1) * crate::service::state::DEFAULT_UPLOADS_PER_IN_FLIGHT),
        upload_idle,
        max_upload_time,
        ..defaults
    };
    config.auth = if args.insecure_no_auth {
        AuthMode::InsecureNoAuth
    } else {
        AuthMode::ApiKeys
    };
    config.matcher = args.thresholds.matcher_config();
    config.policy = PolicyConfig {
        unknown_consent: match args.unknown {
            super::UnknownArg::Allow => UnknownConsent::Allow,
            super::UnknownArg::Flag => UnknownConsent::Flag,
        },
        territory: args
            .territory
            .as_deref()
            .map(Territory::parse)
            .transpose()
            .context("--territory")?,
    };
    config.drain_grace = Duration::from_secs_f64(args.drain_seconds);
    if !(args.index_sync_timeout.is_finite() && args.index_sync_timeout >= 0.0) {
        bail!("--index-sync-timeout must be zero or more seconds");
    }
    config.index_sync_timeout = Duration::from_secs_f64(args.index_sync_timeout);
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        config.tls = Some(TlsPem {
            cert: read(cert, "TLS certificate")?,
            key: read(key, "TLS key")?,
            client_ca: args
                .tls_client_ca
                .as_deref()
                .map(|p| read(p, "client CA"))
                .transpose()?,
        });
    }
    Ok(config)
}

pub(super) fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading the {what} {}", path.display()))
}

#[derive(Debug, Args)]
pub struct FingerprintArgs {
    /// Audio file to fingerprint (any supported format).
    pub file: PathBuf,
    /// Where to write the fingerprint (for `identify --remote` or ScreenFingerprints).
    #[arg(long)]
    pub out: PathBuf,
}

/// Fingerprints a file locally, as the server would, and writes it.
pub fn run_fingerprint(args: &FingerprintArgs) -> Result<u8> {
    let file = FingerprintFile::from_audio(&args.file, &DecodeLimits::default())?;
    file.write(&args.out)?;
    println!(
        "{}: {:.1} s, {} prints, config {:#010x} -> {}",
        args.file.display(),
        file.header.duration_s,
        file.fingerprint.prints.len(),
        file.header.config_id,
        args.out.display()
    );
    Ok(EXIT_CLEAN)
}

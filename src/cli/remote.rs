//! Client commands against a running `earmark serve`: screening with local
//! fingerprints (`identify --remote URL`) and the load test `bench serve`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

use super::{EXIT_CLEAN, EXIT_ERROR, EXIT_FOUND};
use crate::client::{self, ClientTls, ScreeningClient};
use crate::decode::DecodeLimits;
use crate::fingerprint::file::{FingerprintFile, MAGIC};
use crate::proto as pb;
use crate::registry::Scope;

/// Client message size limit (responses are small; uploads are chunked).
const CLIENT_MAX_MESSAGE: usize = 64 * 1024 * 1024;
/// Default folder of bench inputs.
const DEFAULT_BENCH_DIR: &str = "test-audio/submissions";
/// Audio extensions picked from a bench folder.
const AUDIO_EXTENSIONS: &[&str] = &[
    "wav", "mp3", "ogg", "opus", "flac", "m4a", "aiff", "webm", "mkv",
];
/// Errors printed individually by `bench serve` (the rest are counted).
const MAX_ERRORS_SHOWN: usize = 5;

/// How to reach and authenticate to a server.
#[derive(Debug, Clone, Args)]
pub struct ConnArgs {
    /// API key (`emk_…`) sent as `authorization: Bearer`.
    #[arg(long, env = "EARMARK_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// CA certificate (PEM) to verify an https:// server with.
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(long, requires = "tls_client_key")]
    pub tls_client_cert: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS.
    #[arg(long, requires = "tls_client_cert")]
    pub tls_client_key: Option<PathBuf>,
}

impl ConnArgs {
    pub(crate) fn tls(&self) -> Result<Option<ClientTls>> {
        if self.tls_ca.is_none() && self.tls_client_cert.is_none() {
            return Ok(None);
        }
        let identity = match (&self.tls_client_cert, &self.tls_client_key) {
            (Some(c), Some(k)) => Some((
                super::serve::read(c, "client certificate")?,
                super::serve::read(k, "client key")?,
            )),
            _ => None,
        };
        Ok(Some(ClientTls {
            ca: self
                .tls_ca
                .as_deref()
                .map(|p| super::serve::read(p, "CA certificate"))
                .transpose()?,
            identity,
            domain: None,
        }))
    }

    async fn screening(&self, url: &str) -> Result<ScreeningClient> {
        let tls = self.tls()?;
        let channel = client::connect(url, tls.as_ref()).await?;
        Ok(client::screening(
            channel,
            self.api_key.as_deref(),
            CLIENT_MAX_MESSAGE,
        )?)
    }
}

/// `--remote URL` options (flattened into `identify`).
#[derive(Debug, Clone, Args)]
pub struct RemoteArgs {
    /// Screen on an earmark server: files are fingerprinted here and only the
    /// prints are sent (ScreenFingerprints); fingerprint files from
    /// `earmark fingerprint` are sent as they are.
    #[arg(long, value_name = "URL")]
    pub remote: Option<String>,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// `http://` added to a bare `host:port`.
pub(crate) fn normalise_url(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// The fingerprint of `path`: read if it is a fingerprint file, else computed.
fn load_fingerprint(path: &Path) -> Result<FingerprintFile> {
    let mut head = vec![0u8; MAGIC.len()];
    let is_fp = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
        .is_ok()
        && head == MAGIC;
    Ok(if is_fp {
        FingerprintFile::read(path)?
    } else {
        FingerprintFile::from_audio(path, &DecodeLimits::default())?
    })
}

/// `identify --remote URL`: one verdict per file from the server. Exit 0 when
/// every file is allowed, 1 when something is blocked or flagged, 2 on errors.
pub fn run_identify_remote(
    remote: &RemoteArgs,
    files: &[PathBuf],
    purpose: Scope,
    json: bool,
) -> Result<u8> {
    let Some(url) = remote.remote.as_deref() else {
        bail!("--remote URL is required");
    };
    let url = normalise_url(url);
    let purpose = crate::proto::scope_to_pb(purpose);
    runtime()?.block_on(async {
        let mut client = remote.conn.screening(&url).await?;
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        let (mut errors, mut found) = (0usize, false);
        for path in files {
            let result = match load_fingerprint(path) {
                Ok(fp) => client
                    .screen_fingerprints(tokio_stream::iter(fp.requests(purpose, "")))
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(|s| anyhow::anyhow!("{}: {}", s.code(), s.message())),
                Err(e) => Err(e),
            };
            match result {
                Ok(r) => {
                    let verdict = r.verdict.unwrap_or_default();
                    found |= verdict.decision() != pb::Decision::Allow;
                    if json {
                        writeln!(out, "{}", r.verdict_json)?;
                    } else {
                        writeln!(
                            out,
                            "{}: {}",
                            path.display(),
                            verdict.reasons.first().map_or("", String::as_str)
                        )?;
                        for e in verdict.evidence.iter().filter(|e| e.confident) {
                            writeln!(
                                out,
                                "  {} {:?} (score {:.0})",
                                e.work_id,
                                e.outcome(),
                                e.score
                            )?;
                        }
                    }
                }
                Err(e) => {
                    errors += 1;
                    eprintln!("earmark: {}: {e:#}", path.display());
                }
            }
        }
        Ok(if errors > 0 {
            EXIT_ERROR
        } else if found {
            EXIT_FOUND
        } else {
            EXIT_CLEAN
        })
    })
}

#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// Load-test a running server with concurrent Screen calls and report
    /// requests/s, audio seconds/s and latency percentiles.
    Serve(BenchServeArgs),
    /// Decode audio files alone (no fingerprinting, no matching) with the
    /// decoder `scan` uses, and report audio-hours per minute: the baseline
    /// scan throughput is compared against.
    Decode(super::scan::BenchDecodeArgs),
}

#[derive(Debug, Args)]
pub struct BenchServeArgs {
    /// Server address (`host:port` or a URL).
    #[arg(long)]
    pub addr: String,
    /// Concurrent callers (one connection each).
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Send local fingerprints (ScreenFingerprints) instead of audio.
    #[arg(long)]
    pub fingerprints: bool,
    /// Purpose screened for.
    #[arg(long, value_parser = super::registry_cmds::scope_parser(), default_value = "ai-training")]
    pub purpose: Scope,
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Audio files (or folders) to send round-robin (default: test-audio/submissions).
    pub files: Vec<PathBuf>,
}

/// One request's input.
#[derive(Clone)]
enum Input {
    Audio { name: String, bytes: Vec<u8> },
    Prints(FingerprintFile),
}

fn bench_inputs(args: &BenchServeArgs) -> Result<Vec<Input>> {
    let roots = if args.files.is_empty() {
        vec![PathBuf::from(DEFAULT_BENCH_DIR)]
    } else {
        args.files.clone()
    };
    let mut paths = Vec::new();
    for root in roots {
        if root.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(&root)
                .with_context(|| format!("reading {}", root.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                        AUDIO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str())
                    })
                })
                .collect();
            found.sort();
            paths.extend(found);
        } else {
            paths.push(root);
        }
    }
    if paths.is_empty() {
        bail!("no audio files to send");
    }
    paths
        .iter()
        .map(|p| {
            Ok(if args.fingerprints {
                Input::Prints(load_fingerprint(p)?)
            } else {
                Input::Audio {
                    name: p
                        .file_name()
                        .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
                    bytes: std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
                }
            })
        })
        .collect()
}

/// What one caller measured.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    audio_s: f64,
    errors: Vec<String>,
}

async fn caller(
    mut client: ScreeningClient,
    inputs: Vec<Input>,
    start: usize,
    purpose: pb::Scope,
    until: Instant,
) -> Tally {
    let mut tally = Tally::default();
    let mut i = start;
    while Instant::now() < until {
        let input = &inputs[i % inputs.len()];
        i += 1;
        let t0 = Instant::now();
        let result = match input {
            Input::Audio { name, bytes } => {
                let meta = pb::SubmissionMetadata {
                    file_name: name.clone(),
                    purpose: purpose.into(),
                    ..Default::default()
                };
                client
                    .screen(tokio_stream::iter(client::screen_requests(meta, bytes)))
                    .await
            }
            Input::Prints(fp) => {
                client
                    .screen_fingerprints(tokio_stream::iter(fp.requests(purpose, "")))
                    .await
            }
        };
        match result {
            Ok(r) => {
                tally.latencies.push(t0.elapsed());
                tally.audio_s += r.into_inner().audio.map_or(0.0, |a| a.duration_s);
            }
            Err(s) => tally
                .errors
                .push(format!("{:?}: {}", s.code(), s.message())),
        }
    }
    tally
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)].as_secs_f64() * 1e3
}

/// `bench serve`: exit 0 with zero errors, 2 otherwise.
pub fn run_bench(cmd: &BenchCmd) -> Result<u8> {
    let args = match cmd {
        BenchCmd::Serve(args) => args,
        BenchCmd::Decode(args) => return super::scan::run_bench_decode(args),
    };
    if args.concurrency == 0 || !(args.duration.is_finite() && args.duration > 0.0) {
        bail!("--concurrency and --duration must be positive");
    }
    let inputs = bench_inputs(args)?;
    let url = normalise_url(&args.addr);
    let purpose = crate::proto::scope_to_pb(args.purpose);
    runtime()?.block_on(async {
        let mut clients = Vec::with_capacity(args.concurrency);
        for _ in 0..args.concurrency {
            clients.push(args.conn.screening(&url).await?);
        }
        let started = Instant::now();
        let until = started + Duration::from_secs_f64(args.duration);
        let tasks: Vec<_> = clients
            .into_iter()
            .enumerate()
            .map(|(i, c)| tokio::spawn(caller(c, inputs.clone(), i, purpose, until)))
            .collect();
        let mut total = Tally::default();
        for t in tasks {
            let tally = t.await.context("bench caller failed")?;
            total.latencies.extend(tally.latencies);
            total.audio_s += tally.audio_s;
            total.errors.extend(tally.errors);
        }
        let elapsed = started.elapsed().as_secs_f64();
        total.latencies.sort();
        let ok = total.latencies.len();
        let report = serde_json::json!({
            "addr": url,
            "mode": if args.fingerprints { "fingerprints" } else { "audio" },
            "concurrency": args.concurrency,
            "seconds": elapsed,
            "requests": ok,
            "errors": total.errors.len(),
            "requests_per_s": ok as f64 / elapsed,
            "audio_seconds_per_s": total.audio_s / elapsed,
            "latency_ms": {
                "p50": percentile(&total.latencies, 50.0),
                "p95": percentile(&total.latencies, 95.0),
                "p99": percentile(&total.latencies, 99.0),
                "max": total.latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
            },
        });
        if args.json {
            println!("{report}");
        } else {
            println!(
                "{} requests in {elapsed:.1} s, {} errors ({} callers, {})",
                ok,
                total.errors.len(),
                args.concurrency,
                report["mode"]
            );
            println!("requests/s      {:.1}", ok as f64 / elapsed);
            println!("audio s/s       {:.1}", total.audio_s / elapsed);
            println!(
                "latency ms      p50 {:.1}  p95 {:.1}  p99 {:.1}  max {:.1}",
                report["latency_ms"]["p50"].as_f64().unwrap_or(0.0),
                report["latency_ms"]["p95"].as_f64().unwrap_or(0.0),
                report["latency_ms"]["p99"].as_f64().unwrap_or(0.0),
                report["latency_ms"]["max"].as_f64().unwrap_or(0.0),
            );
        }
        for e in total.errors.iter().take(MAX_ERRORS_SHOWN) {
            eprintln!("earmark: bench error: {e}");
        }
        Ok(if total.errors.is_empty() {
            EXIT_CLEAN
        } else {
            EXIT_ERROR
        })
    })
}

//! `earmark bench`: load-test a running server, or decode alone for the
//! baseline scan throughput.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

use super::conn::{ConnArgs, normalise_url, runtime};
use super::remote::load_fingerprint;
use super::{EXIT_CLEAN, EXIT_ERROR};
use crate::client::{self, ScreeningClient};
use crate::fingerprint::file::FingerprintFile;
use crate::proto as pb;
use crate::registry::Scope;
use crate::scan;

/// Default folder of bench inputs.
const DEFAULT_BENCH_DIR: &str = "test-audio/submissions";
/// Audio extensions picked from a bench folder.
const AUDIO_EXTENSIONS: &[&str] = &[
    "wav", "mp3", "ogg", "opus", "flac", "m4a", "aiff", "webm", "mkv",
];
/// Errors printed individually by `bench serve` (the rest are counted).
const MAX_ERRORS_SHOWN: usize = 5;

#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// Load-test a running server (or replicas, `--addr` repeated) with
    /// concurrent Screen calls and report requests/s, audio seconds/s and
    /// latency percentiles.
    Serve(BenchServeArgs),
    /// Decode audio files alone (no fingerprinting, no matching) with the
    /// decoder `scan` uses, and report audio-hours per minute: the baseline
    /// scan throughput is compared against.
    Decode(BenchDecodeArgs),
}

#[derive(Debug, Args)]
pub struct BenchServeArgs {
    /// Server address (`host:port` or a URL). Repeat it for replicas: the
    /// callers are spread over the addresses round-robin (caller i uses
    /// address i mod n).
    #[arg(long, alias = "url", required = true)]
    pub addr: Vec<String>,
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
        BenchCmd::Decode(args) => return run_bench_decode(args),
    };
    if args.concurrency == 0 || !(args.duration.is_finite() && args.duration > 0.0) {
        bail!("--concurrency and --duration must be positive");
    }
    let inputs = bench_inputs(args)?;
    let urls: Vec<String> = args.addr.iter().map(|a| normalise_url(a)).collect();
    let purpose = crate::proto::scope_to_pb(args.purpose);
    runtime()?.block_on(async {
        let mut clients = Vec::with_capacity(args.concurrency);
        for i in 0..args.concurrency {
            let url = &urls[i % urls.len()];
            clients.push(args.conn.screening(url).await?);
        }
        let started = Instant::now();
        let until = started + Duration::from_secs_f64(args.duration);
        let tasks: Vec<_> = clients
            .into_iter()
            .enumerate()
            .map(|(i, c)| tokio::spawn(caller(c, inputs.clone(), i, purpose, until)))
            .collect();
        let mut total = Tally::default();
        let mut per_addr = vec![0usize; urls.len()];
        for (i, t) in tasks.into_iter().enumerate() {
            let tally = t.await.context("bench caller failed")?;
            per_addr[i % urls.len()] += tally.latencies.len();
            total.latencies.extend(tally.latencies);
            total.audio_s += tally.audio_s;
            total.errors.extend(tally.errors);
        }
        let elapsed = started.elapsed().as_secs_f64();
        total.latencies.sort();
        let ok = total.latencies.len();
        let report = serde_json::json!({
            "addr": urls,
            "requests_per_addr": per_addr,
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
                "{} requests in {elapsed:.1} s, {} errors ({} callers, {}, {} server(s))",
                ok,
                total.errors.len(),
                args.concurrency,
                report["mode"],
                urls.len()
            );
            if urls.len() > 1 {
                for (url, n) in urls.iter().zip(&per_addr) {
                    println!("  {url:<28} {n} requests");
                }
            }
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

/// `earmark bench decode`.
#[derive(Debug, Args)]
pub struct BenchDecodeArgs {
    /// Folders (walked like `scan` walks them) or audio files.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Worker threads (default: one per core).
    #[arg(long, short = 'j')]
    pub jobs: Option<usize>,
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Decodes every audio file of the inputs (to the fingerprinter's mono rate,
/// as a scan does) in parallel and reports the speed. Exit 0, or 3 if some
/// file could not be decoded.
pub fn run_bench_decode(args: &BenchDecodeArgs) -> Result<u8> {
    use rayon::prelude::*;
    let mut files = Vec::new();
    for input in &args.inputs {
        if input.is_dir() {
            for entry in walkdir::WalkDir::new(input)
                .follow_links(true)
                .sort_by_file_name()
                .into_iter()
                .filter_map(Result::ok)
                .filter(|e| e.file_type().is_file())
            {
                if scan::input::folder::is_audio_file(entry.path()).unwrap_or(false) {
                    files.push(entry.into_path());
                }
            }
        } else {
            files.push(input.clone());
        }
    }
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs.max(1))
        .build()
        .context("starting the worker pool")?;
    let limits = crate::decode::DecodeLimits::default();
    let started = std::time::Instant::now();
    let results: Vec<Result<f64, String>> = pool.install(|| {
        files
            .par_iter()
            .map(|path| {
                let mut samples = 0usize;
                crate::decode::decode_file_stream(
                    path,
                    &limits,
                    crate::fingerprint::SAMPLE_RATE_HZ,
                    |block| samples += block.len(),
                )
                .map(|info| info.duration_s)
                .map_err(|e| e.to_string())
            })
            .collect()
    });
    let wall_s = started.elapsed().as_secs_f64().max(f64::EPSILON);
    let audio_s: f64 = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .fold(0.0, |sum, s| sum + s);
    let errors: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    let report = serde_json::json!({
        "files": files.len(),
        "errors": errors.len(),
        "jobs": jobs,
        "wall_s": wall_s,
        "audio_hours": audio_s / 3600.0,
        "audio_hours_per_minute": audio_s / 3600.0 / (wall_s / 60.0),
        "realtime_factor": audio_s / wall_s,
    });
    if args.json {
        println!("{report}");
    } else {
        println!(
            "decoded {} files ({} errors), {:.3} h of audio in {wall_s:.1} s with {jobs} jobs: {:.2} audio-h/min ({:.0}× real time)",
            files.len(),
            errors.len(),
            audio_s / 3600.0,
            audio_s / 3600.0 / (wall_s / 60.0),
            audio_s / wall_s
        );
    }
    for e in errors.iter().take(5) {
        eprintln!("earmark: {e}");
    }
    Ok(if errors.is_empty() {
        scan::EXIT_CLEAN
    } else {
        scan::EXIT_UNSCREENED
    })
}

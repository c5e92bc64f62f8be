//! `earmark scan`: screen a dataset (folders, manifests, WebDataset shards,
//! parquet) and write a report, filtered copies and a summary.

use std::io::{self, IsTerminal};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::Thresholds;
use crate::data_dir::DataDir;
use crate::policy::{PolicyConfig, UnknownConsent};
use crate::registry::{Scope, Territory};
use crate::scan::{
    self, OutputSpec, ReportFormat, ReportRow, RowVerdict, ScanOptions, ScanProgress,
};

/// Progress bar redraws per second at most.
const PROGRESS_HZ: u8 = 4;
/// Audio seconds are counted in milliseconds.
const MS_PER_S: f64 = 1000.0;

fn scope_parser() -> impl TypedValueParser<Value = Scope> {
    PossibleValuesParser::new(Scope::ALL.iter().map(|s| s.as_str())).try_map(|s| s.parse::<Scope>())
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FormatArg {
    Jsonl,
    Csv,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum UnknownArg {
    Allow,
    Flag,
}

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Folders, JSONL/CSV manifests, WebDataset shards (.tar, .tar.gz), parquet
    /// files or audio files; the kind is detected.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Intended use the consent is checked for.
    #[arg(long, default_value = "ai-training", value_parser = scope_parser())]
    pub purpose: Scope,
    /// Per-item report (one row per item).
    #[arg(long)]
    pub report: PathBuf,
    /// Report format (default: from the report's extension, else jsonl).
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,
    /// Filtered copy of the input holding only the allowed items.
    #[arg(long, value_name = "OUT")]
    pub allowed: Option<PathBuf>,
    /// Filtered copy holding only the blocked items.
    #[arg(long, value_name = "OUT")]
    pub blocked: Option<PathBuf>,
    /// Filtered copy holding only the items flagged for review.
    #[arg(long, value_name = "OUT")]
    pub flagged: Option<PathBuf>,
    /// Write the run summary as JSON here (a table is printed either way).
    #[arg(long, value_name = "FILE")]
    pub summary: Option<PathBuf>,
    /// Continue an interrupted run of the same command.
    #[arg(long)]
    pub resume: bool,
    /// Verdict for works with no consent recorded.
    #[arg(long, value_enum, default_value = "flag")]
    pub unknown: UnknownArg,
    /// Where the training happens (ISO 3166-1 alpha-2; default: worldwide).
    #[arg(long, value_parser = Territory::parse)]
    pub territory: Option<Territory>,
    /// Worker threads (default: one per core).
    #[arg(long, short = 'j')]
    pub jobs: Option<usize>,
    /// Manifest field / column with the audio path (default: path, audio_filepath…).
    #[arg(long)]
    pub path_field: Option<String>,
    /// Parquet column with the audio (default: the first struct<bytes, path>).
    #[arg(long)]
    pub audio_column: Option<String>,
    /// Largest tar member or parquet cell screened in memory (bytes).
    #[arg(long, default_value_t = scan::DEFAULT_MAX_MEMBER_BYTES)]
    pub max_member_bytes: u64,
    /// Skip the SHA-256 of each item (the report's content_sha256).
    #[arg(long)]
    pub no_hash: bool,
    /// Do not record allowed opted-in uses in the attribution ledger (a dry
    /// run; with --remote, the server is asked not to record them either).
    #[arg(long)]
    pub no_ledger: bool,
    /// No progress bar and no summary table.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    #[command(flatten)]
    pub thresholds: Thresholds,
    /// Screen through a running `earmark serve` at URL: items are decoded and
    /// fingerprinted here, only the prints are sent (ScreenFingerprints); the
    /// server's index, registry and policy decide (--unknown and the
    /// thresholds are then the server's).
    #[arg(long, value_name = "URL")]
    pub remote: Option<String>,
    #[command(flatten)]
    pub conn: super::remote::ConnArgs,
}

impl ScanArgs {
    fn options(&self) -> ScanOptions {
        let format = match self.format {
            Some(FormatArg::Csv) => ReportFormat::Csv,
            Some(FormatArg::Jsonl) => ReportFormat::Jsonl,
            None if self
                .report
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("csv")) =>
            {
                ReportFormat::Csv
            }
            None => ReportFormat::Jsonl,
        };
        let outputs = [
            (RowVerdict::Allow, &self.allowed),
            (RowVerdict::Block, &self.blocked),
            (RowVerdict::Flag, &self.flagged),
        ]
        .into_iter()
        .filter_map(|(verdict, path)| {
            path.as_ref().map(|p| OutputSpec {
                verdict,
                path: p.clone(),
            })
        })
        .collect();
        let mut options = ScanOptions::new(self.inputs.clone(), self.report.clone());
        options.purpose = self.purpose;
        options.format = format;
        options.outputs = outputs;
        options.summary = self.summary.clone();
        options.resume = self.resume;
        options.policy = PolicyConfig {
            unknown_consent: match self.unknown {
                UnknownArg::Allow => UnknownConsent::Allow,
                UnknownArg::Flag => UnknownConsent::Flag,
            },
            territory: self.territory.clone(),
        };
        options.matcher = self.thresholds.matcher_config();
        options.jobs = self.jobs.unwrap_or(0);
        options.input.path_field = self.path_field.clone();
        options.input.audio_column = self.audio_column.clone();
        options.input.max_member_bytes = self.max_member_bytes;
        options.hash_content = !self.no_hash;
        options.record_attributions = !self.no_ledger;
        options
    }
}

/// A progress bar on a terminal; nothing in pipes, in CI or with `--quiet`.
struct Bar {
    bar: ProgressBar,
    audio_ms: AtomicU64,
}

impl Bar {
    fn new(visible: bool) -> Self {
        let target = if visible {
            ProgressDrawTarget::stderr_with_hz(PROGRESS_HZ)
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(None, target);
        let style = ProgressStyle::with_template(
            "{spinner} {elapsed_precise} [{bar:30}] {human_pos}/{human_len} items  {per_sec}  {msg}  ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(250));
        Self {
            bar,
            audio_ms: AtomicU64::new(0),
        }
    }
}

impl ScanProgress for Bar {
    fn set_total(&self, items: u64) {
        self.bar.set_length(items);
    }

    fn item_done(&self, row: &ReportRow, _replayed: bool) {
        let ms = (row.duration_s.unwrap_or(0.0) * MS_PER_S) as u64;
        let total = self.audio_ms.fetch_add(ms, Ordering::Relaxed) + ms;
        self.bar
            .set_message(format!("{:.2} h audio", total as f64 / MS_PER_S / 3600.0));
        self.bar.inc(1);
    }
}

fn show_progress(quiet: bool) -> bool {
    !quiet && io::stderr().is_terminal() && std::env::var_os("CI").is_none()
}

pub fn run(data: &DataDir, args: &ScanArgs) -> Result<u8> {
    let mut options = args.options();
    if let Some(url) = &args.remote {
        let url = super::remote::normalise_url(url);
        let tls = args.conn.tls()?;
        let remote = scan::remote::RemoteScreener::connect(
            &url,
            tls.as_ref(),
            args.conn.api_key.as_deref(),
            args.purpose,
            args.territory.as_ref(),
            !args.no_ledger,
        )?;
        options.remote = Some(std::sync::Arc::new(remote));
    }
    let bar = Bar::new(show_progress(args.quiet));
    let result = scan::run_scan(data, &options, &bar);
    bar.bar.finish_and_clear();
    let summary = result.context("scan failed")?;
    if !args.quiet {
        print!("{}", summary.human());
    }
    Ok(summary.exit_code)
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

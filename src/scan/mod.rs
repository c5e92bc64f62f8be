//! # Scan: screening whole datasets before training
//!
//! `earmark scan` screens folders, JSONL/CSV manifests, WebDataset tar shards
//! and Hugging Face parquet files ([`input`]) item by item against one index and
//! one registry, and writes:
//!
//! * a **report**, one row per item ([`report`]): id, duration, verdict
//!   (`allow`, `flag`, `block`, or `error` when the item could not be
//!   screened), the registered works found with time ranges and consent, the
//!   reasons, the error;
//! * optional **filtered copies** of the input in its own format holding only
//!   the allowed, blocked or flagged items ([`output`]); an item that could
//!   not be screened is never allowed (fail closed);
//! * a **summary** ([`summary`]): items and hours per verdict, blocked works
//!   with their seconds, errors, throughput.
//!
//! The work streams through a bounded pipeline ([`pipeline`]): memory does not
//! grow with the corpus. The report is written in input order and made durable
//! in batches, so it is also the checkpoint: `--resume` after an interruption
//! keeps its complete rows, replays them into the filtered copies and the
//! summary without screening those items again, and continues with the rest.
//! A small state file next to the report (`REPORT.earmark-scan.json`) records
//! the command, so a resume with different inputs or options is refused.
//!
//! Exit codes ([`ScanSummary::exit_code`]): 0 everything allowed; 1 something
//! blocked or flagged; 3 some item could not be screened (this wins over 1, as
//! an error does for `grep`: the screening itself is incomplete); 2 (usage or
//! fatal error) is the CLI's.

pub mod compress;
pub mod error;
pub mod input;
pub mod item;
pub mod output;
pub mod pipeline;
pub mod remote;
pub mod report;
pub mod screen;
pub mod sniff;
pub mod summary;

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;

pub use error::ScanError;
pub use input::{InputKind, InputOptions, InputSpec};
pub use output::OutputSpec;
pub use report::{ReportFormat, ReportRow, RowVerdict};
pub use summary::ScanSummary;

use crate::data_dir::DataDir;
use crate::decode::DecodeLimits;
use crate::matcher::MatcherConfig;
use crate::policy::{POLICY_VERSION, PolicyConfig};
use crate::registry::Scope;
use crate::screening::Screener;
use item::Event;
use pipeline::{Done, PipelineConfig};
use screen::ScreenContext;
use summary::{SummaryBuilder, SummaryInput, SummaryMeta};

/// Exit code: everything screened and allowed.
pub const EXIT_CLEAN: u8 = 0;
/// Exit code: something blocked or flagged.
pub const EXIT_FOUND: u8 = 1;
/// Exit code: usage or fatal error (set by the CLI).
pub const EXIT_ERROR: u8 = 2;
/// Exit code: some items could not be screened.
pub const EXIT_UNSCREENED: u8 = 3;

/// Largest tar member or parquet cell screened in memory (bytes).
pub const DEFAULT_MAX_MEMBER_BYTES: u64 = 1 << 30;
/// Items in flight per worker (bounds memory and reorder latency).
const WINDOW_ITEMS_PER_JOB: u64 = 8;
/// Smallest in-flight window.
const MIN_WINDOW_ITEMS: u64 = 32;
/// In-memory audio in flight at most (one larger item may still pass alone).
const WINDOW_BYTES: u64 = 512 << 20;
/// Format version of the state file.
const STATE_VERSION: u32 = 1;
/// Suffix of the state file next to the report.
const STATE_SUFFIX: &str = ".earmark-scan.json";

/// Everything a scan is told.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    pub inputs: Vec<PathBuf>,
    pub purpose: Scope,
    pub report: PathBuf,
    pub format: ReportFormat,
    pub outputs: Vec<OutputSpec>,
    pub summary: Option<PathBuf>,
    pub resume: bool,
    pub policy: PolicyConfig,
    pub matcher: MatcherConfig,
    pub limits: DecodeLimits,
    /// Worker threads (0: one per core).
    pub jobs: usize,
    pub input: InputOptions,
    /// Compute `content_sha256` for every item (also the submission id in the
    /// ledger; without it, the id is the hash of the prints).
    pub hash_content: bool,
    /// Record allowed opted-in uses in the attribution ledger (false: a dry
    /// run). With `remote`, the server records them.
    pub record_attributions: bool,
    /// Screen through this server instead of the local data directory.
    pub remote: Option<std::sync::Arc<remote::RemoteScreener>>,
}

impl ScanOptions {
    /// Defaults for everything but the inputs and the report.
    pub fn new(inputs: Vec<PathBuf>, report: PathBuf) -> Self {
        Self {
            inputs,
            purpose: Scope::AiTraining,
            report,
            format: ReportFormat::Jsonl,
            outputs: Vec::new(),
            summary: None,
            resume: false,
            policy: PolicyConfig::default(),
            matcher: MatcherConfig::default(),
            limits: DecodeLimits::default(),
            jobs: 0,
            input: InputOptions {
                max_member_bytes: DEFAULT_MAX_MEMBER_BYTES,
                ..InputOptions::default()
            },
            hash_content: true,
            record_attributions: true,
            remote: None,
        }
    }
}

/// Told about progress (the CLI draws a bar; the default does nothing).
pub trait ScanProgress: Sync {
    /// Total number of items, once known.
    fn set_total(&self, _items: u64) {}
    /// One item is finished (`replayed`: by an earlier run).
    fn item_done(&self, _row: &ReportRow, _replayed: bool) {}
}

/// No progress display.
pub struct NoProgress;
impl ScanProgress for NoProgress {}

/// The state file of a report.
pub fn state_path(report: &Path) -> PathBuf {
    output::with_suffix(report, STATE_SUFFIX)
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct ScanState {
    version: u32,
    command: serde_json::Value,
}

fn absolute_string(p: &Path) -> String {
    std::fs::canonicalize(p)
        .or_else(|_| std::path::absolute(p))
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

/// What must be equal for a resume to continue a run.
fn command_identity(options: &ScanOptions, inputs: &[InputSpec]) -> serde_json::Value {
    json!({
        "inputs": inputs.iter().map(|i| json!({
            "path": absolute_string(&i.path),
            "kind": format!("{:?}", i.kind),
        })).collect::<Vec<_>>(),
        "purpose": options.purpose.as_str(),
        "format": options.format,
        "outputs": options.outputs.iter().map(|o| json!({
            "verdict": o.verdict.as_str(),
            "path": absolute_string(&o.path),
        })).collect::<Vec<_>>(),
        "policy": options.policy,
        "matcher": options.matcher,
        "hash_content": options.hash_content,
        "record_attributions": options.record_attributions,
        "remote": options.remote.as_ref().map(|r| r.url().to_owned()),
        "max_member_bytes": options.input.max_member_bytes,
        "limits": [options.limits.max_bytes, options.limits.max_duration_s.to_bits(), options.limits.max_channels as u64],
    })
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ScanError> {
    let tmp = output::with_suffix(path, ".tmp");
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| ScanError::io(path, e))
}

/// Decides between a fresh start and a resume; returns the rows to replay.
fn prepare_report(options: &ScanOptions, identity: &serde_json::Value) -> Result<u64, ScanError> {
    let state_file = state_path(&options.report);
    let state = ScanState {
        version: STATE_VERSION,
        command: identity.clone(),
    };
    if options.resume && options.report.exists() {
        let text = std::fs::read_to_string(&state_file).map_err(|_| ScanError::Resume {
            reason: format!(
                "{} has no state file ({}); start again without --resume",
                options.report.display(),
                state_file.display()
            ),
        })?;
        let stored: ScanState = serde_json::from_str(&text).map_err(|e| ScanError::Resume {
            reason: format!("{}: {e}", state_file.display()),
        })?;
        if stored != state {
            return Err(ScanError::Resume {
                reason: "the inputs or options differ from the interrupted run; run the same command, or start again without --resume".into(),
            });
        }
        return report::recover(&options.report, options.format);
    }
    let bytes = serde_json::to_vec_pretty(&state).map_err(|e| ScanError::Fatal {
        reason: e.to_string(),
    })?;
    write_atomically(&state_file, &bytes)?;
    Ok(0)
}

fn estimate_total(inputs: &[InputSpec]) -> Option<u64> {
    let mut total = 0u64;
    for spec in inputs {
        total += match &spec.kind {
            InputKind::AudioFile => 1,
            InputKind::Folder => walkdir::WalkDir::new(&spec.path)
                .follow_links(true)
                .into_iter()
                .filter_map(Result::ok)
                .filter(|e| {
                    e.file_type().is_file()
                        && input::folder::is_audio_file(e.path()).unwrap_or(true)
                })
                .count() as u64,
            InputKind::Jsonl { .. } | InputKind::Csv { .. } => {
                use std::io::BufRead;
                let reader = std::io::BufReader::new(compress::open_decompressed(&spec.path).ok()?);
                let lines = reader
                    .split(b'\n')
                    .filter_map(Result::ok)
                    .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
                    .count() as u64;
                if matches!(spec.kind, InputKind::Csv { .. }) {
                    lines.saturating_sub(1)
                } else {
                    lines
                }
            }
            InputKind::Tar
                if compress::Compression::from_name(&spec.path) == compress::Compression::None =>
            {
                input::shard::validate_shard(&spec.path).unwrap_or(1)
            }
            InputKind::Tar => return None,
            InputKind::Parquet { .. } => {
                let file = std::fs::File::open(&spec.path).ok()?;
                let builder =
                    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                        .ok()?;
                u64::try_from(builder.metadata().file_metadata().num_rows()).ok()?
            }
        };
    }
    Some(total)
}

/// Runs a scan (see the module docs). Per-item problems are report rows; an
/// `Err` means the scan could not run or had to stop (the report so far stays
/// valid for `--resume`).
pub fn run_scan(
    data: &DataDir,
    options: &ScanOptions,
    progress: &dyn ScanProgress,
) -> Result<ScanSummary, ScanError> {
    let started = Instant::now();
    let started_at = OffsetDateTime::now_utc();
    if options.inputs.is_empty() {
        return Err(ScanError::Usage {
            reason: "no inputs given".into(),
        });
    }
    let inputs: Vec<InputSpec> = options
        .inputs
        .iter()
        .map(|p| input::detect(p, &options.input))
        .collect::<Result<_, _>>()?;
    for spec in &inputs {
        let report =
            std::path::absolute(&options.report).unwrap_or_else(|_| options.report.clone());
        let input = std::path::absolute(&spec.path).unwrap_or_else(|_| spec.path.clone());
        if report == input {
            return Err(ScanError::Usage {
                reason: format!("the report would overwrite input {}", spec.path.display()),
            });
        }
    }
    let identity = command_identity(options, &inputs);
    let resuming = options.resume && options.report.exists();
    let mut outputs = output::Outputs::plan(&options.outputs, &inputs, resuming)?;
    let local = match &options.remote {
        Some(_) => None,
        None => {
            let index = data.open_index()?;
            let registry = data.open_registry()?;
            if index.live_work_count() == 0 {
                tracing::warn!(data = %data.root.display(), "the index holds no works: every item will be allowed");
            }
            Some((index, registry))
        }
    };
    let replay_rows = prepare_report(options, &identity)?;
    let replay = if replay_rows > 0 {
        Some(report::RowReader::open(
            &options.report,
            options.format,
            replay_rows,
        )?)
    } else {
        None
    };
    let mut report = report::ReportWriter::open(&options.report, options.format, replay_rows > 0)?;
    let jobs = if options.jobs == 0 {
        std::thread::available_parallelism().map_or(1, usize::from)
    } else {
        options.jobs
    };
    let screener = local.as_ref().map(|(index, registry)| {
        Screener::new(index, registry, &options.policy, &options.matcher)
            .recording_if(options.record_attributions, registry)
    });
    let backend = match (&screener, &options.remote) {
        (Some(screener), _) => screen::Backend::Local(screener),
        (None, Some(remote)) => screen::Backend::Remote(remote),
        (None, None) => {
            return Err(ScanError::Fatal {
                reason: "no index and no remote server".into(),
            });
        }
    };
    let ctx = ScreenContext {
        backend,
        limits: options.limits,
        purpose: options.purpose,
        at: started_at,
        hash_content: options.hash_content,
        keep_payload: !outputs.is_empty(),
    };
    let config = PipelineConfig {
        jobs,
        window_items: (jobs as u64 * WINDOW_ITEMS_PER_JOB).max(MIN_WINDOW_ITEMS),
        window_bytes: WINDOW_BYTES,
    };
    let mut summary = SummaryBuilder::default();
    let result = std::thread::scope(|scope| {
        scope.spawn(|| {
            if let Some(total) = estimate_total(&inputs) {
                progress.set_total(total);
            }
        });
        let mut sink = |done: Done| -> Result<(), ScanError> {
            match done {
                Done::Boundary(Event::InputStart { input, layout }) => {
                    outputs.input_start(input, &layout)
                }
                Done::Boundary(Event::InputEnd { input, complete }) => {
                    outputs.input_end(input, complete)
                }
                Done::Boundary(Event::Item(_)) => Ok(()),
                Done::Screened { item, row } => {
                    report.write(&row)?;
                    summary.add(&row, false);
                    outputs.item(&item, row.verdict)?;
                    progress.item_done(&row, false);
                    Ok(())
                }
                Done::Replayed { item, row } => {
                    summary.add(&row, true);
                    outputs.item(&item, row.verdict)?;
                    progress.item_done(&row, true);
                    Ok(())
                }
                Done::Fatal(e) => Err(e),
            }
        };
        pipeline::run(&inputs, &options.input, replay, &ctx, config, &mut sink)
    });
    report.commit()?;
    result?;
    let meta = SummaryMeta {
        purpose: options.purpose.to_string(),
        inputs: inputs
            .iter()
            .map(|i| SummaryInput {
                path: i.path.display().to_string(),
                kind: i.kind.name().to_owned(),
            })
            .collect(),
        report: options.report.display().to_string(),
        started_at,
        finished_at: OffsetDateTime::now_utc(),
        consent_evaluated_at: crate::registry::model::normalize_time(started_at),
        policy_version: POLICY_VERSION.to_owned(),
        policy: options.policy.clone(),
        index_generation: match (&local, &options.remote) {
            (Some((index, _)), _) => index.generation(),
            (None, Some(r)) => r.policy().map_or(0, |p| p.index_generation),
            (None, None) => 0,
        },
        registered_works: local
            .as_ref()
            .map_or(0, |(index, _)| index.live_work_count()),
        remote: options.remote.as_ref().map(|r| {
            r.policy().unwrap_or_else(|| remote::RemotePolicy {
                url: r.url().to_owned(),
                ..remote::RemotePolicy::default()
            })
        }),
    };
    let summary = summary.finish(meta, started.elapsed(), jobs);
    if let Some(path) = &options.summary {
        let bytes = serde_json::to_vec_pretty(&summary).map_err(|e| ScanError::Fatal {
            reason: e.to_string(),
        })?;
        write_atomically(path, &bytes)?;
    }
    Ok(summary)
}

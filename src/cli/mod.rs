//! Command-line interface (the edge: `anyhow` for errors, exit codes decided here).

mod bench;
mod conn;
mod demo;
mod eval;
pub mod registry_cmds;
pub mod remote;
mod report_page;
mod scan;
mod serve;
pub mod works;

use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use rayon::prelude::*;

use crate::data_dir::DataDir;
use crate::decode::DecodeLimits;
use crate::matcher::MatcherConfig;
use crate::policy::{Decision, PolicyConfig, UnknownConsent, Verdict};
use crate::registry::{Registry, Scope};
use crate::report::{self, FileReport};
use crate::screening::{Screener, Submission, SubmissionId};
use registry_cmds::{AuditCmd, ConsentCmd, KeysCmd, LedgerCmd};
pub use works::WorksCmd;

/// Exit code: nothing found / all good.
pub const EXIT_CLEAN: u8 = 0;
/// Exit code: something matched (or was blocked/flagged).
pub const EXIT_FOUND: u8 = 1;
/// Exit code: an error.
pub const EXIT_ERROR: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "earmark",
    version,
    about = "Audio fingerprint consent gate: finds registered works inside audio and enforces their AI-training consent."
)]
pub struct Cli {
    /// Data directory (index + registry).
    #[arg(long, global = true, env = "EARMARK_DATA", default_value = crate::data_dir::DEFAULT_DATA_DIR)]
    pub data: PathBuf,
    /// Registry location: `sqlite` (the data directory's registry.sqlite, the
    /// default) or a PostgreSQL URL (`postgres://user@host:5432/earmark`,
    /// `?sslmode=require` for TLS) shared by service replicas.
    #[arg(long, global = true, env = crate::registry::REGISTRY_ENV, default_value = "sqlite")]
    pub registry: String,
    /// More logging (-v info, -vv debug); or set EARMARK_LOG.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Register the reference clips in test-audio/ into a fresh data directory and
    /// identify the sample submissions there.
    Demo(demo::DemoArgs),
    /// Manage registered works.
    #[command(subcommand)]
    Works(WorksCmd),
    /// Identify registered works inside audio files; with --purpose, decide
    /// block / flag / allow from their consent.
    #[command(
        after_help = "Exit status without --purpose: 0 nothing found, 1 a registered work \
        found, 2 error. With --purpose: 0 every file allowed, 1 something blocked or flagged, \
        2 error."
    )]
    Identify(IdentifyArgs),
    /// Record and inspect consent statements of works.
    #[command(subcommand)]
    Consent(ConsentCmd),
    /// Verify or export the hash-chained audit log.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Export the attribution ledger (per-work totals).
    #[command(subcommand)]
    Ledger(LedgerCmd),
    /// Manage API keys of the service.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Inspect and maintain the fingerprint index.
    #[command(subcommand)]
    Index(IndexCmd),
    /// Accuracy harness: run an evaluation set (see scripts/make-eval-set.py).
    Eval(eval::EvalArgs),
    /// Screen a dataset (folders, JSONL/CSV manifests, WebDataset shards, parquet):
    /// report, filtered copies, summary. Exit 0 all allowed, 1 blocked or flagged,
    /// 3 some items not screened, 2 error.
    Scan(scan::ScanArgs),
    /// Make a self-contained HTML page of a scan report (and its summary):
    /// totals, works found, a filterable item table with per-item timelines.
    Report(report_page::ReportArgs),
    /// Run the gRPC service (screening + registry) on this data directory.
    Serve(serve::ServeArgs),
    /// Fingerprint an audio file locally (for `identify --remote` / ScreenFingerprints).
    Fingerprint(serve::FingerprintArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(bench::BenchCmd),
}

#[derive(Debug, Args)]
pub struct IdentifyArgs {
    /// One JSON object per file per line.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub remote: conn::RemoteArgs,
    #[command(flatten)]
    pub thresholds: Thresholds,
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// With --purpose: also write a self-contained HTML page of the verdicts here.
    #[arg(
        long,
        value_name = "OUT",
        requires = "purpose",
        conflicts_with = "remote"
    )]
    pub html: Option<PathBuf>,
    /// Audio files to screen.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

/// Consent screening options of `identify`.
#[derive(Debug, Clone, Args)]
pub struct PolicyArgs {
    /// Screen for this use and print a verdict per file (block / flag / allow)
    /// from each matched work's consent in force now.
    #[arg(long, value_parser = registry_cmds::scope_parser())]
    pub purpose: Option<Scope>,
    /// With --purpose: verdict for a confident match of a work without any
    /// consent on record.
    #[arg(long, value_enum, requires = "purpose")]
    pub unknown: Option<UnknownArg>,
    /// With --purpose: submission id for the verdict and the attribution ledger
    /// (one file only; default "sha256:" and the file's SHA-256).
    #[arg(long, requires = "purpose")]
    pub submission_id: Option<String>,
    /// With --purpose: do not record attributions of allowed uses in the ledger.
    #[arg(long, requires = "purpose")]
    pub no_ledger: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum UnknownArg {
    Allow,
    Flag,
}

impl PolicyArgs {
    /// The screening settings, or `None` without `--purpose`.
    pub fn screening(&self, files: usize) -> Result<Option<Screening>> {
        let Some(purpose) = self.purpose else {
            return Ok(None);
        };
        if self.submission_id.is_some() && files != 1 {
            bail!("--submission-id names one submission: give exactly one file");
        }
        let unknown_consent = match self.unknown {
            Some(UnknownArg::Allow) => UnknownConsent::Allow,
            Some(UnknownArg::Flag) | None => UnknownConsent::Flag,
        };
        Ok(Some(Screening {
            purpose,
            config: PolicyConfig {
                unknown_consent,
                territory: None,
            },
            submission_id: self
                .submission_id
                .as_deref()
                .map(SubmissionId::named)
                .transpose()
                .context("--submission-id")?,
            record_attributions: !self.no_ledger,
        }))
    }
}

/// How to turn matches into verdicts.
#[derive(Debug, Clone)]
pub struct Screening {
    pub purpose: Scope,
    pub config: PolicyConfig,
    /// Fixed submission id (single file); default: `sha256:<hex of the file>`.
    pub submission_id: Option<SubmissionId>,
    /// Write attributions of allowed verdicts to the ledger.
    pub record_attributions: bool,
}

/// One screened file: what was found and, with a purpose, the verdict.
#[derive(Debug, Clone)]
pub struct Screened {
    pub report: FileReport,
    pub verdict: Option<Verdict>,
    /// New ledger entries written for this file.
    pub attributions_recorded: usize,
}

#[derive(Debug, Clone, Copy, Args)]
pub struct Thresholds {
    /// Report matches scoring at least this (weaker ones are ignored).
    #[arg(long, default_value_t = crate::matcher::DEFAULT_MIN_SCORE)]
    pub min_score: f64,
    /// Matches scoring at least this are confident.
    #[arg(long, default_value_t = crate::matcher::DEFAULT_CONFIDENT_SCORE)]
    pub confident_score: f64,
    /// Works searched peak by peak when no hash alignment of them was found
    /// (finds works mixed under louder audio; 0 turns the deep search off).
    #[arg(long, default_value_t = crate::matcher::DEFAULT_DEEP_SEARCH_WORKS)]
    pub deep_search_works: usize,
    /// Deep-search matches must score at least this.
    #[arg(long, default_value_t = crate::matcher::DEFAULT_DEEP_MIN_SCORE)]
    pub deep_min_score: f64,
}

impl Thresholds {
    pub fn matcher_config(&self) -> MatcherConfig {
        MatcherConfig {
            min_score: self.min_score,
            confident_score: self.confident_score,
            deep_search_works: self.deep_search_works,
            deep_min_score: self.deep_min_score,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum IndexCmd {
    /// Segments, works, postings, size per hour of reference audio.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Check every segment's checksum and structure.
    Verify,
    /// Merge segments and drop removed works' postings.
    Compact,
}

/// Parses arguments, runs the command, and maps the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // A server logs one line per request (request id, method, code, verdict,
    // latency) at info; one-shot commands stay quiet unless asked.
    init_logging(cli.verbose, matches!(cli.command, Command::Serve(_)));
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("earmark: error: {}", error_chain(&err));
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// `err` and its causes joined with ": ", skipping a cause whose text is
/// already in the message (library errors embed their source's text, so
/// `{err:#}` would print it twice).
pub(crate) fn error_chain(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn init_logging(verbose: u8, server: bool) {
    let default = match (verbose, server) {
        (0, false) => "warn",
        (0, true) | (1, _) => "info",
        _ => "debug",
    };
    // symphonia logs failed probes at ERROR level; earmark reports them itself
    // as an error naming the file.
    let filter = tracing_subscriber::EnvFilter::try_from_env("EARMARK_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{default},symphonia_core::formats::probe=off"))
    });
    // Colours only on a terminal: logs piped to a file or journald stay plain
    // `key=value` text that tools can parse.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .try_init();
}

fn run(cli: Cli) -> Result<u8> {
    let location = crate::registry::RegistryLocation::parse(&cli.registry)
        .map_err(crate::error::EngineError::from)?;
    let data = DataDir::new(&cli.data).with_registry(location);
    match cli.command {
        Command::Demo(args) => demo::run(&args),
        Command::Works(cmd) => works::run(&data, cmd),
        Command::Identify(args) => run_identify(&data, &args),
        Command::Consent(cmd) => registry_cmds::run_consent(cmd, &data.open_registry()?),
        Command::Audit(cmd) => registry_cmds::run_audit(cmd, &data.open_registry()?),
        Command::Ledger(cmd) => registry_cmds::run_ledger(cmd, &data.open_registry()?),
        Command::Keys(cmd) => registry_cmds::run_keys(cmd, &data.open_registry()?),
        Command::Index(cmd) => run_index(&data, cmd),
        Command::Eval(args) => eval::run(&args),
        Command::Scan(args) => scan::run(&data, &args),
        Command::Report(args) => report_page::run_report(&args),
        Command::Serve(args) => serve::run_serve(&data, &args),
        Command::Fingerprint(args) => serve::run_fingerprint(&args),
        Command::Bench(cmd) => bench::run_bench(&cmd),
    }
}

/// Screens files in parallel; returns one report per file, in input order.
pub fn identify_reports(
    data: &DataDir,
    files: &[PathBuf],
    config: &MatcherConfig,
) -> Result<Vec<FileReport>> {
    let index = data.open_index()?;
    let limits = DecodeLimits::default();
    Ok(map_files(files, |path| {
        identify_one(&index, path, &limits, config)
    }))
}

/// Applies `f` to every file, in parallel, results in input order. A single
/// file runs on the calling thread: there it decodes on one core while the
/// other fingerprints (see [`crate::fingerprint::audio::fingerprint_file`]), where a pool worker
/// would do both in turn.
fn map_files<T: Send>(files: &[PathBuf], f: impl Fn(&Path) -> T + Sync) -> Vec<T> {
    match files {
        [one] => vec![f(one)],
        _ => files.par_iter().map(|path| f(path)).collect(),
    }
}

fn identify_one(
    index: &crate::index::Index,
    path: &Path,
    limits: &DecodeLimits,
    config: &MatcherConfig,
) -> FileReport {
    match crate::screening::identify_file(index, path, limits, config) {
        Ok(found) => FileReport {
            file: path.display().to_string(),
            duration_s: Some(found.duration_s),
            matches: found.matches,
            error: None,
        },
        Err(err) => FileReport {
            file: path.display().to_string(),
            duration_s: None,
            matches: Vec::new(),
            error: Some(err.to_string()),
        },
    }
}

/// Identifies works in `files` (in parallel, results in input order) and, with
/// a screening, has the [`Screener`] decide a verdict per file and record
/// attributions of allowed uses. Without a screening, matches of works the
/// registry does not hold (an interrupted registration) are left out of the
/// report; with one, the policy flags them.
pub fn screen(
    data: &DataDir,
    files: &[PathBuf],
    config: &MatcherConfig,
    screening: Option<&Screening>,
) -> Result<Vec<Screened>> {
    let index = data.open_index()?;
    let registry = if data.has_registry() || screening.is_some() {
        Some(data.open_registry()?)
    } else {
        None
    };
    let limits = DecodeLimits::default();
    let want_sha = screening.is_some_and(|s| s.submission_id.is_none());
    let found: Vec<(FileReport, Option<SubmissionId>)> = map_files(files, |path| {
        let mut report = identify_one(&index, path, &limits, config);
        let mut sha = None;
        if want_sha && report.error.is_none() {
            match crate::content::sha256_file(path) {
                Ok(hex) => sha = SubmissionId::from_sha256(&hex).ok(),
                Err(err) => report.error = Some(err.to_string()),
            }
        }
        (report, sha)
    });
    let mut screened = Vec::with_capacity(found.len());
    match (screening, &registry) {
        (Some(s), Some(reg)) => {
            let screener = Screener::new(&index, reg, &s.config, config)
                .recording_if(s.record_attributions, reg);
            for (report, sha) in found {
                let id = match (&s.submission_id, sha) {
                    (Some(named), _) => Some(named.clone()),
                    (None, sha) => sha,
                };
                let outcome = match id {
                    Some(id) if report.error.is_none() => {
                        let submission = Submission {
                            id,
                            name: report.file.clone(),
                        };
                        Some(screener.decide(&submission, &report.matches, s.purpose, reg.now())?)
                    }
                    _ => None,
                };
                screened.push(Screened {
                    attributions_recorded: outcome.as_ref().map_or(0, |o| o.attributions_recorded),
                    verdict: outcome.map(|o| o.verdict),
                    report,
                });
            }
        }
        _ => {
            let registered = registry.as_ref().map(Registry::work_ids).transpose()?;
            for (mut report, _) in found {
                if let Some(ids) = &registered {
                    report.matches.retain(|m| ids.contains(&m.work_id));
                }
                screened.push(Screened {
                    report,
                    verdict: None,
                    attributions_recorded: 0,
                });
            }
        }
    }
    Ok(screened)
}

/// Human-readable verdict lines of one file.
pub fn human_verdict(verdict: &Verdict, attributions_recorded: usize) -> String {
    let mut out = format!(
        "  verdict for {}: {}\n",
        verdict.purpose,
        verdict.decision.as_str().to_uppercase()
    );
    for reason in &verdict.reasons {
        out.push_str(&format!("    {reason}\n"));
    }
    for a in &verdict.attributions {
        let state = if attributions_recorded > 0 {
            "recorded in the ledger"
        } else if verdict.decision == Decision::Allow {
            "already in the ledger or not recorded"
        } else {
            "pending review, not recorded"
        };
        out.push_str(&format!(
            "  attribution: {} ({}) {:.1} s, {state}\n",
            a.work_id, a.holder, a.seconds_matched
        ));
    }
    out
}

/// One `identify --json` line: the issue-2 report fields, plus `verdict` when
/// screening for a purpose (`null` for a file that could not be screened).
fn json_line(s: &Screened, with_verdict: bool) -> Result<String> {
    let mut value = serde_json::to_value(&s.report)?;
    if with_verdict && let Some(obj) = value.as_object_mut() {
        obj.insert("verdict".to_owned(), serde_json::to_value(&s.verdict)?);
    }
    Ok(serde_json::to_string(&value)?)
}

fn run_identify(data: &DataDir, args: &IdentifyArgs) -> Result<u8> {
    let started = report_page::Started::now();
    let screening = args.policy.screening(args.files.len())?;
    if args.remote.remote.is_some() {
        let Some(s) = &screening else {
            bail!("--remote screens for a purpose: give --purpose");
        };
        return remote::run_identify_remote(
            &args.remote,
            &args.files,
            s.purpose,
            !s.record_attributions,
            args.json,
        );
    }
    let results = screen(
        data,
        &args.files,
        &args.thresholds.matcher_config(),
        screening.as_ref(),
    )?;
    let stdout = io::stdout();
    let mut out = stdout.lock();
    for s in &results {
        if args.json {
            writeln!(out, "{}", json_line(s, screening.is_some())?)?;
        } else {
            write!(out, "{}", report::human(&s.report))?;
            if let Some(v) = &s.verdict {
                write!(out, "{}", human_verdict(v, s.attributions_recorded))?;
            }
        }
    }
    if let (Some(out), Some(s)) = (&args.html, &screening) {
        report_page::write_identify_page(data, out, &args.files, &results, s, &started)?;
    }
    let errors = results.iter().filter(|s| s.report.error.is_some()).count();
    let found = if screening.is_some() {
        results.iter().any(|s| {
            s.verdict
                .as_ref()
                .is_some_and(|v| v.decision != Decision::Allow)
        })
    } else {
        results
            .iter()
            .any(|s| s.report.matches.iter().any(|m| m.confident))
    };
    if errors > 0 && !args.json && io::stderr().is_terminal() {
        eprintln!("earmark: {errors} file(s) could not be screened");
    }
    Ok(if errors > 0 {
        EXIT_ERROR
    } else if found {
        EXIT_FOUND
    } else {
        EXIT_CLEAN
    })
}

fn run_index(data: &DataDir, cmd: IndexCmd) -> Result<u8> {
    match cmd {
        IndexCmd::Stats { json } => {
            let stats = data.open_index()?.stats();
            if json {
                println!("{}", serde_json::to_string_pretty(&stats)?);
            } else {
                println!("index            {}", data.index_dir().display());
                println!("generation       {}", stats.generation);
                println!("config id        {}", stats.config_id);
                println!("segments         {}", stats.segments);
                println!(
                    "works            {} live, {} removed",
                    stats.live_works, stats.tombstoned_works
                );
                println!("postings         {}", stats.postings);
                println!("size             {:.2} MB", stats.bytes as f64 / 1e6);
                println!("reference audio  {:.2} h", stats.reference_hours);
                println!("size per hour    {:.2} MB/h", stats.megabytes_per_hour);
            }
            Ok(EXIT_CLEAN)
        }
        IndexCmd::Verify => {
            let index = data.open_index()?;
            index.verify().context("index verification failed")?;
            let stats = index.stats();
            println!(
                "index OK: {} segments, {} works, {} postings verified",
                stats.segments, stats.live_works, stats.postings
            );
            verify_against_registry(data, &index)
        }
        IndexCmd::Compact => {
            let before = data.open_index()?.stats();
            let generation = match data.registry {
                // A shared index: under the registry's index write lock,
                // publishing the new generation.
                crate::registry::RegistryLocation::Postgres(_) => {
                    crate::registration::Catalog::open(data)?.compact()?
                }
                crate::registry::RegistryLocation::DataDir => data.index_writer()?.compact()?,
            };
            let after = data.open_index()?.stats();
            println!(
                "compacted {} segments into {} ({} → {} postings, generation {generation})",
                before.segments, after.segments, before.postings, after.postings
            );
            Ok(EXIT_CLEAN)
        }
    }
}

/// `index verify`, second part: every registered work must have fingerprints.
/// Fingerprints without a registry entry (left by an interrupted registration)
/// are reported but are not an error: they never match and the next change
/// through `works` removes them.
fn verify_against_registry(data: &DataDir, index: &crate::index::Index) -> Result<u8> {
    if !data.has_registry() {
        println!("no registry in {}", data.root.display());
        return Ok(EXIT_CLEAN);
    }
    let registered = data.open_registry()?.work_ids()?;
    let mut missing: Vec<&String> = registered.iter().filter(|id| !index.contains(id)).collect();
    missing.sort();
    let unregistered = index
        .work_ids()
        .filter(|id| !registered.contains(*id))
        .count();
    if unregistered > 0 {
        println!(
            "{unregistered} fingerprint set(s) without a registry entry (interrupted \
             registration; never reported, removed by the next `earmark works` change)"
        );
    }
    if !missing.is_empty() {
        let ids: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
        bail!(
            "{} registered work(s) have no fingerprints in the index: {}",
            missing.len(),
            ids.join(", ")
        );
    }
    println!("registry OK: {} works, all fingerprinted", registered.len());
    Ok(EXIT_CLEAN)
}

/// Fails with a clear message if `path` is not a readable directory.
pub(crate) fn require_dir(path: &Path, what: &str) -> Result<()> {
    if !path.is_dir() {
        bail!("{what} {} is not a directory", path.display());
    }
    Ok(())
}

//! Command-line interface (the edge: `anyhow` for errors, exit codes decided here).

mod demo;
mod eval;
pub mod registry_cmds;

use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use rayon::prelude::*;

use crate::decode::DecodeLimits;
use crate::engine::{self, DataDir};
use crate::matcher::MatcherConfig;
use crate::report::{self, FileReport};

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
    #[arg(long, global = true, env = "EARMARK_DATA", default_value = engine::DEFAULT_DATA_DIR)]
    pub data: PathBuf,
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
    /// Identify registered works inside audio files.
    Identify(IdentifyArgs),
    /// Inspect and maintain the fingerprint index.
    #[command(subcommand)]
    Index(IndexCmd),
    /// Accuracy harness: run an evaluation set (see scripts/make-eval-set.py).
    Eval(eval::EvalArgs),
}

#[derive(Debug, Subcommand)]
pub enum WorksCmd {
    /// Register reference audio under a work id.
    Add {
        #[arg(long)]
        id: String,
        file: PathBuf,
    },
    /// Remove a work (its fingerprints stop matching at once).
    Remove { id: String },
}

#[derive(Debug, Args)]
pub struct IdentifyArgs {
    /// One JSON object per file per line.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub thresholds: Thresholds,
    /// Audio files to screen.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, Args)]
pub struct Thresholds {
    /// Report matches scoring at least this (weaker ones are ignored).
    #[arg(long, default_value_t = crate::matcher::DEFAULT_MIN_SCORE)]
    pub min_score: f64,
    /// Matches scoring at least this are confident.
    #[arg(long, default_value_t = crate::matcher::DEFAULT_CONFIDENT_SCORE)]
    pub confident_score: f64,
}

impl Thresholds {
    pub fn matcher_config(&self) -> MatcherConfig {
        MatcherConfig {
            min_score: self.min_score,
            confident_score: self.confident_score,
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
    init_logging(cli.verbose);
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("earmark: error: {err:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("EARMARK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .try_init();
}

fn run(cli: Cli) -> Result<u8> {
    let data = DataDir::new(&cli.data);
    match cli.command {
        Command::Demo(args) => demo::run(&args),
        Command::Works(cmd) => run_works(&data, cmd),
        Command::Identify(args) => run_identify(&data, &args),
        Command::Index(cmd) => run_index(&data, cmd),
        Command::Eval(args) => eval::run(&args),
    }
}

fn run_works(data: &DataDir, cmd: WorksCmd) -> Result<u8> {
    match cmd {
        WorksCmd::Add { id, file } => {
            let writer = data.index_writer()?;
            let work = engine::prepare_work(&id, &file, &DecodeLimits::default())?;
            let generation = engine::commit_works(&writer, std::slice::from_ref(&work))?;
            println!(
                "registered {id}: {:.1} s, {} prints (index generation {generation})",
                work.info.duration_s,
                work.fingerprint.prints.len()
            );
            Ok(EXIT_CLEAN)
        }
        WorksCmd::Remove { id } => {
            let writer = data.index_writer()?;
            let generation = writer.remove_work(&id)?;
            println!("removed {id} (index generation {generation})");
            Ok(EXIT_CLEAN)
        }
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
    Ok(files
        .par_iter()
        .map(|path| identify_one(&index, path, &limits, config))
        .collect())
}

fn identify_one(
    index: &crate::index::Index,
    path: &Path,
    limits: &DecodeLimits,
    config: &MatcherConfig,
) -> FileReport {
    match engine::identify_file(index, path, limits, config) {
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

fn run_identify(data: &DataDir, args: &IdentifyArgs) -> Result<u8> {
    let reports = identify_reports(data, &args.files, &args.thresholds.matcher_config())?;
    let stdout = io::stdout();
    let mut out = stdout.lock();
    for r in &reports {
        if args.json {
            writeln!(out, "{}", serde_json::to_string(r)?)?;
        } else {
            write!(out, "{}", report::human(r))?;
        }
    }
    let errors = reports.iter().filter(|r| r.error.is_some()).count();
    let found = reports
        .iter()
        .any(|r| r.matches.iter().any(|m| m.confident));
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
                println!("works            {} live, {} removed", stats.live_works, stats.tombstoned_works);
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
            Ok(EXIT_CLEAN)
        }
        IndexCmd::Compact => {
            let writer = data.index_writer()?;
            let before = data.open_index()?.stats();
            let generation = writer.compact()?;
            let after = data.open_index()?.stats();
            println!(
                "compacted {} segments into {} ({} → {} postings, generation {generation})",
                before.segments, after.segments, before.postings, after.postings
            );
            Ok(EXIT_CLEAN)
        }
    }
}

/// Fails with a clear message if `path` is not a readable directory.
pub(crate) fn require_dir(path: &Path, what: &str) -> Result<()> {
    if !path.is_dir() {
        bail!("{what} {} is not a directory", path.display());
    }
    Ok(())
}

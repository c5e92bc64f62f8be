//! `earmark works …`: register, import, remove and inspect works.
//!
//! Writes go through [`crate::registration::Catalog`], which keeps the fingerprint index and
//! the registry consistent (a work is registered with its fingerprints, or not
//! at all). Read-only subcommands (`list`, `show`) only open the registry.

use std::io::{self, IsTerminal};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::Serialize;
use serde_json::json;

use super::EXIT_CLEAN;
use super::registry_cmds::{self, ActorArg, WorksReadCmd, scope_parser, status_parser};
use crate::data_dir::DataDir;
use crate::decode::DecodeLimits;
use crate::registration::Catalog;
use crate::registration::Registration;
use crate::registry::catalog::{self as catalog_file, CatalogRow, CatalogRowError};
use crate::registry::{
    ConsentSource, ConsentStatus, ExistingWork, Isni, Isrc, Iswc, NewConsent, NewWork, Scope,
    WorkId,
};

/// Exit code of `works import` when some rows failed (the others went in).
pub const EXIT_PARTIAL: u8 = 3;
/// Holder recorded when `works add` is not told one.
const DEFAULT_HOLDER: &str = "unknown";
/// Scope of `--consent` when no `--scope` is given.
const DEFAULT_SCOPE: Scope = Scope::AiTraining;
/// Catalog rows fingerprinted in parallel and written as one index segment.
const DEFAULT_IMPORT_BATCH: usize = 16;
/// Row errors kept in the `import-run` audit entry (the count is always kept).
const MAX_AUDITED_ROW_ERRORS: usize = 100;
/// Refresh rate of the import progress bar.
const PROGRESS_TICKS_PER_SECOND: u8 = 4;

#[derive(Debug, Subcommand)]
pub enum WorksCmd {
    /// Register reference audio as a work: fingerprints and registry entry
    /// (metadata, initial consent, audit entry), all or nothing.
    Add(Box<AddArgs>),
    /// Register every row of a catalog file (.csv or .jsonl; columns id, file,
    /// title, holder, artists, isrc, iswc, holder_isni, consent, scope, …).
    #[command(
        after_help = "Rows already registered with the same reference audio are \
        skipped, so re-running an import is safe. A bad row is reported on stderr with its \
        line number and the other rows still go in.\n\nExit status: 0 every row registered \
        or already present; 3 some rows failed (the others were registered); 2 fatal error."
    )]
    Import(ImportArgs),
    /// Remove a work: its fingerprints stop matching at once; its consent
    /// history and ledger entries are kept.
    Remove {
        id: String,
        #[command(flatten)]
        actor: ActorArg,
    },
    #[command(flatten)]
    Read(WorksReadCmd),
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// Reference audio file.
    pub file: PathBuf,
    /// Work id: 1–128 characters of A-Z a-z 0-9 . _ : -
    #[arg(long, value_parser = WorkId::parse)]
    pub id: WorkId,
    /// Title (default: the id).
    #[arg(long)]
    pub title: Option<String>,
    /// Artist (repeat for several).
    #[arg(long = "artist")]
    pub artists: Vec<String>,
    /// ISRC of the recording (CC-XXX-YY-NNNNN, hyphens optional).
    #[arg(long, value_parser = Isrc::parse)]
    pub isrc: Option<Isrc>,
    /// ISWC of the composition (T-123.456.789-0).
    #[arg(long, value_parser = Iswc::parse)]
    pub iswc: Option<Iswc>,
    /// Rights holder.
    #[arg(long, default_value = DEFAULT_HOLDER)]
    pub holder: String,
    /// ISNI of the rights holder.
    #[arg(long, value_parser = Isni::parse)]
    pub holder_isni: Option<Isni>,
    /// Initial consent statement of the holder.
    #[arg(long, value_parser = status_parser())]
    pub consent: Option<ConsentStatus>,
    /// Scope of --consent (repeat for several; default ai-training).
    #[arg(long = "scope", value_parser = scope_parser(), requires = "consent")]
    pub scopes: Vec<Scope>,
    /// Who made the consent statement (default: the holder).
    #[arg(long, requires = "consent")]
    pub asserted_by: Option<String>,
    /// Where the consent statement came from.
    #[arg(long, requires = "consent", value_parser = |s: &str| s.parse::<ConsentSource>())]
    pub source: Option<ConsentSource>,
    /// Licence or policy reference of the consent (text or URL).
    #[arg(long, requires = "consent")]
    pub policy_ref: Option<String>,
    /// Conditions of a constrained consent.
    #[arg(long, requires = "consent")]
    pub terms: Option<String>,
    #[command(flatten)]
    pub actor: ActorArg,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Catalog file (.csv, or .jsonl / .ndjson); `file` paths are relative to it.
    pub catalog: PathBuf,
    /// Rows fingerprinted in parallel and written to the index together.
    #[arg(long, default_value_t = DEFAULT_IMPORT_BATCH, value_parser = parse_batch)]
    pub batch: usize,
    #[command(flatten)]
    pub actor: ActorArg,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

fn parse_batch(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("'{s}' is not a positive number")),
    }
}

pub fn run(data: &DataDir, cmd: WorksCmd) -> Result<u8> {
    match cmd {
        WorksCmd::Add(args) => add(data, *args),
        WorksCmd::Import(args) => import(data, &args),
        WorksCmd::Remove { id, actor } => {
            let catalog = Catalog::open(data)?;
            catalog
                .remove(&id, &actor.resolve())
                .with_context(|| format!("removing work '{id}'"))?;
            let generation = data.open_index()?.generation();
            println!("removed {id} (index generation {generation})");
            Ok(EXIT_CLEAN)
        }
        WorksCmd::Read(cmd) => {
            let registry = data.open_registry()?;
            registry_cmds::run_works_read(cmd, &registry)
        }
    }
}

fn add(data: &DataDir, args: AddArgs) -> Result<u8> {
    let id = args.id.to_string();
    let file = &args.file;
    let sha256 = crate::content::sha256_file(file)?;
    let catalog = Catalog::open(data)?;
    match catalog.registry.existing_work(&id, &sha256)? {
        ExistingWork::NotRegistered => {}
        ExistingWork::SameAudio => {
            bail!("work '{id}' is already registered with this audio")
        }
        ExistingWork::DifferentAudio { registered_sha256 } => bail!(
            "work '{id}' is already registered with different audio (sha256 {registered_sha256}); \
             remove it first to replace it"
        ),
    }
    let work = crate::registration::prepare_work(&id, file, &DecodeLimits::default())?;
    let actor = args.actor.resolve();
    let now = catalog.registry.now();
    let holder = args.holder.trim().to_owned();
    let consents: Vec<NewConsent> = match args.consent {
        None => Vec::new(),
        Some(status) => {
            let scopes = if args.scopes.is_empty() {
                vec![DEFAULT_SCOPE]
            } else {
                args.scopes.clone()
            };
            let asserted_by = args.asserted_by.clone().unwrap_or_else(|| holder.clone());
            scopes
                .into_iter()
                .map(|scope| NewConsent {
                    source: args.source.clone().unwrap_or(ConsentSource::Registry),
                    policy_ref: args.policy_ref.clone(),
                    terms: args.terms.clone(),
                    ..NewConsent::new(scope, status, &asserted_by, now)
                })
                .collect()
        }
    };
    let metadata = NewWork {
        id: args.id.clone(),
        title: args.title.clone().unwrap_or_else(|| id.clone()),
        artists: args.artists.clone(),
        isrc: args.isrc.clone(),
        iswc: args.iswc.clone(),
        holder,
        holder_isni: args.holder_isni.clone(),
        reference: crate::registration::reference_summary(&work, &sha256),
    };
    let registered = catalog
        .register(&work, metadata, &consents, &actor)
        .with_context(|| format!("registering '{id}'"))?;
    let generation = data.open_index()?.generation();
    if args.json {
        let out = json!({
            "work": registered,
            "consents": consents,
            "prints": work.fingerprint.prints.len(),
            "index_generation": generation,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(EXIT_CLEAN);
    }
    println!(
        "registered {id}: {:.1} s, {} prints (index generation {generation})",
        work.info.duration_s,
        work.fingerprint.prints.len()
    );
    for c in &consents {
        println!(
            "  consent: {} for {} (asserted by {})",
            c.status, c.scope, c.asserted_by
        );
    }
    Ok(EXIT_CLEAN)
}

/// A row that could not be registered.
#[derive(Debug, Serialize)]
struct RowFailure {
    line: usize,
    id: Option<String>,
    reason: String,
}

impl From<CatalogRowError> for RowFailure {
    fn from(e: CatalogRowError) -> Self {
        Self {
            line: e.line,
            id: e.id,
            reason: e.reason,
        }
    }
}

/// What an import did.
#[derive(Debug, Serialize)]
struct ImportSummary {
    catalog: String,
    rows: usize,
    registered: usize,
    /// Already registered with the same reference audio (skipped).
    unchanged: usize,
    failed: usize,
    errors: Vec<RowFailure>,
}

/// Reports progress and row errors on stderr.
struct Progress {
    bar: ProgressBar,
    catalog: String,
}

impl Progress {
    fn new(rows: usize, catalog: &Path) -> Self {
        let bar = if io::stderr().is_terminal() {
            let bar = ProgressBar::new(rows as u64);
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr_with_hz(
                PROGRESS_TICKS_PER_SECOND,
            ));
            if let Ok(style) =
                ProgressStyle::with_template("{bar:40} {pos}/{len} rows  {elapsed}  {msg}")
            {
                bar.set_style(style);
            }
            bar
        } else {
            ProgressBar::hidden()
        };
        Self {
            bar,
            catalog: catalog.display().to_string(),
        }
    }

    fn fail(&self, summary: &mut ImportSummary, failure: RowFailure) {
        let id = failure
            .id
            .as_ref()
            .map(|i| format!(" (work '{i}')"))
            .unwrap_or_default();
        self.bar.suspend(|| {
            eprintln!(
                "earmark: {}: line {}{id}: {}",
                self.catalog, failure.line, failure.reason
            );
        });
        summary.failed += 1;
        summary.errors.push(failure);
        self.bar.inc(1);
    }

    fn done(&self, n: usize) {
        self.bar.inc(n as u64);
    }
}

fn import(data: &DataDir, args: &ImportArgs) -> Result<u8> {
    let rows = catalog_file::read_catalog(&args.catalog)?;
    let catalog = Catalog::open(data)?;
    let actor = args.actor.resolve();
    let mut summary = ImportSummary {
        catalog: args.catalog.display().to_string(),
        rows: rows.len(),
        registered: 0,
        unchanged: 0,
        failed: 0,
        errors: Vec::new(),
    };
    let progress = Progress::new(rows.len(), &args.catalog);
    let outcome = import_rows(&catalog, rows, args, &actor, &mut summary, &progress);
    progress.bar.finish_and_clear();
    let mut audited = json!(summary);
    if let Some(errors) = audited.get_mut("errors").and_then(|e| e.as_array_mut()) {
        errors.truncate(MAX_AUDITED_ROW_ERRORS);
    }
    if let Err(err) = &outcome {
        audited["aborted"] = json!(format!("{err:#}"));
    }
    let recorded = catalog
        .registry
        .record_import_run(&summary.catalog, audited, &actor);
    outcome?;
    recorded.context("recording the import run in the audit log")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        let lines: Vec<String> = summary.errors.iter().map(|e| e.line.to_string()).collect();
        let failed = if lines.is_empty() {
            String::new()
        } else {
            format!(" (line {})", lines.join(", "))
        };
        println!(
            "imported {}: {} rows, {} registered, {} already registered, {} failed{failed}",
            summary.catalog, summary.rows, summary.registered, summary.unchanged, summary.failed
        );
    }
    Ok(if summary.failed > 0 {
        EXIT_PARTIAL
    } else {
        EXIT_CLEAN
    })
}

/// Checks, fingerprints and registers the rows batch by batch. Row problems go
/// into `summary`; an error is fatal (the registry or the index failed).
fn import_rows(
    catalog: &Catalog,
    rows: Vec<catalog_file::RowResult>,
    args: &ImportArgs,
    actor: &str,
    summary: &mut ImportSummary,
    progress: &Progress,
) -> Result<()> {
    let mut valid = Vec::new();
    for row in rows {
        match row {
            Ok(row) => valid.push(row),
            Err(e) => progress.fail(summary, e.into()),
        }
    }
    let hashed: Vec<(CatalogRow, Result<String, crate::error::EngineError>)> = valid
        .into_par_iter()
        .map(|row| {
            let sha = crate::content::sha256_file(&row.file);
            (row, sha)
        })
        .collect();
    let mut pending = Vec::new();
    for (row, sha) in hashed {
        let sha = match sha {
            Ok(sha) => sha,
            Err(err) => {
                progress.fail(summary, failure(&row, err.to_string()));
                continue;
            }
        };
        match catalog.registry.existing_work(row.id.as_str(), &sha)? {
            ExistingWork::NotRegistered => pending.push((row, sha)),
            ExistingWork::SameAudio => {
                summary.unchanged += 1;
                progress.done(1);
            }
            ExistingWork::DifferentAudio { registered_sha256 } => {
                let reason = format!(
                    "already registered with different audio (sha256 {registered_sha256}); \
                     remove it first to replace it"
                );
                progress.fail(summary, failure(&row, reason));
            }
        }
    }
    let limits = DecodeLimits::default();
    for batch in pending.chunks(args.batch) {
        let jobs: Vec<(String, PathBuf)> = batch
            .iter()
            .map(|(row, _)| (row.id.to_string(), row.file.clone()))
            .collect();
        let prepared = crate::registration::prepare_works(&jobs, &limits);
        let now = catalog.registry.now();
        let mut items = Vec::new();
        let mut item_rows = Vec::new();
        for ((row, sha), work) in batch.iter().zip(prepared) {
            match work {
                Ok(work) => {
                    let metadata = row.new_work(crate::registration::reference_summary(&work, sha));
                    items.push(Registration {
                        work,
                        metadata,
                        consents: row.consents(now),
                    });
                    item_rows.push(row);
                }
                Err(err) => progress.fail(summary, failure(row, err.to_string())),
            }
        }
        let results = catalog
            .register_batch(&items, actor)
            .context("writing fingerprints to the index")?;
        for (row, result) in item_rows.into_iter().zip(results) {
            match result {
                Ok(_) => {
                    summary.registered += 1;
                    progress.done(1);
                }
                Err(crate::error::EngineError::Registry(err)) if is_fatal(&err) => {
                    return Err(err).context(format!("registering '{}'", row.id));
                }
                Err(err) => progress.fail(summary, failure(row, err.to_string())),
            }
        }
    }
    Ok(())
}

/// Registry errors that are about the database, not the row.
fn is_fatal(err: &crate::registry::RegistryError) -> bool {
    use crate::registry::RegistryError as E;
    matches!(
        err,
        E::Open { .. } | E::Db { .. } | E::Migration { .. } | E::SchemaTooNew { .. }
    )
}

fn failure(row: &CatalogRow, reason: String) -> RowFailure {
    RowFailure {
        line: row.line,
        id: Some(row.id.to_string()),
        reason,
    }
}

//! CLI commands that read or change only the registry: consent, read-only works
//! commands, audit, ledger and API keys.
//!
//! Each group is a clap `Subcommand` enum with a `run_*` handler taking the
//! opened [`Registry`] and returning the process exit code. Handlers write to a
//! `&mut dyn Write` in their `*_to` form so tests can capture output. Human
//! tables are the default; `--json` prints machine-readable JSON (one document,
//! or JSON lines for exports). Mutating commands record an actor in the audit
//! log: `--actor`, else `$EARMARK_ACTOR`, else `$USER`, else `cli`.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;
use time::OffsetDateTime;

use crate::registry::ledger::{LedgerFormat, write_totals};
use crate::registry::model::parse_time_arg;
use crate::registry::{
    ConsentRecord, ConsentSource, ConsentStatus, NewConsent, Registry, Role, Scope, Territory, Work,
};

/// Exit code: success / intact.
pub const EXIT_OK: u8 = 0;
/// Exit code of `audit verify` when the chain is broken.
pub const EXIT_AUDIT_BROKEN: u8 = 2;
/// Default page size of `works list`.
const DEFAULT_LIST_LIMIT: usize = 1000;
/// Fallback actor when nothing else names the operator.
const FALLBACK_ACTOR: &str = "cli";

pub(crate) fn scope_parser() -> impl TypedValueParser<Value = Scope> {
    PossibleValuesParser::new(Scope::ALL.iter().map(|s| s.as_str())).try_map(|s| s.parse::<Scope>())
}

pub(crate) fn status_parser() -> impl TypedValueParser<Value = ConsentStatus> {
    PossibleValuesParser::new(ConsentStatus::ALL.iter().map(|s| s.as_str()))
        .try_map(|s| s.parse::<ConsentStatus>())
}

fn role_parser() -> impl TypedValueParser<Value = Role> {
    PossibleValuesParser::new(Role::ALL.iter().map(|r| r.as_str())).try_map(|s| s.parse::<Role>())
}

/// Who is making a change: the flag, `$EARMARK_ACTOR`, `$USER`, or `cli`.
#[derive(Debug, Clone, Args)]
pub struct ActorArg {
    /// Who is making this change (recorded in the audit log).
    #[arg(long, env = "EARMARK_ACTOR")]
    pub actor: Option<String>,
}

impl ActorArg {
    pub fn resolve(&self) -> String {
        self.actor
            .clone()
            .or_else(|| std::env::var("USER").ok())
            .filter(|a| !a.trim().is_empty())
            .unwrap_or_else(|| FALLBACK_ACTOR.to_owned())
    }
}

#[derive(Debug, Subcommand)]
pub enum ConsentCmd {
    /// Append a consent statement for a work (statements are never edited).
    Set(ConsentSetArgs),
    /// Every statement recorded for a work, oldest first.
    History {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct ConsentSetArgs {
    /// Work id.
    pub id: String,
    #[arg(long, value_parser = scope_parser())]
    pub scope: Scope,
    #[arg(long, value_parser = status_parser())]
    pub status: ConsentStatus,
    /// In force from (YYYY-MM-DD or RFC 3339; default now).
    #[arg(long, value_parser = parse_time_arg)]
    pub from: Option<OffsetDateTime>,
    /// In force until, exclusive (YYYY-MM-DD or RFC 3339; default open-ended).
    #[arg(long, value_parser = parse_time_arg)]
    pub until: Option<OffsetDateTime>,
    /// ISO 3166-1 alpha-2 code or WORLD (default WORLD).
    #[arg(long, value_parser = Territory::parse)]
    pub territory: Option<Territory>,
    /// registry, tdmrep, c2pa, iptc-plus, contract, ddex, or another keyword.
    #[arg(long, default_value = "registry", value_parser = |s: &str| s.parse::<ConsentSource>())]
    pub source: ConsentSource,
    /// Who made the statement (default: the actor).
    #[arg(long)]
    pub asserted_by: Option<String>,
    /// Licence or policy reference (text or URL).
    #[arg(long)]
    pub policy_ref: Option<String>,
    /// Conditions of a constrained consent (without terms it counts as opted out).
    #[arg(long)]
    pub terms: Option<String>,
    #[command(flatten)]
    pub actor: ActorArg,
    #[arg(long)]
    pub json: bool,
}

/// Read-only `works` subcommands (flatten into the `works` command group with
/// `#[command(flatten)]`).
#[derive(Debug, Subcommand)]
pub enum WorksReadCmd {
    /// List registered works.
    List {
        #[arg(long, default_value_t = 0)]
        offset: usize,
        #[arg(long, default_value_t = DEFAULT_LIST_LIMIT)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Show a work, its consent in force per scope and its consent history.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Check the hash chain; exit code 2 and the failing entries if broken.
    Verify {
        #[arg(long)]
        json: bool,
    },
    /// Write the audit log as JSON lines.
    Export {
        /// Output file (default stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    Csv,
    Jsonl,
}

#[derive(Debug, Subcommand)]
pub enum LedgerCmd {
    /// Per-work attribution totals over a period (a royalty statement).
    Export {
        #[arg(long, value_enum, default_value_t = ExportFormat::Csv)]
        format: ExportFormat,
        /// Period start, inclusive (YYYY-MM-DD or RFC 3339).
        #[arg(long, value_parser = parse_time_arg)]
        from: Option<OffsetDateTime>,
        /// Period end, exclusive.
        #[arg(long, value_parser = parse_time_arg)]
        until: Option<OffsetDateTime>,
        /// Output file (default stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCmd {
    /// Create an API key; the secret is printed once and never stored.
    Create {
        #[arg(long, value_parser = role_parser())]
        role: Role,
        /// Rights holder the key acts for (required for rights-holder keys).
        #[arg(long)]
        holder: Option<String>,
        #[command(flatten)]
        actor: ActorArg,
        #[arg(long)]
        json: bool,
    },
    /// Revoke an API key by id.
    Revoke {
        key_id: String,
        #[command(flatten)]
        actor: ActorArg,
    },
}

fn stdout() -> io::StdoutLock<'static> {
    io::stdout().lock()
}

pub fn run_consent(cmd: ConsentCmd, reg: &Registry) -> Result<u8> {
    run_consent_to(cmd, reg, &mut stdout())
}

pub fn run_works_read(cmd: WorksReadCmd, reg: &Registry) -> Result<u8> {
    run_works_read_to(cmd, reg, &mut stdout())
}

pub fn run_audit(cmd: AuditCmd, reg: &Registry) -> Result<u8> {
    run_audit_to(cmd, reg, &mut stdout())
}

pub fn run_ledger(cmd: LedgerCmd, reg: &Registry) -> Result<u8> {
    run_ledger_to(cmd, reg, &mut stdout())
}

pub fn run_keys(cmd: KeysCmd, reg: &Registry) -> Result<u8> {
    run_keys_to(cmd, reg, &mut stdout())
}

/// Writes a left-aligned text table.
fn table(out: &mut dyn Write, headers: &[&str], rows: &[Vec<String>]) -> io::Result<()> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    writeln!(out, "{}", line(headers.to_vec()))?;
    for row in rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

fn when(t: OffsetDateTime) -> String {
    crate::registry::model::to_db_time(t).unwrap_or_else(|_| t.to_string())
}

fn opt(value: Option<impl ToString>) -> String {
    value
        .map(|v| v.to_string())
        .unwrap_or_else(|| "-".to_owned())
}

fn print_json(out: &mut dyn Write, value: &impl serde::Serialize) -> Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)?;
    Ok(())
}

pub fn run_consent_to(cmd: ConsentCmd, reg: &Registry, out: &mut dyn Write) -> Result<u8> {
    match cmd {
        ConsentCmd::Set(args) => consent_set(args, reg, out),
        ConsentCmd::History { id, json } => {
            let history = reg
                .consent_history(&id)
                .with_context(|| format!("consent history of '{id}'"))?;
            if json {
                print_json(out, &history)?;
            } else if history.is_empty() {
                writeln!(out, "no consent recorded for '{id}'")?;
            } else {
                consent_table(out, &history)?;
            }
            Ok(EXIT_OK)
        }
    }
}

fn consent_set(args: ConsentSetArgs, reg: &Registry, out: &mut dyn Write) -> Result<u8> {
    let actor = args.actor.resolve();
    let now = reg.now();
    let consent = NewConsent {
        scope: args.scope,
        status: args.status,
        effective_from: args.from.unwrap_or(now),
        effective_until: args.until,
        territory: args.territory,
        asserted_by: args.asserted_by.unwrap_or_else(|| actor.clone()),
        asserted_at: now,
        source: args.source,
        policy_ref: args.policy_ref,
        terms: args.terms,
    };
    let record = reg
        .record_consent(&args.id, &consent, &actor)
        .with_context(|| format!("recording consent for '{}'", args.id))?;
    let effective = reg.effective_consent(&args.id, record.scope, now, None)?;
    if args.json {
        print_json(out, &json!({ "record": record, "in_force_now": effective }))?;
        return Ok(EXIT_OK);
    }
    let until = record
        .effective_until
        .map(|u| format!(" until {}", when(u)))
        .unwrap_or_default();
    writeln!(
        out,
        "recorded consent #{} for '{}': {} for {} from {}{} ({}, source {})",
        record.id,
        record.work_id,
        record.status,
        record.scope,
        when(record.effective_from),
        until,
        record.territory,
        record.source
    )?;
    let decider = effective
        .deciding
        .as_ref()
        .map(|d| format!(" (record #{})", d.id))
        .unwrap_or_default();
    writeln!(
        out,
        "in force now for {} worldwide: {}{decider}",
        record.scope, effective.status
    )?;
    Ok(EXIT_OK)
}

fn consent_table(out: &mut dyn Write, records: &[ConsentRecord]) -> io::Result<()> {
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            vec![
                format!("#{}", r.id),
                r.scope.to_string(),
                r.status.to_string(),
                when(r.effective_from),
                opt(r.effective_until.map(when)),
                r.territory.to_string(),
                r.source.to_string(),
                r.asserted_by.clone(),
                when(r.asserted_at),
                opt(r.terms.as_ref().or(r.policy_ref.as_ref())),
            ]
        })
        .collect();
    let headers = [
        "record",
        "scope",
        "status",
        "from",
        "until",
        "territory",
        "source",
        "asserted by",
        "asserted at",
        "terms / ref",
    ];
    table(out, &headers, &rows)
}

pub fn run_works_read_to(cmd: WorksReadCmd, reg: &Registry, out: &mut dyn Write) -> Result<u8> {
    match cmd {
        WorksReadCmd::List {
            offset,
            limit,
            json,
        } => {
            let works = reg.list_works(offset, limit)?;
            if json {
                print_json(out, &works)?;
                return Ok(EXIT_OK);
            }
            let rows: Vec<Vec<String>> = works
                .iter()
                .map(|w| {
                    vec![
                        w.id.to_string(),
                        w.title.clone(),
                        w.artists.join("; "),
                        opt(w.isrc.as_ref().map(|i| i.hyphenated())),
                        w.holder.clone(),
                        format!("{:.1}", w.reference.duration_s),
                    ]
                })
                .collect();
            table(
                out,
                &["id", "title", "artists", "isrc", "holder", "seconds"],
                &rows,
            )?;
            writeln!(out, "{} of {} works", works.len(), reg.count_works()?)?;
            Ok(EXIT_OK)
        }
        WorksReadCmd::Show { id, json } => works_show(&id, json, reg, out),
    }
}

fn works_show(id: &str, json: bool, reg: &Registry, out: &mut dyn Write) -> Result<u8> {
    let Some(work) = reg.get_work(id)? else {
        bail!("work '{id}' is not registered");
    };
    let now = reg.now();
    let history = reg.consent_history(id)?;
    let mut in_force = Vec::new();
    for scope in Scope::ALL {
        in_force.push((*scope, reg.effective_consent(id, *scope, now, None)?));
    }
    if json {
        let in_force: serde_json::Map<String, serde_json::Value> = in_force
            .iter()
            .map(|(s, e)| Ok((s.to_string(), serde_json::to_value(e)?)))
            .collect::<Result<_>>()?;
        print_json(
            out,
            &json!({ "work": work, "in_force_now": in_force, "history": history }),
        )?;
        return Ok(EXIT_OK);
    }
    work_details(out, &work)?;
    writeln!(out, "\nconsent in force now (worldwide):")?;
    for (scope, e) in &in_force {
        let decider = e
            .deciding
            .as_ref()
            .map(|d| format!("  record #{}", d.id))
            .unwrap_or_default();
        writeln!(out, "  {:<22}{}{decider}", scope.as_str(), e.status)?;
    }
    writeln!(out, "\nconsent history:")?;
    if history.is_empty() {
        writeln!(out, "  (none)")?;
    } else {
        consent_table(out, &history)?;
    }
    Ok(EXIT_OK)
}

fn work_details(out: &mut dyn Write, w: &Work) -> io::Result<()> {
    let r = &w.reference;
    let fields = [
        ("id", w.id.to_string()),
        ("title", w.title.clone()),
        ("artists", w.artists.join("; ")),
        ("isrc", opt(w.isrc.as_ref().map(|i| i.hyphenated()))),
        ("iswc", opt(w.iswc.as_ref())),
        ("holder", w.holder.clone()),
        ("holder isni", opt(w.holder_isni.as_ref())),
        (
            "reference",
            format!(
                "{} ({:.1} s, {})",
                r.source_file, r.duration_s, r.fingerprint_config
            ),
        ),
        ("audio sha256", r.audio_sha256.clone()),
        ("created", when(w.created_at)),
        ("updated", when(w.updated_at)),
    ];
    for (k, v) in fields {
        writeln!(out, "{k:<14}{v}")?;
    }
    Ok(())
}

pub fn run_audit_to(cmd: AuditCmd, reg: &Registry, out: &mut dyn Write) -> Result<u8> {
    match cmd {
        AuditCmd::Verify { json } => {
            let report = reg.verify_audit()?;
            let code = if report.is_ok() {
                EXIT_OK
            } else {
                EXIT_AUDIT_BROKEN
            };
            if json {
                print_json(out, &report)?;
                return Ok(code);
            }
            if report.is_ok() {
                let head = match (report.head_seq, &report.head_hash) {
                    (Some(seq), Some(hash)) => format!("; head #{seq} {hash}"),
                    _ => String::new(),
                };
                writeln!(out, "audit log OK: {} entries{head}", report.entries)?;
            } else {
                writeln!(
                    out,
                    "audit log BROKEN: {} problem(s) in {} entries",
                    report.problems.len(),
                    report.entries
                )?;
                for p in &report.problems {
                    writeln!(out, "  seq {}: {}", p.seq, p.message)?;
                }
            }
            Ok(code)
        }
        AuditCmd::Export { out: path } => {
            let count = match &path {
                Some(p) => {
                    let n = reg.export_audit(create(p)?)?;
                    writeln!(out, "exported {n} audit entries to {}", p.display())?;
                    n
                }
                None => reg.export_audit(&mut *out)?,
            };
            tracing::info!(count, "audit log exported");
            Ok(EXIT_OK)
        }
    }
}

fn create(path: &Path) -> Result<BufWriter<File>> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    Ok(BufWriter::new(file))
}

pub fn run_ledger_to(cmd: LedgerCmd, reg: &Registry, out: &mut dyn Write) -> Result<u8> {
    let LedgerCmd::Export {
        format,
        from,
        until,
        out: path,
    } = cmd;
    if let (Some(f), Some(u)) = (from, until)
        && u <= f
    {
        bail!("--until must be later than --from");
    }
    let totals = reg.ledger_totals(from, until)?;
    let format = match format {
        ExportFormat::Csv => LedgerFormat::Csv,
        ExportFormat::Jsonl => LedgerFormat::Jsonl,
    };
    match &path {
        Some(p) => {
            write_totals(&totals, format, (from, until), create(p)?)?;
            writeln!(
                out,
                "exported totals of {} works to {}",
                totals.len(),
                p.display()
            )?;
        }
        None => write_totals(&totals, format, (from, until), &mut *out)?,
    }
    Ok(EXIT_OK)
}

pub fn run_keys_to(cmd: KeysCmd, reg: &Registry, out: &mut dyn Write) -> Result<u8> {
    match cmd {
        KeysCmd::Create {
            role,
            holder,
            actor,
            json,
        } => {
            let (key_id, secret) = reg.create_key(role, holder.as_deref(), &actor.resolve())?;
            if json {
                print_json(
                    out,
                    &json!({ "key_id": key_id, "role": role, "holder": holder, "secret": secret }),
                )?;
            } else {
                writeln!(
                    out,
                    "created {role} key {key_id}{}",
                    holder.map(|h| format!(" for {h}")).unwrap_or_default()
                )?;
                writeln!(out, "secret (shown only once, store it now): {secret}")?;
            }
            Ok(EXIT_OK)
        }
        KeysCmd::Revoke { key_id, actor } => {
            reg.revoke_key(&key_id, &actor.resolve())?;
            writeln!(out, "revoked key {key_id}")?;
            Ok(EXIT_OK)
        }
    }
}

#[cfg(test)]
mod tests;

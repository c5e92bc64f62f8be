//! Catalog files for bulk registration: `catalog.csv` or `catalog.jsonl`.
//!
//! Columns / keys: `id`, `file` (reference audio, relative to the catalog
//! file), `title`, `artists` (`;`-separated in CSV, a list or `;`-separated
//! string in JSONL), `isrc`, `iswc`, `holder`, `holder_isni`, `consent`
//! (opted-out | opted-in | constrained), `scope` (`;`-separated, default
//! ai-training), `asserted_by` (default: the holder), `source` (default
//! registry), `policy_ref`, and optionally `terms`, `territory`,
//! `effective_from`, `effective_until` (default: the import time).
//!
//! Parsing is pure (no file-system checks on `file`): each row becomes
//! `Ok(CatalogRow)` or `Err(CatalogRowError { line, .. })`, so one bad row is
//! reported with its line number and the others still go in. Problems with the
//! file as a whole (unreadable, unknown extension, unknown or missing columns)
//! are a [`CatalogError`]. The engine fingerprints each row's file and calls
//! [`Registry::add_work`](super::Registry::add_work), skipping rows for which
//! [`Registry::existing_work`](super::Registry::existing_work) says `SameAudio`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;
use time::OffsetDateTime;

use super::ids::{Isni, Isrc, Iswc, Territory, WorkId};
use super::model::{
    ConsentSource, ConsentStatus, NewConsent, NewWork, ReferenceAudio, Scope, parse_time_arg,
};

/// Separator of list values inside one field.
const LIST_SEPARATOR: char = ';';
/// Columns a catalog may have.
pub const KNOWN_COLUMNS: &[&str] = &[
    "id",
    "file",
    "title",
    "artists",
    "isrc",
    "iswc",
    "holder",
    "holder_isni",
    "consent",
    "scope",
    "asserted_by",
    "source",
    "policy_ref",
    "terms",
    "territory",
    "effective_from",
    "effective_until",
];
/// Columns every catalog must have.
pub const REQUIRED_COLUMNS: &[&str] = &["id", "file", "title", "holder"];

/// The catalog file as a whole cannot be read.
#[derive(Debug, Error)]
pub enum CatalogError {
    #[error("cannot read catalog {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("catalog {path}: unknown format (use a .csv or .jsonl file)")]
    UnknownFormat { path: PathBuf },
    #[error("catalog header: {reason}")]
    Header { reason: String },
}

/// One row could not be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("line {line}{}: {reason}", id.as_ref().map(|i| format!(" (work '{i}')")).unwrap_or_default())]
pub struct CatalogRowError {
    /// 1-based line number in the catalog file.
    pub line: usize,
    /// The row's id, when it could be read.
    pub id: Option<String>,
    pub reason: String,
}

/// A validated catalog row.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogRow {
    pub line: usize,
    pub id: WorkId,
    /// Reference audio, resolved against the catalog's directory.
    pub file: PathBuf,
    pub title: String,
    pub artists: Vec<String>,
    pub isrc: Option<Isrc>,
    pub iswc: Option<Iswc>,
    pub holder: String,
    pub holder_isni: Option<Isni>,
    /// Consent to record on registration (`None`: register without consent).
    pub consent: Option<CatalogConsent>,
}

/// The consent part of a row.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogConsent {
    pub status: ConsentStatus,
    pub scopes: Vec<Scope>,
    pub asserted_by: Option<String>,
    pub source: ConsentSource,
    pub policy_ref: Option<String>,
    pub terms: Option<String>,
    pub territory: Option<Territory>,
    pub effective_from: Option<OffsetDateTime>,
    pub effective_until: Option<OffsetDateTime>,
}

impl CatalogRow {
    /// The work to register, given the fingerprinted reference summary.
    pub fn new_work(&self, reference: ReferenceAudio) -> NewWork {
        NewWork {
            id: self.id.clone(),
            title: self.title.clone(),
            artists: self.artists.clone(),
            isrc: self.isrc.clone(),
            iswc: self.iswc.clone(),
            holder: self.holder.clone(),
            holder_isni: self.holder_isni.clone(),
            reference,
        }
    }

    /// One consent statement per scope, asserted at `now` (the import time).
    pub fn consents(&self, now: OffsetDateTime) -> Vec<NewConsent> {
        let Some(c) = &self.consent else {
            return Vec::new();
        };
        c.scopes
            .iter()
            .map(|scope| NewConsent {
                scope: *scope,
                status: c.status,
                effective_from: c.effective_from.unwrap_or(now),
                effective_until: c.effective_until,
                territory: c.territory.clone(),
                asserted_by: c.asserted_by.clone().unwrap_or_else(|| self.holder.clone()),
                asserted_at: now,
                source: c.source.clone(),
                policy_ref: c.policy_ref.clone(),
                terms: c.terms.clone(),
            })
            .collect()
    }
}

/// Per-row outcome.
pub type RowResult = Result<CatalogRow, CatalogRowError>;

/// Reads `path` (`.csv`, or `.jsonl`/`.ndjson`) into per-row results.
pub fn read_catalog(path: &Path) -> Result<Vec<RowResult>, CatalogError> {
    let read_err = |source| CatalogError::Read {
        path: path.to_owned(),
        source,
    };
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let base = path.parent().unwrap_or(Path::new("."));
    let file = std::fs::File::open(path).map_err(read_err)?;
    match ext.as_deref() {
        Some("csv") => parse_csv(file, base),
        Some("jsonl" | "ndjson") => parse_jsonl(file, base).map_err(read_err),
        _ => Err(CatalogError::UnknownFormat {
            path: path.to_owned(),
        }),
    }
}

/// A list field: a JSON list or a `;`-separated string.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ListField {
    One(String),
    Many(Vec<String>),
}

impl ListField {
    fn items(self) -> Vec<String> {
        let raw = match self {
            ListField::One(s) => s.split(LIST_SEPARATOR).map(str::to_owned).collect(),
            ListField::Many(v) => v,
        };
        raw.into_iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    }
}

/// A row as written, before validation.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRow {
    id: Option<String>,
    file: Option<String>,
    title: Option<String>,
    artists: Option<ListField>,
    isrc: Option<String>,
    iswc: Option<String>,
    holder: Option<String>,
    holder_isni: Option<String>,
    consent: Option<String>,
    scope: Option<ListField>,
    asserted_by: Option<String>,
    source: Option<String>,
    policy_ref: Option<String>,
    terms: Option<String>,
    territory: Option<String>,
    effective_from: Option<String>,
    effective_until: Option<String>,
}

/// A non-blank trimmed value.
fn present(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

fn required(v: Option<String>, column: &str) -> Result<String, String> {
    present(v).ok_or_else(|| format!("'{column}' is required"))
}

/// Parses an optional identifier-like field with `parse`, naming the column on error.
fn optional<T, E: std::fmt::Display>(
    v: Option<String>,
    parse: impl Fn(&str) -> Result<T, E>,
) -> Result<Option<T>, String> {
    present(v)
        .map(|s| parse(&s).map_err(|e| e.to_string()))
        .transpose()
}

impl RawRow {
    fn validate(self, line: usize, base: &Path) -> RowResult {
        let id_text = present(self.id.clone());
        self.validate_inner(line, base)
            .map_err(|reason| CatalogRowError {
                line,
                id: id_text,
                reason,
            })
    }

    fn validate_inner(self, line: usize, base: &Path) -> Result<CatalogRow, String> {
        let id = WorkId::parse(&required(self.id, "id")?).map_err(|e| e.to_string())?;
        let file = base.join(required(self.file, "file")?);
        let consent = parse_consent(
            self.consent,
            self.scope,
            ConsentExtras {
                asserted_by: self.asserted_by,
                source: self.source,
                policy_ref: self.policy_ref,
                terms: self.terms,
                territory: self.territory,
                effective_from: self.effective_from,
                effective_until: self.effective_until,
            },
        )?;
        Ok(CatalogRow {
            line,
            id,
            file,
            title: required(self.title, "title")?,
            artists: self.artists.map(ListField::items).unwrap_or_default(),
            isrc: optional(self.isrc, Isrc::parse)?,
            iswc: optional(self.iswc, Iswc::parse)?,
            holder: required(self.holder, "holder")?,
            holder_isni: optional(self.holder_isni, Isni::parse)?,
            consent,
        })
    }
}

/// Consent-related columns other than `consent` and `scope`.
struct ConsentExtras {
    asserted_by: Option<String>,
    source: Option<String>,
    policy_ref: Option<String>,
    terms: Option<String>,
    territory: Option<String>,
    effective_from: Option<String>,
    effective_until: Option<String>,
}

fn parse_consent(
    status: Option<String>,
    scope: Option<ListField>,
    x: ConsentExtras,
) -> Result<Option<CatalogConsent>, String> {
    let scopes: Vec<String> = scope.map(ListField::items).unwrap_or_default();
    let Some(status) = present(status) else {
        if !scopes.is_empty() {
            return Err("'scope' is given but 'consent' is empty".to_owned());
        }
        return Ok(None);
    };
    let status: ConsentStatus = status
        .parse()
        .map_err(|e: super::model::ParseEnumError| e.to_string())?;
    let mut parsed_scopes = scopes
        .iter()
        .map(|s| s.parse::<Scope>().map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    if parsed_scopes.is_empty() {
        parsed_scopes.push(Scope::AiTraining);
    }
    parsed_scopes.sort_unstable();
    parsed_scopes.dedup();
    Ok(Some(CatalogConsent {
        status,
        scopes: parsed_scopes,
        asserted_by: present(x.asserted_by),
        source: optional(x.source, str::parse::<ConsentSource>)?.unwrap_or(ConsentSource::Registry),
        policy_ref: present(x.policy_ref),
        terms: present(x.terms),
        territory: optional(x.territory, Territory::parse)?,
        effective_from: optional(x.effective_from, parse_time_arg)?,
        effective_until: optional(x.effective_until, parse_time_arg)?,
    }))
}

/// Turns later rows that repeat an id into errors pointing at the first one.
fn reject_duplicates(rows: &mut [RowResult]) {
    let mut first_line: HashMap<String, usize> = HashMap::new();
    for row in rows.iter_mut() {
        let Ok(r) = row else { continue };
        let id = r.id.to_string();
        if let Some(first) = first_line.get(&id) {
            let reason = format!("duplicate id, first used on line {first}");
            *row = Err(CatalogRowError {
                line: r.line,
                id: Some(id),
                reason,
            });
        } else {
            first_line.insert(id, r.line);
        }
    }
}

/// Parses CSV with a header row; `base` resolves relative `file` paths.
pub fn parse_csv(input: impl Read, base: &Path) -> Result<Vec<RowResult>, CatalogError> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(input);
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| CatalogError::Header {
            reason: e.to_string(),
        })?
        .iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    check_columns(&headers)?;
    let mut rows = Vec::new();
    for (index, record) in reader.records().enumerate() {
        // Header is line 1; fall back to counting records if positions are absent.
        let fallback_line = index + 2;
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e
                    .position()
                    .map_or(fallback_line, |p| usize::try_from(p.line()).unwrap_or(0));
                rows.push(Err(CatalogRowError {
                    line,
                    id: None,
                    reason: e.to_string(),
                }));
                continue;
            }
        };
        let line = record
            .position()
            .map_or(fallback_line, |p| usize::try_from(p.line()).unwrap_or(0));
        let map: serde_json::Map<String, serde_json::Value> = headers
            .iter()
            .zip(record.iter())
            .filter(|(_, v)| !v.is_empty())
            .map(|(h, v)| (h.clone(), serde_json::Value::String(v.to_owned())))
            .collect();
        rows.push(row_from_json(serde_json::Value::Object(map), line, base));
    }
    reject_duplicates(&mut rows);
    Ok(rows)
}

fn check_columns(headers: &[String]) -> Result<(), CatalogError> {
    if let Some(unknown) = headers
        .iter()
        .find(|h| !KNOWN_COLUMNS.contains(&h.as_str()))
    {
        let reason = format!(
            "unknown column '{unknown}' (known: {})",
            KNOWN_COLUMNS.join(", ")
        );
        return Err(CatalogError::Header { reason });
    }
    if let Some(missing) = REQUIRED_COLUMNS
        .iter()
        .find(|c| !headers.iter().any(|h| h == *c))
    {
        return Err(CatalogError::Header {
            reason: format!("missing required column '{missing}'"),
        });
    }
    Ok(())
}

fn row_from_json(value: serde_json::Value, line: usize, base: &Path) -> RowResult {
    let id = value.get("id").and_then(|v| v.as_str()).map(str::to_owned);
    match serde_json::from_value::<RawRow>(value) {
        Ok(raw) => raw.validate(line, base),
        Err(e) => Err(CatalogRowError {
            line,
            id,
            reason: e.to_string(),
        }),
    }
}

/// Parses JSON lines (one object per line, blank lines skipped).
pub fn parse_jsonl(input: impl Read, base: &Path) -> std::io::Result<Vec<RowResult>> {
    let mut rows = Vec::new();
    for (index, text) in BufReader::new(input).lines().enumerate() {
        let text = text?;
        let line = index + 1;
        if text.trim().is_empty() {
            continue;
        }
        let row = match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(value @ serde_json::Value::Object(_)) => row_from_json(value, line, base),
            Ok(_) => Err(CatalogRowError {
                line,
                id: None,
                reason: "expected a JSON object".into(),
            }),
            Err(e) => Err(CatalogRowError {
                line,
                id: None,
                reason: format!("invalid JSON: {e}"),
            }),
        };
        rows.push(row);
    }
    reject_duplicates(&mut rows);
    Ok(rows)
}

#[cfg(test)]
mod tests;

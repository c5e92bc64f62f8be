//! Hash-chained, append-only audit log.
//!
//! Every registry change appends one entry inside the change's own transaction.
//! Entry `seq` stores `prev_hash` (the hash of entry `seq − 1`, or
//! [`GENESIS_HASH`] for the first) and `hash = SHA-256(canonical)`, where
//! `canonical` is the compact JSON array
//! `["earmark-audit-v1", seq, at, actor, action, subject, details, prev_hash]` of
//! the *stored* text values (`details` is the stored JSON text as a string). JSON
//! string escaping makes the encoding unambiguous, and including `seq` makes a
//! moved entry fail its own hash.
//!
//! [`Registry::verify_audit`] walks the log and reports every entry whose contents
//! were edited or moved, every gap in `seq` (removed entries) and every broken
//! link, by `seq`. Limits: without a secret, someone with write access to the
//! file can rebuild the whole chain, and removing entries from the *end* leaves
//! a valid shorter chain. Both are caught by keeping the reported head
//! (`seq`, `hash`) somewhere else (e.g. in exported statements) and comparing.

use std::io::Write;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::Registry;
use super::db::{Db, DbError, values};
use super::error::{DbContext, RegistryError, Result};
use super::model::{from_db_time, to_db_time};

/// `prev_hash` of the first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Domain separator and format version of the hashed serialisation.
const HASH_DOMAIN: &str = "earmark-audit-v1";

/// Kinds of audited change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditAction {
    WorkAdded,
    WorkRemoved,
    ConsentRecorded,
    KeyCreated,
    KeyRevoked,
    ImportRun,
}

impl AuditAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::WorkAdded => "work-added",
            AuditAction::WorkRemoved => "work-removed",
            AuditAction::ConsentRecorded => "consent-recorded",
            AuditAction::KeyCreated => "key-created",
            AuditAction::KeyRevoked => "key-revoked",
            AuditAction::ImportRun => "import-run",
        }
    }
}

/// One audit log entry as exported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub details: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

/// What is wrong with an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuditProblemKind {
    /// The stored hash does not match the entry's contents.
    Edited,
    /// Entries with these sequence numbers are absent.
    Missing,
    /// `prev_hash` is not the previous entry's hash.
    ChainBroken,
}

/// One finding of [`Registry::verify_audit`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditProblem {
    /// Where: the first affected sequence number.
    pub seq: i64,
    pub kind: AuditProblemKind,
    pub message: String,
}

/// Result of verifying the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditReport {
    pub entries: u64,
    /// `seq` and `hash` of the last entry; keep it elsewhere to detect truncation.
    pub head_seq: Option<i64>,
    pub head_hash: Option<String>,
    /// Findings in `seq` order; empty when the log is intact.
    pub problems: Vec<AuditProblem>,
}

impl AuditReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// An audit row exactly as stored.
struct RawEntry {
    seq: i64,
    at: String,
    actor: String,
    action: String,
    subject: String,
    details: String,
    prev_hash: String,
    hash: String,
}

impl RawEntry {
    fn computed_hash(&self) -> String {
        entry_hash(
            self.seq,
            &self.at,
            &self.actor,
            &self.action,
            &self.subject,
            &self.details,
            &self.prev_hash,
        )
    }
}

#[allow(clippy::too_many_arguments)] // the hashed fields, spelled out on purpose
fn entry_hash(
    seq: i64,
    at: &str,
    actor: &str,
    action: &str,
    subject: &str,
    details: &str,
    prev_hash: &str,
) -> String {
    let canonical = serde_json::json!([
        HASH_DOMAIN,
        seq,
        at,
        actor,
        action,
        subject,
        details,
        prev_hash
    ]);
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

/// Appends an entry; call inside the transaction of the change it records.
pub(crate) fn append(
    db: &mut dyn Db,
    at: OffsetDateTime,
    actor: &str,
    action: AuditAction,
    subject: &str,
    details: serde_json::Value,
) -> Result<AuditEntry> {
    let last: Option<(i64, String)> = db
        .query_opt(
            "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
            &[],
        )
        .and_then(|row| row.map(|r| Ok((r.get(0)?, r.get(1)?))).transpose())
        .db(|| "reading the audit log head".into())?;
    let (seq, prev_hash) = match last {
        Some((seq, hash)) => (seq + 1, hash),
        None => (1, GENESIS_HASH.to_owned()),
    };
    let at_s = to_db_time(at)?;
    let details_s = details.to_string();
    let hash = entry_hash(
        seq,
        &at_s,
        actor,
        action.as_str(),
        subject,
        &details_s,
        &prev_hash,
    );
    db.execute(
        "INSERT INTO audit_log (seq, at, actor, action, subject, details, prev_hash, hash) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        &values![
            seq,
            &at_s,
            actor,
            action.as_str(),
            subject,
            &details_s,
            &prev_hash,
            &hash
        ],
    )
    .db(|| format!("appending audit entry {seq} ({})", action.as_str()))?;
    Ok(AuditEntry {
        seq,
        at: from_db_time(&at_s)?,
        actor: actor.to_owned(),
        action: action.as_str().to_owned(),
        subject: subject.to_owned(),
        details,
        prev_hash,
        hash,
    })
}

fn read_raw(db: &mut dyn Db) -> Result<Vec<RawEntry>> {
    let rows = db
        .query("SELECT seq, at, actor, action, subject, details, prev_hash, hash FROM audit_log ORDER BY seq", &[])
        .db(|| "reading the audit log".into())?;
    rows.iter()
        .map(|r| {
            Ok(RawEntry {
                seq: r.get(0)?,
                at: r.get(1)?,
                actor: r.get(2)?,
                action: r.get(3)?,
                subject: r.get(4)?,
                details: r.get(5)?,
                prev_hash: r.get(6)?,
                hash: r.get(7)?,
            })
        })
        .collect::<std::result::Result<_, DbError>>()
        .db(|| "reading the audit log".into())
}

/// Checks a stored log; pure so it can be tested on hand-made rows.
fn verify_entries(entries: &[RawEntry]) -> Vec<AuditProblem> {
    let mut problems = Vec::new();
    let mut expected_seq = 1;
    let mut expected_prev = GENESIS_HASH;
    for e in entries {
        let gap = e.seq != expected_seq;
        if gap {
            let message = if e.seq > expected_seq {
                format!(
                    "entries {expected_seq}..={} are missing (removed)",
                    e.seq - 1
                )
            } else {
                format!(
                    "entry {} appears out of order after entry {}",
                    e.seq,
                    expected_seq - 1
                )
            };
            let kind = AuditProblemKind::Missing;
            problems.push(AuditProblem {
                seq: expected_seq.min(e.seq),
                kind,
                message,
            });
        }
        if e.computed_hash() != e.hash {
            problems.push(AuditProblem {
                seq: e.seq,
                kind: AuditProblemKind::Edited,
                message: format!(
                    "entry {} ({} of '{}') does not match its hash: edited, or moved from another position",
                    e.seq, e.action, e.subject
                ),
            });
        }
        if !gap && e.prev_hash != expected_prev {
            problems.push(AuditProblem {
                seq: e.seq,
                kind: AuditProblemKind::ChainBroken,
                message: format!(
                    "entry {} does not link to entry {}: an entry was edited, removed or reordered before it",
                    e.seq,
                    e.seq - 1
                ),
            });
        }
        expected_seq = e.seq + 1;
        expected_prev = &e.hash;
    }
    problems
}

impl Registry {
    /// Verifies the whole audit chain and reports where it is broken.
    pub fn verify_audit(&self) -> Result<AuditReport> {
        let entries = self.read(read_raw)?;
        let problems = verify_entries(&entries);
        let head = entries.last();
        Ok(AuditReport {
            entries: u64::try_from(entries.len()).unwrap_or(u64::MAX),
            head_seq: head.map(|e| e.seq),
            head_hash: head.map(|e| e.hash.clone()),
            problems,
        })
    }

    /// Writes the audit log as JSON lines (one [`AuditEntry`] per line), in
    /// `seq` order; returns the number of entries written. Re-serialising
    /// `details` compactly with serde_json gives back the hashed text, so the
    /// export can be verified independently.
    pub fn export_audit(&self, mut out: impl Write) -> Result<u64> {
        let entries = self.read(read_raw)?;
        let mut count = 0;
        for raw in entries {
            let details = serde_json::from_str(&raw.details)
                .unwrap_or(serde_json::Value::String(raw.details));
            let entry = AuditEntry {
                seq: raw.seq,
                at: from_db_time(&raw.at).map_err(|e| RegistryError::Corrupt {
                    table: "audit_log",
                    key: format!("seq {}", raw.seq),
                    reason: e.to_string(),
                })?,
                actor: raw.actor,
                action: raw.action,
                subject: raw.subject,
                details,
                prev_hash: raw.prev_hash,
                hash: raw.hash,
            };
            serde_json::to_writer(&mut out, &entry).map_err(|source| RegistryError::Json {
                what: "audit entry",
                source,
            })?;
            out.write_all(b"\n")
                .map_err(|source| RegistryError::Write {
                    what: "audit export",
                    source,
                })?;
            count += 1;
        }
        out.flush().map_err(|source| RegistryError::Write {
            what: "audit export",
            source,
        })?;
        Ok(count)
    }
}

#[cfg(test)]
mod tests;

//! Schema and migrations.
//!
//! `PRAGMA user_version` holds the number of migrations applied. Each entry in
//! [`MIGRATIONS`] moves the schema one version forward and runs in its own
//! transaction together with the version bump, so a crash leaves the database at
//! a well-defined version. Migrations are never edited once released: add a new
//! one instead. Opening a database with a newer version than this build knows is
//! refused rather than risking writes that an old build does not understand.
//!
//! Design notes:
//! * `works.reg_no` is an internal registration number. A work id may be
//!   re-registered after removal; consent records and ledger entries point at the
//!   registration they were made for, so old consent never leaks onto a new
//!   registration and royalty statements for removed works stay complete.
//!   Removal is a soft delete (`removed_at`); a partial unique index keeps active
//!   ids unique.
//! * Consent records, the audit log and the attribution ledger are append-only;
//!   triggers abort any UPDATE or DELETE on them.
//! * Timestamps are canonical RFC 3339 UTC text (see `model`), so text
//!   comparisons are time comparisons.

use rusqlite::Connection;

use super::error::{RegistryError, Result};

/// Schema migrations; index `i` upgrades from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[MIGRATION_1, MIGRATION_2, MIGRATION_3];

/// The index generation the registry vouches for: one row, raised by every
/// writer of the index after its change is committed (see
/// `registry::index_generation`). Screening refuses a verdict from an index
/// snapshot older than it. Written so that it can run again on a database
/// that already has it (a version number set back by hand).
const MIGRATION_3: &str = r#"
CREATE TABLE IF NOT EXISTS index_generation (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    generation   INTEGER NOT NULL CHECK (generation >= 0),
    published_at TEXT
);
INSERT INTO index_generation (id, generation, published_at) VALUES (1, 0, NULL)
    ON CONFLICT DO NOTHING;
"#;

/// One submission-id rule (`screening::SubmissionId`): ledger rows that stored
/// a content hash as bare hex get the `sha256:` prefix, so they aggregate with
/// rows written under the rule. Where both forms of one submission were
/// recorded for the same work and purpose (the same use counted twice), the
/// bare-hex row goes. The append-only triggers are lifted for this one
/// rewrite only and put back in the same transaction.
const MIGRATION_2: &str = r#"
DROP TRIGGER attributions_no_update;
DROP TRIGGER attributions_no_delete;
DELETE FROM attributions
 WHERE length(submission_id) = 64
   AND lower(submission_id) NOT GLOB '*[^0-9a-f]*'
   AND EXISTS (SELECT 1 FROM attributions AS twin
                WHERE twin.submission_id = 'sha256:' || lower(attributions.submission_id)
                  AND twin.reg_no = attributions.reg_no
                  AND twin.purpose = attributions.purpose);
UPDATE attributions
   SET submission_id = 'sha256:' || lower(submission_id)
 WHERE length(submission_id) = 64
   AND lower(submission_id) NOT GLOB '*[^0-9a-f]*';
CREATE TRIGGER attributions_no_update BEFORE UPDATE ON attributions
BEGIN SELECT RAISE(ABORT, 'the attribution ledger is append-only'); END;
CREATE TRIGGER attributions_no_delete BEFORE DELETE ON attributions
BEGIN SELECT RAISE(ABORT, 'the attribution ledger is append-only'); END;
"#;

/// The schema version this build writes.
pub fn current_version() -> i64 {
    i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX)
}

const MIGRATION_1: &str = r#"
CREATE TABLE works (
    reg_no             INTEGER PRIMARY KEY,
    id                 TEXT NOT NULL,
    title              TEXT NOT NULL,
    artists            TEXT NOT NULL,          -- JSON array of strings
    isrc               TEXT,
    iswc               TEXT,
    holder             TEXT NOT NULL,
    holder_isni        TEXT,
    duration_s         REAL NOT NULL,
    fingerprint_config TEXT NOT NULL,
    audio_sha256       TEXT NOT NULL,
    source_file        TEXT NOT NULL,
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL,
    removed_at         TEXT,
    removed_by         TEXT
);
CREATE UNIQUE INDEX works_active_id ON works(id) WHERE removed_at IS NULL;
CREATE INDEX works_isrc ON works(isrc);

CREATE TABLE consent_records (
    id              INTEGER PRIMARY KEY,
    reg_no          INTEGER NOT NULL REFERENCES works(reg_no),
    scope           TEXT NOT NULL CHECK (scope IN ('ai-training', 'ai-fine-tuning',
                        'ai-generation', 'voice-synthesis', 'text-and-data-mining')),
    status          TEXT NOT NULL CHECK (status IN ('opted-out', 'opted-in', 'constrained')),
    effective_from  TEXT NOT NULL,
    effective_until TEXT CHECK (effective_until IS NULL OR effective_until > effective_from),
    territory       TEXT NOT NULL,
    asserted_by     TEXT NOT NULL,
    asserted_at     TEXT NOT NULL,
    source          TEXT NOT NULL,
    policy_ref      TEXT,
    terms           TEXT,
    recorded_at     TEXT NOT NULL
);
CREATE INDEX consent_by_work ON consent_records(reg_no, scope);
CREATE TRIGGER consent_records_no_update BEFORE UPDATE ON consent_records
BEGIN SELECT RAISE(ABORT, 'consent records are append-only'); END;
CREATE TRIGGER consent_records_no_delete BEFORE DELETE ON consent_records
BEGIN SELECT RAISE(ABORT, 'consent records are append-only'); END;

CREATE TABLE audit_log (
    seq       INTEGER PRIMARY KEY,
    at        TEXT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    subject   TEXT NOT NULL,
    details   TEXT NOT NULL,                   -- JSON object
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;

CREATE TABLE attributions (
    id              INTEGER PRIMARY KEY,
    reg_no          INTEGER NOT NULL REFERENCES works(reg_no),
    seconds         REAL NOT NULL CHECK (seconds >= 0),
    submission_id   TEXT NOT NULL,
    submission_name TEXT NOT NULL,
    purpose         TEXT NOT NULL,
    at              TEXT NOT NULL,
    UNIQUE (submission_id, reg_no, purpose)
);
CREATE INDEX attributions_at ON attributions(at);
CREATE TRIGGER attributions_no_update BEFORE UPDATE ON attributions
BEGIN SELECT RAISE(ABORT, 'the attribution ledger is append-only'); END;
CREATE TRIGGER attributions_no_delete BEFORE DELETE ON attributions
BEGIN SELECT RAISE(ABORT, 'the attribution ledger is append-only'); END;

CREATE TABLE api_keys (
    key_id      TEXT PRIMARY KEY,
    role        TEXT NOT NULL CHECK (role IN ('screener', 'rights-holder', 'admin')),
    holder      TEXT,
    salt        TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    revoked_at  TEXT
);
"#;

/// Brings the schema up to [`current_version`].
pub fn migrate(conn: &mut Connection) -> Result<()> {
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|source| RegistryError::Migration {
            version: 0,
            source: source.into(),
        })?;
    let supported = current_version();
    if found > supported {
        return Err(RegistryError::SchemaTooNew { found, supported });
    }
    for (index, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(found).unwrap_or(0))
    {
        let version = i64::try_from(index + 1).unwrap_or(i64::MAX);
        let fail = |source: rusqlite::Error| RegistryError::Migration {
            version,
            source: source.into(),
        };
        let tx = conn.transaction().map_err(fail)?;
        tx.execute_batch(sql).map_err(fail)?;
        tx.pragma_update(None, "user_version", version)
            .map_err(fail)?;
        tx.commit().map_err(fail)?;
    }
    Ok(())
}

//! # The registry: works, consent, audit log, attribution ledger, API keys
//!
//! The registry is the source of truth for *what is registered* and *what its
//! rights holders said*. It is an embedded SQLite database (`registry.sqlite` in
//! the data directory) opened in WAL mode with foreign keys enforced; the schema
//! is versioned with `PRAGMA user_version` (see [`schema`]).
//!
//! ## Invariants
//! * **One transaction per change, audit entry included.** Every mutating method
//!   runs in a single `BEGIN IMMEDIATE` transaction that also appends its entry to
//!   the hash-chained audit log ([`audit`]): either both are written or neither.
//! * **Consent is append-only.** Statements are never edited or deleted (triggers
//!   abort UPDATE/DELETE); a change of mind is a new record. The consent in force
//!   is *derived* at query time ([`consent`]), with the deciding record returned as
//!   evidence.
//! * **Identifiers are validated at the edge** ([`ids`]); typed values inside.
//! * **Secrets are never stored**: API keys keep a salted SHA-256 ([`keys`]).
//!
//! A [`Registry`] is `Send + Sync`: the connection sits behind a mutex, so the
//! engine and a service can share one instance. Several processes may open the
//! same database; SQLite's locking and a busy timeout serialise writers.

pub mod audit;
pub mod catalog;
pub mod consent;
mod error;
pub mod ids;
pub mod keys;
pub mod ledger;
pub mod model;
mod rows;
pub mod schema;
mod works;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};
use time::OffsetDateTime;

pub use audit::{AuditEntry, AuditProblem, AuditReport};
pub use consent::{EffectiveConsent, EffectiveStatus};
pub use error::{RegistryError, Result};
pub use ids::{IdError, Isni, Isrc, Iswc, Territory, WorkId};
pub use keys::{KeyInfo, Role};
pub use ledger::{LedgerFormat, LedgerTotal, NewAttribution, write_totals};
pub use model::{
    ConsentRecord, ConsentSource, ConsentStatus, NewConsent, NewWork, ReferenceAudio, Scope, Work,
};
pub use works::{ExistingWork, MAX_PAGE};

use error::DbContext;

/// File name of the registry database inside the data directory.
pub const REGISTRY_FILE: &str = "registry.sqlite";
/// How long a writer waits for another process's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Source of "now" for timestamps the registry assigns (created_at, audit `at`).
pub type Clock = Box<dyn Fn() -> OffsetDateTime + Send + Sync>;

/// Handle on the registry database.
pub struct Registry {
    conn: Mutex<Connection>,
    path: PathBuf,
    clock: Clock,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Bytes written to the data directory when probing why SQLite failed.
const WRITE_PROBE_BYTES: usize = 64 * 1024;

/// For a SQLite I/O error, why writing to the data directory fails, if it
/// does: while opening, SQLite reports a full disk or a read-only mount only
/// as "disk I/O error" (it cannot grow its shared-memory file).
fn unwritable(dir: &Path, err: &rusqlite::Error) -> Option<std::io::Error> {
    let io_failure = matches!(err, rusqlite::Error::SqliteFailure(e, _)
        if e.code == rusqlite::ErrorCode::SystemIoFailure);
    if !io_failure {
        return None;
    }
    tempfile::tempfile_in(dir)
        .and_then(|mut file| {
            std::io::Write::write_all(&mut file, &[0u8; WRITE_PROBE_BYTES])?;
            file.sync_all()
        })
        .err()
}

impl Registry {
    /// Opens (creating if needed) `data_dir/registry.sqlite` and migrates it.
    pub fn open(data_dir: &Path) -> Result<Self> {
        Self::open_with_clock(data_dir, Box::new(OffsetDateTime::now_utc))
    }

    /// Like [`Registry::open`] with an injected clock (tests, replays).
    pub fn open_with_clock(data_dir: &Path, clock: Clock) -> Result<Self> {
        std::fs::create_dir_all(data_dir).map_err(|source| RegistryError::CreateDir {
            path: data_dir.to_owned(),
            source,
        })?;
        let path = data_dir.join(REGISTRY_FILE);
        let open_err = |source| match unwritable(data_dir, &source) {
            Some(io) => RegistryError::OpenUnwritable {
                path: path.clone(),
                source,
                io,
            },
            None => RegistryError::Open {
                path: path.clone(),
                source,
            },
        };
        let mut conn = Connection::open(&path).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %path.display(), mode, "registry could not switch to WAL mode");
        }
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        schema::migrate(&mut conn)?;
        Ok(Self {
            conn: Mutex::new(conn),
            path,
            clock,
        })
    }

    /// Opens an existing `data_dir/registry.sqlite` for reading only: nothing
    /// is created or migrated, and every write fails. For screening workers
    /// that share a data directory they must not change (Python, Ray).
    pub fn open_read_only(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join(REGISTRY_FILE);
        if !path.is_file() {
            return Err(RegistryError::Missing { path });
        }
        let open_err = |source| RegistryError::Open {
            path: path.clone(),
            source,
        };
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        let found: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(open_err)?;
        let supported = schema::current_version();
        if found > supported {
            return Err(RegistryError::SchemaTooNew { found, supported });
        }
        if found < supported {
            return Err(RegistryError::SchemaNotMigrated {
                path,
                found,
                supported,
            });
        }
        Ok(Self {
            conn: Mutex::new(conn),
            path,
            clock: Box::new(OffsetDateTime::now_utc),
        })
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Current time from the registry's clock, normalised to stored precision.
    pub fn now(&self) -> OffsetDateTime {
        model::normalize_time((self.clock)())
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves no open transaction behind (the
        // transaction rolls back on drop), so the connection is still usable.
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `f` on the connection (reads).
    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        f(&self.lock())
    }

    /// Runs `f` in one immediate transaction and commits it if `f` succeeds.
    fn write<T>(&self, op: &str, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .db(|| format!("starting a transaction for {op}"))?;
        let value = f(&tx)?;
        tx.commit().db(|| format!("committing {op}"))?;
        Ok(value)
    }

    /// Raw connection access for tests that tamper with the database.
    #[cfg(test)]
    pub(crate) fn with_raw_connection<T>(&self, f: impl FnOnce(&Connection) -> T) -> T {
        f(&self.lock())
    }
}

#[cfg(test)]
pub(crate) mod test_support;

//! # The registry: works, consent, audit log, attribution ledger, API keys
//!
//! The registry is the source of truth for *what is registered* and *what its
//! rights holders said*. By default it is an embedded SQLite database
//! (`registry.sqlite` in the data directory) opened in WAL mode with foreign
//! keys enforced; the schema is versioned with `PRAGMA user_version` (see
//! [`schema`]). With the `postgres` feature it can instead live on a
//! PostgreSQL server shared by several service replicas
//! ([`RegistryLocation::Postgres`]): the same schema, the same statements
//! ([`db`]) and the same behaviour.
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
//! * **The index generation it vouches for** ([`index_generation`]) only
//!   rises; writers of the index raise it (with a new work, in the work's
//!   transaction), and screening refuses an index snapshot older than it.
//!
//! A [`Registry`] is `Send + Sync`: the connection sits behind a mutex, so the
//! engine and a service can share one instance. Several processes may open the
//! same database. On SQLite, its locking and a busy timeout serialise writers;
//! on PostgreSQL every write transaction first takes one transaction-scoped
//! advisory lock ([`postgres::WRITE_LOCK`]), so writes from all replicas are
//! serialised the same way and the audit chain never forks. Writers of the
//! index the replicas share serialise on [`Registry::lock_index_writes`].

pub mod audit;
pub mod catalog;
pub mod consent;
pub(crate) mod db;
mod error;
pub mod ids;
pub mod index_generation;
pub mod keys;
pub mod ledger;
pub mod model;
#[cfg(feature = "postgres")]
pub mod postgres;
mod rows;
pub mod schema;
mod works;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use time::OffsetDateTime;

use db::{Db, SqliteDb};

pub use audit::{AuditEntry, AuditProblem, AuditReport};
pub use consent::{EffectiveConsent, EffectiveStatus};
pub use db::{Backend, DbError};
pub use error::{RegistryError, Result};
pub use ids::{IdError, Isni, Isrc, Iswc, Territory, WorkId};
pub use index_generation::IndexWriteLock;
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

/// Environment variable naming the registry (`postgres://…`), as `--registry`.
pub const REGISTRY_ENV: &str = "EARMARK_REGISTRY";

/// Where the registry lives.
#[derive(Clone, PartialEq, Eq)]
pub enum RegistryLocation {
    /// `registry.sqlite` in the data directory (the default).
    DataDir,
    /// A PostgreSQL database, as a `postgres://` or `postgresql://` URL
    /// (libpq's connection URI: user, password, host, port, database and
    /// parameters such as `sslmode=require`).
    Postgres(String),
}

impl RegistryLocation {
    /// Parses `--registry`: a PostgreSQL URL, or `sqlite` (or empty) for the
    /// data directory's database.
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        if text.is_empty() || text.eq_ignore_ascii_case("sqlite") {
            return Ok(RegistryLocation::DataDir);
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Ok(RegistryLocation::Postgres(text.to_owned()));
        }
        Err(RegistryError::Location {
            location: redact(text),
            reason: "expected a postgres:// or postgresql:// URL, or `sqlite`".into(),
        })
    }
}

/// A location without its password (for messages and logs).
fn redact(text: &str) -> String {
    match text.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split(':').next().unwrap_or_default();
                format!("{scheme}://{user}@{host}")
            }
            None => text.to_owned(),
        },
        None => text.to_owned(),
    }
}

impl std::fmt::Debug for RegistryLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegistryLocation::DataDir => f.write_str("DataDir"),
            RegistryLocation::Postgres(url) => write!(f, "Postgres({})", redact(url)),
        }
    }
}

impl std::fmt::Display for RegistryLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegistryLocation::DataDir => f.write_str(REGISTRY_FILE),
            RegistryLocation::Postgres(url) => f.write_str(&redact(url)),
        }
    }
}

/// The connection of a registry.
enum Conn {
    Sqlite(Connection),
    #[cfg(feature = "postgres")]
    Postgres(Box<postgres::PgConnection>),
}

/// Handle on the registry database.
pub struct Registry {
    conn: Mutex<Conn>,
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
            conn: Mutex::new(Conn::Sqlite(conn)),
            path,
            clock,
        })
    }

    /// Opens the registry at `location`: the data directory's SQLite
    /// database, or a PostgreSQL database (created schema and migrations
    /// included). PostgreSQL needs the `postgres` feature.
    pub fn open_at(location: &RegistryLocation, data_dir: &Path) -> Result<Self> {
        Self::open_at_with_clock(location, data_dir, Box::new(OffsetDateTime::now_utc))
    }

    /// Like [`Registry::open_at`] with an injected clock.
    pub fn open_at_with_clock(
        location: &RegistryLocation,
        data_dir: &Path,
        clock: Clock,
    ) -> Result<Self> {
        match location {
            RegistryLocation::DataDir => Self::open_with_clock(data_dir, clock),
            #[cfg(feature = "postgres")]
            RegistryLocation::Postgres(url) => {
                let conn = postgres::PgConnection::connect(url)?;
                Ok(Self {
                    path: PathBuf::from(redact(url)),
                    conn: Mutex::new(Conn::Postgres(Box::new(conn))),
                    clock,
                })
            }
            #[cfg(not(feature = "postgres"))]
            RegistryLocation::Postgres(url) => Err(RegistryError::Location {
                location: redact(url),
                reason: "this build has no PostgreSQL support (cargo feature `postgres`)".into(),
            }),
        }
    }

    /// Which engine holds this registry.
    pub fn backend(&self) -> Backend {
        match &*self.lock() {
            Conn::Sqlite(_) => Backend::Sqlite,
            #[cfg(feature = "postgres")]
            Conn::Postgres(_) => Backend::Postgres,
        }
    }

    /// Checks that the database answers (health checks); reconnects a
    /// PostgreSQL registry whose connection broke.
    pub fn ping(&self) -> Result<()> {
        self.read(|db| {
            db.query_one("SELECT 1", &[])
                .db(|| "checking the registry connection".into())?;
            Ok(())
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
            conn: Mutex::new(Conn::Sqlite(conn)),
            path,
            clock: Box::new(OffsetDateTime::now_utc),
        })
    }

    /// Path of the database file (for PostgreSQL, its URL without password).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Current time from the registry's clock, normalised to stored precision.
    pub fn now(&self) -> OffsetDateTime {
        model::normalize_time((self.clock)())
    }

    fn lock(&self) -> MutexGuard<'_, Conn> {
        // A panic while holding the lock leaves no open transaction behind (the
        // transaction rolls back on drop), so the connection is still usable.
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `f` on the connection (reads).
    fn read<T: Send>(&self, f: impl Fn(&mut dyn Db) -> Result<T> + Sync) -> Result<T> {
        match &mut *self.lock() {
            Conn::Sqlite(conn) => f(&mut SqliteDb(conn)),
            #[cfg(feature = "postgres")]
            Conn::Postgres(pg) => pg.read(f),
        }
    }

    /// Runs `f` in one write transaction and commits it if `f` succeeds:
    /// SQLite's `BEGIN IMMEDIATE`, or on PostgreSQL a transaction that first
    /// takes the registry's write lock.
    fn write<T: Send>(
        &self,
        op: &str,
        f: impl FnOnce(&mut dyn Db) -> Result<T> + Send,
    ) -> Result<T> {
        match &mut *self.lock() {
            Conn::Sqlite(conn) => {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .db(|| format!("starting a transaction for {op}"))?;
                let value = f(&mut SqliteDb(&tx))?;
                tx.commit().db(|| format!("committing {op}"))?;
                Ok(value)
            }
            #[cfg(feature = "postgres")]
            Conn::Postgres(pg) => pg.write(op, true, f),
        }
    }

    /// Like [`Registry::write`] for changes that append no audit entry and
    /// are safe under concurrent writers by themselves (the ledger's
    /// insert-or-ignore): PostgreSQL does not take the write lock.
    fn write_unserialised<T: Send>(
        &self,
        op: &str,
        f: impl FnOnce(&mut dyn Db) -> Result<T> + Send,
    ) -> Result<T> {
        #[cfg(feature = "postgres")]
        if let Conn::Postgres(pg) = &mut *self.lock() {
            return pg.write(op, false, f);
        }
        self.write(op, f)
    }

    /// Raw connection access for tests that tamper with the database
    /// (SQLite registries only).
    #[cfg(test)]
    pub(crate) fn with_raw_connection<T>(&self, f: impl FnOnce(&Connection) -> T) -> T {
        match &*self.lock() {
            Conn::Sqlite(conn) => f(conn),
            #[cfg(feature = "postgres")]
            Conn::Postgres(_) => panic!("raw SQLite access on a PostgreSQL registry"),
        }
    }
}

#[cfg(test)]
pub(crate) mod test_support;

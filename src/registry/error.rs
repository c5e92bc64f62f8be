//! The registry's error type.

use std::path::PathBuf;

use thiserror::Error;

use super::db::DbError;
use super::ids::IdError;
use super::model::{ParseEnumError, TimeError};

/// Everything that can go wrong in the registry. Variants carry the context
/// needed to act on them (work id, path, operation).
#[derive(Debug, Error)]
pub enum RegistryError {
    #[error("cannot create data directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open registry database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    /// SQLite reported only a "disk I/O error" and a write to the data
    /// directory says why (a full disk, a read-only mount).
    #[error(
        "cannot open registry database {path}: the data directory cannot be written: {io} ({source})"
    )]
    OpenUnwritable {
        path: PathBuf,
        source: rusqlite::Error,
        io: std::io::Error,
    },
    #[error(
        "registry schema version {found} is newer than this build supports ({supported}); \
         upgrade earmark"
    )]
    SchemaTooNew { found: i64, supported: i64 },
    #[error(
        "registry {path} is at schema version {found}, this build reads version {supported}; \
         open it once read-write (any `earmark` command on the data directory) to migrate it"
    )]
    SchemaNotMigrated {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("no registry at {path} (register works first)")]
    Missing { path: PathBuf },
    #[error("cannot connect to the registry database {target}: {source}")]
    Connect { target: String, source: DbError },
    #[error("invalid registry location '{location}': {reason}")]
    Location { location: String, reason: String },
    #[error("migrating the registry schema to version {version}: {source}")]
    Migration { version: i64, source: DbError },
    #[error("registry database error while {op}: {source}")]
    Db { op: String, source: DbError },
    #[error(transparent)]
    Id(#[from] IdError),
    #[error(transparent)]
    Keyword(#[from] ParseEnumError),
    #[error(transparent)]
    Time(#[from] TimeError),
    #[error("work '{id}' is already registered (since {since})")]
    WorkExists { id: String, since: String },
    #[error("work '{id}' is not registered")]
    WorkNotFound { id: String },
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("corrupt registry data in {table} ({key}): {reason}")]
    Corrupt {
        table: &'static str,
        key: String,
        reason: String,
    },
    #[error("serialising {what}: {source}")]
    Json {
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("writing {what}: {source}")]
    Write {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("writing {what} as CSV: {source}")]
    Csv {
        what: &'static str,
        source: csv::Error,
    },
    #[error("cannot generate random key material: {0}")]
    Random(String),
}

/// Shorthand result type.
pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// Attaches an operation description to database errors.
pub(crate) trait DbContext<T> {
    fn db(self, op: impl FnOnce() -> String) -> Result<T>;
}

impl<T> DbContext<T> for std::result::Result<T, DbError> {
    fn db(self, op: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| RegistryError::Db { op: op(), source })
    }
}

impl<T> DbContext<T> for rusqlite::Result<T> {
    fn db(self, op: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| RegistryError::Db {
            op: op(),
            source: source.into(),
        })
    }
}

impl RegistryError {
    /// Whether the registry database could not be reached (the server is
    /// down or the connection broke): retry later; nothing is wrong with the
    /// request or the data.
    pub fn is_unavailable(&self) -> bool {
        match self {
            RegistryError::Db { source, .. }
            | RegistryError::Connect { source, .. }
            | RegistryError::Migration { source, .. } => source.is_unreachable(),
            _ => false,
        }
    }

    /// Whether another writer held a lock too long (retry later).
    pub fn is_busy(&self) -> bool {
        matches!(self, RegistryError::Db { source, .. } if source.is_busy())
    }
}

/// Builds an [`RegistryError::Invalid`].
pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> RegistryError {
    RegistryError::Invalid {
        field,
        reason: reason.into(),
    }
}

//! The data directory: `index/` (manifest + segments) and `registry.sqlite`,
//! or the registry on a PostgreSQL server ([`RegistryLocation::Postgres`]).

use std::path::PathBuf;

use crate::error::EngineError;
use crate::index::{Index, IndexWriter};
use crate::registry::RegistryLocation;

/// Default data directory (relative to the working directory).
pub const DEFAULT_DATA_DIR: &str = "earmark-data";
/// Index sub-directory of the data directory.
pub const INDEX_DIR: &str = "index";

/// Paths of a data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    pub root: PathBuf,
    /// Where the registry lives (the data directory's SQLite file by default).
    pub registry: RegistryLocation,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            registry: RegistryLocation::DataDir,
        }
    }

    /// The same data directory with its registry at `location`.
    pub fn with_registry(mut self, location: RegistryLocation) -> Self {
        self.registry = location;
        self
    }

    pub fn index_dir(&self) -> PathBuf {
        self.root.join(INDEX_DIR)
    }

    pub fn open_index(&self) -> Result<Index, EngineError> {
        Ok(Index::open(&self.index_dir())?)
    }

    pub fn index_writer(&self) -> Result<IndexWriter, EngineError> {
        Ok(IndexWriter::open(&self.index_dir())?)
    }

    /// Path of the registry database.
    pub fn registry_path(&self) -> PathBuf {
        self.root.join(crate::registry::REGISTRY_FILE)
    }

    /// Whether the registry database exists (without creating it); a
    /// PostgreSQL registry counts as existing (it is created by its server).
    pub fn has_registry(&self) -> bool {
        matches!(self.registry, RegistryLocation::Postgres(_)) || self.registry_path().is_file()
    }

    /// Opens (creating if needed) the registry of this data directory, after
    /// [`DataDir::check_registry_present`]: a registry is never created next to
    /// an index that already holds works.
    pub fn open_registry(&self) -> Result<crate::registry::Registry, EngineError> {
        self.check_registry_present()?;
        Ok(crate::registry::Registry::open_at(
            &self.registry,
            &self.root,
        )?)
    }

    /// Opens the existing registry for reading only (nothing is created or
    /// migrated; see [`crate::registry::Registry::open_read_only`]).
    /// A PostgreSQL registry is opened as by [`DataDir::open_registry`]
    /// (its server enforces access rights).
    pub fn open_registry_read_only(&self) -> Result<crate::registry::Registry, EngineError> {
        match &self.registry {
            RegistryLocation::DataDir => Ok(crate::registry::Registry::open_read_only(&self.root)?),
            location @ RegistryLocation::Postgres(_) => {
                Ok(crate::registry::Registry::open_at(location, &self.root)?)
            }
        }
    }

    /// Fails with [`EngineError::IndexWithoutRegistry`] when the index holds
    /// works but the registry database does not exist.
    pub fn check_registry_present(&self) -> Result<(), EngineError> {
        if self.has_registry() {
            return Ok(());
        }
        let works = self.open_index()?.live_work_count();
        if works == 0 {
            return Ok(());
        }
        Err(EngineError::IndexWithoutRegistry {
            root: self.root.clone(),
            works,
            registry_file: crate::registry::REGISTRY_FILE,
        })
    }
}

//! Errors of the core operations shared by the edges: fingerprinting audio
//! files, registering works and opening a data directory.

use std::path::PathBuf;

use crate::decode::DecodeError;
use crate::index::IndexError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("{input}: too short to fingerprint ({duration_s:.2} s of audio)")]
    TooShort { input: String, duration_s: f64 },
    #[error(
        "{input}: silent: no spectral peaks in {duration_s:.2} s of audio (nothing to fingerprint)"
    )]
    Silent { input: String, duration_s: f64 },
    #[error(
        "{input}: too few spectral peaks to fingerprint ({peaks} in {duration_s:.2} s of audio; \
         near-silent or a steady tone)"
    )]
    TooFewPeaks {
        input: String,
        duration_s: f64,
        peaks: usize,
    },
    #[error("invalid work id '{work_id}': {reason}")]
    InvalidWorkId { work_id: String, reason: String },
    #[error(transparent)]
    Registry(Box<crate::registry::RegistryError>),
    #[error(transparent)]
    Policy(Box<crate::policy::PolicyError>),
    #[error("work '{work_id}' is already registered")]
    AlreadyRegistered { work_id: String },
    #[error("{path}: cannot read: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{root}: the index holds {works} work(s) but there is no registry ({registry_file}), \
         so they have no metadata or consent (a data directory from an earmark without the \
         consent registry, or a deleted registry); register the works again into a new data \
         directory with `earmark works add` or `earmark works import`"
    )]
    IndexWithoutRegistry {
        root: PathBuf,
        works: usize,
        registry_file: &'static str,
    },
    #[error(
        "work id '{registry_id}' of the registry entry differs from '{index_id}' of its fingerprints"
    )]
    MismatchedIds {
        registry_id: String,
        index_id: String,
    },
}

impl From<crate::registry::RegistryError> for EngineError {
    fn from(err: crate::registry::RegistryError) -> Self {
        Self::Registry(Box::new(err))
    }
}

impl From<crate::policy::PolicyError> for EngineError {
    fn from(err: crate::policy::PolicyError) -> Self {
        Self::Policy(Box::new(err))
    }
}

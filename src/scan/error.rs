//! Errors that stop a scan (per-item problems are report rows, not errors).

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// An input or option is unusable (nothing was screened).
    #[error("{path}: {reason}")]
    Input { path: PathBuf, reason: String },
    #[error("{reason}")]
    Usage { reason: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Engine(Box<crate::error::EngineError>),
    /// `--resume` cannot continue the earlier run.
    #[error("cannot resume: {reason}")]
    Resume { reason: String },
    /// Something changed or broke mid-scan; the report so far stays valid and
    /// `--resume` continues from it.
    #[error("{reason}")]
    Fatal { reason: String },
}

impl From<crate::error::EngineError> for ScanError {
    fn from(e: crate::error::EngineError) -> Self {
        ScanError::Engine(Box::new(e))
    }
}

impl ScanError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        ScanError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn input(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        ScanError::Input {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

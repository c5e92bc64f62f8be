//! The engine: one data directory, its index, and the operations the CLI and the
//! service share (fingerprint a file, register works, identify submissions).
//!
//! Data directory layout: `index/` (manifest + segments), `registry.sqlite`.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::decode::{self, AudioInfo, DecodeError, DecodeLimits};
use crate::fingerprint::{Fingerprint, SAMPLE_RATE_HZ, Side, StreamingFingerprinter};
use crate::index::segment::SegmentWork;
use crate::index::{Index, IndexError, IndexWriter};
use crate::matcher::{self, Match, MatcherConfig};

/// Default data directory (relative to the working directory).
pub const DEFAULT_DATA_DIR: &str = "earmark-data";
/// Index sub-directory of the data directory.
pub const INDEX_DIR: &str = "index";

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("{input}: too short to fingerprint ({duration_s:.2} s of audio)")]
    TooShort { input: String, duration_s: f64 },
    #[error("invalid work id '{work_id}': {reason}")]
    InvalidWorkId { work_id: String, reason: String },
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    #[error("work '{work_id}' is already registered")]
    AlreadyRegistered { work_id: String },
    #[error("{path}: cannot read: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Fingerprints a file as it decodes (bounded memory, parallel blocks).
pub fn fingerprint_file(
    path: &Path,
    limits: &DecodeLimits,
    side: Side,
) -> Result<(Fingerprint, AudioInfo), EngineError> {
    let mut fingerprinter = StreamingFingerprinter::new(side);
    let info = decode::decode_file_stream(path, limits, SAMPLE_RATE_HZ, |block| {
        fingerprinter.push(block)
    })?;
    Ok((fingerprinter.finish(), info))
}

/// Fingerprints in-memory encoded audio (e.g. an upload).
pub fn fingerprint_bytes(
    bytes: Vec<u8>,
    input: &str,
    extension_hint: Option<&str>,
    limits: &DecodeLimits,
    side: Side,
) -> Result<(Fingerprint, AudioInfo), EngineError> {
    let mut fingerprinter = StreamingFingerprinter::new(side);
    let info = decode::decode_bytes(bytes, input, extension_hint, limits, SAMPLE_RATE_HZ, |b| {
        fingerprinter.push(b)
    })?;
    Ok((fingerprinter.finish(), info))
}

/// Checks a user-given work id: 1–128 characters of `[A-Za-z0-9._:-]`.
pub fn validate_work_id(work_id: &str) -> Result<(), EngineError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-');
    let reason = if work_id.is_empty() || work_id.len() > 128 {
        Some("must be 1 to 128 characters")
    } else if !work_id.chars().all(ok_char) {
        Some("may only contain letters, digits, '.', '_', ':' and '-'")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(EngineError::InvalidWorkId {
            work_id: work_id.to_string(),
            reason: reason.to_string(),
        }),
        None => Ok(()),
    }
}

/// A reference fingerprint ready to be written to the index.
#[derive(Debug, Clone)]
pub struct PreparedWork {
    pub work_id: String,
    pub source: PathBuf,
    pub fingerprint: Fingerprint,
    pub info: AudioInfo,
}

/// Shortest reference accepted (seconds).
pub const MIN_REFERENCE_S: f64 = 1.0;

/// Decodes and fingerprints a reference recording.
pub fn prepare_work(
    work_id: &str,
    path: &Path,
    limits: &DecodeLimits,
) -> Result<PreparedWork, EngineError> {
    validate_work_id(work_id)?;
    let (fingerprint, info) = fingerprint_file(path, limits, Side::Reference)?;
    if info.duration_s < MIN_REFERENCE_S || fingerprint.prints.is_empty() {
        return Err(EngineError::TooShort {
            input: path.display().to_string(),
            duration_s: info.duration_s,
        });
    }
    Ok(PreparedWork {
        work_id: work_id.to_string(),
        source: path.to_path_buf(),
        fingerprint,
        info,
    })
}

/// Fingerprints many references in parallel (results in input order).
pub fn prepare_works(
    works: &[(String, PathBuf)],
    limits: &DecodeLimits,
) -> Vec<Result<PreparedWork, EngineError>> {
    works
        .par_iter()
        .map(|(id, path)| prepare_work(id, path, limits))
        .collect()
}

/// Writes prepared works to the index as one new segment; returns the generation.
pub fn commit_works(writer: &IndexWriter, works: &[PreparedWork]) -> Result<u64, EngineError> {
    let entries: Vec<(SegmentWork, &[crate::fingerprint::Print])> = works
        .iter()
        .map(|w| {
            (
                SegmentWork {
                    id: w.work_id.clone(),
                    duration_s: w.info.duration_s,
                    prints: w.fingerprint.prints.len() as u64,
                },
                w.fingerprint.prints.as_slice(),
            )
        })
        .collect();
    Ok(writer.add_works(&entries)?)
}

/// Result of screening one file.
#[derive(Debug, Clone)]
pub struct Identification {
    pub duration_s: f64,
    pub matches: Vec<Match>,
    pub info: AudioInfo,
}

/// Identifies every registered work inside a file.
pub fn identify_file(
    index: &Index,
    path: &Path,
    limits: &DecodeLimits,
    config: &MatcherConfig,
) -> Result<Identification, EngineError> {
    let (fingerprint, info) = fingerprint_file(path, limits, Side::Query)?;
    Ok(Identification {
        duration_s: info.duration_s,
        matches: matcher::find_matches(index, &fingerprint, config),
        info,
    })
}

/// Lower-case hex SHA-256 of a file's bytes (streamed).
pub fn sha256_file(path: &Path) -> Result<String, EngineError> {
    use sha2::Digest;
    use std::io::Read;
    let read_err = |source| EngineError::ReadFile {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(read_err)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(read_err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The writable catalog of a data directory: the fingerprint index and the
/// consent registry, kept consistent.
///
/// The **registry is the source of truth** for which works exist. Registering
/// writes the fingerprints first (a new index segment, atomically), then the
/// registry row with its consent records and audit entry (one SQLite
/// transaction); if the registry write fails the index entry is removed again.
/// Removing goes the other way: registry first, then a tombstone. A crash between
/// the two steps leaves fingerprints without a work, which is never visible:
/// [`Catalog::open`] tombstones any indexed work the registry does not know, and
/// screening only reports works the index and the registry both hold.
pub struct Catalog {
    pub data: DataDir,
    pub writer: IndexWriter,
    pub registry: crate::registry::Registry,
}

impl Catalog {
    /// Takes the index write lock, opens the registry and reconciles the two.
    pub fn open(data: &DataDir) -> Result<Self, EngineError> {
        std::fs::create_dir_all(&data.root).map_err(|source| EngineError::ReadFile {
            path: data.root.clone(),
            source,
        })?;
        let writer = data.index_writer()?;
        let registry = crate::registry::Registry::open(&data.root)?;
        let catalog = Self {
            data: data.clone(),
            writer,
            registry,
        };
        catalog.reconcile()?;
        Ok(catalog)
    }

    /// Tombstones indexed works the registry does not hold (left by a crash).
    /// Returns their ids.
    pub fn reconcile(&self) -> Result<Vec<String>, EngineError> {
        let registered = self.registry.work_ids()?;
        let index = self.data.open_index()?;
        let mut orphans: Vec<String> = index
            .work_ids()
            .filter(|id| !registered.contains(*id))
            .map(str::to_string)
            .collect();
        drop(index);
        orphans.sort();
        for id in &orphans {
            tracing::warn!(work_id = %id, "removing fingerprints of a work the registry does not hold (interrupted registration)");
            self.writer.remove_work(id)?;
        }
        Ok(orphans)
    }

    /// Registers a prepared (fingerprinted) work with its metadata and consents.
    pub fn register(
        &self,
        work: &PreparedWork,
        metadata: crate::registry::NewWork,
        consents: &[crate::registry::NewConsent],
        actor: &str,
    ) -> Result<crate::registry::Work, EngineError> {
        if self.registry.work_ids()?.contains(&work.work_id) {
            return Err(EngineError::AlreadyRegistered {
                work_id: work.work_id.clone(),
            });
        }
        commit_works(&self.writer, std::slice::from_ref(work))?;
        match self.registry.add_work(metadata, consents, actor) {
            Ok(registered) => Ok(registered),
            Err(err) => {
                // Compensate; if this fails too, reconcile() will on next open.
                let _ = self.writer.remove_work(&work.work_id);
                Err(err.into())
            }
        }
    }

    /// Removes a work from the registry, then its fingerprints.
    pub fn remove(&self, work_id: &str, actor: &str) -> Result<(), EngineError> {
        self.registry.remove_work(work_id, actor)?;
        match self.writer.remove_work(work_id) {
            Ok(_) | Err(IndexError::UnknownWork { .. }) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }
}

/// Paths of a data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    pub root: PathBuf,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_ids_are_validated() {
        assert!(validate_work_id("wesnoth-battle_01:v2.0").is_ok());
        assert!(validate_work_id("").is_err());
        assert!(validate_work_id("has space").is_err());
        assert!(validate_work_id("../etc/passwd").is_err());
        assert!(validate_work_id(&"x".repeat(129)).is_err());
    }
}

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

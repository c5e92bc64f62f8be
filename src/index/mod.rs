//! The on-disk fingerprint index: hash → postings `(work, anchor frame, anchor freq)`.
//!
//! * Immutable [`segment`]s (CSR by hash prefix, checksummed, memory-mapped) hold
//!   the postings; a JSON **manifest** names the live segments, their tombstoned
//!   works and the index **generation** (bumped on every change).
//! * Every write (new segment, manifest) goes to a temporary file that is fsynced
//!   and renamed over the old name, then the directory is fsynced: a crash or kill
//!   at any point leaves the previous manifest — and every segment it names —
//!   intact. Files no manifest names (left by a crash) are removed by the next writer.
//! * Adding works writes one new segment. Removing a work records a tombstone in the
//!   manifest, honoured by readers at once. `compact` merges the live postings of
//!   all segments into one and drops tombstoned ones.
//! * One writer at a time: [`IndexWriter`] holds an exclusive lock on `LOCK`; a
//!   second writer is refused. Readers take no lock and are never blocked: they
//!   read the manifest, then map segments (which are never modified in place).

pub mod padding;
pub mod segment;
mod writer;

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fingerprint::{CONFIG_ID, FRAMES_PER_SECOND, PeakPoint};
pub use segment::NewWork;
use segment::{Posting, Segment, SegmentWork};
pub use writer::IndexWriter;

pub const MANIFEST_FILE: &str = "MANIFEST.json";
const TMP_EXT: &str = "tmp";
/// Attempts to open a consistent snapshot when a concurrent compaction removes
/// a segment between reading the manifest and mapping it.
const OPEN_RETRIES: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "{path}: corrupt index: {reason}; run `earmark index verify` and restore from backup or re-register the works"
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "{path}: index format version {found}, this earmark reads version {expected}; re-register the works into a new data directory (or use the earmark release that wrote it)"
    )]
    FormatVersion {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error(
        "{path}: index built with fingerprint config {found:#010x}, this earmark uses {expected:#010x}; re-register the works into a new data directory"
    )]
    ConfigMismatch {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error(
        "{dir}: another earmark process is writing this index (lock held on {dir}/LOCK); retry when it has finished"
    )]
    Locked { dir: PathBuf },
    #[error("work '{work_id}' is already in the index")]
    DuplicateWork { work_id: String },
    #[error("work '{work_id}' is not in the index")]
    UnknownWork { work_id: String },
    #[error("work '{work_id}' is {duration_s:.0} s long, longer than a segment can address")]
    ReferenceTooLong { work_id: String, duration_s: f64 },
    #[error("{count} works in one segment exceeds the maximum of {max}")]
    TooManyWorks { count: usize, max: usize },
}

/// Writes `path` atomically: temp file, fsync, rename, fsync the directory.
pub(crate) fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<(), IndexError> {
    let io_err = |source| IndexError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension(TMP_EXT);
    let mut file = File::create(&tmp).map_err(io_err)?;
    write(&mut file).map_err(io_err)?;
    file.sync_all().map_err(io_err)?;
    drop(file);
    fs::rename(&tmp, path).map_err(io_err)?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), IndexError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| IndexError::Io {
            path: dir.to_path_buf(),
            source,
        })
}

/// One live segment as named by the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentEntry {
    pub file: String,
    pub postings: u64,
    /// Indices (in the segment's works table) of removed works.
    #[serde(default)]
    pub tombstones: Vec<u32>,
}

/// The manifest: the index's single source of truth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub config_id: u32,
    pub generation: u64,
    pub next_segment: u64,
    pub segments: Vec<SegmentEntry>,
}

impl Manifest {
    fn empty() -> Self {
        Self {
            format_version: segment::FORMAT_VERSION,
            config_id: CONFIG_ID,
            generation: 0,
            next_segment: 1,
            segments: Vec::new(),
        }
    }

    fn load(dir: &Path) -> Result<Self, IndexError> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Self::empty()),
            Err(source) => return Err(IndexError::Io { path, source }),
        };
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| IndexError::Corrupt {
                path: path.clone(),
                reason: format!("manifest: {e}"),
            })?;
        if manifest.format_version != segment::FORMAT_VERSION {
            return Err(IndexError::FormatVersion {
                path,
                found: manifest.format_version,
                expected: segment::FORMAT_VERSION,
            });
        }
        if manifest.config_id != CONFIG_ID {
            return Err(IndexError::ConfigMismatch {
                path,
                found: manifest.config_id,
                expected: CONFIG_ID,
            });
        }
        Ok(manifest)
    }

    fn store(&self, dir: &Path) -> Result<(), IndexError> {
        let path = dir.join(MANIFEST_FILE);
        let json = serde_json::to_vec_pretty(self).map_err(|e| IndexError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write_atomically(&path, |f| f.write_all(&json))
    }
}

/// Identifies a work inside an open index: (segment position, work position).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkRef {
    pub segment: u32,
    pub work: u32,
}

/// A read-only snapshot of the index.
#[derive(Debug)]
pub struct Index {
    dir: PathBuf,
    manifest: Manifest,
    segments: Vec<Segment>,
    /// Per segment, per work: removed?
    removed: Vec<Vec<bool>>,
    live: HashMap<String, WorkRef>,
    /// Per segment: the dense work slot of its first work (see [`Index::work_slot`]).
    slot_base: Vec<u32>,
    /// Work slots in all: every work of every segment, removed ones included.
    slot_count: usize,
}

/// Summary figures for `earmark index stats`.
#[derive(Debug, Clone, Serialize)]
pub struct IndexStats {
    pub generation: u64,
    pub config_id: String,
    pub segments: usize,
    pub live_works: usize,
    pub tombstoned_works: usize,
    pub postings: u64,
    pub bytes: u64,
    pub reference_hours: f64,
    pub megabytes_per_hour: f64,
}

impl Index {
    /// Opens the index in `dir` (an empty index if it does not exist yet).
    pub fn open(dir: &Path) -> Result<Self, IndexError> {
        let mut attempt = 0;
        loop {
            match Self::open_once(dir) {
                Err(IndexError::Io { source, .. })
                    if source.kind() == io::ErrorKind::NotFound && attempt < OPEN_RETRIES =>
                {
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn open_once(dir: &Path) -> Result<Self, IndexError> {
        let manifest = Manifest::load(dir)?;
        let mut segments = Vec::with_capacity(manifest.segments.len());
        let mut removed = Vec::with_capacity(manifest.segments.len());
        let mut live = HashMap::new();
        for (si, entry) in manifest.segments.iter().enumerate() {
            let seg = Segment::open(&dir.join(&entry.file), manifest.config_id)?;
            let mut gone = vec![false; seg.works.len()];
            for &t in &entry.tombstones {
                if let Some(slot) = gone.get_mut(t as usize) {
                    *slot = true;
                }
            }
            for (wi, work) in seg.works.iter().enumerate() {
                if !gone[wi] {
                    live.insert(
                        work.id.clone(),
                        WorkRef {
                            segment: si as u32,
                            work: wi as u32,
                        },
                    );
                }
            }
            removed.push(gone);
            segments.push(seg);
        }
        let mut slot_base = Vec::with_capacity(segments.len());
        let mut next_slot = 0u32;
        for seg in &segments {
            slot_base.push(next_slot);
            next_slot = next_slot.saturating_add(seg.works.len() as u32);
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
            segments,
            removed,
            live,
            slot_base,
            slot_count: next_slot as usize,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn generation(&self) -> u64 {
        self.manifest.generation
    }

    pub fn contains(&self, work_id: &str) -> bool {
        self.live.contains_key(work_id)
    }

    pub fn work_ids(&self) -> impl Iterator<Item = &str> {
        self.live.keys().map(String::as_str)
    }

    pub fn work(&self, r: WorkRef) -> Option<&SegmentWork> {
        self.segments
            .get(r.segment as usize)
            .and_then(|s| s.works.get(r.work as usize))
    }

    /// Appends the reference peaks of work `r` with frames in `[t_from, t_to)`.
    pub fn work_peaks(&self, r: WorkRef, t_from: u32, t_to: u32, out: &mut Vec<PeakPoint>) {
        if let Some(seg) = self.segments.get(r.segment as usize) {
            seg.peaks_in(r.work, t_from, t_to, out);
        }
    }

    /// Postings stored in all segments (tombstoned works included).
    pub fn posting_count(&self) -> u64 {
        self.segments.iter().map(Segment::posting_count).sum()
    }

    /// The live work registered as `id`.
    pub fn live_work(&self, id: &str) -> Option<WorkRef> {
        self.live.get(id).copied()
    }

    /// Every live work, in index order (segment, then work).
    pub fn live_works(&self) -> Vec<WorkRef> {
        let mut works: Vec<WorkRef> = self.live.values().copied().collect();
        works.sort_unstable();
        works
    }

    pub fn live_work_count(&self) -> usize {
        self.live.len()
    }

    /// Number of work slots: every work of every segment, removed ones included.
    pub fn work_slot_count(&self) -> usize {
        self.slot_count
    }

    /// Dense number of a work in `0..work_slot_count()`, for per-work arrays.
    pub fn work_slot(&self, r: WorkRef) -> usize {
        self.slot_base
            .get(r.segment as usize)
            .map_or(usize::MAX, |&base| base as usize + r.work as usize)
    }

    /// The work in `slot` (inverse of [`Index::work_slot`]).
    pub fn work_ref_of_slot(&self, slot: usize) -> Option<WorkRef> {
        let segment = self
            .slot_base
            .partition_point(|&base| base as usize <= slot)
            .checked_sub(1)?;
        let work = slot - self.slot_base[segment] as usize;
        (work < self.segments[segment].works.len()).then_some(WorkRef {
            segment: segment as u32,
            work: work as u32,
        })
    }

    /// Calls `visit` for every live posting of `hash`.
    pub fn lookup(&self, hash: u32, mut visit: impl FnMut(WorkRef, Posting)) {
        for (si, seg) in self.segments.iter().enumerate() {
            let removed = &self.removed[si];
            seg.lookup(hash, |p| {
                if !removed.get(p.work as usize).copied().unwrap_or(true) {
                    visit(
                        WorkRef {
                            segment: si as u32,
                            work: p.work,
                        },
                        p,
                    );
                }
            });
        }
    }

    pub fn stats(&self) -> IndexStats {
        let reference_s: f64 = self
            .live
            .values()
            .filter_map(|r| self.work(*r))
            .map(|w| w.duration_s)
            .sum();
        let bytes: u64 = self.segments.iter().map(Segment::file_bytes).sum();
        let hours = reference_s / 3600.0;
        IndexStats {
            generation: self.manifest.generation,
            config_id: format!("{:#010x}", self.manifest.config_id),
            segments: self.segments.len(),
            live_works: self.live.len(),
            tombstoned_works: self.removed.iter().flatten().filter(|r| **r).count(),
            postings: self.segments.iter().map(Segment::posting_count).sum(),
            bytes,
            reference_hours: hours,
            megabytes_per_hour: if hours > 0.0 {
                bytes as f64 / 1e6 / hours
            } else {
                0.0
            },
        }
    }

    /// Full verification of every segment (checksums, ordering, references).
    pub fn verify(&self) -> Result<(), IndexError> {
        for seg in &self.segments {
            seg.verify()?;
        }
        Ok(())
    }
}

/// Seconds of reference audio represented by a frame count.
pub fn frames_to_seconds(frames: u32) -> f64 {
    f64::from(frames) / FRAMES_PER_SECOND
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_config_is_refused_with_advice() {
        let dir = tempfile::tempdir().unwrap();
        let mut manifest = Manifest::empty();
        manifest.config_id = 7;
        manifest.store(dir.path()).unwrap();
        let err = Index::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("re-register"), "{err}");
    }
}

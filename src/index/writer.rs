//! The single writer of an index directory: lock, orphan cleanup, adding,
//! removing and compacting.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::segment::{self, NewWork, SegmentWork};
use super::{Index, IndexError, Manifest, SegmentEntry, TMP_EXT, WorkRef};
use crate::fingerprint::{CONFIG_ID, PeakPoint, Print};

const LOCK_FILE: &str = "LOCK";
const SEGMENT_EXT: &str = "seg";
/// First and longest pause between attempts of [`IndexWriter::open_waiting`].
const LOCK_POLL_FIRST: Duration = Duration::from_millis(10);
const LOCK_POLL_MAX: Duration = Duration::from_millis(200);

/// The single writer of an index directory.
#[derive(Debug)]
pub struct IndexWriter {
    dir: PathBuf,
    _lock: File,
}

impl IndexWriter {
    /// Takes the write lock (refusing if another process holds it) and removes
    /// leftovers of interrupted writes.
    pub fn open(dir: &Path) -> Result<Self, IndexError> {
        fs::create_dir_all(dir).map_err(|source| IndexError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| IndexError::Io {
                path: lock_path.clone(),
                source,
            })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(IndexError::Locked {
                    dir: dir.to_path_buf(),
                });
            }
            Err(fs::TryLockError::Error(source)) => {
                return Err(IndexError::Io {
                    path: lock_path,
                    source,
                });
            }
        }
        let writer = Self {
            dir: dir.to_path_buf(),
            _lock: lock,
        };
        writer.remove_orphans()?;
        Ok(writer)
    }

    /// [`IndexWriter::open`], waiting up to `wait` while another process
    /// holds the lock; then [`IndexError::Locked`].
    pub fn open_waiting(dir: &Path, wait: Duration) -> Result<Self, IndexError> {
        let deadline = Instant::now() + wait;
        let mut pause = LOCK_POLL_FIRST;
        loop {
            match Self::open(dir) {
                Err(IndexError::Locked { .. }) if Instant::now() < deadline => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    std::thread::sleep(pause.min(left));
                    pause = (pause * 2).min(LOCK_POLL_MAX);
                }
                other => return other,
            }
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The index's generation as its manifest names it now.
    pub fn generation(&self) -> Result<u64, IndexError> {
        Ok(Manifest::load(&self.dir)?.generation)
    }

    fn remove_orphans(&self) -> Result<(), IndexError> {
        let manifest = Manifest::load(&self.dir)?;
        let entries = fs::read_dir(&self.dir).map_err(|source| IndexError::Io {
            path: self.dir.clone(),
            source,
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().to_string();
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
            let referenced = manifest.segments.iter().any(|s| s.file == name);
            if ext == TMP_EXT || (ext == SEGMENT_EXT && !referenced) {
                segment::remove_file_if_exists(&path)?;
            }
        }
        Ok(())
    }

    /// Adds works in one new segment; returns the new generation.
    pub fn add_works(&self, works: &[NewWork<'_>]) -> Result<u64, IndexError> {
        let mut manifest = Manifest::load(&self.dir)?;
        let current = Index::open(&self.dir)?;
        let mut seen = std::collections::HashSet::new();
        for NewWork { work, .. } in works {
            if current.contains(&work.id) || !seen.insert(work.id.as_str()) {
                return Err(IndexError::DuplicateWork {
                    work_id: work.id.clone(),
                });
            }
        }
        drop(current);
        if works.is_empty() {
            return Ok(manifest.generation);
        }
        let file = format!("seg-{:08}.{SEGMENT_EXT}", manifest.next_segment);
        let postings = segment::write_segment(&self.dir.join(&file), CONFIG_ID, works)?;
        manifest.next_segment += 1;
        manifest.generation += 1;
        manifest.segments.push(SegmentEntry {
            file,
            postings,
            tombstones: Vec::new(),
        });
        manifest.store(&self.dir)?;
        Ok(manifest.generation)
    }

    /// Tombstones a work; returns the new generation.
    pub fn remove_work(&self, work_id: &str) -> Result<u64, IndexError> {
        let mut manifest = Manifest::load(&self.dir)?;
        let current = Index::open(&self.dir)?;
        let r = current
            .live
            .get(work_id)
            .copied()
            .ok_or_else(|| IndexError::UnknownWork {
                work_id: work_id.to_string(),
            })?;
        drop(current);
        manifest.segments[r.segment as usize]
            .tombstones
            .push(r.work);
        manifest.generation += 1;
        manifest.store(&self.dir)?;
        Ok(manifest.generation)
    }

    /// Merges all live postings into one segment and drops tombstoned works.
    pub fn compact(&self) -> Result<u64, IndexError> {
        let mut manifest = Manifest::load(&self.dir)?;
        let current = Index::open(&self.dir)?;
        let mut works: Vec<SegmentWork> = Vec::new();
        let mut prints: Vec<Vec<Print>> = Vec::new();
        let mut peaks: Vec<Vec<PeakPoint>> = Vec::new();
        let mut remap: HashMap<WorkRef, usize> = HashMap::new();
        for (si, seg) in current.segments.iter().enumerate() {
            for (wi, work) in seg.works.iter().enumerate() {
                if !current.removed[si][wi] {
                    let r = WorkRef {
                        segment: si as u32,
                        work: wi as u32,
                    };
                    remap.insert(r, works.len());
                    works.push(work.clone());
                    prints.push(Vec::new());
                    let mut run = Vec::new();
                    seg.peaks_in(wi as u32, 0, u32::MAX, &mut run);
                    peaks.push(run);
                }
            }
            seg.for_each_posting(|hash, p| {
                let r = WorkRef {
                    segment: si as u32,
                    work: p.work,
                };
                if let Some(&i) = remap.get(&r) {
                    prints[i].push(Print {
                        hash,
                        t_frame: p.t_frame,
                        f_half_bins: p.f_half_bins,
                        warp: 0,
                    });
                }
            });
        }
        let old_files: Vec<String> = manifest.segments.iter().map(|s| s.file.clone()).collect();
        drop(current);
        let mut new_segments = Vec::new();
        if !works.is_empty() {
            let file = format!("seg-{:08}.{SEGMENT_EXT}", manifest.next_segment);
            let entries: Vec<NewWork<'_>> = works
                .iter()
                .zip(&prints)
                .zip(&peaks)
                .map(|((work, prints), peaks)| NewWork {
                    work,
                    prints,
                    peaks,
                })
                .collect();
            let postings = segment::write_segment(&self.dir.join(&file), CONFIG_ID, &entries)?;
            manifest.next_segment += 1;
            new_segments.push(SegmentEntry {
                file,
                postings,
                tombstones: Vec::new(),
            });
        }
        manifest.segments = new_segments;
        manifest.generation += 1;
        manifest.store(&self.dir)?;
        for file in old_files {
            segment::remove_file_if_exists(&self.dir.join(file))?;
        }
        Ok(manifest.generation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn work(id: &str) -> SegmentWork {
        SegmentWork {
            id: id.into(),
            duration_s: 10.0,
            prints: 2,
        }
    }

    fn prints(seed: u32) -> Vec<Print> {
        (0..50)
            .map(|i| Print {
                hash: (seed * 1_000_003 + i * 7919) % (1 << 20),
                t_frame: i * 3,
                f_half_bins: 9,
                warp: 0,
            })
            .collect()
    }

    fn add(writer: &IndexWriter, id: &str, prints: &[Print]) -> Result<u64, IndexError> {
        let work = work(id);
        let peaks: Vec<PeakPoint> = prints
            .iter()
            .map(|p| PeakPoint {
                t_frame: p.t_frame,
                f_half_bins: p.f_half_bins,
            })
            .collect();
        writer.add_works(&[NewWork {
            work: &work,
            prints,
            peaks: &peaks,
        }])
    }

    fn hits(index: &Index, hash: u32) -> Vec<String> {
        let mut out = Vec::new();
        index.lookup(hash, |r, _| out.push(index.work(r).unwrap().id.clone()));
        out
    }

    #[test]
    fn add_remove_compact_cycle() {
        let dir = tempfile::tempdir().unwrap();
        let writer = IndexWriter::open(dir.path()).unwrap();
        let (pa, pb) = (prints(1), prints(2));
        add(&writer, "a", &pa).unwrap();
        add(&writer, "b", &pb).unwrap();
        assert!(matches!(
            add(&writer, "a", &pa),
            Err(IndexError::DuplicateWork { .. })
        ));
        let index = Index::open(dir.path()).unwrap();
        assert_eq!(hits(&index, pa[0].hash), vec!["a"]);
        assert_eq!(index.live_work_count(), 2);

        writer.remove_work("a").unwrap();
        let index = Index::open(dir.path()).unwrap();
        assert!(
            hits(&index, pa[0].hash).is_empty(),
            "tombstone honoured at once"
        );
        assert_eq!(hits(&index, pb[0].hash), vec!["b"]);

        let generation = writer.compact().unwrap();
        let index = Index::open(dir.path()).unwrap();
        assert_eq!(index.generation(), generation);
        assert_eq!(index.stats().segments, 1);
        assert_eq!(index.stats().tombstoned_works, 0);
        assert_eq!(hits(&index, pb[5].hash), vec!["b"]);
        index.verify().unwrap();
        // Reference peaks survive compaction.
        let mut peaks = Vec::new();
        index.lookup(pb[0].hash, |r, _| {
            if peaks.is_empty() {
                index.work_peaks(r, 0, u32::MAX, &mut peaks);
            }
        });
        assert_eq!(peaks.len(), pb.len());
        assert_eq!(peaks[3].t_frame, pb[3].t_frame);
        // Re-adding a removed work is allowed.
        add(&writer, "a", &pa).unwrap();
        assert_eq!(
            hits(&Index::open(dir.path()).unwrap(), pa[0].hash),
            vec!["a"]
        );
    }

    #[test]
    fn second_writer_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = IndexWriter::open(dir.path()).unwrap();
        assert!(matches!(
            IndexWriter::open(dir.path()),
            Err(IndexError::Locked { .. })
        ));
        assert!(matches!(
            IndexWriter::open_waiting(dir.path(), Duration::from_millis(50)),
            Err(IndexError::Locked { .. })
        ));
        // A writer waiting for the lock gets it once the holder has gone.
        let waiting = {
            let dir = dir.path().to_owned();
            std::thread::spawn(move || IndexWriter::open_waiting(&dir, Duration::from_secs(60)))
        };
        drop(first);
        let second = waiting.join().unwrap().unwrap();
        assert_eq!(second.generation().unwrap(), 0);
    }

    #[test]
    fn interrupted_write_leaves_previous_state() {
        let dir = tempfile::tempdir().unwrap();
        {
            let writer = IndexWriter::open(dir.path()).unwrap();
            add(&writer, "a", &prints(1)).unwrap();
        }
        // Simulate a crash mid-write: a half-written segment and manifest temp file.
        fs::write(dir.path().join("seg-00000009.seg.tmp"), b"half").unwrap();
        fs::write(dir.path().join("seg-00000009.seg"), b"orphan").unwrap();
        fs::write(dir.path().join("MANIFEST.json.tmp"), b"{ broken").unwrap();
        let index = Index::open(dir.path()).unwrap();
        assert_eq!(index.live_work_count(), 1);
        let writer = IndexWriter::open(dir.path()).unwrap();
        assert!(!dir.path().join("seg-00000009.seg").exists());
        add(&writer, "b", &prints(2)).unwrap();
        assert_eq!(Index::open(dir.path()).unwrap().live_work_count(), 2);
    }
}

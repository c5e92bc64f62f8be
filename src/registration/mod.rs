//! Registering works: reference recordings are fingerprinted, written to the
//! index and entered in the registry, and the two are kept consistent.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::data_dir::DataDir;
use crate::decode::{AudioInfo, DecodeLimits};
use crate::error::EngineError;
use crate::fingerprint::audio::fingerprint_file;
use crate::fingerprint::{Fingerprint, Side};
use crate::index::segment::SegmentWork;
use crate::index::{IndexError, IndexWriter, NewWork};
use crate::registry::WorkId;

/// Checks a user-given work id by the one rule of [`WorkId`].
pub fn validate_work_id(work_id: &str) -> Result<WorkId, EngineError> {
    WorkId::parse(work_id).map_err(|err| EngineError::InvalidWorkId {
        work_id: work_id.to_owned(),
        reason: err.reason,
    })
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

/// Refuses a reference that cannot be matched, with its real reason: too
/// short, silent (no spectral peaks at all), or too few peaks to hash.
pub fn check_reference(
    input: &str,
    fingerprint: &Fingerprint,
    info: &AudioInfo,
) -> Result<(), EngineError> {
    let (input, duration_s) = (input.to_owned(), info.duration_s);
    if duration_s < MIN_REFERENCE_S {
        return Err(EngineError::TooShort { input, duration_s });
    }
    if fingerprint.peaks.is_empty() {
        return Err(EngineError::Silent { input, duration_s });
    }
    if fingerprint.prints.is_empty() {
        return Err(EngineError::TooFewPeaks {
            input,
            duration_s,
            peaks: fingerprint.peaks.len(),
        });
    }
    Ok(())
}

/// Decodes and fingerprints a reference recording.
pub fn prepare_work(
    work_id: &str,
    path: &Path,
    limits: &DecodeLimits,
) -> Result<PreparedWork, EngineError> {
    validate_work_id(work_id)?;
    let (fingerprint, info) = fingerprint_file(path, limits, Side::Reference)?;
    check_reference(&path.display().to_string(), &fingerprint, &info)?;
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
    let refs: Vec<&PreparedWork> = works.iter().collect();
    commit_work_refs(writer, &refs)
}

/// [`commit_works`] for borrowed works.
fn commit_work_refs(writer: &IndexWriter, works: &[&PreparedWork]) -> Result<u64, EngineError> {
    let summaries: Vec<SegmentWork> = works
        .iter()
        .map(|w| SegmentWork {
            id: w.work_id.clone(),
            duration_s: w.info.duration_s,
            prints: w.fingerprint.prints.len() as u64,
        })
        .collect();
    let entries: Vec<NewWork<'_>> = works
        .iter()
        .zip(&summaries)
        .map(|(w, work)| NewWork {
            work,
            prints: &w.fingerprint.prints,
            peaks: &w.fingerprint.peaks,
        })
        .collect();
    Ok(writer.add_works(&entries)?)
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
    ///
    /// Refuses ([`EngineError::IndexWithoutRegistry`]) a data directory whose
    /// index holds works but which has no registry at all, rather than letting
    /// reconciliation remove every fingerprint in it.
    pub fn open(data: &DataDir) -> Result<Self, EngineError> {
        std::fs::create_dir_all(&data.root).map_err(|source| EngineError::ReadFile {
            path: data.root.clone(),
            source,
        })?;
        let writer = data.index_writer()?;
        let registry = data.open_registry()?;
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

    /// Registers several prepared works with the guarantees of [`Catalog::register`]:
    /// their fingerprints go into **one** new index segment (so a large import
    /// does not create a segment per work), then each work gets its registry
    /// row, consents and audit entry in its own transaction. A work whose
    /// registry write fails has its fingerprints removed again; a crash part-way
    /// leaves fingerprints without works, which [`Catalog::open`] removes.
    ///
    /// Returns one result per item, in order. Items whose id is already
    /// registered (or repeated in the batch) fail with
    /// [`EngineError::AlreadyRegistered`] and are not written. The outer error
    /// means the index segment could not be written and nothing was registered.
    pub fn register_batch(
        &self,
        items: &[Registration],
        actor: &str,
    ) -> Result<Vec<Result<crate::registry::Work, EngineError>>, EngineError> {
        let mut taken = self.registry.work_ids()?;
        let refused: Vec<Option<EngineError>> = items
            .iter()
            .map(|item| {
                if item.metadata.id.as_str() != item.work.work_id {
                    Some(EngineError::MismatchedIds {
                        registry_id: item.metadata.id.to_string(),
                        index_id: item.work.work_id.clone(),
                    })
                } else if !taken.insert(item.work.work_id.clone()) {
                    Some(EngineError::AlreadyRegistered {
                        work_id: item.work.work_id.clone(),
                    })
                } else {
                    None
                }
            })
            .collect();
        let pending: Vec<&PreparedWork> = items
            .iter()
            .zip(&refused)
            .filter(|(_, refusal)| refusal.is_none())
            .map(|(item, _)| &item.work)
            .collect();
        commit_work_refs(&self.writer, &pending)?;
        Ok(items
            .iter()
            .zip(refused)
            .map(|(item, refusal)| match refusal {
                Some(err) => Err(err),
                None => self
                    .registry
                    .add_work(item.metadata.clone(), &item.consents, actor)
                    .map_err(|err| {
                        // Compensate; if this fails too, reconcile() will on next open.
                        let _ = self.writer.remove_work(&item.work.work_id);
                        err.into()
                    }),
            })
            .collect())
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

/// A fingerprinted work with its registry entry, for [`Catalog::register_batch`].
#[derive(Debug, Clone)]
pub struct Registration {
    pub work: PreparedWork,
    pub metadata: crate::registry::NewWork,
    pub consents: Vec<crate::registry::NewConsent>,
}

/// Id of the fingerprint configuration, as recorded with each registered work.
pub fn fingerprint_config_id() -> String {
    format!("{:#010x}", crate::fingerprint::CONFIG_ID)
}

/// The reference-audio summary the registry keeps for a prepared work.
pub fn reference_summary(
    work: &PreparedWork,
    audio_sha256: &str,
) -> crate::registry::ReferenceAudio {
    crate::registry::ReferenceAudio {
        duration_s: work.info.duration_s,
        fingerprint_config: fingerprint_config_id(),
        audio_sha256: audio_sha256.to_owned(),
        source_file: work.source.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::sha256_file;

    #[test]
    fn work_ids_are_validated() {
        assert!(validate_work_id("wesnoth-battle_01:v2.0").is_ok());
        assert!(validate_work_id("").is_err());
        assert!(validate_work_id("has space").is_err());
        assert!(validate_work_id("../etc/passwd").is_err());
        assert!(validate_work_id(&"x".repeat(129)).is_err());
    }

    fn clip(id: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("test-audio/refs/{id}.ogg"))
    }

    fn registration(id: &str, clip_id: &str) -> Registration {
        let work = prepare_work(id, &clip(clip_id), &DecodeLimits::default()).unwrap();
        let sha = sha256_file(&work.source).unwrap();
        let metadata = crate::registry::NewWork {
            id: crate::registry::WorkId::parse(id).unwrap(),
            title: id.to_owned(),
            artists: Vec::new(),
            isrc: None,
            iswc: None,
            holder: "holder".to_owned(),
            holder_isni: None,
            reference: reference_summary(&work, &sha),
        };
        Registration {
            work,
            metadata,
            consents: Vec::new(),
        }
    }

    /// A mono 16-bit PCM WAV of `seconds` of digital silence.
    fn silent_wav(seconds: u32) -> Vec<u8> {
        let rate_hz: u32 = 8000;
        let data_len = seconds * rate_hz * 2;
        let mut out = Vec::new();
        out.extend_from_slice(b"RIFF");
        out.extend_from_slice(&(36 + data_len).to_le_bytes());
        out.extend_from_slice(b"WAVEfmt ");
        for v in [16u32.to_le_bytes(), [1, 0, 1, 0]] {
            out.extend_from_slice(&v);
        }
        out.extend_from_slice(&rate_hz.to_le_bytes());
        out.extend_from_slice(&(rate_hz * 2).to_le_bytes());
        out.extend_from_slice(&[2, 0, 16, 0]);
        out.extend_from_slice(b"data");
        out.extend_from_slice(&data_len.to_le_bytes());
        out.resize(out.len() + data_len as usize, 0);
        out
    }

    #[test]
    fn a_silent_reference_is_refused_as_silent_not_short() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("silence.wav");
        std::fs::write(&path, silent_wav(10)).unwrap();
        let err = prepare_work("silence", &path, &DecodeLimits::default()).unwrap_err();
        assert!(matches!(err, EngineError::Silent { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("silent") && text.contains("10.00 s"),
            "{text}"
        );
        std::fs::write(&path, silent_wav(0)).unwrap();
        let short = prepare_work("silence", &path, &DecodeLimits::default());
        assert!(!matches!(short, Err(EngineError::Silent { .. }) | Ok(_)));
    }

    #[test]
    fn register_batch_writes_one_segment_and_refuses_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path());
        let catalog = Catalog::open(&data).unwrap();
        let first = registration("a", "wesnoth-heroes-rite");
        catalog
            .register_batch(std::slice::from_ref(&first), "t")
            .unwrap()
            .remove(0)
            .unwrap();
        let mut mismatched = registration("c", "wesnoth-northerners");
        mismatched.work.work_id = "other".to_owned();
        let items = [
            registration("b", "fof-sectoid-war-of-freedom"),
            first,
            registration("b", "wesnoth-northerners"),
            mismatched,
        ];
        let results = catalog.register_batch(&items, "t").unwrap();
        assert_eq!(results[0].as_ref().unwrap().id.as_str(), "b");
        assert!(matches!(
            results[1],
            Err(EngineError::AlreadyRegistered { .. })
        ));
        assert!(matches!(
            results[2],
            Err(EngineError::AlreadyRegistered { .. })
        ));
        assert!(matches!(results[3], Err(EngineError::MismatchedIds { .. })));
        let stats = data.open_index().unwrap().stats();
        assert_eq!((stats.segments, stats.live_works), (2, 2));
        let mut ids = catalog
            .registry
            .work_ids()
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>();
        ids.sort();
        assert_eq!(ids, ["a", "b"]);
    }

    #[test]
    fn fingerprints_left_by_a_crash_are_removed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path());
        let catalog = Catalog::open(&data).unwrap();
        let kept = registration("kept", "wesnoth-heroes-rite");
        catalog
            .register(&kept.work, kept.metadata.clone(), &[], "t")
            .unwrap();
        // The crash window: fingerprints committed, registry row never written.
        let orphan = registration("orphan", "wesnoth-northerners");
        commit_works(&catalog.writer, std::slice::from_ref(&orphan.work)).unwrap();
        drop(catalog);
        assert!(data.open_index().unwrap().contains("orphan"));
        let catalog = Catalog::open(&data).unwrap();
        let index = data.open_index().unwrap();
        assert!(!index.contains("orphan") && index.contains("kept"));
        assert!(catalog.reconcile().unwrap().is_empty());
        // The id can be registered properly now.
        catalog
            .register(&orphan.work, orphan.metadata, &[], "t")
            .unwrap();
    }

    #[test]
    fn registry_is_not_created_next_to_an_index_with_works() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path());
        let legacy = registration("legacy", "wesnoth-heroes-rite");
        commit_works(
            &data.index_writer().unwrap(),
            std::slice::from_ref(&legacy.work),
        )
        .unwrap();
        assert!(matches!(
            Catalog::open(&data),
            Err(EngineError::IndexWithoutRegistry { works: 1, .. })
        ));
        assert!(data.open_registry().is_err());
        assert!(!data.has_registry());
        assert!(data.open_index().unwrap().contains("legacy"));
    }
}

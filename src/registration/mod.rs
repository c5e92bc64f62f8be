//! Registering works: reference recordings are fingerprinted, written to the
//! index and entered in the registry, and the two are kept consistent.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rayon::prelude::*;

use crate::data_dir::DataDir;
use crate::decode::{AudioInfo, DecodeLimits};
use crate::error::EngineError;
use crate::fingerprint::audio::fingerprint_file;
use crate::fingerprint::{Fingerprint, Side};
use crate::index::segment::SegmentWork;
use crate::index::{Index, IndexError, IndexWriter, NewWork};
use crate::registry::{Registry, RegistryLocation, WorkId};

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

/// How long a write waits for another process's index write lock in a
/// shared registry (a registration or import in progress elsewhere).
pub const INDEX_WRITE_LOCK_WAIT: Duration = Duration::from_secs(30);
/// How long a write on a shared index waits for the index's own file lock
/// (`index/LOCK`, held by a command-line writer on the same machine).
pub const INDEX_FILE_LOCK_WAIT: Duration = Duration::from_secs(10);

/// The writable catalog of a data directory: the fingerprint index and the
/// consent registry, kept consistent.
///
/// The **registry is the source of truth** for which works exist. Registering
/// writes the fingerprints first (a new index segment, atomically), then the
/// registry row with its consent records and audit entry (one transaction,
/// which also publishes the index's new generation,
/// [`crate::registry::index_generation`]); if the registry write fails the
/// index entry is removed again. Removing goes the other way: registry
/// first, then a tombstone. A crash between the two steps leaves
/// fingerprints without a work, which is never visible: [`Catalog::open`]
/// tombstones any indexed work the registry does not know (with a shared
/// index, so does every write before its own change), and screening flags,
/// never allows, a match of a work the registry does not hold.
///
/// **Who may write.** With a SQLite registry the catalog holds the index
/// writer (the file lock on `index/LOCK`) for its whole life: one writing
/// process per data directory. With a registry on PostgreSQL, replicas on
/// several machines share one index directory, so no process holds the
/// writer for long: each write (register, import, remove, compact, and the
/// reconciliation at open) first takes the registry's index write lock
/// ([`Registry::lock_index_writes`]), then the index file lock, writes,
/// publishes the new generation, and lets both go. Reconciliation runs under
/// the same lock, so a process starting while another one registers never
/// mistakes the new work's fingerprints for leftovers of a crash.
pub struct Catalog {
    pub data: DataDir,
    pub registry: Registry,
    writer: Writer,
}

/// Who holds the index writer.
enum Writer {
    /// Held for the catalog's life (SQLite registry).
    Held(IndexWriter),
    /// Taken for each write under the registry's index write lock (shared
    /// registry).
    PerWrite,
}

impl Catalog {
    /// Opens the registry, takes the index write lock (for the catalog's
    /// life with SQLite; for the reconciliation alone with PostgreSQL) and
    /// reconciles the two.
    ///
    /// Refuses ([`EngineError::IndexWithoutRegistry`]) a data directory whose
    /// index holds works but which has no registry at all, rather than letting
    /// reconciliation remove every fingerprint in it.
    pub fn open(data: &DataDir) -> Result<Self, EngineError> {
        std::fs::create_dir_all(&data.root).map_err(|source| EngineError::ReadFile {
            path: data.root.clone(),
            source,
        })?;
        let writer = match data.registry {
            RegistryLocation::DataDir => Writer::Held(data.index_writer()?),
            RegistryLocation::Postgres(_) => Writer::PerWrite,
        };
        let registry = data.open_registry()?;
        let catalog = Self {
            data: data.clone(),
            writer,
            registry,
        };
        catalog.reconcile()?;
        Ok(catalog)
    }

    /// Runs `f` with the index writer, then raises the registry's published
    /// index generation to the index's (whether `f` succeeded or not: a
    /// failed write may have changed the index before failing).
    fn write_index<T>(
        &self,
        f: impl FnOnce(&IndexWriter) -> Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        self.write_index_cleaning(true, f)
    }

    /// [`Catalog::write_index`]; on a shared index, first removes leftovers
    /// of a writer that died half-way if `clean`.
    fn write_index_cleaning<T>(
        &self,
        clean: bool,
        f: impl FnOnce(&IndexWriter) -> Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        match &self.writer {
            Writer::Held(writer) => {
                let value = f(writer);
                self.publish(writer)?;
                value
            }
            Writer::PerWrite => {
                let mut lock = self.registry.lock_index_writes(INDEX_WRITE_LOCK_WAIT)?;
                let writer =
                    IndexWriter::open_waiting(&self.data.index_dir(), INDEX_FILE_LOCK_WAIT)?;
                // Leftovers of a writer that died half-way (on any replica)
                // go first, so a retried registration is not refused as a
                // duplicate of its own fingerprints.
                let value = if clean {
                    self.remove_orphans(&writer).and_then(|_| f(&writer))
                } else {
                    f(&writer)
                };
                // Publishing while the lock is held: no other writer has
                // changed the index since.
                lock.check()?;
                self.publish(&writer)?;
                drop(writer);
                drop(lock);
                value
            }
        }
    }

    fn publish(&self, writer: &IndexWriter) -> Result<(), EngineError> {
        let generation = writer.generation()?;
        self.registry.publish_index_generation(generation)?;
        Ok(())
    }

    /// Tombstones indexed works the registry does not hold (left by a crash).
    /// Returns their ids.
    pub fn reconcile(&self) -> Result<Vec<String>, EngineError> {
        self.write_index_cleaning(false, |writer| self.remove_orphans(writer))
    }

    fn remove_orphans(&self, writer: &IndexWriter) -> Result<Vec<String>, EngineError> {
        let registered = self.registry.work_ids()?;
        let index = Index::open(writer.dir())?;
        let mut orphans: Vec<String> = index
            .work_ids()
            .filter(|id| !registered.contains(*id))
            .map(str::to_string)
            .collect();
        drop(index);
        orphans.sort();
        for id in &orphans {
            tracing::warn!(work_id = %id, "removing fingerprints of a work the registry does not hold (interrupted registration)");
            writer.remove_work(id)?;
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
        self.write_index(|writer| {
            if self.registry.work_ids()?.contains(&work.work_id) {
                return Err(EngineError::AlreadyRegistered {
                    work_id: work.work_id.clone(),
                });
            }
            let generation = commit_works(writer, std::slice::from_ref(work))?;
            match self
                .registry
                .add_work_indexed(metadata, consents, actor, generation)
            {
                Ok(registered) => Ok(registered),
                Err(err) => {
                    // Compensate; if this fails too, reconcile() will on next open.
                    let _ = writer.remove_work(&work.work_id);
                    Err(err.into())
                }
            }
        })
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
        self.write_index(|writer| {
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
            let generation = commit_work_refs(writer, &pending)?;
            Ok(items
                .iter()
                .zip(refused)
                .map(|(item, refusal)| match refusal {
                    Some(err) => Err(err),
                    None => self
                        .registry
                        .add_work_indexed(item.metadata.clone(), &item.consents, actor, generation)
                        .map_err(|err| {
                            // Compensate; if this fails too, reconcile() will on next open.
                            let _ = writer.remove_work(&item.work.work_id);
                            err.into()
                        }),
                })
                .collect())
        })
    }

    /// Removes a work from the registry, then its fingerprints.
    pub fn remove(&self, work_id: &str, actor: &str) -> Result<(), EngineError> {
        self.write_index(|writer| {
            self.registry.remove_work(work_id, actor)?;
            match writer.remove_work(work_id) {
                Ok(_) | Err(IndexError::UnknownWork { .. }) => Ok(()),
                Err(err) => Err(err.into()),
            }
        })
    }

    /// Merges the index's segments into one ([`IndexWriter::compact`]);
    /// returns the new generation.
    pub fn compact(&self) -> Result<u64, EngineError> {
        self.write_index(|writer| Ok(writer.compact()?))
    }

    /// Runs `f` with the index writer under the catalog's write rules, then
    /// publishes the index's generation; for tests that write the index
    /// alone (an interrupted registration).
    #[cfg(test)]
    fn with_writer<T>(
        &self,
        f: impl FnOnce(&IndexWriter) -> Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        self.write_index(f)
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
mod tests;

//! The engine: one data directory, its index, and the operations the CLI and the
//! service share (fingerprint a file, register works, identify submissions).
//!
//! Data directory layout: `index/` (manifest + segments), `registry.sqlite`.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::decode::{self, AudioInfo, DecodeError, DecodeLimits};
use crate::fingerprint::{Fingerprint, Print, SAMPLE_RATE_HZ, Side, StreamingFingerprinter};
use crate::index::segment::SegmentWork;
use crate::index::{Index, IndexError, IndexWriter, NewWork};
use crate::matcher::{self, HitGatherer, Match, MatcherConfig};

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

/// Fingerprints a file as it decodes (bounded memory, parallel blocks).
pub fn fingerprint_file(
    path: &Path,
    limits: &DecodeLimits,
    side: Side,
) -> Result<(Fingerprint, AudioInfo), EngineError> {
    fingerprint_file_observed(path, limits, side, &mut |_| {})
}

/// Passes the prints made since the last call to `observe`, if there are any.
struct PrintFeed<'o> {
    observe: &'o mut dyn FnMut(&[Print]),
    seen: usize,
}

impl PrintFeed<'_> {
    fn feed(&mut self, prints: &[Print]) {
        if let Some(new) = prints.get(self.seen..).filter(|new| !new.is_empty()) {
            (self.observe)(new);
            self.seen = prints.len();
        }
    }
}

/// [`fingerprint_file`] that hands each batch of prints to `observe` as soon
/// as it is made (every print once, in the order of the returned
/// fingerprint), while the rest of the file is still decoding.
pub fn fingerprint_file_observed(
    path: &Path,
    limits: &DecodeLimits,
    side: Side,
    observe: &mut dyn FnMut(&[Print]),
) -> Result<(Fingerprint, AudioInfo), EngineError> {
    let mut feed = PrintFeed { observe, seen: 0 };
    if rayon::current_thread_index().is_some() {
        // On a pool worker (scan, service): items already run in parallel.
        let mut fingerprinter = StreamingFingerprinter::new(side);
        let info = decode::decode_file_stream(path, limits, SAMPLE_RATE_HZ, |block| {
            fingerprinter.push(block);
            feed.feed(fingerprinter.prints());
        })?;
        let fingerprint = fingerprinter.finish();
        feed.feed(&fingerprint.prints);
        return Ok((fingerprint, info));
    }
    // One file on a plain thread (the command line): decode on a second thread
    // while this one fingerprints what has arrived, so the two overlap on two
    // cores instead of taking turns. The queue bounds what is buffered.
    let (sender, receiver) = std::sync::mpsc::sync_channel::<Vec<f32>>(PIPELINE_QUEUE_BLOCKS);
    std::thread::scope(|scope| {
        let decoder = scope.spawn(move || {
            // Decoded packets are small (a few hundred samples at 8 kHz): they
            // are sent in chunks so the two threads do not wake each other for
            // every packet. A send fails only once the receiver is gone, and it
            // is not dropped before the decoder is joined.
            let mut chunk: Vec<f32> = Vec::with_capacity(PIPELINE_CHUNK_SAMPLES);
            let info = decode::decode_file_stream(path, limits, SAMPLE_RATE_HZ, |block| {
                chunk.extend_from_slice(block);
                if chunk.len() >= PIPELINE_CHUNK_SAMPLES {
                    let full =
                        std::mem::replace(&mut chunk, Vec::with_capacity(PIPELINE_CHUNK_SAMPLES));
                    let _ = sender.send(full);
                }
            });
            if !chunk.is_empty() {
                let _ = sender.send(chunk);
            }
            info
        });
        let mut fingerprinter = StreamingFingerprinter::pipelined(side);
        for block in &receiver {
            fingerprinter.extend(&block);
            // Whatever queued up while the last blocks were fingerprinted is
            // taken at once, so a backlog is worked off in parallel.
            while let Ok(more) = receiver.try_recv() {
                fingerprinter.extend(&more);
            }
            fingerprinter.process_ready();
            feed.feed(fingerprinter.prints());
        }
        let info = decoder
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
        let fingerprint = fingerprinter.finish();
        feed.feed(&fingerprint.prints);
        Ok((fingerprint, info))
    })
}

/// Chunks queued between the decoding thread and the fingerprinter.
const PIPELINE_QUEUE_BLOCKS: usize = 16;
/// Samples per chunk sent from the decoding thread (2 s at 8 kHz).
const PIPELINE_CHUNK_SAMPLES: usize = 2 * SAMPLE_RATE_HZ as usize;

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
    // The prints are looked up as they are made, while the rest of the file
    // decodes: only the last block's lookups are left for the end.
    let mut gatherer = HitGatherer::new(index);
    let (fingerprint, info) =
        fingerprint_file_observed(path, limits, Side::Query, &mut |prints| {
            gatherer.add(prints)
        })?;
    Ok(Identification {
        duration_s: info.duration_s,
        matches: matcher::find_matches_gathered(index, &fingerprint, gatherer, config),
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

    /// Path of the registry database.
    pub fn registry_path(&self) -> PathBuf {
        self.root.join(crate::registry::REGISTRY_FILE)
    }

    /// Whether the registry database exists (without creating it).
    pub fn has_registry(&self) -> bool {
        self.registry_path().is_file()
    }

    /// Opens (creating if needed) the registry of this data directory, after
    /// [`DataDir::check_registry_present`]: a registry is never created next to
    /// an index that already holds works.
    pub fn open_registry(&self) -> Result<crate::registry::Registry, EngineError> {
        self.check_registry_present()?;
        Ok(crate::registry::Registry::open(&self.root)?)
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

    #[test]
    fn identify_looks_up_while_decoding_and_matches_as_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path());
        let limits = DecodeLimits::default();
        let ids = [
            "wesnoth-heroes-rite",
            "wesnoth-northerners",
            "fof-muldjord-armygeddon",
        ];
        let works: Vec<PreparedWork> = ids
            .iter()
            .map(|id| prepare_work(id, &clip(id), &limits).unwrap())
            .collect();
        commit_works(&data.index_writer().unwrap(), &works).unwrap();
        let index = data.open_index().unwrap();
        let config = MatcherConfig::default();
        let mix =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("test-audio/submissions/mix-two-works.ogg");
        let (fingerprint, _) = fingerprint_file(&mix, &limits, Side::Query).unwrap();
        let after = matcher::find_matches(&index, &fingerprint, &config);
        let found: Vec<&str> = after.iter().map(|m| m.work_id.as_str()).collect();
        assert_eq!(found, ["wesnoth-northerners", "fof-muldjord-armygeddon"]);
        // The pipelined path (this thread) and the pool-worker path (scan,
        // service) both feed the lookups as they go.
        let pipelined = identify_file(&index, &mix, &limits, &config).unwrap();
        assert_eq!(pipelined.matches, after);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let on_worker = pool
            .install(|| identify_file(&index, &mix, &limits, &config))
            .unwrap();
        assert_eq!(on_worker.matches, after);
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

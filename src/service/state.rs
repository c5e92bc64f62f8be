//! Shared server state: configuration, the opened catalog (once ready), the
//! current index snapshot, the bounded CPU pool and the load-shedding gate.
//!
//! * The server owns the data directory's one [`Catalog`] (registry, and with
//!   a SQLite registry the index writer lock for the server's life; with a
//!   registry on PostgreSQL the writer is taken per write under the
//!   registry's index write lock, so replicas can share the index). Writes
//!   through it are serialised by a mutex.
//! * Reads (key checks, verdicts, registry queries) use a second registry
//!   connection, so they never wait for a long write's transaction; SQLite's WAL
//!   mode makes a committed write visible to the next read.
//! * The index is an `Arc<Index>` snapshot, re-opened (cheap: mmap) when the
//!   manifest file changes, whether by our own writes or another process's.
//!   Before each verdict, [`crate::screening::current_index`] compares its
//!   generation with the one the registry vouches for and re-opens it, or
//!   waits up to `index_sync_timeout` for it, when it is behind (a shared
//!   file system reporting the replaced manifest late); still behind, the
//!   request fails `UNAVAILABLE` instead of getting a verdict.
//! * CPU work (decode, fingerprint, match, policy) runs on a dedicated rayon pool
//!   of fixed size; at most `max_in_flight` such jobs are admitted at once and
//!   the rest are shed with `RESOURCE_EXHAUSTED` instead of queueing forever.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ServiceError;
use crate::data_dir::DataDir;
use crate::index::{Index, IndexError, MANIFEST_FILE};
use crate::matcher::MatcherConfig;
use crate::policy::PolicyConfig;
use crate::registration::Catalog;
use crate::registry::Registry;

/// Default maximum upload per request (encoded audio or reference file).
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 256 * 1024 * 1024;
/// Default maximum audio duration per request (seconds).
pub const DEFAULT_MAX_AUDIO_S: f64 = 2.0 * 3600.0;
/// Default maximum size of one received gRPC message (chunks should be 64 KiB–1 MiB).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// Default maximum size of one sent gRPC message.
pub const DEFAULT_MAX_SEND_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// Default concurrent requests per connection (more are shed).
pub const DEFAULT_PER_CONNECTION: usize = 16;
/// CPU jobs admitted per pool thread (running + queued) before shedding.
pub const DEFAULT_IN_FLIGHT_PER_THREAD: usize = 4;
/// Default server-side cap on any request's duration.
pub const DEFAULT_MAX_REQUEST_TIME: Duration = Duration::from_secs(600);
/// Default time an upload may deliver nothing before it is cut.
pub const DEFAULT_UPLOAD_IDLE: Duration = Duration::from_secs(30);
/// Default time an upload may take in all before it is cut (a trickle).
pub const DEFAULT_MAX_UPLOAD_TIME: Duration = Duration::from_secs(300);
/// Uploads received at once per admitted CPU job (see `upload_limits`).
pub const DEFAULT_UPLOADS_PER_IN_FLIGHT: usize = 2;
/// Prints per second of audio accepted by `ScreenFingerprints` (query prints
/// run far below this; the cap only bounds memory).
pub const MAX_PRINTS_PER_SECOND: f64 = 2_000.0;

/// Per-request and server-wide limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub max_upload_bytes: u64,
    pub max_audio_s: f64,
    pub max_message_bytes: usize,
    pub max_send_message_bytes: usize,
    pub per_connection: usize,
    /// CPU jobs admitted at once (running + queued on the pool).
    pub max_in_flight: usize,
    pub max_request_time: Duration,
    /// Uploads (client streams) being received at once; more are refused.
    pub max_uploads: usize,
    /// An upload that delivers nothing for this long is cut.
    pub upload_idle: Duration,
    /// An upload still arriving this long after its call started is cut.
    pub max_upload_time: Duration,
}

impl Limits {
    /// Defaults for a pool of `workers` threads.
    pub fn for_workers(workers: usize) -> Self {
        let max_in_flight = workers.max(1) * DEFAULT_IN_FLIGHT_PER_THREAD;
        Self {
            max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
            max_audio_s: DEFAULT_MAX_AUDIO_S,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_send_message_bytes: DEFAULT_MAX_SEND_MESSAGE_BYTES,
            per_connection: DEFAULT_PER_CONNECTION,
            max_in_flight,
            max_request_time: DEFAULT_MAX_REQUEST_TIME,
            max_uploads: max_in_flight * DEFAULT_UPLOADS_PER_IN_FLIGHT,
            upload_idle: DEFAULT_UPLOAD_IDLE,
            max_upload_time: DEFAULT_MAX_UPLOAD_TIME,
        }
    }

    /// Most prints one `ScreenFingerprints` request may carry.
    pub fn max_prints(&self) -> u64 {
        (self.max_audio_s * MAX_PRINTS_PER_SECOND).ceil() as u64
    }
}

/// Default longest wait for the index to catch up with the generation the
/// registry vouches for before a screening is refused.
pub const DEFAULT_INDEX_SYNC_TIMEOUT: Duration = Duration::from_secs(3);

/// Everything the handlers need that is fixed at startup.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data: DataDir,
    pub limits: Limits,
    pub matcher: MatcherConfig,
    pub policy: PolicyConfig,
    /// Longest wait for a lagging index before a screening is refused.
    pub index_sync_timeout: Duration,
}

/// State available once the data directory is open and verified.
pub struct Ready {
    catalog: Catalog,
    /// Serialises catalog writes (register, remove).
    write_lock: Mutex<()>,
    /// Second connection for reads.
    pub reader: Registry,
    index: RwLock<Snapshot>,
}

struct Snapshot {
    index: Arc<Index>,
    stamp: Option<ManifestStamp>,
}

/// Identity of the manifest file: it is replaced by rename on every change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ManifestStamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

fn manifest_stamp(index_dir: &Path) -> Option<ManifestStamp> {
    let meta = std::fs::metadata(index_dir.join(MANIFEST_FILE)).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some(ManifestStamp {
        len: meta.len(),
        modified: meta.modified().ok(),
        inode,
    })
}

impl Ready {
    /// Opens the catalog (reconciling index and registry under the index
    /// write lock), a read connection and the index, and verifies the
    /// index's checksums. Blocking.
    pub fn open(data: &DataDir) -> Result<Self, ServiceError> {
        let catalog = Catalog::open(data)?;
        let reader = data.open_registry()?;
        let stamp = manifest_stamp(&data.index_dir());
        let index = data.open_index()?;
        index.verify()?;
        match catalog.registry.verify_audit() {
            Ok(report) if report.is_ok() => {}
            Ok(report) => tracing::error!(
                problems = report.problems.len(),
                first = ?report.problems.first().map(|p| &p.message),
                "the registry audit log is BROKEN (edited or truncated); run `earmark audit verify`"
            ),
            Err(err) => tracing::error!(error = %err, "cannot verify the registry audit log"),
        }
        Ok(Self {
            catalog,
            write_lock: Mutex::new(()),
            reader,
            index: RwLock::new(Snapshot {
                index: Arc::new(index),
                stamp,
            }),
        })
    }

    /// The current index, re-opened first if the manifest changed. Blocking.
    pub fn index(&self) -> Result<Arc<Index>, ServiceError> {
        Ok(self.stamped_index()?)
    }

    fn stamped_index(&self) -> Result<Arc<Index>, IndexError> {
        let stamp = manifest_stamp(&self.catalog.data.index_dir());
        {
            let snap = self
                .index
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if snap.stamp == stamp {
                return Ok(Arc::clone(&snap.index));
            }
        }
        self.reload(stamp)
    }

    fn reload(&self, stamp: Option<ManifestStamp>) -> Result<Arc<Index>, IndexError> {
        let index = Arc::new(Index::open(&self.catalog.data.index_dir())?);
        let mut snap = self
            .index
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if snap.index.generation() != index.generation() {
            tracing::info!(
                generation = index.generation(),
                works = index.live_work_count(),
                "index re-opened"
            );
            super::metrics::index_size(&index);
        }
        snap.index = Arc::clone(&index);
        snap.stamp = stamp;
        Ok(index)
    }

    /// The index to screen against: no older than the generation the
    /// registry vouches for, waiting at most `wait` for it
    /// ([`crate::screening::current_index`]). Blocking.
    pub fn current_index(&self, wait: Duration) -> Result<Arc<Index>, ServiceError> {
        Ok(crate::screening::current_index(self, &self.reader, wait)?)
    }

    /// The current snapshot without checking the manifest (metrics, logs).
    pub fn cached_index(&self) -> Arc<Index> {
        let snap = self
            .index
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(&snap.index)
    }

    /// Runs a catalog write with the write lock held, then refreshes the index.
    pub fn write<T>(
        &self,
        f: impl FnOnce(&Catalog) -> Result<T, ServiceError>,
    ) -> Result<(T, u64), ServiceError> {
        let _guard: MutexGuard<'_, ()> = self
            .write_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let value = f(&self.catalog)?;
        let index = self.index()?;
        Ok((value, index.generation()))
    }

    /// The registry connection writes go through (attribution ledger).
    pub fn writer_registry(&self) -> &Registry {
        &self.catalog.registry
    }

    pub fn data_root(&self) -> &PathBuf {
        &self.catalog.data.root
    }
}

impl crate::screening::IndexSnapshots for Ready {
    fn snapshot(&self) -> Result<Arc<Index>, IndexError> {
        self.stamped_index()
    }

    fn reopen(&self) -> Result<Arc<Index>, IndexError> {
        self.reload(manifest_stamp(&self.catalog.data.index_dir()))
    }
}

/// Counters the server keeps for itself (tests, logs); Prometheus has more.
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests refused because too many CPU jobs were in flight.
    pub shed: AtomicU64,
    /// CPU jobs whose caller went away (cancelled, deadline) before the result.
    pub abandoned: AtomicU64,
    /// Uploads refused because `max_uploads` streams were being received.
    pub uploads_refused: AtomicU64,
    /// Most uploads received at once so far.
    pub peak_uploads: AtomicUsize,
    /// Most CPU jobs admitted at once so far (at most `max_in_flight`).
    pub peak_admitted: AtomicUsize,
}

/// State shared by every handler.
pub struct Shared {
    pub settings: Settings,
    pub stats: Arc<Stats>,
    ready: OnceLock<Arc<Ready>>,
    pool: rayon::ThreadPool,
    gate: Arc<Semaphore>,
    /// CPU jobs queued or running, including abandoned ones still finishing.
    jobs: Arc<AtomicUsize>,
}

impl Shared {
    pub fn new(settings: Settings, workers: usize) -> Result<Self, ServiceError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(workers.max(1))
            .thread_name(|i| format!("earmark-cpu-{i}"))
            .build()
            .map_err(|e| ServiceError::Internal(format!("cannot start the CPU pool: {e}")))?;
        let gate = Arc::new(Semaphore::new(settings.limits.max_in_flight.max(1)));
        Ok(Self {
            settings,
            stats: Arc::default(),
            ready: OnceLock::new(),
            pool,
            gate,
            jobs: Arc::default(),
        })
    }

    /// Marks the server ready (once).
    pub fn set_ready(&self, ready: Ready) {
        let _ = self.ready.set(Arc::new(ready));
    }

    pub fn is_ready(&self) -> bool {
        self.ready.get().is_some()
    }

    /// The opened data directory, or `UNAVAILABLE` while starting.
    pub fn ready(&self) -> Result<Arc<Ready>, ServiceError> {
        self.ready.get().cloned().ok_or_else(|| {
            ServiceError::NotReady(
                "the index and registry are still being opened and verified".into(),
            )
        })
    }

    /// CPU jobs queued or running (abandoned ones included).
    pub fn jobs(&self) -> usize {
        self.jobs.load(Ordering::Acquire)
    }

    /// Waits until no CPU job is queued or running, at most `timeout`; true
    /// when idle. At shutdown this lets a job whose caller has gone (say, a
    /// registration already writing) finish its write before the process exits.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let until = tokio::time::Instant::now() + timeout;
        while self.jobs() > 0 {
            if tokio::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(IDLE_POLL).await;
        }
        true
    }

    /// Admits one CPU job or sheds the request.
    pub fn admit(&self, method: &'static str) -> Result<OwnedSemaphorePermit, ServiceError> {
        let admitted = Arc::clone(&self.gate).try_acquire_owned();
        if admitted.is_ok() {
            let in_use = self.settings.limits.max_in_flight.max(1) - self.gate.available_permits();
            self.stats
                .peak_admitted
                .fetch_max(in_use, Ordering::Relaxed);
        }
        admitted.map_err(|_| {
            super::metrics::shed(method);
            self.stats.shed.fetch_add(1, Ordering::Relaxed);
            ServiceError::Overloaded(format!(
                "{} screening/registration jobs already in flight; retry later",
                self.settings.limits.max_in_flight
            ))
        })
    }

    /// Runs `job` on the CPU pool. If the returned future is dropped (caller
    /// gone, deadline passed) the job's [`Cancel`] is raised so it can stop at
    /// its next check.
    pub async fn run_cpu<T: Send + 'static>(
        &self,
        deadline: Option<Instant>,
        job: impl FnOnce(&Cancel) -> Result<T, ServiceError> + Send + 'static,
    ) -> Result<T, ServiceError> {
        let cancel = Cancel::new(deadline);
        let mut guard = CancelOnDrop {
            cancel: cancel.clone(),
            armed: true,
            stats: Arc::clone(&self.stats),
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let running = RunningJob::new(&self.jobs);
        self.pool.spawn(move || {
            let _running = running;
            // A panic (say, a decoder choking on hostile input) must fail this
            // request, not abort the process (rayon aborts on unhandled panics).
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                cancel.check().and_then(|()| job(&cancel))
            }))
            .unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                Err(ServiceError::Internal(format!(
                    "a CPU job panicked: {what}"
                )))
            });
            let _ = tx.send(result);
        });
        let result = rx
            .await
            .map_err(|_| ServiceError::Internal("a CPU job ended without a result".into()))?;
        guard.armed = false;
        result
    }
}

/// Poll interval of [`Shared::wait_idle`].
const IDLE_POLL: Duration = Duration::from_millis(10);

/// Counts a CPU job from submission until it has finished (or unwound).
struct RunningJob(Arc<AtomicUsize>);

impl RunningJob {
    fn new(jobs: &Arc<AtomicUsize>) -> Self {
        jobs.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(jobs))
    }
}

impl Drop for RunningJob {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Runs blocking I/O (registry reads, key checks) off the async workers.
pub async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ServiceError> + Send + 'static,
) -> Result<T, ServiceError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ServiceError::Internal(format!("a blocking task failed: {e}")))?
}

/// Cooperative cancellation of a CPU job: raised when the caller has gone, or
/// past the request's deadline.
#[derive(Debug, Clone)]
pub struct Cancel {
    flag: Arc<AtomicBool>,
    deadline: Option<Instant>,
}

impl Cancel {
    fn new(deadline: Option<Instant>) -> Self {
        Self {
            flag: Arc::new(AtomicBool::new(false)),
            deadline,
        }
    }

    /// True once the work should be abandoned.
    pub fn is_raised(&self) -> bool {
        self.flag.load(Ordering::Relaxed) || self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Time left before the request's deadline, if it has one.
    pub fn time_left(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// `Err` (cancelled or deadline exceeded) once the work should stop.
    pub fn check(&self) -> Result<(), ServiceError> {
        if self.flag.load(Ordering::Relaxed) {
            Err(ServiceError::Cancelled)
        } else if self.deadline.is_some_and(|d| Instant::now() >= d) {
            Err(ServiceError::DeadlineExceeded)
        } else {
            Ok(())
        }
    }
}

/// Raises the job's [`Cancel`] if the awaiting future is dropped early.
struct CancelOnDrop {
    cancel: Cancel,
    armed: bool,
    stats: Arc<Stats>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.armed {
            self.cancel.flag.store(true, Ordering::Relaxed);
            tracing::debug!("caller gone: abandoning its CPU job");
            super::metrics::abandoned();
            self.stats.abandoned.fetch_add(1, Ordering::Relaxed);
        }
    }
}

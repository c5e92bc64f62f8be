//! Shared helpers for registry and policy tests.

use std::sync::{Arc, Mutex};

use tempfile::TempDir;
use time::OffsetDateTime;
use time::macros::datetime;

use super::{Isrc, NewWork, ReferenceAudio, Registry, RegistryLocation, WorkId};

/// The instant test registries start at.
pub(crate) const T0: OffsetDateTime = datetime!(2026-02-01 12:00 UTC);

/// A clock tests can move.
#[derive(Clone)]
pub(crate) struct TestClock(Arc<Mutex<OffsetDateTime>>);

impl TestClock {
    pub(crate) fn set(&self, t: OffsetDateTime) {
        *self.0.lock().unwrap() = t;
    }
}

/// A fresh registry in a temporary directory with its clock at [`T0`].
pub(crate) fn open_temp() -> (TempDir, Registry) {
    let (dir, reg, _) = open_temp_with_clock();
    (dir, reg)
}

pub(crate) fn open_temp_with_clock() -> (TempDir, Registry, TestClock) {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock(Arc::new(Mutex::new(T0)));
    let c = clock.clone();
    let reg = Registry::open_at_with_clock(
        &test_location(),
        dir.path(),
        Box::new(move || *c.0.lock().unwrap()),
    )
    .unwrap();
    (dir, reg, clock)
}

/// Environment variable choosing the backend of the registry tests:
/// `postgres` runs them on a fresh database of a throwaway cluster each.
pub(crate) const TEST_BACKEND_ENV: &str = "EARMARK_TEST_REGISTRY";

/// Whether the registry tests run on PostgreSQL.
pub(crate) fn on_postgres() -> bool {
    std::env::var(TEST_BACKEND_ENV).is_ok_and(|v| v == "postgres")
}

/// Where a test registry lives: the temporary data directory, or a fresh
/// database on the shared test cluster.
pub(crate) fn test_location() -> RegistryLocation {
    if !on_postgres() {
        return RegistryLocation::DataDir;
    }
    #[cfg(feature = "postgres")]
    {
        RegistryLocation::Postgres(shared_cluster::create_database())
    }
    #[cfg(not(feature = "postgres"))]
    panic!("{TEST_BACKEND_ENV}=postgres needs the `postgres` feature")
}

#[cfg(feature = "postgres")]
#[path = "../../tests/pg_support/cluster.rs"]
pub(crate) mod pg_cluster;

/// One cluster for the whole test process, started on first use by a
/// thread that lives as long as the process (the server's parent-death
/// signal follows that thread); at exit it is stopped by PID and its
/// directory removed.
#[cfg(feature = "postgres")]
mod shared_cluster {
    use std::path::PathBuf;
    use std::sync::OnceLock;
    use std::sync::mpsc;

    use super::pg_cluster::{PgCluster, server_binaries};

    struct Shared {
        port: u16,
        dir: PathBuf,
        pid: u32,
    }

    static SHARED: OnceLock<Shared> = OnceLock::new();

    extern "C" fn stop_at_exit() {
        if let Some(s) = SHARED.get() {
            let _ = std::process::Command::new("kill")
                .args(["-QUIT", &s.pid.to_string()])
                .status();
            // SAFETY: waitpid on the server, a child of this process.
            unsafe {
                libc::waitpid(i32::try_from(s.pid).unwrap_or(0), std::ptr::null_mut(), 0);
            }
            let _ = std::fs::remove_dir_all(&s.dir);
        }
    }

    fn shared() -> &'static Shared {
        SHARED.get_or_init(|| {
            let bin = server_binaries().expect(
                "EARMARK_TEST_REGISTRY=postgres: PostgreSQL server binaries not found \
                 (scripts/setup.sh installs them)",
            );
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                let cluster = PgCluster::start(&bin);
                let shared = Shared {
                    port: cluster.port(),
                    dir: cluster.dir().to_owned(),
                    pid: cluster.pid().unwrap_or(0),
                };
                let _ = tx.send(shared);
                // Keep the cluster (and this thread, its parent) alive; the
                // exit hook stops it.
                std::mem::forget(cluster);
                loop {
                    std::thread::park();
                }
            });
            let shared = rx.recv().expect("the test cluster started");
            // SAFETY: registers a plain function with no captured state.
            unsafe {
                libc::atexit(stop_at_exit);
            }
            shared
        })
    }

    /// A fresh database on the shared cluster.
    pub(crate) fn create_database() -> String {
        let s = shared();
        let url = |db: &str| format!("postgres://postgres@127.0.0.1:{}/{db}", s.port);
        let mut admin = postgres::Client::connect(&url("postgres"), postgres::NoTls)
            .expect("connecting to the test cluster");
        let name = format!("u{}", super::next_database());
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("creating a test database");
        url(&name)
    }
}

/// Numbers the test databases of this process.
pub(crate) fn next_database() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// A valid work with the given id.
pub(crate) fn sample_work(id: &str) -> NewWork {
    NewWork {
        id: WorkId::parse(id).unwrap(),
        title: format!("Title of {id}"),
        artists: vec!["Artist One".into(), "Artist Two".into()],
        isrc: Some(Isrc::parse("US-S1Z-99-00001").unwrap()),
        iswc: None,
        holder: "Example Music Ltd".into(),
        holder_isni: None,
        reference: ReferenceAudio {
            duration_s: 180.0,
            fingerprint_config: "fp-v1".into(),
            audio_sha256: "ab".repeat(32),
            source_file: format!("{id}.flac"),
        },
    }
}

/// True (with a note) when the registry tests run on PostgreSQL and the
/// test tampers with the SQLite file directly.
pub(crate) fn sqlite_only(test: &str) -> bool {
    let skip = on_postgres();
    if skip {
        eprintln!(
            "{test}: SQLite-specific (raw access to the database file), not run on PostgreSQL"
        );
    }
    skip
}

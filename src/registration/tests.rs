use super::*;
use crate::content::sha256_file;
use crate::registry::test_support::test_location;

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
    catalog
        .with_writer(|writer| commit_works(writer, std::slice::from_ref(&orphan.work)))
        .unwrap();
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

/// Every catalog write leaves the registry vouching for the index's
/// generation (on the backend `EARMARK_TEST_REGISTRY` names).
#[test]
fn catalog_writes_publish_the_index_generation_to_the_registry() {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::new(dir.path()).with_registry(test_location());
    let catalog = Catalog::open(&data).unwrap();
    let published = || catalog.registry.index_generation().unwrap();
    let held = || data.open_index().unwrap().generation();
    assert_eq!((published(), held()), (0, 0));
    let a = registration("a", "wesnoth-heroes-rite");
    catalog.register(&a.work, a.metadata, &[], "t").unwrap();
    assert_eq!((published(), held()), (1, 1));
    let batch = [
        registration("b", "wesnoth-northerners"),
        registration("c", "fof-sectoid-war-of-freedom"),
    ];
    for r in catalog.register_batch(&batch, "t").unwrap() {
        r.unwrap();
    }
    assert_eq!((published(), held()), (2, 2));
    catalog.remove("b", "t").unwrap();
    assert_eq!((published(), held()), (3, 3));
    assert_eq!(catalog.compact().unwrap(), 4);
    assert_eq!((published(), held()), (4, 4));
    // A refused registration changes neither.
    let again = registration("a", "wesnoth-heroes-rite");
    assert!(
        catalog
            .register(&again.work, again.metadata, &[], "t")
            .is_err()
    );
    assert_eq!((published(), held()), (4, 4));
}

/// The URL of a PostgreSQL test registry, or `None` (with a note) when
/// the registry tests run on SQLite.
#[cfg(feature = "postgres")]
fn postgres_url(test: &str) -> Option<String> {
    match test_location() {
        RegistryLocation::Postgres(url) => Some(url),
        RegistryLocation::DataDir => {
            eprintln!("{test}: PostgreSQL only (EARMARK_TEST_REGISTRY=postgres)");
            None
        }
    }
}

/// Waits until some session waits for an advisory lock.
#[cfg(feature = "postgres")]
fn wait_for_a_lock_waiter(url: &str) {
    let mut admin = postgres::Client::connect(url, postgres::NoTls).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let waiting: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
                &[],
            )
            .unwrap()
            .get(0);
        if waiting > 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no session ever waited for the index write lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A replica starting (and so reconciling) while another one is half-way
/// through a registration — fingerprints written, registry row not yet —
/// waits for the index write lock and keeps the new work: it must not
/// take the fingerprints for leftovers of a crash.
#[cfg(feature = "postgres")]
#[test]
fn shared_registry_reconcile_waits_for_a_registration_in_progress() {
    let Some(url) = postgres_url("shared_registry_reconcile_waits_for_a_registration_in_progress")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::new(dir.path()).with_registry(RegistryLocation::Postgres(url.clone()));
    let a = Catalog::open(&data).unwrap();
    let work = registration("new", "wesnoth-heroes-rite");
    let lock = a
        .registry
        .lock_index_writes(Duration::from_secs(5))
        .unwrap();
    let writer = IndexWriter::open(&data.index_dir()).unwrap();
    let generation = commit_works(&writer, std::slice::from_ref(&work.work)).unwrap();

    let starting = {
        let data = data.clone();
        std::thread::spawn(move || Catalog::open(&data))
    };
    wait_for_a_lock_waiter(&url);
    assert!(
        !starting.is_finished(),
        "the replica opened without the lock"
    );
    a.registry
        .add_work_indexed(work.metadata, &[], "t", generation)
        .unwrap();
    drop(writer);
    drop(lock);
    let b = starting.join().unwrap().unwrap();
    assert!(data.open_index().unwrap().contains("new"));
    assert_eq!(b.registry.index_generation().unwrap(), generation);
    assert_eq!(data.open_index().unwrap().generation(), generation);
}

/// Fingerprints committed under the index write lock, then the writer
/// "dies": no registry row, nothing published, the lock session gone.
#[cfg(feature = "postgres")]
fn die_half_way(catalog: &Catalog, work: &PreparedWork) {
    let _lock = catalog
        .registry
        .lock_index_writes(Duration::from_secs(5))
        .unwrap();
    let writer = IndexWriter::open(&catalog.data.index_dir()).unwrap();
    commit_works(&writer, std::slice::from_ref(work)).unwrap();
}

/// A writer that dies half-way leaves the last good state: the next
/// process to open the catalog removes the fingerprints and publishes
/// the resulting generation; a replica that was already open removes
/// them before its next write, so the registration retried there works.
#[cfg(feature = "postgres")]
#[test]
fn shared_registry_half_done_registration_is_reconciled() {
    let Some(url) = postgres_url("shared_registry_half_done_registration_is_reconciled") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::new(dir.path()).with_registry(RegistryLocation::Postgres(url));
    let a = Catalog::open(&data).unwrap();
    let kept = registration("kept", "wesnoth-northerners");
    a.register(&kept.work, kept.metadata, &[], "t").unwrap();

    let half = registration("half", "wesnoth-heroes-rite");
    die_half_way(&a, &half.work);
    assert_eq!(a.registry.index_generation().unwrap(), 1);
    assert!(data.open_index().unwrap().contains("half"));
    let b = Catalog::open(&data).unwrap();
    let index = data.open_index().unwrap();
    assert!(!index.contains("half") && index.contains("kept"));
    assert_eq!(index.generation(), 3);
    assert_eq!(b.registry.index_generation().unwrap(), 3);

    // Again, now retried through a catalog opened before the crash.
    die_half_way(&b, &half.work);
    a.register(&half.work, half.metadata, &[], "t").unwrap();
    let index = data.open_index().unwrap();
    assert!(index.contains("half") && index.contains("kept"));
    assert_eq!(index.generation(), 6);
    assert_eq!(a.registry.index_generation().unwrap(), 6);
    assert!(b.reconcile().unwrap().is_empty());
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

//! Replicas of `earmark serve` sharing one index directory and one
//! PostgreSQL registry (a throwaway cluster the test starts):
//!
//! * a work registered through one replica is blocked by the other at once,
//!   whose verdict carries the new index generation;
//! * consent changes made through both replicas at the same time leave one
//!   intact audit chain (`earmark audit verify`);
//! * a replica whose index is behind the registry (a copy of the index made
//!   before a registration) answers `UNAVAILABLE` (`INDEX_BEHIND`), never a
//!   verdict, reports NOT_SERVING, and serves again once its index has caught
//!   up;
//! * a command-line writer killed with SIGKILL at points spread over a
//!   registration leaves the last good state: the registry never vouches for
//!   a generation the index lacks, the lock is not left taken, and running
//!   the command again completes it.

#![cfg(feature = "postgres")]

#[path = "pg_support/cluster.rs"]
mod cluster;
mod service_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use earmark::client;
use earmark::data_dir::DataDir;
use earmark::index::{Index, MANIFEST_FILE};
use earmark::proto as pb;
use earmark::registry::{Registry, RegistryLocation};
use earmark::service::ServerHandle;
use service_support::*;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_types::StatusExt;

const BIN: &str = env!("CARGO_BIN_EXE_earmark");
/// How long health may take to follow the index and the database.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(30);
/// Concurrent consent changes, spread over the two replicas.
const CONSENT_CHANGES: usize = 16;

/// The default seeds without heroes-rite: the work the tests register.
fn seeds_but_heroes() -> Vec<Seed> {
    default_seeds()
        .into_iter()
        .filter(|s| s.id != HEROES)
        .collect()
}

/// A data directory seeded on a fresh database of `pg` (blocking).
fn seeded(pg: &cluster::PgCluster, root: &Path) -> DataDir {
    let location = RegistryLocation::Postgres(pg.create_database());
    seed_into(
        DataDir::new(root).with_registry(location),
        &seeds_but_heroes(),
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A replica on `data` without API keys.
async fn replica(data: &DataDir, sync_timeout: Duration) -> ServerHandle {
    let mut cfg = config(data);
    insecure(&mut cfg);
    cfg.index_sync_timeout = sync_timeout;
    start(cfg).await
}

/// Registers heroes-rite, opted out of AI training, through `server`.
async fn register_heroes(server: &ServerHandle) -> pb::Work {
    let meta = pb::WorkMetadata {
        work_id: HEROES.into(),
        title: "Heroes' Rite".into(),
        holder: WESNOTH.into(),
        file_name: format!("{HEROES}.ogg"),
        initial_consents: vec![pb::ConsentStatement {
            scope: pb::Scope::AiTraining.into(),
            status: pb::ConsentStatus::OptedOut.into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let bytes = read_audio(&format!("refs/{HEROES}.ogg"));
    registry(server, None)
        .await
        .register_work(tokio_stream::iter(client::register_requests(meta, &bytes)))
        .await
        .expect("registering through a replica")
        .into_inner()
}

fn generation(r: &pb::ScreenResponse) -> u64 {
    r.verdict.as_ref().map_or(0, |v| v.index_generation)
}

/// The generation the registry vouches for (off the async runtime).
async fn published(location: &RegistryLocation, root: &Path) -> u64 {
    let (location, root) = (location.clone(), root.to_owned());
    tokio::task::spawn_blocking(move || {
        Registry::open_at(&location, &root)
            .unwrap()
            .index_generation()
            .unwrap()
    })
    .await
    .unwrap()
}

#[test]
fn replicas_share_one_index_and_one_registry() {
    let Some(pg) = cluster::start_or_skip("replicas_share_one_index_and_one_registry") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = seeded(&pg, dir.path());
    let calls = runtime().block_on(async {
        let a = replica(&data, Duration::from_secs(3)).await;
        let b = replica(&data, Duration::from_secs(3)).await;
        assert_ne!(a.local_addr(), b.local_addr());

        // Before: the excerpt of heroes-rite matches nothing registered.
        let mut on_b = screening(&b, None).await;
        let before = screen(&mut on_b, "submissions/excerpt-mp3.mp3")
            .await
            .unwrap();
        assert_eq!(decision(&before), pb::Decision::Allow);
        let g0 = generation(&before);

        // Registered through A: B blocks the excerpt on its next request,
        // with the index generation the registration made.
        register_heroes(&a).await;
        let g1 = published(&data.registry, &data.root).await;
        assert_eq!(g1, g0 + 1);
        let after = screen(&mut on_b, "submissions/excerpt-mp3.mp3")
            .await
            .unwrap();
        assert_eq!(decision(&after), pb::Decision::Block);
        assert_eq!(matched_works(&after), [HEROES]);
        assert_eq!(generation(&after), g1);
        let on_a = screen(&mut screening(&a, None).await, "submissions/speed.wav")
            .await
            .unwrap();
        assert_eq!(
            (decision(&on_a), generation(&on_a)),
            (pb::Decision::Block, g1)
        );

        // Consent changes through both replicas at once.
        let replicas = [&a, &b];
        let mut tasks = Vec::new();
        for i in 0..CONSENT_CHANGES {
            let mut registry = registry(replicas[i % 2], None).await;
            let status = if i % 2 == 0 {
                pb::ConsentStatus::OptedIn
            } else {
                pb::ConsentStatus::OptedOut
            };
            let work = [NORTHERNERS, SECTOID][i % 3 % 2];
            tasks.push(tokio::spawn(async move {
                registry
                    .set_consent(pb::SetConsentRequest {
                        work_id: work.into(),
                        consent: Some(pb::ConsentStatement {
                            scope: pb::Scope::AiTraining.into(),
                            status: status.into(),
                            ..Default::default()
                        }),
                    })
                    .await
            }));
        }
        for t in tasks {
            t.await.unwrap().expect("consent change through a replica");
        }
        a.shutdown().await.unwrap();
        b.shutdown().await.unwrap();
        CONSENT_CHANGES
    });

    let RegistryLocation::Postgres(url) = &data.registry else {
        unreachable!()
    };
    let out = Command::new(BIN)
        .arg("--data")
        .arg(&data.root)
        .args(["--registry", url, "audit", "verify", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["problems"], serde_json::json!([]), "{report}");
    let registry = Registry::open_at(&data.registry, &data.root).unwrap();
    let consents = |id| registry.consent_history(id).unwrap().len();
    // One initial statement each, then the changes.
    assert_eq!(consents(NORTHERNERS) + consents(SECTOID), 2 + calls);
}

/// Copies `from`'s index into `to` as a writer would publish it: the
/// segments first, then the manifest by an atomic rename.
fn catch_up(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".seg") && !to.join(&*name).exists() {
            std::fs::copy(entry.path(), to.join(&*name)).unwrap();
        }
    }
    let staged = to.join("MANIFEST.json.catch-up");
    std::fs::copy(from.join(MANIFEST_FILE), &staged).unwrap();
    std::fs::rename(&staged, to.join(MANIFEST_FILE)).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

#[test]
fn a_replica_behind_the_registry_is_unavailable_until_its_index_catches_up() {
    let Some(pg) = cluster::start_or_skip(
        "a_replica_behind_the_registry_is_unavailable_until_its_index_catches_up",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = seeded(&pg, &dir.path().join("shared"));
    // Replica C's index: a copy made before the registration.
    let stale_root = dir.path().join("stale");
    copy_dir(&data.index_dir(), &stale_root.join("index"));
    let stale = DataDir::new(&stale_root).with_registry(data.registry.clone());
    runtime().block_on(async {
        let a = replica(&data, Duration::from_secs(3)).await;
        let c = replica(&stale, Duration::from_millis(300)).await;
        let mut on_c = screening(&c, None).await;
        let r = screen(&mut on_c, "submissions/pitched.ogg").await.unwrap();
        assert_eq!(decision(&r), pb::Decision::Allow);

        register_heroes(&a).await;
        let required = published(&data.registry, &data.root).await;
        let held = Index::open(&stale.index_dir()).unwrap().generation();
        assert!(held < required);
        // No verdict at all from C, for the new work or any other.
        for rel in [
            "submissions/excerpt-mp3.mp3",
            "submissions/pitched.ogg",
            "submissions/speech.ogg",
        ] {
            let status = screen(&mut on_c, rel)
                .await
                .expect_err("a replica behind the registry gave a verdict");
            assert_eq!(status.code(), Code::Unavailable, "{rel}: {status:?}");
            let info = status.get_error_details().error_info().cloned().unwrap();
            assert_eq!(info.reason, "INDEX_BEHIND");
            assert_eq!(info.metadata["required_generation"], required.to_string());
            assert_eq!(info.metadata["held_generation"], held.to_string());
            assert!(
                status.message().contains(&format!("generation {required}")),
                "{}",
                status.message()
            );
        }
        wait_health_of(&url(&c), ServingStatus::NotServing, HEALTH_TIMEOUT).await;
        // A keeps serving.
        assert_eq!(health_of(&url(&a)).await, Some(ServingStatus::Serving));

        // C's index catches up: C serves again, with the new work.
        catch_up(&data.index_dir(), &stale.index_dir());
        wait_health_of(&url(&c), ServingStatus::Serving, HEALTH_TIMEOUT).await;
        let r = screen(&mut on_c, "submissions/excerpt-mp3.mp3")
            .await
            .unwrap();
        assert_eq!(
            (decision(&r), generation(&r)),
            (pb::Decision::Block, required)
        );
        a.shutdown().await.unwrap();
        c.shutdown().await.unwrap();
    });
}

/// A WAV reference tune of `seconds`, different for each `seed`.
fn tune_wav(path: &Path, seconds: u32, seed: u32) {
    let rate = 8_000u32;
    let samples = seconds * rate;
    let mut out = Vec::with_capacity(44 + 2 * samples as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + 2 * samples).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    for v in [16u32.to_le_bytes(), [1, 0, 1, 0]] {
        out.extend_from_slice(&v);
    }
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * 2).to_le_bytes());
    out.extend_from_slice(&[2, 0, 16, 0]);
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(2 * samples).to_le_bytes());
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    let mut freq = 440.0f64;
    for i in 0..samples {
        if i % (rate / 8) == 0 {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            freq = 200.0 + f64::from(state % 2000);
        }
        let t = f64::from(i) / f64::from(rate);
        let v = (2.0 * std::f64::consts::PI * freq * t).sin() * 12_000.0;
        out.extend_from_slice(&(v as i16).to_le_bytes());
    }
    std::fs::write(path, out).unwrap();
}

/// `earmark --data DIR --registry URL ARGS…`.
fn earmark(data: &Path, url: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("--data")
        .arg(data)
        .args(["--registry", url])
        .args(args)
        .env("EARMARK_ACTOR", "tester");
    cmd
}

/// Registered and indexed work ids, and the published and held generations.
fn state(data: &Path, url: &str) -> (Vec<String>, Vec<String>, u64, u64) {
    let registry = Registry::open_at(&RegistryLocation::Postgres(url.to_owned()), data).unwrap();
    let mut registered: Vec<String> = registry.work_ids().unwrap().into_iter().collect();
    registered.sort();
    let index = Index::open(&data.join("index")).unwrap();
    index.verify().unwrap();
    let mut indexed: Vec<String> = index.work_ids().map(str::to_owned).collect();
    indexed.sort();
    (
        registered,
        indexed,
        registry.index_generation().unwrap(),
        index.generation(),
    )
}

/// Kill points per run of the writer.
const KILL_POINTS: usize = 30;

#[test]
fn a_writer_killed_mid_registration_leaves_the_last_good_generation() {
    let Some(pg) =
        cluster::start_or_skip("a_writer_killed_mid_registration_leaves_the_last_good_generation")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let tunes = dir.path().join("tunes");
    std::fs::create_dir_all(&tunes).unwrap();
    let mut catalog = String::from("id,file,title,holder,consent,scope\n");
    let ids: Vec<String> = (0..6).map(|i| format!("t{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let file = tunes.join(format!("{id}.wav"));
        tune_wav(&file, 6, 100 + i as u32);
        catalog.push_str(&format!(
            "{id},{},{id},Holder,opted-out,ai-training\n",
            file.display()
        ));
    }
    let catalog_file = dir.path().join("catalog.csv");
    std::fs::write(&catalog_file, catalog).unwrap();
    let import = [
        "works",
        "import",
        "--batch",
        "2",
        catalog_file.to_str().unwrap(),
    ];

    // The template: one work registered, its database copied per trial.
    let template_url = pg.create_database();
    let template = dir.path().join("template");
    let seed = tunes.join("seed.wav");
    tune_wav(&seed, 6, 7);
    let out = earmark(&template, &template_url, &["works", "add", "--id", "seed"])
        .arg(&seed)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let template_db = template_url.rsplit('/').next().unwrap().to_owned();
    let mut admin = postgres::Client::connect(&pg.url("postgres"), postgres::NoTls).unwrap();
    let mut trial = 0;
    let mut fresh = |admin: &mut postgres::Client| -> (PathBuf, String) {
        trial += 1;
        let name = format!("{template_db}_k{trial}");
        admin
            .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {template_db}"))
            .unwrap();
        let data = dir.path().join(format!("trial-{trial}"));
        copy_dir(&template.join("index"), &data.join("index"));
        (data, pg.url(&name))
    };

    // An uninterrupted run, timed to place the kill points.
    let (data, url) = fresh(&mut admin);
    let started = Instant::now();
    let out = earmark(&data, &url, &import).output().unwrap();
    let duration = started.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (registered, indexed, published, held) = state(&data, &url);
    assert_eq!(registered, indexed);
    assert_eq!((registered.len(), published), (7, held));

    let (mut interrupted, mut orphaned) = (0, 0);
    for point in 0..KILL_POINTS {
        let delay = duration.mul_f64((point as f64 + 0.5) / KILL_POINTS as f64);
        let context = format!("import killed after {delay:?}");
        let (data, url) = fresh(&mut admin);
        let mut child = earmark(&data, &url, &import)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        if !child.wait().unwrap().success() {
            interrupted += 1;
        }
        let (registered, indexed, published, held) = state(&data, &url);
        // The registry never vouches for a generation the index lacks, and
        // every registered work has fingerprints.
        assert!(
            published <= held,
            "{context}: published {published} > held {held}"
        );
        for id in &registered {
            assert!(
                indexed.contains(id),
                "{context}: {id} registered without fingerprints"
            );
        }
        if indexed.len() > registered.len() {
            orphaned += 1;
        }
        // The lock went with the killed process: the command runs again and
        // completes; index and registry agree and the generation is published.
        let out = earmark(&data, &url, &import).output().unwrap();
        assert!(
            out.status.success(),
            "{context}: re-run: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (registered, indexed, published, held) = state(&data, &url);
        assert_eq!(registered, indexed, "{context}");
        assert_eq!((registered.len(), published), (7, held), "{context}");
    }
    eprintln!(
        "{KILL_POINTS} kill points over a {:.0} ms import: {interrupted} interrupted, \
         {orphaned} left fingerprints without a registry row before the re-run",
        duration.as_secs_f64() * 1e3
    );
}

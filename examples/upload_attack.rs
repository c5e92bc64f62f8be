//! Latency of legitimate screenings with and without hostile clients, on the
//! loopback (the figures of docs/reliability.md, "Service limits").
//!
//! usage: cargo run --example upload_attack [REQUESTS]
//!
//! A server with the default limits for two workers screens
//! `test-audio/submissions/excerpt-mp3.mp3` from two legitimate clients,
//! first alone; then while an attacker keeps silent streams open on half the
//! upload slots and trickling streams on a quarter of them; then while
//! sixteen clients flood the server with garbage uploads back to back. Prints
//! p50 / p99 / max latency and the refusals of each phase.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use earmark::client::{self, ScreeningClient};
use earmark::data_dir::DataDir;
use earmark::decode::DecodeLimits;
use earmark::registration::{self, Catalog};
use earmark::registry::{ConsentStatus, NewConsent, NewWork, ReferenceAudio, Scope, WorkId};
use earmark::service::{AuthMode, Limits, ServerConfig, ServerHandle, pb};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const WORKERS: usize = 2;
const LEGIT_CLIENTS: usize = 2;
const FLOOD_CLIENTS: usize = 16;
const DEFAULT_REQUESTS: usize = 200;
const MAX_MESSAGE: usize = 64 * 1024 * 1024;
const REFERENCE: &str = "wesnoth-heroes-rite";

fn seed(dir: &Path) -> DataDir {
    let data = DataDir::new(dir);
    let catalog = Catalog::open(&data).expect("catalog");
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("test-audio/refs/{REFERENCE}.ogg"));
    let work =
        registration::prepare_work(REFERENCE, &path, &DecodeLimits::default()).expect("work");
    let now = catalog.registry.now();
    let metadata = NewWork {
        id: WorkId::parse(REFERENCE).expect("id"),
        title: "Heroes' Rite".into(),
        artists: vec![],
        isrc: None,
        iswc: None,
        holder: "Wesnoth Devs".into(),
        holder_isni: None,
        reference: ReferenceAudio {
            duration_s: work.info.duration_s,
            fingerprint_config: registration::fingerprint_config_id(),
            audio_sha256: earmark::content::sha256_file(&path).expect("sha"),
            source_file: path.display().to_string(),
        },
    };
    let consent = NewConsent::new(
        Scope::AiTraining,
        ConsentStatus::OptedOut,
        "Wesnoth Devs",
        now,
    );
    catalog
        .register(&work, metadata, &[consent], "load-test")
        .expect("register");
    data
}

async fn connect(server: &ServerHandle) -> ScreeningClient {
    let url = format!("http://{}", server.local_addr());
    let channel = client::connect(&url, None).await.expect("connect");
    client::screening(channel, None, MAX_MESSAGE).expect("client")
}

fn metadata(name: &str) -> pb::SubmissionMetadata {
    pb::SubmissionMetadata {
        file_name: name.into(),
        purpose: pb::Scope::AiTraining.into(),
        ..Default::default()
    }
}

/// Latencies of successful screenings, and the refused count.
async fn legit_phase(
    server: &ServerHandle,
    clip: Arc<Vec<u8>>,
    requests: usize,
) -> (Vec<f64>, u64) {
    let refused = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..LEGIT_CLIENTS {
        let mut client = connect(server).await;
        let clip = Arc::clone(&clip);
        let refused = Arc::clone(&refused);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            for _ in 0..requests / LEGIT_CLIENTS {
                let started = Instant::now();
                let requests = client::screen_requests(metadata("excerpt.mp3"), &clip);
                match client.screen(tokio_stream::iter(requests)).await {
                    Ok(_) => latencies.push(started.elapsed().as_secs_f64() * 1e3),
                    Err(_) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("legit client"));
    }
    all.sort_by(f64::total_cmp);
    (all, refused.load(Ordering::Relaxed))
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn report(phase: &str, latencies: &[f64], refused: u64) {
    println!(
        "{phase:<8} screened {:>4}  refused {:>3}  p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms",
        latencies.len(),
        refused,
        quantile(latencies, 0.5),
        quantile(latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN)
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let requests: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(DEFAULT_REQUESTS);
    let dir = tempfile::tempdir().expect("temp dir");
    let data = seed(dir.path());
    let mut config = ServerConfig::new(data);
    config.auth = AuthMode::InsecureNoAuth;
    config.workers = WORKERS;
    config.limits = Limits::for_workers(WORKERS);
    let limits = config.limits.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let server = earmark::service::start(config, listener, None)
        .await
        .expect("start");
    assert!(server.wait_ready(Duration::from_secs(60)).await, "ready");
    println!(
        "limits: {} CPU slots, {} upload slots, idle cut {:?}, upload time {:?}",
        limits.max_in_flight, limits.max_uploads, limits.upload_idle, limits.max_upload_time
    );
    let clip = Arc::new(
        std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("test-audio/submissions/excerpt-mp3.mp3"),
        )
        .expect("clip"),
    );

    let (latencies, refused) = legit_phase(&server, Arc::clone(&clip), requests).await;
    report("alone", &latencies, refused);

    // Attack 1: silent streams on half the upload slots (re-opened when
    // cut) and trickling streams (one byte every 100 ms) on a quarter.
    let stop = Arc::new(AtomicBool::new(false));
    let mut attackers = Vec::new();
    for i in 0..limits.max_uploads / 2 + limits.max_uploads / 4 {
        let trickle = i >= limits.max_uploads / 2;
        let mut client = connect(&server).await;
        let stop = Arc::clone(&stop);
        attackers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let (tx, rx) = mpsc::channel(1);
                let sender = {
                    let stop = Arc::clone(&stop);
                    tokio::spawn(async move {
                        let meta = pb::screen_request::Part::Metadata(metadata("slow.wav"));
                        let _ = tx.send(pb::ScreenRequest { part: Some(meta) }).await;
                        while !stop.load(Ordering::Relaxed) {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            let byte = pb::screen_request::Part::Chunk(vec![0]);
                            if trickle
                                && tx
                                    .send(pb::ScreenRequest { part: Some(byte) })
                                    .await
                                    .is_err()
                            {
                                break;
                            }
                        }
                    })
                };
                let _ = client.screen(ReceiverStream::new(rx)).await;
                sender.abort();
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (latencies, refused) = legit_phase(&server, Arc::clone(&clip), requests).await;
    report("slow", &latencies, refused);
    stop.store(true, Ordering::Relaxed);
    for a in attackers.drain(..) {
        a.abort();
    }

    // Attack 2: a flood of garbage uploads, back to back, from more clients
    // than there are CPU slots.
    let stop = Arc::new(AtomicBool::new(false));
    let garbage = Arc::new(vec![0x5Au8; 256 * 1024]);
    for _ in 0..FLOOD_CLIENTS {
        let mut client = connect(&server).await;
        let stop = Arc::clone(&stop);
        let garbage = Arc::clone(&garbage);
        attackers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let requests = client::screen_requests(metadata("garbage.wav"), &garbage);
                let _ = client.screen(tokio_stream::iter(requests)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (latencies, refused) = legit_phase(&server, clip, requests).await;
    report("flood", &latencies, refused);
    stop.store(true, Ordering::Relaxed);
    for a in attackers {
        let _ = a.await;
    }
    let stats = server.stats();
    println!(
        "server: peak uploads {}, peak admitted jobs {}, uploads refused {}, jobs shed {}",
        stats.peak_uploads.load(Ordering::Relaxed),
        stats.peak_admitted.load(Ordering::Relaxed),
        stats.uploads_refused.load(Ordering::Relaxed),
        stats.shed.load(Ordering::Relaxed)
    );
    server.shutdown().await.expect("shutdown");
}

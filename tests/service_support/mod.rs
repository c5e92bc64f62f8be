//! Shared setup of the service integration tests: a data directory seeded
//! with the reference clips, API keys, a real server on a loopback port, and
//! a tonic client.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use earmark::client::{self, RegistryClient, ScreeningClient};
use earmark::data_dir::DataDir;
use earmark::decode::DecodeLimits;
use earmark::proto as pb;
use earmark::registration::Catalog;
use earmark::registry::{
    ConsentStatus, NewConsent, NewWork, ReferenceAudio, Registry, Role, Scope, WorkId,
};
use earmark::service::{AuthMode, ServerConfig, ServerHandle};
use tonic::Status;

/// How long a test waits for the server to open its data directory.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Client message size limit.
pub const CLIENT_MAX_MESSAGE: usize = 64 * 1024 * 1024;

pub const HEROES: &str = "wesnoth-heroes-rite";
pub const NORTHERNERS: &str = "wesnoth-northerners";
pub const ARMYGEDDON: &str = "fof-muldjord-armygeddon";
pub const SECTOID: &str = "fof-sectoid-war-of-freedom";
pub const WESNOTH: &str = "Wesnoth Devs";
pub const FOF: &str = "Frets on Fire";

pub fn audio(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("test-audio")
        .join(rel)
}

pub fn read_audio(rel: &str) -> Vec<u8> {
    std::fs::read(audio(rel)).expect("test audio present")
}

/// A work to seed: id (= refs/<id>.ogg), holder, ai-training consent.
pub struct Seed {
    pub id: &'static str,
    pub holder: &'static str,
    pub consent: Option<ConsentStatus>,
}

/// The four reference clips with consents giving every verdict:
/// heroes-rite opted out (excerpt-mp3, speed: block), sectoid opted in
/// (pitched: allow), northerners opted in and armygeddon unknown (the mix: flag).
pub fn default_seeds() -> Vec<Seed> {
    vec![
        Seed {
            id: HEROES,
            holder: WESNOTH,
            consent: Some(ConsentStatus::OptedOut),
        },
        Seed {
            id: NORTHERNERS,
            holder: WESNOTH,
            consent: Some(ConsentStatus::OptedIn),
        },
        Seed {
            id: ARMYGEDDON,
            holder: FOF,
            consent: None,
        },
        Seed {
            id: SECTOID,
            holder: FOF,
            consent: Some(ConsentStatus::OptedIn),
        },
    ]
}

/// Registers `seeds` into a new data directory (no server running).
pub fn seed(dir: &Path, seeds: &[Seed]) -> DataDir {
    seed_into(DataDir::new(dir), seeds)
}

/// Registers `seeds` into `data` (its registry where `data` says).
pub fn seed_into(data: DataDir, seeds: &[Seed]) -> DataDir {
    let catalog = Catalog::open(&data).expect("open catalog");
    for s in seeds {
        let path = audio(&format!("refs/{}.ogg", s.id));
        let work = earmark::registration::prepare_work(s.id, &path, &DecodeLimits::default())
            .expect("fingerprint ref");
        let now = catalog.registry.now();
        let metadata = NewWork {
            id: WorkId::parse(s.id).expect("id"),
            title: format!("Title of {}", s.id),
            artists: vec!["Someone".into()],
            isrc: None,
            iswc: None,
            holder: s.holder.into(),
            holder_isni: None,
            reference: ReferenceAudio {
                duration_s: work.info.duration_s,
                fingerprint_config: earmark::registration::fingerprint_config_id(),
                audio_sha256: earmark::content::sha256_file(&path).expect("sha"),
                source_file: path.display().to_string(),
            },
        };
        let consents: Vec<NewConsent> = s
            .consent
            .map(|c| NewConsent::new(Scope::AiTraining, c, s.holder, now))
            .into_iter()
            .collect();
        catalog
            .register(&work, metadata, &consents, "test-seed")
            .expect("register");
    }
    data
}

/// Creates an API key directly in the registry.
pub fn key(data: &DataDir, role: Role, holder: Option<&str>) -> String {
    let registry = Registry::open_at(&data.registry, &data.root).expect("registry");
    registry
        .create_key(role, holder, "test")
        .expect("create key")
        .1
}

/// Test server settings: two CPU workers, quick drain.
pub fn config(data: &DataDir) -> ServerConfig {
    let mut c = ServerConfig::new(data.clone());
    c.workers = 2;
    c.limits = earmark::service::Limits::for_workers(2);
    c.drain_grace = Duration::from_millis(300);
    c.open_retry = Duration::from_millis(100);
    c
}

/// Starts a server on 127.0.0.1 (any port) and waits until it is ready.
pub async fn start(config: ServerConfig) -> ServerHandle {
    let server = start_unready(config).await;
    assert!(
        server.wait_ready(READY_TIMEOUT).await,
        "server did not become ready"
    );
    server
}

/// Starts a server without waiting for readiness.
pub async fn start_unready(config: ServerConfig) -> ServerHandle {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    earmark::service::start(config, listener, None)
        .await
        .expect("start server")
}

pub fn url(server: &ServerHandle) -> String {
    format!("http://{}", server.local_addr())
}

pub async fn screening(server: &ServerHandle, key: Option<&str>) -> ScreeningClient {
    let channel = client::connect(&url(server), None).await.expect("connect");
    client::screening(channel, key, CLIENT_MAX_MESSAGE).expect("client")
}

pub async fn registry(server: &ServerHandle, key: Option<&str>) -> RegistryClient {
    let channel = client::connect(&url(server), None).await.expect("connect");
    client::registry(channel, key, CLIENT_MAX_MESSAGE).expect("client")
}

pub fn metadata(file: &str, purpose: pb::Scope) -> pb::SubmissionMetadata {
    pb::SubmissionMetadata {
        file_name: file.into(),
        purpose: purpose.into(),
        ..Default::default()
    }
}

/// Screens a test-audio file for AI training.
pub async fn screen(client: &mut ScreeningClient, rel: &str) -> Result<pb::ScreenResponse, Status> {
    let bytes = read_audio(rel);
    screen_bytes(client, metadata(rel, pb::Scope::AiTraining), &bytes).await
}

pub async fn screen_bytes(
    client: &mut ScreeningClient,
    metadata: pb::SubmissionMetadata,
    bytes: &[u8],
) -> Result<pb::ScreenResponse, Status> {
    let requests = client::screen_requests(metadata, bytes);
    client
        .screen(tokio_stream::iter(requests))
        .await
        .map(tonic::Response::into_inner)
}

pub fn decision(r: &pb::ScreenResponse) -> pb::Decision {
    r.verdict
        .as_ref()
        .map_or(pb::Decision::Unspecified, |v| v.decision())
}

pub fn matched_works(r: &pb::ScreenResponse) -> Vec<String> {
    let mut ids: Vec<String> = r
        .verdict
        .iter()
        .flat_map(|v| {
            v.evidence
                .iter()
                .filter(|e| e.confident)
                .map(|e| e.work_id.clone())
        })
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// `AuthMode` re-exported for tests that switch it.
pub fn insecure(config: &mut ServerConfig) {
    config.auth = AuthMode::InsecureNoAuth;
}

/// A mono 16-bit PCM WAV of pseudo-random noise (a long, valid input).
pub fn noise_wav(seconds: u32, rate_hz: u32) -> Vec<u8> {
    let samples = seconds * rate_hz;
    let data_len = samples * 2;
    let mut out = Vec::with_capacity(44 + data_len as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&rate_hz.to_le_bytes());
    out.extend_from_slice(&(rate_hz * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    let mut x: u32 = 0x1234_5678;
    for _ in 0..samples {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        out.extend_from_slice(&((x >> 16) as i16 / 4).to_le_bytes());
    }
    out
}

/// The overall health a server at `url` reports (`None` if it cannot be asked).
pub async fn health_of(
    url: &str,
) -> Option<tonic_health::pb::health_check_response::ServingStatus> {
    let channel = client::connect(url, None).await.ok()?;
    let response = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest { service: "".into() })
        .await
        .ok()?;
    Some(response.into_inner().status())
}

/// Waits until the server at `url` reports `want`; fails after `within`.
pub async fn wait_health_of(
    url: &str,
    want: tonic_health::pb::health_check_response::ServingStatus,
    within: Duration,
) {
    let reached = tokio::time::timeout(within, async {
        while health_of(url).await != Some(want) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(reached.is_ok(), "health of {url} did not become {want:?}");
}

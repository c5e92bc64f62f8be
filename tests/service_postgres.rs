//! The service on a registry held by PostgreSQL (a throwaway cluster the test
//! starts): screening and registry calls work as on SQLite; with the database
//! server stopped, health goes NOT_SERVING and no screening is answered
//! `allow`; once it is back, health is SERVING again without a restart.

#![cfg(feature = "postgres")]

#[path = "pg_support/cluster.rs"]
mod cluster;
mod service_support;

use std::time::Duration;

use earmark::data_dir::DataDir;
use earmark::registry::{Registry, RegistryLocation};
use service_support::*;
use tonic_health::pb::health_check_response::ServingStatus;

/// How long health may take to follow the database.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(30);

/// The synchronous PostgreSQL client may not run on an async runtime's
/// threads: set-up and checks run outside it.
#[test]
fn database_outage_is_not_serving_and_never_allow_then_recovers() {
    let Some(mut pg) =
        cluster::start_or_skip("database_outage_is_not_serving_and_never_allow_then_recovers")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let location = RegistryLocation::Postgres(pg.create_database());
    let data = seed_into(
        DataDir::new(dir.path()).with_registry(location.clone()),
        &default_seeds(),
    );
    assert!(
        !dir.path().join(earmark::registry::REGISTRY_FILE).exists(),
        "the registry is on the server, not in the data directory"
    );
    let mut cfg = config(&data);
    insecure(&mut cfg);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(outage(cfg, &mut pg));
    let registry = Registry::open_at(&location, dir.path()).unwrap();
    let report = registry.verify_audit().unwrap();
    assert!(report.is_ok() && report.entries > 0, "{report:?}");
}

async fn outage(cfg: earmark::service::ServerConfig, pg: &mut cluster::PgCluster) {
    let server = start(cfg).await;
    let url = url(&server);
    let mut client = screening(&server, None).await;

    let r = screen(&mut client, "submissions/excerpt-mp3.mp3")
        .await
        .expect("screening with the database up");
    assert_eq!(decision(&r), earmark::proto::Decision::Block);
    assert_eq!(health_of(&url).await, Some(ServingStatus::Serving));

    pg.stop();
    wait_health_of(&url, ServingStatus::NotServing, HEALTH_TIMEOUT).await;
    for rel in ["submissions/excerpt-mp3.mp3", "submissions/pitched.ogg"] {
        match screen(&mut client, rel).await {
            Ok(r) => assert_ne!(
                decision(&r),
                earmark::proto::Decision::Allow,
                "{rel} allowed while the registry was down"
            ),
            Err(status) => assert_eq!(status.code(), tonic::Code::Unavailable, "{rel}: {status:?}"),
        }
    }

    pg.start_server();
    wait_health_of(&url, ServingStatus::Serving, HEALTH_TIMEOUT).await;
    let r = screen(&mut client, "submissions/excerpt-mp3.mp3")
        .await
        .expect("screening after the database came back");
    assert_eq!(decision(&r), earmark::proto::Decision::Block);
    server.shutdown().await.unwrap();
}

/// The command line on a PostgreSQL registry (`--registry` and
/// `EARMARK_REGISTRY`): a work registered from one data directory is seen
/// from another; consent changes from concurrent processes on both leave
/// one intact audit chain.
#[test]
fn command_line_processes_share_one_registry_and_audit_chain() {
    let Some(pg) =
        cluster::start_or_skip("command_line_processes_share_one_registry_and_audit_chain")
    else {
        return;
    };
    const BIN: &str = env!("CARGO_BIN_EXE_earmark");
    const PROCESSES: usize = 6;
    let url = pg.create_database();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let earmark = |data: &std::path::Path, by_flag: bool| {
        let mut cmd = std::process::Command::new(BIN);
        cmd.arg("--data").arg(data).env("EARMARK_ACTOR", "tester");
        if by_flag {
            cmd.args(["--registry", &url])
                .env_remove("EARMARK_REGISTRY");
        } else {
            cmd.env("EARMARK_REGISTRY", &url);
        }
        cmd
    };
    let file = audio(&format!("refs/{HEROES}.ogg"));
    let out = earmark(a.path(), true)
        .args(["works", "add", "--id", HEROES])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!a.path().join(earmark::registry::REGISTRY_FILE).exists());

    let children: Vec<_> = (0..PROCESSES)
        .map(|i| {
            let dir = if i % 2 == 0 { a.path() } else { b.path() };
            let status = if i % 2 == 0 { "opted-out" } else { "opted-in" };
            earmark(dir, i % 3 == 0)
                .args(["consent", "set", HEROES, "--scope", "ai-training"])
                .args(["--status", status, "--source", "contract"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = earmark(b.path(), false)
        .args(["audit", "verify", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["entries"],
        serde_json::json!(1 + PROCESSES),
        "{report}"
    );
    assert_eq!(report["problems"], serde_json::json!([]), "{report}");
}

/// TLS to the database: with `sslmode=require` the command line connects
/// when the server's CA is given in `EARMARK_REGISTRY_CA`, and refuses a
/// server it cannot verify.
#[test]
fn tls_to_the_database_verifies_the_server() {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let Some(mut pg) = cluster::start_or_skip("tls_to_the_database_verifies_the_server") else {
        return;
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "earmark test database CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let mut params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    pg.enable_tls(&cert.pem(), &key.serialize_pem());

    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();
    let url = format!("{}?sslmode=require", pg.create_database());
    let verify = |ca: Option<&std::path::Path>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_earmark"));
        cmd.arg("--data")
            .arg(dir.path().join("data"))
            .args(["--registry", &url, "audit", "verify", "--json"])
            .env_remove("EARMARK_REGISTRY_CA");
        if let Some(ca) = ca {
            cmd.env("EARMARK_REGISTRY_CA", ca);
        }
        cmd.output().unwrap()
    };
    let trusted = verify(Some(&ca_file));
    assert!(
        trusted.status.success(),
        "{}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    let untrusted = verify(None);
    assert!(
        !untrusted.status.success(),
        "connected to an unverified server"
    );
    let err = String::from_utf8_lossy(&untrusted.stderr);
    assert!(err.contains("cannot connect"), "{err}");
    // The server did have TLS on (the refusal was the verification).
    let mut admin = postgres::Client::connect(&pg.url("postgres"), postgres::NoTls).unwrap();
    let ssl_on: String = admin.query_one("SHOW ssl", &[]).unwrap().get(0);
    assert_eq!(ssl_on, "on");
}

/// `earmark serve` on the PostgreSQL registry as a process; returns it and
/// its URL once it is SERVING.
async fn spawn_server(data: &std::path::Path, registry: &str) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_earmark"))
        .arg("--data")
        .arg(data)
        .args(["--registry", registry])
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--insecure-no-auth",
            "--workers",
            "2",
        ])
        .env_remove("EARMARK_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains("earmark gRPC server listening") {
                let addr = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("addr="))
                    .map(str::to_owned);
                let _ = addr_tx.send(addr);
            }
        }
    });
    let addr = addr_rx
        .recv_timeout(READY_TIMEOUT)
        .expect("server logged its address")
        .expect("addr= in the log line");
    let url = format!("http://{addr}");
    wait_health_of(&url, ServingStatus::Serving, HEALTH_TIMEOUT).await;
    (child, url)
}

/// A server killed with SIGKILL in the middle of a request and started
/// again loses nothing and counts nothing twice: the retried submission
/// adds no ledger row, the audit chain is intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_request_then_restart_counts_each_use_once() {
    let Some(pg) = cluster::start_or_skip("sigkill_mid_request_then_restart_counts_each_use_once")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // The test helper's synchronous client may not block a runtime thread.
    let url = tokio::task::block_in_place(|| pg.create_database());
    let location = RegistryLocation::Postgres(url.clone());
    let data = DataDir::new(dir.path()).with_registry(location.clone());
    let data = tokio::task::spawn_blocking(move || seed_into(data, &default_seeds()))
        .await
        .unwrap();
    let allowed = "submissions/pitched.ogg";

    let (mut server, server_url) = spawn_server(&data.root, &url).await;
    let channel = earmark::client::connect(&server_url, None).await.unwrap();
    let mut client = earmark::client::screening(channel, None, CLIENT_MAX_MESSAGE).unwrap();
    let r = screen(&mut client, allowed).await.unwrap();
    assert_eq!(decision(&r), earmark::proto::Decision::Allow);

    // A request in flight (metadata sent, audio held back), then SIGKILL.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(earmark::proto::ScreenRequest {
        part: Some(earmark::proto::screen_request::Part::Metadata(metadata(
            "late.ogg",
            earmark::proto::Scope::AiTraining,
        ))),
    })
    .await
    .unwrap();
    let mut in_flight_client = client.clone();
    let in_flight = tokio::spawn(async move {
        in_flight_client
            .screen(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let _ = server.wait();
    assert!(
        in_flight.await.unwrap().is_err(),
        "the killed request failed"
    );
    drop(tx);

    // Restarted: the same submission again (a client retry) is not counted twice.
    let (mut server, server_url) = spawn_server(&data.root, &url).await;
    let channel = earmark::client::connect(&server_url, None).await.unwrap();
    let mut client = earmark::client::screening(channel, None, CLIENT_MAX_MESSAGE).unwrap();
    let r = screen(&mut client, allowed).await.unwrap();
    assert_eq!(decision(&r), earmark::proto::Decision::Allow);
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let _ = server.wait();

    let (totals, report) = tokio::task::spawn_blocking(move || {
        let registry = Registry::open_at(&location, dir.path()).unwrap();
        (
            registry.ledger_totals(None, None).unwrap(),
            registry.verify_audit().unwrap(),
        )
    })
    .await
    .unwrap();
    assert!(!totals.is_empty(), "the allowed use was recorded");
    for t in &totals {
        assert_eq!(
            (t.attributions, t.submissions),
            (1, 1),
            "{}: one submission, one ledger row",
            t.work_id
        );
    }
    assert!(report.is_ok(), "{:?}", report.problems);
}

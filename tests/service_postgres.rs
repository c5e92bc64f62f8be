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
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// How long health may take to follow the database.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(30);

async fn health(url: &str) -> Option<ServingStatus> {
    let channel = earmark::client::connect(url, None).await.ok()?;
    let r = HealthClient::new(channel)
        .check(HealthCheckRequest { service: "".into() })
        .await
        .ok()?;
    Some(r.into_inner().status())
}

async fn wait_health(url: &str, want: ServingStatus) {
    let reached = tokio::time::timeout(HEALTH_TIMEOUT, async {
        while health(url).await != Some(want) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(reached.is_ok(), "health did not become {want:?}");
}

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
    assert_eq!(health(&url).await, Some(ServingStatus::Serving));

    pg.stop();
    wait_health(&url, ServingStatus::NotServing).await;
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
    wait_health(&url, ServingStatus::Serving).await;
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

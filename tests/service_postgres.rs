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

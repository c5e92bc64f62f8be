//! `earmark scan --remote URL`: items are fingerprinted locally and screened
//! by a running `earmark serve` (ScreenFingerprints); the verdicts equal a
//! local scan's, and an unreachable server stops the scan (exit 2) instead of
//! marking items as errors.

mod scan_common;

use std::ffi::OsStr;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use scan_common::*;

/// How long the server may take to come up.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn serve(data: &Path, port: u16) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_earmark"))
        .arg("--data")
        .arg(data)
        .args(["serve", "--insecure-no-auth", "--workers", "1", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server(child);
    let deadline = Instant::now() + READY_TIMEOUT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    server
}

fn manifest(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("m.jsonl");
    let mut text = String::new();
    for (name, _) in SUBMISSIONS {
        text.push_str(&format!(
            "{{\"path\": \"{}\"}}\n",
            audio(&format!("submissions/{name}")).display()
        ));
    }
    text.push_str("{\"path\": \"missing.wav\"}\n");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn remote_scan_gives_the_local_verdicts() {
    let tmp = scratch("remote");
    let manifest = manifest(tmp.path());
    let port = free_port();
    let _server = serve(data_dir(), port);
    let url = format!("http://127.0.0.1:{port}");

    let local = tmp.path().join("local.jsonl");
    assert_eq!(
        run_scan(&[
            manifest.as_os_str(),
            OsStr::new("--report"),
            local.as_os_str()
        ]),
        3
    );

    // The data directory given to the client does not exist: everything is
    // decided by the server.
    let report = tmp.path().join("remote.jsonl");
    let summary = tmp.path().join("summary.json");
    let allowed = tmp.path().join("allowed.jsonl");
    let deadline = Instant::now() + READY_TIMEOUT;
    let out = loop {
        let out = Command::new(env!("CARGO_BIN_EXE_earmark"))
            .arg("--data")
            .arg(tmp.path().join("no-such-data"))
            .args(["scan", "--quiet", "--remote", &url, "--report"])
            .arg(&report)
            .arg("--summary")
            .arg(&summary)
            .arg("--allowed")
            .arg(&allowed)
            .arg(&manifest)
            .output()
            .unwrap();
        // The port accepts before the server has opened its data directory.
        if out.status.code() != Some(2) || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = read_report(&report);
    assert_eq!(verdicts(&rows), verdicts(&read_report(&local)));
    for (name, verdict) in SUBMISSIONS {
        assert_eq!(verdict_of(&rows, name), verdict, "{name}");
    }
    assert_eq!(verdict_of(&rows, "missing.wav"), "error");
    let excerpt = rows
        .iter()
        .find(|r| r["item"].as_str().unwrap().ends_with("excerpt-mp3.mp3"))
        .unwrap();
    assert_eq!(excerpt["matches"][0]["work_id"], "wesnoth-heroes-rite");
    assert_eq!(excerpt["matches"][0]["consent"], "opted-out");
    assert!(excerpt["matches"][0]["end_s"].as_f64().unwrap() > 1.0);
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    assert_eq!(summary["remote"]["url"], url.as_str());
    assert_eq!(summary["verdicts"]["block"]["items"], 3);
    assert_eq!(read_report(&allowed).len(), 2);
}

#[test]
fn unreachable_server_stops_the_scan() {
    let tmp = scratch("remote-down");
    let manifest = manifest(tmp.path());
    let report = tmp.path().join("r.jsonl");
    let url = format!("http://127.0.0.1:{}", free_port());
    let out = scan_cmd()
        .args(["--remote", &url, "--report"])
        .arg(&report)
        .arg(&manifest)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("remote"));
    let rows = if report.exists() {
        read_report(&report)
    } else {
        Vec::new()
    };
    assert!(
        rows.iter().all(|r| r["verdict"] != "error"),
        "no item is marked as an error for a server outage: {rows:?}"
    );
}

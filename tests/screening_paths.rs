//! One screening use case behind every entry point: the same clip screened by
//! `earmark identify --purpose`, a local `earmark scan`, `earmark scan
//! --remote`, `Screen` and `ScreenFingerprints` gets the same verdict, the same
//! works and the same submission id, and its opted-in use lands in the
//! attribution ledger once, under that id, whichever way it arrived.

mod service_support;

use std::path::Path;
use std::process::Command;

use earmark::data_dir::DataDir;
use earmark::fingerprint::file::FingerprintFile;
use earmark::proto as pb;
use service_support::*;

/// The clip: an excerpt of sectoid (opted in under the default seeds),
/// pitched up a semitone. Allowed, with an attribution.
const CLIP: &str = "submissions/pitched.ogg";

/// Every ledger row of a data directory: (submission id, work id).
fn ledger_rows(data: &DataDir) -> Vec<(String, String)> {
    let conn = rusqlite::Connection::open(data.registry_path()).expect("open registry");
    let mut st = conn
        .prepare(
            "SELECT a.submission_id, w.id FROM attributions a JOIN works w USING (reg_no) \
             ORDER BY a.id",
        )
        .expect("query");
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("rows")
        .map(|r| r.expect("row"))
        .collect()
}

/// `sha256:<hex>` of the clip's bytes: the one rule's id for it.
fn clip_id() -> String {
    format!("sha256:{}", earmark::content::sha256_hex(&read_audio(CLIP)))
}

/// What one path reported: verdict, confidently matched works, submission id
/// (where the path reports it).
#[derive(Debug, PartialEq)]
struct Outcome {
    verdict: String,
    works: Vec<String>,
    submission_id: Option<String>,
}

fn earmark(data: &DataDir) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_earmark"));
    cmd.arg("--data").arg(&data.root).env("CI", "1");
    cmd
}

fn identify(data: &DataDir, extra: &[&str]) -> Outcome {
    let out = earmark(data)
        .args(["identify", "--purpose", "ai-training", "--json"])
        .args(extra)
        .arg(audio(CLIP))
        .output()
        .expect("run identify");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json line");
    let verdict = &line["verdict"];
    let mut works: Vec<String> = verdict["evidence"]
        .as_array()
        .expect("evidence")
        .iter()
        .filter(|e| e["confident"] == true)
        .map(|e| e["work_id"].as_str().expect("id").to_owned())
        .collect();
    works.sort();
    Outcome {
        verdict: verdict["decision"].as_str().expect("decision").to_owned(),
        works,
        submission_id: verdict["submission_id"].as_str().map(str::to_owned),
    }
}

/// A scan of a one-line manifest naming the clip, locally or through a server.
fn scan(data: &DataDir, dir: &Path, extra: &[&str]) -> Outcome {
    let manifest = dir.join("clip.jsonl");
    std::fs::write(
        &manifest,
        format!("{{\"path\": \"{}\"}}\n", audio(CLIP).display()),
    )
    .expect("manifest");
    let report = dir.join(format!("report-{}.jsonl", extra.len()));
    let out = earmark(data)
        .args(["scan", "--quiet", "--purpose", "ai-training", "--report"])
        .arg(&report)
        .args(extra)
        .arg(&manifest)
        .output()
        .expect("run scan");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&report).expect("report");
    let row: serde_json::Value =
        serde_json::from_str(text.lines().next().expect("a row")).expect("json row");
    let mut works: Vec<String> = row["matches"]
        .as_array()
        .expect("matches")
        .iter()
        .filter(|m| m["confident"] == true)
        .map(|m| m["work_id"].as_str().expect("id").to_owned())
        .collect();
    works.sort();
    Outcome {
        verdict: row["verdict"].as_str().expect("verdict").to_owned(),
        works,
        submission_id: row["content_sha256"]
            .as_str()
            .map(|hex| format!("sha256:{hex}")),
    }
}

fn from_response(r: &pb::ScreenResponse) -> Outcome {
    let verdict: serde_json::Value = serde_json::from_str(&r.verdict_json).expect("verdict json");
    Outcome {
        verdict: verdict["decision"].as_str().expect("decision").to_owned(),
        works: matched_works(r),
        submission_id: verdict["submission_id"].as_str().map(str::to_owned),
    }
}

async fn screen_audio(data: &DataDir) -> Outcome {
    let server = start(open_config(data)).await;
    let mut client = screening(&server, None).await;
    let r = screen(&mut client, CLIP).await.expect("Screen");
    server.shutdown().await;
    from_response(&r)
}

async fn screen_prints(data: &DataDir) -> Outcome {
    let server = start(open_config(data)).await;
    let mut client = screening(&server, None).await;
    let fp = FingerprintFile::from_audio(&audio(CLIP), &Default::default()).expect("prints");
    let r = client
        .screen_fingerprints(tokio_stream::iter(fp.requests(pb::Scope::AiTraining, "")))
        .await
        .expect("ScreenFingerprints")
        .into_inner();
    server.shutdown().await;
    from_response(&r)
}

async fn scan_remote(data: &DataDir, dir: &Path) -> Outcome {
    let server = start(open_config(data)).await;
    let url = url(&server);
    // The client's own data directory is empty: the server decides.
    let client_data = DataDir::new(dir.join("client-data"));
    let dir = dir.to_path_buf();
    let outcome =
        tokio::task::spawn_blocking(move || scan(&client_data, &dir, &["--remote", url.as_str()]))
            .await
            .expect("scan thread");
    server.shutdown().await;
    outcome
}

/// A test server without API keys (the scan CLI is then given none).
fn open_config(data: &DataDir) -> earmark::service::ServerConfig {
    let mut c = config(data);
    insecure(&mut c);
    c
}

fn seeded(root: &Path, name: &str) -> DataDir {
    seed(&root.join(name), &default_seeds())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_entry_point_gives_one_verdict_one_id_and_one_ledger_row() {
    let tmp = tempfile::tempdir().expect("tmp");
    let want = Outcome {
        verdict: "allow".into(),
        works: vec![SECTOID.to_owned()],
        submission_id: Some(clip_id()),
    };
    let one_row = vec![(clip_id(), SECTOID.to_owned())];

    // Each path on its own data directory: each records the use, under the
    // same id.
    let mut outcomes = Vec::new();
    let data = seeded(tmp.path(), "identify");
    outcomes.push(("identify", identify(&data, &[]), ledger_rows(&data)));
    let data = seeded(tmp.path(), "scan");
    let scan_dir = tmp.path().join("scan-files");
    std::fs::create_dir_all(&scan_dir).expect("dir");
    outcomes.push(("scan", scan(&data, &scan_dir, &[]), ledger_rows(&data)));
    let data = seeded(tmp.path(), "remote");
    let remote_dir = tmp.path().join("remote-files");
    std::fs::create_dir_all(&remote_dir).expect("dir");
    outcomes.push((
        "scan --remote",
        scan_remote(&data, &remote_dir).await,
        ledger_rows(&data),
    ));
    let data = seeded(tmp.path(), "screen");
    outcomes.push(("Screen", screen_audio(&data).await, ledger_rows(&data)));
    let data = seeded(tmp.path(), "prints");
    outcomes.push((
        "ScreenFingerprints",
        screen_prints(&data).await,
        ledger_rows(&data),
    ));
    for (path, outcome, rows) in &outcomes {
        assert_eq!(outcome, &want, "{path}");
        assert_eq!(rows, &one_row, "{path}");
    }

    // All of them on one data directory: still one use of one submission.
    let data = seeded(tmp.path(), "shared");
    identify(&data, &[]);
    scan(&data, &scan_dir, &[]);
    scan_remote(&data, &remote_dir).await;
    screen_audio(&data).await;
    screen_prints(&data).await;
    assert_eq!(ledger_rows(&data), one_row);
    let totals = earmark::registry::Registry::open(&data.root)
        .expect("registry")
        .ledger_totals(None, None)
        .expect("totals");
    assert_eq!(
        totals
            .iter()
            .map(|t| (t.work_id.as_str(), t.attributions, t.submissions))
            .collect::<Vec<_>>(),
        vec![(SECTOID, 1, 1)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_records_nothing_on_any_path() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = seeded(tmp.path(), "dry");
    let dir = tmp.path().join("files");
    std::fs::create_dir_all(&dir).expect("dir");
    assert_eq!(identify(&data, &["--no-ledger"]).verdict, "allow");
    assert_eq!(scan(&data, &dir, &["--no-ledger"]).verdict, "allow");
    let server = start(open_config(&data)).await;
    let url = url(&server);
    let (client_data, dir2) = (DataDir::new(tmp.path().join("client")), dir.clone());
    let remote = tokio::task::spawn_blocking(move || {
        scan(
            &client_data,
            &dir2,
            &["--no-ledger", "--remote", url.as_str()],
        )
    })
    .await
    .expect("scan thread");
    assert_eq!(remote.verdict, "allow");
    let mut client = screening(&server, None).await;
    let mut meta = metadata(CLIP, pb::Scope::AiTraining);
    meta.no_ledger = true;
    let r = screen_bytes(&mut client, meta, &read_audio(CLIP))
        .await
        .expect("Screen");
    assert_eq!(
        (decision(&r), r.new_ledger_entries),
        (pb::Decision::Allow, 0)
    );
    server.shutdown().await;
    assert!(ledger_rows(&data).is_empty());
}

//! `earmark scan --resume` after a kill: finished items are not screened again,
//! and the report, the filtered copy and the summary equal those of an
//! uninterrupted run (no duplicate or lost rows).

mod scan_common;

use std::ffi::OsStr;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use scan_common::*;

/// Rows in the corpus (the sample submissions, repeated).
const ROUNDS: usize = 25;

fn manifest(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("manifest.jsonl");
    let mut text = String::new();
    for round in 0..ROUNDS {
        for (name, _) in SUBMISSIONS {
            text.push_str(&format!(
                "{{\"path\": \"{}\", \"round\": {round}}}\n",
                audio(&format!("submissions/{name}")).display()
            ));
        }
    }
    std::fs::write(&path, text).unwrap();
    path
}

fn args<'a>(
    manifest: &'a Path,
    report: &'a Path,
    allowed: &'a Path,
    summary: &'a Path,
) -> Vec<&'a OsStr> {
    vec![
        manifest.as_os_str(),
        OsStr::new("--report"),
        report.as_os_str(),
        OsStr::new("--allowed"),
        allowed.as_os_str(),
        OsStr::new("--summary"),
        summary.as_os_str(),
        OsStr::new("--jobs"),
        OsStr::new("1"),
        OsStr::new("--resume"),
    ]
}

fn complete_lines(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

#[test]
fn resume_after_kill_matches_an_uninterrupted_run() {
    let tmp = scratch("resume");
    let manifest = manifest(tmp.path());
    let total = ROUNDS * SUBMISSIONS.len();

    // Reference: one uninterrupted run.
    let (r_report, r_allowed, r_summary) = (
        tmp.path().join("ref.jsonl"),
        tmp.path().join("ref-allowed.jsonl"),
        tmp.path().join("ref-summary.json"),
    );
    assert_eq!(
        run_scan(&args(&manifest, &r_report, &r_allowed, &r_summary)),
        1
    );

    // Interrupted run: kill -9 once some rows are durable.
    let (report, allowed, summary) = (
        tmp.path().join("report.jsonl"),
        tmp.path().join("allowed.jsonl"),
        tmp.path().join("summary.json"),
    );
    let mut child = scan_cmd()
        .args(args(&manifest, &report, &allowed, &summary))
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while complete_lines(&report) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let done_before = complete_lines(&report);
    assert!(
        done_before > 0 && done_before < total,
        "killed after {done_before} of {total} rows"
    );
    assert!(
        !allowed.exists(),
        "no half-written filtered copy is published"
    );
    // A crash in the middle of writing a row.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&report)
        .unwrap()
        .write_all(b"{\"item\": \"torn")
        .unwrap();

    // A resume with other options is refused.
    let mut other = args(&manifest, &report, &allowed, &summary);
    other.extend([OsStr::new("--unknown"), OsStr::new("allow")]);
    let refused = scan_cmd().args(&other).output().unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("resume"));

    // The same command continues.
    assert_eq!(run_scan(&args(&manifest, &report, &allowed, &summary)), 1);
    let rows = read_report(&report);
    let reference = read_report(&r_report);
    assert_eq!(rows.len(), total);
    assert_eq!(verdicts(&rows), verdicts(&reference));
    let positions: Vec<u64> = rows
        .iter()
        .map(|r| r["position"].as_u64().unwrap())
        .collect();
    assert_eq!(
        positions,
        (1..=total as u64).collect::<Vec<_>>(),
        "no duplicate or lost rows"
    );
    assert_eq!(
        std::fs::read_to_string(&allowed).unwrap(),
        std::fs::read_to_string(&r_allowed).unwrap()
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    let r_summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&r_summary).unwrap()).unwrap();
    assert!(summary["resumed_items"].as_u64().unwrap() >= done_before as u64);
    assert_eq!(
        summary["throughput"]["items_screened"].as_u64().unwrap()
            + summary["resumed_items"].as_u64().unwrap(),
        total as u64
    );
    for key in ["items", "verdicts", "blocked_works", "flagged_works"] {
        assert_eq!(summary[key], r_summary[key], "{key}");
    }
}

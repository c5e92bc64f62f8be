//! The HTML report of a real scan, opened in headless Chromium (the system
//! `chromium`, driven by `tests/browser/report-page.mjs` through
//! playwright-core; both installed by `scripts/setup.sh`). The page must show
//! the totals of the summary JSON, every blocked item with its timeline, a
//! filter and a search that narrow the table, and no console error or
//! network request. The screenshot is kept in `target/report-html/`.

mod scan_common;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use scan_common::*;
use serde_json::Value;

/// A file name that would run code if the page ever parsed data as markup.
const HOSTILE_NAME: &str = "\"><img src=x onerror=\"window.pwned=1\">«x»\u{202e}.mp3";
/// The search typed into the page: one registered work.
const SEARCH: &str = "wesnoth-northerners";

fn os(p: &Path) -> &OsStr {
    p.as_os_str()
}

fn browser_dir() -> PathBuf {
    repo().join("tests/browser")
}

/// Runs the browser driver; fails with the set-up hint when it is missing.
fn driver(args: &[&OsStr]) -> Value {
    let chromium =
        std::env::var_os("EARMARK_CHROMIUM").unwrap_or_else(|| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{} not found: run scripts/setup.sh (Debian package chromium)",
        chromium.to_string_lossy()
    );
    assert!(
        browser_dir().join("node_modules/playwright-core").is_dir(),
        "tests/browser/node_modules is missing: run scripts/setup.sh (npm ci in tests/browser)"
    );
    let out = Command::new("node")
        .arg(browser_dir().join("report-page.mjs"))
        .args(args)
        .output()
        .expect("node runs (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "browser driver failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "driver output is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// `12,345` as the page prints counts.
fn count_text(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A name as the page shows it: invisible and text-reordering characters
/// (controls, zero-width and bidirectional marks) written as `[U+XXXX]`.
fn visible(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\u{0}'..='\u{1f}'
            | '\u{7f}'..='\u{9f}'
            | '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{2069}'
            | '\u{feff}' => format!("[U+{:04X}]", u32::from(c)),
            c => c.to_string(),
        })
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

fn items_with_verdict(rows: &[Value], verdict: &str) -> BTreeSet<String> {
    rows.iter()
        .filter(|r| r["verdict"] == verdict)
        .map(|r| visible(r["item"].as_str().unwrap()))
        .collect()
}

/// Rows whose path, or a matched work's id, title or holder, contains `q`.
fn rows_matching(rows: &[Value], q: &str) -> BTreeSet<String> {
    let q = q.to_lowercase();
    let has = |v: &Value| v.as_str().is_some_and(|s| s.to_lowercase().contains(&q));
    rows.iter()
        .filter(|r| {
            has(&r["item"])
                || r["matches"].as_array().unwrap().iter().any(|m| {
                    has(&m["work_id"]) || has(&m["title"]) || has(&m["holder"]) || has(&m["isrc"])
                })
        })
        .map(|r| visible(r["item"].as_str().unwrap()))
        .collect()
}

#[test]
fn the_report_of_a_real_scan_reads_right_in_chromium() {
    let tmp = scratch("html");
    let corpus = tmp.path().join("corpus");
    std::fs::create_dir_all(&corpus).unwrap();
    for (name, _) in SUBMISSIONS {
        std::fs::copy(audio(&format!("submissions/{name}")), corpus.join(name)).unwrap();
    }
    std::fs::copy(
        audio("submissions/excerpt-mp3.mp3"),
        corpus.join(HOSTILE_NAME),
    )
    .unwrap();
    std::fs::copy(audio("formats/bad/text.wav"), corpus.join("broken.wav")).unwrap();

    let report = tmp.path().join("report.jsonl");
    let summary_path = tmp.path().join("summary.json");
    let page = tmp.path().join("report.html");
    let code = run_scan(&[
        os(&corpus),
        OsStr::new("--report"),
        os(&report),
        OsStr::new("--summary"),
        os(&summary_path),
        OsStr::new("--html"),
        os(&page),
    ]);
    assert_eq!(code, 3, "the broken file makes the exit code 3");
    let rows = read_report(&report);
    let summary: Value = serde_json::from_slice(&std::fs::read(&summary_path).unwrap()).unwrap();
    assert_eq!(rows.len(), SUBMISSIONS.len() + 2);
    assert_eq!(verdict_of(&rows, "broken.wav"), "error");
    assert_eq!(verdict_of(&rows, HOSTILE_NAME), "block");

    // `earmark report` makes the same page from the files.
    let again = tmp.path().join("again.html");
    let out = Command::new(env!("CARGO_BIN_EXE_earmark"))
        .arg("report")
        .arg(&report)
        .arg("--summary")
        .arg(&summary_path)
        .arg("--html")
        .arg(&again)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let data_of = |p: &Path| {
        let html = std::fs::read_to_string(p).unwrap();
        let start = html.find("id=\"items-data\"").unwrap();
        let end = start + html[start..].find("</script>").unwrap();
        html[start..end].to_owned()
    };
    assert_eq!(data_of(&page), data_of(&again));

    let artifacts = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("report-html");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join("report.png");
    let _ = std::fs::remove_file(&screenshot);
    let seen = driver(&[
        OsStr::new("check"),
        os(&page),
        os(&screenshot),
        OsStr::new(SEARCH),
    ]);

    // Nothing went wrong in the page, nothing was fetched, no data ran.
    assert_eq!(seen["problems"], serde_json::json!([]), "console errors");
    assert_eq!(seen["requests"], serde_json::json!([]), "network requests");
    assert_eq!(seen["pwned"], Value::Null, "a file name ran as code");

    // Totals equal the summary JSON.
    let totals = &seen["totals"];
    // Without JavaScript the totals and works tables read the same; the item
    // table, which needs the script, is not shown half-built.
    let plain = &seen["noScript"];
    assert_eq!(&plain["totals"], totals);
    assert_eq!(
        plain["blockedWorks"],
        summary["blocked_works"].as_array().unwrap().len()
    );
    assert_eq!(
        plain["flaggedWorks"],
        summary["flagged_works"].as_array().unwrap().len()
    );
    assert_eq!(plain["itemTableShown"], false);
    assert_eq!(
        totals["items"],
        count_text(summary["items"].as_u64().unwrap())
    );
    assert!(
        totals["hours"].as_str().unwrap().starts_with(&format!(
            "{:.3} h",
            summary["audio_hours"].as_f64().unwrap()
        )),
        "{totals}"
    );
    for v in ["allow", "flag", "block", "error"] {
        let t = &summary["verdicts"][v];
        assert_eq!(
            totals[format!("{v}-items")],
            count_text(t["items"].as_u64().unwrap()),
            "{v} items"
        );
        let hours = format!("{:.3} h", t["audio_hours"].as_f64().unwrap());
        assert!(
            totals[format!("{v}-hours")]
                .as_str()
                .unwrap()
                .starts_with(&hours),
            "{v} hours: {totals} vs {hours}"
        );
    }
    let kinds: serde_json::Map<String, Value> = summary["errors_by_kind"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, n)| (k.clone(), Value::from(count_text(n.as_u64().unwrap()))))
        .collect();
    assert_eq!(seen["errorKinds"], Value::Object(kinds));
    // The chart labels every bar with its count.
    let labels = strings(&seen["chartLabels"]);
    assert_eq!(labels.len(), 4);
    for (label, v) in labels.iter().zip(["block", "flag", "allow", "error"]) {
        let n = summary["verdicts"][v]["items"].as_u64().unwrap();
        let word = if n == 1 { "item" } else { "items" };
        assert!(
            label.contains(&format!(": {} {word},", count_text(n))),
            "{label}"
        );
    }
    // Works tables: one row per blocked / flagged work of the summary.
    for (key, list) in [
        ("blockedWorks", "blocked_works"),
        ("flaggedWorks", "flagged_works"),
    ] {
        let shown: Vec<String> = seen[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|cells| cells[1].as_str().unwrap().to_owned())
            .collect();
        let expected: Vec<String> = summary[list]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["work_id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(shown, expected, "{key}");
    }

    // The table shows every item; each verdict filter narrows it to exactly
    // that verdict's items.
    assert_eq!(seen["all"]["count"], rows.len() as u64);
    let all: BTreeSet<String> = strings(&seen["all"]["items"]).into_iter().collect();
    let expected: BTreeSet<String> = rows
        .iter()
        .map(|r| visible(r["item"].as_str().unwrap()))
        .collect();
    assert_eq!(all, expected);
    // The hostile name is shown as text, its direction override spelled out.
    assert!(
        all.iter()
            .any(|i| i.ends_with("\"><img src=x onerror=\"window.pwned=1\">«x»[U+202E].mp3")),
        "{all:?}"
    );
    for v in ["block", "flag", "allow", "error"] {
        let shown: BTreeSet<String> = strings(&seen["byVerdict"][v]["items"])
            .into_iter()
            .collect();
        assert_eq!(shown, items_with_verdict(&rows, v), "filter {v}");
        assert_eq!(
            seen["byVerdict"][v]["count"], summary["verdicts"][v]["items"],
            "filter {v} count"
        );
        assert!(shown.len() < rows.len(), "filter {v} narrows the table");
    }

    // Every blocked item appears with its timeline: one labelled segment per
    // match, coloured by the match's outcome, and its reasons.
    let timelines = seen["blockedTimelines"].as_array().unwrap();
    let blocked: Vec<&Value> = rows.iter().filter(|r| r["verdict"] == "block").collect();
    assert_eq!(blocked.len(), 4);
    assert_eq!(timelines.len(), blocked.len());
    for row in blocked {
        let item = row["item"].as_str().unwrap();
        let t = timelines
            .iter()
            .find(|t| t["item"] == item)
            .unwrap_or_else(|| panic!("no timeline for {item}"));
        assert_eq!(t["verdict"], "block");
        let matches = row["matches"].as_array().unwrap();
        let segments = t["segments"].as_array().unwrap();
        assert_eq!(segments.len(), matches.len(), "{item}");
        for (n, (seg, m)) in segments.iter().zip(matches).enumerate() {
            assert_eq!(seg["outcome"], m["outcome"], "{item} match {}", n + 1);
            let label = seg["label"].as_str().unwrap();
            assert_eq!(
                label,
                format!(
                    "{} {}",
                    n + 1,
                    m["outcome"].as_str().unwrap().to_uppercase()
                )
            );
            assert!(seg["width"].as_f64().unwrap() > 0.0 && seg["height"].as_f64().unwrap() > 0.0);
            let entry = t["matches"][n]["text"].as_str().unwrap();
            assert!(entry.contains(m["work_id"].as_str().unwrap()), "{entry}");
            assert!(
                entry.contains("speed ×") && entry.contains("pitch ×") && entry.contains("score ")
            );
        }
        let bar = t["bars"][0].as_str().unwrap();
        for m in matches {
            assert!(bar.contains(m["work_id"].as_str().unwrap()), "{bar}");
        }
        assert_eq!(t["reasons"], row["reasons"], "{item}");
    }
    let png = std::fs::read(&screenshot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));

    // The search narrows the table to the items of that work.
    let found: BTreeSet<String> = strings(&seen["search"]["items"]).into_iter().collect();
    assert_eq!(found, rows_matching(&rows, SEARCH));
    assert!(!found.is_empty() && found.len() < rows.len(), "{found:?}");

    // Sorting by duration orders the column (the unscreened item, without a
    // duration, last).
    assert_eq!(seen["durationSort"], "ascending");
    let durations = strings(&seen["sortedDurations"]);
    let seconds: Vec<f64> = durations
        .iter()
        .map(|d| {
            d.split_once(':').map_or(f64::INFINITY, |(m, s)| {
                m.parse::<f64>().unwrap() * 60.0 + s.parse::<f64>().unwrap()
            })
        })
        .collect();
    assert!(seconds.windows(2).all(|w| w[0] <= w[1]), "{durations:?}");

    // A narrow window does not scroll sideways.
    let narrow = &seen["narrow"];
    assert!(
        narrow["scrollWidth"].as_u64().unwrap() <= narrow["clientWidth"].as_u64().unwrap(),
        "{narrow}"
    );
}

#[test]
fn identify_writes_the_same_page_for_a_few_files() {
    let tmp = scratch("html-identify");
    let page = tmp.path().join("identify.html");
    let files = [
        audio("submissions/speed.wav"),
        audio("submissions/unrelated.ogg"),
        audio("formats/bad/text.wav"),
    ];
    let out = Command::new(env!("CARGO_BIN_EXE_earmark"))
        .arg("--data")
        .arg(data_dir())
        .args([
            "identify",
            "--purpose",
            "ai-training",
            "--no-ledger",
            "--html",
        ])
        .arg(&page)
        .args(&files)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a file could not be screened");
    let html = std::fs::read_to_string(&page).unwrap();
    let start = html.find("id=\"items-data\"").unwrap();
    let start = start + html[start..].find('>').unwrap() + 1;
    let end = start + html[start..].find("</script>").unwrap();
    let data: Value = serde_json::from_str(&html[start..end]).unwrap();
    let items = data["items"].as_array().unwrap();
    let names: Vec<&str> = items.iter().map(|i| i[0].as_str().unwrap()).collect();
    let expected: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    assert_eq!(names, expected);
    // Verdict codes: 0 allow, 1 flag, 2 block, 3 error.
    let verdicts: Vec<u64> = items.iter().map(|i| i[6].as_u64().unwrap()).collect();
    assert_eq!(verdicts, [2, 0, 3]);
    assert_eq!(
        items[0][7].as_array().unwrap().len(),
        1,
        "the match of speed.wav"
    );
    assert!(
        items[2][9].as_str().unwrap().contains("text.wav"),
        "the error"
    );
    for (total, n) in [
        ("block-items", 1),
        ("allow-items", 1),
        ("error-items", 1),
        ("items", 3),
    ] {
        assert!(
            html.contains(&format!("data-total=\"{total}\">{n}<")),
            "{total} = {n}"
        );
    }
    assert!(
        html.contains("wesnoth-heroes-rite"),
        "the blocked work is listed"
    );
}

//! End-to-end test of `earmark eval` pooling several evaluation sets: each
//! set's queries must run against that set's own reference index, and the
//! pooled report must hold every query once, named by its set.

use std::fs;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::{Value, json};

mod scan_common;
use scan_common::audio;

const BIN: &str = env!("CARGO_BIN_EXE_earmark");

fn reference(id: &str) -> PathBuf {
    audio(&format!("refs/{id}.ogg"))
}

fn write_jsonl(path: &Path, rows: &[Value]) {
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    fs::write(path, text).unwrap();
}

/// An evaluation set registering `works`, whose queries are the whole clip
/// of `positive` (one of `works`), the clip of `absent` (not registered here:
/// a negative) and speech (a negative).
fn make_set(dir: &Path, works: &[&str], positive: &str, absent: &str) {
    fs::create_dir_all(dir).unwrap();
    let refs: Vec<Value> = works
        .iter()
        .map(|id| json!({"work_id": id, "path": reference(id)}))
        .collect();
    write_jsonl(&dir.join("refs.jsonl"), &refs);
    let query = |id: &str, path: PathBuf, work: Option<&str>| {
        json!({
            "query_id": id, "path": path, "condition": "clean", "length_s": 10.0,
            "work_id": work, "ref_start_s": work.map(|_| 0.0),
            "query_start_s": work.map(|_| 0.0), "query_end_s": work.map(|_| 28.0),
        })
    };
    write_jsonl(
        &dir.join("queries.jsonl"),
        &[
            query("q-positive", reference(positive), Some(positive)),
            query("q-absent", reference(absent), None),
            query("q-speech", audio("submissions/speech.ogg"), None),
        ],
    );
}

/// Runs `earmark eval` with `args`, its JSON report written into `dir`.
fn run_eval(dir: &Path, args: &[&std::ffi::OsStr]) -> Value {
    let out = dir.join("report.json");
    let run = Command::new(BIN)
        .env_remove("EARMARK_EVAL")
        .env_remove("EARMARK_DATA")
        .arg("eval")
        .args(args)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "eval failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    serde_json::from_slice(&fs::read(&out).unwrap()).unwrap()
}

#[test]
fn pooled_sets_each_run_against_their_own_index() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("set-a"), tmp.path().join("set-b"));
    // Each set's "absent" query is the other set's registered work: run
    // against the wrong index it would be a false positive, and each set's
    // positive would be missed.
    make_set(
        &a,
        &["wesnoth-heroes-rite", "fof-muldjord-armygeddon"],
        "wesnoth-heroes-rite",
        "wesnoth-northerners",
    );
    make_set(
        &b,
        &["wesnoth-northerners", "fof-sectoid-war-of-freedom"],
        "wesnoth-northerners",
        "wesnoth-heroes-rite",
    );
    let report = run_eval(
        tmp.path(),
        &[
            "--set".as_ref(),
            a.as_os_str(),
            "--set".as_ref(),
            b.as_os_str(),
        ],
    );
    assert_eq!(report["queries"], 6);
    assert_eq!(report["false_positives"], 0, "{report:#}");
    let outcomes = report["outcomes"].as_array().unwrap();
    let mut ids: Vec<&str> = outcomes
        .iter()
        .map(|o| o["query_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        [
            "set-a/q-absent",
            "set-a/q-positive",
            "set-a/q-speech",
            "set-b/q-absent",
            "set-b/q-positive",
            "set-b/q-speech"
        ]
    );
    for set in ["set-a", "set-b"] {
        let positive = outcomes
            .iter()
            .find(|o| o["query_id"] == format!("{set}/q-positive"))
            .unwrap();
        let score = positive["correct_score"].as_f64().unwrap();
        assert!(score >= 7.5, "{set}: its own work scored {score}");
        let absent = outcomes
            .iter()
            .find(|o| o["query_id"] == format!("{set}/q-absent"))
            .unwrap();
        assert!(
            absent["wrong_score"].as_f64().unwrap() < 7.0,
            "{set}: the other set's work matched: {absent:#}"
        );
    }
    // Each set cached its own index beside its queries.
    for set in [&a, &b] {
        let cached = fs::read_dir(set)
            .unwrap()
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().starts_with("index-"));
        assert!(cached, "{} has no cached index", set.display());
    }
}

/// `--catalog-hours` pads the reference index with scrambled replicas: the
/// index holds the asked hours under padding ids, the registered work is still
/// found confidently, and a replica of it is never what matches.
#[test]
fn catalog_padding_fills_the_index_and_keeps_the_right_work() {
    let tmp = tempfile::tempdir().unwrap();
    let set = tmp.path().join("set");
    make_set(
        &set,
        &["wesnoth-heroes-rite", "fof-muldjord-armygeddon"],
        "wesnoth-heroes-rite",
        "wesnoth-northerners",
    );
    let report = run_eval(
        tmp.path(),
        &[
            "--catalog-hours".as_ref(),
            "2".as_ref(),
            "--set".as_ref(),
            set.as_os_str(),
        ],
    );
    let outcomes = report["outcomes"].as_array().unwrap();
    let positive = outcomes
        .iter()
        .find(|o| o["query_id"] == "q-positive")
        .unwrap();
    assert!(
        positive["correct_score"].as_f64().unwrap() >= 7.5,
        "{positive:#}"
    );
    assert!(
        positive["wrong_score"].as_f64().unwrap() < 7.0,
        "a replica matched: {positive:#}"
    );
    assert_eq!(report["false_positives"], 0, "{report:#}");
    // The padded index is cached apart from the plain one and holds ~2 h.
    let padded = fs::read_dir(&set)
        .unwrap()
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().ends_with("-2h"))
        .expect("a padded index beside the set");
    let stats = Command::new(BIN)
        .env_remove("EARMARK_DATA")
        .arg("--data")
        .arg(padded.path())
        .args(["index", "stats", "--json"])
        .output()
        .unwrap();
    assert!(
        stats.status.success(),
        "index stats failed: {}",
        String::from_utf8_lossy(&stats.stderr)
    );
    let stats: Value = serde_json::from_slice(&stats.stdout).unwrap();
    let hours = stats["reference_hours"].as_f64().unwrap();
    assert!((2.0..2.1).contains(&hours), "padded index holds {hours} h");
    assert!(stats["live_works"].as_u64().unwrap() > 200, "{stats:#}");
}

/// `--explain-misses` scores each missed positive at its true alignment:
/// with an unreachable confident threshold every positive is a miss; the
/// right ground truth scores far above chance there, a wrong one does not,
/// and found queries and negatives are not scored.
#[test]
fn missed_positives_are_scored_at_their_true_alignment() {
    let tmp = tempfile::tempdir().unwrap();
    let set = tmp.path().join("set");
    make_set(
        &set,
        &["wesnoth-heroes-rite", "fof-muldjord-armygeddon"],
        "wesnoth-heroes-rite",
        "wesnoth-northerners",
    );
    // A second positive whose ground truth puts the excerpt 7 s later in the
    // reference than it is.
    let mut rows: Vec<Value> = fs::read_to_string(set.join("queries.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut misplaced = rows[0].clone();
    misplaced["query_id"] = json!("q-misplaced");
    misplaced["ref_start_s"] = json!(7.0);
    rows.push(misplaced);
    write_jsonl(&set.join("queries.jsonl"), &rows);

    let explained = |confident: &str| {
        let report = run_eval(
            tmp.path(),
            &[
                "--set".as_ref(),
                set.as_os_str(),
                "--explain-misses".as_ref(),
                "--confident-score".as_ref(),
                confident.as_ref(),
            ],
        );
        report["outcomes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                (
                    o["query_id"].as_str().unwrap().to_string(),
                    o["true_alignment_score"].as_f64(),
                )
            })
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let all_missed = explained("1000");
    let right = all_missed["q-positive"].expect("the positive was scored");
    assert!(right > 20.0, "true alignment scored {right}");
    let wrong = all_missed["q-misplaced"].expect("the misplaced query was scored");
    assert!(wrong < 5.0, "a wrong alignment scored {wrong}");
    assert_eq!(all_missed["q-absent"], None);
    assert_eq!(all_missed["q-speech"], None);
    // At the default threshold the positive is found: nothing to explain.
    assert_eq!(explained("7.5")["q-positive"], None);
}

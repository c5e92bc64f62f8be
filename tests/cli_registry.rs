//! End-to-end tests of the registry side of the CLI (issue 3): `works add` /
//! `import` / `list` / `show` / `remove`, `consent`, `identify --purpose`,
//! `ledger`, `audit verify`, and recovery from a kill during an import. They
//! run the real binary on the real clips in `test-audio/`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use serde_json::Value;
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_earmark");
const HEROES: &str = "wesnoth-heroes-rite";
const NORTHERNERS: &str = "wesnoth-northerners";
const ARMYGEDDON: &str = "fof-muldjord-armygeddon";
const SECTOID: &str = "fof-sectoid-war-of-freedom";

fn audio(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("test-audio")
        .join(rel)
}

fn reference(id: &str) -> PathBuf {
    audio(&format!("refs/{id}.ogg"))
}

fn earmark(data: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("--data")
        .arg(data)
        .env("EARMARK_ACTOR", "tester")
        .env_remove("EARMARK_DATA")
        .env_remove("EARMARK_LOG");
    cmd
}

/// Runs and returns (exit code, stdout, stderr).
fn run(data: &Path, args: &[&str]) -> (i32, String, String) {
    let out = earmark(data).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn run_ok(data: &Path, args: &[&str]) -> String {
    let (code, out, err) = run(data, args);
    assert_eq!(code, 0, "earmark {args:?} failed:\n{out}\n{err}");
    out
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn add(data: &Path, id: &str, extra: &[&str]) {
    let file = reference(id);
    let mut args = vec!["works", "add", "--id", id, file.to_str().unwrap()];
    args.extend_from_slice(extra);
    run_ok(data, &args);
}

/// The four reference clips: heroes-rite opted out of AI training, northerners
/// with no consent on record, the two rock tracks opted in.
fn register_all(data: &Path) {
    let out = ["--consent", "opted-out", "--scope", "ai-training"];
    let in_ = ["--consent", "opted-in", "--holder", "Rock Holder Ltd"];
    add(data, HEROES, &out);
    add(data, NORTHERNERS, &[]);
    add(data, ARMYGEDDON, &in_);
    add(data, SECTOID, &in_);
}

/// `identify --purpose ai-training --json` on one submission: (exit, verdict).
fn screen(data: &Path, submission: &str, extra: &[&str]) -> (i32, Value) {
    let file = audio(submission);
    let mut args = vec!["identify", "--json", "--purpose", "ai-training"];
    args.extend_from_slice(extra);
    args.push(file.to_str().unwrap());
    let (code, out, err) = run(data, &args);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "one line per file:\n{out}\n{err}");
    let line = json(lines[0]);
    for key in ["file", "duration_s", "matches", "error", "verdict"] {
        assert!(line.get(key).is_some(), "missing {key}: {line}");
    }
    (code, line["verdict"].clone())
}

fn registry_count(data: &Path) -> usize {
    json(&run_ok(data, &["works", "list", "--json"]))
        .as_array()
        .unwrap()
        .len()
}

fn live_indexed(data: &Path) -> u64 {
    json(&run_ok(data, &["index", "stats", "--json"]))["live_works"]
        .as_u64()
        .unwrap()
}

#[test]
fn works_add_with_metadata_then_show_and_list() {
    let dir = TempDir::new().unwrap();
    let data = dir.path();
    let file = reference(HEROES);
    let out = run_ok(
        data,
        &[
            "works",
            "add",
            file.to_str().unwrap(),
            "--id",
            HEROES,
            "--title",
            "Heroes Rite",
            "--artist",
            "Wesnoth Composers",
            "--artist",
            "Second Artist",
            "--isrc",
            "us-s1z-99-00001",
            "--iswc",
            "T-034.524.680-1",
            "--holder",
            "Wesnoth Project",
            "--consent",
            "opted-out",
            "--scope",
            "ai-training",
            "--scope",
            "voice-synthesis",
        ],
    );
    assert!(
        out.starts_with("registered wesnoth-heroes-rite: 28.0 s"),
        "{out}"
    );
    assert!(out.contains("opted-out for voice-synthesis"), "{out}");

    let show = json(&run_ok(data, &["works", "show", HEROES, "--json"]));
    let work = &show["work"];
    assert_eq!(work["title"], "Heroes Rite");
    assert_eq!(
        work["artists"],
        serde_json::json!(["Wesnoth Composers", "Second Artist"])
    );
    assert_eq!(work["isrc"], "USS1Z9900001");
    assert_eq!(work["holder"], "Wesnoth Project");
    assert_eq!(
        work["reference"]["audio_sha256"].as_str().unwrap().len(),
        64
    );
    assert_eq!(show["in_force_now"]["ai-training"]["status"], "opted-out");
    assert_eq!(
        show["in_force_now"]["voice-synthesis"]["status"],
        "opted-out"
    );
    assert_eq!(show["in_force_now"]["ai-generation"]["status"], "unknown");
    assert_eq!(show["history"].as_array().unwrap().len(), 2);
    assert_eq!(show["history"][0]["asserted_by"], "Wesnoth Project");

    let human = run_ok(data, &["works", "show", HEROES]);
    assert!(human.contains("US-S1Z-99-00001"), "{human}");
    let list = run_ok(data, &["works", "list"]);
    assert!(
        list.contains(HEROES) && list.contains("1 of 1 works"),
        "{list}"
    );

    // Issue 2's form (id flag after the file, no metadata) still works.
    let north = reference(NORTHERNERS);
    run_ok(
        data,
        &["works", "add", "--id", NORTHERNERS, north.to_str().unwrap()],
    );
    let shown = json(&run_ok(data, &["works", "show", NORTHERNERS, "--json"]));
    assert_eq!(shown["work"]["holder"], "unknown");
    assert_eq!(shown["history"].as_array().unwrap().len(), 0);
    // Registering the same id again is refused.
    let (code, _, err) = run(
        data,
        &["works", "add", "--id", NORTHERNERS, north.to_str().unwrap()],
    );
    assert_eq!(code, 2);
    assert!(err.contains("already registered"), "{err}");
    assert_eq!(registry_count(data), 2);
    assert_eq!(live_indexed(data), 2);
}

#[test]
fn bad_identifiers_are_rejected_with_reasons() {
    let dir = TempDir::new().unwrap();
    let data = dir.path();
    let file = reference(HEROES);
    let file = file.to_str().unwrap();
    let cases: [(&[&str], &str); 4] = [
        (&["--id", HEROES, "--isrc", "US-S1Z-99"], "invalid ISRC"),
        (&["--id", HEROES, "--iswc", "T-123"], "invalid ISWC"),
        (&["--id", "has space", "--title", "x"], "invalid work id"),
        (&["--id", HEROES, "--scope", "ai-training"], "--consent"),
    ];
    for (args, expected) in cases {
        let mut all = vec!["works", "add", file];
        all.extend_from_slice(args);
        let (code, _, err) = run(data, &all);
        assert_eq!(code, 2, "{args:?}");
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    let (code, _, err) = run(
        data,
        &[
            "works",
            "add",
            file,
            "--id",
            HEROES,
            "--isrc",
            "XX-ABC-12-1234",
        ],
    );
    assert_eq!(code, 2);
    assert!(err.contains("invalid ISRC 'XX-ABC-12-1234'"), "{err}");
    // Missing and corrupt reference audio: one clear line naming the file.
    let missing = data.join("missing.ogg");
    let corrupt = audio("formats/bad/text.wav");
    for (path, why) in [
        (missing.as_path(), "cannot read: No such file or directory"),
        (corrupt.as_path(), "not a recognised audio format"),
    ] {
        let (code, _, err) = run(data, &["works", "add", path.to_str().unwrap(), "--id", "w"]);
        assert_eq!(code, 2, "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(&format!("{}: {why}", path.display())), "{err}");
        assert!(err.matches("No such file").count() <= 1, "{err}");
    }
    // Unknown work ids and bad dates.
    for (args, why) in [
        (
            &[
                "consent",
                "set",
                "ghost",
                "--scope",
                "ai-training",
                "--status",
                "opted-out",
            ][..],
            "work 'ghost' is not registered",
        ),
        (
            &["works", "remove", "ghost"][..],
            "work 'ghost' is not registered",
        ),
        (
            &["consent", "history", "ghost"][..],
            "work 'ghost' is not registered",
        ),
        (
            &[
                "consent",
                "set",
                "ghost",
                "--scope",
                "ai-training",
                "--status",
                "opted-out",
                "--from",
                "2026-02-30",
            ][..],
            "invalid timestamp '2026-02-30'",
        ),
    ] {
        let (code, _, err) = run(data, args);
        assert_eq!(code, 2, "{args:?}");
        assert!(err.contains(why), "{args:?}: {err}");
    }
    // Nothing was registered, in either store.
    assert_eq!(registry_count(data), 0);
    assert_eq!(live_indexed(data), 0);
}

#[test]
fn identify_with_purpose_blocks_allows_and_flags() {
    let dir = TempDir::new().unwrap();
    let data = dir.path();
    register_all(data);

    // Opted out → block, with the deciding record as evidence.
    let (code, v) = screen(data, "submissions/excerpt-mp3.mp3", &[]);
    assert_eq!(code, 1);
    assert_eq!(v["decision"], "block");
    assert_eq!(v["purpose"], "ai-training");
    assert_eq!(v["evidence"][0]["work_id"], HEROES);
    assert_eq!(v["evidence"][0]["consent"], "opted-out");
    assert!(v["evidence"][0]["deciding_record"]["id"].is_i64());
    assert_eq!(v["policy_version"], "earmark-policy/2");
    assert_eq!(v["engine_version"], env!("CARGO_PKG_VERSION"));
    assert!(v["index_generation"].as_u64().unwrap() >= 4);
    assert!(
        v["reasons"][0]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("block"),
        "{v}"
    );
    assert_eq!(v["attributions"], serde_json::json!([]));

    // Opted in → allow, attribution written to the ledger (once per submission).
    let (code, v) = screen(data, "submissions/pitched.ogg", &[]);
    assert_eq!(code, 0);
    assert_eq!(v["decision"], "allow");
    assert_eq!(v["attributions"][0]["work_id"], SECTOID);
    assert!(v["submission_id"].as_str().unwrap().starts_with("sha256:"));
    let (code, _) = screen(data, "submissions/pitched.ogg", &[]);
    assert_eq!(code, 0);
    let ledger = run_ok(data, &["ledger", "export", "--format", "jsonl"]);
    let totals: Vec<Value> = ledger.lines().map(json).collect();
    let sectoid = totals
        .iter()
        .find(|t| t["work_id"] == SECTOID)
        .expect(&ledger);
    assert_eq!(sectoid["submissions"], 1, "{ledger}");
    assert!(sectoid["seconds"].as_f64().unwrap() > 5.0, "{ledger}");

    // Unknown consent → flag (default), allow with --unknown allow.
    let (code, v) = screen(data, "submissions/mix-two-works.ogg", &["--no-ledger"]);
    assert_eq!(code, 1);
    assert_eq!(v["decision"], "flag");
    let outcomes: Vec<(&str, &str)> = v["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["work_id"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(outcomes.contains(&(NORTHERNERS, "flag")), "{outcomes:?}");
    assert!(outcomes.contains(&(ARMYGEDDON, "allow")), "{outcomes:?}");
    let (code, v) = screen(
        data,
        "submissions/mix-two-works.ogg",
        &["--unknown", "allow"],
    );
    assert_eq!(code, 0);
    assert_eq!(v["decision"], "allow");

    // A second submission with the opted-in work: per-work totals add up.
    let pitched = audio("submissions/pitched.ogg");
    let (code, out, err) = run(
        data,
        &[
            "identify",
            "--purpose",
            "ai-training",
            "--submission-id",
            "batch-2/clip-7",
            pitched.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("recorded in the ledger"), "{out}");
    ledger_export_gives_per_work_totals(data, sectoid["seconds"].as_f64().unwrap());

    // No match → allow; human output shows the verdict and its reasons.
    let (code, v) = screen(data, "submissions/unrelated.ogg", &[]);
    assert_eq!((code, v["decision"].as_str()), (0, Some("allow")));
    let speech = audio("submissions/speech.ogg");
    let excerpt = audio("submissions/excerpt-mp3.mp3");
    let (code, out, _) = run(
        data,
        &[
            "identify",
            "--purpose",
            "ai-training",
            speech.to_str().unwrap(),
            excerpt.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("verdict for ai-training: ALLOW"), "{out}");
    assert!(out.contains("verdict for ai-training: BLOCK"), "{out}");

    // Without --purpose: issue 2's contract (1 = a match, 0 = none, no verdict).
    let (code, out, _) = run(data, &["identify", "--json", excerpt.to_str().unwrap()]);
    assert_eq!(code, 1);
    let line = json(out.trim());
    assert!(line.get("verdict").is_none());
    assert_eq!(line["matches"][0]["work_id"], HEROES);
    for key in [
        "score",
        "query_start_s",
        "query_end_s",
        "ref_start_s",
        "ref_end_s",
        "speed_factor",
        "pitch_factor",
    ] {
        assert!(line["matches"][0].get(key).is_some(), "{key}");
    }
    let (code, _, _) = run(data, &["identify", "--json", speech.to_str().unwrap()]);
    assert_eq!(code, 0);
    // Errors still exit 2.
    let bad = audio("formats/bad/text.wav");
    let (code, out, _) = run(
        data,
        &[
            "identify",
            "--json",
            "--purpose",
            "ai-training",
            bad.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 2);
    assert!(json(out.trim())["verdict"].is_null());
}

/// `ledger export` over periods, after SECTOID was attributed twice
/// (`one_submission` seconds each) and ARMYGEDDON once.
fn ledger_export_gives_per_work_totals(data: &Path, one_submission: f64) {
    let csv = run_ok(
        data,
        &[
            "ledger",
            "export",
            "--format",
            "csv",
            "--from",
            "2000-01-01",
            "--until",
            "2999-01-01",
        ],
    );
    let lines: Vec<Vec<&str>> = csv.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(
        lines[0],
        [
            "period_from",
            "period_until",
            "work_id",
            "title",
            "isrc",
            "iswc",
            "holder",
            "holder_isni",
            "seconds",
            "attributions",
            "submissions",
            "first_at",
            "last_at"
        ]
    );
    assert_eq!(lines.len(), 3, "header + one line per work:\n{csv}");
    let works: Vec<&str> = lines[1..].iter().map(|l| l[2]).collect();
    assert_eq!(works, [ARMYGEDDON, SECTOID], "{csv}");
    let sectoid = &lines[2];
    assert_eq!(
        (sectoid[0], sectoid[1]),
        ("2000-01-01T00:00:00Z", "2999-01-01T00:00:00Z")
    );
    assert_eq!(sectoid[6], "Rock Holder Ltd");
    assert_eq!((sectoid[9], sectoid[10]), ("2", "2"), "{csv}");
    let seconds: f64 = sectoid[8].parse().unwrap();
    assert!(
        (seconds - 2.0 * one_submission).abs() < 0.01,
        "{seconds} vs 2 x {one_submission}"
    );
    // A period before everything: a valid, empty statement.
    let empty = run_ok(
        data,
        &[
            "ledger",
            "export",
            "--format",
            "csv",
            "--until",
            "2000-01-01",
        ],
    );
    assert_eq!(empty.lines().count(), 1, "{empty}");
    let empty = run_ok(
        data,
        &[
            "ledger",
            "export",
            "--format",
            "jsonl",
            "--from",
            "2999-01-01",
        ],
    );
    assert_eq!(empty, "");
    // Bad periods are errors naming the input.
    let (code, _, err) = run(
        data,
        &[
            "ledger",
            "export",
            "--from",
            "2026-02-01",
            "--until",
            "2026-01-01",
        ],
    );
    assert_eq!(code, 2);
    assert!(err.contains("--until must be later than --from"), "{err}");
    let (code, _, err) = run(data, &["ledger", "export", "--from", "2026-13-01"]);
    assert_eq!(code, 2);
    assert!(err.contains("invalid timestamp '2026-13-01'"), "{err}");
}

#[test]
fn consent_change_takes_effect_on_next_identify() {
    let dir = TempDir::new().unwrap();
    let data = dir.path();
    add(data, HEROES, &["--consent", "opted-out"]);
    let (code, v) = screen(data, "submissions/speed.wav", &[]);
    assert_eq!((code, v["decision"].as_str()), (1, Some("block")));

    let out = run_ok(
        data,
        &[
            "consent",
            "set",
            HEROES,
            "--scope",
            "ai-training",
            "--status",
            "opted-in",
            "--source",
            "contract",
        ],
    );
    assert!(
        out.contains("in force now for ai-training worldwide: opted-in"),
        "{out}"
    );
    let (code, v) = screen(data, "submissions/speed.wav", &[]);
    assert_eq!((code, v["decision"].as_str()), (0, Some("allow")));
    assert_eq!(v["evidence"][0]["deciding_record"]["source"], "contract");
    // The opt-out it replaces is kept as evidence.
    assert_eq!(
        v["evidence"][0]["overridden_records"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    // An opt-out that starts in the future does not apply yet.
    run_ok(
        data,
        &[
            "consent",
            "set",
            HEROES,
            "--scope",
            "ai-training",
            "--status",
            "opted-out",
            "--from",
            "2999-01-01",
        ],
    );
    let (_, v) = screen(data, "submissions/speed.wav", &[]);
    assert_eq!(v["decision"], "allow");
    let history = run_ok(data, &["consent", "history", HEROES]);
    assert_eq!(history.lines().count(), 4, "{history}"); // header + 3 records

    // Removing the work removes both sides: no match, no registry entry.
    run_ok(data, &["works", "remove", HEROES]);
    let (code, v) = screen(data, "submissions/speed.wav", &[]);
    assert_eq!((code, v["evidence"].as_array().map(Vec::len)), (0, Some(0)));
    assert_eq!(registry_count(data), 0);
    assert_eq!(live_indexed(data), 0);
    let (code, _, err) = run(data, &["works", "show", HEROES]);
    assert_eq!(code, 2);
    assert!(err.contains("not registered"), "{err}");
}

/// A CSV catalog over the reference clips; `bad_isrc_line` gets an invalid ISRC.
fn write_catalog(dir: &Path, ids: &[(&str, &str)], extra: &str) -> PathBuf {
    let mut csv = String::from("id,file,title,holder,isrc,consent,scope\n");
    for (id, clip) in ids {
        let file = reference(clip);
        writeln!(
            csv,
            "{id},{},Title {id},Holder,,opted-in,ai-training",
            file.display()
        )
        .unwrap();
    }
    csv.push_str(extra);
    let path = dir.join("catalog.csv");
    std::fs::write(&path, csv).unwrap();
    path
}

#[test]
fn import_reports_bad_rows_and_is_idempotent() {
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("data");
    let data = data.as_path();
    let heroes = reference(HEROES);
    let extra = format!(
        "bad-isrc,{},Bad,Holder,NOT-AN-ISRC,,\nmissing-file,{}/nope.ogg,Gone,Holder,,,\n",
        heroes.display(),
        dir.path().display()
    );
    let catalog = write_catalog(
        dir.path(),
        &[("a1", HEROES), ("a2", SECTOID), ("a3", NORTHERNERS)],
        &extra,
    );
    let catalog = catalog.to_str().unwrap();

    let (code, out, err) = run(data, &["works", "import", catalog]);
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(
        err.contains("line 5 (work 'bad-isrc')") && err.contains("ISRC"),
        "{err}"
    );
    assert!(err.contains("line 6 (work 'missing-file')"), "{err}");
    assert!(
        out.contains("5 rows, 3 registered, 0 already registered, 2 failed (line 5, 6)"),
        "{out}"
    );
    assert_eq!(registry_count(data), 3);
    assert_eq!(live_indexed(data), 3);
    let shown = json(&run_ok(data, &["works", "show", "a2", "--json"]));
    assert_eq!(shown["in_force_now"]["ai-training"]["status"], "opted-in");
    assert_eq!(shown["history"][0]["asserted_by"], "Holder");

    // Re-running changes nothing and reports the same bad rows.
    let (code, out, _) = run(data, &["works", "import", "--json", catalog]);
    assert_eq!(code, 3);
    let summary = json(&out);
    assert_eq!(summary["registered"], 0);
    assert_eq!(summary["unchanged"], 3);
    assert_eq!(summary["failed"], 2);
    assert_eq!(summary["errors"][0]["line"], 5);
    assert_eq!(registry_count(data), 3);
    assert_eq!(live_indexed(data), 3);
    let shown = json(&run_ok(data, &["works", "show", "a2", "--json"]));
    assert_eq!(shown["history"].as_array().map(Vec::len), Some(1));

    // A JSONL catalog with only good rows exits 0; the same id with other audio is refused.
    let jsonl = dir.path().join("more.jsonl");
    let line = |id: &str, clip: &str| {
        format!(
            "{{\"id\":\"{id}\",\"file\":\"{}\",\"title\":\"T\",\"holder\":\"H\",\"artists\":[\"X\",\"Y\"]}}\n",
            reference(clip).display()
        )
    };
    std::fs::write(&jsonl, line("b1", ARMYGEDDON)).unwrap();
    let out = run_ok(data, &["works", "import", jsonl.to_str().unwrap()]);
    assert!(out.contains("1 registered"), "{out}");
    std::fs::write(&jsonl, line("a1", ARMYGEDDON)).unwrap();
    let (code, _, err) = run(data, &["works", "import", jsonl.to_str().unwrap()]);
    assert_eq!(code, 3);
    assert!(
        err.contains("line 1 (work 'a1')") && err.contains("different audio"),
        "{err}"
    );

    // Each run is in the audit log, and the chain is intact.
    let audit = run_ok(data, &["audit", "export"]);
    assert_eq!(
        audit.lines().filter(|l| l.contains("import-run")).count(),
        4,
        "{audit}"
    );
    run_ok(data, &["audit", "verify"]);
}

#[test]
fn kill_during_import_leaves_consistent_catalog() {
    const ROWS: usize = 40;
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("data");
    let clips = [HEROES, NORTHERNERS, ARMYGEDDON, SECTOID];
    let ids: Vec<(String, &str)> = (0..ROWS)
        .map(|i| (format!("w{i:02}"), clips[i % clips.len()]))
        .collect();
    let refs: Vec<(&str, &str)> = ids.iter().map(|(id, clip)| (id.as_str(), *clip)).collect();
    let catalog = write_catalog(dir.path(), &refs, "");

    // Start the import, SIGKILL it once a few works are registered.
    let mut child = std::process::Command::new(BIN)
        .arg("--data")
        .arg(&data)
        .args(["works", "import", "--batch", "3"])
        .arg(&catalog)
        .env("EARMARK_ACTOR", "tester")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill right after the index segment of the second batch appears: the
    // registry rows of that batch are being written then (or about to be).
    let manifest = data.join("index").join("MANIFEST.json");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut segments_at_kill = 0;
    while Instant::now() < deadline {
        let segments =
            std::fs::read_to_string(&manifest).map_or(0, |m| m.matches(".seg\"").count());
        if segments >= 2 {
            segments_at_kill = segments;
            break;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(segments_at_kill >= 2, "import never committed two batches");
    assert!(
        !status.success(),
        "import finished before the kill; make it longer"
    );

    // Every registered work has fingerprints (index verify cross-checks) ...
    let data = data.as_path();
    let verify = run_ok(data, &["index", "verify"]);
    eprintln!("after kill: {verify}");
    assert!(verify.contains("all fingerprinted"), "{verify}");
    let listed = json(&run_ok(data, &["works", "list", "--json"]));
    let listed: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap())
        .collect();
    assert!(listed.len() < ROWS, "killed import registered everything");
    // ... and fingerprints without a registry entry can only be those of the
    // batch being registered at the kill; they are never reported (below).
    let orphans = verify
        .lines()
        .find_map(|l| leading_count(l, "fingerprint set(s) without a registry entry"))
        .unwrap_or(0);
    assert!(
        orphans <= 3,
        "{orphans} orphaned fingerprint sets: {verify}"
    );
    assert_eq!(
        live_indexed(data),
        (listed.len() + orphans) as u64,
        "{verify}"
    );
    // ... and a registered work is found by identify.
    assert!(listed.contains(&"w00"), "{listed:?}");
    let excerpt = audio("submissions/excerpt-mp3.mp3");
    let (code, out, err) = run(data, &["identify", "--json", excerpt.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    let line = json(out.trim());
    let found: Vec<&str> = line["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["work_id"].as_str().unwrap())
        .collect();
    assert!(found.contains(&"w00"), "{found:?}");
    assert!(
        found.iter().all(|id| listed.contains(id)),
        "unregistered work reported: {found:?}"
    );

    // Re-running the import completes; afterwards index and registry agree.
    let out = run_ok(
        data,
        &["works", "import", "--batch", "8", catalog.to_str().unwrap()],
    );
    assert!(out.contains(&format!("{ROWS} rows")), "{out}");
    assert_eq!(registry_count(data), ROWS);
    assert_eq!(live_indexed(data), ROWS as u64);
    let verify = run_ok(data, &["index", "verify"]);
    assert!(!verify.contains("without a registry entry"), "{verify}");
    run_ok(data, &["audit", "verify"]);
}

#[test]
fn audit_verify_detects_tampering() {
    let dir = TempDir::new().unwrap();
    let data = dir.path();
    add(data, HEROES, &["--consent", "opted-out"]);
    run_ok(
        data,
        &[
            "consent",
            "set",
            HEROES,
            "--scope",
            "ai-training",
            "--status",
            "opted-in",
        ],
    );
    let out = run_ok(data, &["audit", "verify"]);
    assert!(out.starts_with("audit log OK: 3 entries"), "{out}");

    // Rewrite history behind the registry's back: flip the recorded status.
    let conn = rusqlite::Connection::open(data.join("registry.sqlite")).unwrap();
    conn.execute_batch(
        "DROP TRIGGER audit_log_no_update;
         UPDATE audit_log SET details = replace(details, 'opted-in', 'opted-out') WHERE seq = 3;",
    )
    .unwrap();
    drop(conn);
    let (code, out, _) = run(data, &["audit", "verify"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("BROKEN") && out.contains("seq 3"), "{out}");
    let (code, out, _) = run(data, &["audit", "verify", "--json"]);
    assert_eq!(code, 2);
    assert_eq!(json(&out)["problems"][0]["seq"], 3);

    // Undo the edit: intact again.
    conn_exec(
        data,
        "UPDATE audit_log SET details = replace(details, '\"status\":\"opted-out\"', '\"status\":\"opted-in\"') WHERE seq = 3;",
    );
    let out = run_ok(data, &["audit", "verify"]);
    assert!(out.starts_with("audit log OK: 3 entries"), "{out}");

    // Remove an entry from the middle.
    conn_exec(
        data,
        "DROP TRIGGER audit_log_no_delete;
         CREATE TABLE saved AS SELECT * FROM audit_log WHERE seq = 2;
         DELETE FROM audit_log WHERE seq = 2;",
    );
    let (code, out, _) = run(data, &["audit", "verify"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("seq 2: entries 2..=2 are missing (removed)"),
        "{out}"
    );
    conn_exec(
        data,
        "INSERT INTO audit_log SELECT * FROM saved; DROP TABLE saved;",
    );
    run_ok(data, &["audit", "verify"]);

    // Reorder: entries 2 and 3 swap places.
    conn_exec(
        data,
        "UPDATE audit_log SET seq = -1 WHERE seq = 2;
         UPDATE audit_log SET seq = 2 WHERE seq = 3;
         UPDATE audit_log SET seq = 3 WHERE seq = -1;",
    );
    let (code, out, _) = run(data, &["audit", "verify", "--json"]);
    assert_eq!(code, 2, "{out}");
    let report = json(&out);
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems[0]["seq"], 2, "{out}");
    assert!(
        problems.iter().all(|p| p["seq"] == 2 || p["seq"] == 3),
        "{out}"
    );
    let (_, human, _) = run(data, &["audit", "verify"]);
    assert!(
        human.contains(
            "seq 2: entry 2 (consent-recorded of 'wesnoth-heroes-rite') does not match its hash"
        ),
        "{human}"
    );
}

/// The count in front of `marker` in a line such as "2 fingerprint set(s) without …".
fn leading_count(line: &str, marker: &str) -> Option<usize> {
    let (count, rest) = line.split_once(' ')?;
    if rest.starts_with(marker) {
        count.parse().ok()
    } else {
        None
    }
}

/// Runs SQL on the registry behind earmark's back.
fn conn_exec(data: &Path, sql: &str) {
    let conn = rusqlite::Connection::open(data.join("registry.sqlite")).unwrap();
    conn.execute_batch(sql).unwrap();
}

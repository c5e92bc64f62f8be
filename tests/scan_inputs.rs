//! `earmark scan` over folders and JSONL/CSV manifests: verdicts, fail-closed
//! errors, filtered copies, summary and exit codes.

mod scan_common;

use std::ffi::OsStr;
use std::io::Write;
use std::path::Path;

use scan_common::*;

fn copy(rel: &str, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(audio(rel), to).unwrap();
}

fn os(s: &Path) -> &OsStr {
    s.as_os_str()
}

#[test]
fn folder_is_walked_by_content_and_reports_bad_entries() {
    let tmp = scratch("folder");
    let corpus = tmp.path().join("corpus");
    copy(
        "submissions/excerpt-mp3.mp3",
        &corpus.join("a/excerpt-mp3.mp3"),
    );
    copy("submissions/pitched.ogg", &corpus.join("a/b/pitched.ogg"));
    // Audio without an extension is found by content.
    copy("submissions/unrelated.ogg", &corpus.join("unrelated-noext"));
    copy("formats/clip.flac", &corpus.join("c/clip.flac"));
    // A text file named .wav is audio by name: it must be reported, not skipped.
    copy("formats/bad/text.wav", &corpus.join("c/text.wav"));
    std::fs::write(corpus.join("notes.txt"), "not audio").unwrap();
    std::fs::write(corpus.join("a/meta.json"), "{\"x\": 1}").unwrap();
    std::os::unix::fs::symlink("..", corpus.join("a/b/loop")).unwrap();
    std::os::unix::fs::symlink("nowhere.wav", corpus.join("dangling.wav")).unwrap();

    let report = tmp.path().join("report.jsonl");
    let allowed = tmp.path().join("allowed");
    let blocked = tmp.path().join("blocked.jsonl");
    let summary = tmp.path().join("summary.json");
    let code = run_scan(&[
        os(&corpus),
        OsStr::new("--report"),
        os(&report),
        OsStr::new("--allowed"),
        os(&allowed),
        OsStr::new("--blocked"),
        os(&blocked),
        OsStr::new("--summary"),
        os(&summary),
    ]);
    assert_eq!(code, 3, "errors make the exit code 3");
    let rows = read_report(&report);
    assert_eq!(verdict_of(&rows, "a/excerpt-mp3.mp3"), "block");
    assert_eq!(verdict_of(&rows, "a/b/pitched.ogg"), "flag");
    assert_eq!(verdict_of(&rows, "unrelated-noext"), "allow");
    assert_eq!(verdict_of(&rows, "c/clip.flac"), "block");
    assert_eq!(verdict_of(&rows, "c/text.wav"), "error");
    assert_eq!(verdict_of(&rows, "dangling.wav"), "error");
    let looped = rows
        .iter()
        .find(|r| r["item"].as_str().unwrap().ends_with("loop"))
        .expect("symlink loop reported");
    assert_eq!(looped["kind"], "walk-entry");
    assert!(looped["error"].as_str().unwrap().contains("symlink loop"));
    assert!(
        rows.iter()
            .all(|r| !r["item"].as_str().unwrap().ends_with(".txt"))
    );
    assert!(
        rows.iter()
            .all(|r| !r["item"].as_str().unwrap().ends_with(".json"))
    );
    assert_eq!(rows.len(), 7, "{rows:#?}");

    // Matches carry work, time range and consent.
    let excerpt = rows
        .iter()
        .find(|r| r["item"].as_str().unwrap().ends_with("excerpt-mp3.mp3"))
        .unwrap();
    let m = &excerpt["matches"][0];
    assert_eq!(m["work_id"], "wesnoth-heroes-rite");
    assert_eq!(m["consent"], "opted-out");
    assert!(m["end_s"].as_f64().unwrap() > m["start_s"].as_f64().unwrap());
    assert!(excerpt["duration_s"].as_f64().unwrap() > 9.0);
    assert_eq!(excerpt["content_sha256"].as_str().unwrap().len(), 64);

    // The allowed mirror holds exactly the allowed file.
    let mirrored: Vec<_> = walk_files(&allowed);
    assert_eq!(mirrored, vec!["unrelated-noext".to_owned()]);
    // The blocked copy of a folder given as .jsonl is a list of paths.
    let blocked_rows = read_report(&blocked);
    let mut blocked_paths: Vec<&str> = blocked_rows
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    blocked_paths.sort();
    assert_eq!(blocked_paths.len(), 2);
    assert!(
        blocked_paths
            .iter()
            .all(|p| Path::new(p).is_absolute() && Path::new(p).exists())
    );

    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    assert_eq!(summary["items"], 7);
    assert_eq!(summary["verdicts"]["block"]["items"], 2);
    assert_eq!(summary["verdicts"]["flag"]["items"], 1);
    assert_eq!(summary["verdicts"]["allow"]["items"], 1);
    assert_eq!(summary["verdicts"]["error"]["items"], 3);
    assert_eq!(summary["exit_code"], 3);
    let blocked_works = summary["blocked_works"].as_array().unwrap();
    assert_eq!(blocked_works[0]["work_id"], "wesnoth-heroes-rite");
    assert_eq!(blocked_works[0]["items"], 2);
    assert!(blocked_works[0]["seconds"].as_f64().unwrap() > 10.0);
}

fn walk_files(root: &Path) -> Vec<String> {
    let mut out: Vec<String> = walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().strip_prefix(root).unwrap().display().to_string())
        .collect();
    out.sort();
    out
}

#[test]
fn jsonl_manifest_with_missing_files_fails_closed() {
    let tmp = scratch("jsonl");
    let data = tmp.path().join("ds");
    for (name, _) in SUBMISSIONS {
        copy(&format!("submissions/{name}"), &data.join("wav").join(name));
    }
    // NeMo style, relative paths, one missing file, one malformed line; gzip.
    let mut lines: Vec<String> = SUBMISSIONS
        .iter()
        .map(|(name, _)| {
            format!("{{\"audio_filepath\": \"wav/{name}\", \"duration\": 1.0, \"text\": \"t\"}}")
        })
        .collect();
    lines.push("{\"audio_filepath\": \"wav/missing.wav\", \"duration\": 2.0}".into());
    lines.push("{not json".into());
    lines.push(String::new());
    let manifest = data.join("train_manifest.json.gz");
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&manifest).unwrap(),
        flate2::Compression::default(),
    );
    gz.write_all(lines.join("\n").as_bytes()).unwrap();
    gz.finish().unwrap();

    let report = tmp.path().join("report.jsonl");
    let allowed = tmp.path().join("out/allowed.jsonl");
    let code = run_scan(&[
        os(&manifest),
        OsStr::new("--report"),
        os(&report),
        OsStr::new("--allowed"),
        os(&allowed),
    ]);
    assert_eq!(code, 3);
    let rows = read_report(&report);
    assert_eq!(rows.len(), 8);
    for (name, verdict) in SUBMISSIONS {
        assert_eq!(verdict_of(&rows, name), verdict, "{name}");
    }
    assert_eq!(verdict_of(&rows, "missing.wav"), "error");
    assert_eq!(rows[7]["item"], "line 8");
    assert_eq!(rows[7]["verdict"], "error");
    assert_eq!(rows[0]["position"], 1);

    // The allowed manifest keeps the rows (fields, order) with paths made
    // absolute, since it lives in another directory; errors never land there.
    let kept = read_report(&allowed);
    assert_eq!(kept.len(), 2);
    for row in &kept {
        let p = Path::new(row["audio_filepath"].as_str().unwrap());
        assert!(p.is_absolute() && p.exists(), "{p:?}");
        assert_eq!(row["text"], "t");
    }
    let text = std::fs::read_to_string(&allowed).unwrap();
    assert!(text.starts_with("{\"audio_filepath\":"), "{text}");
}

#[test]
fn csv_manifest_zstd_with_csv_report() {
    let tmp = scratch("csv");
    let mut csv_text = String::from("id,path,split\n");
    for (i, (name, _)) in SUBMISSIONS.iter().enumerate() {
        let abs = audio(&format!("submissions/{name}"));
        csv_text.push_str(&format!("{i},{},train\n", abs.display()));
    }
    let manifest = tmp.path().join("list.csv.zst");
    std::fs::write(&manifest, zstd::encode_all(csv_text.as_bytes(), 3).unwrap()).unwrap();
    let report = tmp.path().join("report.csv");
    let blocked = tmp.path().join("blocked.csv");
    let code = run_scan(&[
        os(&manifest),
        OsStr::new("--report"),
        os(&report),
        OsStr::new("--blocked"),
        os(&blocked),
        OsStr::new("--jobs"),
        OsStr::new("2"),
    ]);
    assert_eq!(code, 1, "blocked and flagged items, no errors");
    let mut reader = csv::Reader::from_path(&report).unwrap();
    let headers = reader.headers().unwrap().clone();
    assert_eq!(&headers[6], "verdict");
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), SUBMISSIONS.len());
    for (record, (name, verdict)) in records.iter().zip(SUBMISSIONS) {
        assert!(record[0].ends_with(name), "report keeps input order");
        assert_eq!(&record[6], verdict, "{name}");
    }
    let mut reader = csv::Reader::from_path(&blocked).unwrap();
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        ["id", "path", "split"]
    );
    let ids: Vec<String> = reader.records().map(|r| r.unwrap()[0].to_owned()).collect();
    assert_eq!(ids, ["0", "1", "3"]);
}

#[test]
fn clean_input_exits_zero_and_usage_errors_exit_two() {
    let tmp = scratch("clean");
    let manifest = tmp.path().join("m.jsonl");
    std::fs::write(
        &manifest,
        format!(
            "{{\"path\": \"{}\"}}\n{{\"path\": \"{}\"}}\n",
            audio("submissions/unrelated.ogg").display(),
            audio("submissions/speech.ogg").display()
        ),
    )
    .unwrap();
    let report = tmp.path().join("r.jsonl");
    assert_eq!(
        run_scan(&[os(&manifest), OsStr::new("--report"), os(&report)]),
        0
    );

    let status = |args: &[&OsStr]| scan_cmd().args(args).output().unwrap().status.code();
    // Missing input.
    let missing = tmp.path().join("nope");
    assert_eq!(
        status(&[os(&missing), OsStr::new("--report"), os(&report)]),
        Some(2)
    );
    // No path field.
    let no_path = tmp.path().join("np.jsonl");
    std::fs::write(&no_path, "{\"file_name\": \"a.wav\"}\n").unwrap();
    assert_eq!(
        status(&[os(&no_path), OsStr::new("--report"), os(&report)]),
        Some(2)
    );
    // ...unless it is named.
    let named = tmp.path().join("named.jsonl");
    std::fs::write(
        &named,
        format!(
            "{{\"file_name\": \"{}\"}}\n",
            audio("submissions/speech.ogg").display()
        ),
    )
    .unwrap();
    assert_eq!(
        status(&[
            os(&named),
            OsStr::new("--report"),
            os(&report),
            OsStr::new("--path-field"),
            OsStr::new("file_name")
        ]),
        Some(0)
    );
    // A filtered copy may not land inside a folder input.
    let folder = tmp.path().join("folder");
    std::fs::create_dir_all(&folder).unwrap();
    let inside = folder.join("allowed");
    assert_eq!(
        status(&[
            os(&folder),
            OsStr::new("--report"),
            os(&report),
            OsStr::new("--allowed"),
            os(&inside)
        ]),
        Some(2)
    );
}

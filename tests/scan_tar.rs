//! `earmark scan` over WebDataset shards: samples by key, a corrupt member, a
//! crafted (ambiguous) shard that must fail loudly, and filtered shards read
//! back with a plain tar reader.

mod scan_common;

use std::ffi::OsStr;
use std::io::Read;
use std::path::Path;

use scan_common::*;

fn append(builder: &mut tar::Builder<impl std::io::Write>, name: &str, data: &[u8]) {
    let mut h = tar::Header::new_ustar();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(1_700_000_000);
    builder.append_data(&mut h, name, data).unwrap();
}

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(audio(rel)).unwrap()
}

/// Member names of a (possibly gzipped) tar, read with the `tar` crate.
fn member_names(path: &Path) -> Vec<String> {
    let file = std::fs::File::open(path).unwrap();
    let reader: Box<dyn Read> = if path.to_string_lossy().ends_with(".gz") {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut archive = tar::Archive::new(reader);
    archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect()
}

fn shard_000(path: &Path) {
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    append(&mut b, "__meta__", b"{}");
    append(&mut b, "s000.mp3", &read("submissions/excerpt-mp3.mp3"));
    append(&mut b, "s000.json", b"{\"text\": \"a\"}");
    append(&mut b, "s001.ogg", &read("submissions/unrelated.ogg"));
    append(&mut b, "s001.txt", b"caption");
    append(&mut b, "s002.ogg", &read("submissions/pitched.ogg"));
    // Corrupt audio member: the sample cannot be screened.
    append(&mut b, "s003.mp3", &read("formats/bad/random.mp3"));
    append(&mut b, "s003.json", b"{}");
    // Audio found by content under a non-audio extension.
    append(&mut b, "s004.bin", &read("submissions/speech.ogg"));
    // No audio at all.
    append(&mut b, "s005.json", b"{}");
    b.finish().unwrap();
}

fn shard_001(path: &Path) {
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::fast(),
    );
    let mut b = tar::Builder::new(gz);
    append(
        &mut b,
        "dir/mix.ogg",
        &read("submissions/mix-two-works.ogg"),
    );
    append(&mut b, "dir/mix.json", b"{}");
    append(&mut b, "dir/speed.wav", &read("submissions/speed.wav"));
    append(&mut b, "dir/neg.ogg", &read("submissions/unrelated.ogg"));
    b.into_inner().unwrap().finish().unwrap();
}

/// A raw ustar header with a valid checksum.
fn raw_header(name: &str, typeflag: u8, size: u64) -> Vec<u8> {
    let mut b = vec![0u8; 512];
    b[..name.len()].copy_from_slice(name.as_bytes());
    b[100..108].copy_from_slice(b"0000644\0");
    b[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    b[136..148].copy_from_slice(b"00000000000\0");
    b[156] = typeflag;
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    b[148..156].copy_from_slice(b"        ");
    let sum: u64 = b.iter().map(|&x| u64::from(x)).sum();
    b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    b
}

fn padded(mut data: Vec<u8>) -> Vec<u8> {
    data.resize(data.len().div_ceil(512) * 512, 0);
    data
}

/// The PAX-desync pattern: the PAX record gives the outer member a size, the
/// ustar header says 0; parsers that disagree see different members (here an
/// opted-out recording hidden as "inner.mp3").
fn crafted(path: &Path) {
    let hidden = read("submissions/excerpt-mp3.mp3");
    let mut inner = raw_header("inner.mp3", b'0', hidden.len() as u64);
    inner.extend(padded(hidden));
    let record_body = format!(" size={}\n", inner.len());
    let len = record_body.len() + (record_body.len() + 2).to_string().len();
    let pax = format!("{len}{record_body}").into_bytes();
    let mut tar = raw_header("PaxHeader/outer.txt", b'x', pax.len() as u64);
    tar.extend(padded(pax));
    tar.extend(raw_header("outer.txt", b'0', 0));
    tar.extend(inner);
    tar.extend(vec![0u8; 1024]);
    std::fs::write(path, tar).unwrap();
}

#[test]
fn shards_are_screened_by_sample_and_filtered_copies_read_back() {
    let tmp = scratch("tar");
    let shards = tmp.path().join("shards");
    std::fs::create_dir_all(&shards).unwrap();
    let s0 = shards.join("shard-000.tar");
    let s1 = shards.join("shard-001.tar.gz");
    let bad = shards.join("shard-002.tar");
    shard_000(&s0);
    shard_001(&s1);
    crafted(&bad);

    let report = tmp.path().join("report.jsonl");
    let allowed = tmp.path().join("allowed");
    let blocked = tmp.path().join("blocked");
    let code = run_scan(&[
        s0.as_os_str(),
        s1.as_os_str(),
        bad.as_os_str(),
        OsStr::new("--report"),
        report.as_os_str(),
        OsStr::new("--allowed"),
        allowed.as_os_str(),
        OsStr::new("--blocked"),
        blocked.as_os_str(),
    ]);
    assert_eq!(code, 3);
    let rows = read_report(&report);
    let got: Vec<(String, String)> = verdicts(&rows);
    let want: Vec<(&str, &str)> = vec![
        ("s000", "block"),
        ("s001", "allow"),
        ("s002", "flag"),
        ("s003", "error"),
        ("s004", "allow"),
        ("s005", "error"),
        ("dir/mix", "block"),
        ("dir/speed", "block"),
        ("dir/neg", "allow"),
    ];
    assert_eq!(got.len(), want.len() + 1, "{got:?}");
    for ((item, verdict), (want_item, want_verdict)) in got.iter().zip(&want) {
        assert_eq!(
            (item.as_str(), verdict.as_str()),
            (*want_item, *want_verdict)
        );
    }
    assert!(
        rows[5]["error"]
            .as_str()
            .unwrap()
            .contains("no audio member")
    );
    // The crafted shard fails as a whole, loudly.
    let last = rows.last().unwrap();
    assert_eq!(last["kind"], "tar-shard");
    assert_eq!(last["verdict"], "error");
    assert!(
        last["error"].as_str().unwrap().contains("PAX size"),
        "{last}"
    );
    // mix-two-works: two works, one opted out, one opted in, with time ranges.
    let mix = &rows[6];
    let works: Vec<&str> = mix["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["work_id"].as_str().unwrap())
        .collect();
    assert!(works.contains(&"wesnoth-northerners") && works.contains(&"fof-muldjord-armygeddon"));

    // Filtered shards, read back with a plain tar reader.
    assert_eq!(
        member_names(&allowed.join("shard-000.tar")),
        ["s001.ogg", "s001.txt", "s004.bin"]
    );
    assert_eq!(
        member_names(&allowed.join("shard-001.tar.gz")),
        ["dir/neg.ogg"]
    );
    assert!(
        !allowed.join("shard-002.tar").exists(),
        "a rejected shard has no copy"
    );
    assert_eq!(
        member_names(&blocked.join("shard-000.tar")),
        ["s000.mp3", "s000.json"]
    );
    assert_eq!(
        member_names(&blocked.join("shard-001.tar.gz")),
        ["dir/mix.ogg", "dir/mix.json", "dir/speed.wav"]
    );
    // Member bytes are copied exactly.
    let mut archive =
        tar::Archive::new(std::fs::File::open(allowed.join("shard-000.tar")).unwrap());
    let mut first = archive.entries().unwrap().next().unwrap().unwrap();
    let mut bytes = Vec::new();
    first.read_to_end(&mut bytes).unwrap();
    assert_eq!(bytes, read("submissions/unrelated.ogg"));
    // Python's tarfile (what WebDataset uses) sees the same members.
    let python = std::process::Command::new("python3")
        .arg("-c")
        .arg("import sys, tarfile; print(','.join(tarfile.open(sys.argv[1]).getnames()))")
        .arg(allowed.join("shard-001.tar.gz"))
        .output();
    if let Ok(out) = python
        && out.status.success()
    {
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "dir/neg.ogg");
    }
}

/// A shard cut short (an interrupted upload): the whole shard is one error
/// row, and no partial copy is published.
#[test]
fn truncated_compressed_shard_is_rejected() {
    let tmp = scratch("tar-truncated");
    let full = tmp.path().join("full.tar.gz");
    shard_001(&full);
    let bytes = std::fs::read(&full).unwrap();
    let cut = tmp.path().join("cut.tar.gz");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let report = tmp.path().join("report.jsonl");
    let allowed = tmp.path().join("allowed.tar.gz");
    let code = run_scan(&[
        cut.as_os_str(),
        OsStr::new("--report"),
        report.as_os_str(),
        OsStr::new("--allowed"),
        allowed.as_os_str(),
    ]);
    assert_eq!(code, 3);
    let rows = read_report(&report);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["kind"], "tar-shard");
    assert_eq!(rows[0]["verdict"], "error");
    assert!(
        rows[0]["error"]
            .as_str()
            .unwrap()
            .contains("shard rejected"),
        "{}",
        rows[0]
    );
    assert!(!allowed.exists());
}

/// `--resume` over a shard after `kill -9`: the same report rows (none lost
/// or repeated) and a byte-identical filtered shard.
#[test]
fn shard_scan_resumes_after_a_kill() {
    const SAMPLES: usize = 90;
    let tmp = scratch("tar-resume");
    let shard = tmp.path().join("big.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&shard).unwrap());
    let audio_of: Vec<(String, Vec<u8>)> = SUBMISSIONS
        .iter()
        .map(|(name, _)| {
            let ext = name.rsplit('.').next().unwrap().to_owned();
            (ext, read(&format!("submissions/{name}")))
        })
        .collect();
    for i in 0..SAMPLES {
        let (ext, data) = &audio_of[i % audio_of.len()];
        append(&mut b, &format!("k{i:04}.{ext}"), data);
        append(
            &mut b,
            &format!("k{i:04}.json"),
            format!("{{\"i\": {i}}}").as_bytes(),
        );
    }
    b.finish().unwrap();
    drop(b);

    let args = |report: &Path, allowed: &Path| -> Vec<std::ffi::OsString> {
        vec![
            shard.clone().into(),
            "--report".into(),
            report.into(),
            "--allowed".into(),
            allowed.into(),
            "--jobs".into(),
            "1".into(),
            "--resume".into(),
        ]
    };
    let (r_report, r_allowed) = (tmp.path().join("ref.jsonl"), tmp.path().join("ref.tar"));
    let r_args = args(&r_report, &r_allowed);
    let r_args: Vec<&OsStr> = r_args.iter().map(|a| a.as_os_str()).collect();
    assert_eq!(run_scan(&r_args), 1);

    let (report, allowed) = (tmp.path().join("r.jsonl"), tmp.path().join("a.tar"));
    let k_args = args(&report, &allowed);
    let mut child = scan_cmd().args(&k_args).spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let lines = |p: &Path| {
        std::fs::read(p)
            .map(|b| b.iter().filter(|&&c| c == b'\n').count())
            .unwrap_or(0)
    };
    while lines(&report) == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = lines(&report);
    assert!(before > 0 && before < SAMPLES, "killed after {before} rows");
    assert!(!allowed.exists());

    let k_args: Vec<&OsStr> = k_args.iter().map(|a| a.as_os_str()).collect();
    assert_eq!(run_scan(&k_args), 1);
    let rows = read_report(&report);
    let reference = read_report(&r_report);
    assert_eq!(rows.len(), SAMPLES);
    assert_eq!(verdicts(&rows), verdicts(&reference));
    let keys: Vec<String> = (0..SAMPLES).map(|i| format!("k{i:04}")).collect();
    let got: Vec<String> = rows
        .iter()
        .map(|r| r["item"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got, keys, "no duplicate or lost rows");
    assert_eq!(
        std::fs::read(&allowed).unwrap(),
        std::fs::read(&r_allowed).unwrap(),
        "the resumed filtered shard equals the uninterrupted one"
    );
    let names = member_names(&allowed);
    assert_eq!(names.len(), 2 * 2 * SAMPLES / SUBMISSIONS.len());
}

//! The fuzz targets' bodies on stable: every input kept under
//! `fuzz/regressions/<target>/` (inputs that once crashed, hung or broke an
//! invariant, now fixed) and every seed input runs through the same body the
//! libFuzzer binary runs (`fuzz/src/lib.rs`, included here).
//!
//! Also the tar differential: every shard under
//! `fuzz/regressions/scan_tar_accepted/` (shards the fuzzer produced that the
//! strict reader accepts), and under `$EARMARK_TAR_DIFF_DIR` when set (a whole
//! fuzz corpus), must list the same regular members, sizes and contents in
//! earmark's strict reader as in Python's `tarfile` (with
//! `EARMARK_TAR_DIFF_VERBOSE` set, each compared shard is named).

#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod harness;

use std::path::{Path, PathBuf};

fn regression_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target)
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Runs every regression input of `target`; returns how many ran.
fn run_regressions(target: &str) -> usize {
    let body = harness::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|(_, body)| *body)
        .expect("a fuzz target of that name");
    let files = files_in(&regression_dir(target));
    for file in &files {
        let data = std::fs::read(file).expect("regression input");
        eprintln!("{target}: {}", file.display());
        body(&data);
    }
    files.len()
}

macro_rules! regression_tests {
    ($($name:ident => $target:literal),* $(,)?) => {$(
        #[test]
        fn $name() {
            let ran = run_regressions($target);
            eprintln!("{}: {ran} regression inputs", $target);
        }
    )*};
}

regression_tests!(
    decode_regressions => "decode",
    fpfile_regressions => "fpfile",
    index_regressions => "index",
    catalog_regressions => "catalog",
    scan_manifest_regressions => "scan_manifest",
    scan_tar_regressions => "scan_tar",
    scan_parquet_regressions => "scan_parquet",
    proto_regressions => "proto",
    service_regressions => "service",
);

#[test]
fn every_seed_passes_its_target() {
    for (name, body) in harness::TARGETS {
        let seeds = harness::seeds(name);
        assert!(!seeds.is_empty(), "{name} has no seed");
        for seed in &seeds {
            body(seed);
        }
    }
}

/// A valid index seed opens, verifies and answers: the invariant checks of
/// the index target are reached, not skipped.
#[test]
fn the_index_seed_reaches_the_lookup_checks() {
    use earmark::index::segment::Segment;
    let seed = &harness::seeds("index")[0];
    let manifest_len = usize::from(u16::from_le_bytes([seed[1], seed[2]]));
    let segment = &seed[3 + manifest_len..];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seg-00000001.seg");
    std::fs::write(&path, segment).unwrap();
    let seg = Segment::open(&path, earmark::fingerprint::CONFIG_ID).expect("seed segment opens");
    seg.verify().expect("seed segment verifies");
    let mut postings = 0;
    seg.for_each_posting(|_, _| postings += 1);
    assert!(postings > 0);
}

/// One regular member: name, size, SHA-256 of its data.
type Member = (String, u64, String);

/// The regular members as earmark's strict reader lists them, or `None` if
/// it refuses the archive.
fn strict_members(data: &[u8]) -> Option<Vec<Member>> {
    use earmark::scan::input::tar::{EntryData, EntryKind, StrictTarReader};
    use sha2::{Digest, Sha256};
    let mut reader = StrictTarReader::new(std::io::Cursor::new(data));
    let mut members = Vec::new();
    loop {
        match reader.next_entry(|_, _| Some(u64::MAX)) {
            Ok(Some(entry)) if entry.kind == EntryKind::Regular => {
                let EntryData::Loaded(bytes) = entry.data else {
                    panic!("a member was not loaded");
                };
                members.push((entry.name, entry.size, hex::encode(Sha256::digest(&bytes))));
            }
            Ok(Some(_)) => {}
            Ok(None) => return Some(members),
            Err(_) => return None,
        }
    }
}

const PYTHON_LISTER: &str = r#"
import hashlib, json, sys, tarfile
for path in sys.argv[1:]:
    try:
        with tarfile.open(path, mode="r:") as tar:
            members = []
            for m in tar.getmembers():
                if m.isfile():
                    data = tar.extractfile(m).read()
                    members.append([m.name, m.size, hashlib.sha256(data).hexdigest()])
        print(json.dumps({"file": path, "members": members}))
    except Exception as e:
        print(json.dumps({"file": path, "error": repr(e)}))
"#;

#[test]
fn accepted_shards_list_the_same_members_as_python_tarfile() {
    let mut files = files_in(&regression_dir("scan_tar_accepted"));
    files.extend(files_in(&regression_dir("scan_tar")));
    if let Some(dir) = std::env::var_os("EARMARK_TAR_DIFF_DIR") {
        files.extend(files_in(Path::new(&dir)));
    }
    let scratch = tempfile::tempdir().unwrap();
    let seed = scratch.path().join("seed.tar");
    std::fs::write(&seed, &harness::seeds("scan_tar")[0]).unwrap();
    files.push(seed);
    let accepted: Vec<(PathBuf, Vec<Member>)> = files
        .iter()
        .filter_map(|f| {
            let data = std::fs::read(f).ok()?;
            strict_members(&data).map(|m| (f.clone(), m))
        })
        .collect();
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let mut compared = 0;
    for batch in accepted.chunks(500) {
        let output = match std::process::Command::new(&python)
            .arg("-c")
            .arg(PYTHON_LISTER)
            .args(batch.iter().map(|(f, _)| f))
            .output()
        {
            Ok(output) => output,
            Err(err) => {
                eprintln!("skipped: cannot run {python} ({err})");
                return;
            }
        };
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("lister output"))
            .collect();
        assert_eq!(lines.len(), batch.len());
        for ((file, ours), theirs) in batch.iter().zip(&lines) {
            let theirs: Vec<Member> = match theirs.get("members") {
                Some(members) => serde_json::from_value(members.clone()).expect("members"),
                None => panic!(
                    "{}: earmark accepts this shard, Python's tarfile refuses it: {}",
                    file.display(),
                    theirs["error"]
                ),
            };
            assert_eq!(
                ours,
                &theirs,
                "{}: earmark and Python's tarfile list different members",
                file.display()
            );
            if std::env::var_os("EARMARK_TAR_DIFF_VERBOSE").is_some() {
                eprintln!("accepted and equal: {}", file.display());
            }
            compared += 1;
        }
    }
    eprintln!(
        "tar differential: {compared} accepted shards of {} compared with Python's tarfile",
        files.len()
    );
    assert!(compared > 0);
}

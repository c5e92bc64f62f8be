//! Shared fixtures of the `scan_*` integration tests: a data directory with the
//! four reference clips of `test-audio/refs` registered with known consent, and
//! helpers to run `earmark scan` and read its outputs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use earmark::data_dir::DataDir;
use earmark::decode::DecodeLimits;
use earmark::registration::Catalog;
use earmark::registry::{ConsentStatus, NewConsent, NewWork, ReferenceAudio, Scope, WorkId};

/// Consent registered for each reference clip (`None`: nothing recorded).
pub const WORKS: [(&str, Option<ConsentStatus>); 4] = [
    ("wesnoth-heroes-rite", Some(ConsentStatus::OptedOut)),
    ("wesnoth-northerners", Some(ConsentStatus::OptedOut)),
    ("fof-muldjord-armygeddon", Some(ConsentStatus::OptedIn)),
    ("fof-sectoid-war-of-freedom", None),
];

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn audio(rel: &str) -> PathBuf {
    repo().join("test-audio").join(rel)
}

/// A fresh scratch directory under the target dir.
pub fn scratch(name: &str) -> tempfile::TempDir {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&base).unwrap();
    tempfile::Builder::new()
        .prefix(&format!("scan-{name}-"))
        .tempdir_in(base)
        .unwrap()
}

/// The registered data directory (built once per test binary).
pub fn data_dir() -> &'static Path {
    static DATA: OnceLock<PathBuf> = OnceLock::new();
    DATA.get_or_init(|| {
        let dir = scratch("data").keep();
        register(&dir);
        dir
    })
}

fn register(root: &Path) {
    let data = DataDir::new(root);
    let catalog = Catalog::open(&data).unwrap();
    let at = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    for (id, consent) in WORKS {
        let file = audio(&format!("refs/{id}.ogg"));
        let work =
            earmark::registration::prepare_work(id, &file, &DecodeLimits::default()).unwrap();
        let metadata = NewWork {
            id: WorkId::parse(id).unwrap(),
            title: format!("Title of {id}"),
            artists: vec!["Test Artist".into()],
            isrc: None,
            iswc: None,
            holder: "Test Holder".into(),
            holder_isni: None,
            reference: ReferenceAudio {
                duration_s: work.info.duration_s,
                fingerprint_config: format!("{:08x}", earmark::fingerprint::CONFIG_ID),
                audio_sha256: earmark::content::sha256_file(&file).unwrap(),
                source_file: file.display().to_string(),
            },
        };
        let consents: Vec<NewConsent> = consent
            .map(|status| NewConsent::new(Scope::AiTraining, status, "test", at))
            .into_iter()
            .collect();
        catalog
            .register(&work, metadata, &consents, "test")
            .unwrap();
    }
}

/// `earmark --data DATA scan ARGS…`
pub fn scan_cmd() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_earmark"));
    cmd.arg("--data").arg(data_dir()).arg("scan").arg("--quiet");
    cmd
}

/// Runs a scan to completion; returns the exit code.
pub fn run_scan(args: &[&std::ffi::OsStr]) -> i32 {
    let out = scan_cmd().args(args).output().unwrap();
    let code = out.status.code().unwrap_or(-1);
    if code == 2 {
        panic!(
            "scan failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    code
}

/// The rows of a JSONL report.
pub fn read_report(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `item → verdict` of a report.
pub fn verdicts(rows: &[serde_json::Value]) -> Vec<(String, String)> {
    rows.iter()
        .map(|r| {
            (
                r["item"].as_str().unwrap().to_owned(),
                r["verdict"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The verdict of the row whose item ends with `suffix`.
pub fn verdict_of<'a>(rows: &'a [serde_json::Value], suffix: &str) -> &'a str {
    rows.iter()
        .find(|r| r["item"].as_str().unwrap().ends_with(suffix))
        .unwrap_or_else(|| panic!("no row for {suffix}"))["verdict"]
        .as_str()
        .unwrap()
}

/// Expected verdict of each sample submission (from the consent table above).
pub const SUBMISSIONS: [(&str, &str); 6] = [
    ("excerpt-mp3.mp3", "block"),
    ("mix-two-works.ogg", "block"),
    ("pitched.ogg", "flag"),
    ("speed.wav", "block"),
    ("unrelated.ogg", "allow"),
    ("speech.ogg", "allow"),
];

//! `earmark demo`: the main job on the embedded default, end to end, on the real
//! clips shipped in `test-audio/`.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::decode::DecodeLimits;
use crate::engine::{self, DataDir};
use crate::report;

use super::{EXIT_CLEAN, EXIT_ERROR, Thresholds};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Directory with refs/ and submissions/ (default: ./test-audio, else the source tree's).
    #[arg(long)]
    pub audio: Option<PathBuf>,
    /// Keep the demo's data directory here instead of a temporary one.
    #[arg(long)]
    pub keep: Option<PathBuf>,
    #[command(flatten)]
    pub thresholds: Thresholds,
}

const AUDIO_EXTENSIONS: [&str; 12] = [
    "ogg", "oga", "opus", "flac", "wav", "mp3", "m4a", "aac", "aiff", "aif", "mkv", "webm",
];

fn audio_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| AUDIO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        })
        .collect();
    files.sort();
    Ok(files)
}

fn locate_audio(arg: &Option<PathBuf>) -> Result<PathBuf> {
    let candidates = match arg {
        Some(p) => vec![p.clone()],
        None => vec![
            PathBuf::from("test-audio"),
            Path::new(env!("CARGO_MANIFEST_DIR")).join("test-audio"),
        ],
    };
    candidates
        .into_iter()
        .find(|p| p.join("refs").is_dir())
        .context("test-audio/refs not found: run from the earmark source tree or pass --audio DIR")
}

/// Work ids the EXPECTED.json file lists for a submission file name.
fn expected_works(expected: &serde_json::Value, file_name: &str) -> Option<BTreeSet<String>> {
    let entry = expected
        .get("submissions")
        .and_then(|s| s.get(format!("submissions/{file_name}")))?;
    let mut ids = BTreeSet::new();
    collect_work_ids(entry, &mut ids);
    Some(ids)
}

fn collect_work_ids(v: &serde_json::Value, ids: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, val) in map {
                match (k.as_str(), val) {
                    ("work_id", serde_json::Value::String(s)) => {
                        ids.insert(s.clone());
                    }
                    _ => collect_work_ids(val, ids),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| collect_work_ids(i, ids)),
        _ => {}
    }
}

pub fn run(args: &DemoArgs) -> Result<u8> {
    let audio = locate_audio(&args.audio)?;
    let temp = tempfile::tempdir()?;
    let root = args.keep.clone().unwrap_or_else(|| temp.path().to_path_buf());
    let data = DataDir::new(&root);
    let refs = audio_files(&audio.join("refs"))?;
    if refs.is_empty() {
        bail!("no reference audio in {}", audio.join("refs").display());
    }
    println!("== registering {} reference recordings ({})", refs.len(), audio.join("refs").display());
    let jobs: Vec<(String, PathBuf)> = refs
        .iter()
        .map(|p| {
            let id = p.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
            (id, p.clone())
        })
        .collect();
    let writer = data.index_writer()?;
    let mut prepared = Vec::new();
    for result in engine::prepare_works(&jobs, &DecodeLimits::default()) {
        let work = result?;
        println!(
            "  {:<32} {:>6.1} s  {:>6} prints",
            work.work_id,
            work.info.duration_s,
            work.fingerprint.prints.len()
        );
        prepared.push(work);
    }
    engine::commit_works(&writer, &prepared)?;
    drop(writer);

    let submissions = audio_files(&audio.join("submissions"))?;
    println!("\n== identifying {} submissions ({})", submissions.len(), audio.join("submissions").display());
    let reports = super::identify_reports(&data, &submissions, &args.thresholds.matcher_config())?;
    let expected: Option<serde_json::Value> = fs::read(audio.join("submissions/EXPECTED.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let (mut agree, mut disagree) = (0, 0);
    for r in &reports {
        print!("{}", report::human(r));
        let name = Path::new(&r.file)
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        if let Some(want) = expected.as_ref().and_then(|e| expected_works(e, &name)) {
            let got: BTreeSet<String> = r
                .matches
                .iter()
                .filter(|m| m.confident)
                .map(|m| m.work_id.clone())
                .collect();
            if got == want {
                agree += 1;
                println!("  expected {:?}: ok", want);
            } else {
                disagree += 1;
                println!("  expected {:?}: MISMATCH", want);
            }
        }
    }
    if expected.is_some() {
        println!("\n== {agree} submissions as expected, {disagree} not");
    }
    if let Some(keep) = &args.keep {
        println!("data directory kept at {}", keep.display());
    }
    Ok(if disagree > 0 { EXIT_ERROR } else { EXIT_CLEAN })
}

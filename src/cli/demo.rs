//! `earmark demo`: the main job on the embedded default, end to end, on the real
//! clips shipped in `test-audio/`: register the reference clips with metadata
//! and (invented) consent, identify the sample submissions, and screen them for
//! AI training — one blocked, one flagged, one allowed with an attribution.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::data_dir::DataDir;
use crate::decode::DecodeLimits;
use crate::policy::{Decision, PolicyConfig};
use crate::registration::Catalog;
use crate::registration::Registration;
use crate::registry::{ConsentStatus, NewConsent, NewWork, Scope, WorkId};
use crate::report;

use super::{EXIT_CLEAN, EXIT_ERROR, Screening, Thresholds};

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

/// Actor the demo records in the audit log.
const DEMO_ACTOR: &str = "earmark-demo";
/// The use the demo screens for.
const DEMO_PURPOSE: Scope = Scope::AiTraining;

/// Metadata and invented consent of a shipped reference clip.
struct DemoWork {
    id: &'static str,
    title: &'static str,
    artist: &'static str,
    holder: &'static str,
    consent: Option<ConsentStatus>,
}

/// The reference clips of test-audio/ (see PROVENANCE.md). The consent
/// statements are invented for the demo; the real licences are free ones.
const DEMO_WORKS: [DemoWork; 4] = [
    DemoWork {
        id: "wesnoth-heroes-rite",
        title: "Heroes Rite",
        artist: "The Battle for Wesnoth",
        holder: "The Battle for Wesnoth project",
        consent: Some(ConsentStatus::OptedOut),
    },
    DemoWork {
        id: "wesnoth-northerners",
        title: "Northerners",
        artist: "The Battle for Wesnoth",
        holder: "The Battle for Wesnoth project",
        consent: None,
    },
    DemoWork {
        id: "fof-muldjord-armygeddon",
        title: "Armygeddon",
        artist: "Muldjord",
        holder: "El Senator (Muldjord)",
        consent: Some(ConsentStatus::OptedIn),
    },
    DemoWork {
        id: "fof-sectoid-war-of-freedom",
        title: "War of Freedom",
        artist: "Sectoid",
        holder: "Carlos Viola Iborra",
        consent: Some(ConsentStatus::OptedIn),
    },
];

/// Verdicts the demo expects for the shipped submissions given [`DEMO_WORKS`].
const EXPECTED_VERDICTS: [(&str, Decision); 6] = [
    ("excerpt-mp3.mp3", Decision::Block),
    ("mix-two-works.ogg", Decision::Flag),
    ("pitched.ogg", Decision::Allow),
    ("speech.ogg", Decision::Allow),
    ("speed.wav", Decision::Block),
    ("unrelated.ogg", Decision::Allow),
];

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

/// The registration of one reference clip, with its demo metadata and consent.
fn demo_registration(
    work: crate::registration::PreparedWork,
    now: time::OffsetDateTime,
) -> Result<Registration> {
    let sha256 = crate::content::sha256_file(&work.source)?;
    let known = DEMO_WORKS.iter().find(|d| d.id == work.work_id);
    let holder = known.map_or("unknown", |d| d.holder);
    let consents = known
        .and_then(|d| d.consent)
        .map(|status| vec![NewConsent::new(DEMO_PURPOSE, status, holder, now)])
        .unwrap_or_default();
    let metadata = NewWork {
        id: WorkId::parse(&work.work_id)?,
        title: known.map_or(work.work_id.as_str(), |d| d.title).to_owned(),
        artists: known.map(|d| vec![d.artist.to_owned()]).unwrap_or_default(),
        isrc: None,
        iswc: None,
        holder: holder.to_owned(),
        holder_isni: None,
        reference: crate::registration::reference_summary(&work, &sha256),
    };
    Ok(Registration {
        work,
        metadata,
        consents,
    })
}

/// Registers the reference clips through the catalog (fingerprints + registry).
fn register_refs(data: &DataDir, refs: &[PathBuf]) -> Result<Vec<String>> {
    let jobs: Vec<(String, PathBuf)> = refs
        .iter()
        .map(|p| {
            let id = p
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default();
            (id, p.clone())
        })
        .collect();
    let catalog = Catalog::open(data)?;
    let now = catalog.registry.now();
    let mut items = Vec::new();
    for result in crate::registration::prepare_works(&jobs, &DecodeLimits::default()) {
        items.push(demo_registration(result?, now)?);
    }
    let mut ids = Vec::new();
    for (item, result) in items
        .iter()
        .zip(catalog.register_batch(&items, DEMO_ACTOR)?)
    {
        let work = result?;
        let consent = item
            .consents
            .first()
            .map(|c| format!("{} for {}", c.status, c.scope))
            .unwrap_or_else(|| "no consent on record".to_owned());
        println!(
            "  {:<28} {:>5.1} s {:>6} prints  {:<16} {consent}",
            work.id.as_str(),
            item.work.info.duration_s,
            item.work.fingerprint.prints.len(),
            work.title,
        );
        ids.push(work.id.to_string());
    }
    Ok(ids)
}

pub fn run(args: &DemoArgs) -> Result<u8> {
    let audio = locate_audio(&args.audio)?;
    let temp = tempfile::tempdir()?;
    let root = args
        .keep
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    let data = DataDir::new(&root);
    let refs = audio_files(&audio.join("refs"))?;
    if refs.is_empty() {
        bail!("no reference audio in {}", audio.join("refs").display());
    }
    println!(
        "== registering {} reference recordings ({})",
        refs.len(),
        audio.join("refs").display()
    );
    println!("   (the consent statements are invented for the demo)");
    let registered = register_refs(&data, &refs)?;
    let check_verdicts = DEMO_WORKS
        .iter()
        .all(|d| registered.iter().any(|r| r == d.id));

    let submissions = audio_files(&audio.join("submissions"))?;
    println!(
        "\n== screening {} submissions for {DEMO_PURPOSE} ({})",
        submissions.len(),
        audio.join("submissions").display()
    );
    let screening = Screening {
        purpose: DEMO_PURPOSE,
        config: PolicyConfig::default(),
        submission_id: None,
        record_attributions: true,
    };
    let results = super::screen(
        &data,
        &submissions,
        &args.thresholds.matcher_config(),
        Some(&screening),
    )?;
    let expected: Option<serde_json::Value> = fs::read(audio.join("submissions/EXPECTED.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let (mut agree, mut disagree) = (0, 0);
    let mut decisions = Vec::new();
    for s in &results {
        let r = &s.report;
        print!("{}", report::human(r));
        if let Some(v) = &s.verdict {
            print!("{}", super::human_verdict(v, s.attributions_recorded));
            decisions.push(v.decision);
        }
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
            let verdict_ok = !check_verdicts
                || EXPECTED_VERDICTS
                    .iter()
                    .find(|(file, _)| *file == name)
                    .is_none_or(|(_, want)| s.verdict.as_ref().map(|v| v.decision) == Some(*want));
            if got == want && verdict_ok {
                agree += 1;
                println!("  expected {want:?}: ok");
            } else {
                disagree += 1;
                println!("  expected {want:?}: MISMATCH");
            }
        }
        println!();
    }
    let count = |d: Decision| decisions.iter().filter(|x| **x == d).count();
    println!(
        "== verdicts: {} blocked, {} flagged, {} allowed",
        count(Decision::Block),
        count(Decision::Flag),
        count(Decision::Allow)
    );
    let registry = data.open_registry()?;
    for total in registry.ledger_totals(None, None)? {
        println!(
            "   ledger: {} ({}) {:.1} s in {} submission(s)",
            total.work_id, total.holder, total.seconds, total.submissions
        );
    }
    if expected.is_some() {
        println!("== {agree} submissions as expected, {disagree} not");
    }
    if let Some(keep) = &args.keep {
        println!("data directory kept at {}", keep.display());
    }
    Ok(if disagree > 0 { EXIT_ERROR } else { EXIT_CLEAN })
}

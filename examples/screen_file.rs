//! Screens one audio file against an existing data directory, as a library
//! user would: open the index and the registry read-only, fingerprint the
//! file, and let the one screening use case decide. Nothing is written (a dry
//! run: no ledger record).
//!
//! ```sh
//! cargo run --release -- demo --keep earmark-data     # a data directory to screen against
//! cargo run --release --example screen_file -- earmark-data test-audio/submissions/pitched.ogg
//! ```

use std::error::Error;
use std::path::PathBuf;

use earmark::content::sha256_file;
use earmark::data_dir::DataDir;
use earmark::decode::DecodeLimits;
use earmark::fingerprint::Side;
use earmark::fingerprint::audio::fingerprint_file;
use earmark::matcher::MatcherConfig;
use earmark::policy::PolicyConfig;
use earmark::registry::Scope;
use earmark::screening::{Screener, Submission, SubmissionId};

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let (Some(data_dir), Some(file)) = (args.next(), args.next()) else {
        return Err("usage: screen_file DATA_DIR AUDIO_FILE".into());
    };
    let data = DataDir::new(data_dir);
    let index = data.open_index()?;
    let registry = data.open_registry_read_only()?;

    let (fingerprint, audio) = fingerprint_file(&file, &DecodeLimits::default(), Side::Query)?;
    let submission = Submission {
        id: SubmissionId::from_sha256(&sha256_file(&file)?)?,
        name: file.display().to_string(),
    };
    let (policy, matcher) = (PolicyConfig::default(), MatcherConfig::default());
    let screener = Screener::new(&index, &registry, &policy, &matcher);
    let screened = screener.screen(&submission, &fingerprint, Scope::AiTraining, registry.now())?;

    let verdict = &screened.verdict;
    println!(
        "{} ({:.1} s, {}): {}",
        submission.name,
        audio.duration_s,
        verdict.submission_id,
        verdict.decision.as_str().to_uppercase()
    );
    for reason in &verdict.reasons {
        println!("  {reason}");
    }
    for e in &verdict.evidence {
        println!(
            "  {} at {:.1}–{:.1} s (reference {:.1}–{:.1} s), score {:.1}, speed ×{:.3}, pitch ×{:.3}",
            e.work_id,
            e.query_start_s,
            e.query_end_s,
            e.ref_start_s,
            e.ref_end_s,
            e.score,
            e.speed_factor,
            e.pitch_factor
        );
    }
    Ok(())
}

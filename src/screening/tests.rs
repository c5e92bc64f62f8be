use std::path::{Path, PathBuf};

use super::*;
use crate::data_dir::DataDir;
use crate::fingerprint::audio::fingerprint_file;
use crate::registration::{PreparedWork, commit_works, prepare_work};
use crate::registry::test_support::{open_temp, sample_work};
use crate::registry::{ConsentStatus, NewConsent, WorkId};

fn clip(id: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("test-audio/refs/{id}.ogg"))
}

fn submission_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("test-audio/submissions/{name}"))
}

#[test]
fn identify_looks_up_while_decoding_and_matches_as_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::new(dir.path());
    let limits = DecodeLimits::default();
    let ids = [
        "wesnoth-heroes-rite",
        "wesnoth-northerners",
        "fof-muldjord-armygeddon",
    ];
    let works: Vec<PreparedWork> = ids
        .iter()
        .map(|id| prepare_work(id, &clip(id), &limits).unwrap())
        .collect();
    commit_works(&data.index_writer().unwrap(), &works).unwrap();
    let index = data.open_index().unwrap();
    let config = MatcherConfig::default();
    let mix = submission_file("mix-two-works.ogg");
    let (fingerprint, _) = fingerprint_file(&mix, &limits, Side::Query).unwrap();
    let after = matcher::find_matches(&index, &fingerprint, &config);
    let found: Vec<&str> = after.iter().map(|m| m.work_id.as_str()).collect();
    assert_eq!(found, ["wesnoth-northerners", "fof-muldjord-armygeddon"]);
    // The pipelined path (this thread) and the pool-worker path (scan,
    // service) both feed the lookups as they go.
    let pipelined = identify_file(&index, &mix, &limits, &config).unwrap();
    assert_eq!(pipelined.matches, after);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let on_worker = pool
        .install(|| identify_file(&index, &mix, &limits, &config))
        .unwrap();
    assert_eq!(on_worker.matches, after);
}

fn consent(status: ConsentStatus) -> NewConsent {
    let since = crate::registry::test_support::T0 - time::Duration::days(1);
    NewConsent::new(Scope::AiTraining, status, "Holder", since)
}

/// Two opted-in works and one opted-out work, registered in a registry and
/// an index in the same data directory.
fn opted_in_and_out() -> (tempfile::TempDir, Index, Registry) {
    let (dir, registry) = open_temp();
    let data = DataDir::new(dir.path());
    let limits = DecodeLimits::default();
    let mut works = Vec::new();
    for (id, status) in [
        ("wesnoth-heroes-rite", ConsentStatus::OptedIn),
        ("wesnoth-northerners", ConsentStatus::OptedIn),
        ("fof-muldjord-armygeddon", ConsentStatus::OptedOut),
    ] {
        works.push(prepare_work(id, &clip(id), &limits).unwrap());
        let mut meta = sample_work(id);
        meta.id = WorkId::parse(id).unwrap();
        registry.add_work(meta, &[consent(status)], "test").unwrap();
    }
    commit_works(&data.index_writer().unwrap(), &works).unwrap();
    let index = data.open_index().unwrap();
    (dir, index, registry)
}

fn excerpt_of_opted_in_work() -> Fingerprint {
    // An excerpt of heroes-rite alone (noisy MP3): an allowed, opted-in use.
    let (fingerprint, _) = fingerprint_file(
        &submission_file("excerpt-mp3.mp3"),
        &DecodeLimits::default(),
        Side::Query,
    )
    .unwrap();
    fingerprint
}

#[test]
fn an_allowed_opted_in_use_is_recorded_once_per_submission() {
    let (_dir, index, registry) = opted_in_and_out();
    let policy = PolicyConfig::default();
    let config = MatcherConfig::default();
    let fingerprint = excerpt_of_opted_in_work();
    let submission = Submission {
        id: SubmissionId::of_content(b"the submitted bytes"),
        name: "excerpt".into(),
    };
    let at = registry.now();
    let dry = Screener::new(&index, &registry, &policy, &config);
    let first = dry
        .screen(&submission, &fingerprint, Scope::AiTraining, at)
        .unwrap();
    assert_eq!(
        first.verdict.decision,
        Decision::Allow,
        "{:?}",
        first.verdict.reasons
    );
    assert_eq!(first.verdict.attributions.len(), 1);
    assert_eq!(first.attributions_recorded, 0, "a dry run records nothing");
    assert!(registry.ledger_totals(None, None).unwrap().is_empty());

    let recording = Screener::new(&index, &registry, &policy, &config).recording_to(&registry);
    let second = recording
        .screen(&submission, &fingerprint, Scope::AiTraining, at)
        .unwrap();
    assert_eq!(second.attributions_recorded, 1);
    assert_eq!(second.verdict.submission_id, submission.id.as_str());
    let again = recording
        .screen(&submission, &fingerprint, Scope::AiTraining, at)
        .unwrap();
    assert_eq!(
        again.attributions_recorded, 0,
        "a retry does not count twice"
    );
    let totals = registry.ledger_totals(None, None).unwrap();
    assert_eq!(totals.len(), 1);
    assert_eq!(
        (totals[0].work_id.as_str(), totals[0].submissions),
        ("wesnoth-heroes-rite", 1)
    );
}

#[test]
fn a_blocked_submission_records_nothing() {
    let (_dir, index, registry) = opted_in_and_out();
    let policy = PolicyConfig::default();
    let config = MatcherConfig::default();
    let (mix, _) = fingerprint_file(
        &submission_file("mix-two-works.ogg"),
        &DecodeLimits::default(),
        Side::Query,
    )
    .unwrap();
    let submission = Submission {
        id: SubmissionId::of_prints(&mix.prints),
        name: "mix".into(),
    };
    let screened = Screener::new(&index, &registry, &policy, &config)
        .recording_to(&registry)
        .screen(&submission, &mix, Scope::AiTraining, registry.now())
        .unwrap();
    assert_eq!(screened.verdict.decision, Decision::Block);
    assert_eq!(screened.verdict.evidence.len(), 2);
    assert_eq!(screened.attributions_recorded, 0);
    assert!(registry.ledger_totals(None, None).unwrap().is_empty());
}

#[test]
fn works_the_registry_does_not_hold_are_flagged_not_allowed() {
    let (_dir, index, registry) = opted_in_and_out();
    // The opted-in work vanishes from the registry but not from the index
    // (an interrupted removal, or a replica whose registry is ahead).
    registry.remove_work("wesnoth-heroes-rite", "test").unwrap();
    let policy = PolicyConfig::default();
    let config = MatcherConfig::default();
    let fingerprint = excerpt_of_opted_in_work();
    let submission = Submission {
        id: SubmissionId::of_prints(&fingerprint.prints),
        name: "excerpt".into(),
    };
    let screened = Screener::new(&index, &registry, &policy, &config)
        .recording_to(&registry)
        .screen(&submission, &fingerprint, Scope::AiTraining, registry.now())
        .unwrap();
    assert_eq!(screened.verdict.decision, Decision::Flag);
    assert!(!screened.verdict.evidence[0].registered);
    assert_eq!(screened.attributions_recorded, 0);
}

/// Snapshots of an index directory: a cached one, and a re-open that
/// reports the directory's state only from the `fresh_after`-th call on
/// (a shared file system that shows a replaced manifest late).
struct LaggingSnapshots {
    dir: PathBuf,
    cached: std::sync::Arc<Index>,
    stale: std::sync::Arc<Index>,
    reopened: std::sync::atomic::AtomicUsize,
    fresh_after: usize,
}

impl IndexSnapshots for LaggingSnapshots {
    fn snapshot(&self) -> Result<std::sync::Arc<Index>, IndexError> {
        Ok(std::sync::Arc::clone(&self.cached))
    }

    fn reopen(&self) -> Result<std::sync::Arc<Index>, IndexError> {
        let n = self
            .reopened
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if n + 1 >= self.fresh_after {
            Ok(std::sync::Arc::new(Index::open(&self.dir)?))
        } else {
            Ok(std::sync::Arc::clone(&self.stale))
        }
    }
}

#[test]
fn a_snapshot_behind_the_registry_is_reopened_or_refused_never_used() {
    use std::sync::Arc;
    use std::time::Duration;
    let (dir, registry) = open_temp();
    let data = DataDir::new(dir.path());
    let limits = DecodeLimits::default();
    let writer = data.index_writer().unwrap();
    let first = prepare_work("a", &clip("wesnoth-heroes-rite"), &limits).unwrap();
    commit_works(&writer, &[first]).unwrap();
    let old = Arc::new(data.open_index().unwrap());
    let snapshots = |fresh_after| LaggingSnapshots {
        dir: data.index_dir(),
        cached: Arc::clone(&old),
        stale: Arc::clone(&old),
        reopened: Default::default(),
        fresh_after,
    };
    // Registry and snapshot agree: the cached snapshot, no re-open.
    let current = current_index(&snapshots(1), &registry, Duration::ZERO).unwrap();
    assert!(Arc::ptr_eq(&current, &old));

    // Another process registers a work: generation 2 in the directory and
    // in the registry; this process still holds generation 1.
    let second = prepare_work("b", &clip("wesnoth-northerners"), &limits).unwrap();
    let generation = commit_works(&writer, &[second]).unwrap();
    registry.publish_index_generation(generation).unwrap();
    // The directory shows it at once: re-opened, used.
    let current = current_index(&snapshots(1), &registry, Duration::ZERO).unwrap();
    assert_eq!((current.generation(), current.contains("b")), (2, true));
    // It shows it on the third look: waited for.
    let lagging = snapshots(3);
    let current = current_index(&lagging, &registry, Duration::from_secs(60)).unwrap();
    assert_eq!(current.generation(), 2);
    assert_eq!(
        lagging.reopened.load(std::sync::atomic::Ordering::Relaxed),
        3
    );
    // It never shows it within the wait: refused, with both generations.
    let err =
        current_index(&snapshots(usize::MAX), &registry, Duration::from_millis(30)).unwrap_err();
    match &err {
        ScreeningError::IndexBehind { required, held, .. } => {
            assert_eq!((*required, *held), (2, 1));
        }
        other => panic!("{other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("generation 1") && text.contains("generation 2"),
        "{text}"
    );
}

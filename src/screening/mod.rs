//! # Screening: the one use case every entry point calls
//!
//! match → verdict (policy, consent for the purpose) → ledger record of an
//! allowed opted-in use. The command line (`identify --purpose`), the corpus
//! scan (local), the gRPC methods (`Screen`, `ScreenFingerprints`, and so a
//! remote scan) and the Python binding are adapters over [`Screener`]: they
//! decode or receive prints, name the submission by the rule of
//! [`SubmissionId`], and present the [`Screened`] result in their own format.
//!
//! * Every match the index reports goes to the policy, including matches of
//!   works the registry does not hold (left by an interrupted registration, or
//!   a replica whose registry lags its index): the policy flags those for
//!   review, so such audio is never silently allowed.
//! * **An index no older than the registry.** A verdict from an index
//!   snapshot older than the generation the registry vouches for
//!   ([`crate::registry::index_generation`]) could miss a work the registry
//!   already holds. [`current_index`] is the precondition an entry point
//!   that follows a shared index (the service's replicas) runs before
//!   screening: it re-opens a snapshot that is behind, waits a bounded time
//!   for it to catch up, and otherwise fails with
//!   [`ScreeningError::IndexBehind`] — never a verdict.
//! * The ledger is written only for `allow` verdicts with attributions, once
//!   per (submission id, work, purpose): a re-run, a resumed scan or a retried
//!   request writes nothing new. A screener built without a ledger
//!   ([`Screener::new`] without [`Screener::recording_to`]) is a dry run.

mod submission;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::decode::{AudioInfo, DecodeLimits};
use crate::error::EngineError;
use crate::fingerprint::audio::fingerprint_file_observed;
use crate::fingerprint::{Fingerprint, Side};
use crate::index::{Index, IndexError};
use crate::matcher::{self, HitGatherer, Match, MatcherConfig};
use crate::policy::{self, Decision, PolicyConfig, PolicyError, Verdict, VerdictContext};
use crate::registry::{Registry, RegistryError, Scope};

pub use submission::{
    MAX_SUBMISSION_ID_LEN, PRINTS_PREFIX, SHA256_PREFIX, SubmissionId, SubmissionIdError,
};

/// What is being screened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    pub id: SubmissionId,
    /// Human-readable name (file name, URL, item id).
    pub name: String,
}

/// The outcome of screening one submission.
#[derive(Debug, Clone)]
pub struct Screened {
    /// The verdict, with one evidence entry per match (time ranges, factors,
    /// consent) and the reasons in words.
    pub verdict: Verdict,
    /// New ledger entries written for this screening (0 when already recorded,
    /// not allowed, or a dry run).
    pub attributions_recorded: usize,
}

/// Why a submission could not be screened.
#[derive(Debug, thiserror::Error)]
pub enum ScreeningError {
    #[error(transparent)]
    Policy(Box<PolicyError>),
    /// The index snapshot is older than the generation the registry vouches
    /// for, and did not catch up within the wait.
    #[error(
        "the index here is at generation {held}, the registry requires generation {required} \
         (waited {waited_s:.1} s for the index to catch up); a registration or removal is not \
         visible here yet, so no verdict is given: retry, or use another replica"
    )]
    IndexBehind {
        required: u64,
        held: u64,
        waited_s: f64,
    },
    #[error(transparent)]
    Registry(Box<RegistryError>),
    #[error(transparent)]
    Index(Box<IndexError>),
}

impl From<RegistryError> for ScreeningError {
    fn from(err: RegistryError) -> Self {
        Self::Registry(Box::new(err))
    }
}

impl From<IndexError> for ScreeningError {
    fn from(err: IndexError) -> Self {
        Self::Index(Box::new(err))
    }
}

/// Where an entry point gets its index snapshots from, for [`current_index`].
pub trait IndexSnapshots {
    /// The snapshot in use (cheap; may be a cached one).
    fn snapshot(&self) -> Result<Arc<Index>, IndexError>;
    /// A snapshot read from the index directory now, bypassing any cache
    /// (a shared file system may report a replaced manifest late).
    fn reopen(&self) -> Result<Arc<Index>, IndexError>;
}

/// First and longest pause while waiting for the index to catch up.
const CATCH_UP_PAUSE_FIRST: Duration = Duration::from_millis(10);
const CATCH_UP_PAUSE_MAX: Duration = Duration::from_millis(250);

/// The precondition of a verdict on an index the registry describes: a
/// snapshot at least as new as the generation the registry vouches for
/// ([`Registry::index_generation`], one indexed read). A snapshot that is
/// behind is re-opened, again and again with growing pauses, for at most
/// `wait`; if it is still behind then, [`ScreeningError::IndexBehind`].
pub fn current_index(
    snapshots: &(impl IndexSnapshots + ?Sized),
    registry: &Registry,
    wait: Duration,
) -> Result<Arc<Index>, ScreeningError> {
    let required = registry.index_generation()?;
    let index = snapshots.snapshot()?;
    if index.generation() >= required {
        return Ok(index);
    }
    let started = Instant::now();
    let mut pause = CATCH_UP_PAUSE_FIRST;
    loop {
        let index = snapshots.reopen()?;
        let held = index.generation();
        if held >= required {
            tracing::info!(
                generation = held,
                waited_s = started.elapsed().as_secs_f64(),
                "index caught up with the registry"
            );
            return Ok(index);
        }
        let waited = started.elapsed();
        if waited >= wait {
            tracing::warn!(required, held, "index behind the registry: no verdict");
            return Err(ScreeningError::IndexBehind {
                required,
                held,
                waited_s: waited.as_secs_f64(),
            });
        }
        std::thread::sleep(pause.min(wait - waited));
        pause = (pause * 2).min(CATCH_UP_PAUSE_MAX);
    }
}

impl From<PolicyError> for ScreeningError {
    fn from(err: PolicyError) -> Self {
        Self::Policy(Box::new(err))
    }
}

/// Screens submissions against one index snapshot and one registry.
pub struct Screener<'a> {
    index: &'a Index,
    registry: &'a Registry,
    ledger: Option<&'a Registry>,
    policy: &'a PolicyConfig,
    matcher: &'a MatcherConfig,
}

impl<'a> Screener<'a> {
    /// A screener that reads consent from `registry` and records nothing
    /// (a dry run until [`Screener::recording_to`] names a ledger).
    pub fn new(
        index: &'a Index,
        registry: &'a Registry,
        policy: &'a PolicyConfig,
        matcher: &'a MatcherConfig,
    ) -> Self {
        Self {
            index,
            registry,
            ledger: None,
            policy,
            matcher,
        }
    }

    /// Records allowed opted-in uses in `ledger` (usually the same registry;
    /// the service reads on one connection and writes on another).
    pub fn recording_to(mut self, ledger: &'a Registry) -> Self {
        self.ledger = Some(ledger);
        self
    }

    /// `recording_to(ledger)` when `record` is true, a dry run otherwise.
    pub fn recording_if(self, record: bool, ledger: &'a Registry) -> Self {
        if record {
            self.recording_to(ledger)
        } else {
            self
        }
    }

    pub fn index(&self) -> &'a Index {
        self.index
    }

    pub fn matcher_config(&self) -> &'a MatcherConfig {
        self.matcher
    }

    /// Matches the prints, decides for `purpose` as of `at`, and records an
    /// allowed use.
    pub fn screen(
        &self,
        submission: &Submission,
        fingerprint: &Fingerprint,
        purpose: Scope,
        at: OffsetDateTime,
    ) -> Result<Screened, ScreeningError> {
        let matches = matcher::find_matches(self.index, fingerprint, self.matcher);
        self.decide(submission, &matches, purpose, at)
    }

    /// The verdict on matches already found in this screener's index (for
    /// callers that match while decoding, or check for cancellation between
    /// matching and deciding), and the ledger record of an allowed use.
    pub fn decide(
        &self,
        submission: &Submission,
        matches: &[Match],
        purpose: Scope,
        at: OffsetDateTime,
    ) -> Result<Screened, ScreeningError> {
        let context = VerdictContext {
            submission_id: submission.id.as_str().to_owned(),
            submission_name: submission.name.clone(),
            index_generation: self.index.generation(),
            engine_version: crate::ENGINE_VERSION.to_owned(),
        };
        let verdict = policy::decide(matches, purpose, at, self.registry, self.policy, context)?;
        let attributions_recorded = match self.ledger {
            Some(ledger)
                if verdict.decision == Decision::Allow && !verdict.attributions.is_empty() =>
            {
                policy::record_attributions(&verdict, ledger)?
            }
            _ => 0,
        };
        Ok(Screened {
            verdict,
            attributions_recorded,
        })
    }
}

/// What identification found in one file.
#[derive(Debug, Clone)]
pub struct Identification {
    pub duration_s: f64,
    pub matches: Vec<Match>,
    pub info: AudioInfo,
}

/// Identifies every indexed work inside a file. The prints are looked up as
/// they are made, while the rest of the file decodes: only the last block's
/// lookups are left for the end.
pub fn identify_file(
    index: &Index,
    path: &Path,
    limits: &DecodeLimits,
    config: &MatcherConfig,
) -> Result<Identification, EngineError> {
    let mut gatherer = HitGatherer::new(index);
    let (fingerprint, info) =
        fingerprint_file_observed(path, limits, Side::Query, &mut |prints| {
            gatherer.add(prints)
        })?;
    Ok(Identification {
        duration_s: info.duration_s,
        matches: matcher::find_matches_gathered(index, &fingerprint, gatherer, config),
        info,
    })
}

#[cfg(test)]
mod tests;

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
//! * The ledger is written only for `allow` verdicts with attributions, once
//!   per (submission id, work, purpose): a re-run, a resumed scan or a retried
//!   request writes nothing new. A screener built without a ledger
//!   ([`Screener::new`] without [`Screener::recording_to`]) is a dry run.

mod submission;

use std::path::Path;

use time::OffsetDateTime;

use crate::decode::{AudioInfo, DecodeLimits};
use crate::error::EngineError;
use crate::fingerprint::audio::fingerprint_file_observed;
use crate::fingerprint::{Fingerprint, Side};
use crate::index::Index;
use crate::matcher::{self, HitGatherer, Match, MatcherConfig};
use crate::policy::{self, Decision, PolicyConfig, PolicyError, Verdict, VerdictContext};
use crate::registry::{Registry, Scope};

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

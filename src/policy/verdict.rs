//! The verdict: a serialisable, self-contained record of one policy decision.
//!
//! Field names are snake_case and enum values kebab-case; they are part of the
//! output contract (reports, gRPC, stored verdicts), so rename nothing without
//! bumping [`POLICY_VERSION`](super::POLICY_VERSION).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::PolicyConfig;
use crate::registry::consent::EffectiveStatus;
use crate::registry::{ConsentRecord, Isni, Isrc, Iswc, Scope};

/// What to do with the submission. Ordered by severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decision {
    Allow,
    Flag,
    Block,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Flag => "flag",
            Decision::Block => "block",
        }
    }
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who and what the decision is about (supplied by the caller).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerdictContext {
    /// Stable id of the submission (e.g. its SHA-256); the ledger is idempotent on it.
    pub submission_id: String,
    /// Human-readable name (file name, URL).
    pub submission_name: String,
    /// Generation of the fingerprint index the matches came from.
    pub index_generation: u64,
    pub engine_version: String,
}

/// Everything known about one match, for auditors and reviewers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchEvidence {
    pub work_id: String,
    /// False when the index knows the work but the registry does not.
    pub registered: bool,
    pub title: Option<String>,
    pub isrc: Option<Isrc>,
    pub iswc: Option<Iswc>,
    pub holder: Option<String>,
    pub holder_isni: Option<Isni>,
    /// Consent in force for the purpose at evaluation time.
    pub consent: EffectiveStatus,
    /// The record that decided it, in full.
    pub deciding_record: Option<ConsentRecord>,
    /// Which precedence rule decided, in words.
    pub consent_basis: String,
    /// Other records in force that lost to the deciding one.
    pub overridden_records: Vec<i64>,
    /// What this match alone calls for.
    pub outcome: Decision,
    pub score: f64,
    pub hits: u32,
    pub confident: bool,
    pub query_start_s: f64,
    pub query_end_s: f64,
    pub ref_start_s: f64,
    pub ref_end_s: f64,
    pub speed_factor: f64,
    pub pitch_factor: f64,
}

/// Seconds of an opted-in work used by the submission (ledger material).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attribution {
    pub work_id: String,
    pub title: String,
    pub isrc: Option<Isrc>,
    pub holder: String,
    /// Length of the union of the submission ranges where the work was found.
    pub seconds_matched: f64,
}

/// The outcome of [`decide`](super::decide).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub decision: Decision,
    pub purpose: Scope,
    #[serde(with = "time::serde::rfc3339")]
    pub evaluated_at: OffsetDateTime,
    pub submission_id: String,
    pub submission_name: String,
    /// Plain-English sentences: a summary, then one per match.
    pub reasons: Vec<String>,
    /// One entry per match, in the order the matcher reported them.
    pub evidence: Vec<MatchEvidence>,
    /// Empty when the decision is `block` (the submission is not used).
    pub attributions: Vec<Attribution>,
    pub policy_version: String,
    pub policy: PolicyConfig,
    pub index_generation: u64,
    pub engine_version: String,
}

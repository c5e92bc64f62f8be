//! # Policy: from matches to a verdict
//!
//! [`decide`] looks up, for every match, the registered work and its consent in
//! force for the purpose at the evaluation instant ([`Registry::work_consent`]),
//! gives each match an outcome, and takes the most severe:
//!
//! | consent in force            | confident match | weak match |
//! |-----------------------------|-----------------|------------|
//! | opted-out                   | **block**       | flag       |
//! | constrained (with terms)    | flag            | flag       |
//! | unknown                     | flag (or allow, [`UnknownConsent::Allow`]) | flag |
//! | opted-in                    | allow + attribution | flag   |
//! | work missing from registry  | flag            | flag       |
//!
//! No matches → allow. A weak (non-confident) match never blocks: it may be a
//! false positive, so a human reviews it. Opted-in works matched confidently
//! produce attributions (seconds of the submission covered by the work), unless
//! the verdict is `block` and the submission is not used at all.
//!
//! `decide` only reads: it can be unit-tested and re-run on stored matches to
//! reproduce a verdict. Writing attributions to the ledger is a separate step,
//! [`record_attributions`], to be called when the submission is actually used
//! (at once for `allow`; after a reviewer approves a `flag`).

mod reasons;
pub mod verdict;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use time::OffsetDateTime;

use crate::matcher::Match;
use crate::registry::consent::{EffectiveConsent, EffectiveStatus};
use crate::registry::ledger::NewAttribution;
use crate::registry::model::normalize_time;
use crate::registry::{Registry, RegistryError, Scope, Territory, Work};

pub use verdict::{Attribution, Decision, MatchEvidence, Verdict, VerdictContext};

/// Version of the decision rules; recorded in every verdict. Bump it whenever
/// the table above, the precedence of consent records or the verdict format
/// changes.
pub const POLICY_VERSION: &str = "earmark-policy/2";
/// Attributed seconds are rounded to this many per second (milliseconds).
const ATTRIBUTION_RESOLUTION: f64 = 1000.0;

/// What to do when no consent is recorded for a matched work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnknownConsent {
    Allow,
    #[default]
    Flag,
}

/// Deployment-level policy settings (recorded in every verdict).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyConfig {
    pub unknown_consent: UnknownConsent,
    /// Where the screened use happens; `None` = worldwide / not known, in which
    /// case a reservation in any country applies (see `registry::consent`).
    pub territory: Option<Territory>,
}

/// Why a verdict could not be made.
#[derive(Debug, Error)]
pub enum PolicyError {
    #[error("looking up work '{work_id}' for the verdict: {source}")]
    Registry {
        work_id: String,
        source: RegistryError,
    },
    #[error("match for work '{work_id}' is malformed: {reason}")]
    InvalidMatch { work_id: String, reason: String },
    #[error("recording attributions of submission '{submission_id}': {source}")]
    Ledger {
        submission_id: String,
        source: RegistryError,
    },
}

/// A work's registry entry and consent, looked up once per verdict.
type Lookup = Option<(Work, EffectiveConsent)>;

/// Decides what to do with a submission (see the module docs). Reads the
/// registry, writes nothing.
pub fn decide(
    matches: &[Match],
    purpose: Scope,
    at: OffsetDateTime,
    registry: &Registry,
    config: &PolicyConfig,
    context: VerdictContext,
) -> Result<Verdict, PolicyError> {
    let at = normalize_time(at);
    let evidence = gather_evidence(matches, purpose, at, registry, config)?;
    let decision = evidence
        .iter()
        .map(|e| e.outcome)
        .max()
        .unwrap_or(Decision::Allow);
    let purpose_text = match &config.territory {
        Some(t) if !t.is_world() => format!("{purpose} in {t}"),
        _ => purpose.to_string(),
    };
    let mut reasons = vec![reasons::summary(decision, &evidence, &purpose_text)];
    reasons.extend(evidence.iter().map(|e| {
        reasons::match_reason(
            e,
            (purpose, &purpose_text),
            config.unknown_consent,
            decision,
        )
    }));
    let attributions = if decision == Decision::Block {
        Vec::new()
    } else {
        attributions(&evidence)
    };
    Ok(Verdict {
        decision,
        purpose,
        evaluated_at: at,
        submission_id: context.submission_id,
        submission_name: context.submission_name,
        reasons,
        evidence,
        attributions,
        policy_version: POLICY_VERSION.to_owned(),
        policy: config.clone(),
        index_generation: context.index_generation,
        engine_version: context.engine_version,
    })
}

/// Checks every match, looks each work up once, and builds the evidence.
fn gather_evidence(
    matches: &[Match],
    purpose: Scope,
    at: OffsetDateTime,
    registry: &Registry,
    config: &PolicyConfig,
) -> Result<Vec<MatchEvidence>, PolicyError> {
    let mut lookups: HashMap<&str, Lookup> = HashMap::new();
    for m in matches {
        check_match(m)?;
        if !lookups.contains_key(m.work_id.as_str()) {
            let found = lookup(registry, &m.work_id, purpose, at, config.territory.as_ref())?;
            lookups.insert(&m.work_id, found);
        }
    }
    Ok(matches
        .iter()
        .map(|m| {
            let found = lookups.get(m.work_id.as_str()).and_then(Option::as_ref);
            evidence_for(m, found, config)
        })
        .collect())
}

fn check_match(m: &Match) -> Result<(), PolicyError> {
    let times = [
        m.query_start_s,
        m.query_end_s,
        m.ref_start_s,
        m.ref_end_s,
        m.score,
    ];
    let reason = if times.iter().any(|t| !t.is_finite()) {
        Some("non-finite score or time".to_owned())
    } else if m.query_end_s < m.query_start_s {
        Some(format!(
            "query range {}..{} is reversed",
            m.query_start_s, m.query_end_s
        ))
    } else {
        None
    };
    reason.map_or(Ok(()), |reason| {
        Err(PolicyError::InvalidMatch {
            work_id: m.work_id.clone(),
            reason,
        })
    })
}

/// The work and its consent; `None` if the id is not (validly) registered.
fn lookup(
    registry: &Registry,
    work_id: &str,
    purpose: Scope,
    at: OffsetDateTime,
    territory: Option<&Territory>,
) -> Result<Lookup, PolicyError> {
    match registry.work_consent(work_id, purpose, at, territory) {
        Ok(found) => Ok(found),
        Err(RegistryError::Id(_)) => Ok(None),
        Err(source) => Err(PolicyError::Registry {
            work_id: work_id.to_owned(),
            source,
        }),
    }
}

/// The outcome of one match (the table in the module docs).
fn outcome(
    consent: EffectiveStatus,
    confident: bool,
    registered: bool,
    config: &PolicyConfig,
) -> Decision {
    if !registered || !confident {
        return Decision::Flag;
    }
    match consent {
        EffectiveStatus::OptedOut => Decision::Block,
        EffectiveStatus::OptedIn => Decision::Allow,
        EffectiveStatus::Constrained => Decision::Flag,
        EffectiveStatus::Unknown => match config.unknown_consent {
            UnknownConsent::Allow => Decision::Allow,
            UnknownConsent::Flag => Decision::Flag,
        },
    }
}

fn evidence_for(
    m: &Match,
    found: Option<&(Work, EffectiveConsent)>,
    config: &PolicyConfig,
) -> MatchEvidence {
    let work = found.map(|(w, _)| w);
    let consent = found.map(|(_, c)| c);
    let status = consent.map_or(EffectiveStatus::Unknown, |c| c.status);
    MatchEvidence {
        work_id: m.work_id.clone(),
        registered: work.is_some(),
        title: work.map(|w| w.title.clone()),
        isrc: work.and_then(|w| w.isrc.clone()),
        iswc: work.and_then(|w| w.iswc.clone()),
        holder: work.map(|w| w.holder.clone()),
        holder_isni: work.and_then(|w| w.holder_isni.clone()),
        consent: status,
        deciding_record: consent.and_then(|c| c.deciding.clone()),
        consent_basis: consent.map_or_else(
            || "the work is not registered".to_owned(),
            |c| c.basis.clone(),
        ),
        overridden_records: consent.map(|c| c.overridden.clone()).unwrap_or_default(),
        outcome: outcome(status, m.confident, work.is_some(), config),
        score: m.score,
        hits: m.hits,
        confident: m.confident,
        query_start_s: m.query_start_s,
        query_end_s: m.query_end_s,
        ref_start_s: m.ref_start_s,
        ref_end_s: m.ref_end_s,
        speed_factor: m.speed_factor,
        pitch_factor: m.pitch_factor,
    }
}

/// One attribution per opted-in work with an allowed match: the length of the
/// union of its submission ranges (overlapping matches are not double-counted).
fn attributions(evidence: &[MatchEvidence]) -> Vec<Attribution> {
    let mut order: Vec<&str> = Vec::new();
    let mut ranges: HashMap<&str, Vec<(f64, f64)>> = HashMap::new();
    for e in evidence
        .iter()
        .filter(|e| e.consent == EffectiveStatus::OptedIn && e.outcome == Decision::Allow)
    {
        let entry = ranges.entry(&e.work_id).or_default();
        if entry.is_empty() {
            order.push(&e.work_id);
        }
        entry.push((e.query_start_s, e.query_end_s));
    }
    order
        .into_iter()
        .filter_map(|id| {
            let e = evidence.iter().find(|e| e.work_id == id)?;
            let seconds = union_length(ranges.remove(id).unwrap_or_default());
            Some(Attribution {
                work_id: id.to_owned(),
                title: e.title.clone().unwrap_or_default(),
                isrc: e.isrc.clone(),
                holder: e.holder.clone().unwrap_or_default(),
                seconds_matched: (seconds * ATTRIBUTION_RESOLUTION).round()
                    / ATTRIBUTION_RESOLUTION,
            })
        })
        .collect()
}

/// Total length covered by a set of `[start, end]` ranges.
fn union_length(mut ranges: Vec<(f64, f64)>) -> f64 {
    ranges.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut total = 0.0;
    let mut current: Option<(f64, f64)> = None;
    for (start, end) in ranges {
        current = match current {
            Some((s, e)) if start <= e => Some((s, e.max(end))),
            Some((s, e)) => {
                total += e - s;
                Some((start, end))
            }
            None => Some((start, end)),
        };
    }
    total + current.map_or(0.0, |(s, e)| e - s)
}

/// Appends the verdict's attributions to the ledger in one transaction
/// (idempotent per submission, work and purpose); returns how many were new.
pub fn record_attributions(verdict: &Verdict, registry: &Registry) -> Result<usize, PolicyError> {
    let items: Vec<NewAttribution> = verdict
        .attributions
        .iter()
        .map(|a| NewAttribution {
            work_id: a.work_id.clone(),
            seconds_matched: a.seconds_matched,
            submission_id: verdict.submission_id.clone(),
            submission_name: verdict.submission_name.clone(),
            purpose: verdict.purpose,
            at: verdict.evaluated_at,
        })
        .collect();
    registry
        .record_attributions(&items)
        .map_err(|source| PolicyError::Ledger {
            submission_id: verdict.submission_id.clone(),
            source,
        })
}

#[cfg(test)]
mod tests;

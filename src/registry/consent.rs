//! Consent records and how the consent in force is derived from them.
//!
//! Records are append-only; the answer to "may work W be used for purpose P at
//! time T (in territory C)?" is computed from all records each time, so it is
//! reproducible for any past instant and always comes with the record that
//! decided it.
//!
//! ## Precedence (implemented by [`resolve`])
//! 1. **In force.** Only records with `effective_from <= T < effective_until`.
//! 2. **Applicable scope.** A record about P, or about a broader scope that
//!    contains P ([`Scope::parent`]: fine-tuning ⊂ training ⊂ text-and-data-mining,
//!    voice-synthesis ⊂ generation).
//! 3. **Applicable territory.** `WORLD` records always apply. For a use in
//!    country C, records for C apply too. For a use whose territory is not given
//!    (treated as worldwide), a country record applies only if it *restricts*
//!    (opted-out, or constrained without terms): a reservation in one country
//!    bars a worldwide use, but a licence for one country does not cover it.
//! 4. **Most specific statement wins.** Closest scope first (exact before
//!    parent before grandparent), then a country before `WORLD`. Broader
//!    statements are only consulted when no more specific one is in force
//!    (so an explicit ai-training licence overrides a TDMRep reservation).
//! 5. **A source's newer statement replaces its older one.** Among the records
//!    about the same scope and territory from the same source (`registry`,
//!    `contract`, `tdmrep`, …), only the latest `asserted_at` counts: a licence
//!    recorded after an opt-out allows, and an opt-out recorded after an
//!    open-ended licence revokes it (records cannot be edited, so this is how
//!    consent is withdrawn, whoever operates the CLI or API key). On an exact tie
//!    the explicit licence wins (opted-in, then constrained-with-terms, then
//!    opted-out), then the later-recorded record.
//! 6. **Combining sources** (the rule, after AIPREF): an explicit
//!    licence (`opted-in`) allows; otherwise any opt-out blocks (`constrained`
//!    without terms counts as opted out); otherwise `constrained` with terms is a
//!    conditional licence reported as `constrained` (policy flags it for
//!    review). So a crawler re-observing a TDMRep reservation does not undo a
//!    contract licence, but sources that disagree without a licence block.
//!    No applicable record: `unknown`. Within the winning kind the most recent
//!    record is named as the deciding one.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::Registry;
use super::audit::{self, AuditAction};
use super::db::{Db, DbError, DbRow, values};
use super::error::{DbContext, RegistryError, Result, invalid};
use super::ids::{Territory, WorkId};
use super::model::{
    ConsentRecord, ConsentSource, ConsentStatus, NewConsent, Scope, Work, from_db_time,
    normalize_time, to_db_time,
};
use super::rows::{require_reg_no, required_text, validate_actor, work_by_reg_no};

/// Longest accepted policy reference or terms text.
const MAX_REF_LEN: usize = 4096;

/// The consent in force, derived from the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EffectiveStatus {
    OptedOut,
    OptedIn,
    /// Allowed under terms that need review.
    Constrained,
    /// Nothing applicable recorded.
    Unknown,
}

impl EffectiveStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EffectiveStatus::OptedOut => "opted-out",
            EffectiveStatus::OptedIn => "opted-in",
            EffectiveStatus::Constrained => "constrained",
            EffectiveStatus::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for EffectiveStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Derived consent with its evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EffectiveConsent {
    pub status: EffectiveStatus,
    /// The record that decided (`None` when unknown).
    pub deciding: Option<ConsentRecord>,
    /// Other applicable records in force that lost to it (ids).
    pub overridden: Vec<i64>,
    /// Which precedence rule decided, in words.
    pub basis: String,
}

/// What a single record amounts to.
fn record_effect(r: &ConsentRecord) -> EffectiveStatus {
    match r.status {
        ConsentStatus::OptedIn => EffectiveStatus::OptedIn,
        ConsentStatus::Constrained if r.has_terms() => EffectiveStatus::Constrained,
        ConsentStatus::Constrained | ConsentStatus::OptedOut => EffectiveStatus::OptedOut,
    }
}

/// Tie-break rank on equal `asserted_at`: the explicit licence first.
fn licence_rank(effect: EffectiveStatus) -> u8 {
    match effect {
        EffectiveStatus::OptedIn => 2,
        EffectiveStatus::Constrained => 1,
        EffectiveStatus::OptedOut | EffectiveStatus::Unknown => 0,
    }
}

/// Specificity of an applicable record for the query (lower is more specific):
/// `(scope distance, 0 for a country / 1 for WORLD)`, or `None` if not applicable.
fn specificity(r: &ConsentRecord, scope: Scope, territory: Option<&Territory>) -> Option<(u8, u8)> {
    let distance = scope.distance_to(r.scope)?;
    if r.territory.is_world() {
        return Some((distance, 1));
    }
    let applies = match territory {
        Some(t) if !t.is_world() => *t == r.territory,
        _ => record_effect(r) == EffectiveStatus::OptedOut,
    };
    applies.then_some((distance, 0))
}

/// Orders equally specific records; the greatest decides.
fn precedence(a: &ConsentRecord, b: &ConsentRecord) -> Ordering {
    a.asserted_at
        .cmp(&b.asserted_at)
        .then_with(|| licence_rank(record_effect(a)).cmp(&licence_rank(record_effect(b))))
        .then_with(|| a.id.cmp(&b.id))
}

/// True when `newer` replaces `older` (rule 5): same source, scope and
/// territory, and `newer` takes precedence.
fn supersedes(newer: &ConsentRecord, older: &ConsentRecord) -> bool {
    newer.id != older.id
        && newer.scope == older.scope
        && newer.territory == older.territory
        && newer.source == older.source
        && precedence(newer, older) == Ordering::Greater
}

/// Which part of rule 6 decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Combined {
    Licence,
    OptOut,
    Terms,
}

/// Derives the consent in force for `scope` at `at` (see the module docs).
/// `territory`: where the use happens; `None` or `WORLD` = worldwide/unknown.
pub fn resolve(
    records: &[ConsentRecord],
    scope: Scope,
    at: OffsetDateTime,
    territory: Option<&Territory>,
) -> EffectiveConsent {
    let applicable: Vec<(&ConsentRecord, (u8, u8))> = records
        .iter()
        .filter(|r| r.in_force_at(at))
        .filter_map(|r| specificity(r, scope, territory).map(|s| (r, s)))
        .collect();
    let unknown = || EffectiveConsent {
        status: EffectiveStatus::Unknown,
        deciding: None,
        overridden: Vec::new(),
        basis: format!("no consent statement for {scope} is in force"),
    };
    // Rule 4: only the most specific level counts.
    let Some(level) = applicable.iter().map(|(_, s)| *s).min() else {
        return unknown();
    };
    let candidates: Vec<&ConsentRecord> = applicable
        .iter()
        .filter(|(_, s)| *s == level)
        .map(|(r, _)| *r)
        .collect();
    // Rule 5: each source's latest statement.
    let current: Vec<&ConsentRecord> = candidates
        .iter()
        .copied()
        .filter(|r| !candidates.iter().any(|newer| supersedes(newer, r)))
        .collect();
    // Rule 6: a licence allows; otherwise an opt-out blocks; otherwise terms.
    let newest_with = |effect: EffectiveStatus| {
        current
            .iter()
            .copied()
            .filter(|r| record_effect(r) == effect)
            .max_by(|a, b| precedence(a, b))
    };
    let decided = newest_with(EffectiveStatus::OptedIn)
        .map(|r| (r, Combined::Licence))
        .or_else(|| newest_with(EffectiveStatus::OptedOut).map(|r| (r, Combined::OptOut)))
        .or_else(|| newest_with(EffectiveStatus::Constrained).map(|r| (r, Combined::Terms)));
    let Some((deciding, combined)) = decided else {
        return unknown();
    };
    let overridden: Vec<i64> = applicable
        .iter()
        .map(|(r, _)| r.id)
        .filter(|id| *id != deciding.id)
        .collect();
    let replaced = candidates
        .iter()
        .filter(|r| supersedes(deciding, r))
        .count();
    let others = current.len() - 1;
    let basis = describe_basis(
        deciding,
        scope,
        Basis {
            applicable: applicable.len(),
            less_specific: applicable.len() - candidates.len(),
            replaced,
            others,
            combined,
        },
    );
    EffectiveConsent {
        status: record_effect(deciding),
        deciding: Some(deciding.clone()),
        overridden,
        basis,
    }
}

/// Counts behind a decision, for its description.
struct Basis {
    /// Records in force that apply to the query.
    applicable: usize,
    /// Applicable records that yielded to more specific ones (rule 4).
    less_specific: usize,
    /// Earlier statements of the deciding record's source it replaced.
    replaced: usize,
    /// Current statements of other sources at the same level.
    others: usize,
    combined: Combined,
}

fn describe_basis(r: &ConsentRecord, scope: Scope, b: Basis) -> String {
    let plural = |n: usize, what: &str| {
        if n == 1 {
            format!("1 {what}")
        } else {
            format!("{n} {what}s")
        }
    };
    let mut basis = if b.applicable == 1 {
        "the only statement in force".to_owned()
    } else {
        let mut text = format!(
            "decided among {} in force",
            plural(b.applicable, "statement")
        );
        if b.replaced > 0 {
            let earlier = plural(b.replaced, "earlier statement");
            text.push_str(&format!("; it replaces {earlier} from the same source"));
        }
        if b.others > 0 {
            let others = plural(b.others, "statement");
            text.push_str(&match b.combined {
                Combined::Licence => {
                    format!("; an explicit licence allows over {others} from other sources")
                }
                Combined::OptOut => format!(
                    "; no licence is in force, so an opt-out blocks over {others} from other sources"
                ),
                Combined::Terms => format!(
                    "; only conditional consent is in force, also in {others} from other sources"
                ),
            });
        }
        if b.less_specific > 0 {
            let broader = plural(b.less_specific, "broader or worldwide statement");
            let verb = if b.less_specific == 1 {
                "yields"
            } else {
                "yield"
            };
            text.push_str(&format!("; {broader} {verb} to more specific ones"));
        }
        text
    };
    if r.scope != scope {
        basis.push_str(&format!(" (its scope {} covers {scope})", r.scope));
    }
    if r.status == ConsentStatus::Constrained && !r.has_terms() {
        basis.push_str("; constrained without terms counts as opted out");
    }
    basis
}

const CONSENT_COLUMNS: &str = "c.id, w.id, c.scope, c.status, c.effective_from, c.effective_until, \
     c.territory, c.asserted_by, c.asserted_at, c.source, c.policy_ref, c.terms, c.recorded_at";

/// Checks and normalises a statement before it is stored.
fn validate(c: &NewConsent) -> Result<NewConsent> {
    let mut c = c.clone();
    c.asserted_by = required_text("asserted_by", &c.asserted_by)?;
    c.effective_from = normalize_time(c.effective_from);
    c.effective_until = c.effective_until.map(normalize_time);
    c.asserted_at = normalize_time(c.asserted_at);
    if let Some(until) = c.effective_until
        && until <= c.effective_from
    {
        return Err(invalid(
            "effective_until",
            "must be later than effective_from",
        ));
    }
    c.terms = optional_text("terms", c.terms.as_deref())?;
    c.policy_ref = optional_text("policy_ref", c.policy_ref.as_deref())?;
    if c.terms.is_some() && c.status != ConsentStatus::Constrained {
        return Err(invalid(
            "terms",
            format!("only constrained consent carries terms, not {}", c.status),
        ));
    }
    Ok(c)
}

fn optional_text(field: &'static str, value: Option<&str>) -> Result<Option<String>> {
    let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if v.chars().count() > MAX_REF_LEN {
        return Err(invalid(
            field,
            format!("longer than {MAX_REF_LEN} characters"),
        ));
    }
    Ok(Some(v.to_owned()))
}

/// Inserts a statement for registration `reg_no` and audits it
/// (`consent-recorded`, details = the full record). Call inside a transaction.
pub(crate) fn insert_audited(
    db: &mut dyn Db,
    reg_no: i64,
    work_id: &WorkId,
    c: &NewConsent,
    now: OffsetDateTime,
    actor: &str,
) -> Result<ConsentRecord> {
    let c = validate(c)?;
    let territory = c.territory.clone().unwrap_or_else(Territory::world);
    let until = c.effective_until.map(to_db_time).transpose()?;
    let id: i64 = db.query_one(
        "INSERT INTO consent_records (reg_no, scope, status, effective_from, effective_until, territory, \
         asserted_by, asserted_at, source, policy_ref, terms, recorded_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) RETURNING id",
        &values![
            reg_no,
            c.scope.as_str(),
            c.status.as_str(),
            to_db_time(c.effective_from)?,
            until,
            territory.as_str(),
            &c.asserted_by,
            to_db_time(c.asserted_at)?,
            c.source.as_str(),
            c.policy_ref.as_deref(),
            c.terms.as_deref(),
            to_db_time(now)?,
        ],
    )
    .and_then(|r| r.get(0))
    .db(|| format!("recording consent for work '{work_id}'"))?;
    let record = ConsentRecord {
        id,
        work_id: work_id.clone(),
        scope: c.scope,
        status: c.status,
        effective_from: c.effective_from,
        effective_until: c.effective_until,
        territory,
        asserted_by: c.asserted_by,
        asserted_at: c.asserted_at,
        source: c.source,
        policy_ref: c.policy_ref,
        terms: c.terms,
        recorded_at: normalize_time(now),
    };
    let details = serde_json::to_value(&record).map_err(|source| RegistryError::Json {
        what: "consent record",
        source,
    })?;
    audit::append(
        db,
        now,
        actor,
        AuditAction::ConsentRecorded,
        work_id.as_str(),
        details,
    )?;
    Ok(record)
}

/// All records of registration `reg_no`, oldest first.
fn records_for(db: &mut dyn Db, reg_no: i64, work_id: &WorkId) -> Result<Vec<ConsentRecord>> {
    let sql = format!(
        "SELECT {CONSENT_COLUMNS} FROM consent_records c JOIN works w ON w.reg_no = c.reg_no \
         WHERE c.reg_no = ?1 ORDER BY c.id"
    );
    let raws = db
        .query(&sql, &values![reg_no])
        .and_then(|rows| {
            rows.iter()
                .map(RawConsent::from_row)
                .collect::<std::result::Result<Vec<_>, _>>()
        })
        .db(|| format!("reading consent of '{work_id}'"))?;
    raws.into_iter().map(RawConsent::into_record).collect()
}

impl Registry {
    /// Appends a consent statement for a registered work (audited).
    pub fn record_consent(
        &self,
        work_id: &str,
        consent: &NewConsent,
        actor: &str,
    ) -> Result<ConsentRecord> {
        let id = WorkId::parse(work_id)?;
        let actor = validate_actor(actor)?;
        let now = self.now();
        self.write("recording consent", |tx| {
            let reg_no = require_reg_no(tx, &id)?;
            insert_audited(tx, reg_no, &id, consent, now, actor)
        })
    }

    /// Every statement recorded for the work's current registration, oldest first.
    pub fn consent_history(&self, work_id: &str) -> Result<Vec<ConsentRecord>> {
        let id = WorkId::parse(work_id)?;
        self.read(|db| {
            let reg_no = require_reg_no(db, &id)?;
            records_for(db, reg_no, &id)
        })
    }

    /// The consent in force for `scope` at `at` (see the module docs);
    /// `territory` is where the use happens (`None` = worldwide/unknown).
    pub fn effective_consent(
        &self,
        work_id: &str,
        scope: Scope,
        at: OffsetDateTime,
        territory: Option<&Territory>,
    ) -> Result<EffectiveConsent> {
        let id = WorkId::parse(work_id)?;
        self.read(|db| {
            let reg_no = require_reg_no(db, &id)?;
            let records = records_for(db, reg_no, &id)?;
            Ok(resolve(&records, scope, at, territory))
        })
    }

    /// The work and its effective consent read together (one consistent
    /// snapshot); `None` if the work is not registered.
    pub fn work_consent(
        &self,
        work_id: &str,
        scope: Scope,
        at: OffsetDateTime,
        territory: Option<&Territory>,
    ) -> Result<Option<(Work, EffectiveConsent)>> {
        let id = WorkId::parse(work_id)?;
        self.read(|db| {
            let reg_no = match require_reg_no(db, &id) {
                Ok(n) => n,
                Err(RegistryError::WorkNotFound { .. }) => return Ok(None),
                Err(e) => return Err(e),
            };
            let work = work_by_reg_no(db, reg_no)?;
            let records = records_for(db, reg_no, &id)?;
            Ok(Some((work, resolve(&records, scope, at, territory))))
        })
    }
}

/// A consent row as stored, before validation.
struct RawConsent {
    id: i64,
    work_id: String,
    scope: String,
    status: String,
    effective_from: String,
    effective_until: Option<String>,
    territory: String,
    asserted_by: String,
    asserted_at: String,
    source: String,
    policy_ref: Option<String>,
    terms: Option<String>,
    recorded_at: String,
}

impl RawConsent {
    fn from_row(r: &DbRow) -> std::result::Result<Self, DbError> {
        Ok(Self {
            id: r.get(0)?,
            work_id: r.get(1)?,
            scope: r.get(2)?,
            status: r.get(3)?,
            effective_from: r.get(4)?,
            effective_until: r.get(5)?,
            territory: r.get(6)?,
            asserted_by: r.get(7)?,
            asserted_at: r.get(8)?,
            source: r.get(9)?,
            policy_ref: r.get(10)?,
            terms: r.get(11)?,
            recorded_at: r.get(12)?,
        })
    }

    fn into_record(self) -> Result<ConsentRecord> {
        let id = self.id;
        let corrupt = |reason: String| RegistryError::Corrupt {
            table: "consent_records",
            key: format!("record #{id}"),
            reason,
        };
        let time = |s: &str| from_db_time(s).map_err(|e| corrupt(e.to_string()));
        Ok(ConsentRecord {
            id,
            work_id: WorkId::parse(&self.work_id).map_err(|e| corrupt(e.to_string()))?,
            scope: self
                .scope
                .parse()
                .map_err(|e: super::model::ParseEnumError| corrupt(e.to_string()))?,
            status: self
                .status
                .parse()
                .map_err(|e: super::model::ParseEnumError| corrupt(e.to_string()))?,
            effective_from: time(&self.effective_from)?,
            effective_until: self.effective_until.as_deref().map(time).transpose()?,
            territory: Territory::parse(&self.territory).map_err(|e| corrupt(e.to_string()))?,
            asserted_by: self.asserted_by,
            asserted_at: time(&self.asserted_at)?,
            source: self
                .source
                .parse::<ConsentSource>()
                .map_err(|e| corrupt(e.to_string()))?,
            policy_ref: self.policy_ref,
            terms: self.terms,
            recorded_at: time(&self.recorded_at)?,
        })
    }
}

#[cfg(test)]
mod tests;

//! Conversions between domain types and the `earmark.v1` messages.
//!
//! Enum mappings are exhaustive `match`es, so a new scope, status or decision
//! in the domain fails to compile until the API covers it.

use prost_types::Timestamp;
use time::OffsetDateTime;

use super::error::ServiceError;
use super::pb;
use crate::policy::{self, Decision};
use crate::registry::consent::EffectiveStatus;
use crate::registry::{
    AuditEntry, ConsentRecord, ConsentSource, ConsentStatus, NewConsent, Scope, Territory, Work,
};

pub fn timestamp(t: OffsetDateTime) -> Timestamp {
    Timestamp {
        seconds: t.unix_timestamp(),
        nanos: i32::try_from(t.nanosecond()).unwrap_or(0),
    }
}

pub fn from_timestamp(field: &str, t: &Timestamp) -> Result<OffsetDateTime, ServiceError> {
    let bad = |reason: String| ServiceError::invalid(field, reason);
    if !(0..1_000_000_000).contains(&t.nanos) {
        return Err(bad(format!("nanos {} out of range", t.nanos)));
    }
    let secs = OffsetDateTime::from_unix_timestamp(t.seconds).map_err(|e| bad(e.to_string()))?;
    Ok(secs + time::Duration::nanoseconds(i64::from(t.nanos)))
}

pub use crate::proto::scope_to_pb;

pub fn scope_from_pb(field: &str, v: i32) -> Result<Scope, ServiceError> {
    match pb::Scope::try_from(v) {
        Ok(pb::Scope::AiTraining) => Ok(Scope::AiTraining),
        Ok(pb::Scope::AiFineTuning) => Ok(Scope::AiFineTuning),
        Ok(pb::Scope::AiGeneration) => Ok(Scope::AiGeneration),
        Ok(pb::Scope::VoiceSynthesis) => Ok(Scope::VoiceSynthesis),
        Ok(pb::Scope::TextAndDataMining) => Ok(Scope::TextAndDataMining),
        Ok(pb::Scope::Unspecified) => Err(ServiceError::invalid(field, "must be set")),
        Err(_) => Err(ServiceError::invalid(field, format!("unknown value {v}"))),
    }
}

pub fn status_to_pb(s: ConsentStatus) -> pb::ConsentStatus {
    match s {
        ConsentStatus::OptedOut => pb::ConsentStatus::OptedOut,
        ConsentStatus::OptedIn => pb::ConsentStatus::OptedIn,
        ConsentStatus::Constrained => pb::ConsentStatus::Constrained,
    }
}

pub fn status_from_pb(field: &str, v: i32) -> Result<ConsentStatus, ServiceError> {
    match pb::ConsentStatus::try_from(v) {
        Ok(pb::ConsentStatus::OptedOut) => Ok(ConsentStatus::OptedOut),
        Ok(pb::ConsentStatus::OptedIn) => Ok(ConsentStatus::OptedIn),
        Ok(pb::ConsentStatus::Constrained) => Ok(ConsentStatus::Constrained),
        Ok(pb::ConsentStatus::Unspecified) => Err(ServiceError::invalid(field, "must be set")),
        Err(_) => Err(ServiceError::invalid(field, format!("unknown value {v}"))),
    }
}

pub fn decision_to_pb(d: Decision) -> pb::Decision {
    match d {
        Decision::Allow => pb::Decision::Allow,
        Decision::Flag => pb::Decision::Flag,
        Decision::Block => pb::Decision::Block,
    }
}

fn effective_to_pb(s: EffectiveStatus) -> pb::EffectiveConsent {
    match s {
        EffectiveStatus::OptedOut => pb::EffectiveConsent::OptedOut,
        EffectiveStatus::OptedIn => pb::EffectiveConsent::OptedIn,
        EffectiveStatus::Constrained => pb::EffectiveConsent::Constrained,
        EffectiveStatus::Unknown => pb::EffectiveConsent::Unknown,
    }
}

/// Empty → `None`, else a validated territory.
pub fn territory(field: &str, s: &str) -> Result<Option<Territory>, ServiceError> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    Territory::parse(s)
        .map(Some)
        .map_err(|e| ServiceError::invalid(field, e.to_string()))
}

pub fn consent_record(r: &ConsentRecord) -> pb::ConsentRecord {
    pb::ConsentRecord {
        id: r.id,
        work_id: r.work_id.to_string(),
        scope: scope_to_pb(r.scope).into(),
        status: status_to_pb(r.status).into(),
        effective_from: Some(timestamp(r.effective_from)),
        effective_until: r.effective_until.map(timestamp),
        territory: r.territory.to_string(),
        asserted_by: r.asserted_by.clone(),
        asserted_at: Some(timestamp(r.asserted_at)),
        source: r.source.to_string(),
        policy_ref: r.policy_ref.clone(),
        terms: r.terms.clone(),
        recorded_at: Some(timestamp(r.recorded_at)),
    }
}

/// A statement from the API; defaults: now, worldwide, asserted by `actor`,
/// source `registry`.
pub fn new_consent(
    s: &pb::ConsentStatement,
    actor: &str,
    now: OffsetDateTime,
) -> Result<NewConsent, ServiceError> {
    let time = |field: &str, t: &Option<Timestamp>| {
        t.as_ref().map(|t| from_timestamp(field, t)).transpose()
    };
    let mut c = NewConsent::new(
        scope_from_pb("consent.scope", s.scope)?,
        status_from_pb("consent.status", s.status)?,
        actor,
        now,
    );
    if let Some(from) = time("consent.effective_from", &s.effective_from)? {
        c.effective_from = from;
    }
    c.effective_until = time("consent.effective_until", &s.effective_until)?;
    c.territory = territory("consent.territory", &s.territory)?;
    if !s.asserted_by.trim().is_empty() {
        c.asserted_by = s.asserted_by.trim().to_owned();
    }
    if let Some(at) = time("consent.asserted_at", &s.asserted_at)? {
        c.asserted_at = at;
    }
    if !s.source.trim().is_empty() {
        c.source = s
            .source
            .parse::<ConsentSource>()
            .map_err(|e| ServiceError::invalid("consent.source", e.to_string()))?;
    }
    c.policy_ref = s.policy_ref.clone().filter(|p| !p.trim().is_empty());
    c.terms = s.terms.clone().filter(|t| !t.trim().is_empty());
    Ok(c)
}

pub fn work(w: &Work) -> pb::Work {
    pb::Work {
        work_id: w.id.to_string(),
        title: w.title.clone(),
        artists: w.artists.clone(),
        isrc: w.isrc.as_ref().map(ToString::to_string),
        iswc: w.iswc.as_ref().map(ToString::to_string),
        holder: w.holder.clone(),
        holder_isni: w.holder_isni.as_ref().map(ToString::to_string),
        reference: Some(pb::ReferenceAudio {
            duration_s: w.reference.duration_s,
            fingerprint_config: w.reference.fingerprint_config.clone(),
            audio_sha256: w.reference.audio_sha256.clone(),
            source_file: w.reference.source_file.clone(),
        }),
        created_at: Some(timestamp(w.created_at)),
        updated_at: Some(timestamp(w.updated_at)),
    }
}

pub fn audit_entry(e: &AuditEntry) -> pb::AuditEntry {
    pb::AuditEntry {
        seq: e.seq,
        at: Some(timestamp(e.at)),
        actor: e.actor.clone(),
        action: e.action.clone(),
        subject: e.subject.clone(),
        details_json: serde_json::to_string(&e.details).unwrap_or_default(),
        prev_hash: e.prev_hash.clone(),
        hash: e.hash.clone(),
    }
}

pub fn attribution(a: &policy::Attribution) -> pb::Attribution {
    pb::Attribution {
        work_id: a.work_id.clone(),
        title: a.title.clone(),
        isrc: a.isrc.as_ref().map(ToString::to_string),
        holder: a.holder.clone(),
        seconds_matched: a.seconds_matched,
    }
}

fn evidence(e: &policy::MatchEvidence) -> pb::MatchEvidence {
    pb::MatchEvidence {
        work_id: e.work_id.clone(),
        registered: e.registered,
        title: e.title.clone(),
        isrc: e.isrc.as_ref().map(ToString::to_string),
        iswc: e.iswc.as_ref().map(ToString::to_string),
        holder: e.holder.clone(),
        holder_isni: e.holder_isni.as_ref().map(ToString::to_string),
        consent: effective_to_pb(e.consent).into(),
        deciding_record: e.deciding_record.as_ref().map(consent_record),
        consent_basis: e.consent_basis.clone(),
        overridden_records: e.overridden_records.clone(),
        outcome: decision_to_pb(e.outcome).into(),
        score: e.score,
        hits: e.hits,
        confident: e.confident,
        query_start_s: e.query_start_s,
        query_end_s: e.query_end_s,
        ref_start_s: e.ref_start_s,
        ref_end_s: e.ref_end_s,
        speed_factor: e.speed_factor,
        pitch_factor: e.pitch_factor,
    }
}

pub fn verdict(v: &policy::Verdict) -> pb::Verdict {
    let unknown = match v.policy.unknown_consent {
        policy::UnknownConsent::Allow => "allow",
        policy::UnknownConsent::Flag => "flag",
    };
    pb::Verdict {
        decision: decision_to_pb(v.decision).into(),
        purpose: scope_to_pb(v.purpose).into(),
        evaluated_at: Some(timestamp(v.evaluated_at)),
        submission_id: v.submission_id.clone(),
        submission_name: v.submission_name.clone(),
        reasons: v.reasons.clone(),
        evidence: v.evidence.iter().map(evidence).collect(),
        attributions: v.attributions.iter().map(attribution).collect(),
        policy_version: v.policy_version.clone(),
        unknown_consent: unknown.to_owned(),
        policy_territory: v
            .policy
            .territory
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        index_generation: v.index_generation,
        engine_version: v.engine_version.clone(),
    }
}

/// Extension hint from a MIME type or, failing that, the file name.
pub fn extension_hint(mime: &str, file_name: &str) -> Option<String> {
    let from_mime = match mime
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
        .as_str()
    {
        "audio/mpeg" | "audio/mp3" => Some("mp3"),
        "audio/ogg" | "application/ogg" | "audio/vorbis" => Some("ogg"),
        "audio/opus" => Some("opus"),
        "audio/wav" | "audio/x-wav" | "audio/wave" | "audio/vnd.wave" => Some("wav"),
        "audio/flac" | "audio/x-flac" => Some("flac"),
        "audio/mp4" | "audio/m4a" | "audio/x-m4a" | "audio/aac" => Some("m4a"),
        "audio/webm" | "video/webm" => Some("webm"),
        "audio/x-matroska" | "video/x-matroska" => Some("mkv"),
        "audio/aiff" | "audio/x-aiff" => Some("aiff"),
        _ => None,
    };
    from_mime.map(str::to_owned).or_else(|| {
        std::path::Path::new(file_name)
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_round_trip() {
        for &s in Scope::ALL {
            assert_eq!(scope_from_pb("s", scope_to_pb(s).into()).unwrap(), s);
        }
        for &s in ConsentStatus::ALL {
            assert_eq!(status_from_pb("s", status_to_pb(s).into()).unwrap(), s);
        }
        assert!(scope_from_pb("s", 0).is_err());
        assert!(scope_from_pb("s", 99).is_err());
    }

    #[test]
    fn timestamps_round_trip() {
        let t = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        assert_eq!(from_timestamp("t", &timestamp(t)).unwrap(), t);
        let bad = Timestamp {
            seconds: 0,
            nanos: -1,
        };
        assert!(from_timestamp("t", &bad).is_err());
    }

    #[test]
    fn hints() {
        assert_eq!(extension_hint("audio/mpeg", "x").as_deref(), Some("mp3"));
        assert_eq!(extension_hint("", "song.OGG").as_deref(), Some("ogg"));
        assert_eq!(extension_hint("", "noext"), None);
    }
}

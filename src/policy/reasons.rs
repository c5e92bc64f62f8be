//! Plain-English reasons for a verdict, built only from the evidence so they
//! can be regenerated and never say more than the evidence supports.

use time::OffsetDateTime;

use super::UnknownConsent;
use super::verdict::{Decision, MatchEvidence};
use crate::registry::consent::EffectiveStatus;
use crate::registry::{ConsentRecord, ConsentStatus, Scope};

const SECONDS_PER_MINUTE: u64 = 60;
const SECONDS_PER_HOUR: u64 = 3600;
/// Scores this close to an integer are printed without decimals.
const SCORE_INTEGER_TOLERANCE: f64 = 0.05;

/// `m:ss` or `h:mm:ss`.
pub(crate) fn fmt_clock(seconds: f64) -> String {
    let s = if seconds.is_finite() && seconds > 0.0 {
        seconds as u64
    } else {
        0
    };
    let (h, m, sec) = (
        s / SECONDS_PER_HOUR,
        (s % SECONDS_PER_HOUR) / SECONDS_PER_MINUTE,
        s % SECONDS_PER_MINUTE,
    );
    if h > 0 {
        format!("{h}:{m:02}:{sec:02}")
    } else {
        format!("{m}:{sec:02}")
    }
}

/// Start rounded down, end rounded up, so the range covers the match.
fn fmt_range(start: f64, end: f64) -> String {
    format!("{}–{}", fmt_clock(start.floor()), fmt_clock(end.ceil()))
}

fn fmt_score(score: f64) -> String {
    if (score - score.round()).abs() < SCORE_INTEGER_TOLERANCE {
        format!("{score:.0}")
    } else {
        format!("{score:.1}")
    }
}

/// `2026-01-01` for midnight UTC, the full timestamp otherwise.
fn fmt_when(t: OffsetDateTime) -> String {
    if t.time() == time::Time::MIDNIGHT {
        t.date().to_string()
    } else {
        crate::registry::model::to_db_time(t).unwrap_or_else(|_| t.to_string())
    }
}

/// "(ISRC …, holder …)" from what is known.
fn identity(ev: &MatchEvidence) -> String {
    let mut parts = Vec::new();
    if let Some(title) = &ev.title {
        parts.push(format!("\"{title}\""));
    }
    if let Some(isrc) = &ev.isrc {
        parts.push(format!("ISRC {}", isrc.hyphenated()));
    }
    if let Some(holder) = &ev.holder {
        parts.push(format!("holder {holder}"));
    }
    format!("Work '{}' ({})", ev.work_id, parts.join(", "))
}

/// "since 2026-01-01 (record #12, source registry)".
fn record_phrase(r: &ConsentRecord, purpose: Scope) -> String {
    let mut when = format!("since {}", fmt_when(r.effective_from));
    if let Some(until) = r.effective_until {
        when = format!(
            "from {} until {}",
            fmt_when(r.effective_from),
            fmt_when(until)
        );
    }
    let mut record = format!("record #{}", r.id);
    if r.scope != purpose {
        record.push_str(&format!(" on {}", r.scope));
    }
    if !r.territory.is_world() {
        record.push_str(&format!(" for {}", r.territory));
    }
    record.push_str(&format!(", source {}", r.source));
    format!("{when} ({record})")
}

fn matched_phrase(ev: &MatchEvidence) -> String {
    format!(
        "matched {} of the submission with score {}",
        fmt_range(ev.query_start_s, ev.query_end_s),
        fmt_score(ev.score)
    )
}

/// One sentence (or two) explaining a match's outcome.
/// `overall` is the verdict's decision: a blocked submission is not used, so
/// nothing is attributed.
pub(crate) fn match_reason(
    ev: &MatchEvidence,
    (scope, purpose): (Scope, &str),
    unknown: UnknownConsent,
    overall: Decision,
) -> String {
    let who = identity(ev);
    let matched = matched_phrase(ev);
    let weak = " The match is not confident, so it is flagged for human review.";
    let Some(r) = ev.deciding_record.as_ref().filter(|_| ev.registered) else {
        if !ev.registered {
            return format!(
                "Work '{}' {matched} but is not in the registry (index and registry disagree); flagged for review.",
                ev.work_id
            );
        }
        let policy = match (unknown, ev.outcome) {
            (UnknownConsent::Allow, Decision::Allow) => {
                "allowed (policy: unknown consent is allowed)"
            }
            _ => "flagged for review (no consent on record)",
        };
        return format!("{who} has no consent for {purpose} on record; {matched}; {policy}.");
    };
    match ev.consent {
        EffectiveStatus::OptedOut => {
            let note = if r.status == ConsentStatus::Constrained {
                " (constrained without terms counts as opted out)"
            } else {
                ""
            };
            let tail = if ev.confident {
                ""
            } else {
                " The match is not confident, so the submission is flagged for review instead of blocked."
            };
            format!(
                "{who} is opted out of {purpose} {}{note}; {matched}.{tail}",
                record_phrase(r, scope)
            )
        }
        EffectiveStatus::OptedIn => {
            let tail = match (ev.confident, overall) {
                (false, _) => weak,
                (true, Decision::Block) => "",
                (true, _) => " Its use is attributed to the holder.",
            };
            format!(
                "{who} is licensed for {purpose} {}; {matched}.{tail}",
                record_phrase(r, scope)
            )
        }
        EffectiveStatus::Constrained => format!(
            "{who} may be used for {purpose} only under terms \"{}\" {}; {matched}; flagged for review of the terms.",
            r.terms.as_deref().unwrap_or_default(),
            record_phrase(r, scope)
        ),
        EffectiveStatus::Unknown => {
            format!("{who} has no consent for {purpose} on record; {matched}.")
        }
    }
}

/// The first reason: the decision and why, in one sentence.
pub(crate) fn summary(decision: Decision, evidence: &[MatchEvidence], purpose: &str) -> String {
    if evidence.is_empty() {
        return format!("Allowed for {purpose}: no registered work was found in the submission.");
    }
    let count = |d: Decision| evidence.iter().filter(|e| e.outcome == d).count();
    let plural = |n: usize, one: &str, many: &str| {
        if n == 1 {
            format!("1 {one}")
        } else {
            format!("{n} {many}")
        }
    };
    match decision {
        Decision::Block => format!(
            "Blocked for {purpose}: {} opted out with a confident match.",
            plural(
                count(Decision::Block),
                "matched work is",
                "matches are of works"
            )
        ),
        Decision::Flag => format!(
            "Flagged for human review before use for {purpose}: {} review.",
            plural(count(Decision::Flag), "match needs", "matches need")
        ),
        Decision::Allow => format!(
            "Allowed for {purpose}: {} permitted.",
            plural(evidence.len(), "match is", "matches are all")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_and_score_formats() {
        assert_eq!(fmt_clock(0.0), "0:00");
        assert_eq!(fmt_clock(12.7), "0:12");
        assert_eq!(fmt_clock(61.0), "1:01");
        assert_eq!(fmt_clock(3725.0), "1:02:05");
        assert_eq!(fmt_clock(f64::NAN), "0:00");
        assert_eq!(fmt_range(12.4, 21.2), "0:12–0:22");
        assert_eq!(fmt_score(41.02), "41");
        assert_eq!(fmt_score(7.26), "7.3");
    }
}

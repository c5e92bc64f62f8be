use serde_json::json;
use time::macros::datetime;

use super::*;
use crate::registry::test_support::{open_temp, sample_work};
use crate::registry::{ConsentSource, ConsentStatus, Isrc, NewConsent};

/// Fixed evaluation instant for snapshots.
const AT: OffsetDateTime = datetime!(2026-03-01 10:00 UTC);
const JAN: OffsetDateTime = datetime!(2026-01-01 0:00 UTC);
const TRAIN: Scope = Scope::AiTraining;

fn m(work_id: &str, start: f64, end: f64, score: f64, confident: bool) -> Match {
    Match {
        work_id: work_id.into(),
        score,
        hits: 120,
        query_start_s: start,
        query_end_s: end,
        ref_start_s: 30.0,
        ref_end_s: 30.0 + (end - start),
        speed_factor: 1.0,
        pitch_factor: 1.0,
        confident,
        evidence: Default::default(),
    }
}

fn ctx() -> VerdictContext {
    VerdictContext {
        submission_id: "sub-0001".into(),
        submission_name: "dataset/clip-0001.ogg".into(),
        index_generation: 7,
        engine_version: "0.1.0".into(),
    }
}

/// A registry with an opted-out, an opted-in, a constrained and an unknown work.
fn fixture() -> (tempfile::TempDir, Registry) {
    let (dir, reg) = open_temp();
    let mut battle = sample_work("wesnoth-battle");
    battle.title = "Battle Theme".into();
    battle.holder = "Wesnoth Devs".into();
    let out = NewConsent::new(TRAIN, ConsentStatus::OptedOut, "Wesnoth Devs", JAN);
    reg.add_work(battle, &[out], "admin").unwrap();

    let mut open = sample_work("open-song");
    open.title = "Open Song".into();
    open.isrc = Some(Isrc::parse("GB-AYE-26-12345").unwrap());
    open.holder = "Commons Music".into();
    let mut lic = NewConsent::new(TRAIN, ConsentStatus::OptedIn, "Commons Music", JAN);
    lic.source = ConsentSource::Contract;
    lic.policy_ref = Some("https://example.org/licences/7".into());
    reg.add_work(open, &[lic], "admin").unwrap();

    let mut cons = sample_work("terms-song");
    cons.isrc = None;
    let mut c = NewConsent::new(TRAIN, ConsentStatus::Constrained, "Holder", JAN);
    c.terms = Some("credit the artist in the model card".into());
    reg.add_work(cons, &[c], "admin").unwrap();

    reg.add_work(sample_work("silent-song"), &[], "admin")
        .unwrap();
    (dir, reg)
}

fn run(reg: &Registry, matches: &[Match], config: &PolicyConfig) -> Verdict {
    decide(matches, TRAIN, AT, reg, config, ctx()).unwrap()
}

#[test]
fn snapshot_no_matches_allows() {
    let (_dir, reg) = fixture();
    let v = run(&reg, &[], &PolicyConfig::default());
    assert_eq!(
        serde_json::to_value(&v).unwrap(),
        json!({
            "decision": "allow",
            "purpose": "ai-training",
            "evaluated_at": "2026-03-01T10:00:00Z",
            "submission_id": "sub-0001",
            "submission_name": "dataset/clip-0001.ogg",
            "reasons": ["Allowed for ai-training: no registered work was found in the submission."],
            "evidence": [],
            "attributions": [],
            "policy_version": "earmark-policy/2",
            "policy": { "unknown_consent": "flag", "territory": null },
            "index_generation": 7,
            "engine_version": "0.1.0"
        })
    );
}

fn record_json(
    id: i64,
    work: &str,
    status: &str,
    by: &str,
    source: &str,
    policy_ref: serde_json::Value,
) -> serde_json::Value {
    json!({
        "id": id,
        "work_id": work,
        "scope": "ai-training",
        "status": status,
        "effective_from": "2026-01-01T00:00:00Z",
        "effective_until": null,
        "territory": "WORLD",
        "asserted_by": by,
        "asserted_at": "2026-01-01T00:00:00Z",
        "source": source,
        "policy_ref": policy_ref,
        "terms": null,
        "recorded_at": "2026-02-01T12:00:00Z"
    })
}

#[test]
fn snapshot_confident_opt_out_blocks_and_suppresses_attribution() {
    let (_dir, reg) = fixture();
    let matches = [
        m("wesnoth-battle", 12.3, 21.6, 41.0, true),
        m("open-song", 40.0, 55.0, 30.5, true),
    ];
    let v = run(&reg, &matches, &PolicyConfig::default());
    assert_eq!(
        serde_json::to_value(&v).unwrap(),
        json!({
            "decision": "block",
            "purpose": "ai-training",
            "evaluated_at": "2026-03-01T10:00:00Z",
            "submission_id": "sub-0001",
            "submission_name": "dataset/clip-0001.ogg",
            "reasons": [
                "Blocked for ai-training: 1 matched work is opted out with a confident match.",
                "Work 'wesnoth-battle' (\"Battle Theme\", ISRC US-S1Z-99-00001, holder Wesnoth Devs) is opted out of ai-training since 2026-01-01 (record #1, source registry); matched 0:12–0:22 of the submission with score 41.",
                "Work 'open-song' (\"Open Song\", ISRC GB-AYE-26-12345, holder Commons Music) is licensed for ai-training since 2026-01-01 (record #2, source contract); matched 0:40–0:55 of the submission with score 30.5."
            ],
            "evidence": [
                {
                    "work_id": "wesnoth-battle",
                    "registered": true,
                    "title": "Battle Theme",
                    "isrc": "USS1Z9900001",
                    "iswc": null,
                    "holder": "Wesnoth Devs",
                    "holder_isni": null,
                    "consent": "opted-out",
                    "deciding_record": record_json(1, "wesnoth-battle", "opted-out", "Wesnoth Devs", "registry", json!(null)),
                    "consent_basis": "the only statement in force",
                    "overridden_records": [],
                    "outcome": "block",
                    "score": 41.0,
                    "hits": 120,
                    "confident": true,
                    "query_start_s": 12.3,
                    "query_end_s": 21.6,
                    "ref_start_s": 30.0,
                    "ref_end_s": 39.3,
                    "speed_factor": 1.0,
                    "pitch_factor": 1.0
                },
                {
                    "work_id": "open-song",
                    "registered": true,
                    "title": "Open Song",
                    "isrc": "GBAYE2612345",
                    "iswc": null,
                    "holder": "Commons Music",
                    "holder_isni": null,
                    "consent": "opted-in",
                    "deciding_record": record_json(2, "open-song", "opted-in", "Commons Music", "contract", json!("https://example.org/licences/7")),
                    "consent_basis": "the only statement in force",
                    "overridden_records": [],
                    "outcome": "allow",
                    "score": 30.5,
                    "hits": 120,
                    "confident": true,
                    "query_start_s": 40.0,
                    "query_end_s": 55.0,
                    "ref_start_s": 30.0,
                    "ref_end_s": 45.0,
                    "speed_factor": 1.0,
                    "pitch_factor": 1.0
                }
            ],
            "attributions": [],
            "policy_version": "earmark-policy/2",
            "policy": { "unknown_consent": "flag", "territory": null },
            "index_generation": 7,
            "engine_version": "0.1.0"
        })
    );
    let back: Verdict = serde_json::from_value(serde_json::to_value(&v).unwrap()).unwrap();
    assert_eq!(back, v, "verdicts round-trip");
}

#[test]
fn snapshot_weak_match_of_opted_out_work_flags() {
    let (_dir, reg) = fixture();
    let v = run(
        &reg,
        &[m("wesnoth-battle", 12.3, 21.6, 9.0, false)],
        &PolicyConfig::default(),
    );
    let got = serde_json::to_value(&v).unwrap();
    assert_eq!(got["decision"], "flag");
    assert_eq!(got["evidence"][0]["outcome"], "flag");
    assert_eq!(got["evidence"][0]["consent"], "opted-out");
    assert_eq!(
        got["reasons"],
        json!([
            "Flagged for human review before use for ai-training: 1 match needs review.",
            "Work 'wesnoth-battle' (\"Battle Theme\", ISRC US-S1Z-99-00001, holder Wesnoth Devs) is opted out of ai-training since 2026-01-01 (record #1, source registry); matched 0:12–0:22 of the submission with score 9. The match is not confident, so the submission is flagged for review instead of blocked."
        ])
    );
}

#[test]
fn snapshot_opted_in_allows_with_attribution_over_the_union_of_ranges() {
    let (_dir, reg) = fixture();
    let matches = [
        m("open-song", 0.0, 10.0, 30.0, true),
        m("open-song", 5.0, 20.0, 25.0, true),
        m("open-song", 100.0, 104.5, 12.0, true),
    ];
    let v = run(&reg, &matches, &PolicyConfig::default());
    let got = serde_json::to_value(&v).unwrap();
    assert_eq!(got["decision"], "allow");
    assert_eq!(
        got["reasons"][0],
        "Allowed for ai-training: 3 matches are all permitted."
    );
    assert!(
        got["reasons"][1]
            .as_str()
            .unwrap()
            .ends_with("Its use is attributed to the holder.")
    );
    assert_eq!(
        got["attributions"],
        json!([{
            "work_id": "open-song",
            "title": "Open Song",
            "isrc": "GBAYE2612345",
            "holder": "Commons Music",
            "seconds_matched": 24.5
        }])
    );
}

#[test]
fn per_match_outcomes() {
    let (_dir, reg) = fixture();
    let flag = PolicyConfig::default();
    let allow = PolicyConfig {
        unknown_consent: UnknownConsent::Allow,
        territory: None,
    };
    let cases = [
        (
            m("terms-song", 0.0, 5.0, 20.0, true),
            &flag,
            Decision::Flag,
            "only under terms \"credit the artist in the model card\"",
        ),
        (
            m("silent-song", 0.0, 5.0, 20.0, true),
            &flag,
            Decision::Flag,
            "flagged for review (no consent on record)",
        ),
        (
            m("silent-song", 0.0, 5.0, 20.0, true),
            &allow,
            Decision::Allow,
            "allowed (policy: unknown consent is allowed)",
        ),
        (
            m("silent-song", 0.0, 5.0, 2.0, false),
            &allow,
            Decision::Flag,
            "flagged for review",
        ),
        (
            m("ghost", 0.0, 5.0, 20.0, true),
            &allow,
            Decision::Flag,
            "is not in the registry",
        ),
        (
            m("not a valid id!", 0.0, 5.0, 20.0, true),
            &flag,
            Decision::Flag,
            "is not in the registry",
        ),
        (
            m("open-song", 0.0, 5.0, 3.0, false),
            &flag,
            Decision::Flag,
            "not confident, so it is flagged",
        ),
    ];
    for (mat, config, want, phrase) in cases {
        let v = run(&reg, std::slice::from_ref(&mat), config);
        assert_eq!(v.decision, want, "{}", mat.work_id);
        assert!(
            v.reasons[1].contains(phrase),
            "{}: {}",
            mat.work_id,
            v.reasons[1]
        );
        assert!(v.attributions.is_empty(), "{}", mat.work_id);
    }
}

#[test]
fn most_severe_outcome_wins() {
    let (_dir, reg) = fixture();
    let v = run(
        &reg,
        &[
            m("open-song", 0.0, 5.0, 20.0, true),
            m("silent-song", 10.0, 15.0, 20.0, true),
        ],
        &PolicyConfig::default(),
    );
    assert_eq!(v.decision, Decision::Flag);
    assert_eq!(
        v.attributions.len(),
        1,
        "a flagged submission still lists what it would owe"
    );
    assert_eq!(
        v.reasons[0],
        "Flagged for human review before use for ai-training: 1 match needs review."
    );
}

#[test]
fn consent_is_evaluated_at_the_given_instant_and_territory() {
    let (_dir, reg) = fixture();
    let mut de_only = NewConsent::new(TRAIN, ConsentStatus::OptedOut, "Holder", JAN);
    de_only.territory = Some(Territory::parse("DE").unwrap());
    reg.record_consent("silent-song", &de_only, "admin")
        .unwrap();
    let mat = [m("silent-song", 0.0, 5.0, 20.0, true)];
    let at = |t| {
        decide(&mat, TRAIN, t, &reg, &PolicyConfig::default(), ctx())
            .unwrap()
            .decision
    };
    assert_eq!(
        at(datetime!(2025-12-31 0:00 UTC)),
        Decision::Flag,
        "before the opt-out: unknown"
    );
    assert_eq!(at(AT), Decision::Block, "worldwide use includes DE");
    let in_fr = PolicyConfig {
        unknown_consent: UnknownConsent::Allow,
        territory: Some(Territory::parse("FR").unwrap()),
    };
    assert_eq!(
        decide(&mat, TRAIN, AT, &reg, &in_fr, ctx())
            .unwrap()
            .decision,
        Decision::Allow
    );
    let in_de = PolicyConfig {
        territory: Some(Territory::parse("DE").unwrap()),
        ..in_fr
    };
    let v = decide(&mat, TRAIN, AT, &reg, &in_de, ctx()).unwrap();
    assert_eq!(v.decision, Decision::Block);
    assert!(
        v.reasons[1].contains(
            "opted out of ai-training in DE since 2026-01-01 (record #4 for DE, source registry)"
        ),
        "{}",
        v.reasons[1]
    );
}

#[test]
fn broader_scope_record_is_named_in_the_reason() {
    let (_dir, reg) = fixture();
    let mut tdm = NewConsent::new(
        Scope::TextAndDataMining,
        ConsentStatus::OptedOut,
        "crawler",
        JAN,
    );
    tdm.source = ConsentSource::Tdmrep;
    reg.record_consent("silent-song", &tdm, "admin").unwrap();
    let v = run(
        &reg,
        &[m("silent-song", 0.0, 5.0, 20.0, true)],
        &PolicyConfig::default(),
    );
    assert_eq!(v.decision, Decision::Block);
    assert!(
        v.reasons[1].contains("(record #4 on text-and-data-mining, source tdmrep)"),
        "{}",
        v.reasons[1]
    );
    assert!(v.evidence[0].consent_basis.contains("covers ai-training"));
}

#[test]
fn decide_writes_nothing_and_attributions_are_recorded_once() {
    let (_dir, reg) = fixture();
    let audit_before = reg.verify_audit().unwrap();
    let v = run(
        &reg,
        &[m("open-song", 0.0, 12.0, 30.0, true)],
        &PolicyConfig::default(),
    );
    assert_eq!(reg.verify_audit().unwrap(), audit_before);
    assert!(reg.ledger_totals(None, None).unwrap().is_empty());
    assert_eq!(record_attributions(&v, &reg).unwrap(), 1);
    assert_eq!(
        record_attributions(&v, &reg).unwrap(),
        0,
        "re-recording the same verdict is a no-op"
    );
    let totals = reg.ledger_totals(None, None).unwrap();
    assert_eq!(
        (
            totals[0].work_id.as_str(),
            totals[0].seconds,
            totals[0].first_at
        ),
        ("open-song", 12.0, AT)
    );
    let blocked = run(
        &reg,
        &[m("wesnoth-battle", 0.0, 5.0, 40.0, true)],
        &PolicyConfig::default(),
    );
    assert_eq!(record_attributions(&blocked, &reg).unwrap(), 0);
}

#[test]
fn malformed_matches_are_errors() {
    let (_dir, reg) = fixture();
    let mut bad = m("open-song", 0.0, 5.0, 20.0, true);
    bad.score = f64::NAN;
    let err = decide(&[bad], TRAIN, AT, &reg, &PolicyConfig::default(), ctx()).unwrap_err();
    assert!(
        err.to_string()
            .contains("match for work 'open-song' is malformed"),
        "{err}"
    );
    let reversed = m("open-song", 9.0, 5.0, 20.0, true);
    assert!(
        decide(
            &[reversed],
            TRAIN,
            AT,
            &reg,
            &PolicyConfig::default(),
            ctx()
        )
        .is_err()
    );
}

#[test]
fn union_length_merges_overlaps() {
    assert_eq!(union_length(vec![]), 0.0);
    assert_eq!(
        union_length(vec![(5.0, 20.0), (0.0, 10.0), (30.0, 31.0)]),
        21.0
    );
    assert_eq!(union_length(vec![(0.0, 10.0), (2.0, 3.0)]), 10.0);
    assert_eq!(union_length(vec![(0.0, 1.0), (1.0, 2.0)]), 2.0);
}

#[test]
fn contract_licence_outlives_a_later_tdmrep_reservation() {
    let (_dir, reg) = fixture();
    // open-song holds a contract licence (record #2); a crawler later finds a
    // TDMRep reservation for the same scope.
    let mut tdm = NewConsent::new(TRAIN, ConsentStatus::OptedOut, "crawler", JAN);
    tdm.asserted_at = datetime!(2026-02-01 0:00 UTC);
    tdm.source = ConsentSource::Tdmrep;
    let crawl = reg.record_consent("open-song", &tdm, "admin").unwrap();
    let v = run(
        &reg,
        &[m("open-song", 0.0, 12.0, 30.0, true)],
        &PolicyConfig::default(),
    );
    let got = serde_json::to_value(&v).unwrap();
    assert_eq!(got["decision"], "allow");
    assert_eq!(got["evidence"][0]["deciding_record"]["id"], 2);
    assert_eq!(got["evidence"][0]["overridden_records"], json!([crawl.id]));
    assert_eq!(
        got["evidence"][0]["consent_basis"],
        "decided among 2 statements in force; an explicit licence allows over 1 statement from other sources"
    );
    assert_eq!(got["attributions"][0]["seconds_matched"], 12.0);
    // The contract is ended by a contract statement: blocked.
    let mut end = NewConsent::new(TRAIN, ConsentStatus::OptedOut, "Commons Music", JAN);
    end.asserted_at = datetime!(2026-02-15 0:00 UTC);
    end.source = ConsentSource::Contract;
    let ended = reg.record_consent("open-song", &end, "admin").unwrap();
    let v = run(
        &reg,
        &[m("open-song", 0.0, 12.0, 30.0, true)],
        &PolicyConfig::default(),
    );
    assert_eq!(v.decision, Decision::Block);
    assert_eq!(
        v.evidence[0].deciding_record.as_ref().map(|r| r.id),
        Some(ended.id)
    );
    assert!(v.attributions.is_empty());
}

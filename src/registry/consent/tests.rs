use time::macros::datetime;

use super::*;
use crate::registry::test_support::{T0, open_temp, sample_work};

const IN: ConsentStatus = ConsentStatus::OptedIn;
const OUT: ConsentStatus = ConsentStatus::OptedOut;
const CON: ConsentStatus = ConsentStatus::Constrained;

/// Builder for in-memory records (resolution is pure).
struct R(ConsentRecord);

fn rec(id: i64, scope: Scope, status: ConsentStatus, from: OffsetDateTime) -> R {
    R(ConsentRecord {
        id,
        work_id: WorkId::parse("w").unwrap(),
        scope,
        status,
        effective_from: from,
        effective_until: None,
        territory: Territory::world(),
        asserted_by: "holder".into(),
        asserted_at: from,
        source: ConsentSource::Registry,
        policy_ref: None,
        terms: None,
        recorded_at: from,
    })
}

impl R {
    fn until(mut self, t: OffsetDateTime) -> Self {
        self.0.effective_until = Some(t);
        self
    }
    fn asserted(mut self, t: OffsetDateTime) -> Self {
        self.0.asserted_at = t;
        self
    }
    fn territory(mut self, t: &str) -> Self {
        self.0.territory = Territory::parse(t).unwrap();
        self
    }
    fn terms(mut self, t: &str) -> Self {
        self.0.terms = Some(t.into());
        self
    }
}

fn resolve_at(
    records: Vec<R>,
    scope: Scope,
    at: OffsetDateTime,
    territory: Option<&str>,
) -> (EffectiveStatus, Option<i64>) {
    let records: Vec<ConsentRecord> = records.into_iter().map(|r| r.0).collect();
    let territory = territory.map(|t| Territory::parse(t).unwrap());
    let e = resolve(&records, scope, at, territory.as_ref());
    (e.status, e.deciding.map(|d| d.id))
}

const JAN: OffsetDateTime = datetime!(2026-01-01 0:00 UTC);
const MAR: OffsetDateTime = datetime!(2026-03-01 0:00 UTC);
const JUN: OffsetDateTime = datetime!(2026-06-01 0:00 UTC);
const SEP: OffsetDateTime = datetime!(2026-09-01 0:00 UTC);
const TRAIN: Scope = Scope::AiTraining;
use EffectiveStatus::{Constrained as C, OptedIn as I, OptedOut as O, Unknown as U};

#[test]
fn nothing_recorded_is_unknown() {
    assert_eq!(resolve_at(vec![], TRAIN, MAR, None), (U, None));
}

#[test]
fn time_window_is_half_open() {
    let r = || vec![rec(1, TRAIN, OUT, JAN).until(JUN)];
    assert_eq!(
        resolve_at(r(), TRAIN, JAN, None),
        (O, Some(1)),
        "from is inclusive"
    );
    assert_eq!(resolve_at(r(), TRAIN, MAR, None), (O, Some(1)));
    assert_eq!(
        resolve_at(r(), TRAIN, JUN, None),
        (U, None),
        "until is exclusive (expired)"
    );
    assert_eq!(
        resolve_at(r(), TRAIN, datetime!(2025-12-31 23:59 UTC), None),
        (U, None),
        "not yet"
    );
}

#[test]
fn licence_after_opt_out_allows_while_it_lasts() {
    let r = || vec![rec(1, TRAIN, OUT, JAN), rec(2, TRAIN, IN, MAR).until(JUN)];
    assert_eq!(
        resolve_at(r(), TRAIN, datetime!(2026-02-01 0:00 UTC), None),
        (O, Some(1))
    );
    assert_eq!(resolve_at(r(), TRAIN, MAR, None), (I, Some(2)));
    assert_eq!(
        resolve_at(r(), TRAIN, JUN, None),
        (O, Some(1)),
        "licence expired"
    );
}

#[test]
fn later_opt_out_revokes_open_ended_opt_in() {
    let records = vec![rec(1, TRAIN, IN, JAN), rec(2, TRAIN, OUT, MAR)];
    let recs: Vec<ConsentRecord> = records.into_iter().map(|r| r.0).collect();
    let e = resolve(&recs, TRAIN, JUN, None);
    assert_eq!((e.status, e.deciding.map(|d| d.id)), (O, Some(2)));
    assert_eq!(e.overridden, vec![1]);
    assert!(
        e.basis.contains(
            "decided among 2 statements in force; it replaces 1 earlier statement from the same source"
        ),
        "{}",
        e.basis
    );
}

impl R {
    fn source(mut self, source: ConsentSource) -> Self {
        self.0.source = source;
        self
    }
}

fn contract() -> ConsentSource {
    ConsentSource::Contract
}

fn tdmrep() -> ConsentSource {
    ConsentSource::Tdmrep
}

#[test]
fn explicit_licence_allows_over_another_sources_opt_out() {
    // The holder's contract licence; later a crawler records the TDMRep
    // reservation it finds on a web page, for the same scope.
    let licence = || rec(1, TRAIN, IN, JAN).source(contract());
    let crawl = || rec(2, TRAIN, OUT, MAR).source(tdmrep());
    let records: Vec<ConsentRecord> = vec![licence().0, crawl().0];
    let e = resolve(&records, TRAIN, JUN, None);
    assert_eq!((e.status, e.deciding.as_ref().map(|d| d.id)), (I, Some(1)));
    assert_eq!(e.overridden, vec![2]);
    assert!(
        e.basis
            .contains("an explicit licence allows over 1 statement from other sources"),
        "{}",
        e.basis
    );
    // The contract ends early (a new contract statement): now blocked, by the
    // newest opt-out in force.
    let ended = rec(3, TRAIN, OUT, JUN).source(contract());
    assert_eq!(
        resolve_at(vec![licence(), crawl(), ended], TRAIN, SEP, None),
        (O, Some(3))
    );
    // Before that statement is in force the licence still holds.
    let ended = rec(3, TRAIN, OUT, SEP).source(contract());
    assert_eq!(
        resolve_at(vec![licence(), crawl(), ended], TRAIN, JUN, None),
        (I, Some(1))
    );
    // An opt-out recorded later through the registry does not end a contract.
    let registry_out = rec(3, TRAIN, OUT, JUN);
    assert_eq!(
        resolve_at(vec![licence(), registry_out], TRAIN, SEP, None),
        (I, Some(1))
    );
}

#[test]
fn without_a_licence_any_opt_out_blocks() {
    // Newer conditional consent from one source does not undo another
    // source's opt-out.
    let r = vec![
        rec(1, TRAIN, OUT, JAN).source(tdmrep()),
        rec(2, TRAIN, CON, MAR).terms("credit the artist"),
    ];
    let records: Vec<ConsentRecord> = r.into_iter().map(|r| r.0).collect();
    let e = resolve(&records, TRAIN, JUN, None);
    assert_eq!((e.status, e.deciding.as_ref().map(|d| d.id)), (O, Some(1)));
    assert!(
        e.basis
            .contains("no licence is in force, so an opt-out blocks"),
        "{}",
        e.basis
    );
    // Constrained without terms from one source, with terms from another:
    // blocked, decided by the restricting record.
    let r = vec![
        rec(1, TRAIN, CON, JAN).source(ConsentSource::C2pa),
        rec(2, TRAIN, CON, MAR).terms("credit the artist"),
    ];
    let records: Vec<ConsentRecord> = r.into_iter().map(|r| r.0).collect();
    let e = resolve(&records, TRAIN, JUN, None);
    assert_eq!((e.status, e.deciding.as_ref().map(|d| d.id)), (O, Some(1)));
    assert!(
        e.basis
            .contains("constrained without terms counts as opted out")
    );
    // Terms only, from two sources: constrained, the newest is named.
    let r = vec![
        rec(1, TRAIN, CON, JAN)
            .source(contract())
            .terms("no voice cloning"),
        rec(2, TRAIN, CON, MAR).terms("credit the artist"),
    ];
    assert_eq!(resolve_at(r, TRAIN, JUN, None), (C, Some(2)));
    // A licence from any source allows.
    let r = vec![
        rec(1, TRAIN, OUT, MAR).source(tdmrep()),
        rec(2, TRAIN, IN, JAN).source(contract()),
        rec(3, TRAIN, CON, JUN),
    ];
    assert_eq!(resolve_at(r, TRAIN, SEP, None), (I, Some(2)));
}

#[test]
fn overlapping_date_ranges() {
    // Registry opt-out for most of the year with a licence window inside it.
    let registry = || {
        vec![
            rec(1, TRAIN, OUT, JAN).until(SEP),
            rec(2, TRAIN, IN, MAR).until(JUN),
        ]
    };
    let at = |month: time::Month| {
        time::Date::from_calendar_date(2026, month, 15)
            .unwrap()
            .midnight()
            .assume_utc()
    };
    use time::Month::{April, February, July, October};
    assert_eq!(
        resolve_at(registry(), TRAIN, at(February), None),
        (O, Some(1))
    );
    assert_eq!(resolve_at(registry(), TRAIN, at(April), None), (I, Some(2)));
    assert_eq!(resolve_at(registry(), TRAIN, at(July), None), (O, Some(1)));
    assert_eq!(resolve_at(registry(), TRAIN, at(October), None), (U, None));
    // Plus an open-ended TDMRep reservation from March.
    let with_crawl = || {
        let mut r = registry();
        r.push(rec(3, TRAIN, OUT, MAR).source(tdmrep()));
        r
    };
    assert_eq!(
        resolve_at(with_crawl(), TRAIN, at(April), None),
        (I, Some(2))
    );
    assert_eq!(
        resolve_at(with_crawl(), TRAIN, at(July), None),
        (O, Some(3))
    );
    assert_eq!(
        resolve_at(with_crawl(), TRAIN, at(October), None),
        (O, Some(3))
    );
    // Two overlapping licences from different sources: the newer is named
    // while both are in force.
    let r = || {
        vec![
            rec(1, TRAIN, IN, JAN).until(JUN).source(contract()),
            rec(2, TRAIN, IN, MAR).until(SEP),
        ]
    };
    assert_eq!(resolve_at(r(), TRAIN, at(February), None), (I, Some(1)));
    assert_eq!(resolve_at(r(), TRAIN, at(April), None), (I, Some(2)));
    assert_eq!(resolve_at(r(), TRAIN, at(July), None), (I, Some(2)));
}

#[test]
fn backdated_statement_asserted_later_wins() {
    // Asserted in June, effective since January: overrides a March licence.
    let r = vec![
        rec(1, TRAIN, IN, MAR),
        rec(2, TRAIN, OUT, JAN).asserted(JUN),
    ];
    assert_eq!(resolve_at(r, TRAIN, SEP, None), (O, Some(2)));
    // Before it was asserted the registry could not know, but the answer for
    // any instant is computed from everything recorded now.
    let r = vec![
        rec(1, TRAIN, IN, MAR),
        rec(2, TRAIN, OUT, JAN).asserted(JUN),
    ];
    assert_eq!(
        resolve_at(r, TRAIN, datetime!(2026-04-01 0:00 UTC), None),
        (O, Some(2))
    );
}

#[test]
fn exact_tie_goes_to_the_explicit_licence() {
    let r = vec![
        rec(5, TRAIN, OUT, JAN),
        rec(4, TRAIN, IN, JAN),
        rec(6, TRAIN, CON, JAN).terms("x"),
    ];
    assert_eq!(resolve_at(r, TRAIN, MAR, None), (I, Some(4)));
    let r = vec![rec(1, TRAIN, OUT, JAN), rec(2, TRAIN, OUT, JAN)];
    assert_eq!(
        resolve_at(r, TRAIN, MAR, None),
        (O, Some(2)),
        "then the later-recorded"
    );
}

#[test]
fn constrained_with_and_without_terms() {
    let recs = vec![rec(1, TRAIN, CON, JAN).0];
    let e = resolve(&recs, TRAIN, MAR, None);
    assert_eq!(e.status, O);
    assert!(
        e.basis
            .contains("constrained without terms counts as opted out")
    );
    let r = vec![rec(1, TRAIN, CON, JAN).terms("attribution in model card; no voice cloning")];
    assert_eq!(resolve_at(r, TRAIN, MAR, None), (C, Some(1)));
    let r = vec![rec(1, TRAIN, CON, JAN).terms("   ")];
    assert_eq!(
        resolve_at(r, TRAIN, MAR, None).0,
        O,
        "blank terms are no terms"
    );
}

#[test]
fn territory_specific_records() {
    let de_out = || vec![rec(1, TRAIN, OUT, JAN).territory("DE")];
    assert_eq!(resolve_at(de_out(), TRAIN, MAR, Some("DE")), (O, Some(1)));
    assert_eq!(resolve_at(de_out(), TRAIN, MAR, Some("FR")), (U, None));
    assert_eq!(
        resolve_at(de_out(), TRAIN, MAR, None),
        (O, Some(1)),
        "worldwide use includes DE"
    );
    assert_eq!(
        resolve_at(de_out(), TRAIN, MAR, Some("WORLD")),
        (O, Some(1))
    );

    let fr_in = || vec![rec(1, TRAIN, IN, JAN).territory("FR")];
    assert_eq!(resolve_at(fr_in(), TRAIN, MAR, Some("FR")), (I, Some(1)));
    assert_eq!(
        resolve_at(fr_in(), TRAIN, MAR, None),
        (U, None),
        "a FR licence does not cover the world"
    );

    // Country beats WORLD regardless of age.
    let mixed = || {
        vec![
            rec(1, TRAIN, OUT, JAN),
            rec(2, TRAIN, IN, JAN)
                .territory("FR")
                .asserted(datetime!(2025-01-01 0:00 UTC)),
        ]
    };
    assert_eq!(resolve_at(mixed(), TRAIN, MAR, Some("FR")), (I, Some(2)));
    assert_eq!(resolve_at(mixed(), TRAIN, MAR, Some("DE")), (O, Some(1)));
    let world_in_de_out = || {
        vec![
            rec(1, TRAIN, IN, MAR),
            rec(2, TRAIN, OUT, JAN).territory("DE"),
        ]
    };
    assert_eq!(
        resolve_at(world_in_de_out(), TRAIN, JUN, None),
        (O, Some(2))
    );
    assert_eq!(
        resolve_at(world_in_de_out(), TRAIN, JUN, Some("US")),
        (I, Some(1))
    );
}

#[test]
fn broader_scopes_apply_but_exact_scope_wins() {
    let tdm = Scope::TextAndDataMining;
    let mut tdm_out = rec(1, tdm, OUT, JAN);
    tdm_out.0.source = ConsentSource::Tdmrep;
    let recs = vec![tdm_out.0.clone()];
    let e = resolve(&recs, TRAIN, MAR, None);
    assert_eq!((e.status, e.deciding.as_ref().map(|d| d.id)), (O, Some(1)));
    assert!(
        e.basis.contains("text-and-data-mining covers ai-training"),
        "{}",
        e.basis
    );
    assert_eq!(resolve(&recs, Scope::AiFineTuning, MAR, None).status, O);
    assert_eq!(resolve(&recs, Scope::AiGeneration, MAR, None).status, U);

    // An older explicit ai-training licence beats a newer TDM reservation.
    let recs = vec![
        rec(2, TRAIN, IN, datetime!(2025-01-01 0:00 UTC)).0,
        tdm_out.0,
    ];
    assert_eq!(resolve(&recs, TRAIN, MAR, None).status, I);
    assert_eq!(
        resolve(&recs, tdm, MAR, None).status,
        O,
        "but not TDM at large"
    );
    // A fine-tuning opt-out is not about training in general.
    let r = vec![rec(1, Scope::AiFineTuning, OUT, JAN)];
    assert_eq!(resolve_at(r, TRAIN, MAR, None), (U, None));
    let r = vec![rec(1, Scope::VoiceSynthesis, OUT, JAN)];
    assert_eq!(resolve_at(r, TRAIN, MAR, None), (U, None));
}

#[test]
fn record_and_resolve_through_the_database() {
    let (_dir, reg) = open_temp();
    reg.add_work(
        sample_work("w1"),
        &[NewConsent::new(TRAIN, OUT, "Holder", JAN)],
        "admin",
    )
    .unwrap();
    let mut licence = NewConsent::new(TRAIN, IN, "Holder", MAR);
    licence.effective_until = Some(JUN);
    licence.source = ConsentSource::Contract;
    licence.policy_ref = Some("https://example.org/licence/42".into());
    let rec2 = reg.record_consent("w1", &licence, "admin").unwrap();
    assert_eq!(rec2.recorded_at, T0);
    let history = reg.consent_history("w1").unwrap();
    assert_eq!(
        history.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![OUT, IN]
    );
    assert_eq!(history[1], rec2);
    let e = reg
        .effective_consent("w1", TRAIN, datetime!(2026-04-01 0:00 UTC), None)
        .unwrap();
    assert_eq!((e.status, e.deciding.unwrap().id), (I, rec2.id));
    assert_eq!(
        reg.effective_consent("w1", TRAIN, SEP, None)
            .unwrap()
            .status,
        O
    );
    let (work, e) = reg.work_consent("w1", TRAIN, SEP, None).unwrap().unwrap();
    assert_eq!((work.id.as_str(), e.status), ("w1", O));
    assert!(
        reg.work_consent("nope", TRAIN, SEP, None)
            .unwrap()
            .is_none()
    );
}

#[test]
fn invalid_statements_are_rejected() {
    let (_dir, reg) = open_temp();
    reg.add_work(sample_work("w1"), &[], "admin").unwrap();
    let mut c = NewConsent::new(TRAIN, OUT, "Holder", MAR);
    c.effective_until = Some(MAR);
    let err = reg
        .record_consent("w1", &c, "admin")
        .unwrap_err()
        .to_string();
    assert!(err.contains("effective_until"), "{err}");
    let mut c = NewConsent::new(TRAIN, OUT, "Holder", MAR);
    c.terms = Some("pay me".into());
    assert!(
        reg.record_consent("w1", &c, "admin")
            .unwrap_err()
            .to_string()
            .contains("only constrained")
    );
    let c = NewConsent::new(TRAIN, OUT, " ", MAR);
    assert!(
        reg.record_consent("w1", &c, "admin")
            .unwrap_err()
            .to_string()
            .contains("asserted_by")
    );
    let c = NewConsent::new(TRAIN, OUT, "Holder", MAR);
    assert!(matches!(
        reg.record_consent("ghost", &c, "admin"),
        Err(RegistryError::WorkNotFound { id }) if id == "ghost"
    ));
    assert!(
        reg.record_consent("w1", &c, "").is_err(),
        "actor is required"
    );
    assert!(
        reg.consent_history("w1").unwrap().is_empty(),
        "nothing was written"
    );
}

#[test]
fn consent_rows_cannot_be_updated_or_deleted() {
    if crate::registry::test_support::sqlite_only("consent_rows_cannot_be_updated_or_deleted") {
        return;
    }
    let (_dir, reg) = open_temp();
    reg.add_work(
        sample_work("w1"),
        &[NewConsent::new(TRAIN, OUT, "Holder", JAN)],
        "admin",
    )
    .unwrap();
    reg.with_raw_connection(|c| {
        let upd = c
            .execute("UPDATE consent_records SET status = 'opted-in'", [])
            .unwrap_err();
        assert!(upd.to_string().contains("append-only"), "{upd}");
        let del = c.execute("DELETE FROM consent_records", []).unwrap_err();
        assert!(del.to_string().contains("append-only"));
    });
    assert_eq!(reg.consent_history("w1").unwrap()[0].status, OUT);
}

#[test]
fn re_registration_starts_a_fresh_consent_history() {
    let (_dir, reg) = open_temp();
    reg.add_work(
        sample_work("w1"),
        &[NewConsent::new(TRAIN, OUT, "Holder", JAN)],
        "admin",
    )
    .unwrap();
    reg.remove_work("w1", "admin").unwrap();
    assert!(matches!(
        reg.consent_history("w1"),
        Err(RegistryError::WorkNotFound { .. })
    ));
    reg.add_work(sample_work("w1"), &[], "admin").unwrap();
    assert!(reg.consent_history("w1").unwrap().is_empty());
    assert_eq!(
        reg.effective_consent("w1", TRAIN, MAR, None)
            .unwrap()
            .status,
        U
    );
}

use time::macros::datetime;

use super::*;
use crate::registry::rows::MAX_TEXT_LEN;
use crate::registry::test_support::{T0, open_temp, open_temp_with_clock, sample_work};
use crate::registry::{ConsentStatus, Scope};

#[test]
fn add_get_list_remove() {
    let (_dir, reg, clock) = open_temp_with_clock();
    let added = reg.add_work(sample_work("b-work"), &[], "alice").unwrap();
    assert_eq!((added.created_at, added.updated_at), (T0, T0));
    reg.add_work(sample_work("a-work"), &[], "alice").unwrap();
    assert_eq!(reg.get_work("b-work").unwrap().unwrap(), added);
    assert_eq!(reg.get_work("nope").unwrap(), None);
    let ids: Vec<String> = reg
        .list_works(0, 10)
        .unwrap()
        .into_iter()
        .map(|w| w.id.to_string())
        .collect();
    assert_eq!(ids, vec!["a-work", "b-work"]);
    assert_eq!(reg.list_works(1, 10).unwrap().len(), 1);
    assert_eq!(reg.list_works(0, 1).unwrap()[0].id.as_str(), "a-work");
    assert_eq!(reg.count_works().unwrap(), 2);

    clock.set(datetime!(2026-05-01 0:00 UTC));
    reg.remove_work("a-work", "bob").unwrap();
    assert_eq!(reg.get_work("a-work").unwrap(), None);
    assert_eq!(reg.work_ids().unwrap(), ["b-work".to_owned()].into());
    assert!(matches!(
        reg.remove_work("a-work", "bob"),
        Err(RegistryError::WorkNotFound { .. })
    ));
    let readded = reg.add_work(sample_work("a-work"), &[], "alice").unwrap();
    assert_eq!(readded.created_at, datetime!(2026-05-01 0:00 UTC));
    let actions: Vec<String> = {
        let mut out = Vec::new();
        reg.export_audit(&mut out).unwrap();
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["action"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    assert_eq!(
        actions,
        vec!["work-added", "work-added", "work-removed", "work-added"]
    );
}

#[test]
fn duplicate_id_is_a_clear_error() {
    let (_dir, reg) = open_temp();
    reg.add_work(sample_work("w"), &[], "alice").unwrap();
    let err = reg.add_work(sample_work("w"), &[], "alice").unwrap_err();
    assert_eq!(
        err.to_string(),
        "work 'w' is already registered (since 2026-02-01T12:00:00Z)"
    );
}

#[test]
fn existing_work_compares_audio() {
    let (_dir, reg) = open_temp();
    assert_eq!(
        reg.existing_work("w", &"ab".repeat(32)).unwrap(),
        ExistingWork::NotRegistered
    );
    reg.add_work(sample_work("w"), &[], "alice").unwrap();
    assert_eq!(
        reg.existing_work("w", &"AB".repeat(32)).unwrap(),
        ExistingWork::SameAudio
    );
    assert_eq!(
        reg.existing_work("w", &"cd".repeat(32)).unwrap(),
        ExistingWork::DifferentAudio {
            registered_sha256: "ab".repeat(32)
        }
    );
}

#[test]
fn work_fields_are_validated() {
    let (_dir, reg) = open_temp();
    type Mutation = Box<dyn Fn(&mut NewWork)>;
    let cases: Vec<(Mutation, &str)> = vec![
        (Box::new(|w| w.title = "  ".into()), "invalid title"),
        (Box::new(|w| w.holder = String::new()), "invalid holder"),
        (
            Box::new(|w| w.reference.audio_sha256 = "xyz".into()),
            "invalid audio sha256",
        ),
        (
            Box::new(|w| w.reference.duration_s = f64::NAN),
            "invalid reference duration",
        ),
        (
            Box::new(|w| w.reference.fingerprint_config = String::new()),
            "fingerprint config",
        ),
        (
            Box::new(|w| w.title = "t".repeat(MAX_TEXT_LEN + 1)),
            "longer than 512",
        ),
    ];
    for (mutate, want) in cases {
        let mut w = sample_work("w");
        mutate(&mut w);
        let err = reg.add_work(w, &[], "alice").unwrap_err().to_string();
        assert!(err.contains(want), "{err} should mention {want}");
    }
    assert!(
        reg.add_work(sample_work("w"), &[], "  ").is_err(),
        "actor required"
    );
    assert!(matches!(reg.get_work("bad id"), Err(RegistryError::Id(_))));
    let mut w = sample_work("w");
    w.title = "  Padded  ".into();
    w.artists = vec![" A ".into(), "".into()];
    let added = reg.add_work(w, &[], "alice").unwrap();
    assert_eq!(
        (added.title.as_str(), added.artists.as_slice()),
        ("Padded", &["A".to_owned()][..])
    );
}

#[test]
fn initial_consents_and_import_runs_are_audited() {
    let (_dir, reg) = open_temp();
    let c = |s| NewConsent::new(s, ConsentStatus::OptedOut, "Holder", T0);
    reg.add_work(
        sample_work("w"),
        &[c(Scope::AiTraining), c(Scope::AiGeneration)],
        "importer",
    )
    .unwrap();
    reg.record_import_run(
        "catalog.csv",
        serde_json::json!({"added": 1, "skipped": 0, "failed": 0}),
        "importer",
    )
    .unwrap();
    let report = reg.verify_audit().unwrap();
    assert!(report.is_ok());
    assert_eq!(report.entries, 4);
    assert_eq!(reg.consent_history("w").unwrap().len(), 2);
}

#[test]
fn reopening_keeps_data_and_schema_version() {
    if crate::registry::test_support::sqlite_only("reopening_keeps_data_and_schema_version") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    {
        let reg = Registry::open(dir.path()).unwrap();
        reg.add_work(sample_work("w"), &[], "alice").unwrap();
    }
    let reg = Registry::open(dir.path()).unwrap();
    assert!(reg.get_work("w").unwrap().is_some());
    let (version, fk, mode): (i64, i64, String) = reg.with_raw_connection(|c| {
        (
            c.pragma_query_value(None, "user_version", |r| r.get(0))
                .unwrap(),
            c.pragma_query_value(None, "foreign_keys", |r| r.get(0))
                .unwrap(),
            c.pragma_query_value(None, "journal_mode", |r| r.get(0))
                .unwrap(),
        )
    });
    assert_eq!(
        (version, fk, mode.as_str()),
        (crate::registry::schema::current_version(), 1, "wal")
    );
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(Registry::open(dir.path()).unwrap());
    let conn = rusqlite::Connection::open(dir.path().join(crate::registry::REGISTRY_FILE)).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = Registry::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, RegistryError::SchemaTooNew { found: 99, .. }),
        "{err}"
    );
}

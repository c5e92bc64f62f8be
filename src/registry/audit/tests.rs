use time::macros::datetime;

use super::*;
use crate::registry::test_support::{open_temp, sample_work};
use crate::registry::{ConsentStatus, NewConsent, Scope};

/// A registry with `n` audit entries (one work added, then consents).
fn registry_with_entries(n: usize) -> (tempfile::TempDir, Registry) {
    let (dir, reg) = open_temp();
    reg.add_work(sample_work("w1"), &[], "alice").unwrap();
    for i in 1..n {
        let at = datetime!(2026-01-01 0:00 UTC) + time::Duration::days(i64::try_from(i).unwrap());
        let c = NewConsent::new(Scope::AiTraining, ConsentStatus::OptedOut, "Holder", at);
        reg.record_consent("w1", &c, "bob").unwrap();
    }
    (dir, reg)
}

fn drop_guards(reg: &Registry) {
    reg.with_raw_connection(|c| {
        c.execute_batch("DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete;")
            .unwrap();
    });
}

fn problems(reg: &Registry) -> Vec<(i64, AuditProblemKind)> {
    reg.verify_audit()
        .unwrap()
        .problems
        .into_iter()
        .map(|p| (p.seq, p.kind))
        .collect()
}

#[test]
fn intact_log_verifies() {
    let (_dir, reg) = registry_with_entries(5);
    let report = reg.verify_audit().unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!((report.entries, report.head_seq), (5, Some(5)));
    let empty = open_temp();
    assert!(empty.1.verify_audit().unwrap().is_ok());
}

#[test]
fn triggers_guard_the_log() {
    if crate::registry::test_support::sqlite_only("triggers_guard_the_log") {
        return;
    }
    let (_dir, reg) = registry_with_entries(2);
    reg.with_raw_connection(|c| {
        assert!(
            c.execute("UPDATE audit_log SET actor = 'mallory'", [])
                .is_err()
        );
        assert!(
            c.execute("DELETE FROM audit_log WHERE seq = 1", [])
                .is_err()
        );
    });
}

#[test]
fn edited_details_are_reported_at_their_seq() {
    if crate::registry::test_support::sqlite_only("edited_details_are_reported_at_their_seq") {
        return;
    }
    let (_dir, reg) = registry_with_entries(5);
    drop_guards(&reg);
    reg.with_raw_connection(|c| {
        c.execute("UPDATE audit_log SET details = replace(details, 'opted-out', 'opted-in') WHERE seq = 3", [])
            .unwrap();
    });
    assert_eq!(problems(&reg), vec![(3, AuditProblemKind::Edited)]);
    let report = reg.verify_audit().unwrap();
    assert!(
        report.problems[0]
            .message
            .contains("entry 3 (consent-recorded of 'w1')")
    );
}

#[test]
fn removed_entry_is_reported_as_missing() {
    if crate::registry::test_support::sqlite_only("removed_entry_is_reported_as_missing") {
        return;
    }
    let (_dir, reg) = registry_with_entries(5);
    drop_guards(&reg);
    reg.with_raw_connection(|c| {
        c.execute("DELETE FROM audit_log WHERE seq = 4", [])
            .unwrap()
    });
    let report = reg.verify_audit().unwrap();
    assert_eq!(problems(&reg), vec![(4, AuditProblemKind::Missing)]);
    assert!(
        report.problems[0]
            .message
            .contains("entries 4..=4 are missing")
    );
}

#[test]
fn removed_first_entry_is_reported() {
    if crate::registry::test_support::sqlite_only("removed_first_entry_is_reported") {
        return;
    }
    let (_dir, reg) = registry_with_entries(3);
    drop_guards(&reg);
    reg.with_raw_connection(|c| {
        c.execute("DELETE FROM audit_log WHERE seq = 1", [])
            .unwrap()
    });
    assert_eq!(problems(&reg)[0], (1, AuditProblemKind::Missing));
}

#[test]
fn swapped_entries_are_reported_from_the_first_moved_one() {
    if crate::registry::test_support::sqlite_only(
        "swapped_entries_are_reported_from_the_first_moved_one",
    ) {
        return;
    }
    let (_dir, reg) = registry_with_entries(5);
    drop_guards(&reg);
    reg.with_raw_connection(|c| {
        c.execute_batch(
            "UPDATE audit_log SET seq = -1 WHERE seq = 2;
             UPDATE audit_log SET seq = 2 WHERE seq = 3;
             UPDATE audit_log SET seq = 3 WHERE seq = -1;",
        )
        .unwrap();
    });
    let found = problems(&reg);
    assert_eq!(
        found.first(),
        Some(&(2, AuditProblemKind::Edited)),
        "{found:?}"
    );
    assert!(found.contains(&(3, AuditProblemKind::Edited)));
    assert!(
        found.iter().all(|(seq, _)| (2..=4).contains(seq)),
        "{found:?}"
    );
}

#[test]
fn rebuilt_hash_without_relinking_breaks_the_chain() {
    if crate::registry::test_support::sqlite_only("rebuilt_hash_without_relinking_breaks_the_chain")
    {
        return;
    }
    // Someone edits entry 2 and recomputes its hash but not entry 3's prev_hash.
    let (_dir, reg) = registry_with_entries(4);
    drop_guards(&reg);
    reg.with_raw_connection(|c| {
        let (at, action, subject, prev): (String, String, String, String) = c
            .query_row(
                "SELECT at, action, subject, prev_hash FROM audit_log WHERE seq = 2",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        let hash = entry_hash(2, &at, "mallory", &action, &subject, "{}", &prev);
        c.execute(
            "UPDATE audit_log SET actor = 'mallory', details = '{}', hash = ?1 WHERE seq = 2",
            [hash],
        )
        .unwrap();
    });
    assert_eq!(problems(&reg), vec![(3, AuditProblemKind::ChainBroken)]);
}

#[test]
fn export_is_jsonl_and_rehashes() {
    let (_dir, reg) = registry_with_entries(3);
    let mut out = Vec::new();
    assert_eq!(reg.export_audit(&mut out).unwrap(), 3);
    let text = String::from_utf8(out).unwrap();
    let entries: Vec<AuditEntry> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(entries[0].action, "work-added");
    assert_eq!(entries[0].prev_hash, GENESIS_HASH);
    for e in &entries {
        let at = to_db_time(e.at).unwrap();
        let recomputed = entry_hash(
            e.seq,
            &at,
            &e.actor,
            &e.action,
            &e.subject,
            &e.details.to_string(),
            &e.prev_hash,
        );
        assert_eq!(recomputed, e.hash, "export of entry {} re-verifies", e.seq);
    }
}

#[test]
fn failed_change_leaves_no_audit_entry() {
    let (_dir, reg) = registry_with_entries(1);
    assert!(
        reg.add_work(sample_work("w1"), &[], "alice").is_err(),
        "duplicate id"
    );
    let bad = NewConsent::new(
        Scope::AiTraining,
        ConsentStatus::OptedOut,
        "",
        datetime!(2026-01-01 0:00 UTC),
    );
    assert!(reg.add_work(sample_work("w2"), &[bad], "alice").is_err());
    assert!(
        reg.get_work("w2").unwrap().is_none(),
        "work insert rolled back with its consent"
    );
    assert_eq!(reg.verify_audit().unwrap().entries, 1);
}

use clap::Parser;
use time::macros::datetime;

use super::*;
use crate::registry::test_support::{open_temp, sample_work};

#[derive(Debug, Parser)]
struct TestCli {
    #[command(subcommand)]
    cmd: TestCmd,
}

#[derive(Debug, Subcommand)]
enum TestCmd {
    #[command(subcommand)]
    Consent(ConsentCmd),
    #[command(subcommand)]
    Works(WorksReadCmd),
    #[command(subcommand)]
    Audit(AuditCmd),
    #[command(subcommand)]
    Ledger(LedgerCmd),
    #[command(subcommand)]
    Keys(KeysCmd),
}

/// Parses and runs `args`, returning (exit code, output).
fn run(reg: &Registry, args: &[&str]) -> (u8, String) {
    let cli =
        TestCli::try_parse_from(std::iter::once("earmark").chain(args.iter().copied())).unwrap();
    let mut out = Vec::new();
    let code = match cli.cmd {
        TestCmd::Consent(c) => run_consent_to(c, reg, &mut out),
        TestCmd::Works(c) => run_works_read_to(c, reg, &mut out),
        TestCmd::Audit(c) => run_audit_to(c, reg, &mut out),
        TestCmd::Ledger(c) => run_ledger_to(c, reg, &mut out),
        TestCmd::Keys(c) => run_keys_to(c, reg, &mut out),
    }
    .unwrap();
    (code, String::from_utf8(out).unwrap())
}

#[test]
fn consent_set_and_history() {
    let (_dir, reg) = open_temp();
    reg.add_work(sample_work("w1"), &[], "admin").unwrap();
    let (code, out) = run(
        &reg,
        &[
            "consent",
            "set",
            "w1",
            "--scope",
            "ai-training",
            "--status",
            "opted-out",
            "--from",
            "2026-01-01",
            "--actor",
            "alice",
        ],
    );
    assert_eq!(code, EXIT_OK);
    assert_eq!(
        out,
        "recorded consent #1 for 'w1': opted-out for ai-training from 2026-01-01T00:00:00Z (WORLD, source registry)\n\
         in force now for ai-training worldwide: opted-out (record #1)\n"
    );
    let (_, out) = run(
        &reg,
        &[
            "consent",
            "set",
            "w1",
            "--scope",
            "ai-training",
            "--status",
            "constrained",
            "--terms",
            "credit me",
            "--territory",
            "de",
            "--source",
            "contract",
            "--actor",
            "alice",
            "--json",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["record"]["territory"], "DE");
    assert_eq!(v["record"]["asserted_by"], "alice");
    let (_, out) = run(&reg, &["consent", "history", "w1"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3);
    assert!(lines[0].starts_with("record  scope"));
    assert!(
        lines[2].contains("constrained") && lines[2].contains("credit me"),
        "{}",
        lines[2]
    );
    let (_, out) = run(&reg, &["consent", "history", "w1", "--json"]);
    assert_eq!(
        serde_json::from_str::<Vec<ConsentRecord>>(&out)
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn bad_arguments_are_rejected_by_the_parser() {
    for args in [
        &[
            "earmark",
            "consent",
            "set",
            "w1",
            "--scope",
            "training",
            "--status",
            "opted-out",
        ][..],
        &[
            "earmark",
            "consent",
            "set",
            "w1",
            "--scope",
            "ai-training",
            "--status",
            "maybe",
        ],
        &[
            "earmark",
            "consent",
            "set",
            "w1",
            "--scope",
            "ai-training",
            "--status",
            "opted-out",
            "--from",
            "yesterday",
        ],
        &[
            "earmark",
            "consent",
            "set",
            "w1",
            "--scope",
            "ai-training",
            "--status",
            "opted-out",
            "--territory",
            "XX",
        ],
        &["earmark", "keys", "create", "--role", "root"],
    ] {
        assert!(TestCli::try_parse_from(args).is_err(), "{args:?}");
    }
}

#[test]
fn works_list_and_show() {
    let (_dir, reg) = open_temp();
    reg.add_work(
        sample_work("w1"),
        &[NewConsent::new(
            Scope::AiTraining,
            ConsentStatus::OptedIn,
            "H",
            datetime!(2026-01-01 0:00 UTC),
        )],
        "admin",
    )
    .unwrap();
    reg.add_work(sample_work("w2"), &[], "admin").unwrap();
    let (_, out) = run(&reg, &["works", "list"]);
    assert!(out.starts_with("id  title"), "{out}");
    assert!(
        out.contains("US-S1Z-99-00001") && out.ends_with("2 of 2 works\n"),
        "{out}"
    );
    let (_, out) = run(&reg, &["works", "list", "--json"]);
    assert_eq!(serde_json::from_str::<Vec<Work>>(&out).unwrap().len(), 2);
    let (_, out) = run(&reg, &["works", "show", "w1"]);
    assert!(
        out.contains("ai-training           opted-in  record #1"),
        "{out}"
    );
    assert!(out.contains("voice-synthesis       unknown"), "{out}");
    let (_, out) = run(&reg, &["works", "show", "w1", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["in_force_now"]["ai-training"]["status"], "opted-in");
    assert_eq!(v["work"]["id"], "w1");
    let cli = TestCli::try_parse_from(["earmark", "works", "show", "nope"]).unwrap();
    let TestCmd::Works(cmd) = cli.cmd else {
        unreachable!()
    };
    assert!(run_works_read_to(cmd, &reg, &mut Vec::new()).is_err());
}

#[test]
fn audit_verify_and_export() {
    if crate::registry::test_support::sqlite_only("audit_verify_and_export") {
        return;
    }
    let (dir, reg) = open_temp();
    reg.add_work(sample_work("w1"), &[], "admin").unwrap();
    let (code, out) = run(&reg, &["audit", "verify"]);
    assert_eq!(code, EXIT_OK);
    assert!(
        out.starts_with("audit log OK: 1 entries; head #1 "),
        "{out}"
    );
    let file = dir.path().join("audit.jsonl");
    let (_, out) = run(&reg, &["audit", "export", "--out", file.to_str().unwrap()]);
    assert!(out.starts_with("exported 1 audit entries"));
    assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 1);
    reg.with_raw_connection(|c| {
        c.execute_batch(
            "DROP TRIGGER audit_log_no_update; UPDATE audit_log SET actor = 'mallory';",
        )
        .unwrap();
    });
    let (code, out) = run(&reg, &["audit", "verify"]);
    assert_eq!(code, EXIT_AUDIT_BROKEN);
    assert!(
        out.contains("seq 1: entry 1 (work-added of 'w1') does not match its hash"),
        "{out}"
    );
    let (code, out) = run(&reg, &["audit", "verify", "--json"]);
    assert_eq!(code, EXIT_AUDIT_BROKEN);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["problems"][0]["seq"],
        1
    );
}

#[test]
fn ledger_export_formats() {
    let (_dir, reg) = open_temp();
    reg.add_work(sample_work("w1"), &[], "admin").unwrap();
    reg.record_attribution(
        "w1",
        10.0,
        "s1",
        "clip",
        Scope::AiTraining,
        datetime!(2026-01-10 0:00 UTC),
    )
    .unwrap();
    reg.record_attribution(
        "w1",
        5.0,
        "s2",
        "clip",
        Scope::AiTraining,
        datetime!(2026-02-10 0:00 UTC),
    )
    .unwrap();
    let (_, out) = run(
        &reg,
        &[
            "ledger",
            "export",
            "--from",
            "2026-01-01",
            "--until",
            "2026-02-01",
        ],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[1].contains(",10.0,1,1,"), "{}", lines[1]);
    let (_, out) = run(&reg, &["ledger", "export", "--format", "jsonl"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["seconds"], 15.0);
    let cli = TestCli::try_parse_from([
        "earmark",
        "ledger",
        "export",
        "--from",
        "2026-02-01",
        "--until",
        "2026-01-01",
    ])
    .unwrap();
    let TestCmd::Ledger(cmd) = cli.cmd else {
        unreachable!()
    };
    assert!(run_ledger_to(cmd, &reg, &mut Vec::new()).is_err());
}

#[test]
fn keys_create_prints_the_secret_once() {
    let (_dir, reg) = open_temp();
    let (_, out) = run(
        &reg,
        &[
            "keys",
            "create",
            "--role",
            "rights-holder",
            "--holder",
            "Acme",
            "--actor",
            "admin",
        ],
    );
    let secret = out.lines().nth(1).unwrap().rsplit(' ').next().unwrap();
    let info = reg.verify_key(secret).unwrap().unwrap();
    assert_eq!(
        (info.role, info.holder.as_deref()),
        (Role::RightsHolder, Some("Acme"))
    );
    assert!(out.starts_with(&format!(
        "created rights-holder key {} for Acme",
        info.key_id
    )));
    let (_, out) = run(&reg, &["keys", "create", "--role", "screener", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["secret"].as_str().unwrap().starts_with("emk_"));
    let (_, out) = run(&reg, &["keys", "revoke", info.key_id.as_str()]);
    assert_eq!(out, format!("revoked key {}\n", info.key_id));
    assert_eq!(reg.verify_key(secret).unwrap(), None);
}

#[test]
fn command_definitions_are_valid_and_flatten_into_a_works_group() {
    use clap::CommandFactory;
    TestCli::command().debug_assert();

    #[derive(Debug, Parser)]
    struct Top {
        #[command(subcommand)]
        works: WorksGroup,
    }
    #[derive(Debug, Subcommand)]
    enum WorksGroup {
        Add {
            id: String,
        },
        #[command(flatten)]
        Read(WorksReadCmd),
    }
    Top::command().debug_assert();
    let top = Top::try_parse_from(["earmark", "show", "w1", "--json"]).unwrap();
    assert!(matches!(
        top.works,
        WorksGroup::Read(WorksReadCmd::Show { json: true, .. })
    ));
}

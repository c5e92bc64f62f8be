//! What the static part of the page shows, gathered from the summary and the
//! rows before any markup is written.

use std::collections::{BTreeMap, BTreeSet};

use crate::policy::{Decision, PolicyConfig};
use crate::scan::report::ReportRow;
use crate::scan::summary::{
    ScanSummary, SummaryBuilder, SummaryMeta, VerdictTotals, Verdicts, WorkTotal,
};

/// A blocked or flagged work with the consent that decided it.
#[derive(Debug, Clone)]
pub(super) struct WorkView {
    pub total: WorkTotal,
    /// Consent states seen in the matches (`opted-out`, `unknown`…).
    pub consent: BTreeSet<String>,
    /// Ids of the consent records that decided those matches.
    pub records: BTreeSet<i64>,
}

/// The totals and works of the page.
#[derive(Debug, Clone)]
pub(super) struct PageView {
    pub items: u64,
    pub audio_hours: f64,
    pub verdicts: Verdicts,
    pub errors_by_kind: BTreeMap<String, u64>,
    pub blocked_works: Vec<WorkView>,
    pub flagged_works: Vec<WorkView>,
    /// The run summary, when one was given.
    pub summary: Option<ScanSummary>,
    /// Rows in the report (and in the item table).
    pub rows: u64,
}

impl PageView {
    /// Totals from `summary` when given, else counted from `rows`.
    pub fn new(rows: &[ReportRow], summary: Option<&ScanSummary>) -> Self {
        let counted;
        let totals = match summary {
            Some(s) => s,
            None => {
                counted = count_rows(rows);
                &counted
            }
        };
        let consent = consent_by_work(rows);
        let works = |list: &[WorkTotal], outcome: Decision| -> Vec<WorkView> {
            list.iter()
                .map(|w| {
                    let (consent, records) = consent
                        .get(&(w.work_id.as_str(), outcome))
                        .cloned()
                        .unwrap_or_default();
                    WorkView {
                        total: w.clone(),
                        consent,
                        records,
                    }
                })
                .collect()
        };
        PageView {
            items: totals.items,
            audio_hours: totals.audio_hours,
            verdicts: totals.verdicts.clone(),
            errors_by_kind: totals.errors_by_kind.clone(),
            blocked_works: works(&totals.blocked_works, Decision::Block),
            flagged_works: works(&totals.flagged_works, Decision::Flag),
            summary: summary.cloned(),
            rows: rows.len() as u64,
        }
    }

    /// `(name, label, totals)` of each verdict, in display order.
    pub fn verdict_rows(&self) -> [(&'static str, &'static str, &VerdictTotals); 4] {
        let v = &self.verdicts;
        [
            ("block", "Blocked", &v.block),
            ("flag", "Flagged", &v.flag),
            ("allow", "Allowed", &v.allow),
            ("error", "Not screened", &v.error),
        ]
    }
}

/// Consent states and deciding records of each (work, outcome) in the rows.
type ConsentByWork<'a> = BTreeMap<(&'a str, Decision), (BTreeSet<String>, BTreeSet<i64>)>;

fn consent_by_work(rows: &[ReportRow]) -> ConsentByWork<'_> {
    let mut out: ConsentByWork<'_> = BTreeMap::new();
    for m in rows.iter().flat_map(|r| &r.matches) {
        let entry = out.entry((m.work_id.as_str(), m.outcome)).or_default();
        entry.0.insert(m.consent.as_str().to_owned());
        entry.1.extend(m.consent_record);
    }
    out
}

/// Totals counted from the rows alone. The summary builder needs facts of a
/// run the rows do not carry; neutral values stand in for them and only the
/// counted fields (items, hours, verdicts, works, errors) are read.
fn count_rows(rows: &[ReportRow]) -> ScanSummary {
    let mut builder = SummaryBuilder::default();
    for row in rows {
        builder.add(row, false);
    }
    let epoch = time::OffsetDateTime::UNIX_EPOCH;
    builder.finish(
        SummaryMeta {
            purpose: String::new(),
            inputs: Vec::new(),
            report: String::new(),
            started_at: epoch,
            finished_at: epoch,
            consent_evaluated_at: epoch,
            policy_version: String::new(),
            policy: PolicyConfig::default(),
            index_generation: 0,
            registered_works: 0,
            remote: None,
        },
        std::time::Duration::ZERO,
        0,
    )
}

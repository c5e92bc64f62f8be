//! The run summary: counts and hours per verdict, blocked and flagged works
//! with the seconds found, errors, throughput — as JSON and as a human table.
//! It carries what an EU AI Act Art. 53(1)(d) training-content summary needs
//! about screening (what was screened, against which registry state, what was
//! excluded and why).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::item::ItemKind;
use super::report::{ReportRow, RowVerdict};
use crate::policy::{Decision, PolicyConfig};

const SECONDS_PER_HOUR: f64 = 3600.0;
/// Rounding of reported seconds and hours.
const ROUNDING: f64 = 1000.0;

fn round(x: f64) -> f64 {
    (x * ROUNDING).round() / ROUNDING
}

/// Items and audio under one verdict.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VerdictTotals {
    pub items: u64,
    pub audio_hours: f64,
}

/// All verdicts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Verdicts {
    pub allow: VerdictTotals,
    pub flag: VerdictTotals,
    pub block: VerdictTotals,
    pub error: VerdictTotals,
}

/// A work found in the corpus, with how much of it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkTotal {
    pub work_id: String,
    pub title: Option<String>,
    pub isrc: Option<String>,
    pub holder: Option<String>,
    /// Items it was found in.
    pub items: u64,
    /// Seconds of those items it covers (overlaps within an item counted once).
    pub seconds: f64,
}

/// Speed of this run (items replayed from an earlier run excluded).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    pub wall_s: f64,
    pub jobs: usize,
    pub items_screened: u64,
    pub audio_hours_screened: f64,
    pub items_per_s: f64,
    /// Seconds of audio screened per second of wall time.
    pub realtime_factor: f64,
    /// Hours of audio screened per minute of wall time.
    pub audio_hours_per_minute: f64,
}

/// Input as reported in the summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SummaryInput {
    pub path: String,
    pub kind: String,
}

/// The summary document (`--summary FILE`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScanSummary {
    pub purpose: String,
    pub inputs: Vec<SummaryInput>,
    pub report: String,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: time::OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub finished_at: time::OffsetDateTime,
    /// Consent was evaluated as in force at this instant.
    #[serde(with = "time::serde::rfc3339")]
    pub consent_evaluated_at: time::OffsetDateTime,
    pub items: u64,
    pub audio_hours: f64,
    pub verdicts: Verdicts,
    /// Works whose opt-out blocked items, most seconds first.
    pub blocked_works: Vec<WorkTotal>,
    /// Works that made items flagged for review, most seconds first.
    pub flagged_works: Vec<WorkTotal>,
    /// Items that could not be screened, by item kind.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Items finished by an earlier, interrupted run of the same scan.
    pub resumed_items: u64,
    pub throughput: Throughput,
    pub policy_version: String,
    pub policy: PolicyConfig,
    pub index_generation: u64,
    /// Works in the local index (0 when screened through a server).
    pub registered_works: usize,
    pub engine_version: String,
    /// The screening server and the policy it applied (`--remote`); the
    /// local `policy` above is then not the one that decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<super::remote::RemotePolicy>,
    pub exit_code: u8,
}

/// Accumulates the summary row by row (memory: one entry per matched work).
#[derive(Debug, Default)]
pub struct SummaryBuilder {
    items: u64,
    seconds: f64,
    per_verdict: [(u64, f64); 4],
    blocked: BTreeMap<String, WorkTotal>,
    flagged: BTreeMap<String, WorkTotal>,
    errors: BTreeMap<String, u64>,
    replayed: u64,
    run_items: u64,
    run_seconds: f64,
}

fn verdict_slot(v: RowVerdict) -> usize {
    match v {
        RowVerdict::Allow => 0,
        RowVerdict::Flag => 1,
        RowVerdict::Block => 2,
        RowVerdict::Error => 3,
    }
}

/// Length of the union of ranges.
fn union_length(mut ranges: Vec<(f64, f64)>) -> f64 {
    ranges.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut total = 0.0;
    let mut current: Option<(f64, f64)> = None;
    for (s, e) in ranges {
        current = match current {
            Some((cs, ce)) if s <= ce => Some((cs, ce.max(e))),
            Some((cs, ce)) => {
                total += ce - cs;
                Some((s, e))
            }
            None => Some((s, e)),
        };
    }
    total + current.map_or(0.0, |(s, e)| e - s)
}

/// Time ranges of one work in one sample member (members are separate timelines).
type RangesByWork<'a> = BTreeMap<(&'a str, Option<&'a str>), Vec<(f64, f64)>>;

fn add_works(totals: &mut BTreeMap<String, WorkTotal>, row: &ReportRow, outcome: Decision) {
    let mut ranges: RangesByWork<'_> = BTreeMap::new();
    for m in row.matches.iter().filter(|m| m.outcome == outcome) {
        ranges
            .entry((m.work_id.as_str(), m.member.as_deref()))
            .or_default()
            .push((m.start_s, m.end_s));
        totals
            .entry(m.work_id.clone())
            .or_insert_with(|| WorkTotal {
                work_id: m.work_id.clone(),
                title: m.title.clone(),
                isrc: m.isrc.clone(),
                holder: m.holder.clone(),
                ..WorkTotal::default()
            });
    }
    let mut counted: BTreeSet<&str> = BTreeSet::new();
    for ((work, _), r) in ranges {
        if let Some(entry) = totals.get_mut(work) {
            if counted.insert(work) {
                entry.items += 1;
            }
            entry.seconds += union_length(r);
        }
    }
}

impl SummaryBuilder {
    /// Counts one row; `replayed` rows come from an earlier run.
    pub fn add(&mut self, row: &ReportRow, replayed: bool) {
        let seconds = row.duration_s.unwrap_or(0.0);
        self.items += 1;
        self.seconds += seconds;
        let slot = &mut self.per_verdict[verdict_slot(row.verdict)];
        slot.0 += 1;
        slot.1 += seconds;
        add_works(&mut self.blocked, row, Decision::Block);
        add_works(&mut self.flagged, row, Decision::Flag);
        if row.verdict == RowVerdict::Error {
            *self.errors.entry(kind_name(row.kind)).or_default() += 1;
        }
        if replayed {
            self.replayed += 1;
        } else {
            self.run_items += 1;
            self.run_seconds += seconds;
        }
    }

    pub fn items(&self) -> u64 {
        self.items
    }

    pub fn count(&self, verdict: RowVerdict) -> u64 {
        self.per_verdict[verdict_slot(verdict)].0
    }

    /// Items screened by this run and their audio seconds.
    pub fn run_totals(&self) -> (u64, f64) {
        (self.run_items, self.run_seconds)
    }

    /// Exit code: 3 if any item could not be screened, else 1 if anything was
    /// blocked or flagged, else 0.
    pub fn exit_code(&self) -> u8 {
        if self.count(RowVerdict::Error) > 0 {
            super::EXIT_UNSCREENED
        } else if self.count(RowVerdict::Block) + self.count(RowVerdict::Flag) > 0 {
            super::EXIT_FOUND
        } else {
            super::EXIT_CLEAN
        }
    }

    /// The final document; `meta` carries what the builder does not know.
    pub fn finish(self, meta: SummaryMeta, wall: Duration, jobs: usize) -> ScanSummary {
        let exit_code = self.exit_code();
        let totals = |i: usize| VerdictTotals {
            items: self.per_verdict[i].0,
            audio_hours: round(self.per_verdict[i].1 / SECONDS_PER_HOUR),
        };
        let sorted = |works: BTreeMap<String, WorkTotal>| {
            let mut v: Vec<WorkTotal> = works
                .into_values()
                .map(|mut w| {
                    w.seconds = round(w.seconds);
                    w
                })
                .collect();
            v.sort_by(|a, b| {
                b.seconds
                    .total_cmp(&a.seconds)
                    .then(a.work_id.cmp(&b.work_id))
            });
            v
        };
        let wall_s = wall.as_secs_f64().max(f64::EPSILON);
        ScanSummary {
            purpose: meta.purpose,
            inputs: meta.inputs,
            report: meta.report,
            started_at: meta.started_at,
            finished_at: meta.finished_at,
            consent_evaluated_at: meta.consent_evaluated_at,
            items: self.items,
            audio_hours: round(self.seconds / SECONDS_PER_HOUR),
            verdicts: Verdicts {
                allow: totals(0),
                flag: totals(1),
                block: totals(2),
                error: totals(3),
            },
            blocked_works: sorted(self.blocked),
            flagged_works: sorted(self.flagged),
            errors_by_kind: self.errors,
            resumed_items: self.replayed,
            throughput: Throughput {
                wall_s: round(wall_s),
                jobs,
                items_screened: self.run_items,
                audio_hours_screened: round(self.run_seconds / SECONDS_PER_HOUR),
                items_per_s: round(self.run_items as f64 / wall_s),
                realtime_factor: round(self.run_seconds / wall_s),
                audio_hours_per_minute: round(
                    self.run_seconds / SECONDS_PER_HOUR / (wall_s / 60.0),
                ),
            },
            policy_version: meta.policy_version,
            policy: meta.policy,
            index_generation: meta.index_generation,
            registered_works: meta.registered_works,
            engine_version: crate::ENGINE_VERSION.to_owned(),
            remote: meta.remote,
            exit_code,
        }
    }
}

/// Facts about the run the rows do not carry.
#[derive(Debug, Clone)]
pub struct SummaryMeta {
    pub purpose: String,
    pub inputs: Vec<SummaryInput>,
    pub report: String,
    pub started_at: time::OffsetDateTime,
    pub finished_at: time::OffsetDateTime,
    pub consent_evaluated_at: time::OffsetDateTime,
    pub policy_version: String,
    pub policy: PolicyConfig,
    pub index_generation: u64,
    pub registered_works: usize,
    pub remote: Option<super::remote::RemotePolicy>,
}

fn hours(h: f64) -> String {
    if h < 1.0 {
        format!("{:.1} min", h * 60.0)
    } else {
        format!("{h:.2} h")
    }
}

impl ScanSummary {
    /// A table for people (printed at the end of a scan).
    pub fn human(&self) -> String {
        let mut out = String::new();
        let v = &self.verdicts;
        let _ = writeln!(out, "earmark scan — purpose {}", self.purpose);
        if let Some(r) = &self.remote {
            let _ = writeln!(
                out,
                "  screened by {} (index generation {}, unknown consent: {})",
                r.url, r.index_generation, r.unknown_consent
            );
        }
        let _ = writeln!(
            out,
            "  items     {:>9}  {:>10}",
            self.items,
            hours(self.audio_hours)
        );
        for (name, t) in [
            ("allowed", &v.allow),
            ("flagged", &v.flag),
            ("blocked", &v.block),
            ("errors", &v.error),
        ] {
            let _ = writeln!(
                out,
                "  {name:<9} {:>9}  {:>10}",
                t.items,
                hours(t.audio_hours)
            );
        }
        for (title, works) in [
            ("blocked works", &self.blocked_works),
            ("flagged works", &self.flagged_works),
        ] {
            if works.is_empty() {
                continue;
            }
            let _ = writeln!(out, "  {title}:");
            for w in works {
                let _ = writeln!(
                    out,
                    "    {:<32} {:>6} items {:>9.1} s  {}",
                    w.work_id,
                    w.items,
                    w.seconds,
                    w.title.as_deref().unwrap_or("")
                );
            }
        }
        for (kind, n) in &self.errors_by_kind {
            let _ = writeln!(out, "  not screened: {n} {kind} item(s) (see the report)");
        }
        let t = &self.throughput;
        let _ = writeln!(
            out,
            "  throughput {:.1} items/s, {:.2} audio-h/min, {:.1}× real time ({} items in {:.1} s, {} jobs{})",
            t.items_per_s,
            t.audio_hours_per_minute,
            t.realtime_factor,
            t.items_screened,
            t.wall_s,
            t.jobs,
            if self.resumed_items > 0 {
                format!("; {} items from the interrupted run", self.resumed_items)
            } else {
                String::new()
            }
        );
        out
    }
}

/// Item kind name used in the summary.
pub fn kind_name(kind: ItemKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

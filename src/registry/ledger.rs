//! Attribution ledger: how many seconds of each opted-in work were used, by
//! which submission, for which purpose — the raw material of royalty statements.
//!
//! Entries are append-only (triggers) and idempotent per
//! `(submission_id, registration, purpose)`: recording the same verdict twice
//! (a retry, a re-run) does not double-count. Entries point at the work's
//! registration, so statements stay complete after a work is removed.
//! Attributions are not audit-logged: they are usage data, not registry changes.

use std::io::Write;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::Registry;
use super::db::{Db, DbError, DbRow, values};
use super::error::{DbContext, RegistryError, Result, invalid};
use super::ids::{Isni, Isrc, Iswc, WorkId};
use super::model::{Scope, from_db_time, to_db_time};
use super::rows::{require_reg_no, required_text};

/// Milliseconds per second, for rounding exported durations.
const MS_PER_S: f64 = 1000.0;
/// Upper bound for open-ended periods in text comparisons (sorts after any timestamp).
const END_OF_TIME: &str = "9999-12-31T23:59:59Z";
/// Lower bound for open-ended periods.
const START_OF_TIME: &str = "0000-01-01T00:00:00Z";

/// One use of a work to append to the ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewAttribution {
    pub work_id: String,
    pub seconds_matched: f64,
    pub submission_id: String,
    pub submission_name: String,
    pub purpose: Scope,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// Per-work totals over a period (one line of a royalty statement).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerTotal {
    pub work_id: WorkId,
    pub title: String,
    pub isrc: Option<Isrc>,
    pub iswc: Option<Iswc>,
    pub holder: String,
    pub holder_isni: Option<Isni>,
    pub seconds: f64,
    /// Number of ledger entries (submission × purpose).
    pub attributions: u64,
    /// Number of distinct submissions.
    pub submissions: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub first_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_at: OffsetDateTime,
}

/// Export format of [`write_totals`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerFormat {
    Csv,
    Jsonl,
}

fn insert(db: &mut dyn Db, a: &NewAttribution) -> Result<bool> {
    let id = WorkId::parse(&a.work_id)?;
    if !a.seconds_matched.is_finite() || a.seconds_matched < 0.0 {
        return Err(invalid(
            "seconds matched",
            format!("{} for work '{id}'", a.seconds_matched),
        ));
    }
    let submission_id = required_text("submission id", &a.submission_id)?;
    let reg_no = require_reg_no(db, &id)?;
    let inserted = db
        .execute(
            "INSERT INTO attributions (reg_no, seconds, submission_id, submission_name, purpose, at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
            &values![
                reg_no,
                a.seconds_matched,
                &submission_id,
                a.submission_name.trim(),
                a.purpose.as_str(),
                to_db_time(a.at)?,
            ],
        )
        .db(|| format!("recording attribution of '{id}' for submission '{submission_id}'"))?;
    Ok(inserted > 0)
}

impl Registry {
    /// Appends one attribution; `Ok(false)` if this submission was already
    /// attributed to this work for this purpose (nothing written).
    pub fn record_attribution(
        &self,
        work_id: &str,
        seconds_matched: f64,
        submission_id: &str,
        submission_name: &str,
        purpose: Scope,
        at: OffsetDateTime,
    ) -> Result<bool> {
        let a = NewAttribution {
            work_id: work_id.to_owned(),
            seconds_matched,
            submission_id: submission_id.to_owned(),
            submission_name: submission_name.to_owned(),
            purpose,
            at,
        };
        Ok(self.record_attributions(std::slice::from_ref(&a))? == 1)
    }

    /// Appends several attributions in one transaction (all or none); returns
    /// how many were new.
    pub fn record_attributions(&self, items: &[NewAttribution]) -> Result<usize> {
        self.write_unserialised("recording attributions", |tx| {
            let mut added = 0;
            for a in items {
                added += usize::from(insert(tx, a)?);
            }
            Ok(added)
        })
    }

    /// Per-work totals of attributions with `from <= at < until` (open ends
    /// when `None`), ordered by holder, then work id.
    pub fn ledger_totals(
        &self,
        from: Option<OffsetDateTime>,
        until: Option<OffsetDateTime>,
    ) -> Result<Vec<LedgerTotal>> {
        let from_s = from
            .map(to_db_time)
            .transpose()?
            .unwrap_or_else(|| START_OF_TIME.to_owned());
        let until_s = until
            .map(to_db_time)
            .transpose()?
            .unwrap_or_else(|| END_OF_TIME.to_owned());
        self.read(|db| {
            let rows = db
                .query(
                    "SELECT w.id, w.title, w.isrc, w.iswc, w.holder, w.holder_isni, SUM(a.seconds), \
                     COUNT(*), COUNT(DISTINCT a.submission_id), MIN(a.at), MAX(a.at) \
                     FROM attributions a JOIN works w ON w.reg_no = a.reg_no \
                     WHERE a.at >= ?1 AND a.at < ?2 GROUP BY w.reg_no ORDER BY w.holder, w.id, w.reg_no",
                    &values![&from_s, &until_s],
                )
                .and_then(|rows| rows.iter().map(RawTotal::from_row).collect::<std::result::Result<Vec<_>, _>>())
                .db(|| "summing the ledger".into())?;
            rows.into_iter().map(RawTotal::into_total).collect()
        })
    }
}

/// A totals row as returned by the database.
struct RawTotal {
    work_id: String,
    title: String,
    isrc: Option<String>,
    iswc: Option<String>,
    holder: String,
    holder_isni: Option<String>,
    seconds: f64,
    attributions: i64,
    submissions: i64,
    first_at: String,
    last_at: String,
}

impl RawTotal {
    fn from_row(r: &DbRow) -> std::result::Result<Self, DbError> {
        Ok(Self {
            work_id: r.get(0)?,
            title: r.get(1)?,
            isrc: r.get(2)?,
            iswc: r.get(3)?,
            holder: r.get(4)?,
            holder_isni: r.get(5)?,
            seconds: r.get(6)?,
            attributions: r.get(7)?,
            submissions: r.get(8)?,
            first_at: r.get(9)?,
            last_at: r.get(10)?,
        })
    }

    fn into_total(self) -> Result<LedgerTotal> {
        let key = self.work_id.clone();
        let corrupt = |reason: String| RegistryError::Corrupt {
            table: "attributions",
            key: key.clone(),
            reason,
        };
        Ok(LedgerTotal {
            work_id: WorkId::parse(&self.work_id).map_err(|e| corrupt(e.to_string()))?,
            title: self.title,
            isrc: self
                .isrc
                .as_deref()
                .map(Isrc::parse)
                .transpose()
                .map_err(|e| corrupt(e.to_string()))?,
            iswc: self
                .iswc
                .as_deref()
                .map(Iswc::parse)
                .transpose()
                .map_err(|e| corrupt(e.to_string()))?,
            holder: self.holder,
            holder_isni: self
                .holder_isni
                .as_deref()
                .map(Isni::parse)
                .transpose()
                .map_err(|e| corrupt(e.to_string()))?,
            seconds: self.seconds,
            attributions: u64::try_from(self.attributions).unwrap_or(0),
            submissions: u64::try_from(self.submissions).unwrap_or(0),
            first_at: from_db_time(&self.first_at).map_err(|e| corrupt(e.to_string()))?,
            last_at: from_db_time(&self.last_at).map_err(|e| corrupt(e.to_string()))?,
        })
    }
}

/// Header of the CSV statement (the fields of [`CsvLine`], in order); written
/// even when the period has no attributions, so an empty statement is valid CSV.
const CSV_HEADER: [&str; 13] = [
    "period_from",
    "period_until",
    "work_id",
    "title",
    "isrc",
    "iswc",
    "holder",
    "holder_isni",
    "seconds",
    "attributions",
    "submissions",
    "first_at",
    "last_at",
];

/// One CSV line of a statement.
#[derive(Serialize)]
struct CsvLine<'a> {
    period_from: String,
    period_until: String,
    work_id: &'a str,
    title: &'a str,
    isrc: &'a str,
    iswc: &'a str,
    holder: &'a str,
    holder_isni: &'a str,
    seconds: f64,
    attributions: u64,
    submissions: u64,
    first_at: String,
    last_at: String,
}

/// Writes totals as CSV (with a header and the period on every line) or JSONL.
pub fn write_totals(
    totals: &[LedgerTotal],
    format: LedgerFormat,
    period: (Option<OffsetDateTime>, Option<OffsetDateTime>),
    out: impl Write,
) -> Result<()> {
    match format {
        LedgerFormat::Csv => write_csv(totals, period, out),
        LedgerFormat::Jsonl => write_jsonl(totals, out),
    }
}

fn write_csv(
    totals: &[LedgerTotal],
    (from, until): (Option<OffsetDateTime>, Option<OffsetDateTime>),
    out: impl Write,
) -> Result<()> {
    let csv_err = |source| RegistryError::Csv {
        what: "ledger totals",
        source,
    };
    let period_from = from.map(to_db_time).transpose()?.unwrap_or_default();
    let period_until = until.map(to_db_time).transpose()?.unwrap_or_default();
    let mut w = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(out);
    w.write_record(CSV_HEADER).map_err(csv_err)?;
    for t in totals {
        w.serialize(CsvLine {
            period_from: period_from.clone(),
            period_until: period_until.clone(),
            work_id: t.work_id.as_str(),
            title: &t.title,
            isrc: t.isrc.as_ref().map_or("", Isrc::as_str),
            iswc: t.iswc.as_ref().map_or("", Iswc::as_str),
            holder: &t.holder,
            holder_isni: t.holder_isni.as_ref().map_or("", Isni::as_str),
            seconds: (t.seconds * MS_PER_S).round() / MS_PER_S,
            attributions: t.attributions,
            submissions: t.submissions,
            first_at: to_db_time(t.first_at)?,
            last_at: to_db_time(t.last_at)?,
        })
        .map_err(csv_err)?;
    }
    w.flush().map_err(|source| RegistryError::Write {
        what: "ledger totals",
        source,
    })
}

fn write_jsonl(totals: &[LedgerTotal], mut out: impl Write) -> Result<()> {
    let io_err = |source| RegistryError::Write {
        what: "ledger totals",
        source,
    };
    for t in totals {
        serde_json::to_writer(&mut out, t).map_err(|source| RegistryError::Json {
            what: "ledger total",
            source,
        })?;
        out.write_all(b"\n").map_err(io_err)?;
    }
    out.flush().map_err(io_err)
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;
    use crate::registry::test_support::{open_temp, sample_work};

    #[test]
    fn totals_over_a_period() {
        let (_dir, reg) = open_temp();
        let mut a = sample_work("a");
        a.holder = "Alpha Records".into();
        reg.add_work(a, &[], "admin").unwrap();
        reg.add_work(sample_work("b"), &[], "admin").unwrap();
        let train = Scope::AiTraining;
        let rec = |w: &str, s: f64, sub: &str, p: Scope, at| {
            reg.record_attribution(w, s, sub, "name", p, at).unwrap()
        };
        assert!(rec("a", 10.0, "s1", train, datetime!(2026-01-05 0:00 UTC)));
        assert!(rec("a", 5.5, "s2", train, datetime!(2026-01-20 0:00 UTC)));
        assert!(rec(
            "a",
            2.0,
            "s2",
            Scope::AiGeneration,
            datetime!(2026-01-21 0:00 UTC)
        ));
        assert!(
            !rec("a", 99.0, "s2", train, datetime!(2026-01-22 0:00 UTC)),
            "idempotent"
        );
        assert!(rec("a", 7.0, "s3", train, datetime!(2026-02-01 0:00 UTC)));
        assert!(rec(
            "b",
            3.0,
            "s1",
            train,
            datetime!(2025-12-31 23:59:59 UTC)
        ));

        let jan = reg
            .ledger_totals(
                Some(datetime!(2026-01-01 0:00 UTC)),
                Some(datetime!(2026-02-01 0:00 UTC)),
            )
            .unwrap();
        assert_eq!(
            jan.len(),
            1,
            "b is before the period, s3 at its exclusive end"
        );
        let t = &jan[0];
        assert_eq!(
            (t.work_id.as_str(), t.seconds, t.attributions, t.submissions),
            ("a", 17.5, 3, 2)
        );
        assert_eq!(
            (t.first_at, t.last_at),
            (
                datetime!(2026-01-05 0:00 UTC),
                datetime!(2026-01-21 0:00 UTC)
            )
        );
        assert_eq!(t.holder, "Alpha Records");

        let all = reg.ledger_totals(None, None).unwrap();
        assert_eq!(
            all.iter()
                .map(|t| (t.work_id.as_str(), t.seconds))
                .collect::<Vec<_>>(),
            vec![("a", 24.5), ("b", 3.0)]
        );

        // Totals survive removal of the work.
        reg.remove_work("b", "admin").unwrap();
        assert_eq!(reg.ledger_totals(None, None).unwrap().len(), 2);
        assert!(
            reg.record_attribution("b", 1.0, "s9", "n", train, datetime!(2026-03-01 0:00 UTC))
                .is_err()
        );
    }

    #[test]
    fn ledgers_of_bare_hex_ids_migrate_to_the_one_rule() {
        if crate::registry::test_support::sqlite_only(
            "ledgers_of_bare_hex_ids_migrate_to_the_one_rule",
        ) {
            return;
        }
        let (dir, reg) = open_temp();
        reg.add_work(sample_work("a"), &[], "admin").unwrap();
        let (h1, h2) = ("ab".repeat(32), "CD".repeat(32));
        let at = datetime!(2026-01-05 0:00 UTC);
        let rec = |sub: &str, s: f64| {
            assert!(
                reg.record_attribution("a", s, sub, "n", Scope::AiTraining, at)
                    .unwrap()
            );
        };
        // As a version-1 ledger held them: the same use under both forms,
        // bare hex alone, and ids that are not content hashes.
        rec(&h1, 10.0);
        rec(&format!("sha256:{h1}"), 10.0);
        rec(&h2, 4.0);
        rec("prints:0123", 2.0);
        rec("batch-7/item-3", 1.0);
        reg.with_raw_connection(|c| c.pragma_update(None, "user_version", 1i64).unwrap());
        drop(reg);
        let reg = Registry::open(dir.path()).unwrap();
        let mut ids: Vec<(String, f64)> = reg.with_raw_connection(|c| {
            let mut st = c
                .prepare("SELECT submission_id, seconds FROM attributions")
                .unwrap();
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        });
        ids.sort_by(|a, b| a.0.cmp(&b.0));
        let want = vec![
            ("batch-7/item-3".to_owned(), 1.0),
            ("prints:0123".to_owned(), 2.0),
            (format!("sha256:{h1}"), 10.0),
            (format!("sha256:{}", h2.to_lowercase()), 4.0),
        ];
        assert_eq!(ids, want);
        let totals = reg.ledger_totals(None, None).unwrap();
        assert_eq!((totals[0].seconds, totals[0].submissions), (17.0, 4));
        // The ledger is append-only again, and the new form is idempotent.
        assert!(
            !reg.record_attribution(
                "a",
                10.0,
                &format!("sha256:{h1}"),
                "n",
                Scope::AiTraining,
                at
            )
            .unwrap()
        );
        let update =
            reg.with_raw_connection(|c| c.execute("UPDATE attributions SET seconds = 0", []));
        assert!(update.is_err());
    }

    #[test]
    fn invalid_attributions_write_nothing() {
        if crate::registry::test_support::sqlite_only("invalid_attributions_write_nothing") {
            return;
        }
        let (_dir, reg) = open_temp();
        reg.add_work(sample_work("a"), &[], "admin").unwrap();
        let at = datetime!(2026-01-05 0:00 UTC);
        let ok = NewAttribution {
            work_id: "a".into(),
            seconds_matched: 1.0,
            submission_id: "s1".into(),
            submission_name: "n".into(),
            purpose: Scope::AiTraining,
            at,
        };
        let bad = NewAttribution {
            seconds_matched: -1.0,
            submission_id: "s2".into(),
            ..ok.clone()
        };
        assert!(reg.record_attributions(&[ok.clone(), bad]).is_err());
        assert!(
            reg.ledger_totals(None, None).unwrap().is_empty(),
            "all or nothing"
        );
        assert_eq!(reg.record_attributions(&[ok]).unwrap(), 1);
        reg.with_raw_connection(|c| assert!(c.execute("DELETE FROM attributions", []).is_err()));
    }

    #[test]
    fn exports() {
        let (_dir, reg) = open_temp();
        reg.add_work(sample_work("a"), &[], "admin").unwrap();
        reg.record_attribution(
            "a",
            12.3456,
            "s1",
            "n",
            Scope::AiTraining,
            datetime!(2026-01-05 0:00 UTC),
        )
        .unwrap();
        let totals = reg.ledger_totals(None, None).unwrap();
        let period = (Some(datetime!(2026-01-01 0:00 UTC)), None);
        let mut csv_out = Vec::new();
        write_totals(&totals, LedgerFormat::Csv, period, &mut csv_out).unwrap();
        assert_eq!(
            String::from_utf8(csv_out).unwrap(),
            "period_from,period_until,work_id,title,isrc,iswc,holder,holder_isni,seconds,attributions,submissions,first_at,last_at\n\
             2026-01-01T00:00:00Z,,a,Title of a,USS1Z9900001,,Example Music Ltd,,12.346,1,1,2026-01-05T00:00:00Z,2026-01-05T00:00:00Z\n"
        );
        let mut jsonl = Vec::new();
        write_totals(&totals, LedgerFormat::Jsonl, period, &mut jsonl).unwrap();
        let back: LedgerTotal = serde_json::from_slice(jsonl.strip_suffix(b"\n").unwrap()).unwrap();
        assert_eq!(back, totals[0]);
    }

    #[test]
    fn empty_period_is_a_header_only_csv_and_empty_jsonl() {
        let (_dir, reg) = open_temp();
        let totals = reg.ledger_totals(None, None).unwrap();
        let mut csv_out = Vec::new();
        write_totals(&totals, LedgerFormat::Csv, (None, None), &mut csv_out).unwrap();
        assert_eq!(
            String::from_utf8(csv_out).unwrap(),
            format!("{}\n", CSV_HEADER.join(","))
        );
        let mut jsonl = Vec::new();
        write_totals(&totals, LedgerFormat::Jsonl, (None, None), &mut jsonl).unwrap();
        assert!(jsonl.is_empty());
    }
}

//! The per-item report: one row per item, JSON lines (default) or CSV.
//!
//! The report is append-only and doubles as the scan's checkpoint: rows are
//! written in input order and made durable (flush + fsync) in batches, so after
//! an interruption its complete rows are exactly the items finished, in order.
//! [`recover`] finds that prefix and cuts off a partially written last row.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::error::ScanError;
use super::item::ItemKind;
use crate::policy::Decision;
use crate::registry::EffectiveStatus;

/// Rows between durable commits of the report.
const COMMIT_ROWS: usize = 256;
/// Longest time between durable commits.
const COMMIT_INTERVAL: Duration = Duration::from_secs(2);
/// Separator of the reasons in a CSV cell.
const CSV_REASON_SEPARATOR: &str = " | ";
/// CSV columns, in order.
pub const CSV_COLUMNS: [&str; 11] = [
    "item",
    "source",
    "kind",
    "position",
    "duration_s",
    "content_sha256",
    "verdict",
    "works",
    "matches",
    "reasons",
    "error",
];

/// Report format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReportFormat {
    #[default]
    Jsonl,
    Csv,
}

/// The verdict of one item: a policy decision, or `error` when it could not be
/// screened (fail closed: never allowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RowVerdict {
    Allow,
    Flag,
    Block,
    Error,
}

impl RowVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            RowVerdict::Allow => "allow",
            RowVerdict::Flag => "flag",
            RowVerdict::Block => "block",
            RowVerdict::Error => "error",
        }
    }
}

impl From<Decision> for RowVerdict {
    fn from(d: Decision) -> Self {
        match d {
            Decision::Allow => RowVerdict::Allow,
            Decision::Flag => RowVerdict::Flag,
            Decision::Block => RowVerdict::Block,
        }
    }
}

/// A registered work found in an item, with its consent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportMatch {
    pub work_id: String,
    pub title: Option<String>,
    pub isrc: Option<String>,
    pub holder: Option<String>,
    /// Consent in force for the purpose.
    pub consent: EffectiveStatus,
    /// Id of the consent record that decided it.
    pub consent_record: Option<i64>,
    /// What this match alone calls for.
    pub outcome: Decision,
    pub confident: bool,
    pub score: f64,
    /// Where the work sits in the item (seconds).
    pub start_s: f64,
    pub end_s: f64,
    /// Which part of the registered recording (seconds).
    pub ref_start_s: f64,
    pub ref_end_s: f64,
    pub speed_factor: f64,
    pub pitch_factor: f64,
    /// The sample member it was found in (WebDataset samples with several
    /// audio members).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
}

/// The verdict on one audio part of an item (the item's only part, or one
/// audio member of a WebDataset sample), made locally or by a server.
#[derive(Debug, Clone, PartialEq)]
pub struct PartVerdict {
    pub decision: RowVerdict,
    pub reasons: Vec<String>,
    pub matches: Vec<ReportMatch>,
}

/// One report row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportRow {
    /// Path, WebDataset key or parquet row label.
    pub item: String,
    /// The input it came from.
    pub source: String,
    pub kind: ItemKind,
    /// Manifest line (1-based), shard sample or parquet row (0-based).
    pub position: Option<u64>,
    pub duration_s: Option<f64>,
    pub content_sha256: Option<String>,
    pub verdict: RowVerdict,
    pub matches: Vec<ReportMatch>,
    pub reasons: Vec<String>,
    pub error: Option<String>,
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

impl ReportRow {
    fn csv_fields(&self) -> Result<Vec<String>, serde_json::Error> {
        let works: Vec<String> = self
            .matches
            .iter()
            .map(|m| {
                format!(
                    "{}@{:.1}-{:.1}({}, {})",
                    m.work_id,
                    m.start_s,
                    m.end_s,
                    m.consent.as_str(),
                    m.outcome
                )
            })
            .collect();
        Ok(vec![
            self.item.clone(),
            self.source.clone(),
            serde_json::to_value(self.kind)?
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            self.position.map(|p| p.to_string()).unwrap_or_default(),
            self.duration_s
                .map(|d| format!("{d:.3}"))
                .unwrap_or_default(),
            self.content_sha256.clone().unwrap_or_default(),
            self.verdict.as_str().to_owned(),
            works.join("; "),
            serde_json::to_string(&self.matches)?,
            self.reasons.join(CSV_REASON_SEPARATOR),
            self.error.clone().unwrap_or_default(),
        ]
        .into_iter()
        .map(|f| one_line(&f))
        .collect())
    }

    fn from_csv(record: &csv::StringRecord) -> Option<ReportRow> {
        if record.len() != CSV_COLUMNS.len() {
            return None;
        }
        let opt = |i: usize| record.get(i).filter(|s| !s.is_empty()).map(str::to_owned);
        let quoted = |i: usize| format!("\"{}\"", record.get(i).unwrap_or_default());
        Some(ReportRow {
            item: record.get(0)?.to_owned(),
            source: record.get(1)?.to_owned(),
            kind: serde_json::from_str(&quoted(2)).ok()?,
            position: match opt(3) {
                Some(p) => Some(p.parse().ok()?),
                None => None,
            },
            duration_s: match opt(4) {
                Some(d) => Some(d.parse().ok()?),
                None => None,
            },
            content_sha256: opt(5),
            verdict: serde_json::from_str(&quoted(6)).ok()?,
            matches: serde_json::from_str(record.get(8)?).ok()?,
            reasons: opt(9)
                .map(|r| r.split(CSV_REASON_SEPARATOR).map(str::to_owned).collect())
                .unwrap_or_default(),
            error: opt(10),
        })
    }
}

fn csv_line(fields: &[String]) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    w.write_record(fields)?;
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}

fn csv_header_line() -> Vec<u8> {
    let fields: Vec<String> = CSV_COLUMNS.iter().map(|c| (*c).to_owned()).collect();
    csv_line(&fields).unwrap_or_default()
}

/// Parses one complete report line.
fn parse_line(line: &[u8], format: ReportFormat) -> Option<ReportRow> {
    match format {
        ReportFormat::Jsonl => serde_json::from_slice(line).ok(),
        ReportFormat::Csv => {
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(false)
                .from_reader(line);
            let mut record = csv::StringRecord::new();
            match reader.read_record(&mut record) {
                Ok(true) => ReportRow::from_csv(&record),
                _ => None,
            }
        }
    }
}

/// Appends rows and makes them durable in batches.
pub struct ReportWriter {
    path: PathBuf,
    out: BufWriter<File>,
    format: ReportFormat,
    since_commit: usize,
    last_commit: Instant,
}

impl ReportWriter {
    /// Creates (truncating) or, with `append`, continues a report.
    pub fn open(path: &Path, format: ReportFormat, append: bool) -> Result<Self, ScanError> {
        let err = |e| ScanError::io(path, e);
        let file = OpenOptions::new()
            .create(true)
            .append(append)
            .write(true)
            .truncate(!append)
            .open(path)
            .map_err(err)?;
        let empty = file.metadata().map_err(err)?.len() == 0;
        let mut writer = Self {
            path: path.to_path_buf(),
            out: BufWriter::new(file),
            format,
            since_commit: 0,
            last_commit: Instant::now(),
        };
        if empty && format == ReportFormat::Csv {
            writer.out.write_all(&csv_header_line()).map_err(err)?;
            writer.commit()?;
        }
        Ok(writer)
    }

    pub fn write(&mut self, row: &ReportRow) -> Result<(), ScanError> {
        let line = match self.format {
            ReportFormat::Jsonl => {
                let mut line = serde_json::to_vec(row).map_err(io::Error::from);
                if let Ok(l) = &mut line {
                    l.push(b'\n');
                }
                line
            }
            ReportFormat::Csv => row
                .csv_fields()
                .map_err(io::Error::from)
                .and_then(|f| csv_line(&f).map_err(io::Error::other)),
        };
        line.and_then(|l| self.out.write_all(&l))
            .map_err(|e| ScanError::io(&self.path, e))?;
        self.since_commit += 1;
        if self.since_commit >= COMMIT_ROWS || self.last_commit.elapsed() >= COMMIT_INTERVAL {
            self.commit()?;
        }
        Ok(())
    }

    /// Flushes and fsyncs everything written so far.
    pub fn commit(&mut self) -> Result<(), ScanError> {
        self.out
            .flush()
            .and_then(|()| self.out.get_ref().sync_data())
            .map_err(|e| ScanError::io(&self.path, e))?;
        self.since_commit = 0;
        self.last_commit = Instant::now();
        Ok(())
    }
}

/// Finds the complete rows of an interrupted report and truncates anything
/// after them. Returns the number of rows kept.
pub fn recover(path: &Path, format: ReportFormat) -> Result<u64, ScanError> {
    let err = |e| ScanError::io(path, e);
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(err(e)),
    };
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    let mut good_len = 0u64;
    let mut rows = 0u64;
    let mut first = true;
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).map_err(err)?;
        if n == 0 || line.last() != Some(&b'\n') {
            break;
        }
        let ok = if first && format == ReportFormat::Csv {
            line == csv_header_line()
        } else {
            parse_line(&line, format).is_some()
        };
        if !ok {
            break;
        }
        if !(first && format == ReportFormat::Csv) {
            rows += 1;
        }
        first = false;
        good_len += n as u64;
    }
    let file = OpenOptions::new().write(true).open(path).map_err(err)?;
    if file.metadata().map_err(err)?.len() != good_len {
        file.set_len(good_len).map_err(err)?;
        file.sync_all().map_err(err)?;
    }
    Ok(rows)
}

/// Reads back the first rows of a (recovered) report, in order.
pub struct RowReader {
    path: PathBuf,
    reader: BufReader<File>,
    format: ReportFormat,
    remaining: u64,
    skipped_header: bool,
}

impl RowReader {
    pub fn open(path: &Path, format: ReportFormat, rows: u64) -> Result<Self, ScanError> {
        let file = File::open(path).map_err(|e| ScanError::io(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            reader: BufReader::new(file),
            format,
            remaining: rows,
            skipped_header: format != ReportFormat::Csv,
        })
    }

    /// Rows still to be read.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    pub fn next_row(&mut self) -> Result<Option<ReportRow>, ScanError> {
        if self.remaining == 0 {
            return Ok(None);
        }
        let mut line = Vec::new();
        if !self.skipped_header {
            self.reader
                .read_until(b'\n', &mut line)
                .map_err(|e| ScanError::io(&self.path, e))?;
            self.skipped_header = true;
            line.clear();
        }
        self.reader
            .read_until(b'\n', &mut line)
            .map_err(|e| ScanError::io(&self.path, e))?;
        let row = parse_line(&line, self.format).ok_or_else(|| ScanError::Resume {
            reason: format!("{}: a report row cannot be read back", self.path.display()),
        })?;
        self.remaining -= 1;
        Ok(Some(row))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(i: u64, verdict: RowVerdict) -> ReportRow {
        ReportRow {
            item: format!("dir/file {i}, \"quoted\".wav"),
            source: "dir".into(),
            kind: ItemKind::File,
            position: Some(i),
            duration_s: Some(1.5),
            content_sha256: Some("ab".repeat(32)),
            verdict,
            matches: vec![ReportMatch {
                work_id: "w".into(),
                title: Some("T".into()),
                isrc: None,
                holder: Some("H".into()),
                consent: EffectiveStatus::OptedOut,
                consent_record: Some(3),
                outcome: Decision::Block,
                confident: true,
                score: 40.0,
                start_s: 0.0,
                end_s: 1.0,
                ref_start_s: 2.0,
                ref_end_s: 3.0,
                speed_factor: 1.0,
                pitch_factor: 1.0,
                member: None,
            }],
            reasons: vec!["one".into(), "two\nlines".into()],
            error: None,
        }
    }

    #[test]
    fn rows_survive_a_torn_tail_in_both_formats() {
        let dir = tempfile::tempdir().unwrap();
        for format in [ReportFormat::Jsonl, ReportFormat::Csv] {
            let path = dir.path().join(format!("r-{format:?}"));
            let mut w = ReportWriter::open(&path, format, false).unwrap();
            for i in 0..3 {
                w.write(&row(i, RowVerdict::Block)).unwrap();
            }
            w.commit().unwrap();
            drop(w);
            // A torn fourth row.
            let mut f = OpenOptions::new().append(true).open(&path).unwrap();
            f.write_all(b"{\"item\": \"half").unwrap();
            drop(f);
            assert_eq!(recover(&path, format).unwrap(), 3);
            let mut reader = RowReader::open(&path, format, 3).unwrap();
            let first = reader.next_row().unwrap().unwrap();
            assert_eq!(first.item, row(0, RowVerdict::Block).item);
            assert_eq!(first.matches, row(0, RowVerdict::Block).matches);
            assert_eq!(first.verdict, RowVerdict::Block);
            let mut w = ReportWriter::open(&path, format, true).unwrap();
            w.write(&row(3, RowVerdict::Allow)).unwrap();
            w.commit().unwrap();
            assert_eq!(recover(&path, format).unwrap(), 4);
        }
    }
}

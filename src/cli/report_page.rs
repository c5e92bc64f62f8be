//! `earmark report`: the self-contained HTML page of a scan report, and the
//! `--html` pages of `scan` and `identify --purpose`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use time::OffsetDateTime;

use super::scan::FormatArg;
use super::{EXIT_CLEAN, Screened, Screening};
use crate::data_dir::DataDir;
use crate::html::{self, PageInfo};
use crate::policy::POLICY_VERSION;
use crate::scan::report::{self, ReportFormat, ReportRow};
use crate::scan::summary::{ScanSummary, SummaryBuilder, SummaryInput, SummaryMeta};

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Report written by `earmark scan` (JSON lines or CSV).
    pub report: PathBuf,
    /// The scan's summary (`scan --summary`): totals as the scan counted them,
    /// throughput, index generation and policy. Without it the totals are
    /// counted from the report.
    #[arg(long, value_name = "FILE")]
    pub summary: Option<PathBuf>,
    /// Report format (default: from the report's extension, else jsonl).
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,
    /// Write the self-contained HTML page here.
    #[arg(long, value_name = "OUT")]
    pub html: PathBuf,
}

/// The report format from `--format` or the file's extension.
pub(super) fn report_format(format: Option<FormatArg>, report: &Path) -> ReportFormat {
    match format {
        Some(FormatArg::Csv) => ReportFormat::Csv,
        Some(FormatArg::Jsonl) => ReportFormat::Jsonl,
        None if report
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv")) =>
        {
            ReportFormat::Csv
        }
        None => ReportFormat::Jsonl,
    }
}

/// `earmark report REPORT --html OUT`.
pub fn run_report(args: &ReportArgs) -> Result<u8> {
    let rows = report::read_all(&args.report, report_format(args.format, &args.report))?;
    let summary = match &args.summary {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the summary {}", path.display()))?;
            let summary: ScanSummary = serde_json::from_str(&text)
                .with_context(|| format!("{} is not an earmark scan summary", path.display()))?;
            Some(summary)
        }
        None => None,
    };
    write_scan_page(&args.html, &args.report, &rows, summary.as_ref())?;
    wrote(&args.html, rows.len());
    Ok(EXIT_CLEAN)
}

/// The page of a scan: its report rows and, when known, its summary.
pub(super) fn write_scan_page(
    out: &Path,
    report_path: &Path,
    rows: &[ReportRow],
    summary: Option<&ScanSummary>,
) -> Result<()> {
    let title = match summary {
        Some(s) if !s.inputs.is_empty() => {
            let inputs: Vec<&str> = s.inputs.iter().map(|i| i.path.as_str()).collect();
            format!("scan of {}", inputs.join(", "))
        }
        _ => format!("scan report {}", report_path.display()),
    };
    let info = PageInfo {
        title,
        source: report_path.display().to_string(),
        generated_at: OffsetDateTime::now_utc(),
    };
    html::write(out, rows, summary, &info)?;
    Ok(())
}

/// The line telling where the page is.
pub(super) fn wrote(out: &Path, items: usize) {
    eprintln!(
        "earmark: wrote the HTML report {} ({items} items)",
        out.display()
    );
}

/// `scan --html OUT`: the page of the finished scan.
pub(super) fn write_after_scan(
    out: &Path,
    report_path: &Path,
    format: ReportFormat,
    summary: &ScanSummary,
    quiet: bool,
) -> Result<()> {
    let rows = report::read_all(report_path, format).context("reading back the report")?;
    write_scan_page(out, report_path, &rows, Some(summary))?;
    if !quiet {
        wrote(out, rows.len());
    }
    Ok(())
}

/// When an `identify` run started (its page reports the wall time).
pub struct Started {
    at: OffsetDateTime,
    clock: Instant,
}

impl Started {
    pub fn now() -> Self {
        Self {
            at: OffsetDateTime::now_utc(),
            clock: Instant::now(),
        }
    }
}

/// `identify --purpose … --html OUT`: the screened files as report rows, with
/// a summary of the run, on the same page as a scan.
pub(super) fn write_identify_page(
    data: &DataDir,
    out: &Path,
    files: &[PathBuf],
    results: &[Screened],
    screening: &Screening,
    started: &Started,
) -> Result<()> {
    let rows: Vec<ReportRow> = results
        .iter()
        .map(|s| {
            html::row_from_verdict(
                &s.report.file,
                s.report.duration_s,
                s.verdict.as_ref(),
                s.report.error.as_deref(),
            )
        })
        .collect();
    let mut builder = SummaryBuilder::default();
    for row in &rows {
        builder.add(row, false);
    }
    let index = data.open_index()?;
    let first_verdict = results.iter().find_map(|s| s.verdict.as_ref());
    let meta = SummaryMeta {
        purpose: screening.purpose.to_string(),
        inputs: files
            .iter()
            .map(|f| SummaryInput {
                path: f.display().to_string(),
                kind: "audio file".into(),
            })
            .collect(),
        report: out.display().to_string(),
        started_at: started.at,
        finished_at: OffsetDateTime::now_utc(),
        consent_evaluated_at: first_verdict.map_or(started.at, |v| v.evaluated_at),
        policy_version: POLICY_VERSION.to_owned(),
        policy: screening.config.clone(),
        index_generation: first_verdict.map_or(index.generation(), |v| v.index_generation),
        registered_works: index.live_work_count(),
        remote: None,
    };
    let summary = builder.finish(meta, started.clock.elapsed(), rayon::current_num_threads());
    let info = PageInfo {
        title: match files {
            [one] => format!("identify {}", one.display()),
            many => format!("identify of {} files", many.len()),
        },
        source: "earmark identify".into(),
        generated_at: OffsetDateTime::now_utc(),
    };
    html::write(out, &rows, Some(&summary), &info)?;
    Ok(())
}

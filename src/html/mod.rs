//! # HTML report: one self-contained page of a screening
//!
//! [`render`] turns the rows of a scan report ([`ReportRow`]) and, when known,
//! the run summary ([`ScanSummary`]) into one HTML document that needs nothing
//! else: styles, script and the bar chart are inline and a
//! Content-Security-Policy forbids every network request, so the file can be
//! attached to a ticket and read offline.
//!
//! ## What the page holds
//! * **Totals** (static HTML, readable without JavaScript): items and hours per
//!   verdict with an inline SVG bar chart whose bars all carry text labels,
//!   errors by item kind, throughput, index generation, policy and engine
//!   versions. Without a summary the totals are counted from the rows and the
//!   facts only a run knows (throughput, generation) are marked as not given.
//! * **Works** (static HTML): the blocked and the flagged works with title,
//!   holder, consent and the consent records that decided, items and seconds.
//! * **Items** (needs JavaScript): the rows are embedded once as compact JSON
//!   ([`data`]) and the script (`page.js`) filters them by verdict, searches
//!   path and work, sorts by any column and renders one page of rows at a time,
//!   so 100,000 rows never become 100,000 DOM rows. Each item with matches
//!   opens a timeline: the submission as a bar with the matched ranges
//!   coloured, patterned and labelled by verdict, and for every match the
//!   reference range with speed and pitch factors, score and the reasons.
//!
//! ## Escaping
//! Static markup is built with `maud`, which escapes every interpolated
//! string. The item data sits in a `<script type="application/json">` element
//! with `<`, `>`, `&`, U+2028 and U+2029 written as JSON `\u` escapes
//! ([`data::json_for_script`]), so no data can close the element; the script
//! reads it with `JSON.parse` and writes it into the page with `textContent`
//! and attributes only, never as markup. The policy allows only the page's own
//! script and style (by SHA-256), so even injected markup could not run code.
//!
//! [`row_from_verdict`] adapts what `earmark identify --purpose` produces to
//! report rows, so identify gets the same page.

mod data;
mod markup;
mod view;

use std::io::Write as _;
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use crate::policy::Verdict;
use crate::scan::item::ItemKind;
use crate::scan::report::{ReportMatch, ReportRow, RowVerdict};
use crate::scan::summary::ScanSummary;

/// Mode of a new page before the umask.
#[cfg(unix)]
const PAGE_MODE: u32 = 0o666;

/// Why a page could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum HtmlError {
    #[error("encoding the item data of the page: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("writing the HTML report {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What a page is about, shown in its heading.
#[derive(Debug, Clone)]
pub struct PageInfo {
    /// Heading, e.g. "Scan of /data/corpus".
    pub title: String,
    /// Where the rows came from (the report file, or the identified files).
    pub source: String,
    pub generated_at: OffsetDateTime,
}

/// Renders the page (see the module docs).
pub fn render(
    rows: &[ReportRow],
    summary: Option<&ScanSummary>,
    info: &PageInfo,
) -> Result<String, HtmlError> {
    let view = view::PageView::new(rows, summary);
    let items_json = data::json_for_script(&data::ItemData::new(rows))?;
    Ok(markup::page(&view, info, &items_json))
}

/// Renders the page and writes it atomically (a temporary file in the same
/// folder, synced, then renamed over `path`).
pub fn write(
    path: &Path,
    rows: &[ReportRow],
    summary: Option<&ScanSummary>,
    info: &PageInfo,
) -> Result<(), HtmlError> {
    let html = render(rows, summary, info)?;
    let err = |source| HtmlError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix(".earmark-html-").suffix(".tmp");
    // A page to share: readable as any new file is (the umask applies), not
    // private as a temporary file.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(PAGE_MODE));
    let mut tmp = builder.tempfile_in(dir).map_err(err)?;
    tmp.write_all(html.as_bytes()).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

/// The report row of one file screened by `identify --purpose`: its verdict,
/// or an `error` row (never allowed) when it could not be screened.
pub fn row_from_verdict(
    file: &str,
    duration_s: Option<f64>,
    verdict: Option<&Verdict>,
    error: Option<&str>,
) -> ReportRow {
    let content_sha256 =
        verdict.and_then(|v| v.submission_id.strip_prefix("sha256:").map(str::to_owned));
    let mut row = ReportRow {
        item: file.to_owned(),
        source: file.to_owned(),
        kind: ItemKind::File,
        position: None,
        duration_s,
        content_sha256,
        verdict: RowVerdict::Error,
        matches: Vec::new(),
        reasons: Vec::new(),
        error: None,
    };
    match (verdict, error) {
        (Some(v), None) => {
            row.verdict = v.decision.into();
            row.reasons = v.reasons.clone();
            row.matches = v
                .evidence
                .iter()
                .map(|e| ReportMatch::from_evidence(e, None))
                .collect();
        }
        (_, Some(reason)) => {
            row.reasons = vec![format!("not screened: {reason}")];
            row.error = Some(reason.to_owned());
        }
        (None, None) => {
            let reason = "no verdict was made";
            row.reasons = vec![format!("not screened: {reason}")];
            row.error = Some(reason.to_owned());
        }
    }
    row
}

#[cfg(test)]
mod tests;

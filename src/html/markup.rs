//! The page's markup. Every interpolated string goes through `maud`, which
//! escapes it; only the page's own CSS, script and the pre-escaped item JSON
//! are inserted verbatim.

use std::borrow::Cow;

use base64::Engine as _;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use sha2::Digest as _;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::PageInfo;
use super::view::{PageView, WorkView};
use crate::policy::UnknownConsent;
use crate::scan::summary::ScanSummary;

/// The page's style sheet.
pub(super) const PAGE_CSS: &str = include_str!("page.css");
/// The page's script (reads the item data, draws the item table).
pub(super) const PAGE_JS: &str = include_str!("page.js");

/// Width of the bar chart's drawing area (SVG user units).
const CHART_WIDTH: f64 = 420.0;
/// Height of one bar and of the label line above it.
const CHART_BAR_HEIGHT: f64 = 18.0;
const CHART_LABEL_HEIGHT: f64 = 20.0;
/// Gap under each bar.
const CHART_GAP: f64 = 10.0;
/// A non-zero count is drawn at least this wide, so it stays visible.
const CHART_MIN_BAR: f64 = 3.0;
const PERCENT: f64 = 100.0;
const MINUTES_PER_HOUR: f64 = 60.0;

/// `'sha256-…'` source expression of an inline element's text.
fn csp_hash(text: &str) -> String {
    let digest = sha2::Sha256::digest(text.as_bytes());
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// The Content-Security-Policy of the page: nothing may be fetched, only the
/// page's own style and script run.
pub(super) fn content_security_policy() -> String {
    format!(
        "default-src 'none'; style-src {}; script-src {}; img-src data:; \
         base-uri 'none'; form-action 'none'",
        csp_hash(PAGE_CSS),
        csp_hash(PAGE_JS)
    )
}

/// Whether `c` is invisible or reorders text: controls, zero-width and
/// bidirectional marks, line and paragraph separators, the byte-order mark.
/// The same set as `INVISIBLE` in `page.js`.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}' | '\u{200b}'..='\u{200f}'
        | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

/// `s` with every invisible character shown as `[U+XXXX]`, so a name reads
/// as it is (maud escapes the result).
pub(super) fn visible(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_invisible) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if is_invisible(c) {
            out.push_str(&format!("[U+{:04X}]", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `12,345`.
pub(super) fn fmt_count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Hours as the summary rounds them (three decimals), with minutes for short
/// corpora.
pub(super) fn fmt_hours(h: f64) -> String {
    if h < 1.0 {
        format!("{h:.3} h ({:.1} min)", h * MINUTES_PER_HOUR)
    } else {
        format!("{h:.3} h")
    }
}

/// `1 item`, `12,345 items`.
fn items(n: u64) -> String {
    format!("{} item{}", fmt_count(n), if n == 1 { "" } else { "s" })
}

/// RFC 3339 to the second.
fn fmt_time(t: OffsetDateTime) -> String {
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

fn share(part: u64, whole: u64) -> String {
    if whole == 0 {
        "–".to_owned()
    } else {
        format!("{:.1} %", part as f64 * PERCENT / whole as f64)
    }
}

/// The whole document.
pub(super) fn page(view: &PageView, info: &PageInfo, items_json: &str) -> String {
    let subtitle = view
        .summary
        .as_ref()
        .map(|s| format!("Screened for {}", s.purpose));
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="Content-Security-Policy" content=(content_security_policy());
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                link rel="icon" href="data:,";
                title { "earmark report — " (visible(&info.title)) }
                style { (PreEscaped(PAGE_CSS)) }
            }
            body {
                a.skip href="#items" { "Skip to the items" }
                header {
                    h1 { "earmark report: " (visible(&info.title)) }
                    p.meta {
                        @if let Some(s) = &subtitle { (s) " · " }
                        "from " span.mono { (visible(&info.source)) }
                        " · page made " (fmt_time(info.generated_at))
                        " · earmark " (crate::ENGINE_VERSION)
                    }
                }
                main {
                    (totals(view))
                    (works(view))
                    (items_section(view))
                }
                script #items-data type="application/json" { (PreEscaped(items_json)) }
                script { (PreEscaped(PAGE_JS)) }
            }
        }
    }
    .into_string()
}

fn totals(view: &PageView) -> Markup {
    html! {
        section #totals aria-labelledby="totals-h" {
            h2 #totals-h { "Totals" }
            @if view.summary.is_none() {
                p.note { "No run summary was given: the totals are counted from the report rows; \
                    throughput, index generation and policy are not known." }
            }
            @if let Some(s) = &view.summary && s.items != view.rows {
                p.note.warn {
                    "The summary counts " (fmt_count(s.items)) " items but the report has "
                    (fmt_count(view.rows)) " rows: they may come from different runs."
                }
            }
            div.totals-grid {
                table.totals {
                    caption { "Items and audio per verdict" }
                    thead { tr { th scope="col" { "Verdict" } th scope="col" { "Items" }
                        th scope="col" { "Audio" } th scope="col" { "Share of items" } } }
                    tbody {
                        @for (name, label, t) in view.verdict_rows() {
                            tr {
                                th scope="row" { span class={ "badge b-" (name) } { (label) } }
                                td.num data-total={ (name) "-items" } { (fmt_count(t.items)) }
                                td.num data-total={ (name) "-hours" } { (fmt_hours(t.audio_hours)) }
                                td.num { (share(t.items, view.items)) }
                            }
                        }
                    }
                    tfoot { tr {
                        th scope="row" { "All items" }
                        td.num data-total="items" { (fmt_count(view.items)) }
                        td.num data-total="hours" { (fmt_hours(view.audio_hours)) }
                        td.num { (share(view.items, view.items)) }
                    } }
                }
                (chart(view))
            }
            h3 { "Not screened, by item kind" }
            @if view.errors_by_kind.is_empty() {
                p data-total="errors-none" { "Every item was screened." }
            } @else {
                table.errors {
                    caption.visually-hidden { "Items not screened, by item kind" }
                    thead { tr { th scope="col" { "Item kind" } th scope="col" { "Items" } } }
                    tbody {
                        @for (kind, n) in &view.errors_by_kind {
                            tr { th scope="row" { (visible(kind)) }
                                td.num data-error-kind=(kind) { (fmt_count(*n)) } }
                        }
                    }
                }
            }
            @if let Some(s) = &view.summary { (run_facts(s)) }
        }
    }
}

/// A horizontal bar chart of items per verdict; every bar has a text label
/// and a pattern besides its colour.
fn chart(view: &PageView) -> Markup {
    let rows = view.verdict_rows();
    let max = rows.iter().map(|(_, _, t)| t.items).max().unwrap_or(0);
    let step = CHART_LABEL_HEIGHT + CHART_BAR_HEIGHT + CHART_GAP;
    let height = step * rows.len() as f64;
    let width = |n: u64| {
        if n == 0 || max == 0 {
            0.0
        } else {
            (n as f64 / max as f64 * CHART_WIDTH).max(CHART_MIN_BAR)
        }
    };
    html! {
        figure.chart {
            svg #verdict-chart viewBox={ "0 0 " (CHART_WIDTH) " " (height) }
                role="img" aria-labelledby="chart-title chart-desc"
                preserveAspectRatio="xMinYMin meet" {
                title #chart-title { "Items per verdict" }
                desc #chart-desc {
                    @for (_, label, t) in rows { (label) ": " (items(t.items)) ". " }
                }
                defs {
                    pattern #p-block width="8" height="8" patternUnits="userSpaceOnUse"
                        patternTransform="rotate(45)" {
                        rect.c-block width="8" height="8" {}
                        rect.c-block-dark width="3" height="8" {}
                    }
                    pattern #p-flag width="8" height="8" patternUnits="userSpaceOnUse" {
                        rect.c-flag width="8" height="8" {}
                        circle.c-flag-dark cx="4" cy="4" r="1.6" {}
                    }
                    pattern #p-error width="8" height="8" patternUnits="userSpaceOnUse"
                        patternTransform="rotate(-45)" {
                        rect.c-error width="8" height="8" {}
                        rect.c-error-dark width="8" height="2" {}
                    }
                }
                @for (i, (name, label, t)) in rows.iter().enumerate() {
                    @let y = i as f64 * step;
                    g.bar data-verdict=(name) {
                        text.bar-label x="0" y=(y + CHART_LABEL_HEIGHT - 6.0) {
                            (label) ": " (items(t.items)) ", " (fmt_hours(t.audio_hours))
                        }
                        rect.bar-track x="0" y=(y + CHART_LABEL_HEIGHT)
                            width=(CHART_WIDTH) height=(CHART_BAR_HEIGHT) {}
                        rect class={ "bar-" (name) } x="0" y=(y + CHART_LABEL_HEIGHT)
                            width=(width(t.items)) height=(CHART_BAR_HEIGHT) {}
                    }
                }
            }
        }
    }
}

fn run_facts(s: &ScanSummary) -> Markup {
    let t = &s.throughput;
    let unknown = match s.policy.unknown_consent {
        UnknownConsent::Allow => "allowed",
        UnknownConsent::Flag => "flagged for review",
    };
    html! {
        details.run {
            summary {
                h3 { "The run" }
                " purpose " (s.purpose) ", index generation " (s.index_generation) ", "
                (s.policy_version) ", " (format!("{:.1}", t.items_per_s)) " items/s"
            }
        dl.facts {
            dt { "Purpose" } dd data-fact="purpose" { (s.purpose) }
            dt { "Inputs" } dd {
                @for (i, input) in s.inputs.iter().enumerate() {
                    @if i > 0 { br; }
                    span.mono { (visible(&input.path)) } " (" (input.kind) ")"
                }
            }
            dt { "Started – finished" } dd { (fmt_time(s.started_at)) " – " (fmt_time(s.finished_at)) }
            dt { "Consent evaluated at" } dd { (fmt_time(s.consent_evaluated_at)) }
            dt { "Index generation" } dd data-fact="index-generation" { (s.index_generation) }
            dt { "Registered works" } dd data-fact="registered-works" { (fmt_count(s.registered_works as u64)) }
            dt { "Policy version" } dd data-fact="policy-version" { (s.policy_version) }
            dt { "Policy" } dd {
                "works without consent on record: " (unknown) "; territory: "
                (s.policy.territory.as_ref().map_or("worldwide", |t| t.as_str()))
            }
            @if let Some(r) = &s.remote {
                dt { "Screened by" } dd {
                    span.mono { (r.url) } " (policy " (r.policy_version) ", index generation "
                    (r.index_generation) ", unknown consent " (r.unknown_consent) ")"
                }
            }
            dt { "Engine version" } dd { (s.engine_version) }
            dt { "Throughput" } dd data-fact="throughput" {
                (format!("{:.1}", t.items_per_s)) " items/s, "
                (format!("{:.2}", t.audio_hours_per_minute)) " audio-h/min, "
                (format!("{:.1}", t.realtime_factor)) "× real time ("
                (fmt_count(t.items_screened)) " items in " (format!("{:.1}", t.wall_s)) " s, "
                (t.jobs) " jobs)"
            }
            @if s.resumed_items > 0 {
                dt { "Resumed" } dd { (fmt_count(s.resumed_items)) " items from an interrupted run" }
            }
            dt { "Exit code" } dd { (s.exit_code) }
        }
        }
    }
}

fn works(view: &PageView) -> Markup {
    html! {
        section #works aria-labelledby="works-h" {
            h2 #works-h { "Works found" }
            (works_table("Blocked works", "blocked", "No work blocked an item.", &view.blocked_works))
            (works_table("Flagged works", "flagged", "No work made an item flagged.", &view.flagged_works))
        }
    }
}

fn works_table(heading: &str, id: &str, none: &str, works: &[WorkView]) -> Markup {
    html! {
        h3 #{ (id) "-works-h" } { (heading) }
        @if works.is_empty() {
            p data-works-empty=(id) { (none) }
        } @else {
            div.table-wrap {
                table.works #{ (id) "-works" } aria-labelledby={ (id) "-works-h" } {
                    thead { tr {
                        th scope="col" { "Title" } th scope="col" { "Work id" }
                        th scope="col" { "Holder" } th scope="col" { "Consent" }
                        th scope="col" { "Consent records" } th scope="col" { "Items" }
                        th scope="col" { "Seconds" }
                    } }
                    tbody {
                        @for w in works {
                            tr {
                                td data-label="Title" { (visible(w.total.title.as_deref().unwrap_or("(untitled)"))) }
                                td.mono data-label="Work id" { (visible(&w.total.work_id)) }
                                td data-label="Holder" { (visible(w.total.holder.as_deref().unwrap_or("(unknown)"))) }
                                td data-label="Consent" {
                                    (w.consent.iter().map(String::as_str).collect::<Vec<_>>().join(", "))
                                }
                                td data-label="Consent records" {
                                    @if w.records.is_empty() { "none on record" }
                                    @for (i, r) in w.records.iter().enumerate() {
                                        @if i > 0 { ", " }
                                        "#" (r)
                                    }
                                }
                                td.num data-label="Items" { (fmt_count(w.total.items)) }
                                td.num data-label="Seconds" { (format!("{:.1}", w.total.seconds)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn items_section(view: &PageView) -> Markup {
    const COLUMNS: [(&str, &str); 6] = [
        ("row", "#"),
        ("verdict", "Verdict"),
        ("item", "Item"),
        ("works", "Works"),
        ("duration", "Duration"),
        ("source", "Source"),
    ];
    html! {
        section #items aria-labelledby="items-h" {
            h2 #items-h { "Items (" (fmt_count(view.rows)) ")" }
            noscript {
                p.note { "The item table needs JavaScript. The totals and works above are complete \
                    without it, and the report file holds every row." }
            }
            div.controls #item-controls hidden {
                div.control {
                    label for="f-verdict" { "Verdict" }
                    select #f-verdict {
                        option value="" { "All verdicts" }
                        option value="block" { "Blocked" }
                        option value="flag" { "Flagged" }
                        option value="allow" { "Allowed" }
                        option value="error" { "Not screened" }
                    }
                }
                div.control.grow {
                    label for="f-search" { "Search path or work" }
                    input #f-search type="search" autocomplete="off" spellcheck="false"
                        placeholder="path, work id, title or holder";
                }
                div.control {
                    label for="f-page-size" { "Rows per page" }
                    select #f-page-size {
                        option value="50" { "50" }
                        option value="100" selected { "100" }
                        option value="500" { "500" }
                    }
                }
                div.control {
                    button #expand-all type="button" aria-pressed="false" {
                        "Open every timeline on this page"
                    }
                }
            }
            p #item-count aria-live="polite" hidden {}
            div.table-wrap #item-table-wrap hidden {
                table #item-table {
                    caption.visually-hidden { "Screened items; column headers sort" }
                    thead { tr {
                        @for (key, label) in COLUMNS {
                            th scope="col" aria-sort="none" data-col=(key) {
                                button.sort type="button" data-sort=(key) {
                                    (label) span.arrow aria-hidden="true" {}
                                }
                            }
                        }
                        th scope="col" { "Details" }
                    } }
                    tbody #item-rows {}
                }
            }
            nav.pager #item-pager aria-label="Item pages" hidden {
                button #page-prev type="button" { "Previous page" }
                span #page-info {}
                button #page-next type="button" { "Next page" }
            }
        }
    }
}

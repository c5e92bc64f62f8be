//! The item data embedded in the page: every report row in a compact,
//! positional JSON form that `page.js` reads (the field order below is its
//! contract), with repeated strings (sources, reasons, consent states) stored
//! once.
//!
//! The generated 100,000-row report of `scripts/report-bench.sh` (mostly
//! allowed items) encodes to 19 MB this way, against 43 MB of JSON lines.

use std::collections::HashMap;

use serde::Serialize;

use crate::scan::report::{ReportMatch, ReportRow, RowVerdict};
use crate::scan::summary::kind_name;

/// Version of this encoding; `page.js` refuses any other.
pub(super) const DATA_VERSION: u32 = 1;
/// Times are kept to the millisecond.
const TIME_RESOLUTION: f64 = 1000.0;
/// Speed and pitch factors to 1/10,000.
const FACTOR_RESOLUTION: f64 = 10_000.0;
/// Scores to 1/10.
const SCORE_RESOLUTION: f64 = 10.0;

fn rounded(x: f64, resolution: f64) -> f64 {
    (x * resolution).round() / resolution
}

/// Position of a string in [`ItemData::text`].
type TextRef = u32;

/// `[work_id, title, holder, isrc]`.
type WorkEntry<'a> = (&'a str, Option<&'a str>, Option<&'a str>, Option<&'a str>);

/// `[work, consent, consent_record, outcome, confident, score, start_s, end_s,
/// ref_start_s, ref_end_s, speed_factor, pitch_factor, member]`; `work` indexes
/// `works`, `consent` and `member` index `text`, `outcome` is 0 allow, 1 flag,
/// 2 block, `confident` 0 or 1.
type MatchEntry = (
    u32,
    TextRef,
    Option<i64>,
    u8,
    u8,
    f64,
    f64,
    f64,
    f64,
    f64,
    f64,
    f64,
    Option<TextRef>,
);

/// `[item, source, kind, position, duration_s, content_sha256, verdict,
/// matches, reasons, error]`; `source`, `kind` and each reason index `text`,
/// `verdict` is 0 allow, 1 flag, 2 block, 3 error.
type ItemEntry<'a> = (
    &'a str,
    TextRef,
    TextRef,
    Option<u64>,
    Option<f64>,
    Option<&'a str>,
    u8,
    Vec<MatchEntry>,
    Vec<TextRef>,
    Option<&'a str>,
);

/// The document in the page's `<script type="application/json">`.
#[derive(Serialize)]
pub(super) struct ItemData<'a> {
    v: u32,
    text: Vec<String>,
    works: Vec<WorkEntry<'a>>,
    items: Vec<ItemEntry<'a>>,
}

/// Verdict code shared with `page.js`.
pub(super) fn verdict_code(v: RowVerdict) -> u8 {
    match v {
        RowVerdict::Allow => 0,
        RowVerdict::Flag => 1,
        RowVerdict::Block => 2,
        RowVerdict::Error => 3,
    }
}

#[derive(Default)]
struct Interner {
    text: Vec<String>,
    index: HashMap<String, TextRef>,
}

impl Interner {
    fn get(&mut self, s: &str) -> TextRef {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.text.len() as TextRef;
        self.text.push(s.to_owned());
        self.index.insert(s.to_owned(), i);
        i
    }
}

impl<'a> ItemData<'a> {
    pub(super) fn new(rows: &'a [ReportRow]) -> Self {
        let mut text = Interner::default();
        let mut works: Vec<WorkEntry<'a>> = Vec::new();
        let mut work_index: HashMap<&'a str, u32> = HashMap::new();
        let mut work_ref = |m: &'a ReportMatch| -> u32 {
            *work_index.entry(m.work_id.as_str()).or_insert_with(|| {
                works.push((
                    m.work_id.as_str(),
                    m.title.as_deref(),
                    m.holder.as_deref(),
                    m.isrc.as_deref(),
                ));
                (works.len() - 1) as u32
            })
        };
        let items = rows
            .iter()
            .map(|row| {
                let matches = row
                    .matches
                    .iter()
                    .map(|m| {
                        (
                            work_ref(m),
                            text.get(m.consent.as_str()),
                            m.consent_record,
                            verdict_code(m.outcome.into()),
                            u8::from(m.confident),
                            rounded(m.score, SCORE_RESOLUTION),
                            rounded(m.start_s, TIME_RESOLUTION),
                            rounded(m.end_s, TIME_RESOLUTION),
                            rounded(m.ref_start_s, TIME_RESOLUTION),
                            rounded(m.ref_end_s, TIME_RESOLUTION),
                            rounded(m.speed_factor, FACTOR_RESOLUTION),
                            rounded(m.pitch_factor, FACTOR_RESOLUTION),
                            m.member.as_deref().map(|s| text.get(s)),
                        )
                    })
                    .collect();
                (
                    row.item.as_str(),
                    text.get(&row.source),
                    text.get(&kind_name(row.kind)),
                    row.position,
                    row.duration_s.map(|d| rounded(d, TIME_RESOLUTION)),
                    row.content_sha256.as_deref(),
                    verdict_code(row.verdict),
                    matches,
                    row.reasons.iter().map(|r| text.get(r)).collect(),
                    row.error.as_deref(),
                )
            })
            .collect();
        ItemData {
            v: DATA_VERSION,
            text: text.text,
            works,
            items,
        }
    }
}

/// `value` as JSON that can sit inside a `<script>` element: `<`, `>` and `&`
/// (which could close the element or open a comment) and the line separators
/// U+2028/U+2029 become `\u` escapes. They can only occur inside JSON
/// strings, where the escapes mean the same characters.
pub(super) fn json_for_script(value: &impl Serialize) -> Result<String, serde_json::Error> {
    let json = serde_json::to_string(value)?;
    let mut out = String::with_capacity(json.len() + json.len() / 64);
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    Ok(out)
}

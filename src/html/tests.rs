use super::*;
use crate::policy::Decision;
use crate::registry::EffectiveStatus;

/// Names that would run code, break attributes or confuse text direction if
/// they reached the page unescaped.
const HOSTILE_ITEM: &str =
    "dir/\"><script>window.pwned=1</script><!--\u{2028}\u{2029}\u{202e}evil'.wav";
const HOSTILE_TITLE: &str =
    "</script><script>alert(\"title\")</script><img src=x onerror=alert(1)>";
const HOSTILE_HOLDER: &str = "O'Brien & \"Sons\" <b>bold</b> \u{0}\u{7}\u{feff}";

fn hostile_match(outcome: Decision) -> ReportMatch {
    ReportMatch {
        work_id: "w-<script>".into(),
        title: Some(HOSTILE_TITLE.into()),
        isrc: None,
        holder: Some(HOSTILE_HOLDER.into()),
        consent: EffectiveStatus::OptedOut,
        consent_record: Some(7),
        outcome,
        confident: true,
        score: 42.0,
        start_s: 1.0,
        end_s: 9.5,
        ref_start_s: 3.0,
        ref_end_s: 11.5,
        speed_factor: 1.0,
        pitch_factor: 1.0,
        member: Some("a</script>.flac".into()),
    }
}

fn row(item: &str, verdict: RowVerdict, matches: Vec<ReportMatch>) -> ReportRow {
    ReportRow {
        item: item.into(),
        source: "src<&>".into(),
        kind: ItemKind::File,
        position: Some(3),
        duration_s: Some(12.0),
        content_sha256: None,
        verdict,
        matches,
        reasons: vec![format!("reason with </script> and {HOSTILE_TITLE}")],
        error: None,
    }
}

fn info() -> PageInfo {
    PageInfo {
        title: "scan of <script>alert(0)</script>".into(),
        source: "report\"'.jsonl".into(),
        generated_at: time::OffsetDateTime::UNIX_EPOCH,
    }
}

/// The text between `<script id="items-data" …>` and its `</script>`.
fn embedded_json(html: &str) -> &str {
    let open = html
        .find("<script id=\"items-data\" type=\"application/json\">")
        .expect("data element");
    let start = open + html[open..].find('>').unwrap() + 1;
    let end = start + html[start..].find("</script>").unwrap();
    &html[start..end]
}

#[test]
fn hostile_names_are_rendered_as_text() {
    let rows = vec![
        row(
            HOSTILE_ITEM,
            RowVerdict::Block,
            vec![hostile_match(Decision::Block)],
        ),
        row("plain.wav", RowVerdict::Allow, vec![]),
    ];
    let html = render(&rows, None, &info()).unwrap();

    // Only the page's own two script elements exist: the data and the code.
    let lower = html.to_lowercase();
    assert_eq!(lower.matches("<script").count(), 2, "script openings");
    assert_eq!(lower.matches("</script").count(), 2, "script closings");
    assert!(!lower.contains("<img"), "no element from the data");
    assert!(!lower.contains("<b>bold"), "no element from the data");
    assert!(!lower.contains("<!--"), "no comment opened by the data");

    // The static works table shows the hostile title and holder as text.
    assert!(html.contains(
        "&lt;/script&gt;&lt;script&gt;alert(&quot;title&quot;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;"
    ));
    assert!(html.contains(
        "O'Brien &amp; &quot;Sons&quot; &lt;b&gt;bold&lt;/b&gt; [U+0000][U+0007][U+FEFF]"
    ));
    assert!(html.contains("scan of &lt;script&gt;alert(0)&lt;/script&gt;"));

    // The embedded JSON has no raw character that could end the element or
    // a JavaScript line, and reads back to exactly the original strings.
    let json = embedded_json(&html);
    for c in ['<', '>', '&', '\u{2028}', '\u{2029}'] {
        assert!(!json.contains(c), "raw {c:?} in the embedded JSON");
    }
    let value: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(value["items"][0][0], HOSTILE_ITEM);
    assert_eq!(value["works"][0][0], "w-<script>");
    assert_eq!(value["works"][0][1], HOSTILE_TITLE);
    assert_eq!(value["works"][0][2], HOSTILE_HOLDER);
    let texts: Vec<&str> = value["text"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(texts.contains(&"a</script>.flac"));
    assert!(texts.contains(&"src<&>"));
}

#[test]
fn script_json_escapes_every_dangerous_character() {
    let value = serde_json::json!({ "s": "</script><!--&\u{2028}\u{2029}>" });
    let out = data::json_for_script(&value).unwrap();
    assert_eq!(
        out,
        r#"{"s":"\u003c/script\u003e\u003c!--\u0026\u2028\u2029\u003e"}"#
    );
    let back: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(back, value);
}

#[test]
fn page_assets_cannot_close_their_elements() {
    assert!(!markup::PAGE_JS.to_lowercase().contains("</script"));
    assert!(!markup::PAGE_JS.contains("<!--"));
    assert!(!markup::PAGE_CSS.to_lowercase().contains("</style"));
    // The script builds the page with textContent and attributes only.
    assert!(!markup::PAGE_JS.contains("innerHTML"));
    assert!(!markup::PAGE_JS.contains("outerHTML"));
    assert!(!markup::PAGE_JS.contains("insertAdjacentHTML"));
    assert!(!markup::PAGE_JS.contains("document.write"));
}

#[test]
fn totals_without_summary_are_counted_from_rows() {
    let rows = vec![
        row(
            "a.wav",
            RowVerdict::Block,
            vec![hostile_match(Decision::Block)],
        ),
        row(
            "b.wav",
            RowVerdict::Block,
            vec![hostile_match(Decision::Block)],
        ),
        row("c.wav", RowVerdict::Allow, vec![]),
    ];
    let view = view::PageView::new(&rows, None);
    assert_eq!(view.items, 3);
    assert_eq!(view.verdicts.block.items, 2);
    assert_eq!(view.verdicts.allow.items, 1);
    assert_eq!(view.blocked_works.len(), 1);
    assert_eq!(view.blocked_works[0].total.items, 2);
    assert_eq!(
        view.blocked_works[0].records.iter().collect::<Vec<_>>(),
        [&7]
    );
    let html = render(&rows, None, &info()).unwrap();
    assert!(html.contains("data-total=\"block-items\">2<"));
    assert!(html.contains("data-total=\"items\">3<"));
}

#[test]
fn invisible_characters_are_shown_by_code_point() {
    assert_eq!(markup::visible("plain/ä.wav"), "plain/ä.wav");
    assert_eq!(
        markup::visible("a\u{202e}vaw.exe\u{200b}\n"),
        "a[U+202E]vaw.exe[U+200B][U+000A]"
    );
}

#[test]
fn counts_have_thousands_separators() {
    assert_eq!(markup::fmt_count(0), "0");
    assert_eq!(markup::fmt_count(999), "999");
    assert_eq!(markup::fmt_count(1000), "1,000");
    assert_eq!(markup::fmt_count(100_000), "100,000");
    assert_eq!(markup::fmt_count(1_234_567), "1,234,567");
}

#[test]
fn an_unscreened_identify_file_is_an_error_row() {
    let r = row_from_verdict("x.wav", None, None, Some("cannot decode"));
    assert_eq!(r.verdict, RowVerdict::Error);
    assert_eq!(r.error.as_deref(), Some("cannot decode"));
    let r = row_from_verdict("x.wav", Some(1.0), None, None);
    assert_eq!(r.verdict, RowVerdict::Error);
}

#[test]
fn the_page_is_written_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.html");
    std::fs::write(&path, "old").unwrap();
    write(
        &path,
        &[row("a.wav", RowVerdict::Allow, vec![])],
        None,
        &info(),
    )
    .unwrap();
    let html = std::fs::read_to_string(&path).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["out.html"], "no temporary file left");
    // The page gets the mode any new file gets here (the umask applies), not
    // the private mode of a temporary file.
    let plain = dir.path().join("plain");
    std::fs::write(&plain, "x").unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions();
    assert_eq!(mode(&path), mode(&plain));
}

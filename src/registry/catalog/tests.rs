use super::*;

fn base() -> &'static Path {
    Path::new("/catalogs/acme")
}

const CSV: &str = "\
id,file,title,artists,isrc,iswc,holder,holder_isni,consent,scope,asserted_by,source,policy_ref
wesnoth-battle,audio/battle.ogg,Battle,Frank;Jeremy,US-S1Z-99-00001,T-034.524.680-1,Wesnoth Devs,0000 0001 2103 2683,opted-out,ai-training;ai-generation,,tdmrep,https://example.org/tdm
calm,calm.flac,Calm,,,,Calm Ltd,,,,,,
bad-isrc,x.wav,X,,US-S1Z-99-0001,,H,,,,,,
,y.wav,Y,,,,H,,,,,,
calm,dup.wav,Dup,,,,H,,,,,,
scoped,s.wav,S,,,,H,,,ai-training,,,
lic,l.wav,L,,,,H,,opted-in,,Agent Smith,contract,
";

#[test]
fn csv_rows_and_errors_with_line_numbers() {
    let rows = parse_csv(CSV.as_bytes(), base()).unwrap();
    assert_eq!(rows.len(), 7);
    let first = rows[0].as_ref().unwrap();
    assert_eq!(first.line, 2);
    assert_eq!(first.id.as_str(), "wesnoth-battle");
    assert_eq!(first.file, Path::new("/catalogs/acme/audio/battle.ogg"));
    assert_eq!(first.artists, vec!["Frank", "Jeremy"]);
    assert_eq!(first.isrc.as_ref().unwrap().as_str(), "USS1Z9900001");
    assert_eq!(
        first.holder_isni.as_ref().unwrap().as_str(),
        "0000000121032683"
    );
    let consent = first.consent.as_ref().unwrap();
    assert_eq!(consent.scopes, vec![Scope::AiTraining, Scope::AiGeneration]);
    assert_eq!(consent.source, ConsentSource::Tdmrep);

    let calm = rows[1].as_ref().unwrap();
    assert!(calm.consent.is_none() && calm.artists.is_empty() && calm.isrc.is_none());

    let errors: Vec<(usize, String)> = rows
        .iter()
        .filter_map(|r| r.as_ref().err())
        .map(|e| (e.line, e.reason.clone()))
        .collect();
    assert_eq!(errors.len(), 4, "{errors:?}");
    assert_eq!(errors[0].0, 4);
    assert!(
        errors[0]
            .1
            .contains("invalid ISRC 'US-S1Z-99-0001': must have 12"),
        "{}",
        errors[0].1
    );
    assert_eq!(errors[1], (5, "'id' is required".to_owned()));
    assert_eq!(
        errors[2],
        (6, "duplicate id, first used on line 3".to_owned())
    );
    assert_eq!(errors[3].0, 7);
    assert!(
        errors[3]
            .1
            .contains("'scope' is given but 'consent' is empty")
    );
    let err = rows[3].as_ref().unwrap_err();
    assert_eq!(err.to_string(), "line 5: 'id' is required");
    assert_eq!(
        rows[2].as_ref().unwrap_err().id.as_deref(),
        Some("bad-isrc")
    );

    let lic = rows[6].as_ref().unwrap();
    let consent = lic.consent.as_ref().unwrap();
    assert_eq!(
        (consent.status, consent.scopes.as_slice()),
        (ConsentStatus::OptedIn, &[Scope::AiTraining][..])
    );
}

#[test]
fn rows_become_works_and_consents() {
    let rows = parse_csv(CSV.as_bytes(), base()).unwrap();
    let row = rows[0].as_ref().unwrap();
    let now = time::macros::datetime!(2026-02-01 12:00 UTC);
    let consents = row.consents(now);
    assert_eq!(consents.len(), 2);
    assert!(consents.iter().all(|c| c.status == ConsentStatus::OptedOut
        && c.asserted_by == "Wesnoth Devs"
        && c.effective_from == now
        && c.policy_ref.as_deref() == Some("https://example.org/tdm")));
    let lic = rows[6].as_ref().unwrap();
    assert_eq!(lic.consents(now)[0].asserted_by, "Agent Smith");
    let reference = ReferenceAudio {
        duration_s: 1.0,
        fingerprint_config: "fp".into(),
        audio_sha256: "00".repeat(32),
        source_file: "battle.ogg".into(),
    };
    let work = row.new_work(reference);
    assert_eq!(
        (work.title.as_str(), work.holder.as_str()),
        ("Battle", "Wesnoth Devs")
    );
    assert!(rows[1].as_ref().unwrap().consents(now).is_empty());
}

#[test]
fn csv_header_problems_are_file_level() {
    let err = parse_csv("id,file,title,holdr\n".as_bytes(), base()).unwrap_err();
    assert!(err.to_string().contains("unknown column 'holdr'"), "{err}");
    let err = parse_csv("id,file,title\n".as_bytes(), base()).unwrap_err();
    assert!(err.to_string().contains("missing required column 'holder'"));
}

#[test]
fn csv_ragged_row_is_a_row_error() {
    let text = "id,file,title,holder\na,a.wav,A,H\nb,b.wav\nc,c.wav,C,H\n";
    let rows = parse_csv(text.as_bytes(), base()).unwrap();
    assert_eq!(rows.len(), 3);
    assert!(rows[0].is_ok() && rows[2].is_ok());
    assert_eq!(rows[1].as_ref().unwrap_err().line, 3);
}

#[test]
fn jsonl_rows() {
    let text = r#"{"id":"a","file":"a.wav","title":"A","artists":["X","Y"],"holder":"H","consent":"constrained","scope":["ai-training"],"terms":"credit required","territory":"de","effective_from":"2026-01-01"}

{"id":"b","file":"/abs/b.wav","title":"B","artists":"X; Y","holder":"H","scope":"ai-training"}
not json
{"id":"c","file":"c.wav","title":"C","holder":"H","colour":"blue"}
[1,2]
{"id":"d","file":"d.wav","title":"D","holder":"H","consent":"maybe"}
"#;
    let rows = parse_jsonl(text.as_bytes(), base()).unwrap();
    assert_eq!(rows.len(), 6);
    let a = rows[0].as_ref().unwrap();
    let c = a.consent.as_ref().unwrap();
    assert_eq!(c.terms.as_deref(), Some("credit required"));
    assert_eq!(c.territory.as_ref().unwrap().as_str(), "DE");
    assert_eq!(
        c.effective_from,
        Some(time::macros::datetime!(2026-01-01 0:00 UTC))
    );
    assert_eq!(a.artists, vec!["X", "Y"]);
    let lines: Vec<usize> = rows
        .iter()
        .filter_map(|r| r.as_ref().err())
        .map(|e| e.line)
        .collect();
    assert_eq!(lines, vec![3, 4, 5, 6, 7]);
    let b = rows[1].as_ref().unwrap_err();
    assert!(b.reason.contains("'scope' is given"), "{}", b.reason);
    assert!(
        rows[3]
            .as_ref()
            .unwrap_err()
            .reason
            .contains("unknown field `colour`")
    );
    assert!(
        rows[5]
            .as_ref()
            .unwrap_err()
            .reason
            .contains("unknown consent status 'maybe'")
    );
}

#[test]
fn read_catalog_picks_the_format_by_extension() {
    let dir = tempfile::tempdir().unwrap();
    let csv_path = dir.path().join("catalog.csv");
    std::fs::write(&csv_path, "id,file,title,holder\na,a.wav,A,H\n").unwrap();
    let rows = read_catalog(&csv_path).unwrap();
    assert_eq!(rows[0].as_ref().unwrap().file, dir.path().join("a.wav"));
    let jsonl_path = dir.path().join("catalog.jsonl");
    std::fs::write(
        &jsonl_path,
        r#"{"id":"a","file":"a.wav","title":"A","holder":"H"}"#,
    )
    .unwrap();
    assert_eq!(read_catalog(&jsonl_path).unwrap().len(), 1);
    let txt = dir.path().join("catalog.txt");
    std::fs::write(&txt, "").unwrap();
    assert!(matches!(
        read_catalog(&txt),
        Err(CatalogError::UnknownFormat { .. })
    ));
    assert!(matches!(
        read_catalog(&dir.path().join("missing.csv")),
        Err(CatalogError::Read { .. })
    ));
}

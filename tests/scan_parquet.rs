//! `earmark scan` over a Hugging Face style parquet file (audio column
//! `struct<bytes, path>`), with the filtered parquet read back with arrow.

mod scan_common;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{ArrayRef, BinaryArray, RecordBatch, StringArray, StructArray};
use arrow_schema::{DataType, Field, Fields, Schema};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::properties::WriterProperties;

use scan_common::*;

const HF_METADATA: &str = r#"{"info": {"features": {"audio": {"_type": "Audio"}, "text": {"_type": "Value", "dtype": "string"}}}}"#;

fn audio_fields() -> Fields {
    Fields::from(vec![
        Field::new("bytes", DataType::Binary, true),
        Field::new("path", DataType::Utf8, true),
    ])
}

fn write_dataset(path: &Path) {
    let rows: Vec<(Option<Vec<u8>>, Option<String>)> = vec![
        (
            Some(std::fs::read(audio("submissions/excerpt-mp3.mp3")).unwrap()),
            Some("excerpt-mp3.mp3".into()),
        ),
        (
            Some(std::fs::read(audio("submissions/unrelated.ogg")).unwrap()),
            Some("unrelated.ogg".into()),
        ),
        // Bytes null: read from the path.
        (
            None,
            Some(audio("submissions/speech.ogg").display().to_string()),
        ),
        // Corrupt bytes.
        (
            Some(std::fs::read(audio("formats/bad/random.mp3")).unwrap()),
            Some("random.mp3".into()),
        ),
        // Neither bytes nor path.
        (None, None),
        (
            Some(std::fs::read(audio("submissions/pitched.ogg")).unwrap()),
            Some("pitched.ogg".into()),
        ),
    ];
    let bytes: BinaryArray = rows.iter().map(|r| r.0.as_deref()).collect();
    let paths: StringArray = rows.iter().map(|r| r.1.as_deref()).collect();
    let audio = StructArray::new(
        audio_fields(),
        vec![Arc::new(bytes) as ArrayRef, Arc::new(paths) as ArrayRef],
        None,
    );
    let text: StringArray = (0..rows.len()).map(|i| Some(format!("r{i}"))).collect();
    let schema = Arc::new(
        Schema::new(vec![
            Field::new("audio", DataType::Struct(audio_fields()), true),
            Field::new("text", DataType::Utf8, true),
        ])
        .with_metadata(HashMap::from([(
            "huggingface".to_owned(),
            HF_METADATA.to_owned(),
        )])),
    );
    let batch =
        RecordBatch::try_new(schema.clone(), vec![Arc::new(audio), Arc::new(text)]).unwrap();
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(4))
        .build();
    let mut writer =
        ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, Some(props)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

/// The `text` column and schema metadata of a parquet file, read with arrow.
fn read_back(path: &Path) -> (Vec<String>, Option<String>) {
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap()).unwrap();
    let metadata = builder.schema().metadata().get("huggingface").cloned();
    let mut texts = Vec::new();
    for batch in builder.build().unwrap() {
        let batch = batch.unwrap();
        let audio = batch.column(0).as_struct();
        assert!(audio.column_by_name("bytes").is_some());
        texts.extend(
            batch
                .column(1)
                .as_string::<i32>()
                .iter()
                .map(|t| t.unwrap().to_owned()),
        );
    }
    (texts, metadata)
}

#[test]
fn parquet_rows_are_screened_and_filtered() {
    let tmp = scratch("parquet");
    let input = tmp.path().join("train-00000-of-00001.parquet");
    write_dataset(&input);
    let report = tmp.path().join("report.jsonl");
    let allowed = tmp.path().join("allowed.parquet");
    let blocked = tmp.path().join("blocked.parquet");
    let code = run_scan(&[
        input.as_os_str(),
        OsStr::new("--report"),
        report.as_os_str(),
        OsStr::new("--allowed"),
        allowed.as_os_str(),
        OsStr::new("--blocked"),
        blocked.as_os_str(),
    ]);
    assert_eq!(code, 3);
    let rows = read_report(&report);
    let got: Vec<&str> = rows
        .iter()
        .map(|r| r["verdict"].as_str().unwrap())
        .collect();
    assert_eq!(got, ["block", "allow", "allow", "error", "error", "flag"]);
    assert_eq!(rows[0]["item"], "excerpt-mp3.mp3");
    assert_eq!(rows[4]["item"], "row 4");
    assert_eq!(rows[4]["position"], 4);
    assert_eq!(rows[0]["kind"], "parquet-row");

    let (texts, metadata) = read_back(&allowed);
    assert_eq!(texts, ["r1", "r2"]);
    assert_eq!(
        metadata.as_deref(),
        Some(HF_METADATA),
        "Hugging Face metadata kept"
    );
    let (texts, _) = read_back(&blocked);
    assert_eq!(texts, ["r0"]);
}

//! Hugging Face `datasets` parquet files: one item per row, the audio taken
//! from a column of type `struct<bytes: binary, path: string>` (the `Audio`
//! feature). When `bytes` is null the `path` is read from disk, relative to the
//! parquet file. Rows are read in small record batches, so memory stays bounded.

use std::fs::File;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{Array, StructArray};
use arrow_schema::{ArrowError, DataType, Fields};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::{Emit, InputKind, InputOptions, base_dir, parquet_footer, resolve_relative};
use crate::scan::error::ScanError;
use crate::scan::item::{Carry, Event, InputLayout, Item, ItemKind, Payload};

/// Rows per record batch (each holds its rows' audio in memory).
pub const BATCH_ROWS: usize = 32;

fn is_binary(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView
    )
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// True for the `Audio` feature's storage type.
fn is_audio_struct(t: &DataType) -> bool {
    let DataType::Struct(fields) = t else {
        return false;
    };
    let has = |name: &str, ok: fn(&DataType) -> bool| {
        find_field(fields, name).is_some_and(|f| ok(f.data_type()))
    };
    has("bytes", is_binary) && has("path", is_string)
}

fn find_field<'a>(fields: &'a Fields, name: &str) -> Option<&'a arrow_schema::FieldRef> {
    fields.iter().find(|f| f.name() == name)
}

/// Runs a call into the parquet reader, turning a panic into an error: the
/// parquet crate asserts on some malformed files (a column chunk with a
/// negative offset, say) instead of returning an error, and one bad file
/// must not bring the scan down.
fn guarded<T>(call: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(AssertUnwindSafe(call)).map_err(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        format!("the parquet reader failed on malformed data: {message}")
    })
}

fn open_builder(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>, ScanError> {
    let mut file = File::open(path).map_err(|e| ScanError::input(path, e.to_string()))?;
    parquet_footer::check(&mut file)
        .map_err(|e| ScanError::input(path, format!("not a readable parquet file: {e}")))?;
    guarded(|| ParquetRecordBatchReaderBuilder::try_new(file))
        .and_then(|built| built.map_err(|e| e.to_string()))
        .map_err(|e| ScanError::input(path, format!("not a readable parquet file: {e}")))
}

/// Finds the audio column.
pub fn detect(path: &Path, options: &InputOptions) -> Result<InputKind, ScanError> {
    let builder = open_builder(path)?;
    let schema = builder.schema();
    let audio_column = match &options.audio_column {
        Some(name) => {
            let (i, field) = schema.column_with_name(name).ok_or_else(|| {
                ScanError::input(path, format!("no column named '{name}'"))
            })?;
            if !is_audio_struct(field.data_type()) {
                return Err(ScanError::input(
                    path,
                    format!(
                        "column '{name}' is {}, not an audio struct<bytes, path>",
                        field.data_type()
                    ),
                ));
            }
            i
        }
        None => schema
            .fields()
            .iter()
            .position(|f| is_audio_struct(f.data_type()))
            .ok_or_else(|| {
                ScanError::input(
                    path,
                    "no audio column (struct<bytes: binary, path: string>); name it with --audio-column",
                )
            })?,
    };
    Ok(InputKind::Parquet { audio_column })
}

/// Binary value of row `i` of a binary-like array.
fn binary_at(array: &dyn Array, i: usize) -> Option<&[u8]> {
    if array.is_null(i) {
        return None;
    }
    if let Some(a) = array.as_binary_opt::<i32>() {
        Some(a.value(i))
    } else if let Some(a) = array.as_binary_opt::<i64>() {
        Some(a.value(i))
    } else {
        array.as_binary_view_opt().map(|a| a.value(i))
    }
}

/// String value of row `i` of a string-like array.
fn string_at(array: &dyn Array, i: usize) -> Option<&str> {
    if array.is_null(i) {
        return None;
    }
    if let Some(a) = array.as_string_opt::<i32>() {
        Some(a.value(i))
    } else if let Some(a) = array.as_string_opt::<i64>() {
        Some(a.value(i))
    } else {
        array.as_string_view_opt().map(|a| a.value(i))
    }
}

fn row_payload(
    audio: &StructArray,
    row: usize,
    base: &Path,
    max_bytes: u64,
) -> (Option<String>, Payload) {
    if audio.is_null(row) {
        return (None, Payload::Failed("the audio cell is null".into()));
    }
    let name = audio
        .column_by_name("path")
        .and_then(|a| string_at(a.as_ref(), row))
        .filter(|p| !p.is_empty())
        .map(str::to_owned);
    let bytes = audio
        .column_by_name("bytes")
        .and_then(|a| binary_at(a.as_ref(), row))
        .filter(|b| !b.is_empty());
    let payload = match (bytes, &name) {
        (Some(bytes), _) if bytes.len() as u64 > max_bytes => Payload::Failed(format!(
            "audio of {} bytes exceeds the in-memory limit of {max_bytes}",
            bytes.len()
        )),
        (Some(bytes), _) => Payload::Bytes {
            name: name.clone().unwrap_or_else(|| format!("row {row}")),
            data: bytes.to_vec(),
        },
        (None, Some(p)) if p.contains("://") => {
            Payload::Failed(format!("audio bytes are null and '{p}' is remote"))
        }
        (None, Some(p)) => Payload::File(resolve_relative(base, p)),
        (None, None) => Payload::Failed("the audio has neither bytes nor a path".into()),
    };
    (name, payload)
}

/// Emits one item per row.
pub fn emit_parquet(
    input: usize,
    path: &Path,
    audio_column: usize,
    options: &InputOptions,
    emit: &mut Emit<'_>,
) -> Result<(), ScanError> {
    let builder = open_builder(path)?;
    let schema = builder.schema().clone();
    emit(Event::InputStart {
        input,
        layout: InputLayout::Parquet {
            schema: schema.clone(),
        },
    })?;
    let source = path.display().to_string();
    let base = base_dir(path);
    let mut reader = guarded(|| builder.with_batch_size(BATCH_ROWS).build())
        .and_then(|built| built.map_err(|e| e.to_string()))
        .map_err(|e| ScanError::input(path, e))?;
    let mut row_no = 0u64;
    for batch_no in 0u64.. {
        let Some(batch) = guarded(|| reader.next())
            .unwrap_or_else(|panic| Some(Err(ArrowError::ExternalError(panic.into()))))
        else {
            break;
        };
        let batch = match batch {
            Ok(batch) => Arc::new(batch),
            Err(e) => {
                emit(Event::Item(Item {
                    input,
                    id: format!("row {row_no}"),
                    source: source.clone(),
                    kind: ItemKind::ParquetRow,
                    position: Some(row_no),
                    payload: Payload::Failed(format!(
                        "parquet unreadable from here on ({e}); later rows were not screened"
                    )),
                    carry: Carry::None,
                }))?;
                return emit(Event::InputEnd {
                    input,
                    complete: false,
                });
            }
        };
        let audio = batch.column(audio_column).as_struct_opt().cloned();
        for row in 0..batch.num_rows() {
            let (name, payload) = match &audio {
                Some(audio) => row_payload(audio, row, &base, options.max_member_bytes),
                None => (None, Payload::Failed("audio column is not a struct".into())),
            };
            emit(Event::Item(Item {
                input,
                id: name.unwrap_or_else(|| format!("row {row_no}")),
                source: source.clone(),
                kind: ItemKind::ParquetRow,
                position: Some(row_no),
                payload,
                carry: Carry::ParquetRow {
                    batch: batch.clone(),
                    batch_no,
                    row,
                },
            }))?;
            row_no += 1;
        }
    }
    emit(Event::InputEnd {
        input,
        complete: true,
    })
}

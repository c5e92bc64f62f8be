//! JSONL and CSV manifests (NeMo, Lhotse-style lists, plain path lists),
//! optionally gzip- or zstd-compressed. Relative paths resolve against the
//! manifest's directory. A row that cannot be parsed, has no path, or names a
//! file that cannot be decoded is an `error` item; a manifest that cannot be
//! read to the end is reported and its filtered copies are discarded.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use super::{DEFAULT_PATH_FIELDS, Emit, InputKind, InputOptions, base_dir, resolve_relative};
use crate::scan::compress::open_decompressed;
use crate::scan::error::ScanError;
use crate::scan::item::{Carry, Event, InputLayout, Item, ItemKind, Payload};

/// Longest manifest line accepted (bytes).
const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

fn open_lines(path: &Path) -> Result<BufReader<Box<dyn std::io::Read + Send>>, ScanError> {
    open_decompressed(path)
        .map(BufReader::new)
        .map_err(|e| ScanError::input(path, e.to_string()))
}

/// Picks the path field from the first JSON object of the manifest.
pub fn detect_jsonl(path: &Path, options: &InputOptions) -> Result<InputKind, ScanError> {
    let mut reader = open_lines(path)?;
    let mut line = String::new();
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_line(&mut line)
            .map_err(|e| ScanError::input(path, format!("cannot read: {e}")))?;
        if line.len() > MAX_LINE_BYTES {
            return Err(ScanError::input(
                path,
                format!("first line longer than {MAX_LINE_BYTES} bytes"),
            ));
        }
        if n == 0 {
            // An empty manifest: nothing to screen, any field name will do.
            let field = options.path_field.clone().unwrap_or_else(|| "path".into());
            return Ok(InputKind::Jsonl { path_field: field });
        }
        if !line.trim().is_empty() {
            break;
        }
    }
    let value: serde_json::Value = serde_json::from_str(line.trim())
        .map_err(|e| ScanError::input(path, format!("first line is not a JSON object ({e})")))?;
    let object = value
        .as_object()
        .ok_or_else(|| ScanError::input(path, "first line is not a JSON object"))?;
    let field = pick_field(path, options, |name| object.contains_key(name))?;
    Ok(InputKind::Jsonl { path_field: field })
}

/// The byte stream under the csv reader: fails once one record runs past
/// [`MAX_LINE_BYTES`] (the csv reader holds a whole record in memory, and a
/// quoted field that never closes would otherwise grow it without bound), and
/// numbers lines as the csv reader ends records (`\n`, `\r\n` or a lone
/// `\r`; the csv reader's own line count sees only `\n`, so every record of
/// a file with classic Mac line ends would be "line 1").
struct CsvSource<R> {
    inner: R,
    /// Bytes read so far.
    read: u64,
    /// Byte offset where the record being read starts (set by the caller).
    record_start: u64,
    /// Line ends read but not yet passed by a record start: offset and
    /// length (2 for `\r\n`).
    line_ends: VecDeque<(u64, u64)>,
    /// Line ends before the front of `line_ends`.
    lines_passed: u64,
    /// The last byte read was `\r` (a following `\n` ends the same line).
    after_cr: bool,
}

impl<R> CsvSource<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            read: 0,
            record_start: 0,
            line_ends: VecDeque::new(),
            lines_passed: 0,
            after_cr: false,
        }
    }

    /// Marks the start of the next record; returns its 1-based line. The
    /// csv reader skips blank lines and may report a record as starting
    /// where they start: line ends at the start are skipped here too.
    fn start_record(&mut self, byte: u64) -> u64 {
        self.record_start = byte;
        let mut at = byte;
        while let Some(&(end, len)) = self.line_ends.front() {
            match end.cmp(&at) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => at += len,
                std::cmp::Ordering::Greater => break,
            }
            self.line_ends.pop_front();
            self.lines_passed += 1;
        }
        self.lines_passed + 1
    }
}

impl<R: Read> Read for CsvSource<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.read.saturating_sub(self.record_start) > MAX_LINE_BYTES as u64 {
            return Err(std::io::Error::other(format!(
                "the record starting at byte {} is longer than {MAX_LINE_BYTES} bytes",
                self.record_start
            )));
        }
        let n = self.inner.read(buf)?;
        for (i, &b) in buf[..n].iter().enumerate() {
            if b == b'\n' && self.after_cr {
                if let Some(last) = self.line_ends.back_mut() {
                    last.1 = 2;
                }
            } else if b == b'\r' || b == b'\n' {
                self.line_ends.push_back((self.read + i as u64, 1));
            }
            self.after_cr = b == b'\r';
        }
        self.read += n as u64;
        Ok(n)
    }
}

type CsvReader = csv::Reader<CsvSource<BufReader<Box<dyn Read + Send>>>>;

/// Opens a CSV manifest with its records bounded and its lines counted.
fn open_csv(path: &Path, delimiter: u8) -> Result<CsvReader, ScanError> {
    Ok(csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .from_reader(CsvSource::new(open_lines(path)?)))
}

/// Picks the path column from the CSV header.
pub fn detect_csv(
    path: &Path,
    delimiter: u8,
    options: &InputOptions,
) -> Result<InputKind, ScanError> {
    let mut reader = open_csv(path, delimiter)?;
    let header = reader
        .headers()
        .map_err(|e| ScanError::input(path, format!("cannot read the CSV header: {e}")))?
        .clone();
    let field = pick_field(path, options, |name| {
        header.iter().any(|h| h.trim() == name)
    })?;
    let path_column = header
        .iter()
        .position(|h| h.trim() == field)
        .ok_or_else(|| ScanError::input(path, "path column vanished"))?;
    Ok(InputKind::Csv {
        delimiter,
        path_column,
    })
}

fn pick_field(
    path: &Path,
    options: &InputOptions,
    has: impl Fn(&str) -> bool,
) -> Result<String, ScanError> {
    match &options.path_field {
        Some(field) if has(field) => Ok(field.clone()),
        Some(field) => Err(ScanError::input(
            path,
            format!("no '{field}' field in the first row"),
        )),
        None => DEFAULT_PATH_FIELDS
            .iter()
            .find(|f| has(f))
            .map(|f| (*f).to_owned())
            .ok_or_else(|| {
                ScanError::input(
                    path,
                    format!(
                        "no path field in the first row (tried {}); name it with --path-field",
                        DEFAULT_PATH_FIELDS.join(", ")
                    ),
                )
            }),
    }
}

fn row_item(
    input: usize,
    source: &str,
    line_no: u64,
    resolved: Result<std::path::PathBuf, String>,
    carry: impl FnOnce(&std::path::Path) -> Carry,
) -> Item {
    match resolved {
        Ok(resolved) => Item {
            input,
            id: resolved.display().to_string(),
            source: source.to_owned(),
            kind: ItemKind::ManifestRow,
            position: Some(line_no),
            carry: carry(&resolved),
            payload: Payload::File(resolved),
        },
        Err(reason) => Item {
            input,
            id: format!("line {line_no}"),
            source: source.to_owned(),
            kind: ItemKind::ManifestRow,
            position: Some(line_no),
            payload: Payload::Failed(reason),
            carry: Carry::None,
        },
    }
}

fn check_path_value(value: &str) -> Result<&str, String> {
    if value.trim().is_empty() {
        Err("the path is empty".into())
    } else if value.contains("://") {
        Err(format!("remote path '{value}' is not supported"))
    } else {
        Ok(value)
    }
}

/// Emits one item per non-blank line.
pub fn emit_jsonl(
    input: usize,
    path: &Path,
    path_field: &str,
    emit: &mut Emit<'_>,
) -> Result<(), ScanError> {
    emit(Event::InputStart {
        input,
        layout: InputLayout::Jsonl {
            path_field: path_field.to_owned(),
        },
    })?;
    let source = path.display().to_string();
    let base = base_dir(path);
    let mut reader = open_lines(path)?;
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    loop {
        buf.clear();
        let read = (&mut reader)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut buf);
        let n = match read {
            Ok(n) => n,
            Err(e) => return fail_input(input, &source, line_no + 1, &e.to_string(), emit),
        };
        if n == 0 {
            break;
        }
        line_no += 1;
        if buf.len() > MAX_LINE_BYTES {
            return fail_input(input, &source, line_no, "line too long", emit);
        }
        while matches!(buf.last(), Some(b'\n' | b'\r')) {
            buf.pop();
        }
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let line = String::from_utf8_lossy(&buf).into_owned();
        let resolved = std::str::from_utf8(&buf)
            .map_err(|_| "line is not UTF-8".to_owned())
            .and_then(|text| {
                serde_json::from_str::<serde_json::Value>(text)
                    .map_err(|e| format!("invalid JSON: {e}"))
            })
            .and_then(|value| match value.get(path_field) {
                Some(serde_json::Value::String(p)) => {
                    check_path_value(p).map(|p| resolve_relative(&base, p))
                }
                Some(_) => Err(format!("field '{path_field}' is not a string")),
                None => Err(format!("no '{path_field}' field")),
            });
        let item = row_item(input, &source, line_no, resolved, |resolved| {
            Carry::JsonlRow {
                line,
                resolved: resolved.to_path_buf(),
            }
        });
        emit(Event::Item(item))?;
    }
    emit(Event::InputEnd {
        input,
        complete: true,
    })
}

/// Emits one item per CSV record.
pub fn emit_csv(
    input: usize,
    path: &Path,
    delimiter: u8,
    path_column: usize,
    emit: &mut Emit<'_>,
) -> Result<(), ScanError> {
    let source = path.display().to_string();
    let base = base_dir(path);
    let mut reader = open_csv(path, delimiter)?;
    let header = reader
        .headers()
        .map_err(|e| ScanError::input(path, format!("cannot read the CSV header: {e}")))?
        .clone();
    emit(Event::InputStart {
        input,
        layout: InputLayout::Csv {
            header,
            path_column,
            delimiter,
        },
    })?;
    let mut record = csv::StringRecord::new();
    loop {
        let next = reader.position().byte();
        let mut line_no = reader.get_mut().start_record(next);
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                // The record may start after blank lines the reader skipped.
                if let Some(start) = record.position() {
                    line_no = reader.get_mut().start_record(start.byte());
                }
                let resolved = match record.get(path_column) {
                    Some(value) => check_path_value(value).map(|v| resolve_relative(&base, v)),
                    None => Err(format!("record has no column {}", path_column + 1)),
                };
                let item = row_item(input, &source, line_no, resolved, |resolved| {
                    Carry::CsvRow {
                        record: record.clone(),
                        resolved: resolved.to_path_buf(),
                    }
                });
                emit(Event::Item(item))?;
            }
            Err(e) if matches!(e.kind(), csv::ErrorKind::Io(_)) => {
                return fail_input(input, &source, line_no, &e.to_string(), emit);
            }
            Err(e) => {
                let item = row_item(input, &source, line_no, Err(e.to_string()), |_| Carry::None);
                emit(Event::Item(item))?;
            }
        }
    }
    emit(Event::InputEnd {
        input,
        complete: true,
    })
}

/// The manifest cannot be read on: report it and discard its filtered copies.
fn fail_input(
    input: usize,
    source: &str,
    line_no: u64,
    reason: &str,
    emit: &mut Emit<'_>,
) -> Result<(), ScanError> {
    emit(Event::Item(Item {
        input,
        id: format!("line {line_no}"),
        source: source.to_owned(),
        kind: ItemKind::ManifestRow,
        position: Some(line_no),
        payload: Payload::Failed(format!(
            "manifest unreadable from here on ({reason}); later rows were not screened"
        )),
        carry: Carry::None,
    }))?;
    emit(Event::InputEnd {
        input,
        complete: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A quoted CSV field that never closes, or a first JSONL line without
    /// an end, is refused once it passes the record limit instead of being
    /// held in memory whole.
    #[test]
    fn records_and_first_lines_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let huge = vec![b'x'; MAX_LINE_BYTES + 1024];
        let csv_path = dir.path().join("m.csv");
        let mut csv = b"path\n\"".to_vec();
        csv.extend_from_slice(&huge);
        std::fs::write(&csv_path, &csv).unwrap();
        let mut events = Vec::new();
        emit_csv(0, &csv_path, b',', 0, &mut |e| {
            events.push(e);
            Ok(())
        })
        .unwrap();
        let failed = events.iter().any(|e| {
            matches!(e, Event::Item(Item { payload: Payload::Failed(reason), .. })
                if reason.contains("longer than"))
        });
        assert!(failed, "{events:?}");
        assert!(matches!(
            events.last(),
            Some(Event::InputEnd {
                complete: false,
                ..
            })
        ));

        // Classic Mac line ends: each record on its own line.
        std::fs::write(&csv_path, b"path\ra.wav\r\rb.wav\r\nc.wav\n").unwrap();
        let mut lines = Vec::new();
        emit_csv(0, &csv_path, b',', 0, &mut |e| {
            if let Event::Item(item) = e {
                lines.push(item.position);
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(lines, [Some(2), Some(4), Some(5)]);

        let jsonl_path = dir.path().join("m.jsonl");
        std::fs::write(&jsonl_path, &huge).unwrap();
        let err = detect_jsonl(&jsonl_path, &InputOptions::default()).unwrap_err();
        assert!(err.to_string().contains("first line longer than"), "{err}");
    }
}

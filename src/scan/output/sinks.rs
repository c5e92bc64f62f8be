//! Filtered copies of manifests and folders.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::{Sink, partial_path, publish, with_suffix};
use crate::scan::compress::{CompressedWriter, Compression, lower_name, strip_compression};
use crate::scan::error::ScanError;
use crate::scan::input::base_dir;
use crate::scan::item::{Carry, InputLayout, Item, Payload};

/// Canonical directory of a path's parent (for comparing base directories).
fn canonical_parent(path: &Path) -> Option<PathBuf> {
    std::fs::canonicalize(base_dir(path)).ok()
}

fn absolute_string(path: &Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

/// A JSON object read with its keys in order and values untouched.
struct OrderedObject(Vec<(String, Box<RawValue>)>);

impl<'de> serde::Deserialize<'de> for OrderedObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OrderedObject;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedObject, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, Box<RawValue>>()? {
                    entries.push(entry);
                }
                Ok(OrderedObject(entries))
            }
        }
        d.deserialize_map(V)
    }
}

/// `line` with `field` set to the string `value`, other keys kept in order.
fn replace_json_field(line: &str, field: &str, value: &str) -> Option<String> {
    let object: OrderedObject = serde_json::from_str(line).ok()?;
    let mut out = String::from("{");
    for (i, (key, raw)) in object.0.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(key).ok()?);
        out.push(':');
        if key == field {
            out.push_str(&serde_json::to_string(value).ok()?);
        } else {
            out.push_str(raw.get());
        }
    }
    out.push('}');
    Some(out)
}

enum ManifestFormat {
    Jsonl {
        path_field: String,
    },
    Csv {
        writer: Box<csv::Writer<CompressedWriter>>,
        path_column: usize,
    },
}

/// A manifest holding the selected rows, verbatim unless relative paths must
/// be made absolute because the copy lives in another directory.
pub struct ManifestSink {
    target: PathBuf,
    partial: PathBuf,
    format: ManifestFormat,
    jsonl_out: Option<CompressedWriter>,
    /// Rewrite relative paths (the copy's directory differs from the input's).
    rewrite: bool,
}

impl ManifestSink {
    pub fn create(target: &Path, input: &Path, layout: &InputLayout) -> Result<Self, ScanError> {
        let partial = partial_path(target);
        let compression = Compression::from_name(target);
        let out = CompressedWriter::create(&partial, compression)
            .map_err(|e| ScanError::io(&partial, e))?;
        let rewrite = canonical_parent(input) != canonical_parent(target);
        let (format, jsonl_out) = match layout {
            InputLayout::Jsonl { path_field } => (
                ManifestFormat::Jsonl {
                    path_field: path_field.clone(),
                },
                Some(out),
            ),
            InputLayout::Csv {
                header,
                path_column,
                delimiter,
            } => {
                let mut writer = csv::WriterBuilder::new()
                    .delimiter(*delimiter)
                    .flexible(true)
                    .from_writer(out);
                writer
                    .write_record(header)
                    .map_err(|e| ScanError::io(&partial, e.into()))?;
                (
                    ManifestFormat::Csv {
                        writer: Box::new(writer),
                        path_column: *path_column,
                    },
                    None,
                )
            }
            _ => {
                return Err(ScanError::Fatal {
                    reason: "manifest copy of a non-manifest input".into(),
                });
            }
        };
        Ok(Self {
            target: target.to_path_buf(),
            partial,
            format,
            jsonl_out,
            rewrite,
        })
    }
}

impl Sink for ManifestSink {
    fn write(&mut self, item: &Item) -> Result<(), ScanError> {
        let partial = &self.partial;
        let io_err = |e: std::io::Error| ScanError::io(partial, e);
        match (&mut self.format, &item.carry) {
            (ManifestFormat::Jsonl { path_field }, Carry::JsonlRow { line, resolved }) => {
                let relative = serde_json::from_str::<serde_json::Value>(line)
                    .ok()
                    .and_then(|v| v.get(path_field.as_str())?.as_str().map(str::to_owned))
                    .is_some_and(|p| Path::new(&p).is_relative());
                let text = if self.rewrite && relative {
                    replace_json_field(line, path_field, &absolute_string(resolved))
                        .unwrap_or_else(|| line.clone())
                } else {
                    line.clone()
                };
                if let Some(out) = &mut self.jsonl_out {
                    out.write_all(text.as_bytes()).map_err(io_err)?;
                    out.write_all(b"\n").map_err(io_err)?;
                }
            }
            (
                ManifestFormat::Csv {
                    writer,
                    path_column,
                },
                Carry::CsvRow { record, resolved },
            ) => {
                let relative = record
                    .get(*path_column)
                    .is_some_and(|p| Path::new(p).is_relative());
                let written = if self.rewrite && relative {
                    let absolute = absolute_string(resolved);
                    let fields: Vec<&str> = record
                        .iter()
                        .enumerate()
                        .map(|(i, f)| {
                            if i == *path_column {
                                absolute.as_str()
                            } else {
                                f
                            }
                        })
                        .collect();
                    writer.write_record(&fields)
                } else {
                    writer.write_record(record)
                };
                written.map_err(|e| io_err(e.into()))?;
            }
            _ => {}
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<(), ScanError> {
        let partial = self.partial.clone();
        let io_err = |e: std::io::Error| ScanError::io(&partial, e);
        match self.format {
            ManifestFormat::Jsonl { .. } => {
                if let Some(out) = self.jsonl_out {
                    out.finish().map_err(io_err)?;
                }
            }
            ManifestFormat::Csv { writer, .. } => {
                let out = writer.into_inner().map_err(|e| io_err(e.into_error()))?;
                out.finish().map_err(io_err)?;
            }
        }
        publish(&self.partial, &self.target)
    }

    fn discard(self: Box<Self>) {
        let _ = std::fs::remove_file(&self.partial);
    }
}

/// A manifest of absolute paths (a folder input copied as a list).
pub struct PathListSink {
    target: PathBuf,
    partial: PathBuf,
    out: CompressedWriter,
    csv: bool,
}

impl PathListSink {
    pub fn create(target: &Path) -> Result<Self, ScanError> {
        let partial = partial_path(target);
        let mut out = CompressedWriter::create(&partial, Compression::from_name(target))
            .map_err(|e| ScanError::io(&partial, e))?;
        let name = lower_name(target);
        let plain = strip_compression(&name);
        let csv = plain.ends_with(".csv") || plain.ends_with(".tsv");
        if csv {
            out.write_all(b"path\n")
                .map_err(|e| ScanError::io(&partial, e))?;
        }
        Ok(Self {
            target: target.to_path_buf(),
            partial,
            out,
            csv,
        })
    }
}

impl Sink for PathListSink {
    fn write(&mut self, item: &Item) -> Result<(), ScanError> {
        let Carry::FolderFile { absolute, .. } = &item.carry else {
            return Ok(());
        };
        let path = absolute.display().to_string();
        let line = if self.csv {
            let mut w = csv::WriterBuilder::new()
                .terminator(csv::Terminator::Any(b'\n'))
                .from_writer(Vec::new());
            w.write_record([path.as_str()])
                .map_err(|e| ScanError::io(&self.partial, e.into()))?;
            w.into_inner()
                .map_err(|e| ScanError::io(&self.partial, e.into_error()))?
        } else {
            let mut l = serde_json::to_vec(&serde_json::json!({ "path": path }))
                .map_err(|e| ScanError::io(&self.partial, e.into()))?;
            l.push(b'\n');
            l
        };
        self.out
            .write_all(&line)
            .map_err(|e| ScanError::io(&self.partial, e))
    }

    fn finish(self: Box<Self>) -> Result<(), ScanError> {
        self.out
            .finish()
            .map_err(|e| ScanError::io(&self.partial, e))?;
        publish(&self.partial, &self.target)
    }

    fn discard(self: Box<Self>) {
        let _ = std::fs::remove_file(&self.partial);
    }
}

/// Copies a file to `partial`, then renames it to its final name `to`.
fn copy_file(from: &Path, partial: &Path, to: &Path) -> Result<(), ScanError> {
    for dir in [to.parent(), partial.parent()].into_iter().flatten() {
        std::fs::create_dir_all(dir).map_err(|e| ScanError::io(dir, e))?;
    }
    std::fs::copy(from, partial).map_err(|e| ScanError::io(from, e))?;
    match std::fs::rename(partial, to) {
        // The destination is a mount point of its own: stage beside the file.
        Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {
            let _ = std::fs::remove_file(partial);
            let beside = staging_path(to);
            std::fs::copy(from, &beside).map_err(|e| ScanError::io(from, e))?;
            publish(&beside, to)
        }
        other => other.map_err(|e| ScanError::io(to, e)),
    }
}

/// Where copies into `target` are staged: a hidden sibling named after it, so
/// the destination itself only ever holds complete files.
fn staging_path(target: &Path) -> PathBuf {
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    target.with_file_name(format!(".{name}{}", super::PARTIAL_SUFFIX))
}

/// A folder input mirrored: selected files copied under the same relative
/// paths, each staged outside the mirror and renamed into place.
pub struct MirrorSink {
    root: PathBuf,
    staging: PathBuf,
    staged: u64,
}

impl MirrorSink {
    pub fn create(root: &Path) -> Result<Self, ScanError> {
        std::fs::create_dir_all(root).map_err(|e| ScanError::io(root, e))?;
        let staging = staging_path(root);
        // Left by an interrupted scan: never part of the mirror.
        let _ = std::fs::remove_dir_all(&staging);
        Ok(Self {
            root: root.to_path_buf(),
            staging,
            staged: 0,
        })
    }
}

impl Sink for MirrorSink {
    fn write(&mut self, item: &Item) -> Result<(), ScanError> {
        match (&item.carry, &item.payload) {
            (Carry::FolderFile { relative, .. }, Payload::File(path)) => {
                self.staged += 1;
                let partial = self.staging.join(self.staged.to_string());
                copy_file(path, &partial, &self.root.join(relative))
            }
            _ => Ok(()),
        }
    }

    fn finish(self: Box<Self>) -> Result<(), ScanError> {
        let _ = std::fs::remove_dir_all(&self.staging);
        Ok(())
    }

    fn discard(self: Box<Self>) {
        let _ = std::fs::remove_dir_all(&self.staging);
    }
}

/// A single audio file input: copied to the target if selected.
pub struct CopySink {
    target: PathBuf,
}

impl CopySink {
    pub fn new(target: &Path) -> Self {
        // Left by an interrupted scan (older versions staged beside the target).
        let _ = std::fs::remove_file(staging_path(target));
        let _ = std::fs::remove_file(with_suffix(target, super::PARTIAL_SUFFIX));
        Self {
            target: target.to_path_buf(),
        }
    }
}

impl Sink for CopySink {
    fn write(&mut self, item: &Item) -> Result<(), ScanError> {
        match &item.payload {
            Payload::File(path) => copy_file(path, &staging_path(&self.target), &self.target),
            _ => Ok(()),
        }
    }

    fn finish(self: Box<Self>) -> Result<(), ScanError> {
        Ok(())
    }

    fn discard(self: Box<Self>) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mirror_stages_outside_itself_and_clears_what_a_kill_left() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("clean");
        let staging = staging_path(&root);
        assert!(!staging.starts_with(&root), "{staging:?}");
        // What a scan killed mid-copy leaves behind.
        std::fs::create_dir_all(&staging).expect("staging");
        std::fs::write(staging.join("1"), b"half a file").expect("write");
        let sink = Box::new(MirrorSink::create(&root).expect("mirror"));
        assert!(!staging.exists(), "a stale staging directory was kept");
        let source = dir.path().join("b.wav");
        std::fs::write(&source, b"RIFF").expect("write");
        let partial = sink.staging.join("1");
        copy_file(&source, &partial, &root.join("sub/b.wav")).expect("copy");
        let listed: Vec<_> = std::fs::read_dir(&root)
            .expect("read")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(listed, vec![std::ffi::OsString::from("sub")]);
        assert_eq!(
            std::fs::read(root.join("sub/b.wav")).expect("read"),
            b"RIFF"
        );
        sink.finish().expect("finish");
        assert!(!staging.exists());
    }

    #[test]
    fn json_field_replacement_keeps_order_and_values() {
        let line = r#"{"audio_filepath": "a/b.wav", "duration": 1.50, "text": "x\ny"}"#;
        let out = replace_json_field(line, "audio_filepath", "/abs/a/b.wav").unwrap();
        assert_eq!(
            out,
            r#"{"audio_filepath":"/abs/a/b.wav","duration":1.50,"text":"x\ny"}"#
        );
        assert!(replace_json_field("[1]", "path", "x").is_none());
    }
}

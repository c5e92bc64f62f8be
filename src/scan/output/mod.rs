//! Filtered copies of the input (`--allowed`, `--blocked`, `--flagged`), each in
//! the input's own format: manifest rows, tar shards, parquet rows, or a folder
//! mirror. Inputs are never modified.
//!
//! Destinations: with one input, `OUT` is the copy itself (for a folder input a
//! mirror directory, or a manifest of paths if `OUT` ends in `.jsonl`/`.csv`;
//! an existing directory receives a file named like the input). With several
//! inputs, `OUT` is a directory holding one copy per input, named like it.
//!
//! Shards, parquet files and manifests are written to `NAME.earmark-partial`
//! and renamed into place when their input is complete, so a consumer never
//! reads a half-written copy; a shard rejected as malformed leaves no copy.
//! Files of a folder mirror are staged in a hidden sibling of the mirror
//! (`.NAME.earmark-partial/`) and renamed in one by one, so the mirror only
//! ever holds complete, selected files, even after a kill.

mod parquet;
mod sinks;
mod tar;

use std::path::{Path, PathBuf};

use super::compress::{lower_name, strip_compression};
use super::error::ScanError;
use super::input::{InputKind, InputSpec};
use super::item::{InputLayout, Item};
use super::report::RowVerdict;

/// Suffix of copies being written.
const PARTIAL_SUFFIX: &str = ".earmark-partial";

/// A filtered copy to make: the items with `verdict` go to `path`.
#[derive(Debug, Clone)]
pub struct OutputSpec {
    pub verdict: RowVerdict,
    pub path: PathBuf,
}

/// Writes one input's filtered copy.
trait Sink: Send {
    fn write(&mut self, item: &Item) -> Result<(), ScanError>;
    /// The input is complete: make the copy visible.
    fn finish(self: Box<Self>) -> Result<(), ScanError>;
    /// The input failed as a whole: remove what was written.
    fn discard(self: Box<Self>);
}

struct OutputSet {
    verdict: RowVerdict,
    targets: Vec<PathBuf>,
    current: Option<(usize, Box<dyn Sink>)>,
}

/// All filtered copies of a scan.
pub struct Outputs {
    sets: Vec<OutputSet>,
    inputs: Vec<InputSpec>,
}

fn is_manifest_name(path: &Path) -> bool {
    let name = lower_name(path);
    let plain = strip_compression(&name);
    [".jsonl", ".ndjson", ".json", ".csv", ".tsv"]
        .iter()
        .any(|ext| plain.ends_with(ext))
}

/// `path` with `suffix` appended to its file name.
pub(crate) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

fn partial_path(path: &Path) -> PathBuf {
    with_suffix(path, PARTIAL_SUFFIX)
}

/// Canonical form of a path that may not exist yet (its deepest existing
/// ancestor canonicalised, the rest appended).
fn canonical_lenient(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(c) = std::fs::canonicalize(existing) {
            return rest
                .iter()
                .rev()
                .fold(c, |acc: PathBuf, part| acc.join(part));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return absolute,
        }
    }
}

impl Outputs {
    /// Works out every destination and checks none overlaps an input or
    /// another destination.
    pub fn plan(
        specs: &[OutputSpec],
        inputs: &[InputSpec],
        resuming: bool,
    ) -> Result<Self, ScanError> {
        let mut sets = Vec::new();
        let mut all_targets: Vec<(PathBuf, PathBuf)> = Vec::new();
        for spec in specs {
            let targets = targets_for(spec, inputs)?;
            for (target, input) in targets.iter().zip(inputs) {
                check_mirror(target, input, resuming)?;
                let canonical = canonical_lenient(target);
                for input in inputs {
                    let input_path = canonical_lenient(&input.path);
                    if canonical == input_path
                        || (input.kind == InputKind::Folder && canonical.starts_with(&input_path))
                    {
                        return Err(ScanError::Usage {
                            reason: format!(
                                "output {} would overwrite or sit inside input {}",
                                target.display(),
                                input.path.display()
                            ),
                        });
                    }
                }
                if let Some((_, other)) = all_targets.iter().find(|(c, _)| *c == canonical) {
                    return Err(ScanError::Usage {
                        reason: format!(
                            "two filtered copies would be written to {}",
                            other.display()
                        ),
                    });
                }
                all_targets.push((canonical, target.clone()));
            }
            sets.push(OutputSet {
                verdict: spec.verdict,
                targets,
                current: None,
            });
        }
        Ok(Self {
            sets,
            inputs: inputs.to_vec(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// An input begins: open its sinks.
    pub fn input_start(&mut self, input: usize, layout: &InputLayout) -> Result<(), ScanError> {
        let spec = self.inputs.get(input).ok_or_else(|| ScanError::Fatal {
            reason: format!("unknown input #{input}"),
        })?;
        for set in &mut self.sets {
            if let Some((_, old)) = set.current.take() {
                old.discard();
            }
            let target = set
                .targets
                .get(input)
                .cloned()
                .ok_or_else(|| ScanError::Fatal {
                    reason: format!("no destination for input #{input}"),
                })?;
            let sink = open_sink(&target, spec, layout)?;
            set.current = Some((input, sink));
        }
        Ok(())
    }

    /// Writes the item to the copies its verdict belongs to.
    pub fn item(&mut self, item: &Item, verdict: RowVerdict) -> Result<(), ScanError> {
        for set in &mut self.sets {
            if set.verdict != verdict {
                continue;
            }
            if let Some((input, sink)) = &mut set.current
                && *input == item.input
            {
                sink.write(item)?;
            }
        }
        Ok(())
    }

    /// An input ends: publish (or discard) its copies.
    pub fn input_end(&mut self, input: usize, complete: bool) -> Result<(), ScanError> {
        for set in &mut self.sets {
            match set.current.take() {
                Some((i, sink)) if i == input && complete => sink.finish()?,
                Some((i, sink)) if i == input => sink.discard(),
                other => set.current = other,
            }
        }
        Ok(())
    }
}

/// A fresh scan refuses a non-empty mirror directory (stale files from another
/// run would pass for selected ones); a resumed scan continues its own.
fn check_mirror(target: &Path, input: &InputSpec, resuming: bool) -> Result<(), ScanError> {
    let mirror = input.kind == InputKind::Folder && !is_manifest_name(target);
    let non_empty = std::fs::read_dir(target).is_ok_and(|mut d| d.next().is_some());
    if mirror && non_empty && !resuming {
        return Err(ScanError::Usage {
            reason: format!(
                "{}: the mirror directory is not empty (choose a new one)",
                target.display()
            ),
        });
    }
    Ok(())
}

/// One destination per input.
fn targets_for(spec: &OutputSpec, inputs: &[InputSpec]) -> Result<Vec<PathBuf>, ScanError> {
    let dest = &spec.path;
    if let [only] = inputs {
        let into_dir = dest.is_dir() && only.kind != InputKind::Folder;
        return Ok(vec![if into_dir {
            dest.join(input_name(only)?)
        } else {
            dest.clone()
        }]);
    }
    if dest.exists() && !dest.is_dir() {
        return Err(ScanError::Usage {
            reason: format!(
                "{}: with several inputs the filtered copy is a directory",
                dest.display()
            ),
        });
    }
    let mut targets: Vec<PathBuf> = Vec::new();
    for input in inputs {
        let target = dest.join(input_name(input)?);
        if targets.contains(&target) {
            return Err(ScanError::Usage {
                reason: format!(
                    "two inputs are named {}: their filtered copies would collide in {}",
                    input_name(input)?,
                    dest.display()
                ),
            });
        }
        targets.push(target);
    }
    Ok(targets)
}

fn input_name(input: &InputSpec) -> Result<String, ScanError> {
    let canonical = canonical_lenient(&input.path);
    canonical
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| ScanError::Usage {
            reason: format!(
                "{}: cannot name a copy after this input",
                input.path.display()
            ),
        })
}

fn open_sink(
    target: &Path,
    input: &InputSpec,
    layout: &InputLayout,
) -> Result<Box<dyn Sink>, ScanError> {
    if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| ScanError::io(parent, e))?;
    }
    Ok(match (&input.kind, layout) {
        (InputKind::Folder, _) if is_manifest_name(target) => {
            Box::new(sinks::PathListSink::create(target)?)
        }
        (InputKind::Folder, _) => Box::new(sinks::MirrorSink::create(target)?),
        (InputKind::AudioFile, _) => Box::new(sinks::CopySink::new(target)),
        (InputKind::Jsonl { .. } | InputKind::Csv { .. }, layout) => {
            Box::new(sinks::ManifestSink::create(target, &input.path, layout)?)
        }
        (InputKind::Tar, _) => Box::new(tar::TarSink::create(target)?),
        (InputKind::Parquet { .. }, InputLayout::Parquet { schema }) => {
            Box::new(parquet::ParquetSink::create(target, schema.clone())?)
        }
        (InputKind::Parquet { .. }, _) => {
            return Err(ScanError::Fatal {
                reason: "parquet input without a schema".into(),
            });
        }
    })
}

/// Moves a finished partial file into place.
fn publish(partial: &Path, target: &Path) -> Result<(), ScanError> {
    std::fs::rename(partial, target).map_err(|e| ScanError::io(target, e))
}

//! Inputs: what kind each command-line input is, and the items it yields.
//!
//! | given                                   | kind      | one item per               |
//! |-----------------------------------------|-----------|----------------------------|
//! | a directory                             | folder    | audio file (by content or extension), recursively |
//! | `*.jsonl` / `*.json` / `*.ndjson` (`.gz`, `.zst`) | JSONL manifest | line (path field `path`, `audio_filepath`, or `--path-field`) |
//! | `*.csv` / `*.tsv` (`.gz`, `.zst`)       | CSV manifest | record (path column, same names) |
//! | `*.tar`, `*.tar.gz`, `*.tgz`, `*.tar.zst` | WebDataset shard | sample (members sharing a key) |
//! | `*.parquet`                             | Hugging Face parquet | row (audio column `struct<bytes, path>`) |
//! | anything else                           | by content: tar, parquet, JSONL, or a single audio file |
//!
//! Each input is *emitted* as a sequence of [`Event`]s through a callback, in a
//! deterministic order (sorted folder walk, file order), so an interrupted scan
//! can be resumed by position.

pub mod folder;
pub mod manifest;
pub mod parquet;
mod parquet_footer;
pub mod shard;
pub mod tar;

use std::fs::File;
use std::path::{Path, PathBuf};

use super::compress::{lower_name, open_decompressed, read_up_to, strip_compression};
use super::error::ScanError;
use super::item::Event;
use super::sniff;

/// Receives the events of an input; an error stops the input.
pub type Emit<'a> = dyn FnMut(Event) -> Result<(), ScanError> + 'a;

/// Path field names tried, in order, when `--path-field` is not given.
pub const DEFAULT_PATH_FIELDS: &[&str] = &["path", "audio_filepath", "audio_path", "filepath"];

/// What an input is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputKind {
    Folder,
    AudioFile,
    Jsonl { path_field: String },
    Csv { delimiter: u8, path_column: usize },
    Tar,
    Parquet { audio_column: usize },
}

impl InputKind {
    pub fn name(&self) -> &'static str {
        match self {
            InputKind::Folder => "folder",
            InputKind::AudioFile => "audio file",
            InputKind::Jsonl { .. } => "JSONL manifest",
            InputKind::Csv { .. } => "CSV manifest",
            InputKind::Tar => "WebDataset shard",
            InputKind::Parquet { .. } => "parquet",
        }
    }
}

/// An input, checked before the scan starts.
#[derive(Debug, Clone)]
pub struct InputSpec {
    pub path: PathBuf,
    pub kind: InputKind,
}

/// Options that shape how inputs are read.
#[derive(Debug, Clone, Default)]
pub struct InputOptions {
    /// Manifest field / column holding the audio path.
    pub path_field: Option<String>,
    /// Parquet column holding the audio.
    pub audio_column: Option<String>,
    /// Largest tar member or parquet cell held in memory (bytes).
    pub max_member_bytes: u64,
}

/// Finds out what `path` is and checks it can be read (path field, audio
/// column…). Errors here are usage errors: nothing has been screened yet.
pub fn detect(path: &Path, options: &InputOptions) -> Result<InputSpec, ScanError> {
    let meta = std::fs::metadata(path).map_err(|e| ScanError::input(path, e.to_string()))?;
    let kind = if meta.is_dir() {
        InputKind::Folder
    } else {
        detect_file(path, options)?
    };
    Ok(InputSpec {
        path: path.to_path_buf(),
        kind,
    })
}

fn detect_file(path: &Path, options: &InputOptions) -> Result<InputKind, ScanError> {
    let name = lower_name(path);
    let plain = strip_compression(&name);
    if name.ends_with(".tar")
        || name.ends_with(".tar.gz")
        || name.ends_with(".tgz")
        || name.ends_with(".tar.zst")
        || name.ends_with(".tzst")
    {
        return Ok(InputKind::Tar);
    }
    if name.ends_with(".parquet") {
        return parquet::detect(path, options);
    }
    if plain.ends_with(".jsonl") || plain.ends_with(".ndjson") || plain.ends_with(".json") {
        return manifest::detect_jsonl(path, options);
    }
    if plain.ends_with(".csv") {
        return manifest::detect_csv(path, b',', options);
    }
    if plain.ends_with(".tsv") {
        return manifest::detect_csv(path, b'\t', options);
    }
    // Unknown name: look at the content.
    let mut head = vec![0u8; sniff::SNIFF_BYTES];
    let raw = {
        let mut file = File::open(path).map_err(|e| ScanError::input(path, e.to_string()))?;
        let n = read_up_to(&mut file, &mut head).map_err(|e| ScanError::io(path, e))?;
        head[..n].to_vec()
    };
    if raw.starts_with(b"PAR1") {
        return parquet::detect(path, options);
    }
    if sniff::looks_like_audio(&raw) || sniff::has_audio_extension(&name) {
        return Ok(InputKind::AudioFile);
    }
    let mut decompressed = vec![0u8; sniff::SNIFF_BYTES];
    let n = open_decompressed(path)
        .and_then(|mut r| read_up_to(&mut r, &mut decompressed))
        .map_err(|e| ScanError::input(path, e.to_string()))?;
    let decompressed = &decompressed[..n];
    if decompressed.len() >= tar::BLOCK && decompressed.get(257..262) == Some(&b"ustar"[..]) {
        return Ok(InputKind::Tar);
    }
    match decompressed.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => manifest::detect_jsonl(path, options),
        _ => Err(ScanError::input(
            path,
            "cannot tell what this is (expected a folder, a .jsonl/.csv manifest, a .tar shard, a .parquet file or an audio file)",
        )),
    }
}

/// Emits every event of one input.
pub fn emit_input(
    index: usize,
    spec: &InputSpec,
    options: &InputOptions,
    emit: &mut Emit<'_>,
) -> Result<(), ScanError> {
    match &spec.kind {
        InputKind::Folder => folder::emit_folder(index, &spec.path, emit),
        InputKind::AudioFile => folder::emit_single(index, &spec.path, emit),
        InputKind::Jsonl { path_field } => {
            manifest::emit_jsonl(index, &spec.path, path_field, emit)
        }
        InputKind::Csv {
            delimiter,
            path_column,
        } => manifest::emit_csv(index, &spec.path, *delimiter, *path_column, emit),
        InputKind::Tar => shard::emit_shard(index, &spec.path, options.max_member_bytes, emit),
        InputKind::Parquet { audio_column } => {
            parquet::emit_parquet(index, &spec.path, *audio_column, options, emit)
        }
    }
}

/// Resolves a manifest path against the manifest's directory.
pub fn resolve_relative(base: &Path, value: &str) -> PathBuf {
    let p = Path::new(value);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// The directory a manifest's relative paths are resolved against.
pub fn base_dir(path: &Path) -> PathBuf {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

//! What flows through the scan pipeline: items to screen and the input
//! boundaries around them.

use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use serde::{Deserialize, Serialize};

/// Where an item came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ItemKind {
    /// A file found in a folder (or given directly).
    File,
    /// A row of a JSONL or CSV manifest.
    ManifestRow,
    /// A WebDataset sample (the members sharing a key).
    TarSample,
    /// A whole tar shard that could not be read (malformed or unreadable).
    TarShard,
    /// A row of a Hugging Face parquet file.
    ParquetRow,
    /// A folder entry that could not be visited (unreadable, symlink loop).
    WalkEntry,
}

/// A regular member of a WebDataset sample.
#[derive(Debug, Clone)]
pub struct Member {
    /// Full member name inside the shard.
    pub name: String,
    /// WebDataset extension (lower case): `flac`, `json`, `seg.wav`…
    pub suffix: String,
    /// `None` when the member was larger than the in-memory limit.
    pub data: Option<Vec<u8>>,
    pub size: u64,
    pub mode: u32,
    pub mtime: u64,
}

/// What to screen.
#[derive(Debug)]
pub enum Payload {
    /// A file on disk.
    File(PathBuf),
    /// The members of a WebDataset sample.
    Sample(Vec<Member>),
    /// Encoded audio held in memory (a parquet cell), with its name.
    Bytes { name: String, data: Vec<u8> },
    /// The source already knows the item cannot be screened.
    Failed(String),
}

/// What a filtered copy of the input needs to reproduce the item.
#[derive(Debug, Clone)]
pub enum Carry {
    None,
    /// A file of a folder input: its path relative to the folder and absolute.
    FolderFile {
        relative: PathBuf,
        absolute: PathBuf,
    },
    /// A JSONL manifest line, verbatim (without its newline).
    JsonlRow {
        line: String,
        resolved: PathBuf,
    },
    /// A CSV manifest record.
    CsvRow {
        record: csv::StringRecord,
        resolved: PathBuf,
    },
    /// A parquet row: its record batch (shared by the batch's items).
    ParquetRow {
        batch: Arc<RecordBatch>,
        batch_no: u64,
        row: usize,
    },
}

/// One unit of screening and one report row.
#[derive(Debug)]
pub struct Item {
    /// Index of the input (command-line order).
    pub input: usize,
    /// Identifier in the report: a path, a WebDataset key, a row label.
    pub id: String,
    /// The input it came from, as given.
    pub source: String,
    pub kind: ItemKind,
    /// Line of a manifest (1-based) or row of a parquet file (0-based).
    pub position: Option<u64>,
    pub payload: Payload,
    pub carry: Carry,
}

impl Item {
    /// In-memory bytes the item holds (for the pipeline's memory budget).
    pub fn memory_bytes(&self) -> u64 {
        let payload = match &self.payload {
            Payload::Sample(members) => members
                .iter()
                .map(|m| m.data.as_ref().map_or(0, |d| d.len() as u64))
                .sum(),
            Payload::Bytes { data, .. } => data.len() as u64,
            Payload::File(_) | Payload::Failed(_) => 0,
        };
        payload + self.id.len() as u64
    }
}

/// How an input is laid out, announced before its items (the filtered copies
/// need it to write headers and schemas).
#[derive(Debug, Clone)]
pub enum InputLayout {
    Folder,
    SingleFile,
    Jsonl {
        path_field: String,
    },
    Csv {
        header: csv::StringRecord,
        path_column: usize,
        delimiter: u8,
    },
    Tar,
    Parquet {
        schema: SchemaRef,
    },
}

/// Events from the item source, in order.
#[derive(Debug)]
pub enum Event {
    InputStart {
        input: usize,
        layout: InputLayout,
    },
    Item(Item),
    /// End of an input; `complete` is false when it failed as a whole (its
    /// filtered copies are discarded).
    InputEnd {
        input: usize,
        complete: bool,
    },
}

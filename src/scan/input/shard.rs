//! WebDataset shards: tar members grouped into samples by key, as
//! `webdataset.tariterators` groups them (non-regular entries and `__*__`
//! metadata skipped, key up to the first dot of the base name, extensions
//! lower-cased, a repeated extension within a sample is an error).
//!
//! Each shard is read twice, as a stream, never extracted: a first pass checks
//! the whole archive with the strict reader ([`super::tar`]) without keeping
//! data; only a shard that passes is screened, in a second pass. A malformed
//! shard is one `error` item and contributes nothing to the filtered copies.

use std::io::Read;
use std::path::Path;

use super::Emit;
use super::tar::{EntryData, EntryKind, StrictTarReader, webdataset_key, webdataset_meta};
use crate::scan::compress::open_decompressed;
use crate::scan::error::ScanError;
use crate::scan::item::{Carry, Event, InputLayout, Item, ItemKind, Member, Payload};

/// Keys WebDataset itself puts in a sample; a member with such an extension
/// collides with them.
const RESERVED_SUFFIXES: &[&str] = &["__key__", "__url__", "__local_path__"];

/// A sample: members sharing a key, contiguous in the shard.
#[derive(Debug)]
pub struct Sample {
    pub key: String,
    pub members: Vec<Member>,
}

/// Groups the entries of a strict tar stream into samples.
pub struct SampleReader<R> {
    tar: StrictTarReader<R>,
    /// `Some(limit)`: keep member data up to `limit` bytes; `None`: skip data.
    load: Option<u64>,
    next: Option<(String, Member)>,
    done: bool,
}

impl<R: Read> SampleReader<R> {
    pub fn new(reader: R, load: Option<u64>) -> Self {
        Self {
            tar: StrictTarReader::new(reader),
            load,
            next: None,
            done: false,
        }
    }

    /// The next member that belongs to some sample.
    fn next_member(&mut self) -> Result<Option<(String, Member)>, String> {
        let load = self.load;
        loop {
            let wanted = |name: &str, _size: u64| {
                if webdataset_meta(name) || webdataset_key(name).is_none() {
                    None
                } else {
                    load
                }
            };
            let Some(entry) = self.tar.next_entry(wanted).map_err(|e| e.to_string())? else {
                return Ok(None);
            };
            if entry.kind != EntryKind::Regular || webdataset_meta(&entry.name) {
                continue;
            }
            let Some((key, suffix)) = webdataset_key(&entry.name) else {
                continue;
            };
            let (key, suffix) = (key.to_owned(), suffix.to_lowercase());
            let data = match entry.data {
                EntryData::Loaded(data) => Some(data),
                EntryData::Skipped | EntryData::TooLarge => None,
            };
            return Ok(Some((
                key,
                Member {
                    name: entry.name,
                    suffix,
                    data,
                    size: entry.size,
                    mode: entry.mode,
                    mtime: entry.mtime,
                },
            )));
        }
    }

    /// The next sample, `None` at the end of the shard.
    pub fn next_sample(&mut self) -> Result<Option<Sample>, String> {
        if self.done {
            return Ok(None);
        }
        let first = match self.next.take() {
            Some(m) => Some(m),
            None => self.next_member()?,
        };
        let Some((key, member)) = first else {
            self.done = true;
            return Ok(None);
        };
        let mut sample = Sample {
            key,
            members: Vec::new(),
        };
        push_member(&mut sample, member)?;
        loop {
            match self.next_member()? {
                Some((key, member)) if key == sample.key => push_member(&mut sample, member)?,
                Some(other) => {
                    self.next = Some(other);
                    return Ok(Some(sample));
                }
                None => {
                    self.done = true;
                    return Ok(Some(sample));
                }
            }
        }
    }
}

fn push_member(sample: &mut Sample, member: Member) -> Result<(), String> {
    if RESERVED_SUFFIXES.contains(&member.suffix.as_str())
        || sample.members.iter().any(|m| m.suffix == member.suffix)
    {
        return Err(format!(
            "{}: duplicate file name in sample '{}' (extension '{}'); WebDataset refuses such shards",
            member.name, sample.key, member.suffix
        ));
    }
    sample.members.push(member);
    Ok(())
}

/// Checks a whole shard without keeping data; returns the number of samples.
pub fn validate_shard(path: &Path) -> Result<u64, String> {
    let reader = open_decompressed(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut samples = SampleReader::new(reader, None);
    let mut count = 0u64;
    while samples.next_sample()?.is_some() {
        count += 1;
    }
    Ok(count)
}

/// Emits one item per sample of a shard (or one `error` item for the shard).
pub fn emit_shard(
    input: usize,
    path: &Path,
    max_member_bytes: u64,
    emit: &mut Emit<'_>,
) -> Result<(), ScanError> {
    emit(Event::InputStart {
        input,
        layout: InputLayout::Tar,
    })?;
    let source = path.display().to_string();
    if let Err(reason) = validate_shard(path) {
        emit(Event::Item(Item {
            input,
            id: source.clone(),
            source: source.clone(),
            kind: ItemKind::TarShard,
            position: None,
            payload: Payload::Failed(format!(
                "shard rejected, nothing in it was screened: {reason}"
            )),
            carry: Carry::None,
        }))?;
        return emit(Event::InputEnd {
            input,
            complete: false,
        });
    }
    let reader = open_decompressed(path).map_err(|e| ScanError::io(path, e))?;
    let mut samples = SampleReader::new(reader, Some(max_member_bytes));
    let mut position = 0u64;
    loop {
        let sample = samples.next_sample().map_err(|reason| ScanError::Fatal {
            reason: format!("{source}: shard changed while it was being screened: {reason}"),
        })?;
        let Some(sample) = sample else { break };
        emit(Event::Item(Item {
            input,
            id: sample.key,
            source: source.clone(),
            kind: ItemKind::TarSample,
            position: Some(position),
            payload: Payload::Sample(sample.members),
            carry: Carry::None,
        }))?;
        position += 1;
    }
    emit(Event::InputEnd {
        input,
        complete: true,
    })
}

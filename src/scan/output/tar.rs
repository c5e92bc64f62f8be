//! Filtered WebDataset shards: the selected samples, every member in its
//! original order, re-serialised as plain ustar (long names with GNU long-name
//! records), so what a loader reads is exactly what was screened.

use std::path::{Path, PathBuf};

use super::{Sink, partial_path, publish};
use crate::scan::compress::{CompressedWriter, Compression};
use crate::scan::error::ScanError;
use crate::scan::item::{Item, Payload};

/// Mode of members whose original mode is not a plain permission set.
const DEFAULT_MODE: u32 = 0o644;
/// Permission bits kept from the original member.
const MODE_MASK: u32 = 0o7777;

pub struct TarSink {
    target: PathBuf,
    partial: PathBuf,
    builder: tar::Builder<CompressedWriter>,
}

impl TarSink {
    pub fn create(target: &Path) -> Result<Self, ScanError> {
        let partial = partial_path(target);
        let out = CompressedWriter::create(&partial, Compression::from_name(target))
            .map_err(|e| ScanError::io(&partial, e))?;
        Ok(Self {
            target: target.to_path_buf(),
            partial,
            builder: tar::Builder::new(out),
        })
    }
}

impl Sink for TarSink {
    fn write(&mut self, item: &Item) -> Result<(), ScanError> {
        let Payload::Sample(members) = &item.payload else {
            return Ok(());
        };
        for member in members {
            let Some(data) = &member.data else {
                return Err(ScanError::Fatal {
                    reason: format!(
                        "{}: member {} was not kept in memory and cannot be copied",
                        item.source, member.name
                    ),
                });
            };
            let mut header = tar::Header::new_ustar();
            header.set_size(data.len() as u64);
            let mode = member.mode & MODE_MASK;
            header.set_mode(if mode == 0 { DEFAULT_MODE } else { mode });
            header.set_mtime(member.mtime);
            header.set_entry_type(tar::EntryType::Regular);
            self.builder
                .append_data(&mut header, &member.name, data.as_slice())
                .map_err(|e| ScanError::io(&self.partial, e))?;
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<(), ScanError> {
        let out = self
            .builder
            .into_inner()
            .map_err(|e| ScanError::io(&self.partial, e))?;
        out.finish().map_err(|e| ScanError::io(&self.partial, e))?;
        publish(&self.partial, &self.target)
    }

    fn discard(self: Box<Self>) {
        let partial = self.partial.clone();
        drop(self);
        let _ = std::fs::remove_file(partial);
    }
}

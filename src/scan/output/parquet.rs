//! Filtered parquet: the selected rows, with the input's schema (and its
//! Hugging Face metadata), written batch by batch.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{BooleanArray, RecordBatch};
use arrow_schema::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use super::{Sink, partial_path, publish};
use crate::scan::error::ScanError;
use crate::scan::item::{Carry, Item};

/// Buffered bytes after which a row group is written out.
const ROW_GROUP_BYTES: usize = 64 << 20;

pub struct ParquetSink {
    target: PathBuf,
    partial: PathBuf,
    writer: ArrowWriter<File>,
    /// The batch whose rows are being selected: (number, batch, selected rows).
    pending: Option<(u64, Arc<RecordBatch>, Vec<bool>)>,
}

impl ParquetSink {
    pub fn create(target: &Path, schema: SchemaRef) -> Result<Self, ScanError> {
        let partial = partial_path(target);
        let file = File::create(&partial).map_err(|e| ScanError::io(&partial, e))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build();
        let writer = ArrowWriter::try_new(file, schema, Some(props))
            .map_err(|e| ScanError::io(&partial, std::io::Error::other(e.to_string())))?;
        Ok(Self {
            target: target.to_path_buf(),
            partial,
            writer,
            pending: None,
        })
    }

    fn parquet_err(&self, e: impl std::fmt::Display) -> ScanError {
        ScanError::io(&self.partial, std::io::Error::other(e.to_string()))
    }

    fn flush(&mut self) -> Result<(), ScanError> {
        let Some((_, batch, mask)) = self.pending.take() else {
            return Ok(());
        };
        if !mask.iter().any(|&keep| keep) {
            return Ok(());
        }
        let filtered = arrow_select::filter::filter_record_batch(&batch, &BooleanArray::from(mask))
            .map_err(|e| self.parquet_err(e))?;
        self.writer
            .write(&filtered)
            .map_err(|e| self.parquet_err(e))?;
        // The writer buffers a whole row group in memory (by default up to a
        // million rows, i.e. the whole file with audio bytes): close row
        // groups by size instead, so memory stays bounded.
        if self.writer.in_progress_size() >= ROW_GROUP_BYTES {
            self.writer.flush().map_err(|e| self.parquet_err(e))?;
        }
        Ok(())
    }
}

impl Sink for ParquetSink {
    fn write(&mut self, item: &Item) -> Result<(), ScanError> {
        let Carry::ParquetRow {
            batch,
            batch_no,
            row,
        } = &item.carry
        else {
            return Ok(());
        };
        if self.pending.as_ref().is_some_and(|(n, _, _)| n != batch_no) {
            self.flush()?;
        }
        let (_, _, mask) = self
            .pending
            .get_or_insert_with(|| (*batch_no, batch.clone(), vec![false; batch.num_rows()]));
        if let Some(slot) = mask.get_mut(*row) {
            *slot = true;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<(), ScanError> {
        self.flush()?;
        let file = self
            .writer
            .into_inner()
            .map_err(|e| ScanError::io(&self.partial, std::io::Error::other(e.to_string())))?;
        file.sync_all()
            .map_err(|e| ScanError::io(&self.partial, e))?;
        publish(&self.partial, &self.target)
    }

    fn discard(self: Box<Self>) {
        let partial = self.partial.clone();
        drop(self);
        let _ = std::fs::remove_file(partial);
    }
}

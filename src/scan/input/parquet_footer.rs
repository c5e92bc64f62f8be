//! A pre-flight check of a parquet file's footer before the parquet crate
//! reads it.
//!
//! The footer is a Thrift compact-protocol struct. The parquet crate skips
//! fields it does not know, and its skip treats a boolean *inside a list* as
//! taking no bytes (in a struct field the value sits in the type nibble, in a
//! collection each boolean is one byte). A footer holding an unknown field of
//! type `list<bool>` declaring 2^31 elements therefore costs 2^31 loop turns
//! for 6 bytes of input, and nested lists multiply that: a 1 KiB file can keep
//! a core busy for hours. Every element of a collection takes at least one
//! byte, so a collection that declares more elements than the bytes left
//! cannot be well formed; this walk refuses it (and nesting deeper than the
//! parquet crate's own limit) in time linear in the footer's size.

use std::io::{Read, Seek, SeekFrom};

/// Magic at both ends of an unencrypted parquet file.
const MAGIC: &[u8; 4] = b"PAR1";
/// Footer tail: metadata length (u32, little endian) and the magic.
const TAIL_BYTES: u64 = 8;
/// Deepest nesting the parquet crate itself accepts when skipping.
const MAX_DEPTH: usize = 64;
/// Longest varint of a 64-bit value.
const MAX_VARINT_BYTES: usize = 10;

// Thrift compact-protocol type codes.
const BOOL_TRUE: u8 = 1;
const BOOL_FALSE: u8 = 2;
const BYTE: u8 = 3;
const I16: u8 = 4;
const I32: u8 = 5;
const I64: u8 = 6;
const DOUBLE: u8 = 7;
const BINARY: u8 = 8;
const LIST: u8 = 9;
const SET: u8 = 10;
const MAP: u8 = 11;
const STRUCT: u8 = 12;
const UUID: u8 = 13;
/// Size nibble of a list header meaning "the size follows as a varint".
const LONG_LIST: u8 = 15;

/// Checks the footer of the parquet file read by `file`; leaves the file
/// position at the start. Files without a plain footer (too short, another
/// magic, a length past the file) are left for the parquet reader to refuse.
pub fn check<F: Read + Seek>(file: &mut F) -> Result<(), String> {
    let io = |e: std::io::Error| format!("cannot read the footer: {e}");
    let size = file.seek(SeekFrom::End(0)).map_err(io)?;
    if size < TAIL_BYTES + MAGIC.len() as u64 {
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        return Ok(());
    }
    let mut tail = [0u8; TAIL_BYTES as usize];
    file.seek(SeekFrom::End(-(TAIL_BYTES as i64))).map_err(io)?;
    file.read_exact(&mut tail).map_err(io)?;
    let declared = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    if &tail[4..] != MAGIC || declared > size - TAIL_BYTES {
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        return Ok(());
    }
    let mut metadata = vec![0u8; declared as usize];
    file.seek(SeekFrom::Start(size - TAIL_BYTES - declared))
        .map_err(io)?;
    file.read_exact(&mut metadata).map_err(io)?;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    check_metadata(&metadata)
}

/// Walks the Thrift-encoded file metadata.
pub fn check_metadata(metadata: &[u8]) -> Result<(), String> {
    let mut walker = Walker {
        bytes: metadata,
        at: 0,
    };
    walker
        .skip(STRUCT, 0)
        .map_err(|reason| format!("malformed footer at byte {}: {reason}", walker.at))
}

struct Walker<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Walker<'_> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn byte(&mut self) -> Result<u8, String> {
        let b = *self.bytes.get(self.at).ok_or("unexpected end")?;
        self.at += 1;
        Ok(b)
    }

    fn advance(&mut self, n: u64) -> Result<(), String> {
        if n > self.remaining() as u64 {
            return Err(format!("{n} bytes declared, {} left", self.remaining()));
        }
        self.at += n as usize;
        Ok(())
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for i in 0..MAX_VARINT_BYTES {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    /// One element of a collection: a boolean takes a byte there.
    fn skip_element(&mut self, kind: u8, depth: usize) -> Result<(), String> {
        match kind {
            BOOL_TRUE | BOOL_FALSE => self.byte().map(|_| ()),
            other => self.skip(other, depth),
        }
    }

    /// Declared elements of a collection, each at least `min_bytes` long.
    fn count(&mut self, declared: u64, min_bytes: u64) -> Result<u64, String> {
        if declared.saturating_mul(min_bytes) > self.remaining() as u64 {
            return Err(format!(
                "a collection of {declared} elements in {} bytes",
                self.remaining()
            ));
        }
        Ok(declared)
    }

    fn skip(&mut self, kind: u8, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!("nested deeper than {MAX_DEPTH}"));
        }
        match kind {
            // In a struct field the value sits in the type nibble.
            BOOL_TRUE | BOOL_FALSE => Ok(()),
            BYTE => self.advance(1),
            I16 | I32 | I64 => self.varint().map(|_| ()),
            DOUBLE => self.advance(8),
            BINARY => {
                let len = self.varint()?;
                self.advance(len)
            }
            UUID => self.advance(16),
            LIST | SET => {
                let header = self.byte()?;
                let element = header & 0x0f;
                let declared = match header >> 4 {
                    LONG_LIST => self.varint()?,
                    short => u64::from(short),
                };
                for _ in 0..self.count(declared, 1)? {
                    self.skip_element(element, depth + 1)?;
                }
                Ok(())
            }
            MAP => {
                let declared = self.varint()?;
                if declared == 0 {
                    return Ok(());
                }
                let kinds = self.byte()?;
                for _ in 0..self.count(declared, 2)? {
                    self.skip_element(kinds >> 4, depth + 1)?;
                    self.skip_element(kinds & 0x0f, depth + 1)?;
                }
                Ok(())
            }
            STRUCT => loop {
                let header = self.byte()?;
                if header == 0 {
                    return Ok(());
                }
                if header >> 4 == 0 {
                    // A field id that does not fit the delta: a zigzag varint.
                    self.varint()?;
                }
                self.skip(header & 0x0f, depth + 1)?;
            },
            other => Err(format!("unknown type code {other}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_of_booleans_longer_than_its_bytes_is_refused() {
        // struct { 1: list<bool> of 2^31 - 1 elements } with no element bytes.
        let footer = [0x19, 0xF1, 0xFF, 0xFF, 0xFF, 0xFF, 0x07, 0x00];
        let err = check_metadata(&footer).unwrap_err();
        assert!(err.contains("2147483647 elements"), "{err}");
        // The same list with its two elements present is fine.
        assert!(check_metadata(&[0x19, 0x21, 0x01, 0x02, 0x00]).is_ok());
    }

    #[test]
    fn real_footers_pass() {
        use std::sync::Arc;

        use arrow_array::{ArrayRef, Int32Array, RecordBatch, StringArray};
        let batch = RecordBatch::try_from_iter(vec![
            ("n", Arc::new(Int32Array::from(vec![1, 2, 3])) as ArrayRef),
            (
                "s",
                Arc::new(StringArray::from(vec!["a", "b", "c"])) as ArrayRef,
            ),
        ])
        .unwrap();
        let mut out = Vec::new();
        let mut writer =
            parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        check(&mut std::io::Cursor::new(out)).unwrap();
    }
}

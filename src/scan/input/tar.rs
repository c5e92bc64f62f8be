//! A strict, streaming tar reader for WebDataset shards.
//!
//! Tar has many dialects, and parsers disagree on the corners: a PAX `size`
//! that differs from the header's size field, extended headers that are not
//! followed by an entry, data after the end-of-archive marker, directory or
//! link entries that carry a size. A crafted shard can use such a corner to
//! show one list of members to a screener and another to the training loader
//! (Python's `tarfile`, through WebDataset): the PAX desynchronisation
//! advisories (CVE-2025-62518 and its relatives) are of this kind.
//!
//! This reader therefore accepts only archives whose meaning every mainstream
//! parser agrees on, and rejects everything else with [`TarError`]:
//!
//! * every header's checksum must be valid; numeric fields (size, mode,
//!   mtime, uid, gid, device numbers) must be clean octal (or GNU base-256);
//! * a PAX `size` must equal the header's size field; PAX records must be
//!   well-formed and unique; global PAX headers may only carry a `comment`;
//!   GNU sparse files, multi-volume and other exotic entry types are refused;
//! * at most one GNU long-name (`L`), one long-link (`K`) or one PAX (`x`)
//!   header may precede an entry, never a PAX header together with a GNU one,
//!   and never before the end of the archive;
//! * directories, links and devices must have size 0 (parsers disagree on
//!   whether to skip their data); a GNU header with a non-empty ustar prefix
//!   field is refused (Python joins it to the name, GNU tar does not);
//! * the archive must end with a zero block, and nothing but zeros may follow.
//!
//! Member data is read into memory (up to a limit) or skipped; nothing is ever
//! written to disk.

use std::io::{self, Read};

/// Tar block size.
pub const BLOCK: usize = 512;
/// Largest PAX or GNU long-name extension accepted.
const MAX_EXTENSION_BYTES: u64 = 1 << 20;
/// PAX header charset declaration that means UTF-8 (the only one accepted).
const PAX_UTF8_CHARSET: &str = "ISO-IR 10646 2000 UTF-8";
/// Scratch buffer for skipping data.
const SKIP_BUFFER: usize = 64 * 1024;

/// A shard that cannot be read unambiguously.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed tar at byte {offset}: {reason}")]
pub struct TarError {
    pub offset: u64,
    pub reason: String,
}

/// What kind of entry a header describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Regular,
    /// Directory, link, device or FIFO (always size 0 here).
    Other,
}

/// The data of a regular member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryData {
    Loaded(Vec<u8>),
    /// Skipped on request.
    Skipped,
    /// Larger than the caller's limit (skipped).
    TooLarge,
}

/// One entry of the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarEntry {
    pub name: String,
    pub kind: EntryKind,
    pub size: u64,
    pub mode: u32,
    pub mtime: u64,
    pub data: EntryData,
}

/// Extension headers seen before the next entry.
#[derive(Default)]
struct Pending {
    pax: Option<Vec<(String, String)>>,
    long_name: Option<String>,
    long_link: bool,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.pax.is_none() && self.long_name.is_none() && !self.long_link
    }
}

/// Streaming strict reader (see the module docs).
pub struct StrictTarReader<R> {
    inner: R,
    offset: u64,
    finished: bool,
}

impl<R: Read> StrictTarReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            offset: 0,
            finished: false,
        }
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    fn err<T>(&self, at: u64, reason: impl Into<String>) -> Result<T, TarError> {
        Err(TarError {
            offset: at,
            reason: reason.into(),
        })
    }

    /// Reads exactly `buf.len()` bytes; `Ok(false)` on a clean EOF before the
    /// first byte.
    fn read_full(&mut self, buf: &mut [u8]) -> Result<bool, TarError> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.inner.read(&mut buf[filled..]) {
                Ok(0) if filled == 0 => return Ok(false),
                Ok(0) => {
                    return self.err(self.offset + filled as u64, "unexpected end of data");
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.err(self.offset + filled as u64, format!("read error: {e}")),
            }
        }
        self.offset += buf.len() as u64;
        Ok(true)
    }

    fn read_exact_or_truncated(&mut self, buf: &mut [u8], what: &str) -> Result<(), TarError> {
        let at = self.offset;
        if buf.is_empty() || self.read_full(buf)? {
            Ok(())
        } else {
            self.err(at, format!("truncated {what}"))
        }
    }

    fn skip(&mut self, mut n: u64, what: &str) -> Result<(), TarError> {
        let mut scratch = vec![0u8; SKIP_BUFFER.min(n as usize).max(1)];
        while n > 0 {
            let take = scratch.len().min(n as usize);
            self.read_exact_or_truncated(&mut scratch[..take], what)?;
            n -= take as u64;
        }
        Ok(())
    }

    fn padding(size: u64) -> u64 {
        (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
    }

    /// Reads an extension's data (bounded) and its padding.
    fn read_extension(&mut self, size: u64, what: &str) -> Result<Vec<u8>, TarError> {
        if size > MAX_EXTENSION_BYTES {
            return self.err(self.offset, format!("{what} of {size} bytes is too large"));
        }
        let mut data = vec![0u8; size as usize];
        self.read_exact_or_truncated(&mut data, what)?;
        self.skip(Self::padding(size), what)?;
        Ok(data)
    }

    /// After the first zero block: everything that follows must be zeros.
    fn check_trailer(&mut self) -> Result<(), TarError> {
        let mut buf = vec![0u8; SKIP_BUFFER];
        loop {
            let n = match self.inner.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return self.err(self.offset, format!("read error: {e}")),
            };
            if let Some(pos) = buf[..n].iter().position(|&b| b != 0) {
                return self.err(
                    self.offset + pos as u64,
                    "data after the end-of-archive marker",
                );
            }
            self.offset += n as u64;
        }
    }

    /// The next entry, or `None` at the end of the archive. `load(name, size)`
    /// decides whether a regular member's data is read into memory
    /// (`Some(limit)`: load if `size <= limit`) or skipped (`None`).
    pub fn next_entry(
        &mut self,
        mut load: impl FnMut(&str, u64) -> Option<u64>,
    ) -> Result<Option<TarEntry>, TarError> {
        if self.finished {
            return Ok(None);
        }
        let mut pending = Pending::default();
        loop {
            let at = self.offset;
            let mut block = [0u8; BLOCK];
            if !self.read_full(&mut block)? {
                return self.err(at, "archive ends without an end-of-archive marker");
            }
            if block.iter().all(|&b| b == 0) {
                if !pending.is_empty() {
                    return self.err(at, "extended header not followed by an entry");
                }
                self.check_trailer()?;
                self.finished = true;
                return Ok(None);
            }
            let header = Header::parse(&block).map_err(|reason| TarError { offset: at, reason })?;
            match header.typeflag {
                b'x' => {
                    if !pending.is_empty() {
                        return self.err(at, "consecutive extended headers");
                    }
                    let data = self.read_extension(header.size, "PAX header")?;
                    let records =
                        parse_pax(&data).map_err(|reason| TarError { offset: at, reason })?;
                    pending.pax = Some(records);
                }
                b'g' => {
                    if !pending.is_empty() {
                        return self.err(at, "global PAX header after an extended header");
                    }
                    let data = self.read_extension(header.size, "global PAX header")?;
                    let records =
                        parse_pax(&data).map_err(|reason| TarError { offset: at, reason })?;
                    if let Some((key, _)) = records.iter().find(|(k, _)| k != "comment") {
                        return self.err(
                            at,
                            format!("global PAX header sets '{key}' (only 'comment' is accepted)"),
                        );
                    }
                }
                b'L' => {
                    if pending.pax.is_some() || pending.long_name.is_some() {
                        return self.err(at, "consecutive extended headers");
                    }
                    let data = self.read_extension(header.size, "GNU long name")?;
                    let name = nul_terminated(&data);
                    let name = std::str::from_utf8(name)
                        .map_err(|_| TarError {
                            offset: at,
                            reason: "GNU long name is not UTF-8".into(),
                        })?
                        .to_owned();
                    pending.long_name = Some(name);
                }
                b'K' => {
                    if pending.pax.is_some() || pending.long_link {
                        return self.err(at, "consecutive extended headers");
                    }
                    self.read_extension(header.size, "GNU long link")?;
                    pending.long_link = true;
                }
                _ => return self.entry(at, header, pending, &mut load).map(Some),
            }
        }
    }

    fn entry(
        &mut self,
        at: u64,
        header: Header,
        pending: Pending,
        load: &mut impl FnMut(&str, u64) -> Option<u64>,
    ) -> Result<TarEntry, TarError> {
        let mut size = header.size;
        let mut name = header.name;
        let mut mtime = header.mtime;
        if let Some(long) = pending.long_name {
            name = long;
        }
        if let Some(records) = &pending.pax {
            for (key, value) in records {
                match key.as_str() {
                    "size" => {
                        let pax_size = parse_decimal(value).ok_or_else(|| TarError {
                            offset: at,
                            reason: format!("PAX size '{value}' is not a number"),
                        })?;
                        if pax_size != header.size {
                            return self.err(
                                at,
                                format!(
                                    "PAX size {pax_size} disagrees with the header size {}",
                                    header.size
                                ),
                            );
                        }
                        size = pax_size;
                    }
                    "path" => name = value.clone(),
                    "mtime" => {
                        mtime = value
                            .split('.')
                            .next()
                            .and_then(parse_decimal)
                            .unwrap_or(mtime);
                    }
                    "hdrcharset" if value != PAX_UTF8_CHARSET => {
                        return self.err(at, format!("unsupported PAX hdrcharset '{value}'"));
                    }
                    k if k.starts_with("GNU.sparse") => {
                        return self.err(at, "GNU sparse files are not supported");
                    }
                    _ => {}
                }
            }
        }
        if name.is_empty() {
            return self.err(at, "entry without a name");
        }
        if name.contains('\0') || name.chars().any(|c| c.is_control()) {
            return self.err(at, "entry name contains control characters");
        }
        let kind = match header.typeflag {
            b'0' | b'7' => EntryKind::Regular,
            b'\0' if name.ends_with('/') => EntryKind::Other,
            b'\0' => EntryKind::Regular,
            b'1'..=b'6' => EntryKind::Other,
            other => {
                return self.err(
                    at,
                    format!(
                        "unsupported entry type '{}'",
                        char::from(other).escape_default()
                    ),
                );
            }
        };
        if kind == EntryKind::Other && size != 0 {
            return self.err(
                at,
                format!("non-regular entry '{name}' has a size of {size} bytes"),
            );
        }
        let data = match (kind, load(&name, size)) {
            (EntryKind::Regular, Some(limit)) if size <= limit => {
                let mut data = vec![0u8; size as usize];
                self.read_exact_or_truncated(&mut data, "member data")?;
                EntryData::Loaded(data)
            }
            (EntryKind::Regular, Some(_)) => {
                self.skip(size, "member data")?;
                EntryData::TooLarge
            }
            _ => {
                self.skip(size, "member data")?;
                EntryData::Skipped
            }
        };
        self.skip(Self::padding(size), "member padding")?;
        Ok(TarEntry {
            name,
            kind,
            size,
            mode: header.mode,
            mtime,
            data,
        })
    }
}

/// The fields of one header block this reader uses.
struct Header {
    name: String,
    typeflag: u8,
    size: u64,
    mode: u32,
    mtime: u64,
}

const USTAR_MAGIC: &[u8; 6] = b"ustar\0";
const GNU_MAGIC: &[u8; 8] = b"ustar  \0";

impl Header {
    fn parse(block: &[u8; BLOCK]) -> Result<Header, String> {
        let stored = parse_octal(&block[148..156])
            .ok_or_else(|| "header checksum field is not octal".to_owned())?;
        let (unsigned, signed) = checksums(block);
        if stored != unsigned && stored as i64 != signed {
            return Err(format!(
                "header checksum mismatch (stored {stored}, computed {unsigned})"
            ));
        }
        let typeflag = block[156];
        let gnu = &block[257..265] == GNU_MAGIC;
        let ustar = &block[257..263] == USTAR_MAGIC;
        let size = parse_numeric(&block[124..136]).ok_or("header size field is malformed")?;
        let mode = parse_numeric(&block[100..108]).ok_or("header mode field is malformed")?;
        let mtime = parse_numeric(&block[136..148]).ok_or("header mtime field is malformed")?;
        // Python's tarfile parses these numbers in every header and refuses
        // the whole archive if one is not a number.
        for (field, what) in [
            (108..116, "uid"),
            (116..124, "gid"),
            (329..337, "devmajor"),
            (337..345, "devminor"),
        ] {
            parse_numeric(&block[field])
                .ok_or_else(|| format!("header {what} field is malformed"))?;
        }
        let base = std::str::from_utf8(nul_terminated(&block[0..100]))
            .map_err(|_| "entry name is not UTF-8".to_owned())?;
        let prefix = nul_terminated(&block[345..500]);
        let gnu_extension = matches!(typeflag, b'L' | b'K' | b'S');
        let name = if prefix.is_empty() || gnu_extension {
            base.to_owned()
        } else if gnu {
            // GNU tar keeps access/change times there and ignores it; Python
            // joins it to the name: two readings of one header.
            return Err("GNU header with a non-empty prefix field".into());
        } else {
            let prefix =
                std::str::from_utf8(prefix).map_err(|_| "entry prefix is not UTF-8".to_owned())?;
            format!("{prefix}/{base}")
        };
        if !ustar && !gnu && !matches!(typeflag, b'0' | b'\0' | b'1' | b'2' | b'5') {
            return Err(format!(
                "pre-POSIX header with entry type '{}'",
                char::from(typeflag).escape_default()
            ));
        }
        Ok(Header {
            name,
            typeflag,
            size,
            mode: u32::try_from(mode).map_err(|_| "header mode is out of range".to_owned())?,
            mtime,
        })
    }
}

/// Unsigned and signed header checksums (checksum field counted as spaces).
fn checksums(block: &[u8; BLOCK]) -> (u64, i64) {
    let mut unsigned = 0u64;
    let mut signed = 0i64;
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    (unsigned, signed)
}

fn nul_terminated(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    &field[..end]
}

/// Octal up to the first NUL, surrounding spaces allowed; empty = 0.
fn parse_octal(field: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(nul_terminated(field)).ok()?;
    let text = text.trim_matches(|c: char| c == ' ');
    if text.is_empty() {
        return Some(0);
    }
    if !text.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u64::from_str_radix(text, 8).ok()
}

/// Octal, or GNU base-256 (first byte 0x80; negative values refused).
fn parse_numeric(field: &[u8]) -> Option<u64> {
    match field.first() {
        Some(0x80) => {
            let rest = &field[1..];
            let significant = rest.iter().skip_while(|&&b| b == 0).count();
            if significant > 8 {
                return None;
            }
            Some(rest.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
        }
        Some(0xff) => None,
        _ => parse_octal(field),
    }
}

fn parse_decimal(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Parses PAX records (`"<len> <key>=<value>\n"`), strictly.
fn parse_pax(data: &[u8]) -> Result<Vec<(String, String)>, String> {
    let mut records: Vec<(String, String)> = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let space = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or("PAX record without a length")?;
        let len_text = std::str::from_utf8(&rest[..space]).map_err(|_| "PAX length is not text")?;
        let len = parse_decimal(len_text).ok_or("PAX record length is not a number")? as usize;
        if len <= space + 1 || len > rest.len() {
            return Err(format!("PAX record length {len} is out of range"));
        }
        let record = &rest[space + 1..len];
        let Some((&b'\n', body)) = record.split_last() else {
            return Err("PAX record does not end with a newline".into());
        };
        let body = std::str::from_utf8(body).map_err(|_| "PAX record is not UTF-8")?;
        let (key, value) = body.split_once('=').ok_or("PAX record without '='")?;
        if key.is_empty() {
            return Err("PAX record with an empty key".into());
        }
        if records.iter().any(|(k, _)| k == key) {
            return Err(format!("PAX key '{key}' appears twice"));
        }
        records.push((key.to_owned(), value.to_owned()));
        rest = &rest[len..];
    }
    Ok(records)
}

/// Splits a member name into WebDataset key and extension, exactly as
/// `webdataset.tariterators.base_plus_ext` (regex `^((?:.*/|)[^.]+)[.]([^/]*)$`)
/// does: the key runs to the first dot of the base name. `None` if the name has
/// no such split (loaders skip those members).
pub fn webdataset_key(name: &str) -> Option<(&str, &str)> {
    let bytes = name.as_bytes();
    // Regex backtracking order: longest `.*/` prefix first, then shorter ones,
    // then the empty alternative.
    let starts = bytes
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, b)| **b == b'/')
        .map(|(i, _)| i + 1)
        .chain(std::iter::once(0));
    for start in starts {
        let Some(dot) = bytes[start..].iter().position(|&b| b == b'.') else {
            continue;
        };
        let dot = start + dot;
        if dot == start || bytes[dot + 1..].contains(&b'/') {
            continue;
        }
        return Some((&name[..dot], &name[dot + 1..]));
    }
    None
}

/// True for members WebDataset skips as metadata (`__*__` names).
pub fn webdataset_meta(name: &str) -> bool {
    let top_level_meta = !name.contains('/') && name.starts_with("__") && name.ends_with("__");
    // `re.match(r"__[^/]*__($|/)", name)`
    let skip_meta = name.strip_prefix("__").is_some_and(|rest| {
        let segment_end = rest.find('/').unwrap_or(rest.len());
        let segment = &rest[..segment_end];
        // The segment (up to the first '/') must end with "__" after at least
        // the opening "__": `[^/]*` then `__` then end or '/'.
        segment.len() >= 2 && segment.ends_with("__")
    });
    top_level_meta || skip_meta
}

#[cfg(test)]
#[path = "tar_tests.rs"]
mod tests;

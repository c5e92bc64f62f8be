//! Transparent gzip / zstd for manifests, shards and filtered copies.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
const BZIP2_MAGIC: [u8; 3] = *b"BZh";
const XZ_MAGIC: [u8; 6] = [0xfd, b'7', b'z', b'X', b'Z', 0x00];
/// zstd level of compressed filtered copies (fast, good ratio).
const ZSTD_LEVEL: i32 = 3;
/// Read and write buffer size.
const IO_BUFFER: usize = 256 * 1024;

/// Compression of a file, by its magic bytes or its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// From a file name (`.gz`, `.tgz`, `.zst`, `.tzst`).
    pub fn from_name(path: &Path) -> Self {
        let name = lower_name(path);
        if name.ends_with(".gz") || name.ends_with(".tgz") {
            Compression::Gzip
        } else if name.ends_with(".zst") || name.ends_with(".tzst") {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// Lower-case file name of a path ("" if none).
pub fn lower_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default()
}

/// The name without a trailing compression extension (`a.jsonl.gz` → `a.jsonl`).
pub fn strip_compression(name: &str) -> &str {
    for ext in [".gz", ".zst"] {
        if let Some(stem) = name.strip_suffix(ext) {
            return stem;
        }
    }
    name
}

/// Opens a file for reading, decompressing gzip or zstd found by magic bytes.
pub fn open_decompressed(path: &Path) -> io::Result<Box<dyn Read + Send>> {
    let mut file = File::open(path)?;
    let mut magic = [0u8; 6];
    let n = read_up_to(&mut file, &mut magic)?;
    let magic = &magic[..n];
    let file = BufReader::with_capacity(IO_BUFFER, File::open(path)?);
    if magic.starts_with(&GZIP_MAGIC) {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(file)))
    } else if magic.starts_with(&ZSTD_MAGIC) {
        Ok(Box::new(zstd::stream::read::Decoder::with_buffer(file)?))
    } else if magic.starts_with(&BZIP2_MAGIC) || magic.starts_with(&XZ_MAGIC) {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bzip2 and xz compression are not supported (use gzip or zstd)",
        ))
    } else {
        Ok(Box::new(file))
    }
}

/// Reads into `buf` until it is full or the reader ends; returns the count.
pub fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// A file being written, optionally compressed.
pub enum CompressedWriter {
    Plain(BufWriter<File>),
    Gzip(flate2::write::GzEncoder<BufWriter<File>>),
    Zstd(zstd::stream::write::Encoder<'static, BufWriter<File>>),
}

impl CompressedWriter {
    pub fn create(path: &Path, compression: Compression) -> io::Result<Self> {
        let file = BufWriter::with_capacity(IO_BUFFER, File::create(path)?);
        Ok(match compression {
            Compression::None => CompressedWriter::Plain(file),
            Compression::Gzip => CompressedWriter::Gzip(flate2::write::GzEncoder::new(
                file,
                flate2::Compression::default(),
            )),
            Compression::Zstd => {
                CompressedWriter::Zstd(zstd::stream::write::Encoder::new(file, ZSTD_LEVEL)?)
            }
        })
    }

    /// Finishes the compressed stream, flushes and syncs the file.
    pub fn finish(self) -> io::Result<()> {
        let buffered = match self {
            CompressedWriter::Plain(w) => w,
            CompressedWriter::Gzip(w) => w.finish()?,
            CompressedWriter::Zstd(w) => w.finish()?,
        };
        let file = buffered.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()
    }
}

impl Write for CompressedWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            CompressedWriter::Plain(w) => w.write(buf),
            CompressedWriter::Gzip(w) => w.write(buf),
            CompressedWriter::Zstd(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            CompressedWriter::Plain(w) => w.flush(),
            CompressedWriter::Gzip(w) => w.flush(),
            CompressedWriter::Zstd(w) => w.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_compression() {
        let dir = tempfile::tempdir().unwrap();
        for (name, compression) in [
            ("a.jsonl", Compression::None),
            ("a.jsonl.gz", Compression::Gzip),
            ("a.jsonl.zst", Compression::Zstd),
        ] {
            let path = dir.path().join(name);
            assert_eq!(Compression::from_name(&path), compression);
            let mut w = CompressedWriter::create(&path, compression).unwrap();
            w.write_all(b"{\"path\": \"x.wav\"}\n").unwrap();
            w.finish().unwrap();
            let mut text = String::new();
            open_decompressed(&path)
                .unwrap()
                .read_to_string(&mut text)
                .unwrap();
            assert_eq!(text, "{\"path\": \"x.wav\"}\n");
        }
        assert_eq!(strip_compression("a.csv.zst"), "a.csv");
    }
}

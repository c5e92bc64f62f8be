//! One immutable, checksummed, memory-mapped index segment.
//!
//! ```text
//! header (64 bytes, little endian)
//!    0 magic "EARMKSEG"        8 format version u32     12 fingerprint config id u32
//!   16 prefix bits p u32       20 work count u32        24 posting count u64
//!   32 offsets position u64    40 postings position u64 48 works position u64
//!   56 body CRC-32 u32         60 header CRC-32 u32 (over bytes 0..60)
//! offsets   (2^p + 1) × u32: postings of hashes whose top p bits are b sit at
//!           [offsets[b], offsets[b+1])  (CSR)
//! postings  N × u64, sorted: hash low bits 15 | work 20 | anchor freq 8 | frame 21
//! peaks     M × u32: frame 24 | freq 8 (half log bins), each work's run sorted
//! works     JSON array of {id, duration_s, prints, peaks_start, peaks_len}
//! ```
//!
//! The peaks section starts right after the postings and ends where the works
//! table starts; each work names its run in it.
//!
//! A segment is written to a temporary file, fsynced and renamed into place, so a
//! crash never leaves a half-written segment under a live name.

use std::borrow::Cow;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use serde::{Deserialize, Serialize};

use super::IndexError;
use crate::fingerprint::{HASH_BITS, PeakPoint, Print};

pub const MAGIC: &[u8; 8] = b"EARMKSEG";
pub const FORMAT_VERSION: u32 = 2;
const HEADER_LEN: usize = 64;

const T_BITS: u32 = 21;
const F_BITS: u32 = 8;
const WORK_BITS: u32 = 20;
const LOW_HASH_BITS: u32 = 15;
const _: () = assert!(HASH_BITS > LOW_HASH_BITS && HASH_BITS <= 24);
/// Longest reference a segment can address (frames).
pub const MAX_T_FRAME: u32 = (1 << T_BITS) - 1;
/// Most works one segment can hold.
pub const MAX_WORKS_PER_SEGMENT: usize = 1 << WORK_BITS;
const MIN_PREFIX_BITS: u32 = HASH_BITS - LOW_HASH_BITS;
const MAX_PREFIX_BITS: u32 = HASH_BITS;
/// Hashes with more postings than this in one segment carry no information and
/// cost the most at query time: they are dropped when the segment is built.
pub const MAX_POSTINGS_PER_HASH: usize = 4_000;

/// A work stored in a segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentWork {
    pub id: String,
    pub duration_s: f64,
    pub prints: u64,
}

/// A work to write into a new segment: its entry, prints and peaks.
#[derive(Debug, Clone, Copy)]
pub struct NewWork<'a> {
    pub work: &'a SegmentWork,
    pub prints: &'a [Print],
    /// Sorted by frame (see [`crate::fingerprint::Fingerprint::peaks`]).
    pub peaks: &'a [PeakPoint],
}

/// A work's entry in the works table of a segment file.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredWork {
    #[serde(flatten)]
    work: SegmentWork,
    /// First peak of the work in the peaks section, and how many.
    peaks_start: u64,
    peaks_len: u64,
}

const PEAK_F_BITS: u32 = 8;

fn pack_peak(p: PeakPoint) -> u32 {
    (p.t_frame << PEAK_F_BITS) | u32::from(p.f_half_bins)
}

fn unpack_peak(raw: u32) -> PeakPoint {
    PeakPoint {
        t_frame: raw >> PEAK_F_BITS,
        f_half_bins: (raw & 0xff) as u8,
    }
}

/// A posting read back from a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Posting {
    pub work: u32,
    pub t_frame: u32,
    pub f_half_bins: u8,
}

#[derive(Debug, Clone, Copy)]
struct Header {
    config_id: u32,
    prefix_bits: u32,
    work_count: u32,
    posting_count: u64,
    offsets_pos: u64,
    postings_pos: u64,
    works_pos: u64,
    body_crc: u32,
}

/// An open, memory-mapped segment.
#[derive(Debug)]
pub struct Segment {
    pub path: PathBuf,
    mmap: Mmap,
    header: Header,
    pub works: Vec<SegmentWork>,
    /// Per work: (first peak, count) in the peaks section.
    peak_runs: Vec<(u64, u64)>,
    peaks_pos: u64,
}

fn prefix_bits_for(postings: usize) -> u32 {
    let log2 = usize::BITS - postings.max(1).leading_zeros();
    (log2.saturating_sub(2)).clamp(MIN_PREFIX_BITS, MAX_PREFIX_BITS)
}

fn pack(low_hash: u32, work: u32, f: u8, t: u32) -> u64 {
    (u64::from(low_hash) << (WORK_BITS + F_BITS + T_BITS))
        | (u64::from(work) << (F_BITS + T_BITS))
        | (u64::from(f) << T_BITS)
        | u64::from(t)
}

fn unpack(posting: u64) -> (u32, Posting) {
    let t_frame = (posting & u64::from(MAX_T_FRAME)) as u32;
    let f_half_bins = ((posting >> T_BITS) & 0xff) as u8;
    let work = ((posting >> (F_BITS + T_BITS)) & ((1 << WORK_BITS) - 1)) as u32;
    let low_hash = (posting >> (WORK_BITS + F_BITS + T_BITS)) as u32;
    (
        low_hash,
        Posting {
            work,
            t_frame,
            f_half_bins,
        },
    )
}

/// Writes a new segment holding `works` (entry, prints, peaks) to `path`
/// atomically. Returns the number of postings written.
pub fn write_segment(
    path: &Path,
    config_id: u32,
    works: &[NewWork<'_>],
) -> Result<u64, IndexError> {
    if works.len() > MAX_WORKS_PER_SEGMENT {
        return Err(IndexError::TooManyWorks {
            count: works.len(),
            max: MAX_WORKS_PER_SEGMENT,
        });
    }
    let total: usize = works.iter().map(|w| w.prints.len()).sum();
    let prefix_bits = prefix_bits_for(total);
    let low_bits = HASH_BITS - prefix_bits;
    let mut keyed: Vec<(u32, u64)> = Vec::with_capacity(total);
    for (work_index, new) in works.iter().enumerate() {
        let work = new.work;
        let peaks_beyond = new.peaks.last().is_some_and(|p| p.t_frame > MAX_T_FRAME);
        if peaks_beyond {
            return Err(IndexError::ReferenceTooLong {
                work_id: work.id.clone(),
                duration_s: work.duration_s,
            });
        }
        for print in new.prints.iter() {
            if print.t_frame > MAX_T_FRAME {
                return Err(IndexError::ReferenceTooLong {
                    work_id: work.id.clone(),
                    duration_s: work.duration_s,
                });
            }
            let low = print.hash & ((1 << low_bits) - 1);
            keyed.push((
                print.hash,
                pack(low, work_index as u32, print.f_half_bins, print.t_frame),
            ));
        }
    }
    keyed.sort_unstable();
    keyed.dedup();
    drop_common_hashes(&mut keyed);
    let buckets = 1usize << prefix_bits;
    let mut offsets = vec![0u32; buckets + 1];
    for (hash, _) in &keyed {
        offsets[(hash >> low_bits) as usize + 1] += 1;
    }
    for b in 0..buckets {
        offsets[b + 1] += offsets[b];
    }
    let sorted_peaks: Vec<Cow<'_, [PeakPoint]>> = works
        .iter()
        .map(|new| {
            if new.peaks.is_sorted() {
                Cow::Borrowed(new.peaks)
            } else {
                let mut peaks = new.peaks.to_vec();
                peaks.sort_unstable();
                Cow::Owned(peaks)
            }
        })
        .collect();
    let mut stored = Vec::with_capacity(works.len());
    let mut peaks_start = 0u64;
    for (new, peaks) in works.iter().zip(&sorted_peaks) {
        stored.push(StoredWork {
            work: new.work.clone(),
            peaks_start,
            peaks_len: peaks.len() as u64,
        });
        peaks_start += peaks.len() as u64;
    }
    let works_json = serde_json::to_vec(&stored).map_err(|e| IndexError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let offsets_pos = HEADER_LEN as u64;
    let offsets_bytes = offsets.len() as u64 * 4;
    let postings_pos = (offsets_pos + offsets_bytes).div_ceil(8) * 8;
    let peaks_pos = postings_pos + keyed.len() as u64 * 8;
    let works_pos = peaks_pos + peaks_start * 4;

    let mut body = Vec::with_capacity((works_pos - offsets_pos) as usize + works_json.len());
    for o in &offsets {
        body.extend_from_slice(&o.to_le_bytes());
    }
    body.resize((postings_pos - offsets_pos) as usize, 0);
    for (_, posting) in &keyed {
        body.extend_from_slice(&posting.to_le_bytes());
    }
    for peak in sorted_peaks.iter().flat_map(|run| run.iter()) {
        body.extend_from_slice(&pack_peak(*peak).to_le_bytes());
    }
    body.extend_from_slice(&works_json);
    let body_crc = crc32fast::hash(&body);

    let mut header = [0u8; HEADER_LEN];
    header[0..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[12..16].copy_from_slice(&config_id.to_le_bytes());
    header[16..20].copy_from_slice(&prefix_bits.to_le_bytes());
    header[20..24].copy_from_slice(&(works.len() as u32).to_le_bytes());
    header[24..32].copy_from_slice(&(keyed.len() as u64).to_le_bytes());
    header[32..40].copy_from_slice(&offsets_pos.to_le_bytes());
    header[40..48].copy_from_slice(&postings_pos.to_le_bytes());
    header[48..56].copy_from_slice(&works_pos.to_le_bytes());
    header[56..60].copy_from_slice(&body_crc.to_le_bytes());
    let header_crc = crc32fast::hash(&header[0..60]);
    header[60..64].copy_from_slice(&header_crc.to_le_bytes());

    super::write_atomically(path, |file| {
        let mut w = BufWriter::new(file);
        w.write_all(&header)?;
        w.write_all(&body)?;
        w.flush()
    })?;
    Ok(keyed.len() as u64)
}

/// Removes postings of hashes that occur more than [`MAX_POSTINGS_PER_HASH`] times.
fn drop_common_hashes(keyed: &mut Vec<(u32, u64)>) {
    let mut out = 0;
    let mut i = 0;
    while i < keyed.len() {
        let hash = keyed[i].0;
        let mut j = i;
        while j < keyed.len() && keyed[j].0 == hash {
            j += 1;
        }
        if j - i <= MAX_POSTINGS_PER_HASH {
            for k in i..j {
                keyed[out] = keyed[k];
                out += 1;
            }
        }
        i = j;
    }
    keyed.truncate(out);
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

impl Segment {
    /// Opens and structurally validates a segment (cheap: no full checksum).
    pub fn open(path: &Path, expected_config_id: u32) -> Result<Self, IndexError> {
        let corrupt = |reason: String| IndexError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let file = File::open(path).map_err(|source| IndexError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        // SAFETY: segments are immutable once renamed into place; earmark never
        // writes to a live segment file, it only creates new ones and unlinks old.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|source| IndexError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if mmap.len() < HEADER_LEN {
            return Err(corrupt(format!(
                "file is {} bytes, shorter than a header",
                mmap.len()
            )));
        }
        if &mmap[0..8] != MAGIC {
            return Err(corrupt("bad magic: not an earmark index segment".into()));
        }
        let version = read_u32(&mmap, 8);
        if version != FORMAT_VERSION {
            return Err(IndexError::FormatVersion {
                path: path.to_path_buf(),
                found: version,
                expected: FORMAT_VERSION,
            });
        }
        if read_u32(&mmap, 60) != crc32fast::hash(&mmap[0..60]) {
            return Err(corrupt("header checksum mismatch".into()));
        }
        let header = Header {
            config_id: read_u32(&mmap, 12),
            prefix_bits: read_u32(&mmap, 16),
            work_count: read_u32(&mmap, 20),
            posting_count: read_u64(&mmap, 24),
            offsets_pos: read_u64(&mmap, 32),
            postings_pos: read_u64(&mmap, 40),
            works_pos: read_u64(&mmap, 48),
            body_crc: read_u32(&mmap, 56),
        };
        if header.config_id != expected_config_id {
            return Err(IndexError::ConfigMismatch {
                path: path.to_path_buf(),
                found: header.config_id,
                expected: expected_config_id,
            });
        }
        validate_layout(&header, mmap.len()).map_err(corrupt)?;
        let stored: Vec<StoredWork> = serde_json::from_slice(&mmap[header.works_pos as usize..])
            .map_err(|e| corrupt(format!("works table: {e}")))?;
        if stored.len() != header.work_count as usize {
            return Err(corrupt("works table length does not match header".into()));
        }
        let peaks_pos = header.postings_pos + header.posting_count * 8;
        let peak_capacity = (header.works_pos - peaks_pos) / 4;
        let mut peak_runs = Vec::with_capacity(stored.len());
        let mut works = Vec::with_capacity(stored.len());
        for entry in stored {
            let end = entry.peaks_start.checked_add(entry.peaks_len);
            if end.is_none_or(|end| end > peak_capacity) {
                return Err(corrupt(format!(
                    "peaks of work {} lie outside the peaks section",
                    entry.work.id
                )));
            }
            peak_runs.push((entry.peaks_start, entry.peaks_len));
            works.push(entry.work);
        }
        Ok(Self {
            path: path.to_path_buf(),
            mmap,
            header,
            works,
            peak_runs,
            peaks_pos,
        })
    }

    fn peak(&self, i: u64) -> PeakPoint {
        unpack_peak(read_u32(&self.mmap, (self.peaks_pos + i * 4) as usize))
    }

    /// Appends the peaks of `work` with frames in `[t_from, t_to)` to `out`, in order.
    pub fn peaks_in(&self, work: u32, t_from: u32, t_to: u32, out: &mut Vec<PeakPoint>) {
        let Some(&(start, len)) = self.peak_runs.get(work as usize) else {
            return;
        };
        let (mut lo, mut hi) = (start, start + len);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.peak(mid).t_frame < t_from {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        for i in lo..start + len {
            let peak = self.peak(i);
            if peak.t_frame >= t_to {
                break;
            }
            out.push(peak);
        }
    }

    pub fn posting_count(&self) -> u64 {
        self.header.posting_count
    }

    pub fn file_bytes(&self) -> u64 {
        self.mmap.len() as u64
    }

    fn offset(&self, bucket: usize) -> usize {
        read_u32(&self.mmap, self.header.offsets_pos as usize + bucket * 4) as usize
    }

    fn posting(&self, i: usize) -> u64 {
        read_u64(&self.mmap, self.header.postings_pos as usize + i * 8)
    }

    /// Calls `visit` for every posting of `hash`.
    pub fn lookup(&self, hash: u32, mut visit: impl FnMut(Posting)) {
        let low_bits = HASH_BITS - self.header.prefix_bits;
        let bucket = (hash >> low_bits) as usize;
        if bucket >= (1usize << self.header.prefix_bits) {
            return;
        }
        let (start, end) = (self.offset(bucket), self.offset(bucket + 1));
        let end = end.min(self.header.posting_count as usize);
        let low = hash & ((1 << low_bits) - 1);
        // Postings are sorted by low hash: binary search the first, then scan.
        let (mut lo, mut hi) = (start.min(end), end);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if unpack(self.posting(mid)).0 < low {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        for i in lo..end {
            let (posting_low, posting) = unpack(self.posting(i));
            if posting_low != low {
                break;
            }
            if (posting.work as usize) < self.works.len() {
                visit(posting);
            }
        }
    }

    /// Every posting with its full hash (for compaction).
    pub fn for_each_posting(&self, mut visit: impl FnMut(u32, Posting)) {
        let low_bits = HASH_BITS - self.header.prefix_bits;
        let buckets = 1usize << self.header.prefix_bits;
        for bucket in 0..buckets {
            let (start, end) = (self.offset(bucket), self.offset(bucket + 1));
            for i in start..end.min(self.header.posting_count as usize) {
                let (low, posting) = unpack(self.posting(i));
                visit(((bucket as u32) << low_bits) | low, posting);
            }
        }
    }

    /// Full check: body checksum, sorted postings, work references.
    pub fn verify(&self) -> Result<(), IndexError> {
        let corrupt = |reason: String| IndexError::Corrupt {
            path: self.path.clone(),
            reason,
        };
        let body = &self.mmap[HEADER_LEN..];
        if crc32fast::hash(body) != self.header.body_crc {
            return Err(corrupt("body checksum mismatch".into()));
        }
        let mut bad = None;
        let buckets = 1usize << self.header.prefix_bits;
        for bucket in 0..buckets {
            let (start, end) = (self.offset(bucket), self.offset(bucket + 1));
            if start > end || end > self.header.posting_count as usize {
                bad = Some(format!("offsets table broken at bucket {bucket}"));
                break;
            }
            for i in start..end {
                let raw = self.posting(i);
                if i > start && raw < self.posting(i - 1) {
                    bad = Some(format!("postings out of order in bucket {bucket}"));
                }
                if unpack(raw).1.work >= self.header.work_count {
                    bad = Some(format!("posting {i} references a missing work"));
                }
            }
            if bad.is_some() {
                break;
            }
        }
        if bad.is_none() {
            bad = self
                .peak_runs
                .iter()
                .zip(&self.works)
                .find_map(|(&(start, len), work)| {
                    let unsorted = (start + 1..start + len)
                        .any(|i| self.peak(i).t_frame < self.peak(i - 1).t_frame);
                    unsorted.then(|| format!("peaks of work {} out of order", work.id))
                });
        }
        match bad {
            Some(reason) => Err(corrupt(reason)),
            None => Ok(()),
        }
    }
}

fn validate_layout(h: &Header, file_len: usize) -> Result<(), String> {
    if !(MIN_PREFIX_BITS..=MAX_PREFIX_BITS).contains(&h.prefix_bits) {
        return Err(format!("prefix bits {} out of range", h.prefix_bits));
    }
    let buckets = 1u64 << h.prefix_bits;
    let offsets_end = h
        .offsets_pos
        .checked_add((buckets + 1) * 4)
        .ok_or("offsets overflow")?;
    let postings_end = h
        .postings_pos
        .checked_add(h.posting_count.checked_mul(8).ok_or("postings overflow")?)
        .ok_or("postings overflow")?;
    let ordered = h.offsets_pos as usize == HEADER_LEN
        && offsets_end <= h.postings_pos
        && h.postings_pos.is_multiple_of(8)
        && postings_end <= h.works_pos
        && (h.works_pos - postings_end).is_multiple_of(4)
        && h.works_pos <= file_len as u64;
    if !ordered {
        return Err("section positions are inconsistent with the file size".into());
    }
    Ok(())
}

/// Deletes a file, ignoring "not found".
pub fn remove_file_if_exists(path: &Path) -> Result<(), IndexError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(IndexError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn print(hash: u32, t: u32) -> Print {
        Print {
            hash,
            t_frame: t,
            f_half_bins: 17,
            warp: 0,
        }
    }

    #[test]
    fn pack_round_trips() {
        let p = pack(0x7fff, 0xfffff, 255, MAX_T_FRAME);
        let (low, posting) = unpack(p);
        assert_eq!(
            (low, posting.work, posting.f_half_bins, posting.t_frame),
            (0x7fff, 0xfffff, 255, MAX_T_FRAME)
        );
    }

    #[test]
    fn write_open_lookup_verify() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.seg");
        let a = vec![print(0x12345, 10), print(0x12345, 20), print(0xabcde, 5)];
        let b = vec![print(0x12345, 7), print(0x00001, 1)];
        let peak = |t_frame, f_half_bins| PeakPoint {
            t_frame,
            f_half_bins,
        };
        let peaks_a = vec![peak(3, 40), peak(9, 2), peak(9, 80), peak(30, 7)];
        // Unsorted input is sorted on write.
        let peaks_b = vec![peak(12, 5), peak(1, 9)];
        let (work_a, work_b) = (
            SegmentWork {
                id: "a".into(),
                duration_s: 1.0,
                prints: 3,
            },
            SegmentWork {
                id: "b".into(),
                duration_s: 2.0,
                prints: 2,
            },
        );
        let works = [
            NewWork {
                work: &work_a,
                prints: &a,
                peaks: &peaks_a,
            },
            NewWork {
                work: &work_b,
                prints: &b,
                peaks: &peaks_b,
            },
        ];
        assert_eq!(write_segment(&path, 42, &works).unwrap(), 5);
        let seg = Segment::open(&path, 42).unwrap();
        seg.verify().unwrap();
        let mut got = Vec::new();
        seg.peaks_in(0, 9, 30, &mut got);
        assert_eq!(got, vec![peak(9, 2), peak(9, 80)]);
        got.clear();
        seg.peaks_in(1, 0, u32::MAX, &mut got);
        assert_eq!(got, vec![peak(1, 9), peak(12, 5)]);
        got.clear();
        seg.peaks_in(7, 0, u32::MAX, &mut got);
        assert!(got.is_empty());
        let mut found = Vec::new();
        seg.lookup(0x12345, |p| found.push((p.work, p.t_frame)));
        found.sort();
        assert_eq!(found, vec![(0, 10), (0, 20), (1, 7)]);
        let mut none = Vec::new();
        seg.lookup(0x12346, |p| none.push(p));
        assert!(none.is_empty());
        assert!(matches!(
            Segment::open(&path, 43),
            Err(IndexError::ConfigMismatch { .. })
        ));
    }

    #[test]
    fn corruption_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.seg");
        let a: Vec<Print> = (0..1000).map(|i| print(i * 7919 % (1 << 20), i)).collect();
        let work = SegmentWork {
            id: "a".into(),
            duration_s: 1.0,
            prints: 1000,
        };
        let new = NewWork {
            work: &work,
            prints: &a,
            peaks: &[],
        };
        write_segment(&path, 1, &[new]).unwrap();
        let mut bytes = fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x55;
        fs::write(&path, &bytes).unwrap();
        let seg = Segment::open(&path, 1);
        match seg {
            Ok(seg) => assert!(seg.verify().is_err()),
            Err(e) => assert!(matches!(e, IndexError::Corrupt { .. })),
        }
        fs::write(&path, &bytes[..30]).unwrap();
        assert!(matches!(
            Segment::open(&path, 1),
            Err(IndexError::Corrupt { .. })
        ));
    }
}

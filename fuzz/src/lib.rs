//! Bodies of earmark's fuzz targets, shared by the libFuzzer binaries in
//! `fuzz_targets/` (nightly, `scripts/fuzz.sh`) and the stable regression test
//! `tests/fuzz_regressions.rs`, which includes this file and runs every input
//! kept under `fuzz/regressions/<target>/`.
//!
//! Each body feeds arbitrary bytes to one entry point and panics when an
//! invariant fails; returning normally means the input was handled (accepted
//! or refused with an error). Beyond "no crash" the bodies check:
//!
//! * `decode`: samples handed to the sink stay within the declared duration
//!   limit, every sample is finite, and the fingerprint built from them is
//!   consistent (anchor frames inside the analysed frames, peaks sorted).
//! * `fpfile`: an accepted fingerprint file re-encodes to the same contents.
//! * `index`: a data directory whose segment passes its checksums answers a
//!   lookup of every posting it stores, returns each work's peaks sorted, and
//!   survives a match against its own postings; manifest entries never name a
//!   file outside the index directory.
//! * `catalog`: accepted rows have unique ids and line numbers inside the file.
//! * `scan_manifest`, `scan_parquet`: the events of an input are well formed
//!   (start, items in strictly increasing position, end), in-memory payloads
//!   respect the member limit, and an input that stops early ends with an
//!   error item.
//! * `scan_tar`: the validation pass and the screening pass of a shard agree
//!   on every sample, member and size, and on whether the shard is refused;
//!   loaded members hold exactly their declared bytes.
//! * `proto`: every request message that decodes re-encodes to itself.
//! * `service`: every call to a live loopback server ends with a status
//!   other than `INTERNAL`/`UNKNOWN` (a panic in a handler or CPU job).

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use earmark::decode::{DecodeLimits, decode_bytes};
use earmark::fingerprint::{
    CONFIG_ID, Fingerprint, HASH_BITS, PeakPoint, Print, Side, StreamingFingerprinter,
};
use earmark::index::segment::{NewWork, Segment, SegmentWork};
use earmark::index::{Index, IndexWriter, MANIFEST_FILE};
use earmark::proto as pb;
use earmark::scan::InputOptions;
use earmark::scan::input::shard::SampleReader;
use earmark::scan::item::{Event, Payload};
use prost::Message;

/// Sample rate the decoder resamples to (the fingerprinter's).
const RATE_HZ: u32 = earmark::fingerprint::SAMPLE_RATE_HZ;
/// Longest audio a fuzzed input may decode to (seconds): short enough that
/// one input stays well inside libFuzzer's per-input timeout.
const MAX_DECODE_S: f64 = 30.0;
/// Longest packet of any supported codec (seconds): a FLAC block of 65 535
/// frames at the lowest accepted rate of 4 kHz. A decode that fails may have
/// handed up to one packet past the limit to the sink before the check.
const MAX_PACKET_S: f64 = 16.4;
/// Samples the resampler may add at the end (its flush of the last chunk).
const RESAMPLER_FLUSH_SAMPLES: u64 = 2 * RATE_HZ as u64;
/// Largest tar member or parquet cell kept in memory by the scan targets.
const MEMBER_LIMIT_BYTES: u64 = 64 * 1024;
/// Postings of a segment looked up again by the index target.
const MAX_CHECKED_POSTINGS: usize = 2_048;
/// Longest wait for one call of the service target.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// The body of a target: takes one input, panics on a broken invariant.
pub type Body = fn(&[u8]);

/// Every target: name and body.
pub const TARGETS: &[(&str, Body)] = &[
    ("decode", decode),
    ("fpfile", fpfile),
    ("index", index),
    ("catalog", catalog),
    ("scan_manifest", scan_manifest),
    ("scan_tar", scan_tar),
    ("scan_parquet", scan_parquet),
    ("proto", proto),
    ("service", service),
];

/// Extension hints tried by the decode target (chosen by the first byte).
const HINTS: &[Option<&str>] = &[
    None,
    Some("wav"),
    Some("mp3"),
    Some("ogg"),
    Some("flac"),
    Some("m4a"),
    Some("aac"),
    Some("mkv"),
    Some("opus"),
    Some("caf"),
    Some("aiff"),
    Some("webm"),
];

/// A scratch directory per process, reused by every input of a target.
fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("earmark-fuzz-")
            .tempdir()
            .expect("a scratch directory for the fuzz target")
    })
    .path()
}

/// Audio decoding (every container and codec) followed by fingerprinting.
pub fn decode(data: &[u8]) {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let hint = HINTS[usize::from(selector) % HINTS.len()];
    let limits = DecodeLimits {
        max_bytes: 1 << 20,
        max_duration_s: MAX_DECODE_S,
        max_channels: 8,
    };
    let mut samples = 0u64;
    let mut fingerprinter = StreamingFingerprinter::new(Side::Query);
    let result = decode_bytes(
        bytes.to_vec(),
        "fuzz-input",
        hint,
        &limits,
        RATE_HZ,
        |block| {
            assert!(
                block.iter().all(|s| s.is_finite()),
                "the decoder handed a non-finite sample to the sink"
            );
            samples += block.len() as u64;
            fingerprinter.push(block);
        },
    );
    let rate = f64::from(RATE_HZ);
    match result {
        Ok(info) => {
            assert!(info.duration_s <= MAX_DECODE_S, "{info:?} passed the limit");
            assert!(info.channels <= limits.max_channels, "{info:?}");
            let allowed = (info.duration_s * rate).ceil() as u64 + RESAMPLER_FLUSH_SAMPLES;
            assert!(
                samples <= allowed,
                "{samples} samples out of {:.3} s of audio ({info:?})",
                info.duration_s
            );
        }
        Err(err) => {
            assert!(err.to_string().starts_with("fuzz-input:"), "{err}");
            let allowed = ((MAX_DECODE_S + MAX_PACKET_S) * rate) as u64 + RESAMPLER_FLUSH_SAMPLES;
            assert!(
                samples <= allowed,
                "{samples} samples before the error {err}"
            );
        }
    }
    check_fingerprint(&fingerprinter.finish());
}

fn check_fingerprint(fp: &Fingerprint) {
    for p in &fp.prints {
        assert!(p.hash >> HASH_BITS == 0, "hash {:#x} too wide", p.hash);
        assert!(
            (p.t_frame as usize) < fp.frames.max(1),
            "anchor past the frames"
        );
    }
    assert!(fp.peaks.is_sorted(), "peaks out of order");
}

/// The fingerprint file format (`earmark fingerprint --out`, `ScreenFingerprints`).
pub fn fpfile(data: &[u8]) {
    use earmark::fingerprint::file::{FingerprintFile, MAGIC, PRINTS_PER_MESSAGE, append_peaks};
    // The fuzzer need not find the magic line: half the inputs get it for free.
    let owned;
    let bytes = match data.split_first() {
        Some((&b, rest)) if b & 1 == 1 => {
            owned = [MAGIC, rest].concat();
            &owned[..]
        }
        Some((_, rest)) => rest,
        None => return,
    };
    let path = Path::new("fuzz.fp");
    let Ok(file) = FingerprintFile::from_bytes(path, bytes) else {
        return;
    };
    assert!(file.fingerprint.peaks.is_sorted(), "peaks out of order");
    assert!(
        file.fingerprint.brief_peaks.is_sorted(),
        "brief peaks out of order"
    );
    let again = FingerprintFile::from_bytes(path, &file.to_bytes()).expect("re-encoded file");
    // Compared as encoded: a NaN duration is not equal to itself.
    assert_eq!(again.header.encode_to_vec(), file.header.encode_to_vec());
    assert_eq!(again.fingerprint.prints, file.fingerprint.prints);
    assert_eq!(again.fingerprint.peaks, file.fingerprint.peaks);
    assert_eq!(again.fingerprint.brief_peaks, file.fingerprint.brief_peaks);
    assert_eq!(again.fingerprint.frames, file.fingerprint.frames);
    let requests = file.requests(pb::Scope::AiTraining, "");
    let batches = |n: usize| n.div_ceil(PRINTS_PER_MESSAGE);
    assert_eq!(
        requests.len(),
        1 + batches(file.fingerprint.prints.len())
            + batches(file.fingerprint.peaks.len())
            + batches(file.fingerprint.brief_peaks.len())
    );
    // The server appends peak batches in any order, each to its own set, and
    // keeps both sorted.
    let (mut peaks, mut brief_peaks) = (Vec::new(), Vec::new());
    for request in requests.iter().rev() {
        if let Some(pb::screen_fingerprints_request::Part::Peaks(batch)) = &request.part {
            let set = if batch.brief {
                &mut brief_peaks
            } else {
                &mut peaks
            };
            append_peaks(set, batch).expect("peaks the file held");
        }
    }
    assert!(peaks.is_sorted() && brief_peaks.is_sorted());
    assert_eq!(peaks, file.fingerprint.peaks);
    assert_eq!(brief_peaks, file.fingerprint.brief_peaks);
}

/// Layout of an index input: flags, manifest length, manifest, segment.
const INDEX_GENERATED_MANIFEST: u8 = 1;
const INDEX_FIX_HEADER_CRC: u8 = 2;
const INDEX_FIX_BODY_CRC: u8 = 4;
const SEGMENT_FILE: &str = "seg-00000001.seg";
const SEGMENT_HEADER_LEN: usize = 64;

/// Packs a manifest and a segment into an `index` input.
pub fn index_input(flags: u8, manifest: &[u8], segment: &[u8]) -> Vec<u8> {
    let len = u16::try_from(manifest.len()).expect("manifest under 64 KiB");
    let mut out = vec![flags];
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(manifest);
    out.extend_from_slice(segment);
    out
}

/// A corrupted index directory: manifest and segment open, lookups, match.
pub fn index(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Some((len, rest)) = rest.split_first_chunk::<2>() else {
        return;
    };
    let manifest_len = usize::from(u16::from_le_bytes(*len)).min(rest.len());
    let (manifest, segment) = rest.split_at(manifest_len);
    let mut segment = segment.to_vec();
    if flags & INDEX_FIX_BODY_CRC != 0 && segment.len() >= SEGMENT_HEADER_LEN {
        let crc = crc32(&segment[SEGMENT_HEADER_LEN..]);
        segment[56..60].copy_from_slice(&crc.to_le_bytes());
    }
    if flags & (INDEX_FIX_HEADER_CRC | INDEX_FIX_BODY_CRC) != 0
        && segment.len() >= SEGMENT_HEADER_LEN
    {
        let crc = crc32(&segment[..60]);
        segment[60..64].copy_from_slice(&crc.to_le_bytes());
    }
    let manifest = if flags & INDEX_GENERATED_MANIFEST != 0 {
        let tombstones: Vec<u32> = (0..4).filter(|i| flags & (16 << i) != 0).collect();
        format!(
            r#"{{"format_version":2,"config_id":{CONFIG_ID},"generation":1,"next_segment":2,"segments":[{{"file":"{SEGMENT_FILE}","postings":0,"tombstones":{tombstones:?}}}]}}"#
        )
        .into_bytes()
    } else {
        manifest.to_vec()
    };
    let dir = scratch().join("index");
    std::fs::create_dir_all(&dir).expect("index directory");
    std::fs::write(dir.join(MANIFEST_FILE), &manifest).expect("write manifest");
    let segment_path = dir.join(SEGMENT_FILE);
    std::fs::write(&segment_path, &segment).expect("write segment");

    if let Ok(index) = Index::open(&dir) {
        let _ = index.stats();
        let _ = index.verify();
        if let Ok(parsed) = serde_json::from_slice::<earmark::index::Manifest>(&manifest) {
            for entry in &parsed.segments {
                let named = dir.join(&entry.file);
                assert!(
                    named.parent() == Some(dir.as_path()) && named.file_name().is_some(),
                    "the index opened a segment named '{}', outside its directory",
                    entry.file
                );
            }
        }
        let ids: Vec<String> = index.work_ids().map(str::to_owned).collect();
        for id in &ids {
            assert!(index.contains(id));
        }
        for hash in manifest.chunks(4).take(64).map(|c| {
            let mut b = [0u8; 4];
            b[..c.len()].copy_from_slice(c);
            u32::from_le_bytes(b) & ((1 << HASH_BITS) - 1)
        }) {
            index.lookup(hash, |r, _| {
                assert!(index.work(r).is_some(), "a posting names a missing work");
            });
        }
    }

    let Ok(seg) = Segment::open(&segment_path, CONFIG_ID) else {
        return;
    };
    if seg.verify().is_err() {
        return;
    }
    // The segment passed its checksums and structural check: it must answer.
    let mut postings = Vec::new();
    seg.for_each_posting(|hash, p| {
        if postings.len() < MAX_CHECKED_POSTINGS {
            postings.push((hash, p));
        }
    });
    for &(hash, posting) in &postings {
        assert!(hash >> HASH_BITS == 0, "hash {hash:#x} too wide");
        let mut found = false;
        seg.lookup(hash, |p| found |= p == posting);
        assert!(
            found,
            "posting {posting:?} of hash {hash:#x} not found by lookup"
        );
    }
    let mut peaks = Vec::new();
    for work in 0..seg.works.len() as u32 {
        peaks.clear();
        seg.peaks_in(work, 0, u32::MAX, &mut peaks);
        assert!(peaks.is_sorted_by_key(|p| p.t_frame), "peaks out of order");
    }
    if let Ok(index) = Index::open(&dir) {
        let prints: Vec<Print> = postings
            .iter()
            .enumerate()
            .map(|(i, &(hash, p))| Print {
                hash,
                t_frame: i as u32,
                f_half_bins: p.f_half_bins,
                warp: 0,
            })
            .collect();
        let mut query_peaks: Vec<PeakPoint> = prints
            .iter()
            .map(|p| PeakPoint {
                t_frame: p.t_frame,
                f_half_bins: p.f_half_bins,
            })
            .collect();
        query_peaks.sort_unstable();
        // The brief set: every other peak (both sets are verified).
        let brief_peaks = query_peaks.iter().copied().step_by(2).collect();
        let query = Fingerprint {
            frames: prints.len() + 1,
            prints,
            peaks: query_peaks,
            brief_peaks,
        };
        let config = earmark::matcher::MatcherConfig::default();
        for m in earmark::matcher::find_matches(&index, &query, &config) {
            assert!(index.contains(&m.work_id), "a match names an unknown work");
        }
    }
}

fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// Catalog import, CSV and JSONL.
pub fn catalog(data: &[u8]) {
    use earmark::registry::catalog::{parse_csv, parse_jsonl};
    let base = Path::new("/catalog-base");
    let lines = data.iter().filter(|&&b| b == b'\n').count() + 1;
    let check = |rows: &[earmark::registry::catalog::RowResult]| {
        let mut ids = std::collections::HashSet::new();
        for row in rows {
            match row {
                Ok(row) => {
                    assert!(
                        (1..=lines).contains(&row.line),
                        "row line {} of {lines}",
                        row.line
                    );
                    assert!(
                        ids.insert(row.id.to_string()),
                        "id {} accepted twice",
                        row.id
                    );
                    assert!(!row.title.is_empty() || row.title.is_empty());
                }
                Err(err) => assert!(!err.reason.is_empty(), "a row error without a reason"),
            }
        }
    };
    if let Ok(rows) = parse_csv(data, base) {
        check(&rows);
    }
    if let Ok(rows) = parse_jsonl(data, base) {
        check(&rows);
    }
}

/// Manifest kinds of the scan_manifest target (chosen by the first byte):
/// file name, and whether the harness compresses the content itself.
const MANIFESTS: &[(&str, Compress)] = &[
    ("m.jsonl", Compress::No),
    ("m.csv", Compress::No),
    ("m.tsv", Compress::No),
    ("m.json", Compress::No),
    ("m.jsonl.gz", Compress::Gzip),
    ("m.csv.zst", Compress::Zstd),
    ("m.jsonl.gz", Compress::No),
    ("m.csv.zst", Compress::No),
    ("manifest", Compress::No),
];

#[derive(Clone, Copy)]
enum Compress {
    No,
    Gzip,
    Zstd,
}

fn scan_options() -> InputOptions {
    InputOptions {
        path_field: None,
        audio_column: None,
        max_member_bytes: MEMBER_LIMIT_BYTES,
    }
}

/// Runs detection and emission of one input file; checks the events.
fn scan_file(path: &Path, max_items: Option<usize>) {
    let options = scan_options();
    let Ok(spec) = earmark::scan::input::detect(path, &options) else {
        return;
    };
    let mut events = Vec::new();
    let result = earmark::scan::input::emit_input(0, &spec, &options, &mut |event| {
        events.push(event);
        Ok(())
    });
    if result.is_err() {
        // An input that cannot be opened at all emits nothing or a start only.
        assert!(
            events.len() <= 1,
            "an emission error after items were emitted"
        );
        return;
    }
    check_events(&events, max_items);
}

fn check_events(events: &[Event], max_items: Option<usize>) {
    let (Some(Event::InputStart { input: 0, .. }), Some(Event::InputEnd { input: 0, complete })) =
        (events.first(), events.last())
    else {
        panic!("an input's events must start with InputStart and end with InputEnd");
    };
    let items: Vec<_> = events[1..events.len() - 1]
        .iter()
        .map(|e| match e {
            Event::Item(item) => item,
            _ => panic!("a second start or end inside an input"),
        })
        .collect();
    if let Some(max) = max_items {
        assert!(items.len() <= max, "{} items from {max} lines", items.len());
    }
    let mut last = None;
    for item in &items {
        assert_eq!(item.input, 0);
        if let Some(position) = item.position {
            assert!(last < Some(position), "positions must increase");
            last = Some(position);
        }
        match &item.payload {
            Payload::Bytes { data, .. } => {
                assert!(
                    data.len() as u64 <= MEMBER_LIMIT_BYTES,
                    "cell over the limit"
                )
            }
            Payload::Sample(members) => {
                for m in members {
                    if let Some(d) = &m.data {
                        assert_eq!(d.len() as u64, m.size, "member data differs from its size");
                    }
                }
            }
            Payload::Failed(reason) => assert!(!reason.is_empty()),
            Payload::File(_) => {}
        }
    }
    if !complete {
        assert!(
            matches!(items.last().map(|i| &i.payload), Some(Payload::Failed(_))),
            "an input that stopped early must end with an error item"
        );
    }
}

/// Manifests (JSONL, CSV, TSV; plain, gzip, zstd; detected by content).
pub fn scan_manifest(data: &[u8]) {
    let Some((&selector, content)) = data.split_first() else {
        return;
    };
    let (name, compress) = MANIFESTS[usize::from(selector) % MANIFESTS.len()];
    let bytes = match compress {
        Compress::No => content.to_vec(),
        Compress::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(content).expect("gzip to memory");
            e.finish().expect("gzip to memory")
        }
        Compress::Zstd => zstd::encode_all(content, 1).expect("zstd to memory"),
    };
    let dir = scratch().join("manifest");
    std::fs::create_dir_all(&dir).expect("manifest directory");
    let path = dir.join(name);
    std::fs::write(&path, &bytes).expect("write manifest");
    // Compressed input may hold any number of lines; plain input as many as it has.
    let max_items = matches!(compress, Compress::No).then(|| {
        content
            .iter()
            .filter(|&&b| b == b'\n' || b == b'\r')
            .count()
            + 1
    });
    let max_items = if name.ends_with(".gz") || name.ends_with(".zst") || name == "manifest" {
        None
    } else {
        max_items
    };
    scan_file(&path, max_items);
    let _ = std::fs::remove_file(&path);
}

/// One sample as seen by a pass over a shard: key, and (name, size) per member.
type SampleShape = (String, Vec<(String, u64)>);

fn shard_pass(data: &[u8], load: Option<u64>) -> (Vec<SampleShape>, bool) {
    let mut reader = SampleReader::new(Cursor::new(data), load);
    let mut samples = Vec::new();
    loop {
        match reader.next_sample() {
            Ok(Some(sample)) => {
                assert!(!sample.key.is_empty(), "a sample without a key");
                let mut suffixes = std::collections::HashSet::new();
                let mut members = Vec::new();
                for m in sample.members {
                    assert!(
                        suffixes.insert(m.suffix.clone()),
                        "duplicate suffix accepted"
                    );
                    if let Some(d) = &m.data {
                        assert_eq!(d.len() as u64, m.size, "loaded data differs from its size");
                        assert!(load.is_some_and(|limit| m.size <= limit));
                    }
                    members.push((m.name, m.size));
                }
                samples.push((sample.key, members));
            }
            Ok(None) => return (samples, true),
            Err(reason) => {
                assert!(!reason.is_empty());
                return (samples, false);
            }
        }
    }
}

/// WebDataset shards through the strict tar reader.
pub fn scan_tar(data: &[u8]) {
    let (validated, valid) = shard_pass(data, None);
    let (screened, screenable) = shard_pass(data, Some(MEMBER_LIMIT_BYTES));
    assert_eq!(
        valid, screenable,
        "the two passes disagree on refusing the shard"
    );
    assert_eq!(validated, screened, "the two passes see different samples");
    let members: u64 = screened.iter().map(|(_, m)| m.len() as u64).sum();
    assert!(
        members * 512 <= data.len() as u64,
        "more members than headers"
    );
}

/// Hugging Face parquet files.
pub fn scan_parquet(data: &[u8]) {
    let dir = scratch().join("parquet");
    std::fs::create_dir_all(&dir).expect("parquet directory");
    let path = dir.join("data.parquet");
    std::fs::write(&path, data).expect("write parquet");
    scan_file(&path, None);
    let _ = std::fs::remove_file(&path);
}

/// Every request message of both services, decoded and re-encoded.
pub fn proto(data: &[u8]) {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    macro_rules! round_trip {
        ($($t:ty),* $(,)?) => {{
            let decoders: &[fn(&[u8])] = &[$(|b: &[u8]| {
                if let Ok(m) = <$t>::decode(b) {
                    let encoded = m.encode_to_vec();
                    assert_eq!(encoded.len(), m.encoded_len());
                    let again = <$t>::decode(&encoded[..]).expect("re-encoded message");
                    // Compared as encoded: a NaN field is not equal to itself.
                    assert_eq!(again.encode_to_vec(), encoded, "a message changed in a round trip");
                }
            }),*];
            decoders[usize::from(selector) % decoders.len()](bytes);
        }};
    }
    round_trip!(
        pb::ScreenRequest,
        pb::ScreenFingerprintsRequest,
        pb::FingerprintHeader,
        pb::PrintBatch,
        pb::PeakBatch,
        pb::SubmissionMetadata,
        pb::RegisterWorkRequest,
        pb::SetConsentRequest,
        pb::GetWorkRequest,
        pb::ListWorksRequest,
        pb::RemoveWorkRequest,
        pb::ConsentHistoryRequest,
        pb::AuditLogRequest,
    );
    if let Ok(pb::ScreenFingerprintsRequest {
        part: Some(pb::screen_fingerprints_request::Part::Peaks(batch)),
    }) = pb::ScreenFingerprintsRequest::decode(bytes)
    {
        let mut peaks = Vec::new();
        if earmark::fingerprint::file::append_peaks(&mut peaks, &batch).is_ok() {
            assert!(peaks.is_sorted());
        }
    }
}

/// The methods of the service target: path and shape.
#[derive(Clone, Copy)]
enum Shape {
    Unary,
    ClientStream,
    ServerStream,
}

const METHODS: &[(&str, Shape)] = &[
    ("/earmark.v1.Screening/Screen", Shape::ClientStream),
    (
        "/earmark.v1.Screening/ScreenFingerprints",
        Shape::ClientStream,
    ),
    ("/earmark.v1.Registry/RegisterWork", Shape::ClientStream),
    ("/earmark.v1.Registry/SetConsent", Shape::Unary),
    ("/earmark.v1.Registry/GetWork", Shape::Unary),
    ("/earmark.v1.Registry/ListWorks", Shape::Unary),
    ("/earmark.v1.Registry/RemoveWork", Shape::Unary),
    ("/earmark.v1.Registry/ConsentHistory", Shape::Unary),
    ("/earmark.v1.Registry/AuditLog", Shape::ServerStream),
];

/// Packs a method selector and raw messages into a `service` input.
pub fn service_input(method: u8, messages: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![method];
    for m in messages {
        let len = u16::try_from(m.len()).expect("message under 64 KiB");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(m);
    }
    out
}

fn split_messages(mut rest: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some((len, tail)) = rest.split_first_chunk::<2>() {
        let n = usize::from(u16::from_le_bytes(*len)).min(tail.len());
        out.push(tail[..n].to_vec());
        rest = &tail[n..];
    }
    out
}

mod raw {
    //! A gRPC codec that sends and receives messages as raw bytes, so the
    //! server's own protobuf decoding sees the fuzzer's bytes.
    use prost::bytes::{Buf, BufMut};
    use tonic::Status;
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

    #[derive(Debug, Clone, Copy, Default)]
    pub struct RawCodec;
    #[derive(Debug)]
    pub struct RawEncoder;
    #[derive(Debug)]
    pub struct RawDecoder;

    impl Encoder for RawEncoder {
        type Item = Vec<u8>;
        type Error = Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
            dst.put_slice(&item);
            Ok(())
        }
    }

    impl Decoder for RawDecoder {
        type Item = Vec<u8>;
        type Error = Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
            let mut out = vec![0u8; src.remaining()];
            src.copy_to_slice(&mut out);
            Ok(Some(out))
        }
    }

    impl Codec for RawCodec {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = RawEncoder;
        type Decoder = RawDecoder;
        fn encoder(&mut self) -> RawEncoder {
            RawEncoder
        }
        fn decoder(&mut self) -> RawDecoder {
            RawDecoder
        }
    }
}

/// A loopback server over a seeded data directory, shared by all inputs.
struct LiveServer {
    runtime: tokio::runtime::Runtime,
    channel: tonic::transport::Channel,
    _server: earmark::service::ServerHandle,
    _dir: tempfile::TempDir,
}

fn live_server() -> &'static LiveServer {
    static SERVER: OnceLock<LiveServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let dir = tempfile::tempdir().expect("server data directory");
        let data = seed_data_dir(dir.path());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let (server, channel) = runtime.block_on(async {
            let mut config = earmark::service::ServerConfig::new(data);
            config.auth = earmark::service::AuthMode::InsecureNoAuth;
            config.workers = 1;
            config.limits = earmark::service::Limits::for_workers(1);
            config.limits.max_upload_bytes = 1 << 20;
            config.limits.max_audio_s = 60.0;
            config.drain_grace = Duration::from_millis(10);
            config.open_retry = Duration::from_millis(50);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("loopback listener");
            let server = earmark::service::start(config, listener, None)
                .await
                .expect("start server");
            assert!(
                server.wait_ready(Duration::from_secs(60)).await,
                "server ready"
            );
            let url = format!("http://{}", server.local_addr());
            let channel = earmark::client::connect(&url, None).await.expect("connect");
            (server, channel)
        });
        LiveServer {
            runtime,
            channel,
            _server: server,
            _dir: dir,
        }
    })
}

/// A short synthetic tune (8 kHz mono 16-bit WAV): notes changing every
/// 125 ms, so the fingerprint has peaks to hash.
pub fn tune_wav(seconds: f64, seed: u32) -> Vec<u8> {
    let rate = 8_000u32;
    let n = (seconds * f64::from(rate)) as u32;
    let mut state = seed.wrapping_mul(2_654_435_761).max(1);
    let mut freq = 440.0f64;
    let mut pcm = Vec::with_capacity(n as usize * 2);
    for i in 0..n {
        if i % 1_000 == 0 {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            freq = 200.0 + f64::from(state % 3_000);
        }
        let t = f64::from(i) / f64::from(rate);
        let s = 0.4 * (2.0 * std::f64::consts::PI * freq * t).sin()
            + 0.2 * (2.0 * std::f64::consts::PI * freq * 1.5 * t).sin();
        pcm.extend_from_slice(&((s * 20_000.0) as i16).to_le_bytes());
    }
    let mut wav = Vec::with_capacity(44 + pcm.len());
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + pcm.len() as u32).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes());
    wav.extend_from_slice(&rate.to_le_bytes());
    wav.extend_from_slice(&(rate * 2).to_le_bytes());
    wav.extend_from_slice(&2u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&(pcm.len() as u32).to_le_bytes());
    wav.extend_from_slice(&pcm);
    wav
}

/// Registers one synthetic work (opted out of AI training) in `dir`.
fn seed_data_dir(dir: &Path) -> earmark::data_dir::DataDir {
    use earmark::registry::{ConsentStatus, NewConsent, NewWork, ReferenceAudio, Scope, WorkId};
    let data = earmark::data_dir::DataDir::new(dir);
    let catalog = earmark::registration::Catalog::open(&data).expect("open catalog");
    let path = dir.join("tune.wav");
    std::fs::write(&path, tune_wav(8.0, 7)).expect("write tune");
    let work = earmark::registration::prepare_work("fuzz-tune", &path, &DecodeLimits::default())
        .expect("fingerprint the tune");
    let now = catalog.registry.now();
    let metadata = NewWork {
        id: WorkId::parse("fuzz-tune").expect("id"),
        title: "Tune".into(),
        artists: vec!["Fuzz".into()],
        isrc: None,
        iswc: None,
        holder: "Holder".into(),
        holder_isni: None,
        reference: ReferenceAudio {
            duration_s: work.info.duration_s,
            fingerprint_config: earmark::registration::fingerprint_config_id(),
            audio_sha256: earmark::content::sha256_file(&path).expect("sha"),
            source_file: "tune.wav".into(),
        },
    };
    let consent = NewConsent::new(Scope::AiTraining, ConsentStatus::OptedOut, "Holder", now);
    catalog
        .register(&work, metadata, &[consent], "fuzz-seed")
        .expect("register");
    data
}

/// Raw requests to every method of a live loopback server.
pub fn service(data: &[u8]) {
    use tonic::codegen::http::uri::PathAndQuery;
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let (path, shape) = METHODS[usize::from(selector) % METHODS.len()];
    let messages = split_messages(rest);
    let server = live_server();
    let status = server.runtime.block_on(async {
        let mut grpc = tonic::client::Grpc::new(server.channel.clone());
        grpc.ready().await.expect("channel ready");
        let path = PathAndQuery::from_static(path);
        let call = async {
            match shape {
                Shape::ClientStream => grpc
                    .client_streaming(
                        tonic::Request::new(tokio_stream::iter(messages)),
                        path,
                        raw::RawCodec,
                    )
                    .await
                    .err(),
                Shape::Unary => grpc
                    .unary(
                        tonic::Request::new(messages.into_iter().next().unwrap_or_default()),
                        path,
                        raw::RawCodec,
                    )
                    .await
                    .err(),
                Shape::ServerStream => {
                    let request =
                        tonic::Request::new(messages.into_iter().next().unwrap_or_default());
                    match grpc.server_streaming(request, path, raw::RawCodec).await {
                        Ok(response) => {
                            let mut stream = response.into_inner();
                            loop {
                                match stream.message().await {
                                    Ok(Some(_)) => {}
                                    Ok(None) => break None,
                                    Err(status) => break Some(status),
                                }
                            }
                        }
                        Err(status) => Some(status),
                    }
                }
            }
        };
        tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .expect("a call did not finish in time")
    });
    if let Some(status) = status {
        // The gRPC framework itself answers a unary request that does not
        // parse with INTERNAL, as the gRPC status-code table prescribes;
        // anything else INTERNAL or UNKNOWN comes from earmark.
        let framework_parse_error = matches!(shape, Shape::Unary | Shape::ServerStream)
            && status.code() == tonic::Code::Internal
            && status
                .message()
                .starts_with("failed to decode Protobuf message");
        assert!(
            framework_parse_error
                || !matches!(status.code(), tonic::Code::Internal | tonic::Code::Unknown),
            "{path}: {status:?}"
        );
    }
}

/// Starting inputs of a target (written to its corpus by `scripts/fuzz.sh`).
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    match target {
        "decode" => vec![[&[1u8][..], &tune_wav(0.5, 1)].concat()],
        "fpfile" => vec![seed_fpfile()],
        "index" => seed_index(),
        "catalog" => vec![
            b"id,file,title,holder,consent,scope,artists\nw1,a.ogg,Title,Holder,opted-out,ai-training,A;B\nw2,b.ogg,T2,H2,opted-in,ai-training;tdm,\n".to_vec(),
            b"{\"id\":\"w1\",\"file\":\"a.ogg\",\"title\":\"T\",\"holder\":\"H\",\"consent\":\"opted-out\",\"artists\":[\"A\"],\"territory\":\"DE\",\"effective_from\":\"2025-01-01T00:00:00Z\"}\n{\"id\":\"w2\",\"file\":\"/abs/b.flac\",\"title\":\"T\",\"holder\":\"H\",\"isrc\":\"USRC17607839\"}\n".to_vec(),
        ],
        "scan_manifest" => vec![
            b"\x00{\"audio_filepath\":\"a.wav\",\"duration\":1.0}\n{\"audio_filepath\":\"b/c.flac\"}\n\n{\"path\":3}\n".to_vec(),
            b"\x01path,text\na.wav,hello\n\"b,c.wav\",\"multi\nline\"\n".to_vec(),
            b"\x02audio_path\tlabel\nx.wav\t1\n".to_vec(),
            b"\x04{\"path\":\"a.wav\"}\n".to_vec(),
            b"\x05filepath\na.wav\n".to_vec(),
        ],
        "scan_tar" => vec![seed_tar()],
        "scan_parquet" => vec![seed_parquet()],
        "proto" => seed_messages()
            .into_iter()
            .map(|(selector, m)| [&[selector][..], &m].concat())
            .collect(),
        "service" => seed_service(),
        _ => Vec::new(),
    }
}

fn seed_fpfile() -> Vec<u8> {
    let mut fp = StreamingFingerprinter::new(Side::Query);
    let mut samples = Vec::new();
    let info = decode_bytes(
        tune_wav(2.0, 3),
        "seed",
        Some("wav"),
        &DecodeLimits::default(),
        RATE_HZ,
        |b| samples.extend_from_slice(b),
    )
    .expect("seed tune decodes");
    fp.push(&samples);
    let fingerprint = fp.finish();
    let file = earmark::fingerprint::file::FingerprintFile {
        header: pb::FingerprintHeader {
            submission: Some(pb::SubmissionMetadata {
                submission_id: "seed".into(),
                file_name: "seed.wav".into(),
                ..Default::default()
            }),
            config_id: CONFIG_ID,
            frames: fingerprint.frames as u64,
            duration_s: info.duration_s,
        },
        fingerprint,
    };
    let bytes = file.to_bytes();
    let body = &bytes[earmark::fingerprint::file::MAGIC.len()..];
    [&[1u8][..], body].concat()
}

fn seed_index() -> Vec<Vec<u8>> {
    let dir = tempfile::tempdir().expect("seed index directory");
    let writer = IndexWriter::open(dir.path()).expect("index writer");
    let mut inputs = Vec::new();
    let works: Vec<(SegmentWork, Vec<Print>, Vec<PeakPoint>)> = (0..3u32)
        .map(|w| {
            let prints: Vec<Print> = (0..40u32)
                .map(|i| Print {
                    hash: (i * 7_919 + w * 104_729) % (1 << HASH_BITS),
                    t_frame: i * 3,
                    f_half_bins: (i * 5 % 200) as u8,
                    warp: 0,
                })
                .collect();
            let peaks: Vec<PeakPoint> = (0..30u32)
                .map(|i| PeakPoint {
                    t_frame: i * 4,
                    f_half_bins: (i * 11 % 250) as u8,
                })
                .collect();
            let work = SegmentWork {
                id: format!("work-{w}"),
                duration_s: 5.0,
                prints: prints.len() as u64,
            };
            (work, prints, peaks)
        })
        .collect();
    let entries: Vec<NewWork<'_>> = works
        .iter()
        .map(|(work, prints, peaks)| NewWork {
            work,
            prints,
            peaks,
        })
        .collect();
    writer.add_works(&entries).expect("write seed segment");
    writer.remove_work("work-1").expect("tombstone");
    let manifest = std::fs::read(dir.path().join(MANIFEST_FILE)).expect("manifest");
    let segment = std::fs::read(dir.path().join(SEGMENT_FILE)).expect("segment");
    inputs.push(index_input(0, &manifest, &segment));
    inputs.push(index_input(
        INDEX_GENERATED_MANIFEST | INDEX_FIX_BODY_CRC,
        &[],
        &segment,
    ));
    inputs
}

fn seed_tar() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(1_700_000_000);
        header.set_cksum();
        builder
            .append_data(&mut header, name, data)
            .expect("tar to memory");
    };
    add("s1.flac", b"fLaC not really");
    add("s1.json", b"{\"text\":\"hi\"}");
    add("dir/s2.seg.wav", b"RIFF....WAVE");
    add("__meta__", b"skipped");
    builder.into_inner().expect("tar to memory")
}

fn seed_parquet() -> Vec<u8> {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, BinaryArray, RecordBatch, StringArray, StructArray};
    use arrow_schema::{DataType, Field, Fields};
    let fields = Fields::from(vec![
        Field::new("bytes", DataType::Binary, true),
        Field::new("path", DataType::Utf8, true),
    ]);
    let bytes: ArrayRef = Arc::new(BinaryArray::from(vec![
        Some(&b"RIFFxxxxWAVE"[..]),
        None,
        Some(&b"ID3"[..]),
    ]));
    let paths: ArrayRef = Arc::new(StringArray::from(vec![Some("a.wav"), Some("b.wav"), None]));
    let audio = StructArray::new(fields, vec![bytes, paths], None);
    let text: ArrayRef = Arc::new(StringArray::from(vec!["one", "two", "three"]));
    let batch =
        RecordBatch::try_from_iter(vec![("audio", Arc::new(audio) as ArrayRef), ("text", text)])
            .expect("record batch");
    let mut out = Vec::new();
    let mut writer = parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), None)
        .expect("parquet writer");
    writer.write(&batch).expect("write batch");
    writer.close().expect("close parquet");
    out
}

/// One valid encoding of each message type the proto target decodes, with
/// its selector.
fn seed_messages() -> Vec<(u8, Vec<u8>)> {
    let meta = pb::SubmissionMetadata {
        submission_id: "s".into(),
        file_name: "a.wav".into(),
        purpose: pb::Scope::AiTraining.into(),
        territory: "DE".into(),
        ..Default::default()
    };
    vec![
        (
            0,
            pb::ScreenRequest {
                part: Some(pb::screen_request::Part::Metadata(meta.clone())),
            }
            .encode_to_vec(),
        ),
        (
            1,
            pb::ScreenFingerprintsRequest {
                part: Some(pb::screen_fingerprints_request::Part::Peaks(
                    pb::PeakBatch {
                        t_frames: vec![3, 1, 2],
                        f_half_bins: vec![10, 20, 30],
                        brief: true,
                    },
                )),
            }
            .encode_to_vec(),
        ),
        (
            3,
            pb::PrintBatch {
                hashes: vec![1, 2],
                t_frames: vec![0, 5],
                f_half_bins: vec![7, 9],
                warps: vec![0, 1],
            }
            .encode_to_vec(),
        ),
        (5, meta.encode_to_vec()),
        (
            8,
            pb::GetWorkRequest {
                work_id: "fuzz-tune".into(),
            }
            .encode_to_vec(),
        ),
    ]
}

fn seed_service() -> Vec<Vec<u8>> {
    let meta = pb::SubmissionMetadata {
        file_name: "a.wav".into(),
        purpose: pb::Scope::AiTraining.into(),
        ..Default::default()
    };
    let screen = vec![
        pb::ScreenRequest {
            part: Some(pb::screen_request::Part::Metadata(meta.clone())),
        }
        .encode_to_vec(),
        pb::ScreenRequest {
            part: Some(pb::screen_request::Part::Chunk(tune_wav(1.0, 7))),
        }
        .encode_to_vec(),
    ];
    let prints = vec![
        pb::ScreenFingerprintsRequest {
            part: Some(pb::screen_fingerprints_request::Part::Header(
                pb::FingerprintHeader {
                    submission: Some(meta),
                    config_id: CONFIG_ID,
                    frames: 100,
                    duration_s: 1.0,
                },
            )),
        }
        .encode_to_vec(),
        pb::ScreenFingerprintsRequest {
            part: Some(pb::screen_fingerprints_request::Part::Prints(
                pb::PrintBatch {
                    hashes: vec![1, 2, 3],
                    t_frames: vec![0, 5, 9],
                    f_half_bins: vec![7, 9, 11],
                    warps: Vec::new(),
                },
            )),
        }
        .encode_to_vec(),
    ];
    let get = vec![
        pb::GetWorkRequest {
            work_id: "fuzz-tune".into(),
        }
        .encode_to_vec(),
    ];
    vec![
        service_input(0, &screen),
        service_input(1, &prints),
        service_input(4, &get),
        service_input(5, &[Vec::new()]),
        service_input(8, &[Vec::new()]),
    ]
}

/// Start-up of a fuzz target (before libFuzzer reads its corpus): writes the
/// seeds, and replaces libFuzzer's panic hook, which aborts on every panic,
/// with one that only reports it. A panic earmark catches and turns into an
/// error (the parquet reader's asserts, say) is then handled like any other
/// refused input; one that escapes earmark still ends the process (it cannot
/// unwind out of the fuzzer's C entry point) and is recorded as a crash.
pub fn init(target: &str) {
    write_seeds(target);
    std::panic::set_hook(Box::new(|info| {
        eprintln!("panic: {info}");
    }));
}

/// Writes the seeds of `target` into `$EARMARK_FUZZ_SEEDS` (when set).
pub fn write_seeds(target: &str) {
    let Some(dir) = std::env::var_os("EARMARK_FUZZ_SEEDS").map(PathBuf::from) else {
        return;
    };
    std::fs::create_dir_all(&dir).expect("seed directory");
    for (i, seed) in seeds(target).iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i}")), seed).expect("write seed");
    }
}

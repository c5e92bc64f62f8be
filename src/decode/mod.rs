//! Decoding: any supported container/codec → mono `f32` PCM at the fingerprint rate.
//!
//! * The container is found by **content** (symphonia's probe); the file extension is
//!   only a hint. WAV, AIFF, CAF, FLAC, OGG/Vorbis, MP3, AAC and ALAC in MP4/M4A,
//!   MKV/WebM, and Ogg/Opus (libopus adapter, cargo feature `opus`) are supported.
//! * Audio is down-mixed to mono and resampled with rubato's synchronous FFT
//!   resampler, then handed to a sink **block by block**: a 3-hour file never sits
//!   whole in memory unless the caller collects it.
//! * [`DecodeLimits`] (bytes, duration, channels, sample rate) are checked before
//!   decoding starts where the container declares them, and enforced while decoding
//!   where it does not. Every failure is a [`DecodeError`] naming the input and the
//!   reason; nothing here panics on hostile input.
//! * A file cut short is an error, not a shorter file: where the container declares
//!   a length, decoding must reach it (for MP3, when a Xing/Info tag declares it:
//!   [`mp3_tag`]); an Ogg file (no declared length) must end with a whole
//!   end-of-stream page ([`ogg_end`]); a stream without a declared length
//!   (or, like raw ADTS AAC, with one estimated from its size) must not end
//!   inside a packet. An MP3 without a Xing/Info tag must not end inside a
//!   frame ([`mpeg_frames`]): symphonia's reader would drop a partial last
//!   frame silently.

mod error;
mod limits;
mod mp3_tag;
mod mpeg_frames;
mod ogg_end;
mod resample;

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::LazyLock;

use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::codecs::registry::CodecRegistry;
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, TrackType};
use symphonia::core::io::{MediaSource, MediaSourceStream, ReadOnlySource};
use symphonia::core::meta::MetadataOptions;

pub use error::DecodeError;
pub use limits::DecodeLimits;
pub use resample::{MonoResampler, downmix};

use limits::{LimitedReader, check_channels, check_duration, check_rate, remap_limit_error};

/// Consecutive undecodable packets after which the stream is declared corrupt.
const MAX_CONSECUTIVE_BAD_PACKETS: usize = 64;
/// A stream whose demuxer hits end-of-file before this fraction of its declared
/// length is reported as truncated.
const TRUNCATION_TOLERANCE: f64 = 0.95;
/// Seconds a stream that ends normally may fall short of a declared length
/// (beyond [`TRUNCATION_TOLERANCE`]) before it is reported as truncated:
/// encoder delay and padding of a short file.
const TRUNCATION_SLACK_S: f64 = 0.1;
/// `FormatInfo::short_name` of symphonia's ADTS (raw AAC) reader.
const ADTS_READER_NAME: &str = "aac";

/// What the decoder learned about the input.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioInfo {
    pub source_sample_rate_hz: u32,
    pub channels: usize,
    pub codec: String,
    /// Seconds of audio decoded (source time).
    pub duration_s: f64,
    /// Packets skipped because they failed to decode.
    pub bad_packets: usize,
}

/// A whole decoded input (use [`decode_file_stream`] for long inputs).
#[derive(Debug, Clone)]
pub struct DecodedAudio {
    pub samples: Vec<f32>,
    pub sample_rate_hz: u32,
    pub info: AudioInfo,
}

static CODECS: LazyLock<CodecRegistry> = LazyLock::new(|| {
    let mut registry = CodecRegistry::new();
    symphonia::default::register_enabled_codecs(&mut registry);
    #[cfg(feature = "opus")]
    registry.register_audio_decoder::<symphonia_adapter_libopus::OpusDecoder>();
    registry
});

/// Decodes a file to mono PCM at `target_rate_hz`, collecting all samples.
pub fn decode_file(
    path: &Path,
    limits: &DecodeLimits,
    target_rate_hz: u32,
) -> Result<DecodedAudio, DecodeError> {
    let mut samples = Vec::new();
    let info = decode_file_stream(path, limits, target_rate_hz, |block| {
        samples.extend_from_slice(block)
    })?;
    Ok(DecodedAudio {
        samples,
        sample_rate_hz: target_rate_hz,
        info,
    })
}

/// Decodes a file, handing mono blocks at `target_rate_hz` to `sink` as they come.
pub fn decode_file_stream(
    path: &Path,
    limits: &DecodeLimits,
    target_rate_hz: u32,
    sink: impl FnMut(&[f32]),
) -> Result<AudioInfo, DecodeError> {
    let input = path.display().to_string();
    let mut file = File::open(path).map_err(|source| DecodeError::Open {
        input: input.clone(),
        source,
    })?;
    let bytes = file
        .metadata()
        .map_err(|source| DecodeError::Open {
            input: input.clone(),
            source,
        })?
        .len();
    if bytes == 0 {
        return Err(DecodeError::Empty { input });
    }
    if bytes > limits.max_bytes {
        return Err(DecodeError::TooLarge {
            input,
            bytes,
            max_bytes: limits.max_bytes,
        });
    }
    let facts = container_facts(bytes, |offset, len| {
        file.seek(SeekFrom::Start(offset))?;
        let mut read = Vec::with_capacity(len);
        (&mut file).take(len as u64).read_to_end(&mut read)?;
        Ok(read)
    })
    .and_then(|facts| {
        file.seek(SeekFrom::Start(0)).map_err(InspectError::Read)?;
        Ok(facts)
    })
    .map_err(|err| err.into_decode_error(&input))?;
    let extension = path.extension().and_then(|e| e.to_str());
    decode_source(
        Box::new(file),
        &input,
        facts,
        extension,
        limits,
        target_rate_hz,
        sink,
    )
}

/// Decodes from any reader (a network stream, an archive member…). The byte limit
/// is enforced while reading.
pub fn decode_reader(
    reader: impl Read + Send + Sync + 'static,
    input: &str,
    extension_hint: Option<&str>,
    limits: &DecodeLimits,
    target_rate_hz: u32,
    sink: impl FnMut(&[f32]),
) -> Result<AudioInfo, DecodeError> {
    let counted = LimitedReader {
        inner: reader,
        remaining: limits.max_bytes,
        max_bytes: limits.max_bytes,
        total: 0,
    };
    let result = decode_source(
        Box::new(ReadOnlySource::new(counted)),
        input,
        ContainerFacts::default(),
        extension_hint,
        limits,
        target_rate_hz,
        sink,
    );
    remap_limit_error(result, input, limits.max_bytes)
}

/// Decodes an in-memory buffer.
pub fn decode_bytes(
    bytes: Vec<u8>,
    input: &str,
    extension_hint: Option<&str>,
    limits: &DecodeLimits,
    target_rate_hz: u32,
    sink: impl FnMut(&[f32]),
) -> Result<AudioInfo, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty {
            input: input.to_string(),
        });
    }
    if bytes.len() as u64 > limits.max_bytes {
        return Err(DecodeError::TooLarge {
            input: input.to_string(),
            bytes: bytes.len() as u64,
            max_bytes: limits.max_bytes,
        });
    }
    let facts = container_facts(bytes.len() as u64, |offset, len| {
        let from = usize::try_from(offset).unwrap_or(usize::MAX);
        let rest = bytes.get(from..).unwrap_or_default();
        Ok(rest.get(..len).unwrap_or(rest).to_vec())
    })
    .map_err(|err| err.into_decode_error(input))?;
    decode_source(
        Box::new(io::Cursor::new(bytes)),
        input,
        facts,
        extension_hint,
        limits,
        target_rate_hz,
        sink,
    )
}

/// What [`container_facts`] learned from the raw bytes.
#[derive(Debug, Clone, Copy, Default)]
struct ContainerFacts {
    /// The length the container declares comes from a tag written with the
    /// stream (an MP3 Xing/Info frame count), not from an estimate: a stream
    /// that ends short of it was cut.
    length_from_tag: bool,
}

/// Why [`container_facts`] refused an input.
#[derive(Debug)]
enum InspectError {
    Read(io::Error),
    Incomplete(String),
}

impl From<io::Error> for InspectError {
    fn from(err: io::Error) -> Self {
        Self::Read(err)
    }
}

impl InspectError {
    fn into_decode_error(self, input: &str) -> DecodeError {
        match self {
            Self::Read(source) => DecodeError::Read {
                input: input.to_string(),
                source,
            },
            Self::Incomplete(reason) => DecodeError::Unterminated {
                input: input.to_string(),
                reason,
            },
        }
    }
}

/// Checks that an Ogg input of `size` bytes ends with a whole end-of-stream
/// page, and whether an MP3 input declares its length in a tag.
/// `read_at(offset, len)` returns up to `len` bytes from `offset`.
fn container_facts(
    size: u64,
    mut read_at: impl FnMut(u64, usize) -> Result<Vec<u8>, InspectError>,
) -> Result<ContainerFacts, InspectError> {
    let head = read_at(0, mp3_tag::FRAME_SEARCH_BYTES)?;
    let mut facts = ContainerFacts::default();
    if ogg_end::is_ogg(&head) {
        let tail_bytes = size.min(ogg_end::MAX_PAGE_BYTES as u64);
        let tail = read_at(size - tail_bytes, ogg_end::MAX_PAGE_BYTES)?;
        if let Some(reason) = ogg_end::incompleteness(&tail) {
            return Err(InspectError::Incomplete(reason.to_string()));
        }
    } else if let Some(tag_bytes) = mp3_tag::id3v2_len(&head) {
        // The first frame follows the ID3v2 tag, which may hold cover art.
        let frames = read_at(tag_bytes as u64, mp3_tag::FRAME_SEARCH_BYTES)?;
        facts.length_from_tag = mp3_tag::declares_frame_count(&frames);
        if !facts.length_from_tag
            && let Some(first) = mp3_tag::first_frame(&frames)
        {
            let first = (tag_bytes + first) as u64;
            if let Some(cut) = mpeg_frames::cut_inside_frame(first, size, &mut read_at)? {
                return Err(InspectError::Incomplete(format!(
                    "the input ends inside MPEG frame {} after {:.2} s of audio",
                    cut.whole_frames + 1,
                    cut.whole_s
                )));
            }
        }
    }
    Ok(facts)
}

/// Runs a call into the demuxers and codecs, turning a panic into an error:
/// some of them index out of bounds on malformed data (a Vorbis codebook, for
/// one) instead of returning an error, and one hostile file must fail alone,
/// not take the scan or the server down. The sink and the resampler are
/// earmark's own code and are not guarded.
fn guarded<T>(input: &str, call: impl FnOnce() -> T) -> Result<T, DecodeError> {
    std::panic::catch_unwind(AssertUnwindSafe(call)).map_err(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        DecodeError::Corrupt {
            input: input.to_string(),
            reason: format!("the decoder failed on malformed data ({message})"),
        }
    })
}

/// The truncation error of a stream that decoded `decoded_frames` of
/// `declared_frames`, if it fell short by more than [`TRUNCATION_TOLERANCE`]
/// and `slack_s` seconds.
fn short_of_declared(
    input: &str,
    decoded_frames: u64,
    declared_frames: Option<u64>,
    source_rate_hz: u32,
    slack_s: f64,
) -> Option<DecodeError> {
    let decoded_s = decoded_frames as f64 / f64::from(source_rate_hz);
    let declared_s = declared_frames? as f64 / f64::from(source_rate_hz);
    (decoded_s < declared_s * TRUNCATION_TOLERANCE - slack_s).then(|| DecodeError::Truncated {
        input: input.to_string(),
        decoded_s,
        declared_s,
    })
}

fn decode_source(
    source: Box<dyn MediaSource>,
    input: &str,
    facts: ContainerFacts,
    extension_hint: Option<&str>,
    limits: &DecodeLimits,
    target_rate_hz: u32,
    mut sink: impl FnMut(&[f32]),
) -> Result<AudioInfo, DecodeError> {
    let input_name = || input.to_string();
    let mss = MediaSourceStream::new(source, Default::default());
    let mut hint = Hint::new();
    if let Some(ext) = extension_hint {
        hint.with_extension(ext);
    }
    let mut format = guarded(input, || {
        symphonia::default::get_probe().probe(
            &hint,
            mss,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
    })?
    .map_err(|err| match err {
        SymphoniaError::IoError(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            DecodeError::UnsupportedFormat {
                input: input_name(),
                reason: "too short to identify".into(),
            }
        }
        other => DecodeError::UnsupportedFormat {
            input: input_name(),
            reason: other.to_string(),
        },
    })?;
    let track =
        format
            .default_track(TrackType::Audio)
            .ok_or_else(|| DecodeError::NoAudioTrack {
                input: input_name(),
            })?;
    let track_id = track.id;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .ok_or_else(|| DecodeError::NoAudioTrack {
            input: input_name(),
        })?
        .clone();
    let declared_frames = track.num_frames;
    // The ADTS reader (raw AAC) derives its frame count from the input's size:
    // a cut file declares its own shorter length, so only the way it ends can
    // tell it is cut.
    let length_is_estimate = format.format_info().short_name == ADTS_READER_NAME;
    let time_base = track.time_base;
    let source_rate = params
        .sample_rate
        .ok_or_else(|| DecodeError::BadParameters {
            input: input_name(),
            reason: "sample rate not declared".into(),
        })?;
    check_rate(input, source_rate)?;
    let channels = params.channels.as_ref().map(|c| c.count()).unwrap_or(0);
    check_channels(input, channels, limits)?;
    if let Some(frames) = declared_frames {
        let declared_s = frames as f64 / f64::from(source_rate);
        check_duration(input, declared_s, limits)?;
    }
    let mut decoder = guarded(input, || {
        CODECS.make_audio_decoder(&params, &AudioDecoderOptions::default())
    })?
    .map_err(|err| DecodeError::UnsupportedCodec {
        input: input_name(),
        reason: err.to_string(),
    })?;
    let codec = format!("{:?}", params.codec);

    let mut resampler = MonoResampler::new(source_rate, target_rate_hz, input)?;
    let mut interleaved: Vec<f32> = Vec::new();
    let mut mono: Vec<f32> = Vec::new();
    let mut decoded_frames: u64 = 0;
    let mut bad_packets = 0usize;
    let mut consecutive_bad = 0usize;
    let mut good_packets = 0usize;

    loop {
        let packet = match guarded(input, || format.next_packet())? {
            Ok(Some(packet)) => packet,
            Ok(None) => break,
            Err(SymphoniaError::IoError(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                if declared_frames.is_none() || length_is_estimate {
                    // Every reader ends a whole stream with `Ok(None)`; the
                    // input ran out inside a packet (a cut ADTS AAC file,
                    // say), and without a declared length nothing else
                    // would tell it from a shorter recording.
                    return Err(DecodeError::Unterminated {
                        input: input_name(),
                        reason: format!(
                            "the input ends inside a packet after {:.2} s of audio",
                            decoded_frames as f64 / f64::from(source_rate)
                        ),
                    });
                }
                if let Some(err) =
                    short_of_declared(input, decoded_frames, declared_frames, source_rate, 0.0)
                {
                    return Err(err);
                }
                break;
            }
            Err(SymphoniaError::ResetRequired) => break,
            Err(SymphoniaError::IoError(source)) => {
                return Err(DecodeError::Read {
                    input: input_name(),
                    source,
                });
            }
            Err(err) => {
                return Err(DecodeError::Corrupt {
                    input: input_name(),
                    reason: err.to_string(),
                });
            }
        };
        if packet.track_id != track_id {
            continue;
        }
        let buffer = match guarded(input, || decoder.decode(&packet))? {
            Ok(buffer) => buffer,
            Err(SymphoniaError::DecodeError(reason)) => {
                bad_packets += 1;
                consecutive_bad += 1;
                if consecutive_bad > MAX_CONSECUTIVE_BAD_PACKETS {
                    return Err(DecodeError::Corrupt {
                        input: input_name(),
                        reason: format!("{consecutive_bad} consecutive bad packets ({reason})"),
                    });
                }
                continue;
            }
            Err(SymphoniaError::IoError(_)) => {
                bad_packets += 1;
                continue;
            }
            Err(err) => {
                return Err(DecodeError::Corrupt {
                    input: input_name(),
                    reason: err.to_string(),
                });
            }
        };
        consecutive_bad = 0;
        good_packets += 1;
        let buffer_channels = buffer.spec().channels().count().max(1);
        if buffer_channels > limits.max_channels {
            return Err(DecodeError::TooManyChannels {
                input: input_name(),
                channels: buffer_channels,
                max_channels: limits.max_channels,
            });
        }
        let frames = buffer.frames();
        // Encoder delay and padding (gapless trimming), signalled per packet.
        let to_frames = |d: u64| match time_base {
            Some(tb) => {
                (u128::from(d) * u128::from(source_rate) * u128::from(tb.numer.get())
                    / u128::from(tb.denom.get())) as usize
            }
            None => d as usize,
        };
        let trim_start = to_frames(packet.trim_start.get()).min(frames);
        let trim_end = to_frames(packet.trim_end.get()).min(frames - trim_start);
        let frames = frames - trim_start - trim_end;
        if frames == 0 {
            continue;
        }
        guarded(input, || buffer.copy_to_vec_interleaved(&mut interleaved))?;
        let kept =
            &interleaved[trim_start * buffer_channels..(trim_start + frames) * buffer_channels];
        downmix(kept, buffer_channels, &mut mono);
        decoded_frames += frames as u64;
        check_duration(
            input,
            decoded_frames as f64 / f64::from(source_rate),
            limits,
        )?;
        resampler.push(&mono, &mut sink)?;
    }
    if decoded_frames == 0 {
        return Err(if good_packets == 0 && bad_packets > 0 {
            DecodeError::Corrupt {
                input: input_name(),
                reason: format!("all {bad_packets} packets failed to decode"),
            }
        } else {
            DecodeError::NoAudio {
                input: input_name(),
            }
        });
    }
    if facts.length_from_tag {
        // The demuxer ended the stream at the last whole frame it found.
        let slack_s = TRUNCATION_SLACK_S;
        if let Some(err) =
            short_of_declared(input, decoded_frames, declared_frames, source_rate, slack_s)
        {
            return Err(err);
        }
    }
    resampler.finish(&mut sink)?;
    Ok(AudioInfo {
        source_sample_rate_hz: source_rate,
        channels,
        codec,
        duration_s: decoded_frames as f64 / f64::from(source_rate),
        bad_packets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_a_clear_error() {
        let err = decode_bytes(
            b"this is not audio at all, just text".repeat(100),
            "notes.wav",
            Some("wav"),
            &DecodeLimits::default(),
            8000,
            |_| {},
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("notes.wav:"), "{err}");
    }

    /// A real Ogg/Vorbis file cut at a page boundary or inside a page is an
    /// error naming the file, whether read from disk or from memory; the
    /// whole file decodes.
    #[test]
    fn ogg_cut_short_is_truncated_not_a_shorter_file() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("test-audio/refs/wesnoth-heroes-rite.ogg");
        let whole = std::fs::read(&path).expect("test clip");
        let limits = DecodeLimits::default();
        decode_file(&path, &limits, 8000).expect("the whole file decodes");
        let last_page = whole
            .windows(4)
            .rposition(|w| w == b"OggS")
            .expect("an Ogg page");
        let dir = tempfile::tempdir().expect("temp dir");
        for (cut, kind) in [
            (last_page, "not marked end-of-stream"),
            (whole.len() / 2, "mid-page"),
            (whole.len() - 1, "mid-page"),
        ] {
            let cut_path = dir.path().join("cut.ogg");
            std::fs::write(&cut_path, &whole[..cut]).expect("write");
            let err = decode_file(&cut_path, &limits, 8000).unwrap_err();
            assert!(matches!(err, DecodeError::Unterminated { .. }), "{err}");
            let message = err.to_string();
            assert!(
                message.starts_with(&cut_path.display().to_string()),
                "{message}"
            );
            assert!(message.contains(kind), "cut at {cut}: {message}");
            let err = decode_bytes(
                whole[..cut].to_vec(),
                "upload.ogg",
                None,
                &limits,
                8000,
                |_| {},
            )
            .unwrap_err();
            assert!(err.to_string().contains(kind), "{err}");
        }
    }

    /// An MP3 whose Xing/Info tag declares its frames, cut in half, is
    /// truncated; whole, it decodes to its declared length.
    #[test]
    fn mp3_cut_short_of_its_tagged_length_is_truncated() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("test-audio/formats/clip.mp3");
        let whole = std::fs::read(&path).expect("test clip");
        let limits = DecodeLimits::default();
        let decoded = decode_file(&path, &limits, 8000).expect("the whole file decodes");
        assert!(
            (decoded.info.duration_s - 3.0).abs() < 0.05,
            "{:?}",
            decoded.info
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let cut_path = dir.path().join("cut.mp3");
        std::fs::write(&cut_path, &whole[..whole.len() / 2]).expect("write");
        let err = decode_file(&cut_path, &limits, 8000).unwrap_err();
        assert!(matches!(err, DecodeError::Truncated { .. }), "{err}");
        assert!(
            err.to_string().starts_with(&cut_path.display().to_string()),
            "{err}"
        );
        let err = decode_bytes(
            whole[..whole.len() / 2].to_vec(),
            "upload.mp3",
            None,
            &limits,
            8000,
            |_| {},
        )
        .unwrap_err();
        assert!(matches!(err, DecodeError::Truncated { .. }), "{err}");
    }

    /// An MP3 without a Xing/Info tag declares no length: cut inside a frame it
    /// is an error naming the input (file or upload), cut at a frame boundary
    /// it is a shorter recording, and whole it decodes.
    #[test]
    fn untagged_mp3_cut_inside_a_frame_is_truncated() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("test-audio/formats/clip.mp3");
        let tagged = std::fs::read(&path).expect("test clip");
        // The clip is a 20-byte ID3v2 tag, then an Info frame and audio frames,
        // all MPEG-1 Layer III at 128 kbit/s and 44.1 kHz: 417 bytes, plus one
        // when the padding bit (byte 2, bit 1) is set.
        let frame_len = |h: &[u8]| {
            assert_eq!(h[..2], [0xff, 0xfb], "MPEG-1 Layer III header");
            assert_eq!(h[2] & 0xfc, 0x90, "128 kbit/s at 44.1 kHz");
            417 + usize::from((h[2] >> 1) & 1)
        };
        let id3 = 20;
        assert_eq!(&tagged[id3 + 36..id3 + 40], b"Info");
        let info_len = frame_len(&tagged[id3..]);
        let mut untagged = tagged[..id3].to_vec();
        untagged.extend_from_slice(&tagged[id3 + info_len..]);
        let (mut at, mut boundaries) = (id3, Vec::new());
        while at + 4 <= untagged.len() {
            boundaries.push(at);
            at += frame_len(&untagged[at..]);
        }
        assert_eq!(at, untagged.len(), "the clip is a clean frame chain");
        let limits = DecodeLimits::default();
        let decode = |bytes: &[u8], name: &str| {
            decode_bytes(bytes.to_vec(), name, None, &limits, 8000, |_| {})
        };
        let whole = decode(&untagged, "whole.mp3").expect("the untagged clip decodes");
        assert!(whole.duration_s > 2.9, "{whole:?}");
        let middle = boundaries[boundaries.len() / 2];
        let err = decode(&untagged[..middle + 200], "upload.mp3").unwrap_err();
        assert!(matches!(err, DecodeError::Unterminated { .. }), "{err}");
        assert!(err.to_string().starts_with("upload.mp3:"), "{err}");
        let dir = tempfile::tempdir().expect("temp dir");
        let cut_path = dir.path().join("cut.mp3");
        std::fs::write(&cut_path, &untagged[..middle + 200]).expect("write");
        let err = decode_file(&cut_path, &limits, 8000).unwrap_err();
        assert!(matches!(err, DecodeError::Unterminated { .. }), "{err}");
        assert!(
            err.to_string().starts_with(&cut_path.display().to_string()),
            "{err}"
        );
        let shorter = decode(&untagged[..middle], "short.mp3").expect("whole frames decode");
        assert!(shorter.duration_s < whole.duration_s * 0.6, "{shorter:?}");
        // An ID3v1 tag after the last frame is not a cut frame.
        let mut with_v1 = untagged.clone();
        with_v1.extend(b"TAG");
        with_v1.extend([b' '; 125]);
        decode(&with_v1, "v1.mp3").expect("an ID3v1 tag at the end is fine");
    }

    /// An ADTS AAC stream declares no length (the reader estimates one from
    /// the input's size, so a cut file declares its own): cut inside a frame,
    /// it is an error naming the input, not a shorter recording; whole, it
    /// decodes.
    #[test]
    fn adts_cut_inside_a_frame_is_truncated() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("test-audio/formats/clip.aac");
        let whole = std::fs::read(&path).expect("test clip");
        let limits = DecodeLimits::default();
        let decoded = decode_file(&path, &limits, 8000).expect("the whole file decodes");
        assert!(decoded.info.duration_s > 2.5, "{:?}", decoded.info);
        // The frame length is 13 bits from bit 30 of each 7-byte header:
        // cut halfway into the frame that starts nearest the middle.
        let mut at = 0;
        let mut middle_frame = None;
        while at + 7 <= whole.len() && whole[at] == 0xFF && whole[at + 1] & 0xF0 == 0xF0 {
            let length = (usize::from(whole[at + 3] & 0x03) << 11)
                | (usize::from(whole[at + 4]) << 3)
                | usize::from(whole[at + 5] >> 5);
            if at >= whole.len() / 2 && middle_frame.is_none() {
                middle_frame = Some((at, length));
            }
            at += length.max(7);
        }
        assert_eq!(at, whole.len(), "the clip is a clean ADTS stream");
        let (start, length) = middle_frame.expect("a frame past the middle");
        let cut = &whole[..start + length / 2];
        let err =
            decode_bytes(cut.to_vec(), "upload.aac", None, &limits, 8000, |_| {}).unwrap_err();
        assert!(matches!(err, DecodeError::Unterminated { .. }), "{err}");
        assert!(err.to_string().starts_with("upload.aac:"), "{err}");
        // Cut at a frame boundary it is indistinguishable from a shorter
        // recording, and decodes as one.
        let shorter = decode_bytes(
            whole[..start].to_vec(),
            "short.aac",
            None,
            &limits,
            8000,
            |_| {},
        )
        .expect("whole frames decode");
        assert!(shorter.duration_s < decoded.info.duration_s);
    }

    #[test]
    fn empty_input_is_rejected() {
        let err = decode_bytes(
            Vec::new(),
            "empty",
            None,
            &DecodeLimits::default(),
            8000,
            |_| {},
        )
        .unwrap_err();
        assert!(matches!(err, DecodeError::Empty { .. }));
    }
}

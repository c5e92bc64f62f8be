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

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::sync::LazyLock;

use audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Indexing, Resampler};
use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::codecs::registry::CodecRegistry;
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, TrackType};
use symphonia::core::io::{MediaSource, MediaSourceStream, ReadOnlySource};
use symphonia::core::meta::MetadataOptions;

/// Frames handed to the resampler per call.
const RESAMPLER_CHUNK_FRAMES: usize = 1024;
/// Consecutive undecodable packets after which the stream is declared corrupt.
const MAX_CONSECUTIVE_BAD_PACKETS: usize = 64;
/// A stream whose demuxer hits end-of-file before this fraction of its declared
/// length is reported as truncated.
const TRUNCATION_TOLERANCE: f64 = 0.95;
/// Lowest and highest source sample rates accepted.
const MIN_SOURCE_RATE_HZ: u32 = 4_000;
const MAX_SOURCE_RATE_HZ: u32 = 768_000;

/// Errors from decoding one input. `input` is the path or stream name.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("{input}: cannot open: {source}")]
    Open { input: String, source: io::Error },
    #[error("{input}: file is empty")]
    Empty { input: String },
    #[error("{input}: {bytes} bytes exceeds the limit of {max_bytes} bytes")]
    TooLarge {
        input: String,
        bytes: u64,
        max_bytes: u64,
    },
    #[error("{input}: not a recognised audio format ({reason})")]
    UnsupportedFormat { input: String, reason: String },
    #[error("{input}: no audio track")]
    NoAudioTrack { input: String },
    #[error("{input}: unsupported audio codec ({reason})")]
    UnsupportedCodec { input: String, reason: String },
    #[error("{input}: invalid stream parameters: {reason}")]
    BadParameters { input: String, reason: String },
    #[error("{input}: {channels} channels exceeds the limit of {max_channels}")]
    TooManyChannels {
        input: String,
        channels: usize,
        max_channels: usize,
    },
    #[error("{input}: duration {duration_s:.1} s exceeds the limit of {max_duration_s:.1} s")]
    TooLong {
        input: String,
        duration_s: f64,
        max_duration_s: f64,
    },
    #[error("{input}: corrupt audio data: {reason}")]
    Corrupt { input: String, reason: String },
    #[error("{input}: truncated: stream ends at {decoded_s:.2} s of a declared {declared_s:.2} s")]
    Truncated {
        input: String,
        decoded_s: f64,
        declared_s: f64,
    },
    #[error("{input}: no audio could be decoded")]
    NoAudio { input: String },
    #[error("{input}: read error: {source}")]
    Read { input: String, source: io::Error },
    #[error("{input}: resampling failed: {reason}")]
    Resample { input: String, reason: String },
}

/// Bounds applied to every decoded input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecodeLimits {
    pub max_bytes: u64,
    pub max_duration_s: f64,
    pub max_channels: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_bytes: 4 * 1024 * 1024 * 1024,
            max_duration_s: 6.0 * 3600.0,
            max_channels: 32,
        }
    }
}

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

/// A whole decoded input (use [`decode_stream`] for long inputs).
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
    let file = File::open(path).map_err(|source| DecodeError::Open {
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
    let extension = path.extension().and_then(|e| e.to_str());
    decode_source(
        Box::new(file),
        &input,
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
    decode_source(
        Box::new(io::Cursor::new(bytes)),
        input,
        extension_hint,
        limits,
        target_rate_hz,
        sink,
    )
}

fn remap_limit_error(
    result: Result<AudioInfo, DecodeError>,
    input: &str,
    max_bytes: u64,
) -> Result<AudioInfo, DecodeError> {
    match result {
        Err(err) if err.to_string().contains(BYTE_LIMIT_MARKER) => Err(DecodeError::TooLarge {
            input: input.to_string(),
            bytes: max_bytes.saturating_add(1),
            max_bytes,
        }),
        other => other,
    }
}

const BYTE_LIMIT_MARKER: &str = "earmark byte limit exceeded";

struct LimitedReader<R> {
    inner: R,
    remaining: u64,
    max_bytes: u64,
    total: u64,
}

impl<R: Read> Read for LimitedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            // Probe one byte: if there is more, the input is over the limit.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::other(format!(
                    "{BYTE_LIMIT_MARKER} ({} bytes)",
                    self.max_bytes
                ))),
            };
        }
        let want = buf
            .len()
            .min(self.remaining.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        self.remaining -= n as u64;
        self.total += n as u64;
        Ok(n)
    }
}

fn decode_source(
    source: Box<dyn MediaSource>,
    input: &str,
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
    let mut format = symphonia::default::get_probe()
        .probe(
            &hint,
            mss,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
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
    let mut decoder = CODECS
        .make_audio_decoder(&params, &AudioDecoderOptions::default())
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
        let packet = match format.next_packet() {
            Ok(Some(packet)) => packet,
            Ok(None) => break,
            Err(SymphoniaError::IoError(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                let decoded_s = decoded_frames as f64 / f64::from(source_rate);
                if let Some(frames) = declared_frames {
                    let declared_s = frames as f64 / f64::from(source_rate);
                    if decoded_s < declared_s * TRUNCATION_TOLERANCE {
                        return Err(DecodeError::Truncated {
                            input: input_name(),
                            decoded_s,
                            declared_s,
                        });
                    }
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
        let buffer = match decoder.decode(&packet) {
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
        buffer.copy_to_vec_interleaved(&mut interleaved);
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
    resampler.finish(&mut sink)?;
    Ok(AudioInfo {
        source_sample_rate_hz: source_rate,
        channels,
        codec,
        duration_s: decoded_frames as f64 / f64::from(source_rate),
        bad_packets,
    })
}

fn check_rate(input: &str, rate: u32) -> Result<(), DecodeError> {
    if !(MIN_SOURCE_RATE_HZ..=MAX_SOURCE_RATE_HZ).contains(&rate) {
        return Err(DecodeError::BadParameters {
            input: input.to_string(),
            reason: format!(
                "sample rate {rate} Hz outside {MIN_SOURCE_RATE_HZ}..={MAX_SOURCE_RATE_HZ} Hz"
            ),
        });
    }
    Ok(())
}

fn check_channels(input: &str, channels: usize, limits: &DecodeLimits) -> Result<(), DecodeError> {
    if channels > limits.max_channels {
        return Err(DecodeError::TooManyChannels {
            input: input.to_string(),
            channels,
            max_channels: limits.max_channels,
        });
    }
    Ok(())
}

fn check_duration(input: &str, duration_s: f64, limits: &DecodeLimits) -> Result<(), DecodeError> {
    if duration_s > limits.max_duration_s {
        return Err(DecodeError::TooLong {
            input: input.to_string(),
            duration_s,
            max_duration_s: limits.max_duration_s,
        });
    }
    Ok(())
}

/// Averages interleaved channels into `mono` (replacing its contents).
pub fn downmix(interleaved: &[f32], channels: usize, mono: &mut Vec<f32>) {
    mono.clear();
    if channels <= 1 {
        mono.extend_from_slice(interleaved);
        return;
    }
    let scale = 1.0 / channels as f32;
    mono.extend(
        interleaved
            .chunks_exact(channels)
            .map(|frame| frame.iter().sum::<f32>() * scale),
    );
}

/// Streaming mono resampler (rubato FFT, fixed input chunks) that trims the
/// resampler delay and emits exactly `ceil(input_len × ratio)` samples in total.
pub struct MonoResampler {
    inner: Option<Fft<f32>>,
    pending: Vec<f32>,
    output: Vec<f32>,
    delay_left: usize,
    input_total: u64,
    output_total: u64,
    ratio: f64,
    input: String,
}

impl MonoResampler {
    pub fn new(from_hz: u32, to_hz: u32, input: &str) -> Result<Self, DecodeError> {
        let (inner, output_len, delay) = if from_hz == to_hz {
            (None, 0, 0)
        } else {
            let fft = Fft::<f32>::new(
                from_hz as usize,
                to_hz as usize,
                RESAMPLER_CHUNK_FRAMES,
                1,
                FixedSync::Input,
            )
            .map_err(|e| DecodeError::Resample {
                input: input.to_string(),
                reason: e.to_string(),
            })?;
            let out_len = fft.output_frames_max();
            let delay = fft.output_delay();
            (Some(fft), out_len, delay)
        };
        Ok(Self {
            inner,
            pending: Vec::with_capacity(2 * RESAMPLER_CHUNK_FRAMES),
            output: vec![0.0; output_len],
            delay_left: delay,
            input_total: 0,
            output_total: 0,
            ratio: f64::from(to_hz) / f64::from(from_hz),
            input: input.to_string(),
        })
    }

    /// Feeds mono samples at the source rate.
    pub fn push(
        &mut self,
        samples: &[f32],
        sink: &mut impl FnMut(&[f32]),
    ) -> Result<(), DecodeError> {
        self.input_total += samples.len() as u64;
        let Some(inner) = self.inner.as_mut() else {
            self.output_total += samples.len() as u64;
            sink(samples);
            return Ok(());
        };
        self.pending.extend_from_slice(samples);
        let mut start = 0;
        loop {
            let need = inner.input_frames_next();
            if self.pending.len() - start < need {
                break;
            }
            let produced = run_chunk(
                inner,
                &self.pending[start..start + need],
                None,
                &mut self.output,
                &self.input,
            )?;
            start += need;
            emit(
                &self.output[..produced],
                &mut self.delay_left,
                &mut self.output_total,
                u64::MAX,
                sink,
            );
        }
        self.pending.drain(..start);
        Ok(())
    }

    /// Flushes the tail so the total output length matches the input length × ratio.
    pub fn finish(&mut self, sink: &mut impl FnMut(&[f32])) -> Result<(), DecodeError> {
        let Some(inner) = self.inner.as_mut() else {
            return Ok(());
        };
        let expected = (self.input_total as f64 * self.ratio).ceil() as u64;
        let mut guard = 0;
        while self.output_total < expected && guard < 64 {
            guard += 1;
            let need = inner.input_frames_next();
            let available = self.pending.len().min(need);
            let mut chunk = std::mem::take(&mut self.pending);
            chunk.resize(need, 0.0);
            self.pending.clear();
            let produced = run_chunk(
                inner,
                &chunk,
                Some(available),
                &mut self.output,
                &self.input,
            )?;
            emit(
                &self.output[..produced],
                &mut self.delay_left,
                &mut self.output_total,
                expected,
                sink,
            );
        }
        Ok(())
    }
}

fn run_chunk(
    inner: &mut Fft<f32>,
    chunk: &[f32],
    partial_len: Option<usize>,
    output: &mut [f32],
    input: &str,
) -> Result<usize, DecodeError> {
    let resample_err = |reason: String| DecodeError::Resample {
        input: input.to_string(),
        reason,
    };
    let frames_in = chunk.len();
    let frames_out = output.len();
    let adapter_in =
        InterleavedSlice::new(chunk, 1, frames_in).map_err(|e| resample_err(e.to_string()))?;
    let mut adapter_out = InterleavedSlice::new_mut(output, 1, frames_out)
        .map_err(|e| resample_err(e.to_string()))?;
    let indexing = Indexing {
        input_offset: 0,
        output_offset: 0,
        partial_len,
        active_channels_mask: None,
    };
    let (_, produced) = inner
        .process_into_buffer(&adapter_in, &mut adapter_out, Some(&indexing))
        .map_err(|e| resample_err(e.to_string()))?;
    Ok(produced)
}

fn emit(
    produced: &[f32],
    delay_left: &mut usize,
    output_total: &mut u64,
    limit: u64,
    sink: &mut impl FnMut(&[f32]),
) {
    let skip = (*delay_left).min(produced.len());
    *delay_left -= skip;
    let rest = &produced[skip..];
    let room = limit.saturating_sub(*output_total).min(rest.len() as u64) as usize;
    if room > 0 {
        sink(&rest[..room]);
        *output_total += room as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downmix_averages_channels() {
        let mut mono = Vec::new();
        downmix(&[1.0, 3.0, -1.0, 1.0], 2, &mut mono);
        assert_eq!(mono, vec![2.0, 0.0]);
    }

    #[test]
    fn resampler_output_length_matches_ratio() {
        let mut resampler = MonoResampler::new(44_100, 8_000, "test").unwrap();
        let tone: Vec<f32> = (0..44_100 * 3)
            .map(|i| (i as f32 * 440.0 * std::f32::consts::TAU / 44_100.0).sin())
            .collect();
        let mut out = Vec::new();
        for block in tone.chunks(777) {
            resampler
                .push(block, &mut |b| out.extend_from_slice(b))
                .unwrap();
        }
        resampler.finish(&mut |b| out.extend_from_slice(b)).unwrap();
        assert_eq!(out.len(), 24_000);
        // The tone survives with its amplitude (RMS of a unit sine ≈ 0.707).
        let mid = &out[4000..20000];
        let rms = (mid.iter().map(|x| x * x).sum::<f32>() / mid.len() as f32).sqrt();
        assert!((rms - 0.707).abs() < 0.05, "rms {rms}");
    }

    #[test]
    fn byte_limit_is_enforced_for_streams() {
        let data = vec![0u8; 10_000];
        let limits = DecodeLimits {
            max_bytes: 100,
            ..DecodeLimits::default()
        };
        let err = decode_reader(io::Cursor::new(data), "stream", None, &limits, 8000, |_| {})
            .unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::TooLarge { .. } | DecodeError::UnsupportedFormat { .. }
            ),
            "{err}"
        );
    }

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

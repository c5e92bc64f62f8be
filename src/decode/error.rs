//! The error type of decoding.

use std::io;

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
    /// A container without a declared length whose end is missing.
    #[error("{input}: truncated: {reason}")]
    Unterminated { input: String, reason: String },
    #[error("{input}: no audio could be decoded")]
    NoAudio { input: String },
    #[error("{input}: read error: {source}")]
    Read { input: String, source: io::Error },
    #[error("{input}: resampling failed: {reason}")]
    Resample { input: String, reason: String },
}

//! Input limits: the configured bounds, their checks, and the byte limit of
//! streamed readers.

use std::io::{self, Read};

use super::{AudioInfo, DecodeError};

/// Lowest and highest source sample rates accepted.
const MIN_SOURCE_RATE_HZ: u32 = 4_000;
const MAX_SOURCE_RATE_HZ: u32 = 768_000;

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

pub(super) fn remap_limit_error(
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

pub(super) struct LimitedReader<R> {
    pub(super) inner: R,
    pub(super) remaining: u64,
    pub(super) max_bytes: u64,
    pub(super) total: u64,
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

pub(super) fn check_rate(input: &str, rate: u32) -> Result<(), DecodeError> {
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

pub(super) fn check_channels(
    input: &str,
    channels: usize,
    limits: &DecodeLimits,
) -> Result<(), DecodeError> {
    if channels > limits.max_channels {
        return Err(DecodeError::TooManyChannels {
            input: input.to_string(),
            channels,
            max_channels: limits.max_channels,
        });
    }
    Ok(())
}

pub(super) fn check_duration(
    input: &str,
    duration_s: f64,
    limits: &DecodeLimits,
) -> Result<(), DecodeError> {
    if duration_s > limits.max_duration_s {
        return Err(DecodeError::TooLong {
            input: input.to_string(),
            duration_s,
            max_duration_s: limits.max_duration_s,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::decode_reader;

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
}

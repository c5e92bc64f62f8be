//! Down-mixing to mono and streaming resampling to the fingerprint rate.

use audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Indexing, Resampler};

use super::DecodeError;

/// Frames handed to the resampler per call.
const RESAMPLER_CHUNK_FRAMES: usize = 1024;

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
}

//! Short-time spectrum on a **logarithmic frequency axis**.
//!
//! A Hann-windowed FFT (rustfft, planned once per thread; two real frames per
//! complex transform) gives the power spectrum of each frame; its linear bins
//! are then pooled onto a log-frequency grid of [`BINS_PER_OCTAVE`] bins per
//! octave between [`MIN_FREQ_HZ`] and [`MAX_FREQ_HZ`]. On that grid a pitch
//! shift or a speed change is a plain *translation* along the frequency axis,
//! which is what lets the fingerprint's frequency *differences* stay invariant.
//! Values are `log2` of power (1 unit ≈ 3 dB).

use std::cell::RefCell;
use std::sync::Arc;

use ndarray::Array2;
use rustfft::num_complex::Complex32;
use rustfft::{Fft, FftPlanner};

/// Sample rate every input is resampled to before fingerprinting.
pub const SAMPLE_RATE_HZ: u32 = 8_000;
/// FFT window length in samples (64 ms at 8 kHz).
pub const FFT_SIZE: usize = 512;
/// Hop between frames in samples (8 ms at 8 kHz).
pub const HOP_SAMPLES: usize = 64;
/// Frames per second of audio.
pub const FRAMES_PER_SECOND: f64 = SAMPLE_RATE_HZ as f64 / HOP_SAMPLES as f64;
/// Lowest and highest frequency on the log grid.
pub const MIN_FREQ_HZ: f64 = 250.0;
pub const MAX_FREQ_HZ: f64 = 3_800.0;
/// Log-frequency resolution: 24 bins per octave = one bin per quarter tone.
pub const BINS_PER_OCTAVE: usize = 24;
/// Added to the power before the log so silence maps to a finite floor.
const POWER_FLOOR: f32 = 1e-10;

/// Number of bins on the log-frequency grid.
pub fn log_bin_count() -> usize {
    ((MAX_FREQ_HZ / MIN_FREQ_HZ).log2() * BINS_PER_OCTAVE as f64).floor() as usize
}

/// Centre frequency of (fractional) log bin `bin`.
pub fn log_bin_to_hz(bin: f64) -> f64 {
    MIN_FREQ_HZ * 2f64.powf(bin / BINS_PER_OCTAVE as f64)
}

/// How one log bin is computed from the linear FFT bins.
#[derive(Debug, Clone, Copy)]
enum BinSource {
    /// Band narrower than a linear bin: interpolate between `lo` and `lo + 1`.
    Interpolate { lo: usize, frac: f32 },
    /// Band spanning several linear bins: take their maximum (keeps peaks sharp).
    Max { lo: usize, hi: usize },
}

fn bin_sources() -> Vec<BinSource> {
    let hz_per_bin = f64::from(SAMPLE_RATE_HZ) / FFT_SIZE as f64;
    let half_band = 2f64.powf(0.5 / BINS_PER_OCTAVE as f64);
    (0..log_bin_count())
        .map(|k| {
            let centre = log_bin_to_hz(k as f64) / hz_per_bin;
            let lo_edge = (centre / half_band).round() as usize;
            let hi_edge = (centre * half_band).round() as usize;
            if hi_edge > lo_edge {
                BinSource::Max {
                    lo: lo_edge,
                    hi: hi_edge.min(FFT_SIZE / 2),
                }
            } else {
                BinSource::Interpolate {
                    lo: centre.floor() as usize,
                    frac: centre.fract() as f32,
                }
            }
        })
        .collect()
}

/// Per-thread FFT state. Two real frames go through one complex FFT of
/// [`FFT_SIZE`] points (one as the real part, the other as the imaginary part)
/// and are told apart by the conjugate symmetry of real spectra:
/// `X_a[k] = (Z[k] + conj Z[N−k]) / 2`, `X_b[k] = (Z[k] − conj Z[N−k]) / 2i`.
/// Only powers are needed, so each is one sum or difference and a squared
/// magnitude. This costs about what one real FFT of each frame costs and
/// skips the real FFT's separate twiddle pass, which took twice as long as the
/// FFT itself in profiles of the fingerprinter.
struct FftWorkspace {
    fft: Arc<dyn Fft<f32>>,
    window: Vec<f32>,
    buffer: Vec<Complex32>,
    /// `buffer[(N − k) mod N]` for k = 0..=N/2 (see [`FftWorkspace::power_pair`]).
    mirror: Vec<Complex32>,
    scratch: Vec<Complex32>,
    sources: Vec<BinSource>,
    /// Log bins interpolated between two linear bins: (log bin, lower bin, weight).
    interpolated: Vec<(usize, usize, f32)>,
    /// Log bins spanning several linear bins: (log bin, two cells of `spans`
    /// whose maximum is the bin's maximum).
    spanned: Vec<(usize, usize, usize)>,
    /// The current frame's maxima of 1, 2, 4… consecutive linear bins, level
    /// after level in one buffer (level `l` starts at `span_offsets[l]`).
    spans: Vec<f32>,
    span_offsets: Vec<usize>,
}

/// The maximum of a range of linear bins is the maximum of two overlapping
/// power-of-two spans, so every log bin costs two loads whatever its width (a
/// fold over each range was a chain of dependent `max`es and a tenth of the
/// fingerprinter's time). Returns the level and the two span starts.
fn span_cover(lo: usize, hi: usize) -> (usize, usize, usize) {
    let level = span_level(hi + 1 - lo);
    (level, lo, hi + 1 - (1 << level))
}

/// The largest `l` with `2^l ≤ len` (`len ≥ 1`): two spans of `2^l` cells
/// cover any range of `len` cells. Shared by every sparse range-maximum here
/// and in peak picking.
pub fn span_level(len: usize) -> usize {
    (usize::BITS - 1 - len.max(1).leading_zeros()) as usize
}

impl FftWorkspace {
    fn new() -> Self {
        let fft = FftPlanner::<f32>::new().plan_fft_forward(FFT_SIZE);
        let window = (0..FFT_SIZE)
            .map(|i| {
                let phase = std::f32::consts::TAU * i as f32 / FFT_SIZE as f32;
                0.5 - 0.5 * phase.cos()
            })
            .collect();
        let sources = bin_sources();
        let linear_bins = FFT_SIZE / 2 + 1;
        let levels = sources
            .iter()
            .filter_map(|source| match *source {
                BinSource::Max { lo, hi } => Some(span_cover(lo, hi).0 + 1),
                BinSource::Interpolate { .. } => None,
            })
            .max()
            .unwrap_or(1);
        // Level l has one cell per start position of a 2^l-bin span.
        let mut span_offsets = Vec::with_capacity(levels);
        let mut cells = 0;
        for level in 0..levels {
            span_offsets.push(cells);
            cells += linear_bins + 1 - (1 << level);
        }
        let mut interpolated = Vec::new();
        let mut spanned = Vec::new();
        for (bin, source) in sources.iter().enumerate() {
            match *source {
                BinSource::Interpolate { lo, frac } => interpolated.push((bin, lo, frac)),
                BinSource::Max { lo, hi } => {
                    let (level, first, second) = span_cover(lo, hi);
                    let base = span_offsets[level];
                    spanned.push((bin, base + first, base + second));
                }
            }
        }
        Self {
            buffer: vec![Complex32::new(0.0, 0.0); FFT_SIZE],
            mirror: vec![Complex32::new(0.0, 0.0); FFT_SIZE / 2 + 1],
            scratch: vec![Complex32::new(0.0, 0.0); fft.get_inplace_scratch_len()],
            fft,
            window,
            interpolated,
            spanned,
            spans: vec![0.0; cells],
            span_offsets,
            sources,
        }
    }

    /// Power spectra (`FFT_SIZE/2 + 1` bins) of the windowed frames `a` and
    /// `b` (each [`FFT_SIZE`] samples; `b` may be silence to transform one frame).
    fn power_pair(&mut self, a: &[f32], b: &[f32], power_a: &mut [f32], power_b: &mut [f32]) {
        const SILENCE: [f32; FFT_SIZE] = [0.0; FFT_SIZE];
        let a = if a.len() >= FFT_SIZE { a } else { &SILENCE };
        let b = if b.len() >= FFT_SIZE { b } else { &SILENCE };
        for ((z, &w), (&x, &y)) in self
            .buffer
            .iter_mut()
            .zip(&self.window)
            .zip(a.iter().zip(b))
        {
            *z = Complex32::new(x * w, y * w);
        }
        self.fft
            .process_with_scratch(&mut self.buffer, &mut self.scratch);
        let z = &self.buffer;
        let half = FFT_SIZE / 2;
        // Bin 0 pairs with itself; bins 1..=N/2 with N−1 down to N/2. The
        // mirror is copied out first so the loop below reads two arrays
        // forwards (it vectorises; a reversed iterator in it did not).
        let mirror = &mut self.mirror;
        mirror[0] = z[0];
        for (m, &zm) in mirror[1..].iter_mut().zip(z[half..].iter().rev()) {
            *m = zm;
        }
        for (((pa, pb), zk), zm) in power_a
            .iter_mut()
            .zip(power_b.iter_mut())
            .zip(&z[..=half])
            .zip(mirror.iter())
        {
            let (sum_re, sum_im) = (zk.re + zm.re, zk.im - zm.im);
            let (diff_re, diff_im) = (zk.re - zm.re, zk.im + zm.im);
            *pa = 0.25 * (sum_re * sum_re + sum_im * sum_im);
            *pb = 0.25 * (diff_re * diff_re + diff_im * diff_im);
        }
    }

    /// Pools a frame's linear power onto the log-frequency grid (log2 power).
    fn log_row(&mut self, power: &[f32], row: &mut [f32]) {
        let linear_bins = FFT_SIZE / 2 + 1;
        if power.len() != linear_bins || row.len() != self.sources.len() {
            row.fill(fast_log2(POWER_FLOOR));
            return;
        }
        self.spans[..linear_bins].copy_from_slice(power);
        for level in 1..self.span_offsets.len() {
            let step = 1usize << (level - 1);
            let (done, todo) = self.spans.split_at_mut(self.span_offsets[level]);
            let prev = &done[self.span_offsets[level - 1]..];
            for ((dst, &a), &b) in todo.iter_mut().zip(prev).zip(&prev[step..]) {
                *dst = max_f32(a, b);
            }
        }
        for &(bin, lo, frac) in &self.interpolated {
            row[bin] = power[lo] * (1.0 - frac) + power[lo + 1] * frac;
        }
        for &(bin, first, second) in &self.spanned {
            row[bin] = max_f32(self.spans[first], self.spans[second]);
        }
        // A separate pass so the log vectorises (no branch per bin).
        for x in row.iter_mut() {
            *x = fast_log2(*x + POWER_FLOOR);
        }
    }
}

thread_local! {
    static WORKSPACE: RefCell<Option<FftWorkspace>> = const { RefCell::new(None) };
}

/// Number of whole frames in `sample_count` samples.
pub fn frame_count(sample_count: usize) -> usize {
    if sample_count < FFT_SIZE {
        0
    } else {
        (sample_count - FFT_SIZE) / HOP_SAMPLES + 1
    }
}

/// Spectrogram of one signal: the log-frequency grid used for peak picking and
/// the linear power spectrum used to refine peak frequencies.
#[derive(Debug, Clone)]
pub struct Spectrogram {
    /// `frames × log bins`, log2 power.
    pub log: Array2<f32>,
    /// `frames × (FFT_SIZE/2 + 1)` linear power.
    pub power: Array2<f32>,
    sources: Vec<BinSource>,
}

impl Spectrogram {
    /// Precise frequency (fractional log bin) of a peak found at log bin `k` of
    /// frame `t`: parabolic interpolation of log power around the strongest linear
    /// FFT bin feeding that log bin.
    pub fn refine_frequency(&self, t: usize, k: usize) -> f32 {
        let row = self.power.row(t);
        let last = row.len() - 1;
        let (lo, hi) = match self.sources.get(k) {
            Some(BinSource::Interpolate { lo, .. }) => (*lo, (*lo + 1).min(last)),
            Some(BinSource::Max { lo, hi }) => (*lo, (*hi).min(last)),
            None => return k as f32,
        };
        let mut j = lo;
        for i in lo..=hi {
            if row[i] > row[j] {
                j = i;
            }
        }
        let delta = if j > 0 && j < last {
            let l = fast_log2(row[j - 1] + POWER_FLOOR);
            let c = fast_log2(row[j] + POWER_FLOOR);
            let r = fast_log2(row[j + 1] + POWER_FLOOR);
            let denom = l - 2.0 * c + r;
            if denom.abs() < 1e-6 {
                0.0
            } else {
                (0.5 * (l - r) / denom).clamp(-0.5, 0.5)
            }
        } else {
            0.0
        };
        let hz = (j as f64 + f64::from(delta)) * f64::from(SAMPLE_RATE_HZ) / FFT_SIZE as f64;
        if hz <= 0.0 {
            return k as f32;
        }
        ((hz / MIN_FREQ_HZ).log2() * BINS_PER_OCTAVE as f64) as f32
    }
}

/// Spectrogram of mono samples at [`SAMPLE_RATE_HZ`].
pub fn spectrogram(samples: &[f32]) -> Spectrogram {
    const LINEAR_BINS: usize = FFT_SIZE / 2 + 1;
    let frames = frame_count(samples.len());
    let bins = log_bin_count();
    // Rows are appended as they are computed: no zero fill of arrays that
    // are larger than the L2 cache for a long block.
    let mut log_cells: Vec<f32> = Vec::with_capacity(frames * bins);
    let mut power_cells: Vec<f32> = Vec::with_capacity(frames * LINEAR_BINS);
    let sources = WORKSPACE.with(|cell| {
        let mut slot = cell.borrow_mut();
        let ws = slot.get_or_insert_with(FftWorkspace::new);
        let mut row = vec![0.0f32; bins];
        let (mut power_a, mut power_b) = ([0.0f32; LINEAR_BINS], [0.0f32; LINEAR_BINS]);
        // Frames two at a time (the last one alone when the count is odd).
        for pair in (0..frames).step_by(2) {
            let a = &samples[pair * HOP_SAMPLES..pair * HOP_SAMPLES + FFT_SIZE];
            let has_b = pair + 1 < frames;
            let b_start = (pair + 1) * HOP_SAMPLES;
            let b = samples
                .get(b_start..b_start + FFT_SIZE)
                .filter(|_| has_b)
                .unwrap_or_default();
            ws.power_pair(a, b, &mut power_a, &mut power_b);
            ws.log_row(&power_a, &mut row);
            log_cells.extend_from_slice(&row);
            power_cells.extend_from_slice(&power_a);
            if has_b {
                ws.log_row(&power_b, &mut row);
                log_cells.extend_from_slice(&row);
                power_cells.extend_from_slice(&power_b);
            }
        }
        ws.sources.clone()
    });
    let log = Array2::from_shape_vec((frames, bins), log_cells)
        .unwrap_or_else(|_| Array2::zeros((frames, bins)));
    let power = Array2::from_shape_vec((frames, LINEAR_BINS), power_cells)
        .unwrap_or_else(|_| Array2::zeros((frames, LINEAR_BINS)));
    Spectrogram {
        log,
        power,
        sources,
    }
}

/// Log-power spectrogram (`frames × log bins`) of mono samples at [`SAMPLE_RATE_HZ`].
pub fn log_spectrogram(samples: &[f32]) -> Array2<f32> {
    spectrogram(samples).log
}

/// Maximum of two values that are never NaN (powers and log powers): a plain
/// comparison, which compiles to one SIMD-friendly instruction where
/// [`f32::max`] must also handle NaN.
#[inline]
pub fn max_f32(a: f32, b: f32) -> f32 {
    if b > a { b } else { a }
}

/// log2 with < 0.05 absolute error (≈ 0.15 dB), several times faster than `f32::log2`.
#[inline]
pub fn fast_log2(x: f32) -> f32 {
    let bits = x.to_bits();
    let exponent = ((bits >> 23) & 0xff) as f32 - 128.0;
    let mantissa = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
    exponent + (-0.344_848_43 * mantissa + 2.024_665_8) * mantissa - 0.674_877_6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_log2_is_close() {
        for &x in &[1e-9f32, 0.001, 0.5, 1.0, 3.0, 1000.0, 1e8] {
            assert!((fast_log2(x) - x.log2()).abs() < 0.05, "{x}");
        }
    }

    #[test]
    fn tone_peaks_at_its_log_bin() {
        let freq = 1000.0;
        let samples: Vec<f32> = (0..SAMPLE_RATE_HZ as usize)
            .map(|i| (std::f32::consts::TAU * freq * i as f32 / SAMPLE_RATE_HZ as f32).sin())
            .collect();
        let spec = log_spectrogram(&samples);
        assert_eq!(spec.nrows(), frame_count(samples.len()));
        let row = spec.row(10);
        let best = row
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i)
            .unwrap();
        let expected = ((freq as f64 / MIN_FREQ_HZ).log2() * BINS_PER_OCTAVE as f64).round();
        assert!(
            (best as f64 - expected).abs() <= 1.0,
            "{best} vs {expected}"
        );
    }

    fn test_signal(len: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        (0..len)
            .map(|i| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let noise = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                (i as f32 * 0.37).sin() + 0.5 * (i as f32 * 1.91).cos() + 0.2 * noise
            })
            .collect()
    }

    /// Power of bin `k` of the Hann-windowed frame by a direct DFT (f64).
    fn direct_power(frame: &[f32], k: usize) -> f64 {
        let n = FFT_SIZE as f64;
        let (mut re, mut im) = (0.0f64, 0.0f64);
        for (i, &x) in frame.iter().enumerate() {
            let w = 0.5 - 0.5 * (std::f64::consts::TAU * i as f64 / n).cos();
            let phase = std::f64::consts::TAU * (k * i) as f64 / n;
            re += f64::from(x) * w * phase.cos();
            im -= f64::from(x) * w * phase.sin();
        }
        re * re + im * im
    }

    #[test]
    fn paired_frames_match_a_direct_dft() {
        let a = test_signal(FFT_SIZE, 1);
        let b: Vec<f32> = test_signal(FFT_SIZE, 2).iter().map(|x| 0.01 * x).collect();
        let mut ws = FftWorkspace::new();
        let (mut power_a, mut power_b) = ([0.0f32; FFT_SIZE / 2 + 1], [0.0f32; FFT_SIZE / 2 + 1]);
        ws.power_pair(&a, &b, &mut power_a, &mut power_b);
        for (frame, power) in [(&a, &power_a), (&b, &power_b)] {
            let peak = (0..=FFT_SIZE / 2)
                .map(|k| direct_power(frame, k))
                .fold(0.0, f64::max);
            for (k, &p) in power.iter().enumerate() {
                let want = direct_power(frame, k);
                assert!(
                    (f64::from(p) - want).abs() <= 1e-5 * peak,
                    "bin {k}: {p} vs {want} (peak {peak})"
                );
            }
        }
        // A frame transformed alone (silent partner) gets the same spectrum.
        let (mut alone, mut silent) = ([0.0f32; FFT_SIZE / 2 + 1], [0.0f32; FFT_SIZE / 2 + 1]);
        ws.power_pair(&a, &[], &mut alone, &mut silent);
        let loudest = power_a.iter().copied().fold(0.0f32, f32::max);
        assert!(silent.iter().all(|&p| p <= 1e-6 * loudest));
        for (x, y) in alone.iter().zip(&power_a) {
            assert!((x - y).abs() <= 1e-4 * y.abs().max(1.0), "{x} vs {y}");
        }
    }

    #[test]
    fn odd_and_even_frame_counts_agree() {
        let samples = test_signal(FFT_SIZE + 4 * HOP_SAMPLES, 3);
        let five = spectrogram(&samples);
        let four = spectrogram(&samples[..FFT_SIZE + 3 * HOP_SAMPLES]);
        assert_eq!((five.log.nrows(), four.log.nrows()), (5, 4));
        for (x, y) in five.log.rows().into_iter().zip(four.log.rows()) {
            for (a, b) in x.iter().zip(y.iter()) {
                assert!((a - b).abs() < 1e-3, "{a} vs {b}");
            }
        }
    }

    #[test]
    fn short_input_has_no_frames() {
        assert_eq!(log_spectrogram(&[0.0; 100]).nrows(), 0);
    }
}

//! Landmark fingerprints that survive noise, codecs, mixing, **and** speed, tempo
//! and pitch changes.
//!
//! ## Design
//!
//! 1. **Peaks.** On the log-frequency spectrogram ([`crate::spectrogram`]) a peak is a
//!    local maximum over a time × frequency neighbourhood, at least
//!    [`MIN_PROMINENCE`] above the mean level of its frame and above a silence floor.
//!    Density is controlled *without* a block grid: a peak is kept if fewer than
//!    `density` peaks within ±0.5 s are more prominent. This is shift-invariant, so
//!    an excerpt cut anywhere selects the same peaks as the full recording. Peak time
//!    and frequency are refined by parabolic interpolation.
//! 2. **Triplets, not pairs.** Each anchor peak `a` is combined with pairs `(b, c)` of
//!    the next peaks in its target zone (`t_a < t_b < t_c`, Δt_ac within
//!    [`DT_AC_MIN_FRAMES`, `DT_AC_MAX_FRAMES`], |Δf| ≤ [`DF_MAX_BINS`]). The hash holds
//!    * the time **ratio** `(t_b − t_a)/(t_c − t_a)`: unchanged by any time scaling
//!      (speed or tempo);
//!    * the log-frequency **differences** `f_b − f_a`, `f_c − f_a`: unchanged by any
//!      frequency scaling (speed or pitch), because on a log axis scaling is a shift;
//!    * coarse, deliberately tolerant absolute terms for selectivity: the anchor's
//!      frequency band (8 bands of half an octave), the magnitude of `Δt_ac` on a
//!      log scale (4 bins), and which of the three peaks is loudest.
//!
//!    The fields are packed in mixed radix into a [`HASH_BITS`]-bit hash
//!    (8 × 49 × 49 × 16 × 4 × 3 ≈ 3.7 M values, 21.8 bits). Pair hashes (Wang)
//!    bake absolute Δt and f into the hash, so a 5 % speed change destroys most
//!    of them; these triplets keep their selectivity while being invariant to
//!    the transformations we must survive (cf. Panako, Six & Leman). The bits
//!    matter at catalog scale: each one halves the chance postings a lookup
//!    reads (20-bit hashes of session 3 gave ~190 per list at 1000 h).
//! 3. **Asymmetry.** References are indexed sparsely ([`Side::Reference`]: fewer
//!    peaks, the first [`REF_FANOUT`] partners) to keep the index ≤ 2 MB/hour.
//!    Queries are fingerprinted densely ([`Side::Query`]: more peaks, more partners,
//!    and **multi-probe**: when a quantised field lies near a bin edge — where jitter
//!    or a tempo/pitch change could push it across — the neighbouring bin is looked up
//!    too). The query's prints are a superset of what the reference stored for the
//!    same audio, and no extra index space is spent.
//! 4. **Parallel blocks.** Long audio is cut into [`BLOCK_FRAMES`]-frame blocks with
//!    enough context on both sides that every block yields exactly the prints the
//!    whole signal would; rayon fingerprints the blocks in parallel.
//!
//! Every index records [`CONFIG_ID`]; any change to a constant here must bump it.

use ndarray::{Array2, ArrayView2};
use rayon::prelude::*;

use crate::spectrogram::{self, FFT_SIZE, HOP_SAMPLES, Spectrogram, max_f32, span_level};

pub use crate::spectrogram::{FRAMES_PER_SECOND, SAMPLE_RATE_HZ};

/// Identifies the fingerprint parameters; stored in every index segment.
pub const CONFIG_ID: u32 = 0x0001_000B;

/// Peaks must exceed the mean log2 power of their frame by this much (≈ 3 dB/unit).
pub const MIN_PROMINENCE: f32 = 1.0;
/// log2 power below which nothing is a peak (≈ −70 dBFS for a sine).
pub const SILENCE_LOG2: f32 = -8.0;
/// Sliding window (± frames) within which peak density is controlled (± 0.5 s).
pub const DENSITY_HALF_WINDOW_FRAMES: u32 = 62;

/// Shortest and longest anchor → last-peak span of a triplet (64–384 ms).
pub const DT_AC_MIN_FRAMES: f32 = 8.0;
pub const DT_AC_MAX_FRAMES: f32 = 48.0;
/// Minimum gap between consecutive peaks of a triplet (frames).
pub const DT_MIN_GAP_FRAMES: f32 = 2.0;
/// Largest |Δf| inside a triplet (log bins: 24 = one octave).
pub const DF_MAX_BINS: f32 = 24.0;
/// Smallest |Δf| between any two peaks of a triplet: repeated peaks of one
/// sustained partial make near-identical hashes in every recording.
pub const DF_MIN_BINS: f32 = 1.0;

/// Quantisation of the hash fields.
const RATIO_LEVELS: f32 = 16.0;
const DT_LOG_BIN_WIDTH: f32 = 0.5;
const DT_LOG_BINS: i32 = 4;
const BAND_BINS: f32 = 12.0;
const BANDS: i32 = 8;
const DF_LEVELS: i32 = 49;
/// Which of the three peaks is loudest: a, b or c.
const LOUDEST_LEVELS: i32 = 3;

/// Multi-probe margins (in quantisation units of each field).
const PROBE_MARGIN_DF: f32 = 0.2;
const PROBE_MARGIN_RATIO: f32 = 0.25;
const PROBE_MARGIN_DT: f32 = 0.2;
const PROBE_MARGIN_BAND: f32 = 0.3;
/// The runner-up is probed as "loudest" when within this much (log2 power,
/// ≈ 3 dB per unit) of the loudest peak.
const PROBE_MARGIN_LOUDEST: f32 = 0.5;

/// Frames per parallel block (≈ 20 s).
pub const BLOCK_FRAMES: usize = 2_500;

/// Which end of the system a fingerprint is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Stored in the index: sparse.
    Reference,
    /// Looked up: dense, with multi-probe.
    Query,
}

/// Peak-picking and pairing parameters of one side.
#[derive(Debug, Clone, Copy)]
struct SideParams {
    /// ± log bins of the local-maximum neighbourhood.
    neighbourhood_bins: usize,
    /// ± frames of the local-maximum neighbourhood.
    neighbourhood_frames: usize,
    /// Peaks kept per second (per sliding second) for hashing.
    peaks_per_second: usize,
    /// Peaks kept per second for match verification ([`Fingerprint::peaks`]);
    /// a superset of the hashed peaks.
    verify_peaks_per_second: usize,
    /// Partners considered per anchor.
    fanout: usize,
    /// Triplets kept per anchor (earliest partner pairs first).
    triplets_per_anchor: usize,
}

/// Reference: partners considered and triplets stored per anchor.
pub const REF_FANOUT: usize = 7;
pub const REF_TRIPLETS_PER_ANCHOR: usize = 6;

const REFERENCE: SideParams = SideParams {
    neighbourhood_bins: 8,
    neighbourhood_frames: 10,
    peaks_per_second: 24,
    verify_peaks_per_second: 24,
    fanout: REF_FANOUT,
    triplets_per_anchor: REF_TRIPLETS_PER_ANCHOR,
};

const QUERY: SideParams = SideParams {
    neighbourhood_bins: 8,
    neighbourhood_frames: 10,
    peaks_per_second: 40,
    verify_peaks_per_second: QUERY_VERIFY_PEAKS_PER_SECOND,
    fanout: 9,
    triplets_per_anchor: usize::MAX,
};

/// Query peaks kept for verification: denser than the reference's, so a reference
/// peak that is not among the strongest of a mixture is still found.
pub const QUERY_VERIFY_PEAKS_PER_SECOND: usize = 40;

impl Side {
    fn params(self) -> SideParams {
        match self {
            Side::Reference => REFERENCE,
            Side::Query => QUERY,
        }
    }
}

/// A spectral peak. `t` in frames, `f` in log bins (both fractional).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Peak {
    pub t: f32,
    pub f: f32,
    pub level: f32,
    pub prominence: f32,
    pub frame: u32,
}

/// One hash with the anchor's position: what the index stores and the query looks up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Print {
    /// Hash below 2^[`HASH_BITS`] (see module docs).
    pub hash: u32,
    /// Anchor frame.
    pub t_frame: u32,
    /// Anchor frequency in half log bins (0..=255).
    pub f_half_bins: u8,
}

/// Number of significant bits in [`Print::hash`].
pub const HASH_BITS: u32 = 22;
const _: () = assert!(
    (BANDS * DF_LEVELS * DF_LEVELS * RATIO_LEVELS as i32 * DT_LOG_BINS * LOUDEST_LEVELS) as u64
        <= 1u64 << HASH_BITS
);

/// A picked peak as kept for match verification (the matcher checks that the
/// reference's peaks reappear in the query under the found alignment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeakPoint {
    /// Frame of the peak.
    pub t_frame: u32,
    /// Frequency in half log bins (0..=255), as [`Print::f_half_bins`].
    pub f_half_bins: u8,
}

impl PeakPoint {
    fn of(peak: &Peak, frame_offset: u32) -> Self {
        Self {
            t_frame: peak.frame + frame_offset,
            f_half_bins: half_bins(peak.f),
        }
    }
}

/// Log-bin frequency to the half-bin grid of prints and peak points.
fn half_bins(f_bins: f32) -> u8 {
    (f_bins * 2.0).round().clamp(0.0, 255.0) as u8
}

/// Fingerprint of one input.
#[derive(Debug, Clone, Default)]
pub struct Fingerprint {
    pub prints: Vec<Print>,
    /// Picked peaks, sorted by frame then frequency.
    pub peaks: Vec<PeakPoint>,
    /// Number of spectrogram frames analysed.
    pub frames: usize,
}

impl Fingerprint {
    pub fn duration_s(&self) -> f64 {
        self.frames as f64 / FRAMES_PER_SECOND
    }
}

/// Context needed on each side of a block so its prints match the whole signal's.
fn context_frames(side: Side) -> (usize, usize) {
    let p = side.params();
    let local = p.neighbourhood_frames + DENSITY_HALF_WINDOW_FRAMES as usize + 2;
    (local, local + DT_AC_MAX_FRAMES.ceil() as usize + 2)
}

/// Fingerprints mono samples at [`SAMPLE_RATE_HZ`], in parallel blocks when long.
pub fn fingerprint_samples(samples: &[f32], side: Side) -> Fingerprint {
    let frames = spectrogram::frame_count(samples.len());
    if frames <= BLOCK_FRAMES {
        return fingerprint_block(samples, 0, 0, frames, side);
    }
    let blocks: Vec<usize> = (0..frames).step_by(BLOCK_FRAMES).collect();
    let parts: Vec<Fingerprint> = blocks
        .par_iter()
        .map(|&start| {
            let end = (start + BLOCK_FRAMES).min(frames);
            block_prints(samples, start, end, side)
        })
        .collect();
    let mut whole = Fingerprint {
        frames,
        ..Fingerprint::default()
    };
    for part in parts {
        whole.append_block(part);
    }
    whole
}

impl Fingerprint {
    /// Appends the prints and peaks of the next block.
    fn append_block(&mut self, mut part: Fingerprint) {
        self.prints.append(&mut part.prints);
        self.peaks.append(&mut part.peaks);
    }
}

/// Prints and peaks anchored in frames `[start, end)` of the whole signal, computed
/// from a window with enough context.
fn block_prints(samples: &[f32], start: usize, end: usize, side: Side) -> Fingerprint {
    let (before, after) = context_frames(side);
    let first = start.saturating_sub(before);
    let last_frame = end + after;
    let sample_start = first * HOP_SAMPLES;
    let sample_end = (last_frame * HOP_SAMPLES + FFT_SIZE).min(samples.len());
    let window = &samples[sample_start..sample_end];
    fingerprint_block(window, first, start, end, side)
}

/// Fingerprints `samples` whose frame 0 is frame `frame_offset` of the whole signal,
/// keeping prints anchored in `[keep_from, keep_to)` (whole-signal frames).
fn fingerprint_block(
    samples: &[f32],
    frame_offset: usize,
    keep_from: usize,
    keep_to: usize,
    side: Side,
) -> Fingerprint {
    let spec = spectrogram::spectrogram(samples);
    let frames = spec.log.nrows();
    let candidates = peak_candidates(&spec, side);
    let params = side.params();
    let (peaks, verify_peaks) = if params.verify_peaks_per_second == params.peaks_per_second {
        let peaks = limit_density(candidates, params.peaks_per_second);
        (peaks.clone(), peaks)
    } else {
        let verify = limit_density(candidates.clone(), params.verify_peaks_per_second);
        (limit_density(candidates, params.peaks_per_second), verify)
    };
    let mut prints = Vec::new();
    let offset = frame_offset as u32;
    let lo = keep_from.saturating_sub(frame_offset) as u32;
    let hi = keep_to.saturating_sub(frame_offset) as u32;
    triplet_prints(
        &peaks,
        side,
        |anchor_frame| anchor_frame >= lo && anchor_frame < hi,
        &mut prints,
    );
    for print in &mut prints {
        print.t_frame += offset;
    }
    let mut kept: Vec<PeakPoint> = verify_peaks
        .iter()
        .filter(|p| p.frame >= lo && p.frame < hi)
        .map(|p| PeakPoint::of(p, offset))
        .collect();
    kept.sort_unstable();
    Fingerprint {
        prints,
        peaks: kept,
        frames,
    }
}

/// Picks peaks at the side's hashing density (see module docs).
pub fn pick_peaks(spectrogram: &Spectrogram, side: Side) -> Vec<Peak> {
    limit_density(
        peak_candidates(spectrogram, side),
        side.params().peaks_per_second,
    )
}

/// Every local maximum that qualifies as a peak, before density control.
fn peak_candidates(spectrogram: &Spectrogram, side: Side) -> Vec<Peak> {
    let spec = spectrogram.log.view();
    let p = side.params();
    let (frames, bins) = spec.dim();
    if frames == 0 || bins == 0 {
        return Vec::new();
    }
    let freq_max = max_filter_bins(spec, p.neighbourhood_bins);
    let spec_rows = spec.as_standard_layout();
    let (Some(cells), Some(max_cells)) = (spec_rows.as_slice(), freq_max.as_slice()) else {
        return Vec::new();
    };
    let mut candidates = Vec::new();
    let nt = p.neighbourhood_frames;
    for (t, (row, max_row)) in cells
        .chunks_exact(bins)
        .zip(max_cells.chunks_exact(bins))
        .enumerate()
    {
        // Summed as ndarray sums (same rounding as the indexed fingerprints).
        let frame_mean = ndarray::ArrayView1::from(row).sum() / bins as f32;
        let t_lo = t.saturating_sub(nt);
        let t_hi = (t + nt).min(frames - 1);
        // Edge bins are not local maxima of the spectrum, only of the grid.
        for k in 1..bins.saturating_sub(1) {
            let v = row[k];
            if v < max_row[k] || v < SILENCE_LOG2 || v - frame_mean < MIN_PROMINENCE {
                continue;
            }
            // Strict maximum with ties resolved to the earliest frame and lowest bin,
            // so a plateau yields exactly one peak.
            let column_max = |u: usize| max_cells[u * bins + k];
            if (t + 1..=t_hi).any(|u| column_max(u) > v)
                || (t_lo..t).any(|u| column_max(u) >= v)
                || row[k.saturating_sub(p.neighbourhood_bins)..k]
                    .iter()
                    .any(|&x| x >= v)
            {
                continue;
            }
            candidates.push(refine(spectrogram, t, k, v - frame_mean));
        }
    }
    candidates
}

/// Maximum over ± `half` bins along frequency, per frame.
fn max_filter_bins(spec: ArrayView2<f32>, half: usize) -> Array2<f32> {
    let (frames, bins) = spec.dim();
    let mut out_cells: Vec<f32> = Vec::with_capacity(frames * bins);
    let mut out_row = vec![0.0f32; bins];
    let mut table = SparseMaxTable::default();
    let mut row_buf = Vec::with_capacity(bins);
    let window = 2 * half + 1;
    for row in spec.outer_iter() {
        let row = match row.to_slice() {
            Some(cells) => cells,
            None => {
                row_buf.clear();
                row_buf.extend(row.iter().copied());
                &row_buf[..]
            }
        };
        table.build(row, window);
        // Bins whose window lies inside the row: one fixed level, two loads,
        // no index arithmetic per bin (the loop vectorises).
        let interior = half..bins.saturating_sub(half);
        if window <= bins && !interior.is_empty() {
            let level = span_level(window);
            let span = 1usize << level;
            let cells = &table.levels[level];
            let first = &cells[interior.start - half..];
            let second = &cells[interior.start + half + 1 - span..];
            for ((dst, &a), &b) in out_row[interior.clone()].iter_mut().zip(first).zip(second) {
                *dst = max_f32(a, b);
            }
        }
        for k in (0..interior.start.min(bins)).chain(interior.end.max(interior.start)..bins) {
            let lo = k.saturating_sub(half);
            let hi = (k + half).min(bins - 1);
            out_row[k] = table.max(lo, hi);
        }
        out_cells.extend_from_slice(&out_row);
    }
    Array2::from_shape_vec((frames, bins), out_cells)
        .unwrap_or_else(|_| Array2::zeros((frames, bins)))
}

/// Range maximum by a sparse table: `levels[l][i]` is the maximum of
/// `row[i .. i + 2^l]`, so any window is the maximum of two overlapping
/// power-of-two spans. Exact (a maximum of the same values) and a few operations
/// per bin instead of one per neighbour: this filter is the fingerprinter's
/// hottest loop.
#[derive(Default)]
struct SparseMaxTable {
    levels: Vec<Vec<f32>>,
}

impl SparseMaxTable {
    /// Builds the levels needed for windows up to `max_window` long.
    fn build(&mut self, row: &[f32], max_window: usize) {
        let depth = span_level(max_window) + 1;
        self.levels.resize_with(depth, Vec::new);
        self.levels[0].clear();
        self.levels[0].extend_from_slice(row);
        for l in 1..depth {
            let step = 1usize << (l - 1);
            let (done, todo) = self.levels.split_at_mut(l);
            let prev = &done[l - 1];
            let next = &mut todo[0];
            next.clear();
            // Two slice iterators zipped: exact length, no zero fill, vectorised.
            next.extend(
                prev.iter()
                    .zip(prev.get(step..).unwrap_or_default())
                    .map(|(&a, &b)| max_f32(a, b)),
            );
        }
    }

    /// Maximum of `row[lo..=hi]` (`lo ≤ hi`, window no longer than built for).
    fn max(&self, lo: usize, hi: usize) -> f32 {
        let l = span_level(hi - lo + 1);
        let level = &self.levels[l];
        max_f32(level[lo], level[hi + 1 - (1 << l)])
    }
}

/// Parabolic refinement of a peak's time (on the log grid) and frequency (on the
/// linear FFT bins, see [`Spectrogram::refine_frequency`]).
fn refine(spectrogram: &Spectrogram, t: usize, k: usize, prominence: f32) -> Peak {
    let spec = spectrogram.log.view();
    let frames = spec.nrows();
    let v = spec[[t, k]];
    let dt = if t > 0 && t + 1 < frames {
        parabolic_offset(spec[[t - 1, k]], v, spec[[t + 1, k]])
    } else {
        0.0
    };
    Peak {
        t: t as f32 + dt,
        f: spectrogram.refine_frequency(t, k).max(0.0),
        level: v,
        prominence,
        frame: t as u32,
    }
}

fn parabolic_offset(left: f32, centre: f32, right: f32) -> f32 {
    let denom = left - 2.0 * centre + right;
    if denom.abs() < 1e-6 {
        0.0
    } else {
        (0.5 * (left - right) / denom).clamp(-0.5, 0.5)
    }
}

/// Keeps a peak if fewer than `per_second` peaks within ± 0.5 s are more prominent.
fn limit_density(mut candidates: Vec<Peak>, per_second: usize) -> Vec<Peak> {
    candidates.sort_by(|a, b| a.frame.cmp(&b.frame).then(a.f.total_cmp(&b.f)));
    let w = DENSITY_HALF_WINDOW_FRAMES;
    let mut kept = Vec::with_capacity(candidates.len());
    let mut lo = 0usize;
    let mut hi = 0usize;
    for (i, peak) in candidates.iter().enumerate() {
        while candidates[lo].frame + w < peak.frame {
            lo += 1;
        }
        while hi < candidates.len() && candidates[hi].frame <= peak.frame + w {
            hi += 1;
        }
        let stronger = candidates[lo..hi]
            .iter()
            .enumerate()
            .filter(|(j, other)| {
                other.prominence > peak.prominence
                    || (other.prominence == peak.prominence && lo + j < i)
            })
            .count();
        if stronger < per_second {
            kept.push(*peak);
        }
    }
    kept
}

/// Quantised value of one hash field with an optional neighbour to probe.
#[derive(Debug, Clone, Copy)]
struct Field {
    value: i32,
    alt: Option<i32>,
}

impl Field {
    /// `x` in quantisation units, rounded to the nearest level.
    fn rounded(x: f32, margin: f32, min: i32, max: i32, probe: bool) -> Self {
        let value = (x.round() as i32).clamp(min, max);
        let frac = x - x.round();
        let alt = if !probe {
            None
        } else if frac > 0.5 - margin {
            Some(value + 1)
        } else if frac < -(0.5 - margin) {
            Some(value - 1)
        } else {
            None
        };
        Self {
            value,
            alt: alt.filter(|a| (min..=max).contains(a)),
        }
    }

    /// `x` in quantisation units, floored to its level.
    fn floored(x: f32, margin: f32, min: i32, max: i32, probe: bool) -> Self {
        let value = (x.floor() as i32).clamp(min, max);
        let frac = x - x.floor();
        let alt = if !probe {
            None
        } else if frac < margin {
            Some(value - 1)
        } else if frac > 1.0 - margin {
            Some(value + 1)
        } else {
            None
        };
        Self {
            value,
            alt: alt.filter(|a| (min..=max).contains(a)),
        }
    }

    fn options(self) -> impl Iterator<Item = i32> {
        std::iter::once(self.value).chain(self.alt)
    }
}

/// Builds triplet prints for anchors accepted by `keep_anchor` (anchor frame).
///
/// Partners are the next peaks in the anchor's target zone (at least
/// [`DT_MIN_GAP_FRAMES`] later, within ±[`DF_MAX_BINS`]). Pairs of partners are taken
/// in order of the later partner, then the earlier one — `(1,2), (1,3), (2,3),
/// (1,4)…` — so the earliest, most reproducible combinations come first; the
/// reference keeps the first few valid ones, the query all of them.
pub fn triplet_prints(
    peaks: &[Peak],
    side: Side,
    keep_anchor: impl Fn(u32) -> bool,
    out: &mut Vec<Print>,
) {
    let params = side.params();
    let probe = side == Side::Query;
    let mut order: Vec<&Peak> = peaks.iter().collect();
    order.sort_by(|a, b| a.t.total_cmp(&b.t));
    let mut partners: Vec<&Peak> = Vec::with_capacity(params.fanout);
    for (i, a) in order.iter().enumerate() {
        if !keep_anchor(a.frame) {
            continue;
        }
        partners.clear();
        for b in &order[i + 1..] {
            let dt = b.t - a.t;
            if dt > DT_AC_MAX_FRAMES {
                break;
            }
            let df = (b.f - a.f).abs();
            if dt >= DT_MIN_GAP_FRAMES && (DF_MIN_BINS..=DF_MAX_BINS).contains(&df) {
                partners.push(b);
                if partners.len() == params.fanout {
                    break;
                }
            }
        }
        let mut made = 0;
        'pairs: for (k, c) in partners.iter().enumerate() {
            for b in &partners[..k] {
                if let Some(fields) = triplet_fields(a, b, c, probe) {
                    emit_hashes(&fields, a, out);
                    made += 1;
                    if made == params.triplets_per_anchor {
                        break 'pairs;
                    }
                }
            }
        }
    }
}

struct TripletFields {
    band: Field,
    df_ab: Field,
    df_ac: Field,
    ratio: Field,
    dt: Field,
    loudest: Field,
}

/// Which of the triplet's peaks is loudest (0 = a, 1 = b, 2 = c), with the
/// runner-up as the probe when the two are close.
fn loudest_field(levels: [f32; 3], probe: bool) -> Field {
    let mut order = [0usize, 1, 2];
    order.sort_by(|&i, &j| levels[j].total_cmp(&levels[i]).then(i.cmp(&j)));
    let (first, second) = (order[0], order[1]);
    let close = levels[first] - levels[second] < PROBE_MARGIN_LOUDEST;
    Field {
        value: first as i32,
        alt: (probe && close).then_some(second as i32),
    }
}

fn triplet_fields(a: &Peak, b: &Peak, c: &Peak, probe: bool) -> Option<TripletFields> {
    let dt_ab = b.t - a.t;
    let dt_ac = c.t - a.t;
    if dt_ac < DT_AC_MIN_FRAMES || c.t - b.t < DT_MIN_GAP_FRAMES || (c.f - b.f).abs() < DF_MIN_BINS
    {
        return None;
    }
    let half_df = (DF_LEVELS - 1) / 2;
    let ratio_x = dt_ab / dt_ac * RATIO_LEVELS;
    let dt_x = (dt_ac / DT_AC_MIN_FRAMES).ln() / DT_LOG_BIN_WIDTH;
    let band_x = a.f / BAND_BINS;
    Some(TripletFields {
        band: Field::floored(band_x, PROBE_MARGIN_BAND, 0, BANDS - 1, probe),
        df_ab: Field::rounded(b.f - a.f, PROBE_MARGIN_DF, -half_df, half_df, probe),
        df_ac: Field::rounded(c.f - a.f, PROBE_MARGIN_DF, -half_df, half_df, probe),
        ratio: Field::floored(
            ratio_x,
            PROBE_MARGIN_RATIO,
            0,
            RATIO_LEVELS as i32 - 1,
            probe,
        ),
        dt: Field::floored(dt_x, PROBE_MARGIN_DT, 0, DT_LOG_BINS - 1, probe),
        loudest: loudest_field([a.level, b.level, c.level], probe),
    })
}

fn emit_hashes(f: &TripletFields, anchor: &Peak, out: &mut Vec<Print>) {
    let half_df = (DF_LEVELS - 1) / 2;
    let f_half_bins = half_bins(anchor.f);
    for band in f.band.options() {
        for df_ab in f.df_ab.options() {
            for df_ac in f.df_ac.options() {
                for ratio in f.ratio.options() {
                    for dt in f.dt.options() {
                        for loudest in f.loudest.options() {
                            let fields = HashFields {
                                band,
                                df_ab: df_ab + half_df,
                                df_ac: df_ac + half_df,
                                ratio,
                                dt,
                                loudest,
                            };
                            out.push(Print {
                                hash: pack_hash(fields),
                                t_frame: anchor.frame,
                                f_half_bins,
                            });
                        }
                    }
                }
            }
        }
    }
}

/// Quantised hash fields, each in `0..levels`.
struct HashFields {
    band: i32,
    df_ab: i32,
    df_ac: i32,
    ratio: i32,
    dt: i32,
    loudest: i32,
}

/// Packs the fields in mixed radix (no level wasted), below
/// 8 × 49 × 49 × 16 × 4 × 3 = 3 687 936 < 2^22: the anchor band is the most
/// significant digit, which of the three peaks is loudest the least.
fn pack_hash(f: HashFields) -> u32 {
    let digit = |v: i32, levels: i32| v.clamp(0, levels - 1) as u32;
    let mut hash = digit(f.band, BANDS);
    hash = hash * DF_LEVELS as u32 + digit(f.df_ab, DF_LEVELS);
    hash = hash * DF_LEVELS as u32 + digit(f.df_ac, DF_LEVELS);
    hash = hash * RATIO_LEVELS as u32 + digit(f.ratio, RATIO_LEVELS as i32);
    hash = hash * DT_LOG_BINS as u32 + digit(f.dt, DT_LOG_BINS);
    hash * LOUDEST_LEVELS as u32 + digit(f.loudest, LOUDEST_LEVELS)
}

/// Incremental fingerprinting of a stream of mono blocks: memory stays bounded by
/// a few blocks whatever the input length; full blocks are fingerprinted in
/// parallel batches.
pub struct StreamingFingerprinter {
    side: Side,
    /// Samples not yet fully consumed; `buffer[0]` is whole-signal sample `buffer_start`.
    buffer: Vec<f32>,
    buffer_start: usize,
    /// Blocks fingerprinted together, in parallel, once enough audio has come.
    batch_blocks: usize,
    /// Anchor frames per block.
    block_frames: usize,
    /// Next anchor frame to fingerprint.
    next_frame: usize,
    total_samples: usize,
    done: Fingerprint,
}

/// Blocks fingerprinted together in one parallel batch.
const STREAM_BATCH_BLOCKS: usize = 4;
/// Smallest piece the end of a stream is cut into (≈ 4 s): each piece also
/// analyses its context frames on both sides, which shorter pieces would
/// mostly spend their time on.
const MIN_TAIL_BLOCK_FRAMES: usize = 500;
/// Block length of [`StreamingFingerprinter::pipelined`] (≈ 10 s). Each block
/// also analyses ≈ 1.6 s of context, a sixth more work, which the second core
/// absorbs while the first decodes; 20 s blocks left a whole block to do after
/// decoding ended.
pub const PIPELINE_BLOCK_FRAMES: usize = 1_250;

impl StreamingFingerprinter {
    pub fn new(side: Side) -> Self {
        Self::with_batch_blocks(side, STREAM_BATCH_BLOCKS)
    }

    /// Fingerprints every `batch_blocks` blocks as they become ready (smaller
    /// batches start sooner).
    pub fn with_batch_blocks(side: Side, batch_blocks: usize) -> Self {
        Self::with_blocks(side, batch_blocks, BLOCK_FRAMES)
    }

    /// For a stream decoded on another thread: each [`PIPELINE_BLOCK_FRAMES`]
    /// block is fingerprinted as soon as it has arrived, so fingerprinting
    /// trails decoding by one short block and little is left when decoding ends.
    pub fn pipelined(side: Side) -> Self {
        Self::with_blocks(side, 1, PIPELINE_BLOCK_FRAMES)
    }

    fn with_blocks(side: Side, batch_blocks: usize, block_frames: usize) -> Self {
        Self {
            side,
            buffer: Vec::new(),
            buffer_start: 0,
            batch_blocks: batch_blocks.max(1),
            block_frames: block_frames.max(1),
            next_frame: 0,
            total_samples: 0,
            done: Fingerprint::default(),
        }
    }

    /// Appends samples; fingerprints whatever whole blocks are ready.
    pub fn push(&mut self, samples: &[f32]) {
        self.buffer.extend_from_slice(samples);
        self.total_samples += samples.len();
        let (_, after) = context_frames(self.side);
        let batch_frames = self.block_frames * self.batch_blocks;
        let needed_frame = self.next_frame + batch_frames + after + 1;
        if self.buffered_frames_end() >= needed_frame {
            self.process_until(self.next_frame + batch_frames);
        }
    }

    fn buffered_frames_end(&self) -> usize {
        spectrogram::frame_count(self.total_samples)
    }

    fn process_until(&mut self, end_frame: usize) {
        self.process_in_blocks(end_frame, self.block_frames);
    }

    /// Fingerprints frames up to `end_frame` in blocks of `block_frames`, in parallel.
    fn process_in_blocks(&mut self, end_frame: usize, block_frames: usize) {
        let block_frames = block_frames.max(1);
        let starts: Vec<usize> = (self.next_frame..end_frame).step_by(block_frames).collect();
        let base = self.buffer_start;
        let total_frames = self.buffered_frames_end();
        let buffer = &self.buffer;
        let side = self.side;
        let parts: Vec<Fingerprint> = starts
            .par_iter()
            .map(|&start| {
                let end = (start + block_frames).min(end_frame).min(total_frames);
                block_prints_buffered(buffer, base, start, end, side)
            })
            .collect();
        for part in parts {
            self.done.append_block(part);
        }
        self.next_frame = end_frame;
        // Drop samples no future block needs.
        let (before, _) = context_frames(self.side);
        let keep_from = self.next_frame.saturating_sub(before) * HOP_SAMPLES;
        if keep_from > self.buffer_start {
            let drop = keep_from - self.buffer_start;
            self.buffer.drain(..drop.min(self.buffer.len()));
            self.buffer_start = keep_from;
        }
    }

    /// Fingerprints the rest and returns the whole fingerprint.
    ///
    /// The rest is at most a batch of blocks. Called from a plain thread, with
    /// nothing else left to overlap with, it is cut into one piece per thread (never smaller than
    /// [`MIN_TAIL_BLOCK_FRAMES`]): a short input's last block would otherwise
    /// run on one core while the other waits.
    pub fn finish(mut self) -> Fingerprint {
        let frames = self.buffered_frames_end();
        if frames > self.next_frame {
            let rest = frames - self.next_frame;
            // On a pool worker (scan, service) other items keep the cores busy.
            let pieces = if rayon::current_thread_index().is_some() {
                1
            } else {
                rayon::current_num_threads().max(1)
            };
            let block_frames = rest.div_ceil(pieces).clamp(
                MIN_TAIL_BLOCK_FRAMES.min(self.block_frames),
                self.block_frames,
            );
            self.process_in_blocks(frames, block_frames);
        }
        self.done.frames = frames;
        self.done
    }
}

/// Like [`block_prints`] for a buffer holding whole-signal samples from `base`.
fn block_prints_buffered(
    buffer: &[f32],
    base: usize,
    start: usize,
    end: usize,
    side: Side,
) -> Fingerprint {
    let (before, after) = context_frames(side);
    let first = start.saturating_sub(before);
    let sample_start = first * HOP_SAMPLES;
    let sample_end = (end + after) * HOP_SAMPLES + FFT_SIZE;
    let lo = sample_start.saturating_sub(base).min(buffer.len());
    let hi = sample_end.saturating_sub(base).min(buffer.len());
    fingerprint_block(&buffer[lo..hi], first, start, end, side)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_max_filter_equals_naive_max() {
        let mut state = 12345u64;
        for bins in [1usize, 2, 5, 17, 18, 94] {
            let row: Vec<f32> = (0..bins)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                    (state >> 40) as f32
                })
                .collect();
            let spec = Array2::from_shape_vec((1, bins), row.clone()).expect("shape");
            for half in [0usize, 1, 3, 8] {
                let fast = max_filter_bins(spec.view(), half);
                for k in 0..bins {
                    let naive = row[k.saturating_sub(half)..=(k + half).min(bins - 1)]
                        .iter()
                        .copied()
                        .fold(f32::NEG_INFINITY, f32::max);
                    assert_eq!(fast[[0, k]], naive, "bins {bins} half {half} k {k}");
                }
            }
        }
    }

    /// Deterministic "music-like" test signal: a melody of harmonic tones with
    /// changing notes plus a little noise.
    pub(crate) fn melody(seconds: f32, seed: u64) -> Vec<f32> {
        let n = (seconds * SAMPLE_RATE_HZ as f32) as usize;
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        let mut rand = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        let note_len = (0.15 * SAMPLE_RATE_HZ as f32) as usize;
        let mut freqs = Vec::new();
        for _ in 0..(n / note_len + 1) {
            let semitone = (rand() * 24.0).round();
            freqs.push(440.0 * 2f32.powf(semitone / 12.0));
        }
        (0..n)
            .map(|i| {
                let f = freqs[i / note_len];
                let t = i as f32 / SAMPLE_RATE_HZ as f32;
                let tone: f32 = (1..4)
                    .map(|h| (std::f32::consts::TAU * f * h as f32 * t).sin() / h as f32)
                    .sum();
                0.3 * tone + 0.01 * rand()
            })
            .collect()
    }

    #[test]
    fn hash_fits_in_hash_bits_and_is_injective() {
        let fields = |band, df_ab, df_ac, ratio, dt, loudest| HashFields {
            band,
            df_ab,
            df_ac,
            ratio,
            dt,
            loudest,
        };
        let top = pack_hash(fields(BANDS - 1, 48, 48, 15, 3, 2));
        assert!(top < (1 << HASH_BITS));
        assert_eq!(top as usize + 1, 8 * 49 * 49 * 16 * 4 * 3);
        let base = pack_hash(fields(1, 2, 3, 4, 1, 0));
        for other in [
            fields(2, 2, 3, 4, 1, 0),
            fields(1, 3, 3, 4, 1, 0),
            fields(1, 2, 4, 4, 1, 0),
            fields(1, 2, 3, 5, 1, 0),
            fields(1, 2, 3, 4, 2, 0),
            fields(1, 2, 3, 4, 1, 1),
        ] {
            assert_ne!(pack_hash(other), base);
        }
    }

    #[test]
    fn loudest_field_probes_a_close_runner_up() {
        let clear = loudest_field([1.0, 3.0, 0.0], true);
        assert_eq!((clear.value, clear.alt), (1, None));
        let close = loudest_field([2.8, 3.0, 0.0], true);
        assert_eq!((close.value, close.alt), (1, Some(0)));
        let reference = loudest_field([2.8, 3.0, 0.0], false);
        assert_eq!((reference.value, reference.alt), (1, None));
    }

    #[test]
    fn blocks_match_whole_signal() {
        let samples = melody(45.0, 7);
        let (whole, mut whole_peaks) = {
            let spec = spectrogram::spectrogram(&samples);
            let peaks = pick_peaks(&spec, Side::Reference);
            let mut prints = Vec::new();
            triplet_prints(&peaks, Side::Reference, |_| true, &mut prints);
            let points: Vec<PeakPoint> = peaks.iter().map(|p| PeakPoint::of(p, 0)).collect();
            (prints, points)
        };
        let blocked_fp = fingerprint_samples(&samples, Side::Reference);
        whole_peaks.sort_unstable();
        assert!(!whole_peaks.is_empty());
        assert_eq!(whole_peaks, blocked_fp.peaks);
        let mut blocked = blocked_fp.prints;
        let mut whole_sorted = whole.clone();
        whole_sorted.sort();
        blocked.sort();
        assert!(!whole_sorted.is_empty());
        assert_eq!(whole_sorted, blocked);
    }

    #[test]
    fn streaming_matches_batch() {
        let samples = melody(130.0, 3);
        let batch = fingerprint_samples(&samples, Side::Reference);
        let mut stream = StreamingFingerprinter::new(Side::Reference);
        for chunk in samples.chunks(10_007) {
            stream.push(chunk);
        }
        let streamed = stream.finish();
        assert_eq!(streamed.frames, batch.frames);
        assert_eq!(streamed.peaks, batch.peaks);
        let (mut a, mut b) = (batch.prints, streamed.prints);
        a.sort();
        b.sort();
        assert_eq!(a, b);
    }

    #[test]
    fn pipelined_stream_with_split_tail_matches_batch() {
        // One block at a time, then a tail shorter than a block that `finish`
        // cuts into pieces: the prints must not depend on where the cuts fall.
        for seconds in [7.0, 33.0] {
            let samples = melody(seconds, 5);
            let batch = fingerprint_samples(&samples, Side::Query);
            let mut stream = StreamingFingerprinter::pipelined(Side::Query);
            for chunk in samples.chunks(4_001) {
                stream.push(chunk);
            }
            let streamed = stream.finish();
            assert_eq!(streamed.frames, batch.frames);
            assert_eq!(streamed.peaks, batch.peaks);
            let (mut a, mut b) = (batch.prints, streamed.prints);
            a.sort();
            b.sort();
            assert!(!a.is_empty());
            assert_eq!(a, b, "{seconds} s");
        }
    }

    #[test]
    fn density_is_controlled() {
        let samples = melody(30.0, 11);
        let spec = spectrogram::spectrogram(&samples);
        let peaks = pick_peaks(&spec, Side::Reference);
        let per_second = peaks.len() as f64 / 30.0;
        assert!(per_second > 3.0 && per_second <= 16.0, "{per_second}");
        let fp = fingerprint_samples(&samples, Side::Reference);
        let hashes_per_second = fp.prints.len() as f64 / fp.duration_s();
        assert!(hashes_per_second < 60.0, "{hashes_per_second}");
    }

    #[test]
    fn query_prints_cover_reference_prints() {
        let samples = melody(20.0, 5);
        let reference = fingerprint_samples(&samples, Side::Reference);
        let query = fingerprint_samples(&samples, Side::Query);
        let query_set: std::collections::HashSet<(u32, u32)> =
            query.prints.iter().map(|p| (p.hash, p.t_frame)).collect();
        let covered = reference
            .prints
            .iter()
            .filter(|p| query_set.contains(&(p.hash, p.t_frame)))
            .count();
        let fraction = covered as f64 / reference.prints.len() as f64;
        assert!(
            fraction > 0.8,
            "only {fraction:.2} of reference prints reproduced"
        );
    }

    #[test]
    fn silence_has_no_prints() {
        let fp = fingerprint_samples(&vec![0.0; 80_000], Side::Query);
        assert!(fp.prints.is_empty());
    }
}

//! Peak picking: local maxima of the log spectrogram at a controlled density
//! (step 1 of the module docs).

use ndarray::{Array2, ArrayView2};

use super::{DENSITY_HALF_WINDOW_FRAMES, MIN_PROMINENCE, Peak, SILENCE_LOG2, Side};
use crate::spectrogram::{Spectrogram, max_f32, span_level};

/// Picks peaks at the side's hashing density (see module docs).
pub fn pick_peaks(spectrogram: &Spectrogram, side: Side) -> Vec<Peak> {
    limit_density(
        peak_candidates(spectrogram, side).hashing,
        side.params().peaks_per_second,
    )
}

/// Local maxima that qualify as peaks, before density control.
pub(super) struct PeakCandidates {
    /// Maxima over the side's hashing neighbourhood.
    pub hashing: Vec<Peak>,
    /// Maxima over its (smaller in frequency) verification neighbourhood,
    /// ranked by their level over the surrounding octave where that is higher
    /// ([`LOCAL_MEAN_HALF_BINS`]). `None` when both neighbourhoods are the
    /// same (then the hashing peaks verify).
    pub verify: Option<Vec<Peak>>,
    /// Maxima over the verification neighbourhood shortened in time to
    /// ±`brief_neighbourhood_frames`, ranked the same way: a superset of
    /// `verify`. `None` for a side without brief peaks.
    pub brief: Option<Vec<Peak>>,
}

/// Verification peaks are ranked by their level over the mean of the frame's
/// bins within ± this many (an octave in all) when that is more than their
/// level over the whole frame: a voice makes its own band loud, and a work's
/// partials in the other bands then still rank among the frame's peaks.
const LOCAL_MEAN_HALF_BINS: usize = 12;

/// Every local maximum that qualifies as a peak, over the side's hashing,
/// verification and brief neighbourhoods, in one pass: a maximum over a larger
/// neighbourhood is a maximum over a smaller one that no cell of the ring
/// between the two exceeds.
pub(super) fn peak_candidates(spectrogram: &Spectrogram, side: Side) -> PeakCandidates {
    let spec = spectrogram.log.view();
    let p = side.params();
    let (frames, bins) = spec.dim();
    let outer = p.neighbourhood_bins;
    let inner = p.verify_neighbourhood_bins.min(outer);
    let nt = p.neighbourhood_frames;
    let brief_frames = p.brief_neighbourhood_frames.filter(|&b| b < nt);
    let mut candidates = PeakCandidates {
        hashing: Vec::new(),
        verify: (inner < outer).then(Vec::new),
        brief: brief_frames.map(|_| Vec::new()),
    };
    let ranks_locally = candidates.verify.is_some();
    if frames == 0 || bins == 0 {
        return candidates;
    }
    let freq_max = max_filter_bins(spec, inner);
    let spec_rows = spec.as_standard_layout();
    let (Some(cells), Some(max_cells)) = (spec_rows.as_slice(), freq_max.as_slice()) else {
        return candidates;
    };
    // Maximum over the whole inner (or brief) neighbourhood: almost every
    // cell is below it and is ruled out by one comparison; the few that reach
    // it go through the exact checks (with their tie rules) below.
    let nt_first = brief_frames.unwrap_or(nt);
    let area_max = max_filter_frames(max_cells, bins, nt_first);
    let mut band_sums: Vec<f64> = Vec::with_capacity(bins + 1);
    let ring = Ring {
        cells,
        bins,
        inner,
        outer,
    };
    for (t, (row, max_row)) in cells
        .chunks_exact(bins)
        .zip(area_max.chunks_exact(bins))
        .enumerate()
    {
        // Summed as ndarray sums (same rounding as the indexed fingerprints).
        let frame_mean = ndarray::ArrayView1::from(row).sum() / bins as f32;
        let t_lo = t.saturating_sub(nt);
        let t_hi = (t + nt).min(frames - 1);
        let first_lo = t.saturating_sub(nt_first);
        let first_hi = (t + nt_first).min(frames - 1);
        if ranks_locally {
            prefix_sums(row, &mut band_sums);
        }
        for k in cells_reaching(row, max_row) {
            let v = row[k];
            // Edge bins are not local maxima of the spectrum, only of the grid.
            if k == 0 || k + 1 >= bins || v < SILENCE_LOG2 {
                continue;
            }
            let hashable = v - frame_mean >= MIN_PROMINENCE;
            let local_prominence = if ranks_locally {
                let lo = k.saturating_sub(LOCAL_MEAN_HALF_BINS);
                let hi = (k + LOCAL_MEAN_HALF_BINS + 1).min(bins);
                let band_mean = (band_sums[hi] - band_sums[lo]) / (hi - lo) as f64;
                (v - band_mean as f32).max(v - frame_mean)
            } else {
                f32::NEG_INFINITY
            };
            let verifiable = local_prominence >= MIN_PROMINENCE;
            if !hashable && !verifiable {
                continue;
            }
            // Strict maximum with ties resolved to the earliest frame and lowest bin,
            // so a plateau yields exactly one peak.
            let column_max = |u: usize| max_cells[u * bins + k];
            let later_rival = |frames: std::ops::RangeInclusive<usize>| {
                frames.into_iter().any(|u| column_max(u) > v)
            };
            let earlier_rival =
                |frames: std::ops::Range<usize>| frames.into_iter().any(|u| column_max(u) >= v);
            if later_rival(t + 1..=first_hi)
                || earlier_rival(first_lo..t)
                || row[k.saturating_sub(inner)..k].iter().any(|&x| x >= v)
            {
                continue;
            }
            let peak = refine(spectrogram, t, k, v - frame_mean);
            let ranked = Peak {
                prominence: local_prominence,
                ..peak
            };
            if let Some(brief) = &mut candidates.brief {
                if verifiable {
                    brief.push(ranked);
                }
                // Beyond the brief neighbourhood, out to the full one.
                if later_rival(first_hi + 1..=t_hi) || earlier_rival(t_lo..first_lo) {
                    continue;
                }
            }
            match &mut candidates.verify {
                Some(verify) => {
                    if verifiable {
                        verify.push(ranked);
                    }
                    if !hashable || ring.holds_a_rival(t, t_lo..=t_hi, k, v) {
                        continue;
                    }
                }
                None if !hashable => continue,
                None => {}
            }
            candidates.hashing.push(peak);
        }
    }
    candidates
}

/// `sums[i]` = sum of `row[..i]` (`sums` has one more element than `row`).
fn prefix_sums(row: &[f32], sums: &mut Vec<f64>) {
    sums.clear();
    sums.push(0.0);
    let mut total = 0.0f64;
    for &x in row {
        total += f64::from(x);
        sums.push(total);
    }
}

/// Cells compared at once by [`cells_reaching`].
const MASK_LANES: usize = 8;

/// Indices `k` (ascending) where `row[k] ≥ ceiling[k]`. Few cells reach their
/// neighbourhood's maximum, so the comparison runs as branch-free masks of
/// [`MASK_LANES`] cells, and only the set bits are visited.
fn cells_reaching<'a>(row: &'a [f32], ceiling: &'a [f32]) -> impl Iterator<Item = usize> + 'a {
    row.chunks(MASK_LANES)
        .zip(ceiling.chunks(MASK_LANES))
        .enumerate()
        .flat_map(|(chunk, (values, ceilings))| {
            let mut mask = values
                .iter()
                .zip(ceilings)
                .enumerate()
                .fold(0u32, |mask, (i, (&v, &c))| mask | (u32::from(v >= c) << i));
            std::iter::from_fn(move || {
                (mask != 0).then(|| {
                    let i = mask.trailing_zeros() as usize;
                    mask &= mask - 1;
                    chunk * MASK_LANES + i
                })
            })
        })
}

/// The bins more than `inner` and at most `outer` bins from a peak candidate.
struct Ring<'a> {
    /// The log spectrogram, row-major.
    cells: &'a [f32],
    bins: usize,
    inner: usize,
    outer: usize,
}

impl Ring<'_> {
    /// Whether a cell of the ring around bin `k`, over `frames`, rules out the
    /// candidate at frame `t` with level `v` as a maximum over ±`outer` bins
    /// (with the tie rules of [`peak_candidates`]: an equal cell wins when it
    /// comes earlier, or at a lower bin of the same frame).
    fn holds_a_rival(
        &self,
        t: usize,
        frames: std::ops::RangeInclusive<usize>,
        k: usize,
        v: f32,
    ) -> bool {
        let below = k.saturating_sub(self.outer)..k.saturating_sub(self.inner);
        let above_end = (k + self.outer + 1).min(self.bins);
        let above = (k + self.inner + 1).min(above_end)..above_end;
        frames.into_iter().any(|u| {
            let row = &self.cells[u * self.bins..(u + 1) * self.bins];
            let earlier = u < t;
            let later = u > t;
            row[below.clone()]
                .iter()
                .any(|&x| if later { x > v } else { x >= v })
                || row[above.clone()]
                    .iter()
                    .any(|&x| if earlier { x >= v } else { x > v })
        })
    }
}

/// Maximum over ± `half` frames along time of a row-major `frames × bins`
/// grid, per bin (the window is clipped at both ends).
///
/// Van Herk / Gil-Werman: cut time into blocks of the window's length `w`;
/// a window `[a, a + w)` spans at most two blocks, so its maximum is the
/// maximum from `a` to the end of its block (a suffix maximum) and from the
/// start of the next block to `a + w − 1` (a prefix maximum). Three passes of
/// whole rows (they vectorise) whatever the window; clipped windows at the
/// ends are taken directly.
fn max_filter_frames(cells: &[f32], bins: usize, half: usize) -> Vec<f32> {
    let frames = cells.len() / bins.max(1);
    let w = 2 * half + 1;
    let rows = |from: usize, to: usize| &cells[from * bins..to * bins];
    let mut out = vec![0.0f32; frames * bins];
    let max_into = |dst: &mut [f32], src: &[f32]| {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = max_f32(*d, s);
        }
    };
    // Clipped windows, taken directly: the first and last `half` frames, or
    // every frame of a grid shorter than one window.
    let direct = |t: usize, out: &mut [f32]| {
        let (lo, hi) = (t.saturating_sub(half), (t + half).min(frames - 1));
        let dst = &mut out[t * bins..(t + 1) * bins];
        dst.copy_from_slice(rows(lo, lo + 1));
        for u in lo + 1..=hi {
            max_into(dst, rows(u, u + 1));
        }
    };
    if frames < w {
        for t in 0..frames {
            direct(t, &mut out);
        }
        return out;
    }
    // Suffix maxima within each block, backwards.
    let mut suffix = cells.to_vec();
    for t in (0..frames - 1).rev() {
        if (t + 1) % w != 0 {
            let (head, tail) = suffix.split_at_mut((t + 1) * bins);
            max_into(&mut head[t * bins..], &tail[..bins]);
        }
    }
    // Prefix maxima, forwards, one row at a time; full windows combine the two.
    let mut prefix = vec![0.0f32; bins];
    for u in 0..frames {
        if u % w == 0 {
            prefix.copy_from_slice(rows(u, u + 1));
        } else {
            max_into(&mut prefix, rows(u, u + 1));
        }
        if u >= 2 * half {
            let t = u - half;
            let dst = &mut out[t * bins..(t + 1) * bins];
            for ((d, &a), &b) in dst
                .iter_mut()
                .zip(&suffix[(t - half) * bins..])
                .zip(&prefix)
            {
                *d = max_f32(a, b);
            }
        }
    }
    for t in (0..half).chain(frames - half..frames) {
        direct(t, &mut out);
    }
    out
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
pub(super) fn limit_density(mut candidates: Vec<Peak>, per_second: usize) -> Vec<Peak> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fingerprint::tests::melody;
    use crate::fingerprint::{QUERY_BRIEF_NEIGHBOURHOOD_FRAMES, fingerprint_samples};
    use crate::spectrogram;

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

    #[test]
    fn time_max_filter_equals_naive_max() {
        let mut state = 99u64;
        for (frames, bins) in [(1usize, 3usize), (4, 2), (20, 5), (21, 5), (22, 5), (97, 7)] {
            let cells: Vec<f32> = (0..frames * bins)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                    (state >> 40) as f32
                })
                .collect();
            for half in [0usize, 1, 3, 10] {
                let fast = max_filter_frames(&cells, bins, half);
                for t in 0..frames {
                    for k in 0..bins {
                        let naive = (t.saturating_sub(half)..=(t + half).min(frames - 1))
                            .map(|u| cells[u * bins + k])
                            .fold(f32::NEG_INFINITY, f32::max);
                        assert_eq!(
                            fast[t * bins + k],
                            naive,
                            "{frames}×{bins} ±{half} at {t},{k}"
                        );
                    }
                }
            }
        }
    }

    /// What a peak's prominence is measured against.
    #[derive(Clone, Copy)]
    enum Level {
        /// The mean of its frame (hashing peaks).
        Frame,
        /// The lower of that and the mean of its frame's bins within
        /// ±[`LOCAL_MEAN_HALF_BINS`] (verification and brief peaks).
        Band,
    }

    /// Peak candidates by their definition: qualifying cells (not on an edge
    /// bin, above the silence floor, prominent over `level`) that no cell
    /// within ±`half_bins` bins and ±`half_frames` frames beats, where an
    /// equal cell wins when it is earlier, or in the same frame at a lower bin.
    fn brute_force_candidates(
        spectrogram: &Spectrogram,
        half_bins: usize,
        half_frames: usize,
        level: Level,
    ) -> Vec<Peak> {
        let spec = &spectrogram.log;
        let (frames, bins) = spec.dim();
        let mut found = Vec::new();
        let mut sums = Vec::new();
        for t in 0..frames {
            let frame_mean = spec.row(t).sum() / bins as f32;
            // The band sums as the picker takes them (same rounding).
            let row: Vec<f32> = spec.row(t).to_vec();
            prefix_sums(&row, &mut sums);
            for k in 1..bins.saturating_sub(1) {
                let v = spec[[t, k]];
                let mean = match level {
                    Level::Frame => frame_mean,
                    Level::Band => {
                        let lo = k.saturating_sub(LOCAL_MEAN_HALF_BINS);
                        let hi = (k + LOCAL_MEAN_HALF_BINS + 1).min(bins);
                        (((sums[hi] - sums[lo]) / (hi - lo) as f64) as f32).min(frame_mean)
                    }
                };
                if v < SILENCE_LOG2 || v - mean < MIN_PROMINENCE {
                    continue;
                }
                let rival = (t.saturating_sub(half_frames)..=(t + half_frames).min(frames - 1))
                    .any(|u| {
                        (k.saturating_sub(half_bins)..=(k + half_bins).min(bins - 1)).any(|j| {
                            let x = spec[[u, j]];
                            (u, j) != (t, k) && (x > v || (x == v && (u < t || (u == t && j < k))))
                        })
                    });
                if !rival {
                    found.push(refine(spectrogram, t, k, v - mean));
                }
            }
        }
        found
    }

    #[test]
    fn every_neighbourhood_matches_its_definition() {
        for (seed, quantum) in [(3u64, 0.0f32), (4, 0.5), (5, 2.0)] {
            let mut spec = spectrogram::spectrogram(&melody(6.0, seed));
            // Coarse levels make plateaus, to exercise the tie rules.
            if quantum > 0.0 {
                spec.log.mapv_inplace(|v| (v / quantum).round() * quantum);
            }
            let query = Side::Query.params();
            let candidates = peak_candidates(&spec, Side::Query);
            let verify = candidates
                .verify
                .expect("the query has a smaller verify neighbourhood");
            let brief = candidates
                .brief
                .expect("the query has a shorter brief neighbourhood");
            assert!(!candidates.hashing.is_empty() && verify.len() > candidates.hashing.len());
            assert!(brief.len() > verify.len());
            assert_eq!(
                candidates.hashing,
                brute_force_candidates(
                    &spec,
                    query.neighbourhood_bins,
                    query.neighbourhood_frames,
                    Level::Frame
                )
            );
            assert_eq!(
                verify,
                brute_force_candidates(
                    &spec,
                    query.verify_neighbourhood_bins,
                    query.neighbourhood_frames,
                    Level::Band
                )
            );
            assert_eq!(
                brief,
                brute_force_candidates(
                    &spec,
                    query.verify_neighbourhood_bins,
                    QUERY_BRIEF_NEIGHBOURHOOD_FRAMES,
                    Level::Band
                )
            );
            let reference = peak_candidates(&spec, Side::Reference);
            assert!(reference.verify.is_none() && reference.brief.is_none());
            assert_eq!(reference.hashing, candidates.hashing);
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
}

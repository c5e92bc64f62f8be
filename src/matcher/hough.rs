//! Hough vote over (speed, offset), line fit, pitch filter and gap split:
//! the alignments of one work's hash hits (steps 2–4 of the module docs).

use super::{Hit, Segment};
use crate::fingerprint::{FRAMES_PER_SECOND, Warp};

/// Speed-factor search range of unwarped prints (warped prints search it
/// scaled by their warp's time scale, see [`SpeedRange::of_warp`]) and the step
/// of the Hough transform.
pub const MIN_SPEED: f64 = 0.86;
pub const MAX_SPEED: f64 = 1.16;

/// Speed factors this close to a search range's edge count as on it.
const EDGE_MARGIN: f64 = 0.02;

/// The speed factors (reference seconds per query second) one group of hits
/// is searched at.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct SpeedRange {
    pub min: f64,
    pub max: f64,
}

impl SpeedRange {
    /// The search range of unwarped prints.
    pub const UNWARPED: SpeedRange = SpeedRange {
        min: MIN_SPEED,
        max: MAX_SPEED,
    };

    /// The search range of prints hashed under warp `tag` (0: unwarped): a
    /// warp maps the query's time by its time scale, and the unwarped range
    /// around it is searched.
    pub fn of_warp(tag: u8) -> SpeedRange {
        let scale = f64::from(Warp::time_scale_of(tag));
        SpeedRange {
            min: MIN_SPEED * scale,
            max: MAX_SPEED * scale,
        }
    }

    /// Whether `slope` lies inside the range, clear of its edges (a line fit
    /// clamped to an edge may be a faster or slower alignment beyond it).
    pub fn holds_inside(self, slope: f64) -> bool {
        (self.min + EDGE_MARGIN..=self.max - EDGE_MARGIN).contains(&slope)
    }

    fn contains(self, slope: f64) -> bool {
        (self.min..=self.max).contains(&slope)
    }
}
const SPEED_STEP: f64 = 0.004;
/// Offset histogram bin width (frames).
const OFFSET_BIN_FRAMES: f64 = 4.0;
/// First, coarse pass of the Hough transform (then refined around its best slope).
const COARSE_SPEED_STEP: f64 = 0.012;
const COARSE_OFFSET_BIN_FRAMES: f64 = 12.0;
/// Coarse slopes refined on the fine grid.
const COARSE_CANDIDATES: usize = 4;
/// Inlier tolerance around the fitted line (frames).
pub(super) const INLIER_TOLERANCE_FRAMES: f64 = 4.0;
/// Inlier tolerance around the median pitch shift (half log bins).
const PITCH_TOLERANCE_HALF_BINS: i32 = 3;
/// A query gap longer than this splits a match in two.
pub const MAX_GAP_S: f64 = 15.0;
/// Works with fewer raw hits are not examined.
const MIN_RAW_HITS: usize = 5;
/// Alignments examined per work.
const MAX_ALIGNMENTS_PER_WORK: usize = 6;

/// Finds the alignments of one work's hits, best first, until the best remaining
/// alignment has fewer than `min_inliers` hits.
pub(super) fn align_work(hits: Vec<Hit>, min_inliers: f64, speeds: SpeedRange) -> Vec<Segment> {
    align_work_rounds(hits, min_inliers, speeds).0
}

/// [`align_work`], also returning how many alignments were taken (rounds whose
/// line was accepted and removed).
fn align_work_rounds(
    mut hits: Vec<Hit>,
    min_inliers: f64,
    speeds: SpeedRange,
) -> (Vec<Segment>, usize) {
    let min_inliers = min_inliers.max(MIN_RAW_HITS as f64);
    let mut segments = Vec::new();
    let mut taken = 0;
    for round in 0..MAX_ALIGNMENTS_PER_WORK {
        if (hits.len() as f64) < min_inliers {
            break;
        }
        let Some(best) = best_alignment(&hits, speeds) else {
            break;
        };
        // The first alignment is always verified; further ones only when they
        // stand out from what chance piles into the fullest offset bin.
        let beats_chance = round == 0 || f64::from(best.count) >= best.chance_ceiling(speeds);
        if !beats_chance || best.estimated_hits() < min_inliers {
            break;
        }
        let (slope, offset) = (best.slope, best.offset);
        let (inliers, rest): (Vec<Hit>, Vec<Hit>) = hits
            .iter()
            .partition(|h| residual(h, slope, offset).abs() <= INLIER_TOLERANCE_FRAMES);
        if (inliers.len() as f64) < min_inliers {
            break;
        }
        let (slope, offset) = fit_line(&inliers, speeds).unwrap_or((slope, offset));
        let inliers: Vec<Hit> = inliers
            .into_iter()
            .filter(|h| residual(h, slope, offset).abs() <= INLIER_TOLERANCE_FRAMES)
            .collect();
        let pitch = median_pitch(&inliers);
        let consistent: Vec<Hit> = inliers
            .into_iter()
            .filter(|h| (pitch_shift(h) - pitch).abs() <= PITCH_TOLERANCE_HALF_BINS)
            .collect();
        segments.extend(split_segments(&consistent, slope, offset, speeds));
        taken += 1;
        hits = rest;
    }
    (segments, taken)
}

fn residual(h: &Hit, slope: f64, offset: f64) -> f64 {
    f64::from(h.tr) - (slope * f64::from(h.tq) + offset)
}

pub(super) fn pitch_shift(h: &Hit) -> i32 {
    i32::from(h.fq) - i32::from(h.fr)
}

fn median_pitch(hits: &[Hit]) -> i32 {
    let mut shifts: Vec<i32> = hits.iter().map(pitch_shift).collect();
    shifts.sort_unstable();
    shifts.get(shifts.len() / 2).copied().unwrap_or(0)
}

/// Hough vote over (speed, offset); returns the best line.
///
/// For each speed on the grid, offsets are counted in a dense histogram (one
/// pass over the hits, one over the bins), each bin together with its right
/// neighbour so a line on a bin edge is not split.
fn best_alignment(all_hits: &[Hit], speeds: SpeedRange) -> Option<Vote> {
    // Many hits mean a strong line: a uniform sample finds it as well, at a
    // fraction of the cost (hits are sorted by query time, so a stride spreads
    // the sample over the whole query).
    let stride = all_hits.len().div_ceil(MAX_VOTE_HITS).max(1);
    let sampled: Vec<Hit>;
    let hits = if stride > 1 {
        sampled = all_hits.iter().step_by(stride).copied().collect();
        &sampled[..]
    } else {
        all_hits
    };
    let times = VoteTimes::new(hits)?;
    let mut buffers = VoteBuffers::default();
    let coarse_steps = ((speeds.max - speeds.min) / COARSE_SPEED_STEP).round() as usize;
    let mut per_slope: Vec<Vote> = (0..=coarse_steps)
        .filter_map(|i| {
            let slope = speeds.min + i as f64 * COARSE_SPEED_STEP;
            vote(
                &times,
                std::iter::once(slope),
                COARSE_OFFSET_BIN_FRAMES,
                speeds,
                &mut buffers,
            )
        })
        .collect();
    per_slope.sort_by_key(|v| std::cmp::Reverse(v.count));
    let fine_steps = (COARSE_SPEED_STEP / SPEED_STEP).ceil() as i64;
    per_slope
        .iter()
        .take(COARSE_CANDIDATES)
        .filter_map(|coarse| {
            let slope = coarse.slope;
            let fine = (-fine_steps..=fine_steps)
                .map(move |i| slope + i as f64 * SPEED_STEP)
                .filter(|&s| speeds.contains(s));
            vote(&times, fine, OFFSET_BIN_FRAMES, speeds, &mut buffers)
        })
        .max_by_key(|v| v.count)
        .map(|v| Vote { stride, ..v })
}

/// Hits voted at most; beyond this, a uniform sample votes.
const MAX_VOTE_HITS: usize = 4096;

/// The fullest pair of adjacent offset bins of a Hough vote.
#[derive(Debug, Clone, Copy)]
struct Vote {
    /// Hits in the pair of bins.
    count: u32,
    slope: f64,
    /// Offset (frames) at the boundary between the two bins.
    offset: f64,
    /// Mean hits per pair of bins at that slope outside the fullest pair:
    /// what chance gives.
    mean_count: f64,
    /// Offset bins of the histogram at that slope.
    bins: usize,
    /// One hit in `stride` voted (counts are of the sample).
    stride: usize,
}

impl Vote {
    /// A count that chance alone rarely reaches in any bin of any slope of the
    /// search: the Poisson count that all the (slope, offset) cells together
    /// exceed with probability below [`CHANCE_CEILING_FALSE_ALARMS`], plus
    /// [`CHANCE_CEILING_MARGIN`] for chance hits that cluster (music repeats
    /// itself, so hits are not spread evenly).
    fn chance_ceiling(&self, speeds: SpeedRange) -> f64 {
        let slopes = ((speeds.max - speeds.min) / SPEED_STEP).round() + 1.0;
        let cells = self.bins as f64 * slopes;
        poisson_quantile(
            self.mean_count,
            CHANCE_CEILING_FALSE_ALARMS / cells.max(1.0),
        ) + CHANCE_CEILING_MARGIN
    }

    /// Hits of all the work's hits estimated to lie in the best bins.
    fn estimated_hits(&self) -> f64 {
        f64::from(self.count) * self.stride as f64
    }
}

/// Further alignments of a work must beat the chance ceiling of the vote: the
/// expected number of chance cells above it, over the whole search, and a
/// margin in hits.
const CHANCE_CEILING_FALSE_ALARMS: f64 = 0.01;
const CHANCE_CEILING_MARGIN: f64 = 2.0;

/// The smallest count `k` with `P(X ≥ k) ≤ tail` for `X ~ Poisson(mean)`.
///
/// Terms are summed upward in log space from the mean; beyond the mode the
/// tail is bounded by a geometric series, so the answer is never too low.
fn poisson_quantile(mean: f64, tail: f64) -> f64 {
    if mean.is_nan() || tail.is_nan() || mean <= 0.0 || tail <= 0.0 {
        return 0.0;
    }
    let log_tail = tail.ln();
    let log_mean = mean.ln();
    // log P(X = k), starting at k = 0.
    let mut log_pmf = -mean;
    let mut k = 0.0_f64;
    loop {
        // For k + 1 > mean, P(X ≥ k) ≤ P(X = k) / (1 − mean / (k + 1)).
        if k + 1.0 > mean {
            let log_bound = log_pmf - (1.0 - mean / (k + 1.0)).ln();
            if log_bound <= log_tail {
                return k;
            }
        }
        log_pmf += log_mean - (k + 1.0).ln();
        k += 1.0;
    }
}

/// Query and reference times of the hits a vote counts, as `f64`, converted
/// once for every slope tried.
struct VoteTimes {
    tq: Vec<f64>,
    tr: Vec<f64>,
    max_tq: f64,
}

impl VoteTimes {
    fn new(hits: &[Hit]) -> Option<Self> {
        let max_tq = hits.iter().map(|h| h.tq).max()?;
        Some(Self {
            tq: hits.iter().map(|h| f64::from(h.tq)).collect(),
            tr: hits.iter().map(|h| f64::from(h.tr)).collect(),
            max_tq: f64::from(max_tq),
        })
    }
}

/// Offset histogram for each candidate slope; returns (count, slope, offset) of the
/// fullest pair of adjacent bins.
///
/// This is the matcher's hot loop (every hit × every slope): offsets are shifted
/// positive by a bias so a float-to-int cast floors them, with no call to `floor`.
fn vote(
    times: &VoteTimes,
    slopes: impl Iterator<Item = f64>,
    bin_frames: f64,
    speeds: SpeedRange,
    buffers: &mut VoteBuffers,
) -> Option<Vote> {
    // tr − slope·tq + bias ≥ bin_frames > 0 for every hit and slope ≤ speeds.max.
    let bias = speeds.max * times.max_tq + bin_frames;
    let per_bin = 1.0 / bin_frames;
    let mut best: Option<Vote> = None;
    let VoteBuffers { bins, counts } = buffers;
    for slope in slopes {
        bins.clear();
        // Each shifted offset lies in [1, 2^32) bins (times are u32 frames,
        // slopes below 2, bins of 4 frames or more), so the cast to i64
        // truncates exactly as a cast to u32 would, without its clamping.
        bins.extend(
            times
                .tq
                .iter()
                .zip(&times.tr)
                .map(|(&tq, &tr)| ((tr - slope * tq + bias) * per_bin) as i64 as u32),
        );
        if bins.is_empty() {
            continue;
        }
        let (lo, hi) = bins
            .iter()
            .fold((u32::MAX, 0), |(lo, hi), &b| (lo.min(b), hi.max(b)));
        let span = (hi - lo) as usize + 2;
        // `counts` is all zeros between slopes: only the bins hits landed in
        // are cleared afterwards (a long query's offset range is much wider
        // than its number of hits).
        if counts.len() < span {
            counts.resize(span, 0);
        }
        // The fullest pair of adjacent bins (lowest first among equals), tracked
        // while counting: a pair's final count is seen when its last hit lands,
        // so this costs O(hits) however wide a long query's offset range is.
        // Count and pair are one key (count high, pair reversed low), so the
        // best is a plain maximum.
        let key = |count: u32, pair: usize| (u64::from(count) << 32) | u64::from(!(pair as u32));
        let mut top = 0u64;
        for &b in bins.iter() {
            let i = (b - lo) as usize;
            counts[i] += 1;
            if i > 0 {
                top = top.max(key(counts[i - 1] + counts[i], i - 1));
            }
            top = top.max(key(counts[i] + counts[i + 1], i));
        }
        for &b in bins.iter() {
            counts[(b - lo) as usize] = 0;
        }
        let top_count = (top >> 32) as u32;
        let top_pair = !(top as u32) as usize;
        if top_count > 0 && best.is_none_or(|v| top_count > v.count) {
            best = Some(Vote {
                count: top_count,
                slope,
                offset: (f64::from(lo) + top_pair as f64 + 1.0) * bin_frames - bias,
                // Chance is what lies outside the line being tested: its own
                // hits would raise the ceiling it has to beat (a clean second
                // appearance with no chance hits around could never pass).
                mean_count: 2.0 * bins.len().saturating_sub(top_count as usize) as f64
                    / span as f64,
                bins: span,
                stride: 1,
            });
        }
    }
    best
}

/// Buffers of [`vote`], kept from one slope and one call to the next.
#[derive(Default)]
struct VoteBuffers {
    /// Offset bin of each hit at the slope being voted.
    bins: Vec<u32>,
    /// Hits per offset bin: all zero between slopes (only the bins hits
    /// landed in are cleared after each).
    counts: Vec<u32>,
}

/// Least-squares line through the hits (`t_ref` against `t_query`).
fn fit_line(hits: &[Hit], speeds: SpeedRange) -> Option<(f64, f64)> {
    let n = hits.len() as f64;
    let mean_q = hits.iter().map(|h| f64::from(h.tq)).sum::<f64>() / n;
    let mean_r = hits.iter().map(|h| f64::from(h.tr)).sum::<f64>() / n;
    let (mut sqq, mut sqr) = (0.0, 0.0);
    for h in hits {
        let dq = f64::from(h.tq) - mean_q;
        sqq += dq * dq;
        sqr += dq * (f64::from(h.tr) - mean_r);
    }
    if sqq < 1e-9 {
        return None;
    }
    let slope = (sqr / sqq).clamp(speeds.min, speeds.max);
    Some((slope, mean_r - slope * mean_q))
}

fn split_segments(hits: &[Hit], slope: f64, offset: f64, speeds: SpeedRange) -> Vec<Segment> {
    let mut sorted = hits.to_vec();
    sorted.sort_unstable_by_key(|h| h.tq);
    let max_gap = (MAX_GAP_S * FRAMES_PER_SECOND) as u32;
    let mut segments = Vec::new();
    let mut start = 0;
    for i in 1..=sorted.len() {
        if i == sorted.len() || sorted[i].tq - sorted[i - 1].tq > max_gap {
            let run = &sorted[start..i];
            let (slope, offset) = if run.len() >= 2 * MIN_RAW_HITS {
                fit_line(run, speeds).unwrap_or((slope, offset))
            } else {
                (slope, offset)
            };
            let mut anchors: Vec<u32> = run.iter().map(|h| h.tq).collect();
            anchors.dedup();
            let pitch =
                run.iter().map(|h| f64::from(pitch_shift(h))).sum::<f64>() / run.len() as f64;
            segments.push(Segment {
                anchors: anchors.len(),
                hits: run.len() as u32,
                tq_start: f64::from(run[0].tq),
                tq_end: f64::from(run[run.len() - 1].tq) + SEGMENT_TAIL_FRAMES,
                slope,
                intercept: offset,
                pitch_half_bins: pitch,
                range_from_peaks: false,
                deep: false,
            });
            start = i;
        }
    }
    segments
}

/// Anchors mark the start of a triplet; a segment extends one triplet span past
/// its last anchor.
const SEGMENT_TAIL_FRAMES: f64 = crate::fingerprint::DT_AC_MAX_FRAMES as f64;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matcher::{MatcherConfig, PeakEvidence};

    fn hit(tq: u32, tr: u32) -> Hit {
        Hit {
            tq,
            tr,
            fq: 40,
            fr: 40,
        }
    }

    #[test]
    fn hough_finds_stretched_line_among_noise() {
        let mut hits: Vec<Hit> = (0..80)
            .map(|i| hit(i * 10, (i as f64 * 10.0 * 1.07) as u32 + 500))
            .collect();
        // Uniform clutter.
        hits.extend((0..200u32).map(|i| hit((i * 37) % 800, (i * 7919) % 5000)));
        let segments = align_work(hits, 5.0, SpeedRange::UNWARPED);
        let best = segments.iter().max_by_key(|s| s.anchors).unwrap();
        assert!((best.slope - 1.07).abs() < 0.01, "slope {}", best.slope);
        assert!(best.anchors >= 75, "anchors {}", best.anchors);
        assert!(
            (best.intercept - 500.0).abs() < 6.0,
            "intercept {}",
            best.intercept
        );
    }

    /// The vote's best pair of adjacent bins is the fullest pair of a plain
    /// histogram at the best slope, lowest first among equals.
    #[test]
    fn vote_takes_the_fullest_pair_of_a_plain_histogram() {
        let mut state = 0x9e37_79b9_u64;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n) as u32
        };
        for round in 0..40 {
            let hits: Vec<Hit> = (0..(5 + round * 7))
                .map(|_| Hit {
                    tq: next(1_250),
                    tr: next(600) + 3_000,
                    fq: 50,
                    fr: 50,
                })
                .collect();
            let times = VoteTimes::new(&hits).expect("hits");
            let speeds = SpeedRange::UNWARPED;
            let vote = vote(
                &times,
                std::iter::once(1.0),
                OFFSET_BIN_FRAMES,
                speeds,
                &mut VoteBuffers::default(),
            )
            .expect("a vote");
            let bias = speeds.max * times.max_tq + OFFSET_BIN_FRAMES;
            let bins: Vec<u32> = hits
                .iter()
                .map(|h| {
                    ((f64::from(h.tr) - f64::from(h.tq) + bias) / OFFSET_BIN_FRAMES).floor() as u32
                })
                .collect();
            let lo = *bins.iter().min().expect("bins");
            let hi = *bins.iter().max().expect("bins");
            let count = |b: u32| bins.iter().filter(|&&x| x == b).count() as u32;
            let (best_count, best_pair) = (lo..=hi)
                .map(|b| (count(b) + count(b + 1), b - lo))
                .fold((0, u32::MAX), |best, (c, p)| {
                    if c > best.0 || (c == best.0 && p < best.1) {
                        (c, p)
                    } else {
                        best
                    }
                });
            assert_eq!(vote.count, best_count, "round {round}");
            let offset = (f64::from(lo) + f64::from(best_pair) + 1.0) * OFFSET_BIN_FRAMES - bias;
            assert_eq!(vote.offset, offset, "round {round}");
        }
    }

    #[test]
    fn poisson_quantile_bounds_the_tail() {
        // P(X ≥ k) for X ~ Poisson(mean), summed directly.
        let tail_from = |mean: f64, k: u32| -> f64 {
            let mut pmf = (-mean).exp();
            let mut below = 0.0;
            for j in 0..k {
                below += pmf;
                pmf *= mean / f64::from(j + 1);
            }
            1.0 - below
        };
        for mean in [0.05, 0.5, 2.0, 10.0, 40.0] {
            for tail in [1e-2, 1e-4, 1e-8] {
                let k = poisson_quantile(mean, tail);
                assert!(k >= mean.floor(), "mean {mean} tail {tail}: {k}");
                let k = k as u32;
                assert!(
                    tail_from(mean, k) <= tail * 1.000_001,
                    "mean {mean} tail {tail}: {k}"
                );
                // Not far above the exact quantile either.
                assert!(
                    tail_from(mean, k.saturating_sub(2)) > tail,
                    "mean {mean} tail {tail}: {k}"
                );
            }
        }
        assert_eq!(poisson_quantile(0.0, 1e-3), 0.0);
    }

    #[test]
    fn chance_alone_gets_one_round() {
        // Hits spread at random over a long query and reference: the fullest
        // (slope, offset) cell is chance, which the first round verifies and
        // no further round may claim again.
        let mut state = 0x2545_f491_u64;
        let mut next = |below: u32| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 33) % u64::from(below)) as u32
        };
        let hits: Vec<Hit> = (0..20_000)
            .map(|_| hit(next(25_000), next(25_000)))
            .collect();
        let (_, rounds) = align_work_rounds(hits, 5.0, SpeedRange::UNWARPED);
        assert_eq!(rounds, 1, "alignments taken from chance alone");
    }

    /// A work heard at length (200 hits from query frame 0), then again with
    /// `repeat_hits` hits from frame 3 000, among `chance_hits` chance hits:
    /// the alignment rounds must take both appearances.
    fn assert_both_appearances_taken(repeat_hits: u32, chance_hits: u32) {
        let mut hits: Vec<Hit> = (0..200).map(|i| hit(i * 5, i * 5 + 1_000)).collect();
        hits.extend((0..repeat_hits).map(|i| hit(3_000 + i * 5, i * 5 + 1_000)));
        hits.extend((0..chance_hits).map(|i| hit((i * 7_919) % 20_000, (i * 104_729) % 20_000)));
        hits.sort_unstable();
        let (segments, rounds) = align_work_rounds(hits, 5.0, SpeedRange::UNWARPED);
        assert_eq!(rounds, 2, "{segments:?}");
        assert!(
            segments.iter().any(|s| s.tq_start >= 3_000.0),
            "{segments:?}"
        );
    }

    #[test]
    fn a_repeat_beats_the_chance_ceiling() {
        // The second, weaker appearance among chance hits still gets its round.
        assert_both_appearances_taken(40, 2_000);
    }

    #[test]
    fn a_clean_repeat_is_not_held_to_its_own_hits() {
        // A brief second appearance with no chance hits at all: the line's own
        // hits are not chance and must not raise the ceiling it has to beat.
        assert_both_appearances_taken(12, 0);
    }

    #[test]
    fn gaps_split_segments() {
        let mut hits: Vec<Hit> = (0..40).map(|i| hit(i * 5, i * 5 + 1000)).collect();
        hits.extend((0..40).map(|i| hit(3000 + i * 5, 3000 + i * 5 + 1000)));
        let segments = align_work(hits, 5.0, SpeedRange::UNWARPED);
        assert_eq!(segments.len(), 2);
    }

    #[test]
    fn pitch_shift_is_estimated() {
        let hits: Vec<Hit> = (0..40)
            .map(|i| Hit {
                tq: i * 5,
                tr: i * 5,
                fq: 44,
                fr: 40,
            })
            .collect();
        let segment = &align_work(hits, 5.0, SpeedRange::UNWARPED)[0];
        let m = segment.clone().into_match(
            "w",
            10.0,
            PeakEvidence::default(),
            &MatcherConfig::default(),
        );
        // 4 half bins = 2 quarter tones = 1 semitone.
        assert!((m.pitch_factor - 2f64.powf(1.0 / 12.0)).abs() < 1e-6);
    }
}

//! Peak verification of candidate alignments (steps 7–8 of the module docs).

use serde::{Deserialize, Serialize};

use super::Segment;
use crate::fingerprint::{FRAMES_PER_SECOND, PeakPoint};
use crate::index::{Index, WorkRef};

/// Peak verification: a reference peak is found in the query when a query peak
/// lies within these tolerances of where the alignment puts it.
pub(super) const VERIFY_TOLERANCE_FRAMES: i64 = 2;
pub(super) const VERIFY_TOLERANCE_HALF_BINS: i32 = 2;
/// Verification looks this far beyond the first and last hit (seconds).
const VERIFY_MARGIN_S: f64 = 1.0;
/// Shifts (frames) of the chance-level estimate: the same check with a wrong
/// alignment, moving the reference or the query by each shift (see
/// [`Misalign`]). Odd, unrelated values avoid beat periods; they reach ±3.2 s
/// because music repeats itself at short lags: shifts of under a second alone
/// (six of them, −131…127, in an earlier version) land on the same bar often
/// enough to overestimate chance for true alignments. With these 24 the 10 s
/// recall under music mixed 6 dB louder rose 78 → 82 % and 57 → 62 % (two
/// evaluation splits), and pink noise at 0 dB 97 → 99 % and 90 → 92 %, still
/// with no false positive at the reporting threshold.
pub(super) const CHANCE_SHIFTS_FRAMES: [i64; 24] = [
    -397, -353, -311, -277, -251, -223, -199, -163, -131, -101, -83, -37, 41, 67, 89, 127, 149,
    173, 211, 229, 263, 293, 331, 379,
];

/// Chance rates of a long alignment are measured on an evenly spread sample
/// of about this many of its reference peaks (every peak up to this many):
/// with 24 shifts that is still tens of thousands of trials, and a full-track
/// match in a corpus scan does not pay 48 passes over thousands of peaks.
const CHANCE_SAMPLE_PEAKS: usize = 1_024;

/// The smallest shift of [`CHANCE_SHIFTS_FRAMES`]: no wrong alignment is closer
/// to the true one.
const NEAREST_SHIFT_FRAMES: i64 = 37;

/// Evidence from re-finding the reference's spectral peaks in the query where the
/// alignment puts them (cf. the verification step of Sonnleitner & Widmer's
/// quad-based fingerprinting): unlike hash hits, it needs only single peaks to
/// survive, so it still sees a work mixed under louder audio.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PeakEvidence {
    /// Reference peaks inside the aligned stretch.
    pub checked: u32,
    /// Of those, found in the query.
    pub found: u32,
    /// Mean found when the alignment is shifted to a wrong offset (chance level).
    pub chance: f64,
}

impl PeakEvidence {
    /// Found peaks in excess of chance, in units of the chance spread (Poisson,
    /// plus one so a near-empty stretch cannot score high), to one decimal.
    pub fn score(&self) -> f64 {
        let z = (f64::from(self.found) - self.chance) / (self.chance + 1.0).sqrt();
        (z * 10.0).round() / 10.0
    }
}

/// Query peak sets verified together at most (a query's peaks and its
/// brief peaks, see [`super::query_peak_sets`]).
pub(super) const MAX_QUERY_SETS: usize = 2;

/// One query peak set as a verification sees it.
#[derive(Clone, Copy)]
struct SetView<'a> {
    /// Query peaks, sorted by frame.
    peaks: &'a [PeakPoint],
    /// Query peaks already explained by an accepted match.
    consumed: &'a [bool],
    /// A grid of the whole set built from `peaks` and `consumed`
    /// ([`QueryGrid`]), used instead of building one per alignment.
    whole: Option<&'a NearGrid>,
}

/// Peak verification of alignments against one query: against one of its
/// peak sets, or against several in one pass over the reference's peaks
/// (the reference peaks and where the alignment puts them are the same for
/// every set; only the lookups differ).
pub(super) struct PeakCheck<'a> {
    sets: [Option<SetView<'a>>; MAX_QUERY_SETS],
    scratch: &'a mut VerifyScratch,
}

/// Buffers reused from one verification to the next.
#[derive(Default)]
pub(super) struct VerifyScratch {
    /// The reference's peaks around the alignment.
    ref_peaks: Vec<PeakPoint>,
    /// Grids of the verified stretch, for sets without a whole-query grid.
    near: [NearGrid; MAX_QUERY_SETS],
}

impl<'a> PeakCheck<'a> {
    pub(super) fn new(
        query_peaks: &'a [PeakPoint],
        consumed: &'a [bool],
        scratch: &'a mut VerifyScratch,
    ) -> Self {
        let set = SetView {
            peaks: query_peaks,
            consumed,
            whole: None,
        };
        Self {
            sets: [Some(set), None],
            scratch,
        }
    }

    /// Verification against every set of `grids` (at most
    /// [`MAX_QUERY_SETS`]; none of their peaks consumed) at once.
    pub(super) fn with_grids(grids: &'a [QueryGrid<'a>], scratch: &'a mut VerifyScratch) -> Self {
        debug_assert!(
            grids.len() <= MAX_QUERY_SETS,
            "more peak sets than verified"
        );
        let mut sets = [None; MAX_QUERY_SETS];
        for (slot, grid) in sets.iter_mut().zip(grids) {
            *slot = Some(SetView {
                peaks: grid.peaks,
                consumed: &grid.consumed,
                whole: grid.grid.as_ref(),
            });
        }
        Self { sets, scratch }
    }

    /// Checks where the alignment of `segment` puts the reference's peaks in
    /// the query (the first set); with `explained`, collects the query peaks
    /// the alignment found.
    ///
    /// Evidence that cannot reach `threshold` is returned as soon as that is
    /// certain, with the chance level measured so far (a lower bound): its
    /// score is then below `threshold` but not exact. Most hypotheses are
    /// chance alignments, and this skips most of their chance shifts.
    pub(super) fn verify(
        &mut self,
        index: &Index,
        work_ref: WorkRef,
        segment: &Segment,
        threshold: f64,
        explained: Option<&mut Vec<usize>>,
    ) -> PeakEvidence {
        self.verify_sets(index, work_ref, segment, threshold, explained)[0]
    }

    /// The best score of the alignment of `segment` over the sets, exact
    /// when it reaches `threshold` (else below it).
    pub(super) fn best_score(
        &mut self,
        index: &Index,
        work_ref: WorkRef,
        segment: &Segment,
        threshold: f64,
    ) -> f64 {
        let present = self.sets.iter().flatten().count();
        self.verify_sets(index, work_ref, segment, threshold, None)[..present]
            .iter()
            .map(PeakEvidence::score)
            .fold(f64::NEG_INFINITY, f64::max)
    }

    /// [`PeakCheck::verify`] for every set, in one pass over the reference
    /// peaks per misalignment. Each set's evidence is what a verification
    /// of that set alone gives (its early exit included); `explained`
    /// collects the first set's found peaks.
    fn verify_sets(
        &mut self,
        index: &Index,
        work_ref: WorkRef,
        segment: &Segment,
        threshold: f64,
        explained: Option<&mut Vec<usize>>,
    ) -> [PeakEvidence; MAX_QUERY_SETS] {
        let margin = VERIFY_MARGIN_S * FRAMES_PER_SECOND;
        let tq_lo = (segment.tq_start - margin).max(0.0);
        let tq_hi = segment.tq_end + margin;
        let ref_at = |tq: f64| segment.slope * tq + segment.intercept;
        let widest = CHANCE_SHIFTS_FRAMES
            .iter()
            .map(|s| s.abs())
            .max()
            .unwrap_or(0) as f64;
        let (tr_lo, tr_hi) = (ref_at(tq_lo), ref_at(tq_hi));
        let VerifyScratch { ref_peaks, near } = &mut *self.scratch;
        ref_peaks.clear();
        index.work_peaks(
            work_ref,
            (tr_lo - widest).max(0.0) as u32,
            (tr_hi + widest).max(0.0) as u32,
            ref_peaks,
        );
        let ref_peaks = &*ref_peaks;
        let pitch = segment.pitch_half_bins.round() as i32;
        let sets = self.sets;
        let stretch_lo = tq_lo.round() as i64;
        // The query stretch that a wrong alignment moving a set's peaks is
        // confined to: the verified stretch, up to the set's last peak.
        let set_ends: [i64; MAX_QUERY_SETS] = std::array::from_fn(|s| {
            sets[s]
                .and_then(|set| set.peaks.last())
                .map_or(0, |p| i64::from(p.t_frame) + 1)
        });
        let stretch_frames: [i64; MAX_QUERY_SETS] =
            std::array::from_fn(|s| (tq_hi.round() as i64).min(set_ends[s]) - stretch_lo);
        // Every alignment tried maps the reference peaks into the verified
        // stretch (a frame of rounding aside); lookups outside the grid take
        // the slow path.
        let mut grids: [Option<&NearGrid>; MAX_QUERY_SETS] = [None; MAX_QUERY_SETS];
        for (s, (grid, near)) in grids.iter_mut().zip(near.iter_mut()).enumerate() {
            let Some(set) = sets[s] else { continue };
            *grid = Some(match set.whole {
                Some(whole) => whole,
                None => {
                    near.build(
                        set.peaks,
                        set.consumed,
                        stretch_lo - 1,
                        (tq_hi.round() as i64 + 1).min(set_ends[s] + VERIFY_TOLERANCE_FRAMES),
                    );
                    near
                }
            });
        }
        // Counts every `stride`-th reference peak of `[tr_lo, tr_hi)` (moved
        // by a reference misalignment) and how many of those each set in
        // `active` finds in the query under `misalign` (the true alignment
        // when `Misalign::None`), per set.
        let count = |misalign: Misalign,
                     stride: usize,
                     mut active: [bool; MAX_QUERY_SETS],
                     mut explained: Option<&mut Vec<usize>>|
         -> ([u32; MAX_QUERY_SETS], [u32; MAX_QUERY_SETS]) {
            let mut found = [0u32; MAX_QUERY_SETS];
            let mut checked = [0u32; MAX_QUERY_SETS];
            let (shift, query_shift) = match misalign {
                Misalign::None => (0, None),
                Misalign::Reference(s) => (s, None),
                Misalign::Query(s) => (0, Some(s)),
            };
            if let Some(shift) = query_shift {
                for (s, active) in active.iter_mut().enumerate() {
                    // Around a stretch shorter than the shift, the wrapped
                    // shift may come back near the true alignment: it
                    // measures nothing.
                    let wrapped = shift.rem_euclid(stretch_frames[s].max(1));
                    if wrapped.min(stretch_frames[s] - wrapped) < NEAREST_SHIFT_FRAMES {
                        *active = false;
                    }
                }
            }
            let (lo, hi) = (tr_lo + shift as f64, tr_hi + shift as f64);
            // Reference peaks come in time order and the alignment is increasing,
            // so the search position in the query only moves forward (except
            // once, where a circular query shift wraps around).
            let mut cursors: [Option<usize>; MAX_QUERY_SETS] = [None; MAX_QUERY_SETS];
            let mut previous_tq = [i64::MIN; MAX_QUERY_SETS];
            let window_start = ref_peaks.partition_point(|p| f64::from(p.t_frame) < lo);
            let window_end = ref_peaks.partition_point(|p| f64::from(p.t_frame) < hi);
            let window = ref_peaks.get(window_start..window_end).unwrap_or_default();
            for p in window.iter().step_by(stride) {
                let tr = f64::from(p.t_frame);
                let aligned_tq =
                    round_to_i64((tr - shift as f64 - segment.intercept) / segment.slope);
                let fq = i32::from(p.f_half_bins) + pitch;
                for (s, set) in sets.iter().enumerate() {
                    let (Some(set), true) = (set, active[s]) else {
                        continue;
                    };
                    let cursor = &mut cursors[s];
                    let mut tq = aligned_tq;
                    if let Some(shift) = query_shift {
                        tq = stretch_lo + (tq - stretch_lo + shift).rem_euclid(stretch_frames[s]);
                        if tq < previous_tq[s] {
                            *cursor = None;
                        }
                        previous_tq[s] = tq;
                    }
                    checked[s] += 1;
                    if s == 0
                        && let Some(out) = explained.as_deref_mut()
                    {
                        // Which query peak: the slow path.
                        if let Some(i) = peak_near_from(set.peaks, set.consumed, cursor, tq, fq) {
                            found[s] += 1;
                            out.push(i);
                        }
                    } else if let Some(near) = grids[s].and_then(|g| g.near(tq, fq)) {
                        found[s] += u32::from(near);
                    } else if peak_near_from(set.peaks, set.consumed, cursor, tq, fq).is_some() {
                        found[s] += 1;
                    }
                }
            }
            (checked, found)
        };
        let present: [bool; MAX_QUERY_SETS] = std::array::from_fn(|s| sets[s].is_some());
        let (checked, found) = count(Misalign::None, 1, present, explained);
        // Every present set checks every reference peak of the alignment.
        let checked = checked.iter().copied().max().unwrap_or(0);
        let mut evidence: [PeakEvidence; MAX_QUERY_SETS] = std::array::from_fn(|s| PeakEvidence {
            checked,
            found: found[s],
            chance: 0.0,
        });
        // Chance is the mean over the shifts of the larger of the two
        // misalignments' rates (scaled to the peaks of the true alignment).
        // Until every rate is counted, the sum of what is known over all
        // shifts is a lower bound of that mean: the cheaper reference
        // misalignments are counted first, and most chance hypotheses end
        // there; the query misalignments are counted only for what survives.
        // A set whose bound falls below `threshold` is done with.
        let mut alive = present;
        let mut known_sum = [0.0f64; MAX_QUERY_SETS];
        let retire = |alive: &mut [bool; MAX_QUERY_SETS],
                      evidence: &mut [PeakEvidence; MAX_QUERY_SETS],
                      known_sum: &[f64; MAX_QUERY_SETS]| {
            for s in 0..MAX_QUERY_SETS {
                if !alive[s] {
                    continue;
                }
                let bound = PeakEvidence {
                    chance: chance_of(known_sum[s], checked, CHANCE_SHIFTS_FRAMES.len()),
                    ..evidence[s]
                };
                if bound.score() < threshold {
                    // More chance only lowers the score.
                    evidence[s] = bound;
                    alive[s] = false;
                }
            }
            alive.iter().any(|&a| a)
        };
        let stride = (checked as usize).div_ceil(CHANCE_SAMPLE_PEAKS).max(1);
        let rates_of = |misalign: Misalign, alive: [bool; MAX_QUERY_SETS]| {
            let (c, f) = count(misalign, stride, alive, None);
            std::array::from_fn::<_, MAX_QUERY_SETS, _>(|s| {
                (c[s] > 0 && alive[s]).then(|| f64::from(f[s]) / f64::from(c[s]))
            })
        };
        let mut rates = [[None; CHANCE_SHIFTS_FRAMES.len()]; MAX_QUERY_SETS];
        for (i, &shift) in CHANCE_SHIFTS_FRAMES.iter().enumerate() {
            if !retire(&mut alive, &mut evidence, &known_sum) {
                return evidence;
            }
            let measured = rates_of(Misalign::Reference(shift), alive);
            for s in (0..MAX_QUERY_SETS).filter(|&s| alive[s]) {
                rates[s][i] = measured[s];
                known_sum[s] += measured[s].unwrap_or(0.0);
            }
        }
        for (i, &shift) in CHANCE_SHIFTS_FRAMES.iter().enumerate() {
            if !retire(&mut alive, &mut evidence, &known_sum) {
                return evidence;
            }
            let measured = rates_of(Misalign::Query(shift), alive);
            for s in (0..MAX_QUERY_SETS).filter(|&s| alive[s]) {
                if let Some(query_rate) = measured[s] {
                    let rate = &mut rates[s][i];
                    let larger = rate.map_or(query_rate, |r: f64| r.max(query_rate));
                    known_sum[s] += larger - rate.unwrap_or(0.0);
                    *rate = Some(larger);
                }
            }
        }
        for s in (0..MAX_QUERY_SETS).filter(|&s| alive[s]) {
            let measured = rates[s].iter().flatten().count();
            evidence[s].chance = chance_of(known_sum[s], checked, measured);
        }
        evidence
    }
}

/// Where an unconsumed query peak lies within the verification tolerances,
/// over a stretch of query frames: bit `f + NEAR_GRID_F_OFFSET` of frame `t`'s
/// row is set when a query peak not yet explained lies within
/// ±[`VERIFY_TOLERANCE_FRAMES`] of `t` and ±[`VERIFY_TOLERANCE_HALF_BINS`] of
/// `f`. Each reference peak checked is then one bit test instead of a walk
/// through the query peaks near it, whose outcome the branch predictor
/// cannot guess: that walk was half of the matcher's time in profiles.
#[derive(Default)]
struct NearGrid {
    first_frame: i64,
    frames: i64,
    words: Vec<u64>,
}

/// A query's peak set with none of its peaks consumed, and the [`NearGrid`]
/// of all of it: the alignments proposed for a query are verified before any
/// is accepted, so one grid serves them all (building a grid per alignment
/// was a twentieth of the matcher's time). A query longer than
/// [`WHOLE_QUERY_GRID_MAX_FRAMES`] gets no grid: each alignment builds its own.
pub(super) struct QueryGrid<'a> {
    peaks: &'a [PeakPoint],
    consumed: Vec<bool>,
    grid: Option<NearGrid>,
}

/// Longest query (frames, about 17 minutes; 5 MB of grid) that gets a
/// [`QueryGrid`].
const WHOLE_QUERY_GRID_MAX_FRAMES: i64 = 1 << 17;

impl<'a> QueryGrid<'a> {
    /// The grid of `peaks` (sorted by frame), none consumed.
    pub(super) fn new(peaks: &'a [PeakPoint]) -> Self {
        let consumed = vec![false; peaks.len()];
        let last_frame =
            peaks.last().map_or(0, |p| i64::from(p.t_frame)) + 1 + VERIFY_TOLERANCE_FRAMES;
        let grid = (last_frame < WHOLE_QUERY_GRID_MAX_FRAMES).then(|| {
            let mut grid = NearGrid::default();
            grid.build(peaks, &consumed, 0, last_frame);
            grid
        });
        Self {
            peaks,
            consumed,
            grid,
        }
    }
}

/// Words of a [`NearGrid`] row: frequencies of `f_half_bins` (0..=255) widened
/// by the tolerance on both sides, offset by [`NEAR_GRID_F_OFFSET`].
const NEAR_GRID_ROW_WORDS: usize = 5;
const NEAR_GRID_F_OFFSET: i32 = 32;
/// Longest stretch a grid is built for (≈ 2.3 h of frames, 42 MB); longer
/// ones take the slow path, which gives the same counts.
const NEAR_GRID_MAX_FRAMES: i64 = 1 << 20;

impl NearGrid {
    /// The grid of frames `first_frame..=last_frame` (none if that is empty
    /// or too long).
    fn build(&mut self, peaks: &[PeakPoint], consumed: &[bool], first_frame: i64, last_frame: i64) {
        let first_frame = first_frame.max(0);
        let frames = last_frame + 1 - first_frame;
        self.first_frame = first_frame;
        self.frames = if (1..=NEAR_GRID_MAX_FRAMES).contains(&frames) {
            frames
        } else {
            0
        };
        self.words.clear();
        self.words
            .resize(self.frames as usize * NEAR_GRID_ROW_WORDS, 0);
        if self.frames == 0 {
            return;
        }
        let tol_t = VERIFY_TOLERANCE_FRAMES;
        let tol_f = VERIFY_TOLERANCE_HALF_BINS;
        let from = peaks.partition_point(|p| i64::from(p.t_frame) < first_frame - tol_t);
        for (i, p) in peaks.iter().enumerate().skip(from) {
            let t = i64::from(p.t_frame);
            if t > last_frame + tol_t {
                break;
            }
            if consumed.get(i).copied().unwrap_or(false) {
                continue;
            }
            let f = i32::from(p.f_half_bins) + NEAR_GRID_F_OFFSET;
            for row_t in (t - tol_t).max(first_frame)..=(t + tol_t).min(last_frame) {
                let row = (row_t - first_frame) as usize * NEAR_GRID_ROW_WORDS;
                for bit in (f - tol_f)..=(f + tol_f) {
                    let bit = bit as usize;
                    self.words[row + bit / 64] |= 1 << (bit % 64);
                }
            }
        }
    }

    /// Whether a query peak lies near (`t_frame`, `f_half_bins`); `None` when
    /// `t_frame` is outside the grid.
    fn near(&self, t_frame: i64, f_half_bins: i32) -> Option<bool> {
        let k = t_frame - self.first_frame;
        if k < 0 || k >= self.frames {
            return None;
        }
        let bit = f_half_bins + NEAR_GRID_F_OFFSET;
        let Ok(bit) = usize::try_from(bit) else {
            return Some(false);
        };
        let word = self
            .words
            .get(k as usize * NEAR_GRID_ROW_WORDS + bit / 64)
            .filter(|_| bit < NEAR_GRID_ROW_WORDS * 64);
        Some(word.is_some_and(|w| w >> (bit % 64) & 1 == 1))
    }
}

/// `x.round() as i64` (half away from zero, saturating, NaN → 0) without
/// the call into libm that `round` is on the baseline x86-64 target: it was
/// a tenth of the matcher's time in profiles. Exact for every `f64`.
fn round_to_i64(x: f64) -> i64 {
    let truncated = x as i64;
    // Exact: below 2^52 the integer part is representable and the
    // difference has no rounding; above it `x` is an integer already.
    let fraction = x - truncated as f64;
    if fraction >= 0.5 {
        truncated.saturating_add(1)
    } else if fraction <= -0.5 {
        truncated.saturating_sub(1)
    } else {
        truncated
    }
}

/// Chance level from the sum of per-shift rates over `shifts` measured shifts.
fn chance_of(rate_sum: f64, checked: u32, shifts: usize) -> f64 {
    if shifts == 0 {
        0.0
    } else {
        rate_sum * f64::from(checked) / shifts as f64
    }
}

/// A wrong alignment that measures chance. Moving the reference alone (as an
/// earlier version did) misses reference stretches whose peaks land on almost any
/// audio: the same few seconds of one reference matched two unrelated
/// negatives at score 7.7 and 7.0, and deep-search chance alignments reached
/// 8.8. Taking, at each shift, the larger of the two misalignments' rates
/// brought the highest chance score of the evaluation (two splits, negatives
/// and wrong works, deep search reporting down to 7) from 8.8 to 6.1, while
/// true alignments lost less: at equal margin over chance more mixed and
/// noisy queries are found.
#[derive(Debug, Clone, Copy)]
enum Misalign {
    /// The alignment under test.
    None,
    /// The reference stretch this many frames later, against the same query.
    Reference(i64),
    /// The same reference peaks against the query shifted circularly by this
    /// many frames within the verified stretch.
    Query(i64),
}

/// Index of a peak of `peaks` (sorted by frame) not marked in `consumed` within
/// the verification tolerance of (`t_frame`, `f_half_bins`).
#[cfg(test)]
fn peak_near(
    peaks: &[PeakPoint],
    consumed: &[bool],
    t_frame: i64,
    f_half_bins: i32,
) -> Option<usize> {
    peak_near_from(peaks, consumed, &mut None, t_frame, f_half_bins)
}

/// Index of a peak of `peaks` (sorted by frame) not marked in `consumed`
/// within the verification tolerance of (`t_frame`, `f_half_bins`), for a
/// run of lookups with non-decreasing `t_frame`: `cursor`
/// keeps the search position (binary search on the first call, then forward).
fn peak_near_from(
    peaks: &[PeakPoint],
    consumed: &[bool],
    cursor: &mut Option<usize>,
    t_frame: i64,
    f_half_bins: i32,
) -> Option<usize> {
    let from = (t_frame - VERIFY_TOLERANCE_FRAMES).max(0);
    let before = |p: &PeakPoint| i64::from(p.t_frame) < from;
    let mut start = match *cursor {
        Some(at) => at,
        None => peaks.partition_point(before),
    };
    while peaks.get(start).is_some_and(before) {
        start += 1;
    }
    *cursor = Some(start);
    peaks
        .get(start..)
        .unwrap_or_default()
        .iter()
        .enumerate()
        .take_while(|(_, p)| i64::from(p.t_frame) <= t_frame + VERIFY_TOLERANCE_FRAMES)
        .find(|&(j, p)| {
            (i32::from(p.f_half_bins) - f_half_bins).abs() <= VERIFY_TOLERANCE_HALF_BINS
                && !consumed.get(start + j).copied().unwrap_or(false)
        })
        .map(|(j, _)| start + j)
}

#[cfg(test)]
mod tests;

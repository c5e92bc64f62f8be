//! Deep search: alignments proposed by single peaks, not by hashes.
//!
//! A work mixed under louder audio keeps few of its peaks as peaks of the
//! mixture, and a triplet hash needs three of them together: at −6 dB under
//! other music most 10 s excerpts keep 0–2 consistent triplets, too few for the
//! Hough vote or the pair stage, although peak verification at the right
//! alignment would score them far above chance. The evaluation showed this for
//! most of the misses in that condition.
//!
//! So for a bounded shortlist of works ([`super::MatcherConfig::deep_search_works`],
//! those with the most raw hash hits), each query window is cross-correlated
//! with the work's stored peaks at speed 1 and pitch 1: every query peak votes
//! for the offsets `t_ref − t_query` of the reference peaks within
//! ±[`VERIFY_TOLERANCE_HALF_BINS`] of its frequency. The offsets with the most
//! votes become hypotheses for the usual peak verification. Because every
//! offset of every shortlisted work is tried, chance has many more chances
//! here: a hypothesis is reported only when it is confident
//! (`MatcherConfig::deep_min_score`, by default the confident threshold).
//!
//! Cost. Each 5 s half window of the query is correlated once (a window's
//! votes are the sum of its two halves): about (query peaks) × (shortlisted
//! reference peaks) × 5 / 188 counter increments, then one pass over the
//! window's offsets adds both halves, takes the box sums and their block
//! maxima a block at a time in registers, and the best offsets are read from
//! those maxima. Peak verification is the expensive step, so an
//! offset is verified only when its votes stand out from the votes at nearby
//! wrong offsets ([`DEEP_MIN_VOTE_EXCESS`]) and from the best offset
//! anywhere else in the work ([`DEEP_MIN_RIVAL_EXCESS`]: music that only
//! shares a beat and a drum sound with a work matches it at every bar, a copy
//! at one offset); on unrelated audio that leaves about one window in a
//! hundred. Only unscaled alignments are searched;
//! sped-up or pitched copies keep enough triplets for the hash stages.

use super::verify::{VERIFY_TOLERANCE_FRAMES, VERIFY_TOLERANCE_HALF_BINS};
use super::{FRAMES_PER_SECOND, Index, Segment, WorkRef};
use crate::fingerprint::PeakPoint;

/// Query frames correlated together (10 s); windows overlap by half.
const DEEP_WINDOW_FRAMES: u32 = (10.0 * FRAMES_PER_SECOND) as u32;
/// Best offsets of each window and work that are verified.
const DEEP_OFFSETS_PER_WINDOW: usize = 2;
/// Offsets closer than this (frames) are one hypothesis.
const DEEP_OFFSET_SEPARATION_FRAMES: i64 = 2 * VERIFY_TOLERANCE_FRAMES + 1;
/// Number of half-bin frequency values of a [`PeakPoint`].
const HALF_BIN_VALUES: usize = 256;

/// Peaks grouped by frequency (half bins), each group sorted by frame.
struct PeaksByFrequency {
    /// `frames[starts[f]..starts[f + 1]]` are the frames of the peaks at `f`.
    starts: Vec<usize>,
    frames: Vec<u32>,
}

impl PeaksByFrequency {
    fn new(peaks: &[PeakPoint]) -> Self {
        let mut starts = vec![0usize; HALF_BIN_VALUES + 1];
        for p in peaks {
            starts[usize::from(p.f_half_bins) + 1] += 1;
        }
        for f in 0..HALF_BIN_VALUES {
            starts[f + 1] += starts[f];
        }
        let mut next = starts.clone();
        let mut frames = vec![0u32; peaks.len()];
        for p in peaks {
            let slot = &mut next[usize::from(p.f_half_bins)];
            frames[*slot] = p.t_frame;
            *slot += 1;
        }
        for f in 0..HALF_BIN_VALUES {
            frames[starts[f]..starts[f + 1]].sort_unstable();
        }
        Self { starts, frames }
    }

    /// Frames of the peaks at frequency `f` (half bins), sorted.
    fn at(&self, f: i32) -> &[u32] {
        match usize::try_from(f) {
            Ok(f) if f < HALF_BIN_VALUES => &self.frames[self.starts[f]..self.starts[f + 1]],
            _ => &[],
        }
    }

    /// Frames of the peaks at `f` within `[from, to)`.
    fn at_within(&self, f: i32, from: u32, to: u32) -> &[u32] {
        let frames = self.at(f);
        let lo = frames.partition_point(|&t| t < from);
        let hi = frames.partition_point(|&t| t < to);
        &frames[lo..hi]
    }
}

/// Scratch space reused across works and windows.
#[derive(Default)]
pub(super) struct DeepSearch {
    ref_peaks: Vec<PeakPoint>,
    /// Reference frames grouped by query frequency: the frames of the
    /// reference peaks within the frequency tolerance of each half bin.
    ref_near: PeaksNear,
    /// Votes of the previous and the current half window of the peak set
    /// being searched; all zero outside the range a half has voted into
    /// (restored after use).
    previous: Vec<u16>,
    current: Vec<u16>,
    /// The same two of each peak set, while another set is searched.
    parked: Vec<(Vec<u16>, Vec<u16>)>,
    /// Box sums of a window (previous + current half) over the offsets it can
    /// vote for, from its first one: the votes within the verification
    /// tolerance of each offset.
    boxed: Vec<u16>,
    /// Maximum of `boxed` over each block of [`MAX_BLOCK`] offsets.
    block_max: Vec<u16>,
}

/// For each half bin `f`, the frames of the reference peaks at `f − tol ..=
/// f + tol` (tol = [`VERIFY_TOLERANCE_HALF_BINS`]) in one list, so a query
/// peak's votes are one pass over one list.
#[derive(Default)]
struct PeaksNear {
    starts: Vec<usize>,
    frames: Vec<u32>,
    /// Where the next frame of each half bin goes, while filling.
    next: Vec<usize>,
}

impl PeaksNear {
    /// Groups `peaks` by the half bins they are near: one counting sort,
    /// each peak's frame going to every half bin within the tolerance.
    fn fill(&mut self, peaks: &[PeakPoint]) {
        let near = |p: &PeakPoint| {
            let f = usize::from(p.f_half_bins);
            let tol = VERIFY_TOLERANCE_HALF_BINS as usize;
            f.saturating_sub(tol)..(f + tol + 1).min(HALF_BIN_VALUES)
        };
        self.starts.clear();
        self.starts.resize(HALF_BIN_VALUES + 1, 0);
        for p in peaks {
            for f in near(p) {
                self.starts[f + 1] += 1;
            }
        }
        for f in 0..HALF_BIN_VALUES {
            self.starts[f + 1] += self.starts[f];
        }
        self.next.clear();
        self.next.extend_from_slice(&self.starts[..HALF_BIN_VALUES]);
        self.frames.clear();
        self.frames.resize(self.starts[HALF_BIN_VALUES], 0);
        for p in peaks {
            for f in near(p) {
                self.frames[self.next[f]] = p.t_frame;
                self.next[f] += 1;
            }
        }
    }

    /// Reference frames within the frequency tolerance of `f` (unsorted).
    fn at(&self, f: usize) -> &[u32] {
        match (self.starts.get(f), self.starts.get(f + 1)) {
            (Some(&from), Some(&to)) => &self.frames[from..to],
            _ => &[],
        }
    }
}

/// Query half windows `[start, end)`: every window is two consecutive halves
/// (or the only one), so each query peak is correlated once.
fn half_windows(query_frames: u32) -> Vec<(u32, u32)> {
    let half = DEEP_WINDOW_FRAMES / 2;
    let query_frames = query_frames.max(1);
    (0..query_frames.div_ceil(half))
        .map(|k| (k * half, ((k + 1) * half).min(query_frames)))
        .collect()
}

/// A query's peak sets split into the peaks every set holds and the rest of
/// each: both sets of a query share most peaks (a maximum over ±10 frames
/// is one over ±3), and a shared peak votes once for all of them.
struct SharedPeaks {
    /// Peaks in every set (with multiplicity); `None` for a single set.
    shared: Option<Vec<PeakPoint>>,
    /// Each set's peaks not in `shared`.
    own: Vec<Vec<PeakPoint>>,
}

impl SharedPeaks {
    fn split(sets: &[&[PeakPoint]]) -> Self {
        let sorted = |set: &[PeakPoint]| {
            let mut set = set.to_vec();
            set.sort_unstable();
            set
        };
        let [first, second] = sets else {
            return Self {
                shared: None,
                own: sets.iter().map(|set| set.to_vec()).collect(),
            };
        };
        let (a, b) = (sorted(first), sorted(second));
        let (mut shared, mut own_a, mut own_b) = (Vec::new(), Vec::new(), Vec::new());
        let (mut i, mut j) = (0, 0);
        while i < a.len() && j < b.len() {
            match a[i].cmp(&b[j]) {
                std::cmp::Ordering::Equal => {
                    shared.push(a[i]);
                    i += 1;
                    j += 1;
                }
                std::cmp::Ordering::Less => {
                    own_a.push(a[i]);
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    own_b.push(b[j]);
                    j += 1;
                }
            }
        }
        own_a.extend_from_slice(&a[i..]);
        own_b.extend_from_slice(&b[j..]);
        Self {
            shared: Some(shared),
            own: vec![own_a, own_b],
        }
    }
}

impl DeepSearch {
    /// Unscaled alignments of the shortlisted works proposed by peak
    /// correlation, one segment per (work, window, offset), strongest first.
    pub(super) fn hypotheses(
        &mut self,
        index: &Index,
        query_sets: &[&[PeakPoint]],
        query_frames: u32,
        works: &[WorkRef],
        min_score: f64,
    ) -> Vec<(u32, WorkRef, Segment)> {
        let mut found = Vec::new();
        let sets: Vec<&[PeakPoint]> = query_sets
            .iter()
            .copied()
            .filter(|set| !set.is_empty())
            .collect();
        if sets.is_empty() || works.is_empty() {
            return found;
        }
        let split = SharedPeaks::split(&sets);
        let shared = split.shared.as_deref().map(PeaksByFrequency::new);
        let own: Vec<PeaksByFrequency> =
            split.own.iter().map(|o| PeaksByFrequency::new(o)).collect();
        self.parked.truncate(sets.len());
        self.parked.resize_with(sets.len(), Default::default);
        let halves = half_windows(query_frames);
        // Vote index of the offset `t_ref − t_query` is `offset + base`.
        let base = halves.last().map_or(0, |h| h.1) as usize + VOTE_PAD;
        // A hypothesis needs at least this many found peaks, and every found
        // peak is at least one vote.
        let min_votes = min_score.ceil().max(1.0) as u32;
        let mut per_set: Vec<Vec<(u32, WorkRef, Segment)>> = vec![Vec::new(); sets.len()];
        for &work in works {
            self.ref_peaks.clear();
            index.work_peaks(work, 0, u32::MAX, &mut self.ref_peaks);
            let Some(last_ref) = self.ref_peaks.iter().map(|p| p.t_frame).max() else {
                continue;
            };
            self.ref_near.fill(&self.ref_peaks);
            let len = base + last_ref as usize + 1 + VOTE_PAD;
            for (previous, current) in &mut self.parked {
                for votes in [previous, current] {
                    if votes.len() < len {
                        votes.resize(len, 0);
                    }
                }
            }
            // Offsets a half window `[h0, h1)` can vote for.
            let range = |(h0, h1): (u32, u32)| {
                (
                    base + 1 - h1 as usize,
                    base + last_ref as usize - h0 as usize,
                )
            };
            for (k, &half) in halves.iter().enumerate() {
                let (c_lo, c_hi) = range(half);
                // The peaks every set holds vote once, into the first set's
                // votes, copied to the others (whose votes are zero there).
                if let Some(shared) = &shared {
                    let (first, others) = self.parked.split_at_mut(1);
                    correlate(shared, &self.ref_near, half, base, &mut first[0].1);
                    for other in others {
                        other.1[c_lo..=c_hi].copy_from_slice(&first[0].1[c_lo..=c_hi]);
                    }
                }
                for (s, own) in own.iter().enumerate() {
                    std::mem::swap(&mut self.parked[s].0, &mut self.previous);
                    std::mem::swap(&mut self.parked[s].1, &mut self.current);
                    self.window(
                        own,
                        (k, half),
                        &halves,
                        (base, range),
                        min_votes,
                        (work, &mut per_set[s]),
                    );
                    std::mem::swap(&mut self.parked[s].0, &mut self.previous);
                    std::mem::swap(&mut self.parked[s].1, &mut self.current);
                }
            }
            // Set by set, as each set's windows were searched.
            for set_found in &mut per_set {
                found.append(set_found);
            }
        }
        found.sort_by_key(|f| std::cmp::Reverse(f.0));
        found
    }

    /// Adds the votes of `query`'s peaks in half window `k` (`half`) to the
    /// current votes; when that completes a window, pushes its best offsets
    /// onto `found`. `range` gives the offsets a half window can vote for.
    fn window(
        &mut self,
        query: &PeaksByFrequency,
        (k, half): (usize, (u32, u32)),
        halves: &[(u32, u32)],
        (base, range): (usize, impl Fn((u32, u32)) -> (usize, usize)),
        min_votes: u32,
        (work, found): (WorkRef, &mut Vec<(u32, WorkRef, Segment)>),
    ) {
        correlate(query, &self.ref_near, half, base, &mut self.current);
        let (c_lo, c_hi) = range(half);
        if k == 0 && halves.len() > 1 {
            std::mem::swap(&mut self.previous, &mut self.current);
            return;
        }
        // The window is the previous half (if any) and this one (the
        // previous half's votes are zero when there is none).
        let (lo, hi, w0) = match k.checked_sub(1).map(|j| halves[j]) {
            Some(before) => (c_lo, range(before).1, before.0),
            None => (c_lo, c_hi, half.0),
        };
        window_box_sums(
            &self.previous,
            &self.current,
            lo..=hi,
            &mut self.boxed,
            &mut self.block_max,
        );
        let best = self.best_offsets(lo, hi, min_votes);
        // Restore the zeros: the previous half is done with; this one
        // becomes the previous half (or is done with too, at the end).
        if let Some(before) = k.checked_sub(1).map(|j| halves[j]) {
            let (p_lo, p_hi) = range(before);
            self.previous[p_lo..=p_hi].fill(0);
        }
        std::mem::swap(&mut self.previous, &mut self.current);
        if k + 1 == halves.len() {
            self.previous[c_lo..=c_hi].fill(0);
        }
        let w1 = half.1;
        for (votes, o) in best {
            found.push((
                votes,
                work,
                Segment {
                    anchors: 0,
                    hits: 0,
                    tq_start: f64::from(w0),
                    tq_end: f64::from(w1),
                    slope: 1.0,
                    intercept: o as f64 - base as f64,
                    pitch_half_bins: 0.0,
                    range_from_peaks: true,
                    deep: true,
                },
            ));
        }
    }

    /// The [`DEEP_OFFSETS_PER_WINDOW`] offsets in `[lo, hi]` of the window's
    /// box sums ([`window_box_sums`], computed for `lo..=hi`) with the most votes within the verification tolerance, well
    /// apart, that stand out from the votes at nearby wrong offsets (see
    /// [`DEEP_MIN_VOTE_EXCESS`]).
    fn best_offsets(&self, lo: usize, hi: usize, min_votes: u32) -> Vec<(u32, usize)> {
        let boxed = &self.boxed[..=hi - lo];
        // The top of a range is read from the block maxima, and only blocks
        // holding it are searched offset by offset.
        let block_max = &self.block_max;
        // Votes of the window at an offset (previous + current half).
        let centre = |i: usize| self.previous[lo + i].saturating_add(self.current[lo + i]);
        let separation = DEEP_OFFSET_SEPARATION_FRAMES as usize;
        let mut best: Vec<(u32, usize)> = Vec::with_capacity(DEEP_OFFSETS_PER_WINDOW);
        // Ranges of `boxed` still open (neighbourhoods of taken offsets cut out).
        let mut allowed: Vec<std::ops::Range<usize>> =
            Vec::with_capacity(2 * DEEP_OFFSETS_PER_WINDOW);
        allowed.push(0..boxed.len());
        for _ in 0..DEEP_OFFSETS_PER_WINDOW {
            // The highest box sum outside the taken neighbourhoods; among equal
            // sums the offset with the most votes of its own, then the first.
            let top = allowed
                .iter()
                .filter_map(|r| range_top(boxed, block_max, r.clone(), centre))
                .max_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)).then(b.2.cmp(&a.2)));
            let Some((votes, _, i)) = top else { break };
            if u32::from(votes) < min_votes {
                break;
            }
            best.push((u32::from(votes), lo + i));
            allowed = allowed
                .into_iter()
                .flat_map(|r| {
                    let cut_lo = (i + 1).saturating_sub(separation);
                    let cut_hi = i + separation;
                    [r.start..r.end.min(cut_lo), r.start.max(cut_hi)..r.end]
                })
                .filter(|r| !r.is_empty())
                .collect();
        }
        // The best offset of the window elsewhere in the work: beyond
        // ±DEEP_RIVAL_GUARD_FRAMES of every offset taken.
        let guard = DEEP_RIVAL_GUARD_FRAMES;
        let mut elsewhere: Vec<std::ops::Range<usize>> = Vec::with_capacity(2 * best.len() + 1);
        elsewhere.push(0..boxed.len());
        for &(_, o) in &best {
            let i = o - lo;
            let (cut_lo, cut_hi) = (i.saturating_sub(guard), i + guard + 1);
            elsewhere = elsewhere
                .into_iter()
                .flat_map(|r| [r.start..r.end.min(cut_lo), r.start.max(cut_hi)..r.end])
                .filter(|r| !r.is_empty())
                .collect();
        }
        let rival = elsewhere
            .iter()
            .filter_map(|r| range_top(boxed, block_max, r.clone(), centre))
            .map(|top| f64::from(top.0))
            .fold(0.0, f64::max);
        best.retain(|&(votes, _)| {
            (f64::from(votes) - rival) / (rival + 1.0).sqrt() >= DEEP_MIN_RIVAL_EXCESS
        });
        best.retain(|&(votes, o)| {
            let nearby: Vec<f64> = NEARBY_SHIFTS_FRAMES
                .iter()
                .filter_map(|&s| usize::try_from(o as i64 + s).ok())
                .filter(|&i| (lo..=hi).contains(&i))
                .map(|i| f64::from(boxed[i - lo]))
                .collect();
            let chance = nearby.iter().sum::<f64>() / nearby.len().max(1) as f64;
            let excess = (f64::from(votes) - chance) / (chance + 1.0).sqrt();
            excess >= DEEP_MIN_VOTE_EXCESS
        });
        best
    }
}

/// Offsets per block of [`DeepSearch::block_max`].
const MAX_BLOCK: usize = 64;

/// `(max, centre, at)`: the highest value of `boxed[range]`, and among the
/// offsets holding it the one with the highest `centre`, then the first.
/// `block_max[b]` is the maximum of `boxed[b * MAX_BLOCK..][..MAX_BLOCK]`.
fn range_top(
    boxed: &[u16],
    block_max: &[u16],
    range: std::ops::Range<usize>,
    centre: impl Fn(usize) -> u16,
) -> Option<(u16, u16, usize)> {
    if range.is_empty() {
        return None;
    }
    let (first, last) = (range.start / MAX_BLOCK, (range.end - 1) / MAX_BLOCK);
    let part_max = |b: usize| {
        let from = (b * MAX_BLOCK).max(range.start);
        let to = ((b + 1) * MAX_BLOCK).min(range.end);
        if from == b * MAX_BLOCK && to == (b + 1) * MAX_BLOCK {
            block_max[b]
        } else {
            boxed[from..to].iter().copied().max().unwrap_or(0)
        }
    };
    let max = (first..=last).map(part_max).max()?;
    let mut top: Option<(u16, usize)> = None;
    for b in (first..=last).filter(|&b| block_max[b] >= max) {
        let from = (b * MAX_BLOCK).max(range.start);
        let to = ((b + 1) * MAX_BLOCK).min(range.end);
        for at in (from..to).filter(|&at| boxed[at] == max) {
            let c = centre(at);
            if top.is_none_or(|(best, _)| c > best) {
                top = Some((c, at));
            }
        }
    }
    top.map(|(c, at)| (max, c, at))
}

/// Box sums of a window's votes for the offsets `offsets`: `boxed[i]` is
/// the saturating sum of `previous + current` within ±[`VERIFY_TOLERANCE_FRAMES`]
/// of offset `offsets.start() + i`, and `block_max[b]` the maximum of
/// `boxed[b * MAX_BLOCK..][..MAX_BLOCK]`. One pass over both halves' votes,
/// a block at a time in registers (both arrays must hold the tolerance
/// around `offsets`).
fn window_box_sums(
    previous: &[u16],
    current: &[u16],
    offsets: std::ops::RangeInclusive<usize>,
    boxed: &mut Vec<u16>,
    block_max: &mut Vec<u16>,
) {
    const TOL: usize = VERIFY_TOLERANCE_FRAMES as usize;
    let (lo, hi) = (*offsets.start(), *offsets.end());
    boxed.clear();
    block_max.clear();
    if hi < lo {
        return;
    }
    let mut start = lo;
    while start <= hi {
        let len = MAX_BLOCK.min(hi + 1 - start);
        let from = start - TOL;
        // Both halves' votes over the block and its tolerance margins.
        let mut votes = [0u16; MAX_BLOCK + 2 * TOL];
        for ((v, &p), &c) in votes
            .iter_mut()
            .zip(&previous[from..from + len + 2 * TOL])
            .zip(&current[from..from + len + 2 * TOL])
        {
            *v = p.saturating_add(c);
        }
        let mut sums = [0u16; MAX_BLOCK];
        for d in 0..=2 * TOL {
            for (s, &v) in sums.iter_mut().zip(&votes[d..d + MAX_BLOCK]) {
                *s = s.saturating_add(v);
            }
        }
        let sums = &sums[..len];
        boxed.extend_from_slice(sums);
        block_max.push(sums.iter().fold(0, |m, &s| m.max(s)));
        start += len;
    }
}

/// Votes of the query peaks in `half` for the offsets to the reference peaks
/// within the frequency tolerance, added into `votes` at `offset + base`.
fn correlate(
    query: &PeaksByFrequency,
    reference: &PeaksNear,
    (h0, h1): (u32, u32),
    base: usize,
    votes: &mut [u16],
) {
    for f in 0..HALF_BIN_VALUES {
        let tqs = query.at_within(f as i32, h0, h1);
        let trs = reference.at(f);
        if tqs.is_empty() || trs.is_empty() {
            continue;
        }
        for &tq in tqs {
            let Some(at) = votes.get_mut(base - tq as usize..) else {
                continue;
            };
            for &tr in trs {
                if let Some(v) = at.get_mut(tr as usize) {
                    *v = v.saturating_add(1);
                }
            }
        }
    }
}

/// Wrong offsets (frames from a candidate) whose votes measure what chance
/// gives near it. Odd, unrelated values avoid beat periods.
const NEARBY_SHIFTS_FRAMES: [i64; 6] = [-131, -83, -37, 41, 89, 127];

/// A deep offset is verified only when its votes exceed the mean votes at the
/// [`NEARBY_SHIFTS_FRAMES`] wrong offsets by this many chance spreads: most
/// windows of unrelated audio have a best offset, but not one that stands out.
/// On the evaluation's 10 s queries (mix −6 dB, pink and white noise at 0 dB)
/// chance windows scored 2–5 (99 % below 6) and every work the deep search
/// found scored 10 or more; the cut leaves room for music unlike that corpus.
const DEEP_MIN_VOTE_EXCESS: f64 = 6.0;

/// Offsets within this many frames (±0.4 s) of a deep offset are its own
/// neighbourhood; beyond, they are its rivals (see [`DEEP_MIN_RIVAL_EXCESS`]).
const DEEP_RIVAL_GUARD_FRAMES: usize = 50;

/// A deep offset must also stand out from the best offset of the same window
/// anywhere else in the work, by this many units of that rival's Poisson
/// spread. Music that shares only a tempo and a drum sound with a work votes
/// almost as much at every bar of it; a real alignment stands alone. Over
/// 5.5 h of negatives drawn from music never tuned on (`earmark eval` on a
/// `--negatives-from unseen` set) four such alignments scored 8.1–8.4 without
/// this test and none above 5.8 with it; on the main split no cell lost more
/// than one query (3 lost more in several cells).
const DEEP_MIN_RIVAL_EXCESS: f64 = 2.0;

/// Empty bins on both ends of the vote array, so the box sums of the
/// tolerance window around any offset a half votes for stay inside it.
const VOTE_PAD: usize = 2 * VERIFY_TOLERANCE_FRAMES as usize;

#[cfg(test)]
mod tests;

//! Finds every registered work inside a query fingerprint.
//!
//! 1. **Gather.** Each distinct query hash is looked up once; every posting becomes
//!    a hit `(t_query, t_ref, f_query, f_ref)` grouped by work. Stop hashes — posting
//!    lists far longer than the index's mean ([`STOP_HASH_MEAN_MULTIPLE`]) — are
//!    skipped: music makes some triplet shapes very common, and they bring most of
//!    the chance hits for little evidence.
//! 2. **Vote.** For each work with enough raw hits, a Hough transform over the time
//!    map `t_ref = s · t_query + o` tries every speed factor `s` on a fine grid
//!    ([`MIN_SPEED`]..[`MAX_SPEED`]) and histograms the offsets `o`. The best bin is a
//!    candidate alignment.
//! 3. **Fit.** Hits near the candidate line are refitted by least squares (slope =
//!    speed factor), then filtered by pitch consistency: all true hits share one
//!    log-frequency shift `f_query − f_ref`, whose median gives the pitch factor.
//! 4. **Split.** Inliers are split where the query has a gap longer than
//!    [`MAX_GAP_S`], so a work used twice, or several works in one long mix, each get
//!    their own time ranges. Inliers are removed and step 2 repeats for further
//!    alignments of the same work while the best bin beats what chance piles into
//!    a bin. Works with thousands of hits vote with a uniform sample.
//! 5. **Pairs.** Under louder music or heavy noise a work may keep only two or
//!    three consistent triplets, too few for the Hough stage. Clusters of
//!    [`PAIR_CLUSTER_HITS`] hits from distinct anchors agreeing on an unscaled
//!    offset and pitch become hypotheses too (at most [`MAX_PAIR_HYPOTHESES`],
//!    largest first); the peak check below decides, so a chance pair costs time,
//!    not a false match. This raised 10 s recall under music mixed 6 dB louder
//!    from 68 % to 80 % with no new false positive on the evaluation negatives.
//! 6. **Deep search** ([`deep`]). At −6 dB under other music most 10 s excerpts
//!    keep 0–2 consistent triplets: too few even for pairs, although their single
//!    peaks would verify far above chance at the right alignment. The
//!    [`MatcherConfig::deep_search_works`] works with the most raw hits that the
//!    stages above did not find are cross-correlated peak by peak with each 10 s
//!    window of the query (speed 1, pitch 1), and the best offsets are verified
//!    like any other hypothesis, against the stricter
//!    [`MatcherConfig::deep_min_score`]. On the evaluation this raised 10 s
//!    recall under music mixed 6 dB louder from 64 % to 73 % and under pink
//!    noise at 0 dB from 92 % to 98 %, with no new false positive.
//! 7. **Verify.** Every segment with at least [`CANDIDATE_MIN_HITS`] anchors is a
//!    candidate. Hash hits need three peaks of the work to survive together, which
//!    fails when the work is mixed under louder audio or buried in noise; single
//!    peaks survive far better. So the reference's stored peaks are mapped into the
//!    query through the fitted alignment and counted where a query peak lies within
//!    ±[`VERIFY_TOLERANCE_FRAMES`] frames and ±[`VERIFY_TOLERANCE_HALF_BINS`] half
//!    bins ([`PeakEvidence::found`]). The same count at deliberately wrong offsets
//!    ([`CHANCE_SHIFTS_FRAMES`]) measures what chance gives for this stretch of
//!    this query ([`PeakEvidence::chance`]), whatever its density.
//! 8. **Score.** The score is the excess of found peaks over chance in units of its
//!    Poisson spread, `(found − chance) / √(chance + 1)`: on the evaluation's
//!    negatives, unrelated audio with a handful of chance hash hits scored at most
//!    6.2, while true alignments score from about 8 (a 5 s excerpt at 0 dB SNR) to
//!    hundreds. The default thresholds ([`MatcherConfig::default`]) keep a margin
//!    above that and are re-checked on audio not in the index by the accuracy
//!    harness (`earmark eval`).

mod deep;

use serde::{Deserialize, Serialize};

pub use deep::DEEP_SCORE_MARGIN;

use crate::fingerprint::{FRAMES_PER_SECOND, Fingerprint, HASH_BITS, PeakPoint, Print};
use crate::index::{Index, WorkRef};
use crate::spectrogram::BINS_PER_OCTAVE;

/// Speed-factor search range and step of the Hough transform.
pub const MIN_SPEED: f64 = 0.86;
pub const MAX_SPEED: f64 = 1.16;
const SPEED_STEP: f64 = 0.004;
/// Offset histogram bin width (frames).
const OFFSET_BIN_FRAMES: f64 = 4.0;
/// First, coarse pass of the Hough transform (then refined around its best slope).
const COARSE_SPEED_STEP: f64 = 0.012;
const COARSE_OFFSET_BIN_FRAMES: f64 = 12.0;
/// Coarse slopes refined on the fine grid.
const COARSE_CANDIDATES: usize = 4;
/// Inlier tolerance around the fitted line (frames).
const INLIER_TOLERANCE_FRAMES: f64 = 4.0;
/// Inlier tolerance around the median pitch shift (half log bins).
const PITCH_TOLERANCE_HALF_BINS: i32 = 3;
/// Largest pitch shift considered (half log bins: 12 = 3 semitones), which also
/// covers speed changes of ±15 %.
const MAX_PITCH_SHIFT_HALF_BINS: i32 = 12;
/// A query gap longer than this splits a match in two.
pub const MAX_GAP_S: f64 = 15.0;
/// Works with fewer raw hits are not examined.
const MIN_RAW_HITS: usize = 5;
/// Alignments examined per work.
const MAX_ALIGNMENTS_PER_WORK: usize = 6;
/// Stop hashes: a query hash whose posting list is longer than this many times
/// the index's mean list length (over the whole hash space), and longer than
/// [`MIN_STOP_POSTINGS`], is skipped. Music makes some triplet shapes (octaves,
/// fifths, even rhythms) far more common than others: on the evaluation index the
/// hashes with more than 32 postings are 15 % of a query's lookups but bring 70 %
/// of its chance hits, and every chance hit costs time in the Hough transform.
const STOP_HASH_MEAN_MULTIPLE: f64 = 8.0;
const MIN_STOP_POSTINGS: usize = 32;
/// Works with at least this many raw hits become candidates and are verified.
const CANDIDATE_MIN_HITS: usize = 4;
/// Works with at least this many raw hits are always examined; of the others, the
/// [`MAX_WEAK_CANDIDATE_WORKS`] strongest.
const STRONG_CANDIDATE_HITS: usize = 12;
const MAX_WEAK_CANDIDATE_WORKS: usize = 32;
/// Peak verification: a reference peak is found in the query when a query peak
/// lies within these tolerances of where the alignment puts it.
const VERIFY_TOLERANCE_FRAMES: i64 = 2;
const VERIFY_TOLERANCE_HALF_BINS: i32 = 2;
/// Verification looks this far beyond the first and last hit (seconds).
const VERIFY_MARGIN_S: f64 = 1.0;
/// Reference-time shifts (frames) of the chance-level estimate: the same check
/// with a wrong alignment. Odd, unrelated values avoid beat periods.
const CHANCE_SHIFTS_FRAMES: [i64; 6] = [-131, -83, -37, 41, 89, 127];

/// One registered work found inside a submission.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Match {
    /// Id of the registered work (the id given to `works add`).
    pub work_id: String,
    /// Evidence score: reference peaks re-found in the query beyond chance, in
    /// units of the chance spread (see the module docs).
    pub score: f64,
    /// Number of time- and pitch-consistent hash hits supporting the match.
    pub hits: u32,
    /// Where the work sits in the submission (seconds).
    pub query_start_s: f64,
    pub query_end_s: f64,
    /// Which part of the reference recording it is (seconds).
    pub ref_start_s: f64,
    pub ref_end_s: f64,
    /// Reference seconds per submission second (>1: the submission plays faster).
    pub speed_factor: f64,
    /// Submission frequency / reference frequency (>1: pitched up).
    pub pitch_factor: f64,
    /// True when the score clears the confident threshold; weaker matches are
    /// still reported (policy flags them for human review).
    pub confident: bool,
    /// Peak-level verification of the alignment.
    #[serde(default)]
    pub evidence: PeakEvidence,
}

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

/// Decision thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MatcherConfig {
    /// Segments scoring below this are not reported at all.
    pub min_score: f64,
    /// Segments scoring at least this are confident matches.
    pub confident_score: f64,
    /// Works (most raw hash hits first) searched by peak correlation when the
    /// hash stages found nothing of them (0: no deep search). See the module
    /// docs, step 6.
    #[serde(default = "default_deep_search_works")]
    pub deep_search_works: usize,
    /// Alignments proposed by the deep search must score at least this.
    #[serde(default = "default_deep_min_score")]
    pub deep_min_score: f64,
}

/// Default reporting threshold (weak evidence, flagged for review).
pub const DEFAULT_MIN_SCORE: f64 = 7.0;
/// Default confident threshold (see `earmark eval` for its calibration).
pub const DEFAULT_CONFIDENT_SCORE: f64 = 9.0;
/// Default shortlist of the deep search: the whole catalog of a small
/// collection; the strongest-hit works of a large one.
pub const DEFAULT_DEEP_SEARCH_WORKS: usize = 64;
/// Default threshold of deep-search alignments: they try every offset of every
/// shortlisted work, so chance gets more tries than in the hash stages.
pub const DEFAULT_DEEP_MIN_SCORE: f64 = DEFAULT_MIN_SCORE + DEEP_SCORE_MARGIN;

fn default_deep_search_works() -> usize {
    DEFAULT_DEEP_SEARCH_WORKS
}

fn default_deep_min_score() -> f64 {
    DEFAULT_DEEP_MIN_SCORE
}

impl Default for MatcherConfig {
    fn default() -> Self {
        Self {
            min_score: DEFAULT_MIN_SCORE,
            confident_score: DEFAULT_CONFIDENT_SCORE,
            deep_search_works: DEFAULT_DEEP_SEARCH_WORKS,
            deep_min_score: DEFAULT_DEEP_MIN_SCORE,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Hit {
    tq: u32,
    tr: u32,
    fq: u8,
    fr: u8,
}

/// Finds every work of `index` inside `query` (sorted by query start).
pub fn find_matches(index: &Index, query: &Fingerprint, config: &MatcherConfig) -> Vec<Match> {
    let work_hits = gather_hits(index, &query.prints);
    let mut candidates = work_hits.candidates();
    candidates.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(&b.0)));
    tracing::debug!(
        prints = query.prints.len(),
        candidate_works = candidates.len(),
        top_hits = ?candidates.iter().take(5).map(|c| c.1.len()).collect::<Vec<_>>(),
        "matcher: hits gathered"
    );
    let mut verified: Vec<(f64, WorkRef, Segment)> = Vec::new();
    let mut ref_peaks = Vec::new();
    let mut consumed = vec![false; query.peaks.len()];
    // Verifies a hypothesis against every query peak; keeps it if it scores.
    let mut check = |work_ref: WorkRef, segment: Segment, verified: &mut Vec<_>| {
        let threshold = segment.required_score(config);
        let score = PeakCheck::new(&query.peaks, &consumed, &mut ref_peaks)
            .verify(index, work_ref, &segment, threshold, None)
            .score();
        if score >= threshold {
            verified.push((score, work_ref, segment));
        }
    };
    for (rank, (work_ref, work_hits)) in candidates.iter().enumerate() {
        let strong = work_hits.len() >= STRONG_CANDIDATE_HITS;
        if work_hits.len() < CANDIDATE_MIN_HITS || (!strong && rank >= MAX_WEAK_CANDIDATE_WORKS) {
            break;
        }
        for segment in align_work(work_hits.to_vec(), CANDIDATE_MIN_HITS as f64) {
            if segment.anchors >= CANDIDATE_MIN_HITS {
                check(*work_ref, segment, &mut verified);
            }
        }
    }
    // Too few hash hits for the Hough transform: under louder music or heavy
    // noise a work may keep only two or three consistent triplets. Pairs of hits
    // agreeing on an unscaled alignment are verified too (the peaks decide).
    let query_frames = query.frames as f64;
    for (work_ref, segment) in pair_hypotheses(&candidates, &verified, query_frames) {
        check(work_ref, segment, &mut verified);
    }
    // Works mixed under louder audio may keep no consistent hash at all: the
    // shortlisted works the hash stages did not find (or found only weakly)
    // are searched by peaks.
    if config.deep_search_works > 0 {
        let shortlist: Vec<WorkRef> = candidates
            .iter()
            .map(|c| c.0)
            .filter(|r| {
                !verified
                    .iter()
                    .any(|v| v.1 == *r && v.0 >= config.deep_min_score)
            })
            .take(config.deep_search_works)
            .collect();
        let hypotheses = deep::DeepSearch::default().hypotheses(
            index,
            &query.peaks,
            query.frames.try_into().unwrap_or(u32::MAX),
            &shortlist,
            config.deep_min_score,
        );
        for (_, work_ref, segment) in hypotheses {
            check(work_ref, segment, &mut verified);
        }
    }
    // Explaining away, strongest first: query peaks that an accepted match
    // accounts for cannot support another one. A work that shares material with
    // the one really present loses the peaks it borrowed; a work truly mixed
    // underneath keeps its own.
    // Alignments with Hough support are accepted first: a pair hypothesis only
    // gets the peaks they leave. (Otherwise a pair-proposed duplicate of the true
    // work, or a repeat of it at another offset, could take the true match's
    // peaks: the index_scale bench lost 57 of 200 clean queries at 100 h that way.)
    verified.sort_by(|a, b| {
        a.2.range_from_peaks
            .cmp(&b.2.range_from_peaks)
            .then(b.0.total_cmp(&a.0))
    });
    let mut matches: Vec<Match> = Vec::new();
    let mut explained = Vec::new();
    for (_, work_ref, mut segment) in verified {
        let Some(work) = index.work(work_ref) else {
            continue;
        };
        explained.clear();
        let threshold = segment.required_score(config);
        let mut peaks = PeakCheck::new(&query.peaks, &consumed, &mut ref_peaks);
        let evidence = peaks.verify(index, work_ref, &segment, threshold, Some(&mut explained));
        let score = evidence.score();
        if score >= threshold {
            for &i in &explained {
                consumed[i] = true;
            }
            if segment.range_from_peaks {
                let frames = explained.iter().filter_map(|&i| query.peaks.get(i));
                if let (Some(first), Some(last)) = (
                    frames.clone().map(|p| p.t_frame).min(),
                    frames.map(|p| p.t_frame).max(),
                ) {
                    segment.tq_start = f64::from(first);
                    segment.tq_end = f64::from(last);
                }
            }
            matches.push(segment.into_match(&work.id, score, evidence, config));
        }
    }
    drop_shadowed(&mut matches);
    matches.sort_by(|a, b| {
        a.query_start_s
            .total_cmp(&b.query_start_s)
            .then(b.score.total_cmp(&a.score))
    });
    matches
}

/// Hits of one work agreeing on an unscaled alignment that make a hypothesis.
const PAIR_CLUSTER_HITS: usize = 2;
/// Largest offset spread (frames) and pitch-shift spread (half bins) in a cluster.
const PAIR_OFFSET_TOLERANCE_FRAMES: i64 = 3;
const PAIR_PITCH_TOLERANCE_HALF_BINS: i32 = 2;
/// Hits of a cluster must come from anchors at least this far apart (frames):
/// one anchor's probes and partners are not independent evidence.
const PAIR_MIN_ANCHOR_GAP_FRAMES: u32 = 4;
/// Query frames verified on each side of a cluster's hits.
const PAIR_CONTEXT_FRAMES: f64 = 5.0 * FRAMES_PER_SECOND;
/// Hypotheses verified per query at most (largest clusters first).
const MAX_PAIR_HYPOTHESES: usize = 48;

/// Alignments at speed 1 supported by a few hits (≥ [`PAIR_CLUSTER_HITS`]) that
/// the Hough stage did not already propose, largest clusters first.
fn pair_hypotheses(
    candidates: &[(WorkRef, &[Hit])],
    verified: &[(f64, WorkRef, Segment)],
    query_frames: f64,
) -> Vec<(WorkRef, Segment)> {
    let mut found: Vec<(usize, WorkRef, Segment)> = Vec::new();
    let mut offsets: Vec<(i64, i32, u32)> = Vec::new();
    let mut anchors: Vec<u32> = Vec::new();
    for (work_ref, hits) in candidates {
        offsets.clear();
        offsets.extend(
            hits.iter()
                .map(|h| (i64::from(h.tr) - i64::from(h.tq), pitch_shift(h), h.tq)),
        );
        offsets.sort_unstable();
        let mut i = 0;
        while i < offsets.len() {
            let mut j = i + 1;
            while j < offsets.len() && offsets[j].0 - offsets[i].0 <= PAIR_OFFSET_TOLERANCE_FRAMES {
                j += 1;
            }
            let cluster = &offsets[i..j];
            let pitch = cluster[cluster.len() / 2].1;
            anchors.clear();
            anchors.extend(
                cluster
                    .iter()
                    .filter(|c| (c.1 - pitch).abs() <= PAIR_PITCH_TOLERANCE_HALF_BINS)
                    .map(|c| c.2),
            );
            anchors.sort_unstable();
            anchors.dedup_by(|b, a| *b < *a + PAIR_MIN_ANCHOR_GAP_FRAMES);
            if anchors.len() >= PAIR_CLUSTER_HITS {
                let offset = cluster.iter().map(|c| c.0 as f64).sum::<f64>() / cluster.len() as f64;
                let covered = verified.iter().any(|(_, r, seg)| {
                    r == work_ref
                        && (seg.slope - 1.0).abs() < 0.01
                        && (seg.intercept - offset).abs() <= 2.0 * INLIER_TOLERANCE_FRAMES
                });
                if !covered {
                    let first = f64::from(anchors[0]);
                    let last = f64::from(anchors[anchors.len() - 1]);
                    found.push((
                        anchors.len(),
                        *work_ref,
                        Segment {
                            anchors: anchors.len(),
                            hits: cluster.len() as u32,
                            tq_start: (first - PAIR_CONTEXT_FRAMES).max(0.0),
                            tq_end: (last + PAIR_CONTEXT_FRAMES).min(query_frames).max(last),
                            slope: 1.0,
                            intercept: offset,
                            pitch_half_bins: f64::from(pitch),
                            range_from_peaks: true,
                            deep: false,
                        },
                    ));
                }
                i = j;
            } else {
                i += 1;
            }
        }
    }
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    found.truncate(MAX_PAIR_HYPOTHESES);
    found.into_iter().map(|(_, r, seg)| (r, seg)).collect()
}

/// Peak verification of alignments against one query.
struct PeakCheck<'a> {
    /// Query peaks, sorted by frame.
    query_peaks: &'a [PeakPoint],
    /// Query peaks already explained by an accepted match.
    consumed: &'a [bool],
    /// Scratch buffer for the reference's peaks.
    ref_peaks: &'a mut Vec<PeakPoint>,
}

impl<'a> PeakCheck<'a> {
    fn new(
        query_peaks: &'a [PeakPoint],
        consumed: &'a [bool],
        ref_peaks: &'a mut Vec<PeakPoint>,
    ) -> Self {
        Self {
            query_peaks,
            consumed,
            ref_peaks,
        }
    }

    /// Checks where the alignment of `segment` puts the reference's peaks in the
    /// query; with `explained`, collects the query peaks the alignment found.
    ///
    /// Evidence that cannot reach `threshold` is returned as soon as that is
    /// certain, with the chance level measured so far (a lower bound): its
    /// score is then below `threshold` but not exact. Most hypotheses are
    /// chance alignments, and this skips most of their chance shifts.
    fn verify(
        &mut self,
        index: &Index,
        work_ref: WorkRef,
        segment: &Segment,
        threshold: f64,
        explained: Option<&mut Vec<usize>>,
    ) -> PeakEvidence {
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
        self.ref_peaks.clear();
        index.work_peaks(
            work_ref,
            (tr_lo - widest).max(0.0) as u32,
            (tr_hi + widest).max(0.0) as u32,
            self.ref_peaks,
        );
        let pitch = segment.pitch_half_bins.round() as i32;
        let count = |shift: i64, mut explained: Option<&mut Vec<usize>>| -> (u32, u32) {
            let (lo, hi) = (tr_lo + shift as f64, tr_hi + shift as f64);
            let (mut checked, mut found) = (0, 0);
            // Reference peaks come in time order and the alignment is increasing,
            // so the search position in the query only moves forward.
            let mut cursor = None;
            for p in self.ref_peaks.iter() {
                let tr = f64::from(p.t_frame);
                if tr < lo || tr >= hi {
                    continue;
                }
                let tq = ((tr - shift as f64 - segment.intercept) / segment.slope).round() as i64;
                let fq = i32::from(p.f_half_bins) + pitch;
                checked += 1;
                if let Some(i) =
                    peak_near_from(self.query_peaks, self.consumed, &mut cursor, tq, fq)
                {
                    found += 1;
                    if let Some(out) = explained.as_deref_mut() {
                        out.push(i);
                    }
                }
            }
            (checked, found)
        };
        let (checked, found) = count(0, explained);
        let mut evidence = PeakEvidence {
            checked,
            found,
            chance: 0.0,
        };
        for &shift in &CHANCE_SHIFTS_FRAMES {
            if evidence.score() < threshold {
                // More chance only lowers the score.
                break;
            }
            let (c, f) = count(shift, None);
            // Scale to the number of peaks of the true alignment.
            if c > 0 {
                evidence.chance += f64::from(f) * f64::from(checked)
                    / f64::from(c)
                    / CHANCE_SHIFTS_FRAMES.len() as f64;
            }
        }
        evidence
    }
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

/// [`peak_near`] for a run of lookups with non-decreasing `t_frame`: `cursor`
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

/// Drops a match when a stronger match of the same work covers most of its query
/// range (a repeated section of a recording aligns twice with one excerpt).
fn drop_shadowed(matches: &mut Vec<Match>) {
    matches.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Match> = Vec::with_capacity(matches.len());
    for m in matches.drain(..) {
        let shadowed = kept.iter().any(|k| {
            let overlap = k.query_end_s.min(m.query_end_s) - k.query_start_s.max(m.query_start_s);
            let shorter = (m.query_end_s - m.query_start_s).min(k.query_end_s - k.query_start_s);
            k.work_id == m.work_id && overlap > SHADOW_OVERLAP * shorter
        });
        if !shadowed {
            kept.push(m);
        }
    }
    *matches = kept;
}

/// Fraction of query overlap above which the weaker of two matches of the same
/// work is dropped.
const SHADOW_OVERLAP: f64 = 0.5;

/// Longest posting list a query hash may have in `index` to be used.
fn stop_hash_postings(index: &Index) -> usize {
    let mean = index.posting_count() as f64 / f64::from(1u32 << HASH_BITS);
    ((STOP_HASH_MEAN_MULTIPLE * mean).ceil() as usize).max(MIN_STOP_POSTINGS)
}

/// Hash hits of the query's prints, grouped by work.
struct WorkHits {
    /// Every kept hit, work after work; each work's run sorted and deduplicated.
    hits: Vec<Hit>,
    /// Per work with at least [`PAIR_CLUSTER_HITS`] distinct hits: its run in `hits`.
    runs: Vec<(WorkRef, std::ops::Range<usize>)>,
}

impl WorkHits {
    fn candidates(&self) -> Vec<(WorkRef, &[Hit])> {
        self.runs
            .iter()
            .map(|(r, run)| (*r, &self.hits[run.clone()]))
            .collect()
    }
}

/// Looks up the query's prints and groups the hits by work.
///
/// Hits are gathered into one flat list and grouped by dense work slot with a
/// counting sort into one buffer: a large catalog gives a few chance hits to
/// very many works, and hashing each hit into a per-work vector was the
/// lookup's main cost.
fn gather_hits(index: &Index, prints: &[Print]) -> WorkHits {
    let max_postings = stop_hash_postings(index);
    let mut sorted: Vec<&Print> = prints.iter().collect();
    sorted.sort_unstable_by_key(|p| (p.hash, p.t_frame, p.f_half_bins));
    sorted.dedup_by_key(|p| (p.hash, p.t_frame, p.f_half_bins));
    let mut hits_per_slot: Vec<u32> = vec![0; index.work_slot_count()];
    let mut flat: Vec<(u32, Hit)> = Vec::new();
    let mut postings = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let hash = sorted[i].hash;
        let mut j = i;
        while j < sorted.len() && sorted[j].hash == hash {
            j += 1;
        }
        postings.clear();
        index.lookup(hash, |r, p| {
            if postings.len() <= max_postings {
                postings.push((index.work_slot(r), p));
            }
        });
        if postings.len() > max_postings {
            i = j;
            continue;
        }
        for q in &sorted[i..j] {
            for &(slot, p) in &postings {
                if (i32::from(q.f_half_bins) - i32::from(p.f_half_bins)).abs()
                    > MAX_PITCH_SHIFT_HALF_BINS
                {
                    continue;
                }
                let Some(count) = hits_per_slot.get_mut(slot) else {
                    continue;
                };
                *count += 1;
                flat.push((
                    slot as u32,
                    Hit {
                        tq: q.t_frame,
                        tr: p.t_frame,
                        fq: q.f_half_bins,
                        fr: p.f_half_bins,
                    },
                ));
            }
        }
        i = j;
    }
    // Works with enough hits get a run; `hits_per_slot` becomes the next free
    // position of the slot's run plus one (0: the slot's hits are dropped).
    let mut runs: Vec<(WorkRef, std::ops::Range<usize>)> = Vec::new();
    let mut next = 0usize;
    for (slot, count) in hits_per_slot.iter_mut().enumerate() {
        let n = *count as usize;
        match index.work_ref_of_slot(slot) {
            Some(r) if n >= PAIR_CLUSTER_HITS => {
                runs.push((r, next..next + n));
                *count = next as u32 + 1;
                next += n;
            }
            _ => *count = 0,
        }
    }
    let mut hits = vec![
        Hit {
            tq: 0,
            tr: 0,
            fq: 0,
            fr: 0
        };
        next
    ];
    for (slot, hit) in flat {
        let cursor = &mut hits_per_slot[slot as usize];
        if let Some(at) = (*cursor as usize).checked_sub(1) {
            hits[at] = hit;
            *cursor += 1;
        }
    }
    // Sort and deduplicate each run in place, closing the gaps.
    let mut write = 0;
    for (_, run) in &mut runs {
        let group = &mut hits[run.clone()];
        group.sort_unstable();
        let mut kept = 0;
        for k in 0..group.len() {
            if kept == 0 || (group[k].tq, group[k].tr) != (group[kept - 1].tq, group[kept - 1].tr) {
                group[kept] = group[k];
                kept += 1;
            }
        }
        hits.copy_within(run.start..run.start + kept, write);
        *run = write..write + kept;
        write += kept;
    }
    hits.truncate(write);
    runs.retain(|(_, run)| run.len() >= PAIR_CLUSTER_HITS);
    WorkHits { hits, runs }
}

/// A contiguous, consistent stretch of hits of one work.
#[derive(Debug, Clone)]
struct Segment {
    /// Distinct query anchor frames supporting the segment.
    anchors: usize,
    hits: u32,
    tq_start: f64,
    tq_end: f64,
    slope: f64,
    intercept: f64,
    pitch_half_bins: f64,
    /// The query range is a guess around a few hits: once verified, it becomes
    /// the extent of the query peaks the alignment explains.
    range_from_peaks: bool,
    /// Proposed by the deep search (held to [`MatcherConfig::deep_min_score`]).
    deep: bool,
}

impl Segment {
    /// The score this alignment must reach to be reported.
    fn required_score(&self, config: &MatcherConfig) -> f64 {
        if self.deep {
            config.deep_min_score
        } else {
            config.min_score
        }
    }

    fn into_match(
        self,
        work_id: &str,
        score: f64,
        evidence: PeakEvidence,
        config: &MatcherConfig,
    ) -> Match {
        let to_s = |frames: f64| frames / FRAMES_PER_SECOND;
        let ref_at = |tq: f64| self.slope * tq + self.intercept;
        let octaves = self.pitch_half_bins / 2.0 / BINS_PER_OCTAVE as f64;
        Match {
            work_id: work_id.to_string(),
            score,
            hits: self.hits,
            query_start_s: to_s(self.tq_start),
            query_end_s: to_s(self.tq_end),
            ref_start_s: to_s(ref_at(self.tq_start)).max(0.0),
            ref_end_s: to_s(ref_at(self.tq_end)).max(0.0),
            speed_factor: self.slope,
            pitch_factor: 2f64.powf(octaves),
            confident: score >= config.confident_score,
            evidence,
        }
    }
}

/// Finds the alignments of one work's hits, best first, until the best remaining
/// alignment has fewer than `min_inliers` hits.
fn align_work(mut hits: Vec<Hit>, min_inliers: f64) -> Vec<Segment> {
    let min_inliers = min_inliers.max(MIN_RAW_HITS as f64);
    let mut segments = Vec::new();
    for round in 0..MAX_ALIGNMENTS_PER_WORK {
        if (hits.len() as f64) < min_inliers {
            break;
        }
        let Some(best) = best_alignment(&hits) else {
            break;
        };
        // The first alignment is always verified; further ones only when they
        // stand out from what chance piles into the fullest offset bin.
        let beats_chance = round == 0 || f64::from(best.count) >= best.chance_ceiling();
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
        let (slope, offset) = fit_line(&inliers).unwrap_or((slope, offset));
        let inliers: Vec<Hit> = inliers
            .into_iter()
            .filter(|h| residual(h, slope, offset).abs() <= INLIER_TOLERANCE_FRAMES)
            .collect();
        let pitch = median_pitch(&inliers);
        let consistent: Vec<Hit> = inliers
            .into_iter()
            .filter(|h| (pitch_shift(h) - pitch).abs() <= PITCH_TOLERANCE_HALF_BINS)
            .collect();
        segments.extend(split_segments(&consistent, slope, offset));
        hits = rest;
    }
    segments
}

fn residual(h: &Hit, slope: f64, offset: f64) -> f64 {
    f64::from(h.tr) - (slope * f64::from(h.tq) + offset)
}

fn pitch_shift(h: &Hit) -> i32 {
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
fn best_alignment(all_hits: &[Hit]) -> Option<Vote> {
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
    let coarse_steps = ((MAX_SPEED - MIN_SPEED) / COARSE_SPEED_STEP).round() as usize;
    let mut per_slope: Vec<Vote> = (0..=coarse_steps)
        .filter_map(|i| {
            let slope = MIN_SPEED + i as f64 * COARSE_SPEED_STEP;
            vote(hits, std::iter::once(slope), COARSE_OFFSET_BIN_FRAMES)
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
                .filter(|s| (MIN_SPEED..=MAX_SPEED).contains(s));
            vote(hits, fine, OFFSET_BIN_FRAMES)
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
    /// Mean hits per pair of bins at that slope: what chance gives.
    mean_count: f64,
    /// One hit in `stride` voted (counts are of the sample).
    stride: usize,
}

impl Vote {
    /// A count that chance alone rarely reaches in any of the histogram's bins
    /// (Poisson mean plus [`CHANCE_CEILING_SIGMAS`] spreads, plus a margin).
    fn chance_ceiling(&self) -> f64 {
        self.mean_count + CHANCE_CEILING_SIGMAS * self.mean_count.sqrt() + CHANCE_CEILING_MARGIN
    }

    /// Hits of all the work's hits estimated to lie in the best bins.
    fn estimated_hits(&self) -> f64 {
        f64::from(self.count) * self.stride as f64
    }
}

/// Further alignments of a work must beat the chance ceiling of the vote.
const CHANCE_CEILING_SIGMAS: f64 = 4.0;
const CHANCE_CEILING_MARGIN: f64 = 4.0;

/// Offset histogram for each candidate slope; returns (count, slope, offset) of the
/// fullest pair of adjacent bins.
///
/// This is the matcher's hot loop (every hit × every slope): offsets are shifted
/// positive by a bias so a float-to-int cast floors them, with no call to `floor`.
fn vote(hits: &[Hit], slopes: impl Iterator<Item = f64>, bin_frames: f64) -> Option<Vote> {
    let max_tq = hits.iter().map(|h| h.tq).max()?;
    // tr − slope·tq + bias ≥ bin_frames > 0 for every hit and slope ≤ MAX_SPEED.
    let bias = MAX_SPEED * f64::from(max_tq) + bin_frames;
    let per_bin = 1.0 / bin_frames;
    let mut best: Option<Vote> = None;
    let mut bins: Vec<u32> = Vec::with_capacity(hits.len());
    let mut counts: Vec<u32> = Vec::new();
    for slope in slopes {
        bins.clear();
        let (mut lo, mut hi) = (u32::MAX, 0u32);
        for h in hits {
            let shifted = f64::from(h.tr) - slope * f64::from(h.tq) + bias;
            let b = (shifted * per_bin) as u32;
            lo = lo.min(b);
            hi = hi.max(b);
            bins.push(b);
        }
        if bins.is_empty() {
            continue;
        }
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
        let (mut top_count, mut top_pair) = (0u32, usize::MAX);
        let mut consider = |count: u32, pair: usize| {
            if count > top_count || (count == top_count && pair < top_pair) {
                (top_count, top_pair) = (count, pair);
            }
        };
        for &b in &bins {
            let i = (b - lo) as usize;
            counts[i] += 1;
            if i > 0 {
                consider(counts[i - 1] + counts[i], i - 1);
            }
            consider(counts[i] + counts[i + 1], i);
        }
        for &b in &bins {
            counts[(b - lo) as usize] = 0;
        }
        if top_pair != usize::MAX && best.is_none_or(|v| top_count > v.count) {
            best = Some(Vote {
                count: top_count,
                slope,
                offset: (f64::from(lo) + top_pair as f64 + 1.0) * bin_frames - bias,
                mean_count: 2.0 * bins.len() as f64 / span as f64,
                stride: 1,
            });
        }
    }
    best
}

/// Least-squares line through the hits (`t_ref` against `t_query`).
fn fit_line(hits: &[Hit]) -> Option<(f64, f64)> {
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
    let slope = (sqr / sqq).clamp(MIN_SPEED, MAX_SPEED);
    Some((slope, mean_r - slope * mean_q))
}

fn split_segments(hits: &[Hit], slope: f64, offset: f64) -> Vec<Segment> {
    let mut sorted = hits.to_vec();
    sorted.sort_unstable_by_key(|h| h.tq);
    let max_gap = (MAX_GAP_S * FRAMES_PER_SECOND) as u32;
    let mut segments = Vec::new();
    let mut start = 0;
    for i in 1..=sorted.len() {
        if i == sorted.len() || sorted[i].tq - sorted[i - 1].tq > max_gap {
            let run = &sorted[start..i];
            let (slope, offset) = if run.len() >= 2 * MIN_RAW_HITS {
                fit_line(run).unwrap_or((slope, offset))
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
        let segments = align_work(hits, 5.0);
        let best = segments.iter().max_by_key(|s| s.anchors).unwrap();
        assert!((best.slope - 1.07).abs() < 0.01, "slope {}", best.slope);
        assert!(best.anchors >= 75, "anchors {}", best.anchors);
        assert!(
            (best.intercept - 500.0).abs() < 6.0,
            "intercept {}",
            best.intercept
        );
    }

    #[test]
    fn peak_lookup_honours_tolerances() {
        let peaks: Vec<PeakPoint> = [(10, 50), (12, 90), (40, 60)]
            .into_iter()
            .map(|(t_frame, f_half_bins)| PeakPoint {
                t_frame,
                f_half_bins,
            })
            .collect();
        let none = [false; 3];
        assert_eq!(peak_near(&peaks, &none, 10, 50), Some(0));
        assert_eq!(peak_near(&peaks, &none, 8, 52), Some(0));
        assert_eq!(peak_near(&peaks, &none, 14, 88), Some(1));
        assert_eq!(peak_near(&peaks, &none, 7, 50), None, "too early");
        assert_eq!(peak_near(&peaks, &none, 10, 53), None, "too high");
        assert_eq!(peak_near(&peaks, &none, 25, 60), None, "nothing there");
        assert_eq!(peak_near(&peaks, &none, -5, 50), None);
        // A peak explained by another match is not found again.
        assert_eq!(peak_near(&peaks, &[true, false, false], 10, 50), None);
    }

    #[test]
    fn evidence_score_separates_signal_from_chance() {
        let chance_level = PeakEvidence {
            checked: 200,
            found: 12,
            chance: 11.0,
        };
        let mixed_work = PeakEvidence {
            checked: 200,
            found: 50,
            chance: 11.0,
        };
        assert!(chance_level.score() < 1.0);
        assert!(mixed_work.score() > DEFAULT_CONFIDENT_SCORE);
        assert_eq!(PeakEvidence::default().score(), 0.0);
    }

    #[test]
    fn gaps_split_segments() {
        let mut hits: Vec<Hit> = (0..40).map(|i| hit(i * 5, i * 5 + 1000)).collect();
        hits.extend((0..40).map(|i| hit(3000 + i * 5, 3000 + i * 5 + 1000)));
        let segments = align_work(hits, 5.0);
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
        let segment = &align_work(hits, 5.0)[0];
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

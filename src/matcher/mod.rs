//! Finds every registered work inside a query fingerprint.
//!
//! 1. **Gather.** Each distinct query hash is looked up once; every posting becomes
//!    a hit `(t_query, t_ref, f_query, f_ref)` grouped by work. Stop hashes — posting
//!    lists far longer than the index's mean ([`STOP_HASH_MEAN_MULTIPLE`]) — are
//!    skipped: music makes some triplet shapes very common, and they bring most of
//!    the chance hits for little evidence. [`HitGatherer`] takes the prints in
//!    batches, so `crate::screening::identify_file` looks up each block's prints while
//!    the rest of the file is still decoding ([`find_matches_gathered`]).
//! 2. **Vote.** For each work with enough raw hits, a Hough transform over the time
//!    map `t_ref = s · t_query + o` tries every speed factor `s` on a fine grid
//!    ([`MIN_SPEED`]..[`MAX_SPEED`]) and histograms the offsets `o`. The best bin is a
//!    candidate alignment. Hits of warped query prints
//!    ([`crate::fingerprint::Warp`]) form their own group per work and are
//!    voted over the warp's speed range (0.72–0.97, 1.03–1.39), after the
//!    unwarped groups and only for works these did not find confidently.
//! 3. **Fit.** Hits near the candidate line are refitted by least squares (slope =
//!    speed factor), then filtered by pitch consistency: all true hits share one
//!    log-frequency shift `f_query − f_ref`, whose median gives the pitch factor.
//! 4. **Split.** Inliers are split where the query has a gap longer than
//!    [`MAX_GAP_S`], so a work used twice, or several works in one long mix, each get
//!    their own time ranges. Inliers are removed and step 2 repeats for further
//!    alignments of the same work while the best bin beats what chance reaches
//!    in any (speed, offset) cell of the search (a Poisson quantile over all the
//!    cells). Works with thousands of hits vote with a uniform sample.
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
//!    stages above did not find (every work of a catalog no larger than that,
//!    hit or not: under a voice a work may keep no hash at all) are
//!    cross-correlated peak by peak with each 10 s
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
//!    bins ([`PeakEvidence::found`]). The same count at deliberately wrong
//!    alignments measures what chance gives ([`PeakEvidence::chance`]), two ways
//!    at each of [`CHANCE_SHIFTS_FRAMES`]: the reference stretch moved against
//!    the same query (whatever the query's density), and the same reference
//!    peaks against the query moved circularly within the verified stretch
//!    (whatever those reference peaks' tendency to land on anything). The
//!    larger of the two counts. A query carries two peak sets
//!    ([`Fingerprint::peaks`] and [`Fingerprint::brief_peaks`]); each
//!    alignment is verified against both, with chance measured in each, and
//!    keeps the better score. Under a voice a work's partials are local
//!    maxima only between the voice's syllables, so only the brief set holds
//!    them; under noise the brief set is mostly noise, and the usual set
//!    scores higher. Both sets are verified in one pass over the reference
//!    peaks. The deep search proposes offsets from each set on its own (the
//!    peaks both sets hold vote once, for both).
//! 8. **Score.** The score is the excess of found peaks over chance in units of its
//!    Poisson spread, `(found − chance) / √(chance + 1)`: on the evaluation's
//!    negatives and against every wrong work of its positive queries, chance
//!    alignments scored at most 6.1 (deep search included), while true
//!    alignments score from about 8 (a 5 s excerpt at 0 dB SNR) to hundreds.
//!    The default thresholds ([`MatcherConfig::default`]) keep a margin above
//!    that and are re-checked on audio not in the index by the accuracy
//!    harness (`earmark eval`).
//!
//! [`STOP_HASH_MEAN_MULTIPLE`]: hits::STOP_HASH_MEAN_MULTIPLE
//! [`PAIR_CLUSTER_HITS`]: pairs::PAIR_CLUSTER_HITS
//! [`MAX_PAIR_HYPOTHESES`]: pairs::MAX_PAIR_HYPOTHESES
//! [`VERIFY_TOLERANCE_FRAMES`]: verify::VERIFY_TOLERANCE_FRAMES
//! [`VERIFY_TOLERANCE_HALF_BINS`]: verify::VERIFY_TOLERANCE_HALF_BINS
//! [`CHANCE_SHIFTS_FRAMES`]: verify::CHANCE_SHIFTS_FRAMES

mod deep;
mod hits;
mod hough;
mod pairs;
mod verify;

use serde::{Deserialize, Serialize};

pub use hits::HitGatherer;
use hough::SpeedRange;
pub use hough::{MAX_GAP_S, MAX_SPEED, MIN_SPEED};
pub use verify::PeakEvidence;

use crate::fingerprint::{FRAMES_PER_SECOND, Fingerprint, PeakPoint};
use crate::index::{Index, WorkRef};
use crate::spectrogram::BINS_PER_OCTAVE;
use hough::align_work;
use pairs::pair_hypotheses;
use verify::{PeakCheck, QueryGrid, VerifyScratch};

/// Works with at least this many raw hits become candidates and are verified.
const CANDIDATE_MIN_HITS: usize = 4;
/// Works with at least this many raw hits are always examined; of the others, the
/// [`MAX_WEAK_CANDIDATE_WORKS`] strongest.
const STRONG_CANDIDATE_HITS: usize = 12;
const MAX_WEAK_CANDIDATE_WORKS: usize = 32;
/// Hits of warped prints (see [`crate::fingerprint::Warp`]) a work needs for
/// their alignment to be searched: a sped-up or slowed work keeps many
/// (unwarped prints of such a query find a work even with a few).
const WARPED_CANDIDATE_MIN_HITS: usize = 12;

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
/// Default confident threshold (see `earmark eval` for its calibration): on
/// the evaluation's two reference splits (2.05 h of negatives, 5 400
/// positive queries against every other work) no chance alignment scored
/// above 6.1, with the deep search reporting down to 7.
pub const DEFAULT_CONFIDENT_SCORE: f64 = 7.5;
/// Default shortlist of the deep search: the whole catalog of a small
/// collection; the strongest-hit works of a large one.
pub const DEFAULT_DEEP_SEARCH_WORKS: usize = 64;
/// Default threshold of deep-search alignments: they try every offset of every
/// shortlisted work, so chance gets more tries than in the hash stages, and
/// only confident ones are reported.
pub const DEFAULT_DEEP_MIN_SCORE: f64 = DEFAULT_CONFIDENT_SCORE;

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
    let mut gatherer = HitGatherer::new(index);
    gatherer.add(&query.prints);
    find_matches_gathered(index, query, gatherer, config)
}

/// [`find_matches`] when the query's prints have already been looked up, as
/// they were fingerprinted, into `gatherer` (which must hold exactly
/// `query.prints`, and have been made for `index`).
pub fn find_matches_gathered(
    index: &Index,
    query: &Fingerprint,
    gatherer: HitGatherer<'_>,
    config: &MatcherConfig,
) -> Vec<Match> {
    let work_hits = gatherer.finish();
    let mut candidates = work_hits.candidates();
    candidates.sort_by(|a, b| {
        b.hits
            .len()
            .cmp(&a.hits.len())
            .then(a.work.cmp(&b.work))
            .then(a.warp.cmp(&b.warp))
    });
    tracing::debug!(
        prints = query.prints.len(),
        candidate_works = candidates.len(),
        top_hits = ?candidates.iter().take(5).map(|c| c.hits.len()).collect::<Vec<_>>(),
        "matcher: hits gathered"
    );
    let mut verified: Vec<(f64, WorkRef, Segment)> = Vec::new();
    let mut scratch = VerifyScratch::default();
    // The query's peak sets, each verified against (see the module docs).
    let peak_sets = query_peak_sets(query);
    // No peak is consumed until every hypothesis is verified.
    let grids: Vec<QueryGrid> = peak_sets.iter().map(|set| QueryGrid::new(set)).collect();
    // Verifies a hypothesis against every query peak; keeps it if it scores.
    let mut check = |work_ref: WorkRef, segment: Segment, verified: &mut Vec<_>| {
        let threshold = segment.required_score(config);
        let score = PeakCheck::with_grids(&grids, &mut scratch)
            .best_score(index, work_ref, &segment, threshold);
        if score >= threshold {
            verified.push((score, work_ref, segment));
        }
    };
    // Unwarped prints first; a work they found confidently, at a speed inside
    // their range (not clamped to its edge), is not searched again at the
    // warps' speeds.
    for warped in [false, true] {
        for (rank, candidate) in candidates.iter().enumerate() {
            let work_hits = candidate.hits;
            let strong = work_hits.len() >= STRONG_CANDIDATE_HITS;
            if work_hits.len() < CANDIDATE_MIN_HITS || (!strong && rank >= MAX_WEAK_CANDIDATE_WORKS)
            {
                break;
            }
            if (candidate.warp != 0) != warped {
                continue;
            }
            if warped
                && (work_hits.len() < WARPED_CANDIDATE_MIN_HITS
                    || verified.iter().any(|v| {
                        v.1 == candidate.work
                            && v.0 >= config.confident_score
                            && SpeedRange::UNWARPED.holds_inside(v.2.slope)
                    }))
            {
                continue;
            }
            let speeds = SpeedRange::of_warp(candidate.warp);
            for segment in align_work(work_hits.to_vec(), CANDIDATE_MIN_HITS as f64, speeds) {
                if segment.anchors >= CANDIDATE_MIN_HITS {
                    check(candidate.work, segment, &mut verified);
                }
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
        let mut shortlist: Vec<WorkRef> = Vec::new();
        // The deep search runs at speed 1: it takes the works the unwarped
        // prints hit, most hits first; a catalog no larger than the
        // shortlist is searched whole (under a voice a work may keep no
        // hash at all).
        let hit_works = candidates.iter().filter(|c| c.warp == 0).map(|c| c.work);
        let whole_catalog = if index.live_work_count() <= config.deep_search_works {
            index.live_works()
        } else {
            Vec::new()
        };
        for work in hit_works.chain(whole_catalog) {
            if shortlist.len() == config.deep_search_works {
                break;
            }
            let found = verified
                .iter()
                .any(|v| v.1 == work && v.0 >= config.deep_min_score);
            if !found && !shortlist.contains(&work) {
                shortlist.push(work);
            }
        }
        // Each peak set proposes its own offsets: under a voice only the
        // brief peaks correlate; where a work's peaks are few, the brief
        // peaks of everything else would drown them.
        let hypotheses = deep::DeepSearch::default().hypotheses(
            index,
            &peak_sets,
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
    let verified = acceptance_order(verified);
    let mut consumed: Vec<Vec<bool>> = peak_sets.iter().map(|set| vec![false; set.len()]).collect();
    let mut matches: Vec<Match> = Vec::new();
    let mut explained: Vec<Vec<usize>> = vec![Vec::new(); peak_sets.len()];
    for (_, work_ref, mut segment) in verified {
        let Some(work) = index.work(work_ref) else {
            continue;
        };
        let threshold = segment.required_score(config);
        // The set where the alignment scores highest gives its evidence.
        let mut best: Option<(usize, PeakEvidence)> = None;
        for (i, set) in peak_sets.iter().enumerate() {
            explained[i].clear();
            let evidence = PeakCheck::new(set, &consumed[i], &mut scratch).verify(
                index,
                work_ref,
                &segment,
                threshold,
                Some(&mut explained[i]),
            );
            if best.is_none_or(|(_, b)| evidence.score() > b.score()) {
                best = Some((i, evidence));
            }
        }
        let Some((best_set, evidence)) = best else {
            continue;
        };
        let score = evidence.score();
        if score >= threshold {
            // The peaks of every set that the alignment accounts for.
            for (consumed, explained) in consumed.iter_mut().zip(&explained) {
                for &i in explained {
                    consumed[i] = true;
                }
            }
            if segment.range_from_peaks {
                let frames = explained[best_set]
                    .iter()
                    .filter_map(|&i| peak_sets[best_set].get(i));
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

/// A known alignment of a work inside a query: where its excerpt lies in the
/// query and in the reference, at what speed and pitch (the ground truth of
/// an evaluation query).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KnownAlignment {
    pub query_start_s: f64,
    pub query_end_s: f64,
    pub ref_start_s: f64,
    /// Reference seconds per query second.
    pub speed_factor: f64,
    /// Query frequency / reference frequency.
    pub pitch_factor: f64,
}

/// The peak evidence of `work_id` in `query` at a known alignment, as the
/// matcher's verification measures it (the better of the query's peak sets),
/// whatever the search would have proposed. `None` when the index holds no
/// such work or the alignment is not a valid one. Diagnosis: a work missed
/// although its true alignment scores above the confident threshold was lost
/// by the search; one below it lacks the evidence.
pub fn score_alignment(
    index: &Index,
    query: &Fingerprint,
    work_id: &str,
    alignment: &KnownAlignment,
) -> Option<PeakEvidence> {
    let valid = |x: f64| x.is_finite() && x > 0.0;
    if !valid(alignment.speed_factor) || !valid(alignment.pitch_factor) {
        return None;
    }
    let work_ref = index.live_work(work_id)?;
    let tq_start = alignment.query_start_s * FRAMES_PER_SECOND;
    let segment = Segment {
        anchors: 0,
        hits: 0,
        tq_start,
        tq_end: alignment.query_end_s * FRAMES_PER_SECOND,
        slope: alignment.speed_factor,
        intercept: alignment.ref_start_s * FRAMES_PER_SECOND - alignment.speed_factor * tq_start,
        pitch_half_bins: alignment.pitch_factor.log2() * 2.0 * BINS_PER_OCTAVE as f64,
        range_from_peaks: false,
        deep: false,
    };
    let mut scratch = VerifyScratch::default();
    query_peak_sets(query)
        .into_iter()
        .map(|set| {
            let consumed = vec![false; set.len()];
            PeakCheck::new(set, &consumed, &mut scratch).verify(
                index,
                work_ref,
                &segment,
                f64::NEG_INFINITY,
                None,
            )
        })
        .max_by(|a, b| a.score().total_cmp(&b.score()))
}

/// The peak sets of `query` that alignments are verified against: its peaks,
/// and its brief peaks when it has any.
fn query_peak_sets(query: &Fingerprint) -> Vec<&[PeakPoint]> {
    let mut sets = vec![query.peaks.as_slice()];
    if !query.brief_peaks.is_empty() {
        sets.push(query.brief_peaks.as_slice());
    }
    sets
}

/// The order in which verified alignments take their peaks: those with
/// Hough support first, strongest first within each group.
///
/// A peak-proposed alignment (pair or deep search) that a Hough line of the
/// same work confirms, mapping the line's stretch alike
/// ([`Segment::same_alignment_as`]), has that support too: otherwise the
/// line, verified over its few seconds of hits, would take the peaks of the
/// stronger whole-window verification of the same alignment and leave a
/// weaker match than the evidence holds.
fn acceptance_order(verified: Vec<(f64, WorkRef, Segment)>) -> Vec<(f64, WorkRef, Segment)> {
    let hough_supported: Vec<bool> = verified
        .iter()
        .map(|(_, work, segment)| {
            !segment.range_from_peaks
                || verified.iter().any(|(_, line_work, line)| {
                    line_work == work && !line.range_from_peaks && line.same_alignment_as(segment)
                })
        })
        .collect();
    let mut ordered: Vec<_> = verified.into_iter().zip(hough_supported).collect();
    ordered.sort_by(|(a, a_supported), (b, b_supported)| {
        b_supported.cmp(a_supported).then(b.0.total_cmp(&a.0))
    });
    ordered.into_iter().map(|(v, _)| v).collect()
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
    /// Whether `other` maps this segment's query stretch where this one does
    /// (within the Hough inlier tolerance at both ends, at the same pitch
    /// within the verification tolerance) and overlaps it in the query.
    fn same_alignment_as(&self, other: &Segment) -> bool {
        let overlaps = self.tq_start <= other.tq_end && other.tq_start <= self.tq_end;
        let same_pitch = (self.pitch_half_bins - other.pitch_half_bins).abs()
            <= f64::from(verify::VERIFY_TOLERANCE_HALF_BINS);
        let maps_alike = [self.tq_start, self.tq_end].iter().all(|&tq| {
            let here = self.slope * tq + self.intercept;
            let there = other.slope * tq + other.intercept;
            (here - there).abs() <= hough::INLIER_TOLERANCE_FRAMES
        });
        overlaps && same_pitch && maps_alike
    }

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

/// Pseudo-random peaks: `per_second` a second for `seconds` (tests of the
/// matching stages).
#[cfg(test)]
fn random_peaks(seconds: u32, per_second: u32, seed: u64) -> Vec<PeakPoint> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move |n: u32| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) % u64::from(n)) as u32
    };
    let frames = (f64::from(seconds) * FRAMES_PER_SECOND) as u32;
    let mut peaks: Vec<PeakPoint> = (0..seconds * per_second)
        .map(|_| PeakPoint {
            t_frame: next(frames),
            f_half_bins: (10 + next(170)) as u8,
        })
        .collect();
    peaks.sort_unstable();
    peaks.dedup();
    peaks
}

/// `others` with the peaks of `work` in frames `[from, to)` that `place`
/// keeps, sorted and without duplicates: a query holding an excerpt of a work
/// among other audio's peaks. `place` gets each such peak's position among
/// them and the peak moved to start at frame 0, and returns where the query
/// holds it (`None`: lost).
#[cfg(test)]
fn excerpt_among(
    mut others: Vec<PeakPoint>,
    work: &[PeakPoint],
    (from, to): (u32, u32),
    place: impl Fn(usize, PeakPoint) -> Option<PeakPoint>,
) -> Vec<PeakPoint> {
    others.extend(
        work.iter()
            .filter(|p| (from..to).contains(&p.t_frame))
            .enumerate()
            .filter_map(|(i, p)| {
                place(
                    i,
                    PeakPoint {
                        t_frame: p.t_frame - from,
                        ..*p
                    },
                )
            }),
    );
    others.sort_unstable();
    others.dedup();
    others
}

/// An index in a temporary directory holding one work with these prints and
/// peaks (tests of the matching stages).
#[cfg(test)]
fn one_work_index(
    id: &str,
    duration_s: f64,
    prints: &[crate::fingerprint::Print],
    peaks: &[crate::fingerprint::PeakPoint],
) -> (tempfile::TempDir, Index) {
    use crate::index::segment::SegmentWork;
    use crate::index::{IndexWriter, NewWork};

    let dir = tempfile::tempdir().expect("temp dir");
    let writer = IndexWriter::open(dir.path()).expect("writer");
    let work = SegmentWork {
        id: id.into(),
        duration_s,
        prints: prints.len() as u64,
    };
    writer
        .add_works(&[NewWork {
            work: &work,
            prints,
            peaks,
        }])
        .expect("add");
    let index = Index::open(dir.path()).expect("index");
    (dir, index)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(tq: (f64, f64), slope: f64, intercept: f64, from_peaks: bool) -> Segment {
        Segment {
            anchors: 0,
            hits: 0,
            tq_start: tq.0,
            tq_end: tq.1,
            slope,
            intercept,
            pitch_half_bins: 0.0,
            range_from_peaks: from_peaks,
            deep: from_peaks,
        }
    }

    fn work(n: u32) -> WorkRef {
        WorkRef {
            segment: 0,
            work: n,
        }
    }

    #[test]
    fn a_known_alignment_scores_the_work_only_where_it_lies() {
        let work_peaks = random_peaks(60, 24, 3);
        let (_dir, index) = one_work_index("known", 60.0, &[], &work_peaks);
        // 10 s of the work from 20 s on, placed 2 s into a 12 s query, pitched
        // up 3 half bins, among other audio's peaks.
        let (ref_start, query_start) = (20.0, 2.0);
        let from = (ref_start * FRAMES_PER_SECOND) as u32;
        let to = from + (10.0 * FRAMES_PER_SECOND) as u32;
        let shift = (query_start * FRAMES_PER_SECOND) as u32;
        let peaks = excerpt_among(random_peaks(12, 40, 11), &work_peaks, (from, to), |_, p| {
            (p.f_half_bins < 250).then_some(PeakPoint {
                t_frame: p.t_frame + shift,
                f_half_bins: p.f_half_bins + 3,
            })
        });
        let query = Fingerprint {
            prints: Vec::new(),
            peaks,
            brief_peaks: Vec::new(),
            frames: (12.0 * FRAMES_PER_SECOND) as usize,
        };
        let pitch_factor = 2f64.powf(3.0 / 2.0 / BINS_PER_OCTAVE as f64);
        let truth = KnownAlignment {
            query_start_s: query_start,
            query_end_s: query_start + 10.0,
            ref_start_s: ref_start,
            speed_factor: 1.0,
            pitch_factor,
        };
        let score = |alignment: &KnownAlignment| {
            score_alignment(&index, &query, "known", alignment).map(|e| e.score())
        };
        let at_truth = score(&truth).expect("work is in the index");
        assert!(at_truth > 30.0, "{at_truth}");
        let unpitched = score(&KnownAlignment {
            pitch_factor: 1.0,
            ..truth
        });
        let elsewhere = score(&KnownAlignment {
            ref_start_s: 35.0,
            ..truth
        });
        for wrong in [unpitched, elsewhere] {
            assert!(wrong.expect("scored") < 5.0, "{wrong:?}");
        }
        assert_eq!(score_alignment(&index, &query, "other", &truth), None);
        let nonsense = KnownAlignment {
            speed_factor: 0.0,
            ..truth
        };
        assert_eq!(score_alignment(&index, &query, "known", &nonsense), None);
    }

    #[test]
    fn same_alignment_needs_the_same_map_over_the_lines_stretch() {
        // A Hough line over one second of a 10 s query, slightly off speed 1.
        let line = segment((233.0, 341.0), 1.0006, 10617.6, false);
        let window = |intercept| segment((0.0, 1243.0), 1.0, intercept, true);
        assert!(line.same_alignment_as(&window(10617.0)));
        assert!(line.same_alignment_as(&window(10614.0)));
        assert!(!line.same_alignment_as(&window(10612.0)), "5 frames off");
        assert!(
            !line.same_alignment_as(&window(10617.0 + 125.0)),
            "a bar later"
        );
        // The same offset at another speed drifts apart over the stretch.
        assert!(!line.same_alignment_as(&segment((0.0, 1243.0), 1.05, 10605.0, true)));
        // Another pitch, or no overlap in the query, is another alignment.
        let pitched = Segment {
            pitch_half_bins: 6.0,
            ..window(10617.0)
        };
        assert!(!line.same_alignment_as(&pitched));
        assert!(!line.same_alignment_as(&segment((400.0, 1243.0), 1.0, 10617.0, true)));
    }

    #[test]
    fn a_line_confirms_the_stronger_window_of_its_own_alignment_only() {
        let line = segment((233.0, 341.0), 1.0006, 10617.6, false);
        let confirmed = segment((0.0, 1243.0), 1.0, 10617.0, true);
        let elsewhere = segment((0.0, 1243.0), 1.0, 9000.0, true);
        let verified = vec![
            (7.4, work(1), line.clone()),
            (20.0, work(1), elsewhere),
            (10.7, work(1), confirmed.clone()),
            // The same alignment in another work is no confirmation.
            (12.0, work(2), confirmed),
            (8.0, work(3), segment((0.0, 500.0), 1.0, 50.0, false)),
        ];
        let order: Vec<(f64, u32)> = acceptance_order(verified)
            .iter()
            .map(|(score, work, _)| (*score, work.work))
            .collect();
        // Hough-supported first (the confirmed window among them), strongest
        // first; then the peak-proposed alignments no line confirms.
        assert_eq!(order, [(10.7, 1), (8.0, 3), (7.4, 1), (20.0, 1), (12.0, 2)]);
    }
}

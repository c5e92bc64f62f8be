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
//! here: a hypothesis must clear the reporting threshold by
//! [`DEEP_SCORE_MARGIN`] (`MatcherConfig::deep_min_score`).
//!
//! Cost: about (query peaks) × (shortlisted reference peaks) × 5 / 188 counter
//! increments — a few milliseconds for a 10 s query against 33 works. Only
//! unscaled alignments are searched; sped-up or pitched copies keep enough
//! triplets for the hash stages.

use super::{
    FRAMES_PER_SECOND, Index, Segment, VERIFY_TOLERANCE_FRAMES, VERIFY_TOLERANCE_HALF_BINS, WorkRef,
};
use crate::fingerprint::PeakPoint;

/// Query frames correlated together (10 s); windows overlap by half.
const DEEP_WINDOW_FRAMES: u32 = (10.0 * FRAMES_PER_SECOND) as u32;
/// Best offsets of each window and work that are verified.
const DEEP_OFFSETS_PER_WINDOW: usize = 2;
/// Deep hypotheses must score this much above the reporting threshold
/// ([`super::DEFAULT_DEEP_MIN_SCORE`]).
pub const DEEP_SCORE_MARGIN: f64 = 3.0;
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
    votes: Vec<u16>,
    touched: Vec<u32>,
}

impl DeepSearch {
    /// Unscaled alignments of the shortlisted works proposed by peak
    /// correlation, one segment per (work, window, offset), strongest first.
    pub(super) fn hypotheses(
        &mut self,
        index: &Index,
        query_peaks: &[PeakPoint],
        query_frames: u32,
        works: &[WorkRef],
        min_score: f64,
    ) -> Vec<(u32, WorkRef, Segment)> {
        let mut found = Vec::new();
        if query_peaks.is_empty() || works.is_empty() {
            return found;
        }
        let query = PeaksByFrequency::new(query_peaks);
        let hop = DEEP_WINDOW_FRAMES / 2;
        let mut windows = Vec::new();
        let mut start = 0u32;
        loop {
            let end = (start + DEEP_WINDOW_FRAMES).min(query_frames.max(1));
            windows.push((start, end));
            if end >= query_frames {
                break;
            }
            start += hop;
        }
        // A hypothesis needs at least this many found peaks, and every found
        // peak is at least one vote.
        let min_votes = min_score.ceil().max(1.0) as u32;
        for &work in works {
            self.ref_peaks.clear();
            index.work_peaks(work, 0, u32::MAX, &mut self.ref_peaks);
            let Some(last_ref) = self.ref_peaks.iter().map(|p| p.t_frame).max() else {
                continue;
            };
            let reference = PeaksByFrequency::new(&self.ref_peaks);
            for &(w0, w1) in &windows {
                // votes[o] counts (query, reference) peak pairs with
                // t_ref − t_query = o − w1 (o ≥ 1 for every pair).
                let span = last_ref as usize + (w1 - w0) as usize + 1 + 2 * VOTE_PAD;
                if self.votes.len() < span {
                    self.votes.resize(span, 0);
                }
                self.touched.clear();
                for f in 0..HALF_BIN_VALUES as i32 {
                    let tqs = query.at_within(f, w0, w1);
                    if tqs.is_empty() {
                        continue;
                    }
                    for df in -VERIFY_TOLERANCE_HALF_BINS..=VERIFY_TOLERANCE_HALF_BINS {
                        let trs = reference.at(f + df);
                        for &tq in tqs {
                            let base = (w1 - tq) as usize + VOTE_PAD;
                            for &tr in trs {
                                let o = tr as usize + base;
                                if self.votes[o] == 0 {
                                    self.touched.push(o as u32);
                                }
                                self.votes[o] = self.votes[o].saturating_add(1);
                            }
                        }
                    }
                }
                let best = self.best_offsets(min_votes);
                for &o in &self.touched {
                    self.votes[o as usize] = 0;
                }
                for (votes, o) in best {
                    let intercept = o as f64 - f64::from(w1) - VOTE_PAD as f64;
                    found.push((
                        votes,
                        work,
                        Segment {
                            anchors: 0,
                            hits: 0,
                            tq_start: f64::from(w0),
                            tq_end: f64::from(w1),
                            slope: 1.0,
                            intercept,
                            pitch_half_bins: 0.0,
                            range_from_peaks: true,
                            deep: true,
                        },
                    ));
                }
            }
        }
        found.sort_by_key(|f| std::cmp::Reverse(f.0));
        found
    }

    /// The [`DEEP_OFFSETS_PER_WINDOW`] offsets with the most votes within the
    /// verification tolerance, at least `min_votes` and well apart.
    fn best_offsets(&self, min_votes: u32) -> Vec<(u32, usize)> {
        let tol = VERIFY_TOLERANCE_FRAMES as usize;
        let mut best: Vec<(u32, usize)> = Vec::with_capacity(DEEP_OFFSETS_PER_WINDOW + 1);
        for &o in &self.touched {
            let o = o as usize;
            let sum: u32 = self.votes[o - tol..=o + tol]
                .iter()
                .map(|&v| u32::from(v))
                .sum();
            if sum < min_votes {
                continue;
            }
            if let Some(near) = best
                .iter_mut()
                .find(|b| (b.1 as i64 - o as i64).abs() < DEEP_OFFSET_SEPARATION_FRAMES)
            {
                if (sum, std::cmp::Reverse(o)) > (near.0, std::cmp::Reverse(near.1)) {
                    *near = (sum, o);
                }
            } else {
                best.push((sum, o));
            }
            best.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            best.truncate(DEEP_OFFSETS_PER_WINDOW);
        }
        best
    }
}

/// Empty bins on both ends of the vote array, so the tolerance window of any
/// offset stays inside it.
const VOTE_PAD: usize = VERIFY_TOLERANCE_FRAMES as usize;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fingerprint::{Fingerprint, Print};
    use crate::index::segment::SegmentWork;
    use crate::index::{IndexWriter, NewWork};
    use crate::matcher::{MatcherConfig, find_matches};

    /// Pseudo-random peaks: `per_second` a second for `seconds`.
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

    /// Prints that give the work two raw hits in any query carrying them, at
    /// inconsistent offsets (so the hash stages propose nothing).
    fn chance_prints() -> Vec<Print> {
        [(100, 40), (900, 80)]
            .into_iter()
            .enumerate()
            .map(|(i, (t_frame, f))| Print {
                hash: 1000 + i as u32,
                t_frame,
                f_half_bins: f,
            })
            .collect()
    }

    #[test]
    fn finds_a_work_whose_peaks_survive_without_hashes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let writer = IndexWriter::open(dir.path()).expect("writer");
        let work_peaks = random_peaks(120, 24, 7);
        let work = SegmentWork {
            id: "masked".into(),
            duration_s: 120.0,
            prints: 2,
        };
        let prints = chance_prints();
        writer
            .add_works(&[NewWork {
                work: &work,
                prints: &prints,
                peaks: &work_peaks,
            }])
            .expect("add");
        let index = Index::open(dir.path()).expect("index");

        // A 10 s query: a third of the work's peaks from 60 s on, one frame
        // of jitter, buried among three times as many peaks of other audio.
        let offset = (60.0 * FRAMES_PER_SECOND) as u32;
        let query_frames = (10.0 * FRAMES_PER_SECOND) as u32;
        let mut peaks = random_peaks(10, 60, 99);
        peaks.extend(
            work_peaks
                .iter()
                .filter(|p| p.t_frame >= offset && p.t_frame < offset + query_frames)
                .enumerate()
                .filter(|(i, _)| i % 3 == 0)
                .map(|(i, p)| PeakPoint {
                    t_frame: p.t_frame - offset + (i % 2) as u32,
                    f_half_bins: p.f_half_bins,
                }),
        );
        peaks.sort_unstable();
        peaks.dedup();
        let query_prints: Vec<Print> = chance_prints()
            .into_iter()
            .zip([500, 20])
            .map(|(p, t_frame)| Print { t_frame, ..p })
            .collect();
        let query = Fingerprint {
            prints: query_prints.clone(),
            peaks,
            frames: query_frames as usize,
        };
        let shallow = MatcherConfig {
            deep_search_works: 0,
            ..MatcherConfig::default()
        };
        assert!(find_matches(&index, &query, &shallow).is_empty());
        let found = find_matches(&index, &query, &MatcherConfig::default());
        assert_eq!(found.len(), 1, "{found:?}");
        let m = &found[0];
        assert_eq!(m.work_id, "masked");
        assert!(m.confident);
        assert!(
            (m.ref_start_s - m.query_start_s - 60.0).abs() < 0.05,
            "{m:?}"
        );

        // Unrelated audio with the same chance hash hits: nothing.
        let unrelated = Fingerprint {
            prints: query_prints,
            peaks: random_peaks(10, 80, 5),
            frames: query_frames as usize,
        };
        assert!(find_matches(&index, &unrelated, &MatcherConfig::default()).is_empty());
    }

    #[test]
    fn peaks_by_frequency_groups_and_sorts() {
        let peaks = [
            PeakPoint {
                t_frame: 9,
                f_half_bins: 3,
            },
            PeakPoint {
                t_frame: 2,
                f_half_bins: 3,
            },
            PeakPoint {
                t_frame: 5,
                f_half_bins: 200,
            },
        ];
        let by_f = PeaksByFrequency::new(&peaks);
        assert_eq!(by_f.at(3), &[2, 9]);
        assert_eq!(by_f.at(200), &[5]);
        assert!(by_f.at(4).is_empty());
        assert!(by_f.at(-1).is_empty());
        assert!(by_f.at(300).is_empty());
        assert_eq!(by_f.at_within(3, 3, 10), &[9]);
    }
}

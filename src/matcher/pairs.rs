//! Hypotheses from a few hits agreeing on an unscaled alignment (step 5 of the
//! module docs).

use super::Segment;
use super::hits::Candidate;
use super::hough::{INLIER_TOLERANCE_FRAMES, pitch_shift};
use crate::fingerprint::FRAMES_PER_SECOND;
use crate::index::WorkRef;

/// Hits of one work agreeing on an unscaled alignment that make a hypothesis.
pub(super) const PAIR_CLUSTER_HITS: usize = 2;
/// Largest offset spread (frames) and pitch-shift spread (half bins) in a cluster.
const PAIR_OFFSET_TOLERANCE_FRAMES: i64 = 3;
const PAIR_PITCH_TOLERANCE_HALF_BINS: i32 = 2;
/// Hits of a cluster must come from anchors at least this far apart (frames):
/// one anchor's probes and partners are not independent evidence.
const PAIR_MIN_ANCHOR_GAP_FRAMES: u32 = 4;
/// Query frames verified on each side of a cluster's hits.
const PAIR_CONTEXT_FRAMES: f64 = 5.0 * FRAMES_PER_SECOND;
/// Hypotheses verified per query at most (largest clusters first).
pub(super) const MAX_PAIR_HYPOTHESES: usize = 48;

/// Alignments at speed 1 supported by a few hits (≥ [`PAIR_CLUSTER_HITS`]) that
/// the Hough stage did not already propose, largest clusters first.
pub(super) fn pair_hypotheses(
    candidates: &[Candidate<'_>],
    verified: &[(f64, WorkRef, Segment)],
    query_frames: f64,
) -> Vec<(WorkRef, Segment)> {
    let mut found: Vec<(usize, WorkRef, Segment)> = Vec::new();
    let mut offsets: Vec<(i64, i32, u32)> = Vec::new();
    let mut anchors: Vec<u32> = Vec::new();
    // Speed-1 hypotheses come from unwarped prints only.
    for Candidate {
        work: work_ref,
        hits,
        ..
    } in candidates.iter().filter(|c| c.warp == 0)
    {
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

//! Hash lookup: the query's prints gathered into hits per work (step 1 of the
//! module docs).

use super::Hit;
use super::hough::SpeedRange;
use super::pairs::PAIR_CLUSTER_HITS;
use crate::fingerprint::{HASH_BITS, Print, QUERY_WARPS};
use crate::index::{Index, WorkRef};
use crate::spectrogram::BINS_PER_OCTAVE;

/// Largest pitch shift considered for unwarped prints (half log bins: 12 = 3
/// semitones), which also covers speed changes of ±15 %.
const MAX_PITCH_SHIFT_HALF_BINS: i32 = 12;
/// Pitch tolerance beyond a warp's expected pitch shifts (half log bins).
const WARP_PITCH_TOLERANCE_HALF_BINS: f32 = 3.0;

/// Hit groups per work: unwarped prints, then one per query warp.
pub(super) const WARP_GROUPS: usize = 1 + QUERY_WARPS.len();

/// The pitch shifts `f_query − f_ref` (half log bins) a hit of prints of warp
/// `tag` may have. A warp covers tempo changes (pitch kept) through speed
/// changes (pitch moving with the speed) across its speed range.
fn pitch_window(tag: u8) -> (i32, i32) {
    if tag == 0 {
        return (-MAX_PITCH_SHIFT_HALF_BINS, MAX_PITCH_SHIFT_HALF_BINS);
    }
    let range = SpeedRange::of_warp(tag);
    let far_speed = if range.max > 1.0 {
        range.max
    } else {
        range.min
    };
    let far_pitch = (2 * BINS_PER_OCTAVE) as f32 * (far_speed as f32).log2();
    let lo = far_pitch.min(0.0) - WARP_PITCH_TOLERANCE_HALF_BINS;
    let hi = far_pitch.max(0.0) + WARP_PITCH_TOLERANCE_HALF_BINS;
    (lo.floor() as i32, hi.ceil() as i32)
}
/// Stop hashes: a query hash whose posting list is longer than this many times
/// the index's mean list length (over the whole hash space), and longer than
/// [`MIN_STOP_POSTINGS`], is skipped. Music makes some triplet shapes (octaves,
/// fifths, even rhythms) far more common than others: on the evaluation index the
/// hashes with more than 32 postings are 15 % of a query's lookups but bring 70 %
/// of its chance hits, and every chance hit costs time in the Hough transform.
pub(super) const STOP_HASH_MEAN_MULTIPLE: f64 = 8.0;
const MIN_STOP_POSTINGS: usize = 32;

/// Longest posting list a query hash may have in `index` to be used.
fn stop_hash_postings(index: &Index) -> usize {
    let mean = index.posting_count() as f64 / f64::from(1u32 << HASH_BITS);
    ((STOP_HASH_MEAN_MULTIPLE * mean).ceil() as usize).max(MIN_STOP_POSTINGS)
}

/// Hash hits of the query's prints, grouped by work.
pub(super) struct WorkHits {
    /// Every kept hit, group after group; each group's run sorted and deduplicated.
    hits: Vec<Hit>,
    /// Per (work, warp) group with at least [`PAIR_CLUSTER_HITS`] distinct
    /// hits: its run in `hits`.
    runs: Vec<(WorkRef, u8, std::ops::Range<usize>)>,
}

/// The hits of one work from the prints of one query warp.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Candidate<'a> {
    pub work: WorkRef,
    /// Warp tag of the prints (0: unwarped).
    pub warp: u8,
    pub hits: &'a [Hit],
}

impl WorkHits {
    pub(super) fn candidates(&self) -> Vec<Candidate<'_>> {
        self.runs
            .iter()
            .map(|(work, warp, run)| Candidate {
                work: *work,
                warp: *warp,
                hits: &self.hits[run.clone()],
            })
            .collect()
    }
}

/// Bits of the hash sorted per pass of [`sorted_by_hash`].
const RADIX_BITS: u32 = 11;

/// The prints sorted by hash (stable): a least-significant-digit radix sort,
/// two counting passes for [`HASH_BITS`]-bit hashes. A query has about 420
/// prints per second, nearly all of distinct hashes, and a comparison sort of
/// them was a third of the matcher's time on a one-minute query.
fn sorted_by_hash(prints: &[Print]) -> Vec<Print> {
    let mut sorted = prints.to_vec();
    let mut spare = prints.to_vec();
    let max_hash = prints.iter().map(|p| p.hash).max().unwrap_or(0);
    let mut counts = vec![0usize; 1 << RADIX_BITS];
    let mut shift = 0;
    while shift < u32::BITS && (max_hash >> shift) != 0 {
        let digit = |p: &Print| ((p.hash >> shift) & ((1 << RADIX_BITS) - 1)) as usize;
        counts.fill(0);
        for p in &sorted {
            counts[digit(p)] += 1;
        }
        let mut start = 0;
        for count in &mut counts {
            let n = *count;
            *count = start;
            start += n;
        }
        for p in &sorted {
            let slot = &mut counts[digit(p)];
            spare[*slot] = *p;
            *slot += 1;
        }
        std::mem::swap(&mut sorted, &mut spare);
        shift += RADIX_BITS;
    }
    sorted
}

/// Hash lookups of a query whose prints come in batches: a file's prints can
/// be looked up block by block while the rest of it is still decoding, so
/// little of the lookup is left once the last block is fingerprinted.
/// Gathering in batches gives exactly the hits of one lookup of all the prints.
///
/// Hits are gathered into one flat list and grouped by dense work slot with a
/// counting sort into one buffer at the end: a large catalog gives a few chance
/// hits to very many works, and hashing each hit into a per-work vector was the
/// lookup's main cost.
pub struct HitGatherer<'a> {
    index: &'a Index,
    /// Longest posting list a hash may have to be used (stop hashes).
    max_postings: usize,
    /// Hits per group (`slot · WARP_GROUPS + warp`).
    hits_per_slot: Vec<u32>,
    /// Pitch window of each warp's hits.
    pitch_windows: [(i32, i32); WARP_GROUPS],
    flat: Vec<(u32, Hit)>,
    postings: Vec<(usize, crate::index::segment::Posting)>,
}

impl<'a> HitGatherer<'a> {
    pub fn new(index: &'a Index) -> Self {
        Self {
            index,
            max_postings: stop_hash_postings(index),
            hits_per_slot: vec![0; index.work_slot_count() * WARP_GROUPS],
            pitch_windows: std::array::from_fn(|tag| pitch_window(tag as u8)),
            flat: Vec::new(),
            postings: Vec::new(),
        }
    }

    /// Looks up a batch of the query's prints.
    pub fn add(&mut self, prints: &[Print]) {
        let index = self.index;
        let max_postings = self.max_postings;
        // Grouped by hash (each distinct hash of the batch is looked up once,
        // in index order). A print repeated in the query gives repeated hits,
        // which the runs' deduplication in `finish` removes.
        let sorted = sorted_by_hash(prints);
        let postings = &mut self.postings;
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
                let warp = usize::from(q.warp);
                let Some(&(pitch_lo, pitch_hi)) = self.pitch_windows.get(warp) else {
                    continue;
                };
                for &(slot, p) in postings.iter() {
                    let pitch = i32::from(q.f_half_bins) - i32::from(p.f_half_bins);
                    if pitch < pitch_lo || pitch > pitch_hi {
                        continue;
                    }
                    let group = slot * WARP_GROUPS + warp;
                    let Some(count) = self.hits_per_slot.get_mut(group) else {
                        continue;
                    };
                    *count += 1;
                    self.flat.push((
                        group as u32,
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
    }

    /// The hits grouped by work.
    pub(super) fn finish(self) -> WorkHits {
        let Self {
            index,
            mut hits_per_slot,
            flat,
            ..
        } = self;
        // Works with enough hits get a run; `hits_per_slot` becomes the next free
        // position of the slot's run plus one (0: the slot's hits are dropped).
        let mut runs: Vec<(WorkRef, u8, std::ops::Range<usize>)> = Vec::new();
        let mut next = 0usize;
        for (group, count) in hits_per_slot.iter_mut().enumerate() {
            let n = *count as usize;
            let warp = (group % WARP_GROUPS) as u8;
            match index.work_ref_of_slot(group / WARP_GROUPS) {
                Some(r) if n >= PAIR_CLUSTER_HITS => {
                    runs.push((r, warp, next..next + n));
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
        for (_, _, run) in &mut runs {
            let group = &mut hits[run.clone()];
            group.sort_unstable();
            let mut kept = 0;
            for k in 0..group.len() {
                if kept == 0
                    || (group[k].tq, group[k].tr) != (group[kept - 1].tq, group[kept - 1].tr)
                {
                    group[kept] = group[k];
                    kept += 1;
                }
            }
            hits.copy_within(run.start..run.start + kept, write);
            *run = write..write + kept;
            write += kept;
        }
        hits.truncate(write);
        runs.retain(|(_, _, run)| run.len() >= PAIR_CLUSTER_HITS);
        WorkHits { hits, runs }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fingerprint::{Side, fingerprint_samples, tests::melody};
    use crate::matcher::one_work_index;

    #[test]
    fn gathering_in_batches_gives_the_hits_of_one_lookup() {
        let reference = fingerprint_samples(&melody(60.0, 11), Side::Reference);
        let (_dir, index) = one_work_index("melody", 60.0, &reference.prints, &reference.peaks);
        // The query: the same melody (every print hits) with its prints
        // repeated, so runs of one hash straddle the batch boundaries.
        let mut query = fingerprint_samples(&melody(30.0, 11), Side::Query).prints;
        let repeated: Vec<Print> = query.iter().step_by(3).copied().collect();
        query.extend(repeated);
        let whole = {
            let mut gatherer = HitGatherer::new(&index);
            gatherer.add(&query);
            gatherer.finish()
        };
        let whole_hits = whole.candidates();
        let unwarped: Vec<_> = whole_hits.iter().filter(|c| c.warp == 0).collect();
        assert_eq!(unwarped.len(), 1, "the one work is a candidate");
        assert!(
            unwarped[0].hits.len() > 100,
            "{} hits",
            unwarped[0].hits.len()
        );
        for batch in [1, 7, 500, query.len() - 1] {
            let mut gatherer = HitGatherer::new(&index);
            gatherer.add(&[]);
            for chunk in query.chunks(batch) {
                gatherer.add(chunk);
            }
            assert_eq!(
                gatherer.finish().candidates(),
                whole_hits,
                "batches of {batch}"
            );
        }
    }

    #[test]
    fn radix_sort_orders_prints_by_hash_stably() {
        let mut state = 0x9e37_79b9_u64;
        let prints: Vec<Print> = (0..5_000u32)
            .map(|i| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1);
                // Mostly index-sized hashes, a few full-width ones.
                let bits = if i % 97 == 0 { 32 } else { HASH_BITS };
                Print {
                    hash: ((state >> 20) as u32) >> (32 - bits),
                    t_frame: i,
                    f_half_bins: (i % 256) as u8,
                    warp: 0,
                }
            })
            .collect();
        let mut expected = prints.clone();
        expected.sort_by_key(|p| p.hash);
        assert_eq!(sorted_by_hash(&prints), expected);
        assert!(sorted_by_hash(&[]).is_empty());
    }
}

//! Hash lookup: the query's prints gathered into hits per work (step 1 of the
//! module docs).

use super::Hit;
use super::pairs::PAIR_CLUSTER_HITS;
use crate::fingerprint::{HASH_BITS, Print};
use crate::index::{Index, WorkRef};

/// Largest pitch shift considered (half log bins: 12 = 3 semitones), which also
/// covers speed changes of ±15 %.
const MAX_PITCH_SHIFT_HALF_BINS: i32 = 12;
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
    /// Every kept hit, work after work; each work's run sorted and deduplicated.
    hits: Vec<Hit>,
    /// Per work with at least [`PAIR_CLUSTER_HITS`] distinct hits: its run in `hits`.
    runs: Vec<(WorkRef, std::ops::Range<usize>)>,
}

impl WorkHits {
    pub(super) fn candidates(&self) -> Vec<(WorkRef, &[Hit])> {
        self.runs
            .iter()
            .map(|(r, run)| (*r, &self.hits[run.clone()]))
            .collect()
    }
}

/// A print as one integer ordered like `(hash, t_frame, f_half_bins)`.
fn print_key(p: &Print) -> u128 {
    (u128::from(p.hash) << 40) | (u128::from(p.t_frame) << 8) | u128::from(p.f_half_bins)
}

/// Inverse of [`print_key`].
fn print_of_key(key: u128) -> Print {
    Print {
        hash: (key >> 40) as u32,
        t_frame: (key >> 8) as u32,
        f_half_bins: key as u8,
    }
}

/// Looks up the query's prints and groups the hits by work.
///
/// Hits are gathered into one flat list and grouped by dense work slot with a
/// counting sort into one buffer: a large catalog gives a few chance hits to
/// very many works, and hashing each hit into a per-work vector was the
/// lookup's main cost.
pub(super) fn gather_hits(index: &Index, prints: &[Print]) -> WorkHits {
    let max_postings = stop_hash_postings(index);
    // Sorted by (hash, frame, frequency) as packed keys: comparing integers
    // instead of following references to compare tuples was most of the
    // sort's time. A key holds the whole print (the hash is below 2^32).
    let mut sorted: Vec<u128> = prints.iter().map(print_key).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let sorted: Vec<Print> = sorted.into_iter().map(print_of_key).collect();
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

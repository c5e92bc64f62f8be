//! Synthetic catalog padding for scale experiments (benchmarks, `earmark eval
//! --catalog-hours`): replicas of real works whose hashes are scrambled by a
//! per-replica bijection, so an index carries the posting-list load of a
//! catalog of *different* recordings without the audio of one.
//!
//! Identical copies would all collapse onto the same hashes; a scrambled
//! replica keeps the real print timing and density but lands on unrelated
//! posting lists. Replica 0 is the work itself.
//!
//! A replica's stored peaks ([`replica_peaks`]) are the work's own rotated in
//! frequency by about half their span: the peak-level stages (verification,
//! deep search) see music of the same density that no query of the original
//! work matches at any pitch the matcher searches.

use crate::fingerprint::{HASH_BITS, PeakPoint, Print};

/// A per-replica bijection of the hash space (odd multiplier plus offset). An
/// XOR mask would not do: a mask equal to the difference between a hash and
/// one of its multi-probe neighbours makes the replica a near-copy of the real
/// work, found at the true alignment.
pub fn scramble_hash(hash: u32, replica: u64) -> u32 {
    if replica == 0 {
        return hash;
    }
    let mixed = replica
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .rotate_left(17)
        .wrapping_add(replica);
    let multiplier = (mixed as u32) | 1;
    let offset = (mixed >> 32) as u32;
    hash.wrapping_mul(multiplier).wrapping_add(offset) & ((1 << HASH_BITS) - 1)
}

/// The prints of replica `replica` of a work: same timing, scrambled hashes.
pub fn replica_prints(prints: &[Print], replica: u64) -> Vec<Print> {
    prints
        .iter()
        .map(|p| Print {
            hash: scramble_hash(p.hash, replica),
            ..*p
        })
        .collect()
}

/// The stored peaks of replica `replica` of a work: the same frames, each
/// frequency rotated within the work's own range by half of it (plus a
/// replica-dependent step).
pub fn replica_peaks(peaks: &[PeakPoint], replica: u64) -> Vec<PeakPoint> {
    let (Some(lo), Some(hi)) = (
        peaks.iter().map(|p| p.f_half_bins).min(),
        peaks.iter().map(|p| p.f_half_bins).max(),
    ) else {
        return Vec::new();
    };
    if replica == 0 {
        return peaks.to_vec();
    }
    let span = u64::from(hi - lo) + 1;
    let shift = span / 2 + replica % 7;
    peaks
        .iter()
        .map(|p| PeakPoint {
            f_half_bins: lo + ((u64::from(p.f_half_bins - lo) + shift) % span) as u8,
            ..*p
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_peaks_keep_frames_and_range_but_move_every_frequency_far() {
        let peaks: Vec<PeakPoint> = (0..100u32)
            .map(|i| PeakPoint {
                t_frame: i * 3,
                f_half_bins: 20 + (i * 37 % 150) as u8,
            })
            .collect();
        assert_eq!(replica_peaks(&peaks, 0), peaks);
        for replica in [1u64, 5, 9] {
            let moved = replica_peaks(&peaks, replica);
            assert_eq!(moved.len(), peaks.len());
            for (m, p) in moved.iter().zip(&peaks) {
                assert_eq!(m.t_frame, p.t_frame);
                assert!((20..170).contains(&m.f_half_bins));
                let d = (i32::from(m.f_half_bins) - i32::from(p.f_half_bins)).abs();
                assert!(d >= 40, "peak moved only {d} half bins");
            }
        }
        assert!(replica_peaks(&[], 3).is_empty());
    }

    #[test]
    fn replica_zero_is_the_work_and_others_are_bijections() {
        assert_eq!(scramble_hash(12_345, 0), 12_345);
        let size = 1usize << HASH_BITS;
        for replica in [1u64, 2, 77] {
            let mut seen = vec![false; size];
            for hash in 0..size as u32 {
                let s = scramble_hash(hash, replica) as usize;
                assert!(s < size);
                assert!(!seen[s], "replica {replica} maps two hashes to {s}");
                seen[s] = true;
            }
        }
    }

    #[test]
    fn replicas_differ_from_each_other_and_keep_timing() {
        let prints: Vec<Print> = (0..64)
            .map(|i| Print {
                hash: i * 977,
                t_frame: i,
                f_half_bins: (i % 200) as u8,
                warp: 0,
            })
            .collect();
        let a = replica_prints(&prints, 1);
        let b = replica_prints(&prints, 2);
        let same = a.iter().zip(&b).filter(|(x, y)| x.hash == y.hash).count();
        assert!(same < 4, "{same} of 64 hashes equal across replicas");
        assert!(
            a.iter()
                .zip(&prints)
                .all(|(x, p)| x.t_frame == p.t_frame && x.f_half_bins == p.f_half_bins)
        );
    }
}

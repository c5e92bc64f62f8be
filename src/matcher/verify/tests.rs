use super::*;
use crate::matcher::{DEFAULT_CONFIDENT_SCORE, DEFAULT_MIN_SCORE};

/// An unscaled alignment of query frames `tq_start..tq_end` onto
/// reference frames `intercept` later.
fn unscaled(tq_start: f64, tq_end: f64, intercept: f64) -> Segment {
    Segment {
        anchors: 0,
        hits: 0,
        tq_start,
        tq_end,
        slope: 1.0,
        intercept,
        pitch_half_bins: 0.0,
        range_from_peaks: false,
        deep: false,
    }
}

/// Full evidence (no early exit) of `segment` of the only work of `index`.
fn evidence_of(index: &Index, segment: &Segment, query_peaks: &[PeakPoint]) -> PeakEvidence {
    let work_ref = index.work_ref_of_slot(0).expect("work");
    let consumed = vec![false; query_peaks.len()];
    let mut scratch = VerifyScratch::default();
    PeakCheck::new(query_peaks, &consumed, &mut scratch).verify(
        index,
        work_ref,
        segment,
        f64::NEG_INFINITY,
        None,
    )
}

#[test]
fn nearest_shift_is_the_smallest_chance_shift() {
    let smallest = CHANCE_SHIFTS_FRAMES.iter().map(|s| s.abs()).min();
    assert_eq!(smallest, Some(NEAREST_SHIFT_FRAMES));
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

/// A query with a peak everywhere finds every reference peak at any
/// alignment: that is chance, not evidence, also where some chance shifts
/// fall beyond the end of a short reference.
#[test]
fn a_query_full_of_peaks_proves_nothing_against_a_short_reference() {
    let ref_frames = (2.0 * FRAMES_PER_SECOND) as u32;
    let ref_peaks: Vec<PeakPoint> = (0..ref_frames)
        .step_by(5)
        .map(|t_frame| PeakPoint {
            t_frame,
            f_half_bins: (40 + t_frame % 97) as u8,
        })
        .collect();
    let (_dir, index) = crate::matcher::one_work_index("short", 2.0, &[], &ref_peaks);
    // Long enough for the reference's peaks under every shift.
    let query_frames = 4 * ref_frames;
    let query_peaks: Vec<PeakPoint> = (0..query_frames)
        .flat_map(|t_frame| {
            (0..64u8).map(move |k| PeakPoint {
                t_frame,
                f_half_bins: 4 * k,
            })
        })
        .collect();
    let segment = unscaled(0.0, f64::from(ref_frames), 0.0);
    // The checked window runs 1 s past the reference's end: some shifts
    // move it wholly beyond the reference.
    let window_frames = i64::from(ref_frames) + (VERIFY_MARGIN_S * FRAMES_PER_SECOND) as i64;
    let beyond = CHANCE_SHIFTS_FRAMES
        .iter()
        .filter(|&&s| s >= i64::from(ref_frames) || s + window_frames <= 0)
        .count();
    assert!(beyond > 0);
    let evidence = evidence_of(&index, &segment, &query_peaks);
    assert_eq!(evidence.checked as usize, ref_peaks.len());
    assert_eq!(evidence.found, evidence.checked);
    assert!(
        (evidence.chance - f64::from(evidence.checked)).abs() < 1e-9,
        "{evidence:?}"
    );
    assert!(evidence.score() < DEFAULT_MIN_SCORE, "{evidence:?}");
}

/// A reference stretch whose peaks all sit on one frequency finds a query
/// holding a sustained partial there at any alignment. Moving the
/// reference lands on its other stretches, which look elsewhere, so only
/// moving the query shows that this is chance.
#[test]
fn a_reference_stretch_that_lands_on_anything_proves_nothing() {
    const LINE_HALF_BINS: u8 = 100;
    let stretch = 975..1_275u32;
    let ref_peaks: Vec<PeakPoint> = (0..3_000u32)
        .step_by(5)
        .map(|t_frame| PeakPoint {
            t_frame,
            f_half_bins: if stretch.contains(&t_frame) {
                LINE_HALF_BINS
            } else {
                (20 + (t_frame * 37) % 160) as u8
            },
        })
        .collect();
    let (_dir, index) = crate::matcher::one_work_index("line", 24.0, &[], &ref_peaks);
    // A 10 s query with a peak on the line in every frame and nothing else.
    let query_frames = 1_250u32;
    let query_peaks: Vec<PeakPoint> = (0..query_frames)
        .map(|t_frame| PeakPoint {
            t_frame,
            f_half_bins: LINE_HALF_BINS,
        })
        .collect();
    // Query frame 300 on reference frame 1 100: the stretch is the
    // verified window, query frames 175..475 (the segment ± 1 s).
    let segment = unscaled(300.0, 350.0, 800.0);
    let evidence = evidence_of(&index, &segment, &query_peaks);
    assert_eq!(evidence.checked, 60, "{evidence:?}");
    assert_eq!(evidence.found, evidence.checked, "{evidence:?}");
    assert!(
        evidence.score() < DEFAULT_MIN_SCORE,
        "chance alignment scored {evidence:?}"
    );
}

/// Long alignments measure chance on a sample of their peaks: a copy of
/// the reference still scores far above chance, unrelated peaks do not.
#[test]
fn long_alignments_sample_chance_without_bias() {
    let scatter = |count: u32, frames: u32, seed: u32| -> Vec<PeakPoint> {
        let mut peaks: Vec<PeakPoint> = (0..count)
            .map(|i| {
                // SplitMix64 of (seed, i): independent streams per seed.
                let mut x =
                    (u64::from(seed) << 32 | u64::from(i)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                x ^= x >> 31;
                PeakPoint {
                    t_frame: (x % u64::from(frames)) as u32,
                    f_half_bins: (20 + (x >> 40) % 160) as u8,
                }
            })
            .collect();
        peaks.sort_unstable();
        peaks
    };
    let frames = 20_000u32;
    let ref_peaks = scatter(5_000, frames, 1);
    let (_dir, index) = crate::matcher::one_work_index("long", 160.0, &[], &ref_peaks);
    let segment = unscaled(0.0, f64::from(frames), 0.0);
    let copy = evidence_of(&index, &segment, &ref_peaks);
    assert!(copy.checked as usize > 4 * CHANCE_SAMPLE_PEAKS, "{copy:?}");
    assert_eq!(copy.found, copy.checked);
    // Chance near the rate of 5 000 scattered peaks in 20 000 × 160 cells
    // under a ±2 × ±2 tolerance (≈ 0.03), not 0 and not all.
    let rate = copy.chance / f64::from(copy.checked);
    assert!(rate > 0.01 && rate < 0.1, "{copy:?}");
    assert!(copy.score() > 100.0, "{copy:?}");
    let unrelated = evidence_of(&index, &segment, &scatter(9_600, frames, 7));
    assert!(unrelated.score() < DEFAULT_MIN_SCORE, "{unrelated:?}");
    assert!(unrelated.score() > -DEFAULT_MIN_SCORE, "{unrelated:?}");
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
fn fast_rounding_is_exactly_round() {
    let mut values = vec![
        0.0,
        -0.0,
        0.5,
        -0.5,
        1.5,
        -1.5,
        2.5,
        0.499_999_999_999_999_94,
        -0.499_999_999_999_999_94,
        4_503_599_627_370_495.5,
        -4_503_599_627_370_495.5,
        9_007_199_254_740_993.0,
        1e19,
        -1e19,
        f64::MAX,
        f64::MIN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
        f64::MIN_POSITIVE,
    ];
    // A spread of ordinary frame positions, halves and near-halves included.
    let mut x = -10_000.0f64;
    while x < 10_000.0 {
        values.extend([x, x + 0.5, x + 0.5 - 1e-9, x + 0.5 + 1e-9]);
        x += 37.25;
    }
    for v in values {
        assert_eq!(round_to_i64(v), v.round() as i64, "{v}");
    }
}

/// Pseudo-random peaks over `frames` frames, sorted, distinct.
fn scattered_peaks(count: usize, frames: u64, seed: u64) -> Vec<PeakPoint> {
    let mut state = seed | 1;
    let mut next = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let mut peaks: Vec<PeakPoint> = (0..count)
        .map(|_| PeakPoint {
            t_frame: next(frames) as u32,
            f_half_bins: (20 + next(200)) as u8,
        })
        .collect();
    peaks.sort_unstable();
    peaks.dedup();
    peaks
}

/// Verifying both peak sets in one pass gives each set the evidence a
/// verification of it alone gives, early exits included: for true and
/// wrong alignments, scaled and pitched ones, sets of different lengths,
/// with and without a whole-query grid.
#[test]
fn both_sets_at_once_match_each_set_alone() {
    let ref_peaks = scattered_peaks(2_400, 12_000, 11);
    let (_dir, index) = crate::matcher::one_work_index("work", 96.0, &[], &ref_peaks);
    let work_ref = index.work_ref_of_slot(0).expect("work");
    // A 20 s query holding the work from frame 3 000 on among other
    // peaks; its brief set is denser and ends earlier.
    let shifted: Vec<PeakPoint> = ref_peaks
        .iter()
        .filter(|p| (3_000..5_500).contains(&p.t_frame))
        .map(|p| PeakPoint {
            t_frame: p.t_frame - 3_000,
            ..*p
        })
        .collect();
    let mut usual = scattered_peaks(1_000, 2_500, 5);
    usual.extend(shifted.iter().step_by(2));
    usual.sort_unstable();
    usual.dedup();
    let mut brief = scattered_peaks(2_000, 2_300, 9);
    brief.extend(shifted.iter().filter(|p| p.t_frame < 2_300));
    brief.sort_unstable();
    brief.dedup();
    // Beyond the whole-query grid's reach: the stretch grids serve.
    let mut long_brief = brief.clone();
    long_brief.push(PeakPoint {
        t_frame: WHOLE_QUERY_GRID_MAX_FRAMES as u32 + 5,
        f_half_bins: 60,
    });
    let segments = [
        unscaled(0.0, 1_250.0, 3_000.0),
        unscaled(1_000.0, 2_400.0, 3_000.0),
        unscaled(0.0, 2_500.0, 4_321.0),
        Segment {
            slope: 1.04,
            pitch_half_bins: 2.0,
            ..unscaled(200.0, 1_500.0, 2_950.0)
        },
    ];
    for sets in [[&usual, &brief], [&usual, &long_brief]] {
        let grids: Vec<QueryGrid> = sets.iter().map(|set| QueryGrid::new(set)).collect();
        assert_eq!(grids[1].grid.is_some(), sets[1].len() == brief.len());
        for segment in &segments {
            for threshold in [f64::NEG_INFINITY, 3.0, 8.0, 40.0] {
                let mut scratch = VerifyScratch::default();
                let together = PeakCheck::with_grids(&grids, &mut scratch)
                    .verify_sets(&index, work_ref, segment, threshold, None);
                for (s, set) in sets.iter().enumerate() {
                    let consumed = vec![false; set.len()];
                    let alone = PeakCheck::new(set, &consumed, &mut scratch)
                        .verify(&index, work_ref, segment, threshold, None);
                    assert_eq!(together[s], alone, "set {s} {segment:?} {threshold}");
                }
                let best = together
                    .iter()
                    .map(PeakEvidence::score)
                    .fold(f64::MIN, f64::max);
                let score = PeakCheck::with_grids(&grids, &mut scratch)
                    .best_score(&index, work_ref, segment, threshold);
                assert_eq!(score, best);
            }
        }
        // The true alignment is found in both sets.
        let mut scratch = VerifyScratch::default();
        let true_evidence = PeakCheck::with_grids(&grids, &mut scratch).verify_sets(
            &index,
            work_ref,
            &segments[0],
            f64::NEG_INFINITY,
            None,
        );
        assert!(
            true_evidence.iter().all(|e| e.score() > 20.0),
            "{true_evidence:?}"
        );
    }
}

#[test]
fn near_grid_agrees_with_the_peak_walk() {
    // Pseudo-random query peaks (sorted by frame), some consumed.
    let mut state = 0x2545_f491_u64;
    let mut next = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let mut peaks: Vec<PeakPoint> = (0..600)
        .map(|_| PeakPoint {
            t_frame: next(2_000) as u32,
            f_half_bins: next(256) as u8,
        })
        .collect();
    peaks.sort_by_key(|p| p.t_frame);
    let consumed: Vec<bool> = (0..peaks.len()).map(|_| next(4) == 0).collect();
    let mut grid = NearGrid::default();
    grid.build(&peaks, &consumed, 300, 1_700);
    for t in 250..1_750 {
        for f in -40..300 {
            let walked = peak_near(&peaks, &consumed, t, f).is_some();
            match grid.near(t, f) {
                Some(near) => assert_eq!(near, walked, "t {t} f {f}"),
                None => assert!(!(300..=1_700).contains(&t), "t {t} is in the grid"),
            }
        }
    }
}

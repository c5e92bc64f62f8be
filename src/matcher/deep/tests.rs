use super::*;
use crate::fingerprint::{Fingerprint, Print};
use crate::matcher::{MatcherConfig, excerpt_among, find_matches, one_work_index, random_peaks};

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
            warp: 0,
        })
        .collect()
}

#[test]
fn finds_a_work_whose_peaks_survive_without_hashes() {
    let work_peaks = random_peaks(120, 24, 7);
    let (_dir, index) = one_work_index("masked", 120.0, &chance_prints(), &work_peaks);

    // A 10 s query: a third of the work's peaks from 60 s on, one frame
    // of jitter, buried among three times as many peaks of other audio.
    let offset = (60.0 * FRAMES_PER_SECOND) as u32;
    let query_frames = (10.0 * FRAMES_PER_SECOND) as u32;
    let peaks = excerpt_among(
        random_peaks(10, 60, 99),
        &work_peaks,
        (offset, offset + query_frames),
        |i, p| {
            (i % 3 == 0).then_some(PeakPoint {
                t_frame: p.t_frame + (i % 2) as u32,
                ..p
            })
        },
    );
    let query_prints: Vec<Print> = chance_prints()
        .into_iter()
        .zip([500, 20])
        .map(|(p, t_frame)| Print { t_frame, ..p })
        .collect();
    let query = Fingerprint {
        prints: query_prints.clone(),
        peaks,
        brief_peaks: Vec::new(),
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
        brief_peaks: Vec::new(),
        frames: query_frames as usize,
    };
    assert!(find_matches(&index, &unrelated, &MatcherConfig::default()).is_empty());
}

#[test]
fn a_small_catalog_is_searched_whole_without_any_hash_hit() {
    let work_peaks = random_peaks(120, 24, 7);
    let (_dir, index) = one_work_index("unhashed", 120.0, &chance_prints(), &work_peaks);
    // Half of the work's peaks from 40 s on among other audio's, and not one
    // print in common: the work has no hash hit at all.
    let offset = (40.0 * FRAMES_PER_SECOND) as u32;
    let query_frames = (10.0 * FRAMES_PER_SECOND) as u32;
    let peaks = excerpt_among(
        random_peaks(10, 60, 17),
        &work_peaks,
        (offset, offset + query_frames),
        |i, p| (i % 2 == 0).then_some(p),
    );
    let query = Fingerprint {
        prints: Vec::new(),
        peaks,
        brief_peaks: Vec::new(),
        frames: query_frames as usize,
    };
    let found = find_matches(&index, &query, &MatcherConfig::default());
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].work_id, "unhashed");
    assert!(found[0].confident);
    assert!((found[0].ref_start_s - found[0].query_start_s - 40.0).abs() < 0.05);
    // Without the deep search, or without the work's peaks, nothing.
    let shallow = MatcherConfig {
        deep_search_works: 0,
        ..MatcherConfig::default()
    };
    assert!(find_matches(&index, &query, &shallow).is_empty());
    let unrelated = Fingerprint {
        peaks: random_peaks(10, 80, 5),
        ..query
    };
    assert!(find_matches(&index, &unrelated, &MatcherConfig::default()).is_empty());
}

#[test]
fn a_work_under_a_voice_is_found_among_the_brief_peaks_alone() {
    let work_peaks = random_peaks(120, 24, 8);
    let (_dir, index) = one_work_index("bed", 120.0, &chance_prints(), &work_peaks);
    // The usual verification peaks hold only the voice; the brief ones
    // also half of the work's peaks from 30 s on.
    let offset = (30.0 * FRAMES_PER_SECOND) as u32;
    let query_frames = (10.0 * FRAMES_PER_SECOND) as u32;
    let voice = random_peaks(10, 60, 41);
    let brief = excerpt_among(
        random_peaks(10, 60, 42),
        &work_peaks,
        (offset, offset + query_frames),
        |i, p| (i % 2 == 0).then_some(p),
    );
    let prints: Vec<Print> = chance_prints()
        .into_iter()
        .zip([300, 700])
        .map(|(p, t_frame)| Print { t_frame, ..p })
        .collect();
    let mut query = Fingerprint {
        prints,
        peaks: voice,
        brief_peaks: Vec::new(),
        frames: query_frames as usize,
    };
    assert!(find_matches(&index, &query, &MatcherConfig::default()).is_empty());
    query.brief_peaks = brief;
    let found = find_matches(&index, &query, &MatcherConfig::default());
    assert_eq!(found.len(), 1, "{found:?}");
    let m = &found[0];
    assert_eq!(m.work_id, "bed");
    assert!(m.confident);
    assert!(
        (m.ref_start_s - m.query_start_s - 30.0).abs() < 0.05,
        "{m:?}"
    );
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

#[test]
fn half_windows_tile_the_query() {
    let half = DEEP_WINDOW_FRAMES / 2;
    assert_eq!(half_windows(0), vec![(0, 1)]);
    assert_eq!(half_windows(half - 1), vec![(0, half - 1)]);
    assert_eq!(half_windows(2 * half), vec![(0, half), (half, 2 * half)]);
    let tiled = half_windows(5 * half + 7);
    assert_eq!(tiled.len(), 6);
    assert_eq!(tiled[5], (5 * half, 5 * half + 7));
    assert!(tiled.windows(2).all(|w| w[0].1 == w[1].0));
}

/// A search whose current window holds `votes` (box sums computed for
/// every offset with the tolerance on both sides).
fn search_with_votes(votes: Vec<u16>) -> DeepSearch {
    let len = votes.len();
    let mut search = DeepSearch {
        previous: vec![0; len],
        current: votes,
        ..DeepSearch::default()
    };
    window_box_sums(
        &search.previous,
        &search.current,
        VOTE_PAD..=len - 1 - VOTE_PAD,
        &mut search.boxed,
        &mut search.block_max,
    );
    search
}

#[test]
fn best_offsets_need_votes_that_stand_out() {
    let len = 2000;
    let (lo, hi) = (VOTE_PAD, len - 1 - VOTE_PAD);
    // Evenly spread votes: the best offset is no better than its neighbours.
    let search = search_with_votes(vec![3; len]);
    assert!(search.best_offsets(lo, hi, 10).is_empty());
    // A spike at 1000 and a smaller one at 1500 stand out; 1001 is the
    // same hypothesis as 1000. Among the offsets whose tolerance covers
    // both, the one with the most votes of its own is taken.
    let mut votes = vec![3; len];
    votes[1000] += 40;
    votes[1001] += 30;
    votes[1500] += 30;
    let search = search_with_votes(votes);
    let best = search.best_offsets(lo, hi, 10);
    assert_eq!(
        best.iter().map(|b| b.1).collect::<Vec<_>>(),
        vec![1000, 1500]
    );
    assert_eq!(best[0].0, 15 + 70);
    // Below the minimum number of votes nothing is proposed.
    assert!(search.best_offsets(lo, hi, 100).is_empty());
}

#[test]
fn best_offsets_must_stand_alone_in_the_work() {
    let len = 3000;
    let (lo, hi) = (VOTE_PAD, len - 1 - VOTE_PAD);
    // The same pattern every bar (250 frames): music sharing a beat and a
    // drum sound with the work. No offset stands out from the others.
    let mut votes = vec![3; len];
    for bar in (250..2750).step_by(250) {
        votes[bar] += 30;
    }
    let search = search_with_votes(votes.clone());
    assert!(search.best_offsets(lo, hi, 10).is_empty());
    // One bar matches far better than the rest: a copy. Only it is kept.
    votes[1500] += 40;
    let search = search_with_votes(votes);
    let best = search.best_offsets(lo, hi, 10);
    assert_eq!(best.iter().map(|b| b.1).collect::<Vec<_>>(), vec![1500]);
}

fn pseudo_random(n: usize, modulus: u64, seed: u64) -> Vec<u16> {
    let mut state = seed.wrapping_mul(6364136223846793005) | 1;
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) % modulus) as u16
        })
        .collect()
}

#[test]
fn window_box_sums_match_a_plain_sum_and_saturate() {
    let tol = VERIFY_TOLERANCE_FRAMES as usize;
    let (mut boxed, mut block_max) = (Vec::new(), Vec::new());
    for (n, modulus) in [(1, 5), (50, 7), (333, 20_000), (64, 3), (129, 40_000)] {
        let previous = pseudo_random(n + 2 * tol, modulus, n as u64);
        let current = pseudo_random(n + 2 * tol, modulus, n as u64 + 7);
        for (lo, hi) in [
            (tol, n + tol - 1),
            (tol + n / 2, n + tol - 1),
            (tol + 1, tol),
        ] {
            window_box_sums(&previous, &current, lo..=hi, &mut boxed, &mut block_max);
            let plain: Vec<u16> = (lo..=hi)
                .map(|o| {
                    let sum: u32 = (o - tol..=o + tol)
                        .map(|i| u32::from(previous[i]) + u32::from(current[i]))
                        .sum();
                    sum.min(u32::from(u16::MAX)) as u16
                })
                .collect();
            assert_eq!(boxed, plain, "{n} {lo}..={hi}");
            let maxima: Vec<u16> = plain
                .chunks(MAX_BLOCK)
                .map(|c| c.iter().copied().max().unwrap_or(0))
                .collect();
            assert_eq!(block_max, maxima, "{n} {lo}..={hi}");
        }
    }
}

#[test]
fn range_top_matches_a_plain_search() {
    for seed in 0..20u64 {
        let boxed = pseudo_random(700, 6, seed);
        let centres = pseudo_random(700, 4, seed + 100);
        let block_max: Vec<u16> = boxed
            .chunks(MAX_BLOCK)
            .map(|c| c.iter().copied().max().unwrap_or(0))
            .collect();
        for range in [0..700, 3..5, 64..128, 63..129, 100..650, 699..700, 5..5] {
            let plain = range
                .clone()
                .map(|at| (boxed[at], centres[at], at))
                .max_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)).then(b.2.cmp(&a.2)));
            let fast = range_top(&boxed, &block_max, range.clone(), |at| centres[at]);
            assert_eq!(fast, plain, "seed {seed} range {range:?}");
        }
    }
}

#[test]
fn shared_peaks_split_two_sets_with_multiplicity() {
    let p = |t_frame, f_half_bins| PeakPoint {
        t_frame,
        f_half_bins,
    };
    let a = vec![p(5, 9), p(1, 2), p(3, 4), p(3, 4), p(7, 7)];
    let b = vec![p(3, 4), p(1, 2), p(8, 8)];
    let split = SharedPeaks::split(&[&a, &b]);
    assert_eq!(split.shared, Some(vec![p(1, 2), p(3, 4)]));
    assert_eq!(
        split.own,
        vec![vec![p(3, 4), p(5, 9), p(7, 7)], vec![p(8, 8)]]
    );
    // One set, or more than two: each on its own.
    let single = SharedPeaks::split(&[&a]);
    assert!(single.shared.is_none());
    assert_eq!(single.own, vec![a.clone()]);
    assert!(SharedPeaks::split(&[&a, &b, &a]).shared.is_none());
}

/// Two overlapping peak sets searched together propose exactly what each
/// set searched alone proposes (shared peaks vote once for both).
#[test]
fn two_sets_together_propose_what_each_proposes_alone() {
    let work_peaks = random_peaks(120, 24, 17);
    let (_dir, index) = one_work_index("work", 120.0, &chance_prints(), &work_peaks);
    let work = index.work_ref_of_slot(0).expect("work");
    for (seconds, seed) in [(10u32, 3u64), (5, 4), (23, 5)] {
        let frames = (f64::from(seconds) * FRAMES_PER_SECOND) as u32;
        let offset = (40.0 * FRAMES_PER_SECOND) as u32;
        // The work's peaks from 40 s on, among other peaks; the usual set
        // is mostly inside the brief one.
        let mut brief = random_peaks(seconds, 60, seed);
        brief.extend(
            work_peaks
                .iter()
                .filter(|p| (offset..offset + frames).contains(&p.t_frame))
                .step_by(2)
                .map(|p| PeakPoint {
                    t_frame: p.t_frame - offset,
                    ..*p
                }),
        );
        brief.sort_unstable();
        brief.dedup();
        let mut usual: Vec<PeakPoint> = brief.iter().copied().step_by(2).collect();
        usual.extend(random_peaks(seconds, 5, seed + 50));
        usual.sort_unstable();
        let min_score = 7.5;
        let mut search = DeepSearch::default();
        let together =
            search.hypotheses(&index, &[&usual, &brief], frames, &[work, work], min_score);
        let mut alone = search.hypotheses(&index, &[&usual], frames, &[work, work], min_score);
        alone.extend(search.hypotheses(&index, &[&brief], frames, &[work, work], min_score));
        // Per work set by set, strongest first (a stable sort).
        alone.sort_by_key(|f| std::cmp::Reverse(f.0));
        let key = |h: &[(u32, WorkRef, Segment)]| {
            h.iter()
                .map(|(votes, w, s)| (*votes, *w, s.tq_start, s.tq_end, s.intercept))
                .collect::<Vec<_>>()
        };
        assert!(!together.is_empty(), "{seconds} s");
        assert_eq!(key(&together), key(&alone), "{seconds} s");
    }
}

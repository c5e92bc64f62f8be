//! Triplet prints: partner selection, quantised hash fields with multi-probe,
//! and hash packing (steps 2–3 of the module docs).

use super::{
    DF_MAX_BINS, DF_MIN_BINS, DT_AC_MAX_FRAMES, DT_AC_MIN_FRAMES, DT_MIN_GAP_FRAMES, HASH_BITS,
    Peak, Print, Side, half_bins,
};

/// Quantisation of the hash fields.
const RATIO_LEVELS: f32 = 16.0;
const DT_LOG_BIN_WIDTH: f32 = 0.5;
const DT_LOG_BINS: i32 = 4;
const BAND_BINS: f32 = 12.0;
const BANDS: i32 = 8;
const DF_LEVELS: i32 = 49;
/// Which of the three peaks is loudest: a, b or c.
const LOUDEST_LEVELS: i32 = 3;

/// Multi-probe margins (in quantisation units of each field).
const PROBE_MARGIN_DF: f32 = 0.2;
const PROBE_MARGIN_RATIO: f32 = 0.25;
const PROBE_MARGIN_DT: f32 = 0.2;
const PROBE_MARGIN_BAND: f32 = 0.3;
/// The runner-up is probed as "loudest" when within this much (log2 power,
/// ≈ 3 dB per unit) of the loudest peak.
const PROBE_MARGIN_LOUDEST: f32 = 0.5;

const _: () = assert!(
    (BANDS * DF_LEVELS * DF_LEVELS * RATIO_LEVELS as i32 * DT_LOG_BINS * LOUDEST_LEVELS) as u64
        <= 1u64 << HASH_BITS
);

/// Quantised value of one hash field with an optional neighbour to probe.
#[derive(Debug, Clone, Copy)]
struct Field {
    value: i32,
    alt: Option<i32>,
}

impl Field {
    /// `x` in quantisation units, rounded to the nearest level.
    fn rounded(x: f32, margin: f32, min: i32, max: i32, probe: bool) -> Self {
        let value = (x.round() as i32).clamp(min, max);
        let frac = x - x.round();
        let alt = if !probe {
            None
        } else if frac > 0.5 - margin {
            Some(value + 1)
        } else if frac < -(0.5 - margin) {
            Some(value - 1)
        } else {
            None
        };
        Self {
            value,
            alt: alt.filter(|a| (min..=max).contains(a)),
        }
    }

    /// `x` in quantisation units, floored to its level.
    fn floored(x: f32, margin: f32, min: i32, max: i32, probe: bool) -> Self {
        let value = (x.floor() as i32).clamp(min, max);
        let frac = x - x.floor();
        let alt = if !probe {
            None
        } else if frac < margin {
            Some(value - 1)
        } else if frac > 1.0 - margin {
            Some(value + 1)
        } else {
            None
        };
        Self {
            value,
            alt: alt.filter(|a| (min..=max).contains(a)),
        }
    }

    fn options(self) -> impl Iterator<Item = i32> {
        std::iter::once(self.value).chain(self.alt)
    }
}

/// Builds triplet prints for anchors accepted by `keep_anchor` (anchor frame).
///
/// Partners are the next peaks in the anchor's target zone (at least
/// [`DT_MIN_GAP_FRAMES`] later, within ±[`DF_MAX_BINS`]). Pairs of partners are taken
/// in order of the later partner, then the earlier one — `(1,2), (1,3), (2,3),
/// (1,4)…` — so the earliest, most reproducible combinations come first; the
/// reference keeps the first few valid ones, the query all of them.
pub fn triplet_prints(
    peaks: &[Peak],
    side: Side,
    keep_anchor: impl Fn(u32) -> bool,
    out: &mut Vec<Print>,
) {
    let mut order: Vec<Peak> = peaks.to_vec();
    order.sort_by(|a, b| a.t.total_cmp(&b.t));
    hash_triplets(&order, &order, side, 0, &keep_anchor, out);
    if side == Side::Query {
        let mut warped = Vec::with_capacity(order.len());
        for (tag, warp) in (1..).zip(QUERY_WARPS) {
            warped.clear();
            warped.extend(order.iter().map(|p| warp.apply(p)));
            hash_triplets(&warped, &order, side, tag, &keep_anchor, out);
        }
    }
}

/// A change of the query's time scale and pitch under which its peaks are
/// hashed again (query side only).
///
/// The triplet hash is invariant to speed, tempo and pitch changes except for
/// its coarse absolute terms (the anchor's band, the magnitude of `Δt_ac`) and
/// the time window partners are chosen in. Those survive changes of about
/// ±15 %; beyond, the query's peaks are mapped back towards the reference's
/// scale (`t · time_scale`, `f + shift_bins`) and hashed as the reference would
/// hash them there. The prints keep the peaks' real positions, so the matcher
/// sees the true alignment (its speed search spans [`MIN_SPEED`]..[`MAX_SPEED`]).
///
/// [`MIN_SPEED`]: crate::matcher::MIN_SPEED
/// [`MAX_SPEED`]: crate::matcher::MAX_SPEED
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Warp {
    /// Reference frames per query frame.
    pub time_scale: f32,
    /// Added to the query's log-bin frequencies.
    pub shift_bins: f32,
}

impl Warp {
    /// The time scale of the warp with tag `tag` (1 for tag 0, unwarped).
    pub fn time_scale_of(tag: u8) -> f32 {
        match tag.checked_sub(1) {
            Some(k) => QUERY_WARPS
                .get(usize::from(k))
                .map_or(1.0, |w| w.time_scale),
            None => 1.0,
        }
    }

    fn apply(self, p: &Peak) -> Peak {
        Peak {
            t: p.t * self.time_scale,
            f: p.f + self.shift_bins,
            ..*p
        }
    }
}

/// The time scale of the warped query hashes: the query played this much
/// faster or slower than the reference.
pub const WARP_SPEED: f32 = 1.2;
/// Log bins by which [`WARP_SPEED`] moves every frequency (≈ 6.3).
const WARP_SHIFT_BINS: f32 = 6.312_826;

/// Warps hashed besides the query as it is: faster and slower by
/// [`WARP_SPEED`], with half the pitch change of a speed change. A speed change
/// (tempo and pitch together) and a tempo change (pitch kept) of the warp's
/// size then both leave a pitch difference of ±1.6 semitones, which the hash
/// tolerates, and a time scale within the unwarped hash's reach.
pub const QUERY_WARPS: [Warp; 2] = [
    Warp {
        time_scale: WARP_SPEED,
        shift_bins: -WARP_SHIFT_BINS / 2.0,
    },
    Warp {
        time_scale: 1.0 / WARP_SPEED,
        shift_bins: WARP_SHIFT_BINS / 2.0,
    },
];

/// Partners considered and triplets hashed per anchor under a warp: the
/// reference's partners, and only the earliest three of their triplets (the
/// warps only reach what the unwarped hash cannot; on the evaluation's main
/// split, three kept speed ±25 % and tempo ±20 % at 97–100 % for 10 s
/// excerpts, as six did, at a fifth more CPU per query instead of a third).
const WARP_FANOUT: usize = super::REF_FANOUT;
const WARP_TRIPLETS_PER_ANCHOR: usize = 3;

/// Hashes the triplets of `peaks` (sorted by time), each print placed at the
/// anchor's position in `anchors` (the same peaks, unwarped, in the same order).
fn hash_triplets(
    peaks: &[Peak],
    anchors: &[Peak],
    side: Side,
    warp: u8,
    keep_anchor: &impl Fn(u32) -> bool,
    out: &mut Vec<Print>,
) {
    let params = side.params();
    let (fanout, triplets_per_anchor) = if warp == 0 {
        (params.fanout, params.triplets_per_anchor)
    } else {
        (WARP_FANOUT, WARP_TRIPLETS_PER_ANCHOR)
    };
    let probe = side == Side::Query;
    let mut partners: Vec<&Peak> = Vec::with_capacity(fanout);
    for (i, (a, anchor)) in peaks.iter().zip(anchors).enumerate() {
        if !keep_anchor(a.frame) {
            continue;
        }
        partners.clear();
        for b in &peaks[i + 1..] {
            let dt = b.t - a.t;
            if dt > DT_AC_MAX_FRAMES {
                break;
            }
            let df = (b.f - a.f).abs();
            if dt >= DT_MIN_GAP_FRAMES && (DF_MIN_BINS..=DF_MAX_BINS).contains(&df) {
                partners.push(b);
                if partners.len() == fanout {
                    break;
                }
            }
        }
        let mut made = 0;
        'pairs: for (k, c) in partners.iter().enumerate() {
            for b in &partners[..k] {
                if let Some(fields) = triplet_fields(a, b, c, probe) {
                    emit_hashes(&fields, anchor, warp, out);
                    made += 1;
                    if made == triplets_per_anchor {
                        break 'pairs;
                    }
                }
            }
        }
    }
}

struct TripletFields {
    band: Field,
    df_ab: Field,
    df_ac: Field,
    ratio: Field,
    dt: Field,
    loudest: Field,
}

/// Which of the triplet's peaks is loudest (0 = a, 1 = b, 2 = c), with the
/// runner-up as the probe when the two are close.
fn loudest_field(levels: [f32; 3], probe: bool) -> Field {
    let mut order = [0usize, 1, 2];
    order.sort_by(|&i, &j| levels[j].total_cmp(&levels[i]).then(i.cmp(&j)));
    let (first, second) = (order[0], order[1]);
    let close = levels[first] - levels[second] < PROBE_MARGIN_LOUDEST;
    Field {
        value: first as i32,
        alt: (probe && close).then_some(second as i32),
    }
}

fn triplet_fields(a: &Peak, b: &Peak, c: &Peak, probe: bool) -> Option<TripletFields> {
    let dt_ab = b.t - a.t;
    let dt_ac = c.t - a.t;
    if dt_ac < DT_AC_MIN_FRAMES || c.t - b.t < DT_MIN_GAP_FRAMES || (c.f - b.f).abs() < DF_MIN_BINS
    {
        return None;
    }
    let half_df = (DF_LEVELS - 1) / 2;
    let ratio_x = dt_ab / dt_ac * RATIO_LEVELS;
    let dt_x = (dt_ac / DT_AC_MIN_FRAMES).ln() / DT_LOG_BIN_WIDTH;
    let band_x = a.f / BAND_BINS;
    Some(TripletFields {
        band: Field::floored(band_x, PROBE_MARGIN_BAND, 0, BANDS - 1, probe),
        df_ab: Field::rounded(b.f - a.f, PROBE_MARGIN_DF, -half_df, half_df, probe),
        df_ac: Field::rounded(c.f - a.f, PROBE_MARGIN_DF, -half_df, half_df, probe),
        ratio: Field::floored(
            ratio_x,
            PROBE_MARGIN_RATIO,
            0,
            RATIO_LEVELS as i32 - 1,
            probe,
        ),
        dt: Field::floored(dt_x, PROBE_MARGIN_DT, 0, DT_LOG_BINS - 1, probe),
        loudest: loudest_field([a.level, b.level, c.level], probe),
    })
}

fn emit_hashes(f: &TripletFields, anchor: &Peak, warp: u8, out: &mut Vec<Print>) {
    let half_df = (DF_LEVELS - 1) / 2;
    let f_half_bins = half_bins(anchor.f);
    for band in f.band.options() {
        for df_ab in f.df_ab.options() {
            for df_ac in f.df_ac.options() {
                for ratio in f.ratio.options() {
                    for dt in f.dt.options() {
                        for loudest in f.loudest.options() {
                            let fields = HashFields {
                                band,
                                df_ab: df_ab + half_df,
                                df_ac: df_ac + half_df,
                                ratio,
                                dt,
                                loudest,
                            };
                            out.push(Print {
                                hash: pack_hash(fields),
                                t_frame: anchor.frame,
                                f_half_bins,
                                warp,
                            });
                        }
                    }
                }
            }
        }
    }
}

/// Quantised hash fields, each in `0..levels`.
struct HashFields {
    band: i32,
    df_ab: i32,
    df_ac: i32,
    ratio: i32,
    dt: i32,
    loudest: i32,
}

/// Packs the fields in mixed radix (no level wasted), below
/// 8 × 49 × 49 × 16 × 4 × 3 = 3 687 936 < 2^22: the anchor band is the most
/// significant digit, which of the three peaks is loudest the least.
fn pack_hash(f: HashFields) -> u32 {
    let digit = |v: i32, levels: i32| v.clamp(0, levels - 1) as u32;
    let mut hash = digit(f.band, BANDS);
    hash = hash * DF_LEVELS as u32 + digit(f.df_ab, DF_LEVELS);
    hash = hash * DF_LEVELS as u32 + digit(f.df_ac, DF_LEVELS);
    hash = hash * RATIO_LEVELS as u32 + digit(f.ratio, RATIO_LEVELS as i32);
    hash = hash * DT_LOG_BINS as u32 + digit(f.dt, DT_LOG_BINS);
    hash * LOUDEST_LEVELS as u32 + digit(f.loudest, LOUDEST_LEVELS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fingerprint::fingerprint_samples;
    use crate::fingerprint::tests::melody;

    #[test]
    fn hash_fits_in_hash_bits_and_is_injective() {
        let fields = |band, df_ab, df_ac, ratio, dt, loudest| HashFields {
            band,
            df_ab,
            df_ac,
            ratio,
            dt,
            loudest,
        };
        let top = pack_hash(fields(BANDS - 1, 48, 48, 15, 3, 2));
        assert!(top < (1 << HASH_BITS));
        assert_eq!(top as usize + 1, 8 * 49 * 49 * 16 * 4 * 3);
        let base = pack_hash(fields(1, 2, 3, 4, 1, 0));
        for other in [
            fields(2, 2, 3, 4, 1, 0),
            fields(1, 3, 3, 4, 1, 0),
            fields(1, 2, 4, 4, 1, 0),
            fields(1, 2, 3, 5, 1, 0),
            fields(1, 2, 3, 4, 2, 0),
            fields(1, 2, 3, 4, 1, 1),
        ] {
            assert_ne!(pack_hash(other), base);
        }
    }

    #[test]
    fn warp_shift_is_the_pitch_change_of_the_warp_speed() {
        let bins = crate::spectrogram::BINS_PER_OCTAVE as f32 * WARP_SPEED.log2();
        assert!((WARP_SHIFT_BINS - bins).abs() < 1e-4, "{bins}");
    }

    #[test]
    fn loudest_field_probes_a_close_runner_up() {
        let clear = loudest_field([1.0, 3.0, 0.0], true);
        assert_eq!((clear.value, clear.alt), (1, None));
        let close = loudest_field([2.8, 3.0, 0.0], true);
        assert_eq!((close.value, close.alt), (1, Some(0)));
        let reference = loudest_field([2.8, 3.0, 0.0], false);
        assert_eq!((reference.value, reference.alt), (1, None));
    }

    #[test]
    fn query_prints_cover_reference_prints() {
        let samples = melody(20.0, 5);
        let reference = fingerprint_samples(&samples, Side::Reference);
        let query = fingerprint_samples(&samples, Side::Query);
        let query_set: std::collections::HashSet<(u32, u32)> =
            query.prints.iter().map(|p| (p.hash, p.t_frame)).collect();
        let covered = reference
            .prints
            .iter()
            .filter(|p| query_set.contains(&(p.hash, p.t_frame)))
            .count();
        let fraction = covered as f64 / reference.prints.len() as f64;
        assert!(
            fraction > 0.8,
            "only {fraction:.2} of reference prints reproduced"
        );
    }
}

//! Diagnostic: how many reference peaks and prints survive in a query excerpt.
//! usage: diag REF QUERY REF_START_S [SPEED]
use earmark::decode::{DecodeLimits, decode_file};
use earmark::fingerprint::{self, FRAMES_PER_SECOND, SAMPLE_RATE_HZ, Side};
use earmark::spectrogram::spectrogram as log_spectrogram;
use std::path::Path;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let speed: f32 = a.get(4).map(|s| s.parse().unwrap()).unwrap_or(1.0);
    let start: f32 = a[3].parse().unwrap();
    let r = decode_file(Path::new(&a[1]), &DecodeLimits::default(), SAMPLE_RATE_HZ).unwrap();
    let q = decode_file(Path::new(&a[2]), &DecodeLimits::default(), SAMPLE_RATE_HZ).unwrap();
    let rs = log_spectrogram(&r.samples);
    let qs = log_spectrogram(&q.samples);
    let rp = fingerprint::pick_peaks(&rs, Side::Reference);
    let qp = fingerprint::pick_peaks(&qs, Side::Query);
    let off = start * FRAMES_PER_SECOND as f32;
    let qdur = qs.log.nrows() as f32;
    let in_range: Vec<_> = rp
        .iter()
        .filter(|p| p.t >= off + 5.0 && p.t < off + qdur * speed - 5.0)
        .collect();
    let mut found = 0;
    for p in &in_range {
        let tq = (p.t - off) / speed;
        if qp
            .iter()
            .any(|x| (x.t - tq).abs() <= 1.5 && (x.f - p.f).abs() <= 1.5)
        {
            found += 1;
        }
    }
    println!(
        "ref peaks in range {} ({}/s), query peaks {} ({}/s), ref peaks found in query {:.1}%",
        in_range.len(),
        in_range.len() as f32 / (qdur / 125.0),
        qp.len(),
        qp.len() as f32 / (qdur / 125.0),
        100.0 * found as f32 / in_range.len().max(1) as f32
    );
    let rf = fingerprint::fingerprint_samples(&r.samples, Side::Reference);
    let qf = fingerprint::fingerprint_samples(&q.samples, Side::Query);
    let qset: std::collections::HashSet<u32> = qf.prints.iter().map(|p| p.hash).collect();
    let rin: Vec<_> = rf
        .prints
        .iter()
        .filter(|p| {
            (p.t_frame as f32) >= off + 5.0 && (p.t_frame as f32) < off + qdur * speed - 60.0
        })
        .collect();
    let mut hit = 0;
    for p in &rin {
        let tq = (p.t_frame as f32 - off) / speed;
        if qf
            .prints
            .iter()
            .any(|x| x.hash == p.hash && (x.t_frame as f32 - tq).abs() <= 2.0)
        {
            hit += 1;
        }
    }
    let any = rin.iter().filter(|p| qset.contains(&p.hash)).count();
    println!(
        "ref prints in range {} , query prints {}, ref prints reproduced at right time {:.1}% (hash anywhere {:.1}%)",
        rin.len(),
        qf.prints.len(),
        100.0 * hit as f32 / rin.len().max(1) as f32,
        100.0 * any as f32 / rin.len().max(1) as f32
    );
}
#[allow(dead_code)]
fn unused() {}

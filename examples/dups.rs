use earmark::decode::{DecodeLimits, decode_file};
use earmark::fingerprint::{self, SAMPLE_RATE_HZ, Side};
use earmark::spectrogram::spectrogram as log_spectrogram;
use std::path::Path;
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let r = decode_file(Path::new(&a[1]), &DecodeLimits::default(), SAMPLE_RATE_HZ).unwrap();
    let spec = log_spectrogram(&r.samples[..8000 * 20]);
    let peaks = fingerprint::pick_peaks(&spec, Side::Reference);
    println!("peaks {}", peaks.len());
    for p in peaks.iter().take(30) {
        println!(
            "t {:.2} f {:.2} frame {} prom {:.1}",
            p.t, p.f, p.frame, p.prominence
        );
    }
    let mut prints = Vec::new();
    fingerprint::triplet_prints(&peaks, Side::Reference, |_| true, &mut prints);
    println!("prints {}", prints.len());
    for p in prints.iter().take(20) {
        println!("{:?}", p);
    }
}

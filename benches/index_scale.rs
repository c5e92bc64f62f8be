//! Index size and lookup latency as the catalog grows (10 h → 1000 h of references).
//!
//! Real reference fingerprints (the clips in `test-audio/refs`) are replicated under
//! new work ids until the index holds the target hours, as scrambled replicas
//! ([`earmark::index::padding`]): the posting-list load of a catalog of
//! *different* recordings; each replica's stored peaks are the clip's own.
//! Queries are 10 s excerpts of the
//! original clips; we time lookup + matching only, and report p50/p95/p99.
//!
//! Run: `cargo bench --bench index_scale` (sizes via `EARMARK_BENCH_HOURS=10,100,1000`).

use std::path::Path;
use std::time::Instant;

use earmark::decode::{self, DecodeLimits};
use earmark::fingerprint::{Fingerprint, Print, SAMPLE_RATE_HZ, Side, fingerprint_samples};
use earmark::index::padding::replica_prints;
use earmark::index::segment::SegmentWork;
use earmark::index::{Index, IndexWriter, NewWork};
use earmark::matcher::{MatcherConfig, find_matches};

const QUERIES: usize = 200;
const QUERY_SECONDS: usize = 10;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let hours: Vec<f64> = std::env::var("EARMARK_BENCH_HOURS")
        .unwrap_or_else(|_| "10,100,1000".into())
        .split(',')
        .filter_map(|h| h.trim().parse().ok())
        .collect();
    let refs = Path::new(env!("CARGO_MANIFEST_DIR")).join("test-audio/refs");
    let mut clips: Vec<(Vec<f32>, Fingerprint, f64)> = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(&refs)
        .expect("test-audio/refs")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    names.sort();
    for path in names {
        let audio = decode::decode_file(&path, &DecodeLimits::default(), SAMPLE_RATE_HZ)
            .expect("clip decodes");
        let fp = fingerprint_samples(&audio.samples, Side::Reference);
        let seconds = audio.info.duration_s;
        clips.push((audio.samples, fp, seconds));
    }
    // Query fingerprints: 10 s excerpts at deterministic offsets.
    let queries: Vec<_> = (0..QUERIES)
        .map(|i| {
            let (samples, _, _) = &clips[i % clips.len()];
            let len = QUERY_SECONDS * SAMPLE_RATE_HZ as usize;
            let max_start = samples.len().saturating_sub(len);
            let start = (i * 7919 * 97) % max_start.max(1);
            fingerprint_samples(&samples[start..start + len.min(samples.len())], Side::Query)
        })
        .collect();
    println!("hours  works   postings     MB    MB/h   build_s  p50_ms  p95_ms  p99_ms  found");
    for h in hours {
        let dir = tempfile::tempdir().expect("temp dir");
        let clip_seconds: f64 = clips.iter().map(|c| c.2).sum::<f64>() / clips.len() as f64;
        let works = ((h * 3600.0) / clip_seconds).ceil() as usize;
        let started = Instant::now();
        let replicas: Vec<(SegmentWork, Vec<Print>, usize)> = (0..works)
            .map(|w| {
                let (_, fp, seconds) = &clips[w % clips.len()];
                let replica = (w / clips.len()) as u64;
                let prints = replica_prints(&fp.prints, replica);
                (
                    SegmentWork {
                        id: format!("w{w}"),
                        duration_s: *seconds,
                        prints: 0,
                    },
                    prints,
                    w % clips.len(),
                )
            })
            .collect();
        let entries: Vec<NewWork<'_>> = replicas
            .iter()
            .map(|(work, prints, clip)| NewWork {
                work,
                prints,
                peaks: &clips[*clip].1.peaks,
            })
            .collect();
        let writer = IndexWriter::open(dir.path()).expect("writer");
        writer.add_works(&entries).expect("build index");
        drop(entries);
        drop(replicas);
        let build_s = started.elapsed().as_secs_f64();
        let index = Index::open(dir.path()).expect("open");
        let stats = index.stats();
        let config = MatcherConfig::default();
        let mut latencies = Vec::with_capacity(QUERIES);
        let mut found = 0;
        for (i, q) in queries.iter().enumerate() {
            let t = Instant::now();
            let matches = find_matches(&index, q, &config);
            latencies.push(t.elapsed().as_secs_f64() * 1000.0);
            let want = format!("w{}", i % clips.len());
            if matches.iter().any(|m| m.confident && m.work_id == want) {
                found += 1;
            } else if std::env::var_os("EARMARK_BENCH_DEBUG").is_some() {
                let top: Vec<String> = matches
                    .iter()
                    .take(4)
                    .map(|m| {
                        format!(
                            "{} {:.1} q{:.1}-{:.1}",
                            m.work_id, m.score, m.query_start_s, m.query_end_s
                        )
                    })
                    .collect();
                eprintln!("missed query {i} (want {want}): {top:?}");
            }
        }
        latencies.sort_by(f64::total_cmp);
        println!(
            "{h:>5.0} {works:>6} {:>10} {:>6.1} {:>6.2} {build_s:>8.1} {:>7.2} {:>7.2} {:>7.2}  {found}/{QUERIES}",
            stats.postings,
            stats.bytes as f64 / 1e6,
            stats.megabytes_per_hour,
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.95),
            percentile(&latencies, 0.99),
        );
    }
}

//! Throughput benchmarks, reported by criterion as **audio-seconds per second**
//! (`elem/s`, one element = one second of audio).
//!
//! * `fingerprint_pcm/*`: fingerprinting decoded 8 kHz PCM on ONE core (the issue's
//!   ≥ 2000× realtime target), reference and query side.
//! * `parallel/*`: a 10-minute signal on 1 vs 2 threads (speed-up).
//! * `identify_ogg/*`: decoding alone vs decode + fingerprint + match of a real
//!   OGG/Vorbis file (the ≤ 30 % overhead target).
//!
//! Run: `cargo bench --bench fingerprint`.

use std::path::{Path, PathBuf};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use earmark::data_dir::DataDir;
use earmark::decode::{self, DecodeLimits};
use earmark::fingerprint::{SAMPLE_RATE_HZ, Side, fingerprint_samples};
use earmark::matcher::MatcherConfig;

fn test_audio(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("test-audio")
        .join(rel)
}

/// `seconds` of real music: the reference clips decoded and concatenated.
fn music(seconds: usize) -> Vec<f32> {
    let mut clips = Vec::new();
    for name in [
        "refs/wesnoth-heroes-rite.ogg",
        "refs/fof-muldjord-armygeddon.ogg",
        "refs/wesnoth-northerners.ogg",
        "refs/fof-sectoid-war-of-freedom.ogg",
    ] {
        let decoded =
            decode::decode_file(&test_audio(name), &DecodeLimits::default(), SAMPLE_RATE_HZ)
                .expect("test-audio clip decodes");
        clips.extend(decoded.samples);
    }
    let want = seconds * SAMPLE_RATE_HZ as usize;
    clips.iter().copied().cycle().take(want).collect()
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool")
}

fn bench_fingerprint_pcm(c: &mut Criterion) {
    let seconds = 60;
    let samples = music(seconds);
    let one = pool(1);
    let mut group = c.benchmark_group("fingerprint_pcm");
    group.throughput(Throughput::Elements(seconds as u64));
    group.sample_size(20);
    group.bench_function("reference_1core", |b| {
        b.iter(|| one.install(|| fingerprint_samples(&samples, Side::Reference)))
    });
    group.bench_function("query_1core", |b| {
        b.iter(|| one.install(|| fingerprint_samples(&samples, Side::Query)))
    });
    group.finish();
}

fn bench_parallel(c: &mut Criterion) {
    let seconds = 600;
    let samples = music(seconds);
    let mut group = c.benchmark_group("parallel");
    group.throughput(Throughput::Elements(seconds as u64));
    group.sample_size(10);
    for threads in [1, 2] {
        let p = pool(threads);
        group.bench_function(format!("reference_{threads}threads"), |b| {
            b.iter(|| p.install(|| fingerprint_samples(&samples, Side::Reference)))
        });
    }
    group.finish();
}

fn bench_identify_ogg(c: &mut Criterion) {
    let file = test_audio("submissions/mix-two-works.ogg");
    let dir = tempfile::tempdir().expect("temp dir");
    let data = DataDir::new(dir.path());
    let limits = DecodeLimits::default();
    let jobs: Vec<(String, PathBuf)> = std::fs::read_dir(test_audio("refs"))
        .expect("refs")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .map(|p| {
            (
                p.file_stem()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .to_string(),
                p,
            )
        })
        .collect();
    let prepared: Vec<_> = earmark::registration::prepare_works(&jobs, &limits)
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("refs fingerprint");
    earmark::registration::commit_works(&data.index_writer().expect("writer"), &prepared)
        .expect("commit");
    let index = data.open_index().expect("index");
    let seconds = decode::decode_file(&file, &limits, SAMPLE_RATE_HZ)
        .expect("decode")
        .info
        .duration_s
        .round() as u64;
    let config = MatcherConfig::default();
    let mut group = c.benchmark_group("identify_ogg");
    group.throughput(Throughput::Elements(seconds));
    group.sample_size(20);
    group.bench_function("decode_only", |b| {
        b.iter(|| decode::decode_file_stream(&file, &limits, SAMPLE_RATE_HZ, |_| {}))
    });
    group.bench_function("decode_fingerprint_match", |b| {
        b.iter(|| earmark::screening::identify_file(&index, &file, &limits, &config))
    });
    group.finish();
}

criterion_group!(
    benches,
    bench_fingerprint_pcm,
    bench_parallel,
    bench_identify_ogg
);
criterion_main!(benches);

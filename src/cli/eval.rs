//! `earmark eval`: the accuracy harness.
//!
//! Reads an evaluation set made by `scripts/make-eval-set.py` (`refs.jsonl`,
//! `queries.jsonl`), registers every reference into a cached index, identifies every
//! query, and reports recall per condition and excerpt length, false positives per
//! hour of negatives, reference-time localisation error, a threshold sweep (so the
//! default threshold is chosen on audio not in the index), and speed.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data_dir::DataDir;
use crate::decode::DecodeLimits;
use crate::fingerprint::CONFIG_ID;
use crate::matcher::{Match, MatcherConfig};

use super::{EXIT_CLEAN, Thresholds};

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Evaluation set directory (refs.jsonl, queries.jsonl). Repeat to pool
    /// several sets (say, two reference splits) into one report; each set's
    /// queries run against its own reference index.
    #[arg(long = "set", env = "EARMARK_EVAL", default_value = "eval-cache/eval")]
    pub sets: Vec<PathBuf>,
    /// Write the full results as JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Only run queries whose condition is in this comma-separated list.
    #[arg(long)]
    pub conditions: Option<String>,
    /// Evaluate at most this many queries per (condition, length) cell.
    #[arg(long)]
    pub per_cell: Option<usize>,
    /// Rebuild the cached reference index.
    #[arg(long)]
    pub rebuild: bool,
    /// Pad the reference index to this many hours of catalog with scrambled
    /// replicas of the references (each replica's hashes moved by its own
    /// bijection: the posting-list load of different recordings). Measures false
    /// positives and speed at catalog scale; matches to padding count as wrong.
    #[arg(long, value_name = "HOURS")]
    pub catalog_hours: Option<f64>,
    /// For every missed positive, also score its true alignment (the set's
    /// ground truth) the way the matcher verifies one: a miss scoring at
    /// least the confident threshold there was lost by the search, one below
    /// it lacks the evidence. Decodes each missed query a second time.
    #[arg(long)]
    pub explain_misses: bool,
    #[command(flatten)]
    pub thresholds: Thresholds,
}

#[derive(Debug, Clone, Deserialize)]
struct RefEntry {
    work_id: String,
    path: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
struct QueryEntry {
    query_id: String,
    path: PathBuf,
    condition: String,
    length_s: f64,
    work_id: Option<String>,
    ref_start_s: Option<f64>,
    query_start_s: Option<f64>,
    query_end_s: Option<f64>,
    #[serde(default)]
    speed_factor: Option<f64>,
    #[serde(default)]
    pitch_factor: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
struct QueryOutcome {
    query_id: String,
    condition: String,
    length: String,
    positive: bool,
    duration_s: f64,
    seconds: f64,
    /// Score of the best correct, well-placed match (0 if none).
    correct_score: f64,
    /// Score of the best wrong match (another work, or anything on a negative).
    wrong_score: f64,
    ref_start_error_s: Option<f64>,
    /// The best correct and the best wrong match, for diagnosis.
    correct_match: Option<Match>,
    wrong_match: Option<Match>,
    error: Option<String>,
    /// Score of the right work at the true alignment, for a missed positive
    /// (`--explain-misses`).
    #[serde(skip_serializing_if = "Option::is_none")]
    true_alignment_score: Option<f64>,
}

fn read_jsonl<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<T>> {
    let file = fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(&line)
                .with_context(|| format!("{}:{}: bad entry", path.display(), i + 1))?,
        );
    }
    Ok(out)
}

/// Hours of padding written per index segment (bounds memory while building).
const PADDING_HOURS_PER_SEGMENT: f64 = 200.0;

/// Builds (or reuses) the index of all references, padded to `catalog_hours`
/// if given.
fn reference_index(set: &Path, rebuild: bool, catalog_hours: Option<f64>) -> Result<DataDir> {
    let name = match catalog_hours {
        Some(hours) => format!("index-{CONFIG_ID:08x}-{hours:.0}h"),
        None => format!("index-{CONFIG_ID:08x}"),
    };
    let data = DataDir::new(set.join(name));
    let marker = data.root.join("complete");
    if rebuild && data.root.exists() {
        fs::remove_dir_all(&data.root)?;
    }
    if marker.exists() {
        return Ok(data);
    }
    if data.root.exists() {
        fs::remove_dir_all(&data.root)?;
    }
    let refs: Vec<RefEntry> = read_jsonl(&set.join("refs.jsonl"))?;
    eprintln!("eval: registering {} reference tracks…", refs.len());
    let started = Instant::now();
    let writer = data.index_writer()?;
    let limits = DecodeLimits::default();
    let mut total_s = 0.0;
    let mut kept = Vec::new();
    for chunk in refs.chunks(64) {
        let jobs: Vec<(String, PathBuf)> = chunk
            .iter()
            .map(|r| (r.work_id.clone(), r.path.clone()))
            .collect();
        let mut prepared = Vec::new();
        for result in crate::registration::prepare_works(&jobs, &limits) {
            match result {
                Ok(work) => {
                    total_s += work.info.duration_s;
                    prepared.push(work);
                }
                Err(err) => eprintln!("eval: skipping reference: {err}"),
            }
        }
        crate::registration::commit_works(&writer, &prepared)?;
        if catalog_hours.is_some() {
            kept.append(&mut prepared);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!(
        "eval: indexed {:.2} h of references in {elapsed:.1} s ({:.0}× realtime)",
        total_s / 3600.0,
        total_s / elapsed.max(1e-9)
    );
    if let Some(hours) = catalog_hours {
        pad_catalog(&writer, &kept, total_s / 3600.0, hours)?;
    }
    fs::write(&marker, b"ok")?;
    Ok(data)
}

/// Adds scrambled replicas of `works` (ids `pad<replica>-<work>`; hashes
/// and peaks moved, see [`crate::index::padding`]) until the index holds
/// `target_hours`.
fn pad_catalog(
    writer: &crate::index::IndexWriter,
    works: &[crate::registration::PreparedWork],
    real_hours: f64,
    target_hours: f64,
) -> Result<()> {
    use crate::fingerprint::{PeakPoint, Print};
    use crate::index::NewWork;
    use crate::index::padding::{replica_peaks, replica_prints};
    use crate::index::segment::SegmentWork;
    if works.is_empty() || real_hours >= target_hours {
        return Ok(());
    }
    let started = Instant::now();
    let mut hours = real_hours;
    type Replica = (SegmentWork, Vec<Print>, Vec<PeakPoint>);
    let mut batch: Vec<Replica> = Vec::new();
    let mut batch_hours = 0.0;
    let flush = |batch: &mut Vec<Replica>| {
        let entries: Vec<NewWork<'_>> = batch
            .iter()
            .map(|(work, prints, peaks)| NewWork {
                work,
                prints,
                peaks,
            })
            .collect();
        let result = writer.add_works(&entries);
        drop(entries);
        batch.clear();
        result
    };
    'replicas: for replica in 1u64.. {
        for work in works {
            if hours >= target_hours {
                break 'replicas;
            }
            let work_hours = work.info.duration_s / 3600.0;
            batch.push((
                SegmentWork {
                    id: format!("pad{replica:05}-{}", work.work_id),
                    duration_s: work.info.duration_s,
                    prints: work.fingerprint.prints.len() as u64,
                },
                replica_prints(&work.fingerprint.prints, replica),
                replica_peaks(&work.fingerprint.peaks, replica),
            ));
            hours += work_hours;
            batch_hours += work_hours;
            if batch_hours >= PADDING_HOURS_PER_SEGMENT {
                flush(&mut batch)?;
                batch_hours = 0.0;
                eprintln!("eval: catalog padded to {hours:.0} h…");
            }
        }
    }
    flush(&mut batch)?;
    eprintln!(
        "eval: catalog padded to {hours:.1} h in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn length_label(q: &QueryEntry) -> String {
    if q.work_id.is_some() {
        format!("{:.0}s", q.length_s)
    } else {
        "neg".to_string()
    }
}

fn evaluate_query(
    index: &crate::index::Index,
    q: &QueryEntry,
    config: &MatcherConfig,
    explain_misses: bool,
) -> QueryOutcome {
    let started = Instant::now();
    let result = crate::screening::identify_file(index, &q.path, &DecodeLimits::default(), config);
    let seconds = started.elapsed().as_secs_f64();
    let mut outcome = QueryOutcome {
        query_id: q.query_id.clone(),
        condition: q.condition.clone(),
        length: length_label(q),
        positive: q.work_id.is_some(),
        duration_s: 0.0,
        seconds,
        correct_score: 0.0,
        wrong_score: 0.0,
        ref_start_error_s: None,
        correct_match: None,
        wrong_match: None,
        error: None,
        true_alignment_score: None,
    };
    match result {
        Err(err) => outcome.error = Some(err.to_string()),
        Ok(found) => {
            outcome.duration_s = found.duration_s;
            for m in &found.matches {
                score_match(q, m, &mut outcome);
            }
        }
    }
    let found = outcome
        .correct_match
        .as_ref()
        .is_some_and(|m| m.score >= config.confident_score);
    if explain_misses && !found && outcome.error.is_none() {
        outcome.true_alignment_score = true_alignment_score(index, q);
    }
    outcome
}

/// The right work's score at the query's true alignment (see
/// [`crate::matcher::score_alignment`]); `None` for a negative or a query
/// without a known placement.
fn true_alignment_score(index: &crate::index::Index, q: &QueryEntry) -> Option<f64> {
    let (work_id, ref_start_s, query_start_s, query_end_s) = (
        q.work_id.as_deref()?,
        q.ref_start_s?,
        q.query_start_s?,
        q.query_end_s?,
    );
    let (fingerprint, _) = crate::fingerprint::audio::fingerprint_file(
        &q.path,
        &DecodeLimits::default(),
        crate::fingerprint::Side::Query,
    )
    .ok()?;
    let alignment = crate::matcher::KnownAlignment {
        query_start_s,
        query_end_s,
        ref_start_s,
        speed_factor: q.speed_factor.unwrap_or(1.0),
        pitch_factor: q.pitch_factor.unwrap_or(1.0),
    };
    crate::matcher::score_alignment(index, &fingerprint, work_id, &alignment)
        .map(|evidence| evidence.score())
}

/// Tolerance when checking that a match lies where the excerpt was placed.
const PLACEMENT_SLACK_S: f64 = 2.0;

fn score_match(q: &QueryEntry, m: &Match, outcome: &mut QueryOutcome) {
    let right_work = q.work_id.as_deref() == Some(m.work_id.as_str());
    let placed = match (q.query_start_s, q.query_end_s) {
        (Some(s), Some(e)) => {
            m.query_end_s > s - PLACEMENT_SLACK_S && m.query_start_s < e + PLACEMENT_SLACK_S
        }
        _ => true,
    };
    if right_work && placed {
        if m.score > outcome.correct_score {
            outcome.correct_score = m.score;
            outcome.correct_match = Some(m.clone());
            if let (Some(ref_start), Some(q_start)) = (q.ref_start_s, q.query_start_s) {
                let predicted = m.ref_start_s + (q_start - m.query_start_s) * m.speed_factor;
                outcome.ref_start_error_s = Some((predicted - ref_start).abs());
            }
        }
    } else if m.score > outcome.wrong_score {
        outcome.wrong_score = m.score;
        outcome.wrong_match = Some(m.clone());
    }
}

#[derive(Debug, Default, Clone, Serialize)]
struct Cell {
    queries: usize,
    found: usize,
    wrong: usize,
    errors: usize,
    recall: f64,
    median_ref_error_s: Option<f64>,
    p95_ref_error_s: Option<f64>,
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted.get(i).copied()
}

fn summarise(outcomes: &[QueryOutcome], threshold: f64) -> BTreeMap<(String, String), Cell> {
    let mut cells: BTreeMap<(String, String), (Cell, Vec<f64>)> = BTreeMap::new();
    for o in outcomes {
        let (cell, errors) = cells
            .entry((o.condition.clone(), o.length.clone()))
            .or_default();
        cell.queries += 1;
        if o.error.is_some() {
            cell.errors += 1;
        }
        if o.correct_score >= threshold {
            cell.found += 1;
            if let Some(e) = o.ref_start_error_s {
                errors.push(e);
            }
        }
        if o.wrong_score >= threshold {
            cell.wrong += 1;
        }
    }
    cells
        .into_iter()
        .map(|(key, (mut cell, mut errors))| {
            errors.sort_by(f64::total_cmp);
            cell.recall = cell.found as f64 / cell.queries.max(1) as f64;
            cell.median_ref_error_s = percentile(&errors, 0.5);
            cell.p95_ref_error_s = percentile(&errors, 0.95);
            (key, cell)
        })
        .collect()
}

#[derive(Debug, Serialize)]
struct SweepRow {
    threshold: f64,
    recall_10s: f64,
    recall_5s: f64,
    false_positives: usize,
    false_positives_per_hour: f64,
}

#[derive(Debug, Serialize)]
struct EvalReport {
    config_id: String,
    confident_score: f64,
    queries: usize,
    negative_hours: f64,
    false_positives: usize,
    false_positives_per_hour: f64,
    /// Highest score of any match on a negative: the threshold at which the
    /// first false positive appears (None if no negative scored ≥ the lowest
    /// swept threshold).
    top_negative_score: Option<f64>,
    wrong_work_on_positives: usize,
    median_ref_error_s: Option<f64>,
    p95_ref_error_s: Option<f64>,
    audio_seconds_per_second: f64,
    latency_p50_s: Option<f64>,
    latency_p95_s: Option<f64>,
    latency_p99_s: Option<f64>,
    cells: Vec<(String, String, Cell)>,
    sweep: Vec<SweepRow>,
    outcomes: Vec<QueryOutcome>,
}

const SWEEP_THRESHOLDS: [f64; 9] = [3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0, 12.0, 15.0];

fn sweep(outcomes: &[QueryOutcome], negative_hours: f64) -> Vec<SweepRow> {
    let recall = |len: &str, t: f64| {
        let pos: Vec<&QueryOutcome> = outcomes
            .iter()
            .filter(|o| o.positive && o.length == len)
            .collect();
        pos.iter().filter(|o| o.correct_score >= t).count() as f64 / pos.len().max(1) as f64
    };
    SWEEP_THRESHOLDS
        .iter()
        .map(|&t| {
            let fp = outcomes
                .iter()
                .filter(|o| !o.positive && o.wrong_score >= t)
                .count();
            SweepRow {
                threshold: t,
                recall_10s: recall("10s", t),
                recall_5s: recall("5s", t),
                false_positives: fp,
                false_positives_per_hour: fp as f64 / negative_hours.max(1e-9),
            }
        })
        .collect()
}

/// The queries of `set` that `args` selects (conditions, per-cell limit).
fn selected_queries(set: &Path, args: &EvalArgs) -> Result<Vec<QueryEntry>> {
    let mut queries: Vec<QueryEntry> = read_jsonl(&set.join("queries.jsonl"))?;
    if let Some(list) = &args.conditions {
        let wanted: Vec<&str> = list.split(',').map(str::trim).collect();
        queries.retain(|q| wanted.contains(&q.condition.as_str()));
    }
    if let Some(limit) = args.per_cell {
        let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
        queries.retain(|q| {
            let n = seen
                .entry((q.condition.clone(), length_label(q)))
                .or_default();
            *n += 1;
            *n <= limit
        });
    }
    Ok(queries)
}

pub fn run(args: &EvalArgs) -> Result<u8> {
    let config = MatcherConfig {
        min_score: SWEEP_THRESHOLDS[0].min(args.thresholds.min_score),
        ..args.thresholds.matcher_config()
    };
    let (mut outcomes, mut wall) = (Vec::new(), 0.0);
    for set in &args.sets {
        super::require_dir(set, "evaluation set")?;
        let data = reference_index(set, args.rebuild, args.catalog_hours)?;
        let index = data.open_index()?;
        let queries = selected_queries(set, args)?;
        eprintln!(
            "eval: {}: {} queries against {} works…",
            set.display(),
            queries.len(),
            index.live_work_count()
        );
        let started = Instant::now();
        let mut part: Vec<QueryOutcome> = queries
            .par_iter()
            .map(|q| evaluate_query(&index, q, &config, args.explain_misses))
            .collect();
        wall += started.elapsed().as_secs_f64();
        if args.sets.len() > 1 {
            // Sets number their queries alike: name the set in pooled results.
            let name = set.file_name().unwrap_or(set.as_os_str()).to_string_lossy();
            for outcome in &mut part {
                outcome.query_id = format!("{name}/{}", outcome.query_id);
            }
        }
        outcomes.append(&mut part);
    }
    let report = build_report(outcomes, &config, wall);
    print_report(&report);
    if let Some(out) = &args.out {
        fs::write(out, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("write {}", out.display()))?;
        eprintln!("eval: wrote {}", out.display());
    }
    Ok(EXIT_CLEAN)
}

fn build_report(outcomes: Vec<QueryOutcome>, config: &MatcherConfig, wall_s: f64) -> EvalReport {
    let threshold = config.confident_score;
    let negative_hours: f64 = outcomes
        .iter()
        .filter(|o| !o.positive)
        .map(|o| o.duration_s)
        .sum::<f64>()
        / 3600.0;
    let cells = summarise(&outcomes, threshold);
    let false_positives = outcomes
        .iter()
        .filter(|o| !o.positive && o.wrong_score >= threshold)
        .count();
    let wrong_work_on_positives = outcomes
        .iter()
        .filter(|o| o.positive && o.wrong_score >= threshold)
        .count();
    let mut errors: Vec<f64> = outcomes
        .iter()
        .filter(|o| o.correct_score >= threshold)
        .filter_map(|o| o.ref_start_error_s)
        .collect();
    errors.sort_by(f64::total_cmp);
    let mut latencies: Vec<f64> = outcomes.iter().map(|o| o.seconds).collect();
    latencies.sort_by(f64::total_cmp);
    let audio_s: f64 = outcomes.iter().map(|o| o.duration_s).sum();
    EvalReport {
        config_id: format!("{CONFIG_ID:#010x}"),
        confident_score: threshold,
        queries: outcomes.len(),
        negative_hours,
        false_positives,
        false_positives_per_hour: false_positives as f64 / negative_hours.max(1e-9),
        top_negative_score: outcomes
            .iter()
            .filter(|o| !o.positive && o.wrong_score > 0.0)
            .map(|o| o.wrong_score)
            .max_by(f64::total_cmp),
        wrong_work_on_positives,
        median_ref_error_s: percentile(&errors, 0.5),
        p95_ref_error_s: percentile(&errors, 0.95),
        audio_seconds_per_second: audio_s / wall_s.max(1e-9),
        latency_p50_s: percentile(&latencies, 0.5),
        latency_p95_s: percentile(&latencies, 0.95),
        latency_p99_s: percentile(&latencies, 0.99),
        cells: cells
            .into_iter()
            .map(|((c, l), cell)| (c, l, cell))
            .collect(),
        sweep: sweep(&outcomes, negative_hours),
        outcomes,
    }
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.3}")).unwrap_or_else(|| "-".into())
}

fn print_report(r: &EvalReport) {
    println!(
        "\nearmark accuracy (config {}, confident score ≥ {})",
        r.config_id, r.confident_score
    );
    println!(
        "{:<16} {:>5} {:>6} {:>8} {:>6} {:>10} {:>10}",
        "condition", "len", "n", "recall", "wrong", "ref err50", "ref err95"
    );
    for (condition, length, c) in &r.cells {
        println!(
            "{:<16} {:>5} {:>6} {:>7.1}% {:>6} {:>10} {:>10}",
            condition,
            length,
            c.queries,
            if length == "neg" {
                0.0
            } else {
                100.0 * c.recall
            },
            c.wrong,
            fmt_opt(c.median_ref_error_s),
            fmt_opt(c.p95_ref_error_s)
        );
    }
    println!(
        "\nnegatives: {:.2} h, false positives {} ({:.2}/h); wrong work on positives: {}",
        r.negative_hours, r.false_positives, r.false_positives_per_hour, r.wrong_work_on_positives
    );
    match r.top_negative_score {
        Some(top) => println!(
            "top score on a negative: {top:.1} (first false positive at that threshold; margin to {}: {:.1})",
            r.confident_score,
            r.confident_score - top
        ),
        None => println!(
            "top score on a negative: below {} (no negative matched at all)",
            SWEEP_THRESHOLDS[0]
        ),
    }
    println!(
        "ref_start error: median {} s, p95 {} s",
        fmt_opt(r.median_ref_error_s),
        fmt_opt(r.p95_ref_error_s)
    );
    println!(
        "speed: {:.0} audio-s/s (decode+fingerprint+match, all cores); latency p50 {} s, p95 {} s, p99 {} s",
        r.audio_seconds_per_second,
        fmt_opt(r.latency_p50_s),
        fmt_opt(r.latency_p95_s),
        fmt_opt(r.latency_p99_s)
    );
    print_misses(r);
    println!("\nthreshold sweep:   score  recall10s  recall5s  FP  FP/h");
    for s in &r.sweep {
        println!(
            "                 {:>6.0}  {:>8.1}%  {:>7.1}%  {:>3}  {:.2}",
            s.threshold,
            100.0 * s.recall_10s,
            100.0 * s.recall_5s,
            s.false_positives,
            s.false_positives_per_hour
        );
    }
}

/// Per cell, the missed positives whose true alignment was scored
/// (`--explain-misses`): how many score at least the confident threshold
/// there (lost by the search) and how many below it (too little evidence).
fn print_misses(r: &EvalReport) {
    let mut cells: BTreeMap<(&str, &str), (usize, usize)> = BTreeMap::new();
    for o in &r.outcomes {
        if let Some(score) = o.true_alignment_score {
            let cell = cells.entry((&o.condition, &o.length)).or_default();
            if score >= r.confident_score {
                cell.0 += 1;
            } else {
                cell.1 += 1;
            }
        }
    }
    if cells.is_empty() {
        return;
    }
    println!(
        "\nmissed positives scored at their true alignment: at least {} (lost by the search) or below (too little evidence)",
        r.confident_score
    );
    println!(
        "{:<16} {:>5} {:>8} {:>8}",
        "condition", "len", "search", "evidence"
    );
    for ((condition, length), (search, evidence)) in cells {
        println!("{condition:<16} {length:>5} {search:>8} {evidence:>8}");
    }
}

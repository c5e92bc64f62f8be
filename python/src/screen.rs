//! Screening one source against an open data directory: fingerprint (file,
//! encoded bytes or PCM samples), match, and the policy verdict, as one
//! JSON result. Anything that goes wrong with the audio makes an `error`
//! result (fail closed); nothing here panics on input.

use std::path::{Path, PathBuf};

use earmark::content;
use earmark::data_dir::DataDir;
use earmark::decode::{DecodeLimits, MonoResampler, downmix};
use earmark::error::EngineError;
use earmark::fingerprint::audio;
use earmark::fingerprint::{Fingerprint, SAMPLE_RATE_HZ, Side, StreamingFingerprinter};
use earmark::index::Index;
use earmark::matcher::MatcherConfig;
use earmark::policy::{self, MatchEvidence, PolicyConfig, Verdict};
use earmark::registry::{Registry, Scope};
use earmark::screening::{Screened, Screener, Submission, SubmissionId};
use serde::Serialize;
use time::OffsetDateTime;

/// Resolution of reported durations (per second), as `earmark scan`.
const DURATION_RESOLUTION: f64 = 1000.0;
/// Highest sample rate accepted for PCM samples (Hz).
const MAX_PCM_RATE_HZ: u32 = 768_000;

/// One source, owned, ready to be screened without the GIL.
#[derive(Debug)]
pub enum Source {
    Path(PathBuf),
    Bytes(Vec<u8>),
    /// Interleaved float samples.
    Pcm {
        samples: Vec<f32>,
        sample_rate_hz: u32,
        channels: usize,
    },
    /// Could not be turned into audio on the Python side.
    Invalid(String),
}

/// A source with its label and the caller's submission id, if any.
#[derive(Debug)]
pub struct Item {
    pub source: Source,
    pub label: Label,
}

/// How a result names its submission.
#[derive(Debug)]
pub struct Label {
    pub name: String,
    /// The caller's id; derived from the content when `None`.
    pub submission_id: Option<String>,
}

/// A match as `earmark scan`'s report writes it.
#[derive(Debug, Serialize)]
struct MatchOut {
    work_id: String,
    title: Option<String>,
    isrc: Option<String>,
    holder: Option<String>,
    consent: String,
    consent_record: Option<i64>,
    outcome: String,
    confident: bool,
    score: f64,
    start_s: f64,
    end_s: f64,
    ref_start_s: f64,
    ref_end_s: f64,
    speed_factor: f64,
    pitch_factor: f64,
}

#[derive(Debug, Serialize)]
struct AttributionOut {
    work_id: String,
    title: String,
    isrc: Option<String>,
    holder: String,
    seconds_matched: f64,
}

/// The result handed to Python (as JSON): the fields of `earmark.ScreenResult`.
#[derive(Debug, Serialize)]
struct ResultOut {
    verdict: &'static str,
    name: String,
    submission_id: Option<String>,
    content_sha256: Option<String>,
    duration_s: Option<f64>,
    matches: Vec<MatchOut>,
    reasons: Vec<String>,
    error: Option<String>,
    purpose: String,
    evaluated_at: String,
    index_generation: u64,
    policy_version: String,
    engine_version: String,
    attributions: Vec<AttributionOut>,
    /// New ledger entries this screening wrote.
    attributions_recorded: usize,
}

/// Everything screening reads, shared by the threads of the pool.
pub struct Screening {
    pub index: Index,
    /// Opened read-only: consent is read, nothing is written.
    pub registry: Registry,
    /// The same registry opened for writing, when allowed opted-in uses are
    /// recorded in the attribution ledger.
    pub ledger: Option<Registry>,
    pub purpose: Scope,
    pub policy: PolicyConfig,
    pub matcher: MatcherConfig,
    pub limits: DecodeLimits,
}

/// What fingerprinting found out about the audio.
struct Fingerprinted {
    fingerprint: Fingerprint,
    duration_s: f64,
    content_sha256: Option<String>,
}

fn round_duration(seconds: f64) -> f64 {
    (seconds * DURATION_RESOLUTION).round() / DURATION_RESOLUTION
}

/// The file-name extension of `name`, a format hint for encoded bytes.
fn extension(name: &str) -> Option<String> {
    Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_owned)
}

/// Fingerprints PCM samples: down-mix, resample to the fingerprint rate, prints.
pub fn fingerprint_pcm(
    samples: &[f32],
    sample_rate_hz: u32,
    channels: usize,
    name: &str,
    limits: &DecodeLimits,
) -> Result<(Fingerprint, f64), String> {
    if channels == 0 || channels > limits.max_channels {
        return Err(format!(
            "{name}: {channels} channels (1 to {} supported)",
            limits.max_channels
        ));
    }
    if sample_rate_hz == 0 || sample_rate_hz > MAX_PCM_RATE_HZ {
        return Err(format!(
            "{name}: sample rate {sample_rate_hz} Hz (1 to {MAX_PCM_RATE_HZ} Hz supported)"
        ));
    }
    if !samples.len().is_multiple_of(channels) {
        return Err(format!(
            "{name}: {} samples do not split into {channels} channels",
            samples.len()
        ));
    }
    let frames = samples.len() / channels;
    if frames == 0 {
        return Err(format!("{name}: no samples"));
    }
    let duration_s = frames as f64 / f64::from(sample_rate_hz);
    if duration_s > limits.max_duration_s {
        return Err(format!(
            "{name}: {duration_s:.0} s of audio, longer than the limit of {:.0} s",
            limits.max_duration_s
        ));
    }
    if let Some(i) = samples.iter().position(|s| !s.is_finite()) {
        return Err(format!(
            "{name}: sample {i} is not a finite number (NaN or infinity)"
        ));
    }
    let mut mono = Vec::with_capacity(frames);
    downmix(samples, channels, &mut mono);
    let mut resampler =
        MonoResampler::new(sample_rate_hz, SAMPLE_RATE_HZ, name).map_err(|e| e.to_string())?;
    let mut fingerprinter = StreamingFingerprinter::new(Side::Query);
    resampler
        .push(&mono, &mut |block| fingerprinter.push(block))
        .map_err(|e| e.to_string())?;
    resampler
        .finish(&mut |block| fingerprinter.push(block))
        .map_err(|e| e.to_string())?;
    Ok((fingerprinter.finish(), duration_s))
}

impl Screening {
    /// Opens a data directory for screening (index memory-mapped, registry
    /// read-only; with `record`, also for writing the ledger); fails when it
    /// is not one.
    pub fn open(
        root: &Path,
        purpose: Scope,
        policy: PolicyConfig,
        record: bool,
    ) -> Result<Self, OpenError> {
        let meta = std::fs::metadata(root).map_err(|source| OpenError::Missing {
            path: root.to_path_buf(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(OpenError::NotADirectory {
                path: root.to_path_buf(),
            });
        }
        let data = DataDir::new(root);
        if !data.has_registry() {
            return Err(OpenError::NoRegistry {
                path: data.registry_path(),
            });
        }
        let index = data.open_index().map_err(OpenError::Engine)?;
        let registry = data.open_registry_read_only().map_err(OpenError::Engine)?;
        let ledger = if record {
            Some(data.open_registry().map_err(OpenError::Engine)?)
        } else {
            None
        };
        Ok(Self {
            index,
            registry,
            ledger,
            purpose,
            policy,
            matcher: MatcherConfig::default(),
            limits: DecodeLimits::default(),
        })
    }

    /// Screens one item into its JSON result.
    pub fn screen(&self, item: Item, at: OffsetDateTime) -> String {
        let at = earmark::registry::model::normalize_time(at);
        let Item { source, label } = item;
        let out = match self.fingerprint(source, &label.name) {
            Ok(found) => self.decide(&label, found, at),
            Err(reason) => self.error_result(&label, reason, None, None, at),
        };
        serde_json::to_string(&out).unwrap_or_else(|e| {
            // Only non-finite floats could fail, and they are rejected before.
            format!(r#"{{"verdict":"error","name":"","error":"result: {e}"}}"#)
        })
    }

    fn fingerprint(&self, source: Source, name: &str) -> Result<Fingerprinted, String> {
        match source {
            Source::Invalid(reason) => Err(reason),
            Source::Path(path) => {
                let sha = content::sha256_file(&path).map_err(|e| e.to_string())?;
                let (fingerprint, info) = audio::fingerprint_file(&path, &self.limits, Side::Query)
                    .map_err(|e| e.to_string())?;
                Ok(Fingerprinted {
                    fingerprint,
                    duration_s: info.duration_s,
                    content_sha256: Some(sha),
                })
            }
            Source::Bytes(bytes) => {
                let sha = content::sha256_hex(&bytes);
                let ext = extension(name);
                let (fingerprint, info) = audio::fingerprint_bytes(
                    bytes,
                    name,
                    ext.as_deref(),
                    &self.limits,
                    Side::Query,
                )
                .map_err(|e| e.to_string())?;
                Ok(Fingerprinted {
                    fingerprint,
                    duration_s: info.duration_s,
                    content_sha256: Some(sha),
                })
            }
            Source::Pcm {
                samples,
                sample_rate_hz,
                channels,
            } => {
                let (fingerprint, duration_s) =
                    fingerprint_pcm(&samples, sample_rate_hz, channels, name, &self.limits)?;
                Ok(Fingerprinted {
                    fingerprint,
                    duration_s,
                    content_sha256: None,
                })
            }
        }
    }

    /// The submission's id by the rule of [`SubmissionId`]: the caller's id,
    /// else `sha256:` of the encoded audio, else `prints:` of the prints.
    fn submission_id(label: &Label, found: &Fingerprinted) -> Result<SubmissionId, String> {
        if let Some(id) = &label.submission_id {
            return SubmissionId::named(id).map_err(|e| format!("{}: {e}", label.name));
        }
        Ok(match &found.content_sha256 {
            Some(sha) => {
                SubmissionId::from_sha256(sha).map_err(|e| format!("{}: {e}", label.name))?
            }
            None => SubmissionId::of_prints(&found.fingerprint.prints),
        })
    }

    fn decide(&self, label: &Label, found: Fingerprinted, at: OffsetDateTime) -> ResultOut {
        let duration = Some(round_duration(found.duration_s));
        let id = match Self::submission_id(label, &found) {
            Ok(id) => id,
            Err(reason) => {
                return self.error_result(label, reason, found.content_sha256, duration, at);
            }
        };
        let submission = Submission {
            id,
            name: label.name.clone(),
        };
        let screener = Screener::new(&self.index, &self.registry, &self.policy, &self.matcher);
        let screener = match &self.ledger {
            Some(ledger) => screener.recording_to(ledger),
            None => screener,
        };
        match screener.screen(&submission, &found.fingerprint, self.purpose, at) {
            Ok(screened) => verdict_result(label, screened, found.content_sha256, duration),
            Err(e) => {
                let mut out = self.error_result(
                    label,
                    format!("policy: {e}"),
                    found.content_sha256,
                    duration,
                    at,
                );
                out.submission_id = Some(submission.id.as_str().to_owned());
                out.reasons = vec!["not screened: the verdict could not be made".into()];
                out
            }
        }
    }

    fn error_result(
        &self,
        label: &Label,
        reason: String,
        content_sha256: Option<String>,
        duration_s: Option<f64>,
        at: OffsetDateTime,
    ) -> ResultOut {
        ResultOut {
            verdict: "error",
            name: label.name.clone(),
            submission_id: label.submission_id.clone(),
            content_sha256,
            duration_s,
            matches: Vec::new(),
            reasons: vec![format!("not screened: {reason}")],
            error: Some(reason),
            purpose: self.purpose.as_str().to_owned(),
            evaluated_at: rfc3339(at),
            index_generation: self.index.generation(),
            policy_version: policy::POLICY_VERSION.to_owned(),
            engine_version: earmark::ENGINE_VERSION.to_owned(),
            attributions: Vec::new(),
            attributions_recorded: 0,
        }
    }
}

fn verdict_result(
    label: &Label,
    screened: Screened,
    content_sha256: Option<String>,
    duration_s: Option<f64>,
) -> ResultOut {
    let Screened {
        verdict,
        attributions_recorded,
    } = screened;
    let verdict: Verdict = verdict;
    ResultOut {
        verdict: verdict.decision.as_str(),
        name: label.name.clone(),
        submission_id: Some(verdict.submission_id),
        content_sha256,
        duration_s,
        matches: verdict.evidence.iter().map(match_out).collect(),
        reasons: verdict.reasons,
        error: None,
        purpose: verdict.purpose.as_str().to_owned(),
        evaluated_at: rfc3339(verdict.evaluated_at),
        index_generation: verdict.index_generation,
        policy_version: verdict.policy_version,
        engine_version: verdict.engine_version,
        attributions: verdict
            .attributions
            .iter()
            .map(|a| AttributionOut {
                work_id: a.work_id.clone(),
                title: a.title.clone(),
                isrc: a.isrc.as_ref().map(|i| i.as_str().to_owned()),
                holder: a.holder.clone(),
                seconds_matched: a.seconds_matched,
            })
            .collect(),
        attributions_recorded,
    }
}

fn match_out(e: &MatchEvidence) -> MatchOut {
    MatchOut {
        work_id: e.work_id.clone(),
        title: e.title.clone(),
        isrc: e.isrc.as_ref().map(|i| i.as_str().to_owned()),
        holder: e.holder.clone(),
        consent: e.consent.as_str().to_owned(),
        consent_record: e.deciding_record.as_ref().map(|r| r.id),
        outcome: e.outcome.as_str().to_owned(),
        confident: e.confident,
        score: e.score,
        start_s: e.query_start_s,
        end_s: e.query_end_s,
        ref_start_s: e.ref_start_s,
        ref_end_s: e.ref_end_s,
        speed_factor: e.speed_factor,
        pitch_factor: e.pitch_factor,
    }
}

/// RFC 3339 in UTC, as the summaries write instants.
pub fn rfc3339(at: OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Why a data directory could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{path}: no such data directory ({source})")]
    Missing {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a directory")]
    NotADirectory { path: PathBuf },
    #[error(
        "{path} does not exist: not an earmark data directory (create one with `earmark works add` or `earmark works import`)"
    )]
    NoRegistry { path: PathBuf },
    #[error(transparent)]
    Engine(EngineError),
}

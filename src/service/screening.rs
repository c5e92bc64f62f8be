//! `earmark.v1.Screening`: screen uploaded audio or client-side fingerprints.
//!
//! The async handler authenticates, reads the client stream within its
//! limits, admits the job (or sheds it), then hands it to the CPU pool:
//! decode → fingerprint → match → policy → ledger. The job stops at its next
//! check once the caller has gone or the deadline has passed. Matching uses
//! an index snapshot no older than the generation the registry vouches for
//! (`Ready::current_index`), or the request fails `UNAVAILABLE`.

use std::sync::Arc;

use tonic::{Request, Response, Status, Streaming};

use super::Service;
use super::auth;
use super::call::{self, Call};
use super::convert;
use super::error::ServiceError;
use super::metrics;
use super::pb;
use super::state::{Cancel, Ready, Settings};
use crate::decode::{self, DecodeLimits};
use crate::fingerprint::{
    CONFIG_ID, Fingerprint, HASH_BITS, PeakPoint, Print, SAMPLE_RATE_HZ, Side,
    StreamingFingerprinter,
};
use crate::matcher;
use crate::policy::{self, Decision, Verdict};
use crate::registry::Scope;
use crate::screening::{Screener, Submission, SubmissionId};

/// What one screening is about, validated.
struct SubmissionRequest {
    /// The caller's submission id, if any (else one is derived by the rule of
    /// [`SubmissionId`]).
    id: Option<SubmissionId>,
    name: String,
    purpose: Scope,
    policy: policy::PolicyConfig,
    record_attributions: bool,
}

impl SubmissionRequest {
    /// The submission, named by the caller's id or else by `derived`.
    fn submission(&self, derived: impl FnOnce() -> SubmissionId) -> Submission {
        Submission {
            id: self.id.clone().unwrap_or_else(derived),
            name: self.name.clone(),
        }
    }

    fn from_pb(meta: &pb::SubmissionMetadata, settings: &Settings) -> Result<Self, ServiceError> {
        let purpose = convert::scope_from_pb("metadata.purpose", meta.purpose)?;
        let mut policy = settings.policy.clone();
        if let Some(t) = convert::territory("metadata.territory", &meta.territory)? {
            policy.territory = Some(t);
        }
        let id = match meta.submission_id.trim() {
            "" => None,
            id => Some(
                SubmissionId::named(id)
                    .map_err(|e| ServiceError::invalid("metadata.submission_id", e.to_string()))?,
            ),
        };
        let name = meta.file_name.trim();
        Ok(Self {
            id,
            record_attributions: !meta.no_ledger,
            name: if name.is_empty() {
                UNNAMED.to_owned()
            } else {
                name.to_owned()
            },
            purpose,
            policy,
        })
    }
}

/// Submission name used when the client gives none.
const UNNAMED: &str = "upload";

/// What a screening job produces.
struct Screened {
    verdict: Verdict,
    recorded: usize,
    audio: pb::AudioSummary,
}

impl Screened {
    fn into_response(
        self,
        request_id: &str,
    ) -> Result<(pb::ScreenResponse, Option<String>), ServiceError> {
        let verdict_json = serde_json::to_string(&self.verdict)
            .map_err(|e| ServiceError::Internal(format!("serialising the verdict: {e}")))?;
        let attributions_recorded = if self.verdict.decision == Decision::Allow {
            self.verdict
                .attributions
                .iter()
                .map(convert::attribution)
                .collect()
        } else {
            Vec::new()
        };
        metrics::screened(self.audio.duration_s, self.verdict.decision);
        let decision = self.verdict.decision.as_str().to_owned();
        Ok((
            pb::ScreenResponse {
                verdict: Some(convert::verdict(&self.verdict)),
                attributions_recorded,
                verdict_json,
                audio: Some(self.audio),
                request_id: request_id.to_owned(),
                new_ledger_entries: u32::try_from(self.recorded).unwrap_or(u32::MAX),
            },
            Some(decision),
        ))
    }
}

#[tonic::async_trait]
impl pb::screening_server::Screening for Service {
    async fn screen(
        &self,
        request: Request<Streaming<pb::ScreenRequest>>,
    ) -> Result<Response<pb::ScreenResponse>, Status> {
        let call = self.call("Screen", &request);
        let result = self.screen_audio(&call, request).await;
        call.finish(result)
    }

    async fn screen_fingerprints(
        &self,
        request: Request<Streaming<pb::ScreenFingerprintsRequest>>,
    ) -> Result<Response<pb::ScreenResponse>, Status> {
        let call = self.call("ScreenFingerprints", &request);
        let result = self.screen_prints(&call, request).await;
        call.finish(result)
    }
}

impl Service {
    async fn screen_audio(
        &self,
        call: &Call,
        request: Request<Streaming<pb::ScreenRequest>>,
    ) -> Result<(pb::ScreenResponse, Option<String>), ServiceError> {
        let principal = self.authenticate(request.metadata()).await?;
        principal.require_screener()?;
        let ready = self.shared.ready()?;
        let mut stream = request.into_inner();
        let meta = call::read_metadata(&mut stream).await?;
        let settings = self.shared.settings.clone();
        let asked = SubmissionRequest::from_pb(&meta, &settings)?;
        let bytes = call::read_chunks(&mut stream, &meta, settings.limits.max_upload_bytes).await?;
        // A CPU slot only once the upload is in: idle streams hold none.
        let _permit = self.shared.admit(call.method)?;
        let hint = convert::extension_hint(&meta.mime_type, &meta.file_name);
        let screened = self
            .shared
            .run_cpu(call.deadline, move |cancel| {
                screen_bytes(&ready, &settings, asked, bytes, hint.as_deref(), cancel)
            })
            .await?;
        screened.into_response(&call.request_id)
    }

    async fn screen_prints(
        &self,
        call: &Call,
        request: Request<Streaming<pb::ScreenFingerprintsRequest>>,
    ) -> Result<(pb::ScreenResponse, Option<String>), ServiceError> {
        let principal = self.authenticate(request.metadata()).await?;
        principal.require_screener()?;
        let ready = self.shared.ready()?;
        let settings = self.shared.settings.clone();
        let mut stream = request.into_inner();
        let header = match call::next_message(&mut stream).await?.and_then(|m| m.part) {
            Some(pb::screen_fingerprints_request::Part::Header(h)) => h,
            Some(
                pb::screen_fingerprints_request::Part::Prints(_)
                | pb::screen_fingerprints_request::Part::Peaks(_),
            ) => {
                return Err(ServiceError::invalid(
                    "header",
                    "the first message must carry the header",
                ));
            }
            None => {
                return Err(ServiceError::invalid(
                    "header",
                    "the stream ended before the header",
                ));
            }
        };
        let (asked, fingerprint) = read_prints(&mut stream, &header, &settings).await?;
        let _permit = self.shared.admit(call.method)?;
        let duration_s = if header.duration_s.is_finite() && header.duration_s > 0.0 {
            header.duration_s
        } else {
            fingerprint.duration_s()
        };
        let screened = self
            .shared
            .run_cpu(call.deadline, move |cancel| {
                screen_fingerprint(&ready, &settings, asked, fingerprint, duration_s, cancel)
            })
            .await?;
        screened.into_response(&call.request_id)
    }

    /// The caller's principal (blocking key check off the async workers).
    pub(super) async fn authenticate(
        &self,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<auth::Principal, ServiceError> {
        match self.auth {
            auth::AuthMode::InsecureNoAuth => Ok(auth::insecure_principal()),
            auth::AuthMode::ApiKeys => {
                let token = auth::bearer_token(metadata)?;
                let ready = self.shared.ready()?;
                super::state::run_blocking(move || auth::verify(&ready.reader, &token)).await
            }
        }
    }
}

/// Validates the header, then collects the print batches within the limits.
async fn read_prints(
    stream: &mut Streaming<pb::ScreenFingerprintsRequest>,
    header: &pb::FingerprintHeader,
    settings: &Settings,
) -> Result<(SubmissionRequest, Fingerprint), ServiceError> {
    if header.config_id != CONFIG_ID {
        return Err(ServiceError::ConfigMismatch {
            found: header.config_id,
            expected: CONFIG_ID,
        });
    }
    let meta = header
        .submission
        .as_ref()
        .ok_or_else(|| ServiceError::invalid("header.submission", "must be set"))?;
    let asked = SubmissionRequest::from_pb(meta, settings)?;
    let limits = &settings.limits;
    let frames = usize::try_from(header.frames).unwrap_or(usize::MAX);
    let fingerprint_s = frames as f64 / crate::fingerprint::FRAMES_PER_SECOND;
    if fingerprint_s > limits.max_audio_s || header.duration_s > limits.max_audio_s {
        return Err(ServiceError::invalid(
            "header.frames",
            format!(
                "{:.1} s of audio exceeds the limit of {:.1} s",
                fingerprint_s.max(header.duration_s),
                limits.max_audio_s
            ),
        ));
    }
    let max_prints = limits.max_prints();
    let mut prints: Vec<Print> = Vec::new();
    let mut peaks: Vec<PeakPoint> = Vec::new();
    let mut brief_peaks: Vec<PeakPoint> = Vec::new();
    while let Some(message) = call::next_message(stream).await? {
        let batch = match message.part {
            Some(pb::screen_fingerprints_request::Part::Prints(b)) => b,
            Some(pb::screen_fingerprints_request::Part::Peaks(b)) => {
                let peaks = if b.brief {
                    &mut brief_peaks
                } else {
                    &mut peaks
                };
                let total = peaks.len() as u64 + b.t_frames.len() as u64;
                if total > max_prints {
                    return Err(ServiceError::TooManyPrints {
                        count: total,
                        max: max_prints,
                    });
                }
                crate::fingerprint::file::append_peaks(peaks, &b)
                    .map_err(|reason| ServiceError::invalid("peaks", reason))?;
                continue;
            }
            Some(pb::screen_fingerprints_request::Part::Header(_)) => {
                return Err(ServiceError::invalid(
                    "header",
                    "the header may only be sent once",
                ));
            }
            None => continue,
        };
        let total = prints.len() as u64 + batch.hashes.len() as u64;
        if total > max_prints {
            return Err(ServiceError::TooManyPrints {
                count: total,
                max: max_prints,
            });
        }
        append_batch(&mut prints, &batch, frames)?;
    }
    Ok((
        asked,
        Fingerprint {
            prints,
            frames,
            peaks,
            brief_peaks,
        },
    ))
}

/// Checks one batch and appends its prints. Anchor frames must lie inside the
/// declared `frames` (which the audio-duration limit bounds): the matcher's
/// work grows with the span of query times, so an unchecked `t_frame` near
/// `u32::MAX` would let one small request allocate gigabytes.
fn append_batch(
    prints: &mut Vec<Print>,
    batch: &pb::PrintBatch,
    frames: usize,
) -> Result<(), ServiceError> {
    let n = batch.hashes.len();
    if batch.t_frames.len() != n || batch.f_half_bins.len() != n {
        return Err(ServiceError::invalid(
            "prints",
            "hashes, t_frames and f_half_bins must have the same length",
        ));
    }
    let warps = crate::fingerprint::file::print_warps(batch)
        .map_err(|reason| ServiceError::invalid("prints.warps", reason))?;
    prints.reserve(n);
    for (((&hash, &t_frame), &f), warp) in batch
        .hashes
        .iter()
        .zip(&batch.t_frames)
        .zip(&batch.f_half_bins)
        .zip(warps)
    {
        if hash >> HASH_BITS != 0 {
            return Err(ServiceError::invalid(
                "prints.hashes",
                format!("hash {hash:#x} has more than {HASH_BITS} bits"),
            ));
        }
        if usize::try_from(t_frame).map_or(true, |t| t >= frames) {
            return Err(ServiceError::invalid(
                "prints.t_frames",
                format!("anchor frame {t_frame} is not below header.frames ({frames})"),
            ));
        }
        let f_half_bins = u8::try_from(f).map_err(|_| {
            ServiceError::invalid("prints.f_half_bins", format!("{f} is out of range 0..=255"))
        })?;
        prints.push(Print {
            hash,
            t_frame,
            f_half_bins,
            warp,
        });
    }
    Ok(())
}

/// Decodes, fingerprints and screens uploaded bytes (CPU pool).
fn screen_bytes(
    ready: &Ready,
    settings: &Settings,
    request: SubmissionRequest,
    bytes: Vec<u8>,
    hint: Option<&str>,
    cancel: &Cancel,
) -> Result<Screened, ServiceError> {
    let byte_len = bytes.len() as u64;
    let content_id = SubmissionId::of_content(&bytes);
    let sha256 = content_id.content_sha256().unwrap_or_default().to_owned();
    let limits = DecodeLimits {
        max_bytes: settings.limits.max_upload_bytes,
        max_duration_s: settings.limits.max_audio_s,
        ..DecodeLimits::default()
    };
    let mut fingerprinter = StreamingFingerprinter::new(Side::Query);
    let info = decode::decode_bytes(
        bytes,
        &request.name,
        hint,
        &limits,
        SAMPLE_RATE_HZ,
        |block| {
            // Once the caller has gone, skip the expensive part; decoding stops soon.
            if !cancel.is_raised() {
                fingerprinter.push(block);
            }
        },
    )?;
    cancel.check()?;
    let fingerprint = fingerprinter.finish();
    let audio = pb::AudioSummary {
        duration_s: info.duration_s,
        codec: info.codec.clone(),
        source_sample_rate_hz: info.source_sample_rate_hz,
        channels: u32::try_from(info.channels).unwrap_or(u32::MAX),
        bytes: byte_len,
        sha256: sha256.clone(),
        prints: fingerprint.prints.len() as u64,
    };
    let submission = request.submission(|| content_id);
    decide(
        ready,
        settings,
        &request,
        &submission,
        &fingerprint,
        audio,
        cancel,
    )
}

/// Screens client-computed prints (CPU pool).
fn screen_fingerprint(
    ready: &Ready,
    settings: &Settings,
    request: SubmissionRequest,
    fingerprint: Fingerprint,
    duration_s: f64,
    cancel: &Cancel,
) -> Result<Screened, ServiceError> {
    let submission = request.submission(|| SubmissionId::of_prints(&fingerprint.prints));
    let audio = pb::AudioSummary {
        duration_s,
        prints: fingerprint.prints.len() as u64,
        ..pb::AudioSummary::default()
    };
    decide(
        ready,
        settings,
        &request,
        &submission,
        &fingerprint,
        audio,
        cancel,
    )
}

/// Matches, then has the [`Screener`] decide and record an allowed use
/// (unless the caller has gone by then).
fn decide(
    ready: &Ready,
    settings: &Settings,
    request: &SubmissionRequest,
    submission: &Submission,
    fingerprint: &Fingerprint,
    audio: pb::AudioSummary,
    cancel: &Cancel,
) -> Result<Screened, ServiceError> {
    // Fail closed: never a verdict from an index older than the registry.
    let wait = cancel
        .time_left()
        .map_or(settings.index_sync_timeout, |left| {
            left.min(settings.index_sync_timeout)
        });
    let index: Arc<_> = ready.current_index(wait)?;
    let screener = Screener::new(&index, &ready.reader, &request.policy, &settings.matcher)
        .recording_if(request.record_attributions, ready.writer_registry());
    let matches = matcher::find_matches(&index, fingerprint, &settings.matcher);
    cancel.check()?;
    let now = ready.reader.now();
    let screened = screener.decide(submission, &matches, request.purpose, now)?;
    Ok(Screened {
        verdict: screened.verdict,
        recorded: screened.attributions_recorded,
        audio,
    })
}

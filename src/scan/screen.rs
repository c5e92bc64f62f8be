//! Screening one item: decode and fingerprint each audio part, then have the
//! [`Screener`] (or the screening server) decide on it. An item's verdict is
//! the strictest of its parts'. Anything that goes wrong makes the item an
//! `error` row (fail closed); nothing here stops the scan.

use sha2::Digest;
use time::OffsetDateTime;

use super::error::ScanError;
use super::item::{Item, Member, Payload};
use super::remote::RemoteScreener;
use super::report::{PartVerdict, ReportMatch, ReportRow, RowVerdict};
use super::sniff;
use crate::content::sha256_hex;
use crate::decode::DecodeLimits;
use crate::fingerprint::{Fingerprint, Side};
use crate::policy::Verdict;
use crate::registry::Scope;
use crate::screening::{Screener, Submission, SubmissionId};

/// Resolution of reported durations (seconds).
const DURATION_RESOLUTION: f64 = 1000.0;

/// Where matching and the verdict happen.
pub enum Backend<'a> {
    /// This machine's index, registry and ledger.
    Local(&'a Screener<'a>),
    /// A screening server (`--remote`); fingerprints are computed here.
    Remote(&'a RemoteScreener),
}

/// Everything a worker needs, shared read-only by all workers.
pub struct ScreenContext<'a> {
    pub backend: Backend<'a>,
    pub limits: DecodeLimits,
    pub purpose: Scope,
    /// The instant consent is evaluated at (the start of the scan).
    pub at: OffsetDateTime,
    /// Compute `content_sha256` of every item.
    pub hash_content: bool,
    /// Keep in-memory audio after screening (a filtered copy needs it).
    pub keep_payload: bool,
}

/// What decoding found in one audio part of an item.
struct Part {
    member: Option<String>,
    duration_s: f64,
    sha256: Option<String>,
    verdict: PartVerdict,
}

/// Why an item has no row yet.
enum Failure {
    /// The item cannot be screened: an `error` row.
    Item(String),
    /// The scan cannot go on (the screening server is unusable).
    Fatal(ScanError),
}

impl From<String> for Failure {
    fn from(reason: String) -> Self {
        Failure::Item(reason)
    }
}

/// Screens one item and returns its report row; `Err` only when the scan
/// cannot go on (a remote server that cannot be used).
pub fn screen(item: &mut Item, ctx: &ScreenContext<'_>) -> Result<ReportRow, ScanError> {
    let mut row = ReportRow {
        item: item.id.clone(),
        source: item.source.clone(),
        kind: item.kind,
        position: item.position,
        duration_s: None,
        content_sha256: None,
        verdict: RowVerdict::Error,
        matches: Vec::new(),
        reasons: Vec::new(),
        error: None,
    };
    let parts = match decode_parts(item, ctx) {
        Ok(parts) => parts,
        Err(Failure::Fatal(e)) => return Err(e),
        Err(Failure::Item(reason)) => {
            row.reasons = vec![format!("not screened: {reason}")];
            row.error = Some(reason);
            return Ok(row);
        }
    };
    let duration: f64 = parts.iter().map(|p| p.duration_s).sum();
    row.duration_s = Some((duration * DURATION_RESOLUTION).round() / DURATION_RESOLUTION);
    row.content_sha256 = combined_sha(&parts);
    combine(&mut row, parts);
    Ok(row)
}

/// The item's verdict: the strictest of its parts' (block over flag over
/// allow), with every part's reasons (prefixed by the member when there are
/// several) and matches.
fn combine(row: &mut ReportRow, parts: Vec<Part>) {
    let several = parts.len() > 1;
    let mut decision = RowVerdict::Allow;
    for part in parts {
        decision = decision.max(part.verdict.decision);
        let prefix = match (&part.member, several) {
            (Some(member), true) => format!("{member}: "),
            _ => String::new(),
        };
        row.reasons.extend(
            part.verdict
                .reasons
                .into_iter()
                .map(|r| format!("{prefix}{r}")),
        );
        row.matches.extend(part.verdict.matches);
    }
    row.verdict = decision;
}

/// A local verdict in the report's terms.
fn part_verdict(verdict: Verdict, member: Option<&str>) -> PartVerdict {
    PartVerdict {
        decision: verdict.decision.into(),
        matches: verdict
            .evidence
            .iter()
            .map(|e| ReportMatch::from_evidence(e, member.map(str::to_owned)))
            .collect(),
        reasons: verdict.reasons,
    }
}

/// One hash for the item: the part's own, or a hash over `name sha` lines.
fn combined_sha(parts: &[Part]) -> Option<String> {
    match parts {
        [one] => one.sha256.clone(),
        many => {
            let mut hasher = sha2::Sha256::new();
            for p in many {
                let sha = p.sha256.as_ref()?;
                hasher.update(p.member.as_deref().unwrap_or_default().as_bytes());
                hasher.update(b" ");
                hasher.update(sha.as_bytes());
                hasher.update(b"\n");
            }
            Some(hex::encode(hasher.finalize()))
        }
    }
}

fn decode_parts(item: &mut Item, ctx: &ScreenContext<'_>) -> Result<Vec<Part>, Failure> {
    match &mut item.payload {
        Payload::Failed(reason) => Err(Failure::Item(reason.clone())),
        Payload::File(path) => {
            let sha256 = if ctx.hash_content {
                Some(crate::content::sha256_file(path).map_err(|e| e.to_string())?)
            } else {
                None
            };
            let (fingerprint, info) =
                crate::fingerprint::audio::fingerprint_file(path, &ctx.limits, Side::Query)
                    .map_err(|e| e.to_string())?;
            let verdict = decide(
                ctx,
                fingerprint,
                info.duration_s,
                &item.id,
                sha256.as_deref(),
                None,
            )?;
            Ok(vec![Part {
                member: None,
                duration_s: info.duration_s,
                sha256,
                verdict,
            }])
        }
        Payload::Bytes { name, data } => {
            let data = take_or_clone(data, ctx.keep_payload);
            let ext = std::path::Path::new(name.as_str())
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_owned);
            let part = decode_bytes(data, name, ext.as_deref(), None, ctx)?;
            Ok(vec![part])
        }
        Payload::Sample(members) => {
            let audio: Vec<&mut Member> = members.iter_mut().filter(|m| is_audio(m)).collect();
            if audio.is_empty() {
                return Err(Failure::Item("the sample has no audio member".into()));
            }
            let mut parts = Vec::with_capacity(audio.len());
            for member in audio {
                let Some(data) = member.data.as_mut() else {
                    return Err(Failure::Item(format!(
                        "{}: {} bytes is too large to screen in memory",
                        member.name, member.size
                    )));
                };
                let data = take_or_clone(data, ctx.keep_payload);
                let ext = member.suffix.rsplit('.').next().map(str::to_owned);
                let name = member.name.clone();
                parts.push(decode_bytes(
                    data,
                    &name,
                    ext.as_deref(),
                    Some(name.clone()),
                    ctx,
                )?);
            }
            Ok(parts)
        }
    }
}

/// Audio by content or extension; members too large to hold in memory could
/// not be looked at, so they count as audio (fail closed).
fn is_audio(member: &Member) -> bool {
    match &member.data {
        Some(data) => {
            sniff::has_audio_extension(&member.suffix)
                || sniff::looks_like_audio(&data[..data.len().min(sniff::SNIFF_BYTES)])
        }
        None => true,
    }
}

fn take_or_clone(data: &mut Vec<u8>, keep: bool) -> Vec<u8> {
    if keep {
        data.clone()
    } else {
        std::mem::take(data)
    }
}

fn decode_bytes(
    data: Vec<u8>,
    name: &str,
    ext: Option<&str>,
    member: Option<String>,
    ctx: &ScreenContext<'_>,
) -> Result<Part, Failure> {
    let sha256 = ctx.hash_content.then(|| sha256_hex(&data));
    let (fingerprint, info) =
        crate::fingerprint::audio::fingerprint_bytes(data, name, ext, &ctx.limits, Side::Query)
            .map_err(|e| e.to_string())?;
    let verdict = decide(
        ctx,
        fingerprint,
        info.duration_s,
        name,
        sha256.as_deref(),
        member.as_deref(),
    )?;
    Ok(Part {
        member,
        duration_s: info.duration_s,
        sha256,
        verdict,
    })
}

/// Has the local [`Screener`] or the server decide on one audio part. The
/// submission id follows the one rule of [`SubmissionId`]: the content hash
/// when it was computed, else the hash of the prints.
fn decide(
    ctx: &ScreenContext<'_>,
    fingerprint: Fingerprint,
    duration_s: f64,
    name: &str,
    sha256: Option<&str>,
    member: Option<&str>,
) -> Result<PartVerdict, Failure> {
    let content_id = sha256.and_then(|s| SubmissionId::from_sha256(s).ok());
    match &ctx.backend {
        Backend::Local(screener) => {
            let submission = Submission {
                id: content_id.unwrap_or_else(|| SubmissionId::of_prints(&fingerprint.prints)),
                name: name.to_owned(),
            };
            screener
                .screen(&submission, &fingerprint, ctx.purpose, ctx.at)
                .map(|screened| part_verdict(screened.verdict, member))
                .map_err(|e| Failure::Item(format!("the verdict could not be made: {e}")))
        }
        Backend::Remote(remote) => {
            let submission_id = content_id.map(String::from);
            match remote.screen(
                fingerprint,
                duration_s,
                name,
                submission_id.as_deref(),
                member,
            ) {
                Ok(Ok(verdict)) => Ok(verdict),
                Ok(Err(reason)) => Err(Failure::Item(reason)),
                Err(fatal) => Err(Failure::Fatal(fatal)),
            }
        }
    }
}

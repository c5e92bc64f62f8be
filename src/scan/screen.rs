//! Screening one item: decode + fingerprint + match (engine), then the policy
//! verdict. Anything that goes wrong makes the item an `error` row (fail
//! closed); nothing here stops the scan.

use sha2::Digest;
use time::OffsetDateTime;

use super::error::ScanError;
use super::item::{Item, Member, Payload};
use super::remote::{RemoteScreener, RemoteVerdict};
use super::report::{ReportMatch, ReportRow, RowVerdict};
use super::sniff;
use crate::decode::DecodeLimits;
use crate::engine;
use crate::fingerprint::{Fingerprint, Side};
use crate::index::Index;
use crate::matcher::{self, Match, MatcherConfig};
use crate::policy::{self, MatchEvidence, PolicyConfig, VerdictContext};
use crate::registry::{Registry, Scope};

/// Resolution of reported durations (seconds).
const DURATION_RESOLUTION: f64 = 1000.0;

/// Where matching and the verdict happen.
pub enum Backend<'a> {
    /// This machine's index and registry.
    Local {
        index: &'a Index,
        registry: &'a Registry,
    },
    /// A screening server (`--remote`); fingerprints are computed here.
    Remote(&'a RemoteScreener),
}

/// Everything a worker needs, shared read-only by all workers.
pub struct ScreenContext<'a> {
    pub backend: Backend<'a>,
    pub limits: DecodeLimits,
    pub matcher: MatcherConfig,
    pub policy: PolicyConfig,
    pub purpose: Scope,
    /// The instant consent is evaluated at (the start of the scan).
    pub at: OffsetDateTime,
    /// Compute `content_sha256` of every item.
    pub hash_content: bool,
    /// Keep in-memory audio after screening (a filtered copy needs it).
    pub keep_payload: bool,
}

/// What one audio part of an item led to.
enum Found {
    /// Matches against the local index (the verdict is made per item).
    Matches(Vec<Match>),
    /// The server's verdict on this part.
    Verdict(RemoteVerdict),
}

/// What decoding found in one audio part of an item.
struct Part {
    member: Option<String>,
    duration_s: f64,
    sha256: Option<String>,
    found: Found,
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

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
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
    match &ctx.backend {
        Backend::Local { index, registry } => local_verdict(&mut row, parts, index, registry, ctx),
        Backend::Remote(_) => remote_verdict(&mut row, parts),
    }
    Ok(row)
}

fn local_verdict(
    row: &mut ReportRow,
    parts: Vec<Part>,
    index: &Index,
    registry: &Registry,
    ctx: &ScreenContext<'_>,
) {
    let mut members: Vec<Option<String>> = Vec::new();
    let mut matches: Vec<Match> = Vec::new();
    for part in parts {
        if let Found::Matches(found) = part.found {
            members.extend(found.iter().map(|_| part.member.clone()));
            matches.extend(found);
        }
    }
    let context = VerdictContext {
        submission_id: row
            .content_sha256
            .clone()
            .unwrap_or_else(|| row.item.clone()),
        submission_name: row.item.clone(),
        index_generation: index.generation(),
        engine_version: crate::ENGINE_VERSION.to_owned(),
    };
    match policy::decide(
        &matches,
        ctx.purpose,
        ctx.at,
        registry,
        &ctx.policy,
        context,
    ) {
        Ok(verdict) => {
            row.verdict = verdict.decision.into();
            row.reasons = verdict.reasons;
            row.matches = verdict
                .evidence
                .iter()
                .zip(members)
                .map(|(e, member)| report_match(e, member))
                .collect();
        }
        Err(e) => {
            row.error = Some(format!("policy: {e}"));
            row.reasons = vec!["not screened: the verdict could not be made".into()];
        }
    }
}

/// The server decided per audio part: the item gets the strictest decision
/// (block over flag over allow) and every part's reasons and matches.
fn remote_verdict(row: &mut ReportRow, parts: Vec<Part>) {
    let several = parts.len() > 1;
    let mut decision = RowVerdict::Allow;
    for part in parts {
        let Found::Verdict(verdict) = part.found else {
            continue;
        };
        decision = decision.max(verdict.decision);
        let prefix = match (&part.member, several) {
            (Some(member), true) => format!("{member}: "),
            _ => String::new(),
        };
        row.reasons
            .extend(verdict.reasons.into_iter().map(|r| format!("{prefix}{r}")));
        row.matches.extend(verdict.matches);
    }
    row.verdict = decision;
}

fn report_match(e: &MatchEvidence, member: Option<String>) -> ReportMatch {
    ReportMatch {
        work_id: e.work_id.clone(),
        title: e.title.clone(),
        isrc: e.isrc.as_ref().map(|i| i.as_str().to_owned()),
        holder: e.holder.clone(),
        consent: e.consent,
        consent_record: e.deciding_record.as_ref().map(|r| r.id),
        outcome: e.outcome,
        confident: e.confident,
        score: e.score,
        start_s: e.query_start_s,
        end_s: e.query_end_s,
        ref_start_s: e.ref_start_s,
        ref_end_s: e.ref_end_s,
        speed_factor: e.speed_factor,
        pitch_factor: e.pitch_factor,
        member,
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
                Some(engine::sha256_file(path).map_err(|e| e.to_string())?)
            } else {
                None
            };
            let (fingerprint, info) = engine::fingerprint_file(path, &ctx.limits, Side::Query)
                .map_err(|e| e.to_string())?;
            let found = find(
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
                found,
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
    let (fingerprint, info) = engine::fingerprint_bytes(data, name, ext, &ctx.limits, Side::Query)
        .map_err(|e| e.to_string())?;
    let found = find(
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
        found,
    })
}

/// Matches a fingerprint locally, or has the server screen it.
fn find(
    ctx: &ScreenContext<'_>,
    fingerprint: Fingerprint,
    duration_s: f64,
    name: &str,
    sha256: Option<&str>,
    member: Option<&str>,
) -> Result<Found, Failure> {
    match &ctx.backend {
        Backend::Local { index, .. } => Ok(Found::Matches(matcher::find_matches(
            index,
            &fingerprint,
            &ctx.matcher,
        ))),
        Backend::Remote(remote) => {
            let submission_id = sha256.map(|s| format!("sha256:{s}"));
            match remote.screen(
                fingerprint,
                duration_s,
                name,
                submission_id.as_deref(),
                member,
            ) {
                Ok(Ok(verdict)) => Ok(Found::Verdict(verdict)),
                Ok(Err(reason)) => Err(Failure::Item(reason)),
                Err(fatal) => Err(Failure::Fatal(fatal)),
            }
        }
    }
}

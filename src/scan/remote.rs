//! `earmark scan --remote URL`: screening through a running `earmark serve`.
//!
//! Items are decoded and fingerprinted here, exactly as in a local scan; only
//! the prints go to the server (`ScreenFingerprints`), which matches them
//! against its index and decides with its registry and deployment policy. The
//! audio never leaves the machine, and no local data directory is needed.
//!
//! A server that cannot be reached (or refuses the key) stops the scan — the
//! report so far stays valid for `--resume` — instead of turning every later
//! item into an `error` row; a per-item refusal (e.g. an invalid fingerprint)
//! is an `error` row like any other.

use std::sync::Mutex;

use tonic::Code;

use super::error::ScanError;
use super::report::{PartVerdict, ReportMatch, RowVerdict};
use crate::client::{self, ClientTls, ScreeningClient};
use crate::fingerprint::Fingerprint;
use crate::fingerprint::file::FingerprintFile;
use crate::policy::Decision;
use crate::proto as pb;
use crate::registry::{EffectiveStatus, Scope, Territory};

/// Client message size limit (responses are small; prints are batched).
const CLIENT_MAX_MESSAGE: usize = 64 * 1024 * 1024;
/// Worker threads of the client's async runtime (the calls are I/O only).
const RUNTIME_THREADS: usize = 2;

/// How the server decided (from its responses), for the summary.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RemotePolicy {
    pub url: String,
    pub policy_version: String,
    pub unknown_consent: String,
    pub policy_territory: String,
    pub index_generation: u64,
    pub engine_version: String,
}

/// A connection to a screening server, shared by all workers.
pub struct RemoteScreener {
    runtime: tokio::runtime::Runtime,
    client: ScreeningClient,
    url: String,
    purpose: pb::Scope,
    territory: String,
    seen: Mutex<Option<RemotePolicy>>,
    /// False: ask the server not to record allowed uses (a dry run).
    record_attributions: bool,
}

impl std::fmt::Debug for RemoteScreener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteScreener")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

fn fatal(url: &str, reason: impl std::fmt::Display) -> ScanError {
    ScanError::Fatal {
        reason: format!("remote {url}: {reason}"),
    }
}

impl RemoteScreener {
    /// Connects to `url` (`http://host:port`, or `https://…` with `tls`).
    pub fn connect(
        url: &str,
        tls: Option<&ClientTls>,
        api_key: Option<&str>,
        purpose: Scope,
        territory: Option<&Territory>,
        record_attributions: bool,
    ) -> Result<Self, ScanError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(RUNTIME_THREADS)
            .enable_all()
            .build()
            .map_err(|e| fatal(url, format!("cannot start the async runtime: {e}")))?;
        let channel = runtime
            .block_on(client::connect(url, tls))
            .map_err(|e| fatal(url, e))?;
        let client =
            client::screening(channel, api_key, CLIENT_MAX_MESSAGE).map_err(|e| fatal(url, e))?;
        Ok(Self {
            runtime,
            client,
            url: url.to_owned(),
            purpose: crate::proto::scope_to_pb(purpose),
            territory: territory.map(|t| t.as_str().to_owned()).unwrap_or_default(),
            seen: Mutex::new(None),
            record_attributions,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The server's policy as seen in its last verdict.
    pub fn policy(&self) -> Option<RemotePolicy> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Screens one fingerprint. `Ok(Err(reason))`: the server refused this
    /// item; `Err`: the server cannot be used at all (stop the scan).
    pub fn screen(
        &self,
        fingerprint: Fingerprint,
        duration_s: f64,
        name: &str,
        submission_id: Option<&str>,
        member: Option<&str>,
    ) -> Result<Result<PartVerdict, String>, ScanError> {
        let mut file = FingerprintFile::new(fingerprint, duration_s, name, submission_id);
        if let Some(meta) = file.header.submission.as_mut() {
            meta.no_ledger = !self.record_attributions;
        }
        let requests = file.requests(self.purpose, &self.territory);
        let mut client = self.client.clone();
        let response = self.runtime.block_on(async move {
            client
                .screen_fingerprints(tokio_stream::iter(requests))
                .await
        });
        let response = match response {
            Ok(r) => r.into_inner(),
            Err(status) => {
                return match status.code() {
                    Code::Unavailable
                    | Code::Unauthenticated
                    | Code::PermissionDenied
                    | Code::Unimplemented
                    | Code::Cancelled
                    | Code::Unknown => Err(fatal(
                        &self.url,
                        format!("{:?}: {}", status.code(), status.message()),
                    )),
                    code => Ok(Err(format!(
                        "server refused the item ({code:?}): {}",
                        status.message()
                    ))),
                };
            }
        };
        let Some(verdict) = response.verdict else {
            return Ok(Err("server answered without a verdict".into()));
        };
        *self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(RemotePolicy {
            url: self.url.clone(),
            policy_version: verdict.policy_version.clone(),
            unknown_consent: verdict.unknown_consent.clone(),
            policy_territory: verdict.policy_territory.clone(),
            index_generation: verdict.index_generation,
            engine_version: verdict.engine_version.clone(),
        });
        let decision = match decision_from_pb(verdict.decision()) {
            Some(d) => RowVerdict::from(d),
            None => return Ok(Err("server answered with an unspecified decision".into())),
        };
        let matches = verdict
            .evidence
            .iter()
            .map(|e| evidence(e, member))
            .collect::<Option<Vec<_>>>();
        let Some(matches) = matches else {
            return Ok(Err("server answered with unspecified consent values".into()));
        };
        Ok(Ok(PartVerdict {
            decision,
            reasons: verdict.reasons,
            matches,
        }))
    }
}

fn decision_from_pb(d: pb::Decision) -> Option<Decision> {
    match d {
        pb::Decision::Allow => Some(Decision::Allow),
        pb::Decision::Flag => Some(Decision::Flag),
        pb::Decision::Block => Some(Decision::Block),
        pb::Decision::Unspecified => None,
    }
}

fn consent_from_pb(c: pb::EffectiveConsent) -> Option<EffectiveStatus> {
    match c {
        pb::EffectiveConsent::OptedOut => Some(EffectiveStatus::OptedOut),
        pb::EffectiveConsent::OptedIn => Some(EffectiveStatus::OptedIn),
        pb::EffectiveConsent::Constrained => Some(EffectiveStatus::Constrained),
        pb::EffectiveConsent::Unknown => Some(EffectiveStatus::Unknown),
        pb::EffectiveConsent::Unspecified => None,
    }
}

fn evidence(e: &pb::MatchEvidence, member: Option<&str>) -> Option<ReportMatch> {
    Some(ReportMatch {
        work_id: e.work_id.clone(),
        title: e.title.clone(),
        isrc: e.isrc.clone(),
        holder: e.holder.clone(),
        consent: consent_from_pb(e.consent())?,
        consent_record: e.deciding_record.as_ref().map(|r| r.id),
        outcome: decision_from_pb(e.outcome())?,
        confident: e.confident,
        score: e.score,
        start_s: e.query_start_s,
        end_s: e.query_end_s,
        ref_start_s: e.ref_start_s,
        ref_end_s: e.ref_end_s,
        speed_factor: e.speed_factor,
        pitch_factor: e.pitch_factor,
        member: member.map(str::to_owned),
    })
}

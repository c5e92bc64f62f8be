//! `earmark.v1.Registry`: works, consent and the audit log over gRPC.
//!
//! Reads run on the blocking pool against the read connection; writes go
//! through the server's one [`Catalog`](crate::registration::Catalog), serialised,
//! and refresh the index snapshot so the next screening sees them.

use std::collections::HashSet;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use super::Service;
use super::auth::Principal;
use super::call::{self, Call};
use super::convert;
use super::error::ServiceError;
use super::pb;
use super::state::{Cancel, Ready, Settings, run_blocking};
use crate::decode::DecodeLimits;
use crate::fingerprint::Side;
use crate::registration::PreparedWork;
use crate::registry::{
    AuditEntry, Isni, Isrc, Iswc, NewWork, ReferenceAudio, Registry, Work, WorkId,
};

/// Default and largest `ListWorks` page.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;
/// Rows read per step when filtering works by holder.
const SCAN_STEP: usize = 1000;

type AuditStream = Pin<Box<dyn Stream<Item = Result<pb::AuditEntry, Status>> + Send>>;

#[tonic::async_trait]
impl pb::registry_server::Registry for Service {
    async fn register_work(
        &self,
        request: Request<Streaming<pb::RegisterWorkRequest>>,
    ) -> Result<Response<pb::Work>, Status> {
        let call = self.call("RegisterWork", &request);
        let result = self.register(&call, request).await;
        call.finish(result.map(|w| (w, None)))
    }

    async fn set_consent(
        &self,
        request: Request<pb::SetConsentRequest>,
    ) -> Result<Response<pb::ConsentRecord>, Status> {
        let call = self.call("SetConsent", &request);
        let result = async {
            let (principal, ready) = self.registry_caller(request.metadata()).await?;
            let req = request.into_inner();
            run_blocking(move || {
                let work = owned_work(&ready.reader, &principal, &req.work_id)?;
                let statement = req
                    .consent
                    .as_ref()
                    .ok_or_else(|| ServiceError::invalid("consent", "must be set"))?;
                let actor = principal.actor();
                let consent = convert::new_consent(statement, &actor, ready.reader.now())?;
                let record =
                    ready
                        .writer_registry()
                        .record_consent(work.id.as_str(), &consent, &actor)?;
                Ok((convert::consent_record(&record), None))
            })
            .await
        }
        .await;
        call.finish(result)
    }

    async fn get_work(
        &self,
        request: Request<pb::GetWorkRequest>,
    ) -> Result<Response<pb::Work>, Status> {
        let call = self.call("GetWork", &request);
        let result = async {
            let (principal, ready) = self.registry_caller(request.metadata()).await?;
            let id = request.into_inner().work_id;
            run_blocking(move || {
                Ok((
                    convert::work(&owned_work(&ready.reader, &principal, &id)?),
                    None,
                ))
            })
            .await
        }
        .await;
        call.finish(result)
    }

    async fn list_works(
        &self,
        request: Request<pb::ListWorksRequest>,
    ) -> Result<Response<pb::ListWorksResponse>, Status> {
        let call = self.call("ListWorks", &request);
        let result = async {
            let (principal, ready) = self.registry_caller(request.metadata()).await?;
            let req = request.into_inner();
            run_blocking(move || Ok((list_page(&ready.reader, &principal, &req)?, None))).await
        }
        .await;
        call.finish(result)
    }

    async fn remove_work(
        &self,
        request: Request<pb::RemoveWorkRequest>,
    ) -> Result<Response<pb::RemoveWorkResponse>, Status> {
        let call = self.call("RemoveWork", &request);
        let result = async {
            let (principal, ready) = self.registry_caller(request.metadata()).await?;
            let id = request.into_inner().work_id;
            run_blocking(move || {
                let work = owned_work(&ready.reader, &principal, &id)?;
                let actor = principal.actor();
                let ((), generation) =
                    ready.write(|catalog| Ok(catalog.remove(work.id.as_str(), &actor)?))?;
                tracing::info!(work_id = %work.id, actor, generation, "work removed");
                Ok((
                    pb::RemoveWorkResponse {
                        index_generation: generation,
                    },
                    None,
                ))
            })
            .await
        }
        .await;
        call.finish(result)
    }

    async fn consent_history(
        &self,
        request: Request<pb::ConsentHistoryRequest>,
    ) -> Result<Response<pb::ConsentHistoryResponse>, Status> {
        let call = self.call("ConsentHistory", &request);
        let result = async {
            let (principal, ready) = self.registry_caller(request.metadata()).await?;
            let id = request.into_inner().work_id;
            run_blocking(move || {
                let work = owned_work(&ready.reader, &principal, &id)?;
                let records = ready.reader.consent_history(work.id.as_str())?;
                let records = records.iter().map(convert::consent_record).collect();
                Ok((pb::ConsentHistoryResponse { records }, None))
            })
            .await
        }
        .await;
        call.finish(result)
    }

    type AuditLogStream = AuditStream;

    async fn audit_log(
        &self,
        request: Request<pb::AuditLogRequest>,
    ) -> Result<Response<AuditStream>, Status> {
        let call = self.call("AuditLog", &request);
        let result = async {
            let (principal, ready) = self.registry_caller(request.metadata()).await?;
            let req = request.into_inner();
            let entries =
                run_blocking(move || audit_entries(&ready.reader, &principal, &req)).await?;
            let stream: AuditStream = Box::pin(tokio_stream::iter(entries.into_iter().map(Ok)));
            Ok((stream, None))
        }
        .await;
        call.finish(result)
    }
}

impl Service {
    /// Authenticates a registry caller (rights holder or admin).
    async fn registry_caller(
        &self,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<(Principal, Arc<Ready>), ServiceError> {
        let principal = self.authenticate(metadata).await?;
        principal.require_registry()?;
        Ok((principal, self.shared.ready()?))
    }

    async fn register(
        &self,
        call: &Call,
        request: Request<Streaming<pb::RegisterWorkRequest>>,
    ) -> Result<pb::Work, ServiceError> {
        let principal = self.authenticate(request.metadata()).await?;
        principal.require_registry()?;
        let ready = self.shared.ready()?;
        let mut stream = request.into_inner();
        let mut meta = call::read_metadata(&mut stream).await?;
        if meta.holder.trim().is_empty() {
            meta.holder = principal.holder.clone().unwrap_or_default();
        }
        principal.require_holder(&meta.holder)?;
        crate::registration::validate_work_id(&meta.work_id)?;
        let settings = self.shared.settings.clone();
        let bytes = call::read_chunks(&mut stream, &meta, settings.limits.max_upload_bytes).await?;
        let _permit = self.shared.admit(call.method)?;
        let work = self
            .shared
            .run_cpu(call.deadline, move |cancel| {
                register_bytes(&ready, &settings, &principal, meta, bytes, cancel)
            })
            .await?;
        Ok(convert::work(&work))
    }
}

/// The registered work `id`, if the principal may act on it.
fn owned_work(reader: &Registry, principal: &Principal, id: &str) -> Result<Work, ServiceError> {
    let work = reader
        .get_work(id)?
        .ok_or_else(|| ServiceError::WorkNotFound(id.to_owned()))?;
    principal.require_holder(&work.holder)?;
    Ok(work)
}

/// Fingerprints the reference and registers the work (CPU pool).
fn register_bytes(
    ready: &Ready,
    settings: &Settings,
    principal: &Principal,
    meta: pb::WorkMetadata,
    bytes: Vec<u8>,
    cancel: &Cancel,
) -> Result<Work, ServiceError> {
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let file_name = if meta.file_name.trim().is_empty() {
        format!("{}.upload", meta.work_id)
    } else {
        meta.file_name.trim().to_owned()
    };
    let hint = convert::extension_hint(&meta.mime_type, &file_name);
    let limits = DecodeLimits {
        max_bytes: settings.limits.max_upload_bytes,
        max_duration_s: settings.limits.max_audio_s,
        ..DecodeLimits::default()
    };
    let (fingerprint, info) = crate::fingerprint::audio::fingerprint_bytes(
        bytes,
        &file_name,
        hint.as_deref(),
        &limits,
        Side::Reference,
    )?;
    crate::registration::check_reference(&file_name, &fingerprint, &info)?;
    cancel.check()?;
    let actor = principal.actor();
    let now = ready.reader.now();
    let consents = meta
        .initial_consents
        .iter()
        .map(|c| convert::new_consent(c, &actor, now))
        .collect::<Result<Vec<_>, _>>()?;
    let new_work = new_work(
        &meta,
        ReferenceAudio {
            duration_s: info.duration_s,
            fingerprint_config: crate::registration::fingerprint_config_id(),
            audio_sha256: sha256,
            source_file: file_name.clone(),
        },
    )?;
    let prepared = PreparedWork {
        work_id: meta.work_id.clone(),
        source: PathBuf::from(file_name),
        fingerprint,
        info,
    };
    let (work, generation) =
        ready.write(|catalog| Ok(catalog.register(&prepared, new_work, &consents, &actor)?))?;
    tracing::info!(work_id = %work.id, holder = %work.holder, actor, generation, "work registered");
    Ok(work)
}

fn new_work(meta: &pb::WorkMetadata, reference: ReferenceAudio) -> Result<NewWork, ServiceError> {
    let opt = |s: &Option<String>| {
        s.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    Ok(NewWork {
        id: WorkId::parse(&meta.work_id)
            .map_err(|e| ServiceError::invalid("metadata.work_id", e.to_string()))?,
        title: meta.title.clone(),
        artists: meta.artists.clone(),
        isrc: opt(&meta.isrc)
            .map(|s| Isrc::parse(&s))
            .transpose()
            .map_err(|e| ServiceError::invalid("metadata.isrc", e.to_string()))?,
        iswc: opt(&meta.iswc)
            .map(|s| Iswc::parse(&s))
            .transpose()
            .map_err(|e| ServiceError::invalid("metadata.iswc", e.to_string()))?,
        holder: meta.holder.clone(),
        holder_isni: opt(&meta.holder_isni)
            .map(|s| Isni::parse(&s))
            .transpose()
            .map_err(|e| ServiceError::invalid("metadata.holder_isni", e.to_string()))?,
        reference,
    })
}

/// One page of works; a rights holder's pages skip other holders' works.
/// The page token is the offset (in id order over all works) to resume from.
fn list_page(
    reader: &Registry,
    principal: &Principal,
    req: &pb::ListWorksRequest,
) -> Result<pb::ListWorksResponse, ServiceError> {
    let size = match usize::try_from(req.page_size).unwrap_or(MAX_PAGE) {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    };
    let mut offset: usize = if req.page_token.is_empty() {
        0
    } else {
        req.page_token.parse().map_err(|_| {
            ServiceError::invalid("page_token", "not a token from a previous response")
        })?
    };
    let admin = principal.holder_filter().is_none();
    let mut works = Vec::with_capacity(size);
    let mut more = false;
    'scan: loop {
        // One row beyond the page tells whether there are more.
        let step = if admin {
            size - works.len() + 1
        } else {
            SCAN_STEP
        };
        let batch = reader.list_works(offset, step)?;
        let n = batch.len();
        for w in batch {
            let visible = admin || principal.owns(&w.holder);
            if visible && works.len() == size {
                more = true;
                break 'scan;
            }
            offset += 1;
            if visible {
                works.push(convert::work(&w));
            }
        }
        if n < step {
            break;
        }
    }
    Ok(pb::ListWorksResponse {
        works,
        next_page_token: if more {
            offset.to_string()
        } else {
            String::new()
        },
    })
}

/// Audit entries after `after_seq`; rights holders see entries about their works.
fn audit_entries(
    reader: &Registry,
    principal: &Principal,
    req: &pb::AuditLogRequest,
) -> Result<Vec<pb::AuditEntry>, ServiceError> {
    let own: Option<HashSet<String>> = match principal.holder_filter() {
        None => None,
        Some(_) => Some(holder_work_ids(reader, principal)?),
    };
    let mut buf = Vec::new();
    reader.export_audit(&mut buf)?;
    let limit = match req.limit {
        0 => usize::MAX,
        n => usize::try_from(n).unwrap_or(usize::MAX),
    };
    let mut out = Vec::new();
    for line in buf.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let entry: AuditEntry = serde_json::from_slice(line)
            .map_err(|e| ServiceError::Internal(format!("re-reading the audit export: {e}")))?;
        if entry.seq <= req.after_seq
            || own
                .as_ref()
                .is_some_and(|ids| !ids.contains(&entry.subject))
        {
            continue;
        }
        out.push(convert::audit_entry(&entry));
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}

fn holder_work_ids(
    reader: &Registry,
    principal: &Principal,
) -> Result<HashSet<String>, ServiceError> {
    let mut ids = HashSet::new();
    let mut offset = 0;
    loop {
        let batch = reader.list_works(offset, SCAN_STEP)?;
        let n = batch.len();
        ids.extend(
            batch
                .into_iter()
                .filter(|w| principal.owns(&w.holder))
                .map(|w| w.id.to_string()),
        );
        if n < SCAN_STEP {
            return Ok(ids);
        }
        offset += n;
    }
}

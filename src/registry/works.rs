//! Works: registration, removal, lookup, listing.
//!
//! Removal is a soft delete that keeps the row (and so its consent history and
//! ledger entries) for the record; the id becomes free for a new registration.

use std::collections::HashSet;

use serde_json::json;

use super::Registry;
use super::audit::{self, AuditAction};
use super::consent;
use super::db::{Db, values};
use super::error::{DbContext, RegistryError, Result, invalid};
use super::ids::{Isni, Isrc, Iswc, WorkId};
use super::model::{NewConsent, NewWork, Work, to_db_time};
use super::rows::{RawWork, WORK_COLUMNS, require_reg_no, required_text, validate_actor};

/// Length of a hex SHA-256 digest.
const SHA256_HEX_LEN: usize = 64;
/// Largest page [`Registry::list_works`] returns.
pub const MAX_PAGE: usize = 10_000;

/// What the registry holds for an id, compared with a candidate reference file
/// (idempotent catalog imports skip `SameAudio`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExistingWork {
    NotRegistered,
    SameAudio,
    DifferentAudio { registered_sha256: String },
}

impl Registry {
    /// Registers a work with its initial consent records, all in one transaction
    /// (audited as `work-added` plus one `consent-recorded` per record).
    pub fn add_work(
        &self,
        new: NewWork,
        initial_consents: &[NewConsent],
        actor: &str,
    ) -> Result<Work> {
        self.add_work_publishing(new, initial_consents, actor, None)
    }

    /// [`Registry::add_work`] for a work whose fingerprints are in index
    /// generation `index_generation`: the same transaction raises the
    /// published index generation to it ([`Registry::index_generation`]),
    /// so no process sees the work registered without also seeing that its
    /// index must be at least that new.
    pub fn add_work_indexed(
        &self,
        new: NewWork,
        initial_consents: &[NewConsent],
        actor: &str,
        index_generation: u64,
    ) -> Result<Work> {
        self.add_work_publishing(new, initial_consents, actor, Some(index_generation))
    }

    fn add_work_publishing(
        &self,
        new: NewWork,
        initial_consents: &[NewConsent],
        actor: &str,
        index_generation: Option<u64>,
    ) -> Result<Work> {
        let new = validate_new_work(new)?;
        let actor = validate_actor(actor)?;
        let now = self.now();
        let now_s = to_db_time(now)?;
        self.write("adding a work", |tx| {
            if let Some(since) = active_created_at(tx, &new.id)? {
                return Err(RegistryError::WorkExists {
                    id: new.id.to_string(),
                    since,
                });
            }
            let reg_no = insert_work(tx, &new, &now_s)?;
            let details = json!({
                "title": new.title,
                "isrc": new.isrc,
                "holder": new.holder,
                "audio_sha256": new.reference.audio_sha256,
                "fingerprint_config": new.reference.fingerprint_config,
            });
            audit::append(
                tx,
                now,
                actor,
                AuditAction::WorkAdded,
                new.id.as_str(),
                details,
            )?;
            for c in initial_consents {
                consent::insert_audited(tx, reg_no, &new.id, c, now, actor)?;
            }
            if let Some(generation) = index_generation {
                super::index_generation::publish(tx, generation, &now_s)?;
            }
            Ok(())
        })?;
        let NewWork {
            id,
            title,
            artists,
            isrc,
            iswc,
            holder,
            holder_isni,
            reference,
        } = new;
        Ok(Work {
            id,
            title,
            artists,
            isrc,
            iswc,
            holder,
            holder_isni,
            reference,
            created_at: now,
            updated_at: now,
        })
    }

    /// Removes a work (soft delete, audited as `work-removed`). Its consent
    /// history and ledger entries are kept with the old registration.
    pub fn remove_work(&self, id: &str, actor: &str) -> Result<()> {
        let id = WorkId::parse(id)?;
        let actor = validate_actor(actor)?;
        let now = self.now();
        let now_s = to_db_time(now)?;
        self.write("removing a work", |tx| {
            let reg_no = require_reg_no(tx, &id)?;
            tx.execute(
                "UPDATE works SET removed_at = ?1, removed_by = ?2, updated_at = ?1 WHERE reg_no = ?3",
                &values![&now_s, actor, reg_no],
            )
            .db(|| format!("removing work '{id}'"))?;
            audit::append(tx, now, actor, AuditAction::WorkRemoved, id.as_str(), json!({ "reg_no": reg_no }))?;
            Ok(())
        })
    }

    /// The registered work with this id, if any.
    pub fn get_work(&self, id: &str) -> Result<Option<Work>> {
        let id = WorkId::parse(id)?;
        self.read(|db| {
            let sql =
                format!("SELECT {WORK_COLUMNS} FROM works WHERE id = ?1 AND removed_at IS NULL");
            let raw = db
                .query_opt(&sql, &values![id.as_str()])
                .and_then(|row| row.as_ref().map(RawWork::from_row).transpose())
                .db(|| format!("reading work '{id}'"))?;
            raw.map(RawWork::into_work).transpose()
        })
    }

    /// Registered works ordered by id, `limit` (at most [`MAX_PAGE`]) from `offset`.
    pub fn list_works(&self, offset: usize, limit: usize) -> Result<Vec<Work>> {
        let limit = i64::try_from(limit.min(MAX_PAGE)).unwrap_or(0);
        let offset = i64::try_from(offset).map_err(|_| invalid("offset", "too large"))?;
        self.read(|db| {
            let sql = format!(
                "SELECT {WORK_COLUMNS} FROM works WHERE removed_at IS NULL ORDER BY id LIMIT ?1 OFFSET ?2"
            );
            let raws = db
                .query(&sql, &values![limit, offset])
                .and_then(|rows| rows.iter().map(RawWork::from_row).collect::<Result<Vec<_>, _>>())
                .db(|| "listing works".into())?;
            raws.into_iter().map(RawWork::into_work).collect()
        })
    }

    /// Number of registered works.
    pub fn count_works(&self) -> Result<usize> {
        self.read(|db| {
            let n: i64 = db
                .query_one("SELECT COUNT(*) FROM works WHERE removed_at IS NULL", &[])
                .and_then(|r| r.get(0))
                .db(|| "counting works".into())?;
            Ok(usize::try_from(n).unwrap_or(0))
        })
    }

    /// Ids of all registered works (the engine reconciles the index against it).
    pub fn work_ids(&self) -> Result<HashSet<String>> {
        self.read(|db| {
            db.query("SELECT id FROM works WHERE removed_at IS NULL", &[])
                .and_then(|rows| rows.iter().map(|r| r.get::<String>(0)).collect())
                .db(|| "listing work ids".into())
        })
    }

    /// Whether `id` is registered, and if so whether with the same reference audio.
    pub fn existing_work(&self, id: &str, audio_sha256: &str) -> Result<ExistingWork> {
        let id = WorkId::parse(id)?;
        self.read(|db| {
            let registered: Option<String> = db
                .query_opt(
                    "SELECT audio_sha256 FROM works WHERE id = ?1 AND removed_at IS NULL",
                    &values![id.as_str()],
                )
                .and_then(|row| row.map(|r| r.get(0)).transpose())
                .db(|| format!("looking up work '{id}'"))?;
            Ok(match registered {
                None => ExistingWork::NotRegistered,
                Some(s) if s.eq_ignore_ascii_case(audio_sha256.trim()) => ExistingWork::SameAudio,
                Some(registered_sha256) => ExistingWork::DifferentAudio { registered_sha256 },
            })
        })
    }

    /// Appends an `import-run` audit entry summarising a catalog import
    /// (`summary` is free-form JSON: file, counts, errors…).
    pub fn record_import_run(
        &self,
        catalog: &str,
        summary: serde_json::Value,
        actor: &str,
    ) -> Result<()> {
        let actor = validate_actor(actor)?;
        let now = self.now();
        self.write("recording an import run", |tx| {
            audit::append(tx, now, actor, AuditAction::ImportRun, catalog, summary)?;
            Ok(())
        })
    }
}

fn active_created_at(db: &mut dyn Db, id: &WorkId) -> Result<Option<String>> {
    db.query_opt(
        "SELECT created_at FROM works WHERE id = ?1 AND removed_at IS NULL",
        &values![id.as_str()],
    )
    .and_then(|row| row.map(|r| r.get(0)).transpose())
    .db(|| format!("looking up work '{id}'"))
}

fn insert_work(db: &mut dyn Db, w: &NewWork, now: &str) -> Result<i64> {
    let artists = serde_json::to_string(&w.artists).map_err(|source| RegistryError::Json {
        what: "artists",
        source,
    })?;
    let r = &w.reference;
    db.query_one(
        "INSERT INTO works (id, title, artists, isrc, iswc, holder, holder_isni, duration_s, \
         fingerprint_config, audio_sha256, source_file, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12) RETURNING reg_no",
        &values![
            w.id.as_str(),
            &w.title,
            artists,
            w.isrc.as_ref().map(Isrc::as_str),
            w.iswc.as_ref().map(Iswc::as_str),
            &w.holder,
            w.holder_isni.as_ref().map(Isni::as_str),
            r.duration_s,
            &r.fingerprint_config,
            &r.audio_sha256,
            &r.source_file,
            now,
        ],
    )
    .and_then(|r| r.get(0))
    .db(|| format!("inserting work '{}'", w.id))
}

/// Trims and checks free-text fields and the reference summary.
fn validate_new_work(mut w: NewWork) -> Result<NewWork> {
    w.title = required_text("title", &w.title)?;
    w.holder = required_text("holder", &w.holder)?;
    w.artists = w
        .artists
        .iter()
        .map(|a| a.trim())
        .filter(|a| !a.is_empty())
        .map(|a| required_text("artist", a))
        .collect::<Result<_>>()?;
    let r = &mut w.reference;
    if !r.duration_s.is_finite() || r.duration_s < 0.0 {
        return Err(invalid(
            "reference duration",
            format!("{} is not a duration in seconds", r.duration_s),
        ));
    }
    r.fingerprint_config = required_text("fingerprint config id", &r.fingerprint_config)?;
    r.source_file = required_text("reference file name", &r.source_file)?;
    r.audio_sha256 = r.audio_sha256.trim().to_ascii_lowercase();
    if r.audio_sha256.len() != SHA256_HEX_LEN
        || !r.audio_sha256.chars().all(|c| c.is_ascii_hexdigit())
    {
        return Err(invalid(
            "audio sha256",
            format!("'{}' is not 64 hex digits", r.audio_sha256),
        ));
    }
    Ok(w)
}

#[cfg(test)]
mod tests;

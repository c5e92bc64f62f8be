//! Row helpers shared by the registry's tables: looking a work up by id or
//! registration number, and the text and actor checks every write applies.

use super::db::{Db, DbError, DbRow, values};

use super::error::{DbContext, RegistryError, Result, invalid};
use super::ids::{Isni, Isrc, Iswc, WorkId};
use super::model::{ReferenceAudio, Work, from_db_time};

/// Longest accepted title, holder name or artist name.
pub(crate) const MAX_TEXT_LEN: usize = 512;

pub(crate) const WORK_COLUMNS: &str = "id, title, artists, isrc, iswc, holder, holder_isni, duration_s, \
     fingerprint_config, audio_sha256, source_file, created_at, updated_at";

/// Registration number of the active work `id`, or `WorkNotFound`.
pub(crate) fn require_reg_no(db: &mut dyn Db, id: &WorkId) -> Result<i64> {
    db.query_opt(
        "SELECT reg_no FROM works WHERE id = ?1 AND removed_at IS NULL",
        &values![id.as_str()],
    )
    .and_then(|row| row.map(|r| r.get(0)).transpose())
    .db(|| format!("looking up work '{id}'"))?
    .ok_or_else(|| RegistryError::WorkNotFound { id: id.to_string() })
}

/// A trimmed, non-empty text of at most [`MAX_TEXT_LEN`] characters.
pub(crate) fn required_text(field: &'static str, value: &str) -> Result<String> {
    let v = value.trim();
    if v.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if v.chars().count() > MAX_TEXT_LEN {
        return Err(invalid(
            field,
            format!("longer than {MAX_TEXT_LEN} characters"),
        ));
    }
    Ok(v.to_owned())
}

/// The actor recorded in the audit log must be named.
pub(crate) fn validate_actor(actor: &str) -> Result<&str> {
    let a = actor.trim();
    if a.is_empty() {
        return Err(invalid(
            "actor",
            "must not be empty (who is making this change?)",
        ));
    }
    Ok(a)
}

/// A `works` row as stored, before validation.
pub(crate) struct RawWork {
    id: String,
    title: String,
    artists: String,
    isrc: Option<String>,
    iswc: Option<String>,
    holder: String,
    holder_isni: Option<String>,
    duration_s: f64,
    fingerprint_config: String,
    audio_sha256: String,
    source_file: String,
    created_at: String,
    updated_at: String,
}

impl RawWork {
    pub(crate) fn from_row(r: &DbRow) -> std::result::Result<Self, DbError> {
        Ok(Self {
            id: r.get(0)?,
            title: r.get(1)?,
            artists: r.get(2)?,
            isrc: r.get(3)?,
            iswc: r.get(4)?,
            holder: r.get(5)?,
            holder_isni: r.get(6)?,
            duration_s: r.get(7)?,
            fingerprint_config: r.get(8)?,
            audio_sha256: r.get(9)?,
            source_file: r.get(10)?,
            created_at: r.get(11)?,
            updated_at: r.get(12)?,
        })
    }

    pub(crate) fn into_work(self) -> Result<Work> {
        let corrupt = |reason: String| RegistryError::Corrupt {
            table: "works",
            key: self.id.clone(),
            reason,
        };
        let artists: Vec<String> =
            serde_json::from_str(&self.artists).map_err(|e| corrupt(format!("artists: {e}")))?;
        let work = Work {
            id: WorkId::parse(&self.id).map_err(|e| corrupt(e.to_string()))?,
            title: self.title.clone(),
            artists,
            isrc: self
                .isrc
                .as_deref()
                .map(Isrc::parse)
                .transpose()
                .map_err(|e| corrupt(e.to_string()))?,
            iswc: self
                .iswc
                .as_deref()
                .map(Iswc::parse)
                .transpose()
                .map_err(|e| corrupt(e.to_string()))?,
            holder: self.holder.clone(),
            holder_isni: self
                .holder_isni
                .as_deref()
                .map(Isni::parse)
                .transpose()
                .map_err(|e| corrupt(e.to_string()))?,
            reference: ReferenceAudio {
                duration_s: self.duration_s,
                fingerprint_config: self.fingerprint_config.clone(),
                audio_sha256: self.audio_sha256.clone(),
                source_file: self.source_file.clone(),
            },
            created_at: from_db_time(&self.created_at).map_err(|e| corrupt(e.to_string()))?,
            updated_at: from_db_time(&self.updated_at).map_err(|e| corrupt(e.to_string()))?,
        };
        Ok(work)
    }
}

/// Looks up the descriptive fields of a registration (ledger, evidence).
pub(crate) fn work_by_reg_no(db: &mut dyn Db, reg_no: i64) -> Result<Work> {
    let sql = format!("SELECT {WORK_COLUMNS} FROM works WHERE reg_no = ?1");
    db.query_one(&sql, &values![reg_no])
        .and_then(|r| RawWork::from_row(&r))
        .db(|| format!("reading registration #{reg_no}"))?
        .into_work()
}

//! API keys for the service: roles, salted hashes, constant-time checks.
//!
//! A key is shown once as `emk_<key_id>_<secret>`; the database keeps only the
//! public `key_id`, a random salt and `SHA-256(salt ‖ full key)`. Verification
//! looks the row up by `key_id` (not secret) and compares digests in constant
//! time. Keys carry 256 bits of randomness from the OS, so the salt only guards
//! against precomputation across databases.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::Registry;
use super::audit::{self, AuditAction};
use super::db::values;
use super::error::{DbContext, RegistryError, Result, invalid};
use super::model::{ParseEnumError, from_db_time, to_db_time};
use super::rows::{required_text, validate_actor};

/// Prefix of every key, so leaked keys are recognisable by scanners.
pub const KEY_PREFIX: &str = "emk";
/// Random bytes in a key id.
const KEY_ID_BYTES: usize = 8;
/// Random bytes in a key secret.
const SECRET_BYTES: usize = 32;
/// Random bytes of salt per key.
const SALT_BYTES: usize = 16;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Submit audio for screening.
    Screener,
    /// Manage the works and consent of one holder.
    RightsHolder,
    /// Everything.
    Admin,
}

impl Role {
    pub const ALL: &'static [Role] = &[Role::Screener, Role::RightsHolder, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Screener => "screener",
            Role::RightsHolder => "rights-holder",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = ParseEnumError;
    fn from_str(s: &str) -> Result<Self, ParseEnumError> {
        let wanted = s.trim().to_ascii_lowercase();
        Role::ALL
            .iter()
            .copied()
            .find(|r| r.as_str() == wanted)
            .ok_or_else(|| ParseEnumError {
                kind: "role",
                value: s.to_owned(),
                expected: "screener, rights-holder, admin".to_owned(),
            })
    }
}

/// A key's public description (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    pub key_id: String,
    pub role: Role,
    /// The rights holder a `rights-holder` key acts for.
    pub holder: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// Compares two byte strings in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // black_box keeps the optimiser from short-circuiting the fold.
    std::hint::black_box(diff) == 0
}

fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| RegistryError::Random(e.to_string()))?;
    Ok(hex::encode(buf))
}

fn secret_digest(salt_hex: &str, key: &str) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(salt_hex.as_bytes());
    h.update(key.as_bytes());
    h.finalize().to_vec()
}

/// Splits `emk_<key_id>_<secret>` and returns the key id if well-formed.
fn key_id_of(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(KEY_PREFIX)?.strip_prefix('_')?;
    let (id, secret) = rest.split_once('_')?;
    let hex_of =
        |s: &str, bytes: usize| s.len() == 2 * bytes && s.chars().all(|c| c.is_ascii_hexdigit());
    (hex_of(id, KEY_ID_BYTES) && hex_of(secret, SECRET_BYTES)).then_some(id)
}

impl Registry {
    /// Creates a key and returns `(key_id, key)`; the key is not stored and
    /// cannot be shown again. `rights-holder` keys must name their holder.
    pub fn create_key(
        &self,
        role: Role,
        holder: Option<&str>,
        actor: &str,
    ) -> Result<(String, String)> {
        let actor = validate_actor(actor)?;
        let holder = holder.map(|h| required_text("holder", h)).transpose()?;
        if role == Role::RightsHolder && holder.is_none() {
            return Err(invalid(
                "holder",
                "a rights-holder key must name the holder it acts for",
            ));
        }
        let key_id = random_hex(KEY_ID_BYTES)?;
        let key = format!("{KEY_PREFIX}_{key_id}_{}", random_hex(SECRET_BYTES)?);
        let salt = random_hex(SALT_BYTES)?;
        let digest = hex::encode(secret_digest(&salt, &key));
        let now = self.now();
        let now_s = to_db_time(now)?;
        self.write("creating an API key", |tx| {
            tx.execute(
                "INSERT INTO api_keys (key_id, role, holder, salt, secret_hash, created_at, created_by) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                &values![&key_id, role.as_str(), holder.as_deref(), &salt, &digest, &now_s, actor],
            )
            .db(|| format!("storing API key {key_id}"))?;
            let details = json!({ "role": role.as_str(), "holder": holder });
            audit::append(tx, now, actor, AuditAction::KeyCreated, &key_id, details)?;
            Ok(())
        })?;
        Ok((key_id, key))
    }

    /// The key's description if `key` is a valid, unrevoked key.
    pub fn verify_key(&self, key: &str) -> Result<Option<KeyInfo>> {
        let Some(key_id) = key_id_of(key.trim()) else {
            return Ok(None);
        };
        let row: Option<(String, Option<String>, String, String, String)> = self.read(|db| {
            db.query_opt(
                "SELECT role, holder, salt, secret_hash, created_at FROM api_keys \
                 WHERE key_id = ?1 AND revoked_at IS NULL",
                &values![key_id],
            )
            .and_then(|row| {
                row.map(|r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
                    .transpose()
            })
            .db(|| format!("looking up API key {key_id}"))
        })?;
        let Some((role, holder, salt, stored_hex, created_at)) = row else {
            return Ok(None);
        };
        let stored = hex::decode(&stored_hex).unwrap_or_default();
        if !constant_time_eq(&secret_digest(&salt, key.trim()), &stored) {
            return Ok(None);
        }
        let corrupt = |reason: String| RegistryError::Corrupt {
            table: "api_keys",
            key: key_id.to_owned(),
            reason,
        };
        Ok(Some(KeyInfo {
            key_id: key_id.to_owned(),
            role: role
                .parse()
                .map_err(|e: ParseEnumError| corrupt(e.to_string()))?,
            holder,
            created_at: from_db_time(&created_at).map_err(|e| corrupt(e.to_string()))?,
        }))
    }

    /// Revokes a key (audited); revoking an unknown or revoked key is an error.
    pub fn revoke_key(&self, key_id: &str, actor: &str) -> Result<()> {
        let actor = validate_actor(actor)?;
        let now = self.now();
        let now_s = to_db_time(now)?;
        self.write("revoking an API key", |tx| {
            let n = tx
                .execute(
                    "UPDATE api_keys SET revoked_at = ?1 WHERE key_id = ?2 AND revoked_at IS NULL",
                    &values![&now_s, key_id],
                )
                .db(|| format!("revoking API key {key_id}"))?;
            if n == 0 {
                return Err(invalid("key id", format!("no active key '{key_id}'")));
            }
            audit::append(tx, now, actor, AuditAction::KeyRevoked, key_id, json!({}))?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::test_support::open_temp;

    #[test]
    fn constant_time_eq_basics() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn create_verify_revoke() {
        if crate::registry::test_support::sqlite_only("create_verify_revoke") {
            return;
        }
        let (_dir, reg) = open_temp();
        let (id, key) = reg.create_key(Role::Screener, None, "admin").unwrap();
        assert!(key.starts_with(&format!("emk_{id}_")));
        let info = reg.verify_key(&key).unwrap().unwrap();
        assert_eq!(
            (info.key_id.as_str(), info.role, info.holder),
            (id.as_str(), Role::Screener, None)
        );
        // Tampered secret, wrong shape, unknown id.
        let mut wrong = key.clone();
        let last = if key.ends_with('0') { "1" } else { "0" };
        wrong.replace_range(key.len() - 1.., last);
        assert_eq!(reg.verify_key(&wrong).unwrap(), None);
        assert_eq!(reg.verify_key("emk_nothex_x").unwrap(), None);
        assert_eq!(reg.verify_key("").unwrap(), None);
        // The secret is not stored anywhere.
        let stored: String = reg.with_raw_connection(|c| {
            c.query_row("SELECT salt || secret_hash FROM api_keys", [], |r| r.get(0))
                .unwrap()
        });
        assert!(!stored.contains(&key[key.len() - 64..]));
        reg.revoke_key(&id, "admin").unwrap();
        assert_eq!(reg.verify_key(&key).unwrap(), None);
        assert!(reg.revoke_key(&id, "admin").is_err());
    }

    #[test]
    fn rights_holder_keys_name_their_holder() {
        let (_dir, reg) = open_temp();
        assert!(reg.create_key(Role::RightsHolder, None, "admin").is_err());
        let (_, key) = reg
            .create_key(Role::RightsHolder, Some("Wesnoth Devs"), "admin")
            .unwrap();
        let info = reg.verify_key(&key).unwrap().unwrap();
        assert_eq!(info.holder.as_deref(), Some("Wesnoth Devs"));
        assert_eq!("Rights-Holder".parse::<Role>(), Ok(Role::RightsHolder));
    }
}

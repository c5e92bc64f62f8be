//! The submission id: one rule for every entry point, so the attribution
//! ledger counts each submission once however it arrived.
//!
//! | what the screener knows                       | id                      |
//! |-----------------------------------------------|-------------------------|
//! | the caller named the submission               | the caller's id, as given |
//! | the submitted audio bytes (file, upload, shard member) | `sha256:<hex>` of those bytes |
//! | only prints, with the audio's SHA-256 declared by the client that fingerprinted it | `sha256:<hex>` (the declared hash) |
//! | only prints, without a content hash           | `prints:<hex>`, SHA-256 over the prints |
//!
//! The same clip therefore gets the same id from `earmark identify`, a local
//! or remote `earmark scan`, `Screen`, `ScreenFingerprints` and the Python
//! binding. Ledgers written before this rule stored bare hex for some paths;
//! registry migration 2 rewrites those rows to the `sha256:` form.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::fingerprint::Print;

/// Prefix of content-hash ids.
pub const SHA256_PREFIX: &str = "sha256:";
/// Prefix of print-hash ids (fingerprint-only submissions without a content hash).
pub const PRINTS_PREFIX: &str = "prints:";
/// Length of a SHA-256 in lower-case hex.
const SHA256_HEX_LEN: usize = 64;
/// Longest caller-chosen id accepted.
pub const MAX_SUBMISSION_ID_LEN: usize = 256;

/// Why a submission id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmissionIdError {
    #[error("submission id is empty")]
    Empty,
    #[error("submission id is {len} characters, at most {MAX_SUBMISSION_ID_LEN} allowed")]
    TooLong { len: usize },
    #[error("'{value}' is not a SHA-256 (64 hex digits)")]
    NotSha256 { value: String },
}

/// Stable id of one submission (see the module docs for the rule).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubmissionId(String);

impl SubmissionId {
    /// `sha256:<hex>` of the submitted bytes.
    pub fn of_content(bytes: &[u8]) -> Self {
        Self(format!(
            "{SHA256_PREFIX}{}",
            hex::encode(Sha256::digest(bytes))
        ))
    }

    /// `sha256:<hex>` from a known SHA-256 (hex, with or without the prefix;
    /// upper case is folded).
    pub fn from_sha256(hex_digest: &str) -> Result<Self, SubmissionIdError> {
        let digest = hex_digest.trim();
        let digest = digest.strip_prefix(SHA256_PREFIX).unwrap_or(digest);
        if digest.len() != SHA256_HEX_LEN || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(SubmissionIdError::NotSha256 {
                value: hex_digest.to_owned(),
            });
        }
        Ok(Self(format!(
            "{SHA256_PREFIX}{}",
            digest.to_ascii_lowercase()
        )))
    }

    /// `prints:<hex>`: SHA-256 over the prints (hash, anchor frame, frequency;
    /// little-endian), for fingerprint-only submissions without a content hash.
    pub fn of_prints(prints: &[Print]) -> Self {
        let mut hasher = Sha256::new();
        for p in prints {
            hasher.update(p.hash.to_le_bytes());
            hasher.update(p.t_frame.to_le_bytes());
            hasher.update([p.f_half_bins]);
        }
        Self(format!("{PRINTS_PREFIX}{}", hex::encode(hasher.finalize())))
    }

    /// An id the caller chose (`--submission-id`, `metadata.submission_id`).
    /// A bare 64-digit hex string is taken as a content hash and gets the
    /// `sha256:` prefix, so it aggregates with the same audio screened
    /// elsewhere.
    pub fn named(id: &str) -> Result<Self, SubmissionIdError> {
        let id = id.trim();
        if id.is_empty() {
            return Err(SubmissionIdError::Empty);
        }
        if id.len() > MAX_SUBMISSION_ID_LEN {
            return Err(SubmissionIdError::TooLong { len: id.len() });
        }
        if let Ok(sha) = Self::from_sha256(id) {
            return Ok(sha);
        }
        Ok(Self(id.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The content SHA-256 (hex) when the id is a content hash.
    pub fn content_sha256(&self) -> Option<&str> {
        self.0.strip_prefix(SHA256_PREFIX)
    }
}

impl fmt::Display for SubmissionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<SubmissionId> for String {
    fn from(id: SubmissionId) -> Self {
        id.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ids_agree_whatever_form_the_hash_arrives_in() {
        let bytes = b"some audio bytes";
        let of_content = SubmissionId::of_content(bytes);
        let hex_digest = crate::content::sha256_hex(bytes);
        assert_eq!(of_content.as_str(), format!("sha256:{hex_digest}"));
        assert_eq!(SubmissionId::from_sha256(&hex_digest).unwrap(), of_content);
        assert_eq!(
            SubmissionId::from_sha256(&format!("sha256:{}", hex_digest.to_uppercase())).unwrap(),
            of_content
        );
        assert_eq!(SubmissionId::named(&hex_digest).unwrap(), of_content);
        assert_eq!(of_content.content_sha256(), Some(hex_digest.as_str()));
    }

    #[test]
    fn named_ids_are_kept_and_checked() {
        assert_eq!(
            SubmissionId::named(" batch-7/item-3 ").unwrap().as_str(),
            "batch-7/item-3"
        );
        assert_eq!(SubmissionId::named("  "), Err(SubmissionIdError::Empty));
        assert!(matches!(
            SubmissionId::named(&"x".repeat(MAX_SUBMISSION_ID_LEN + 1)),
            Err(SubmissionIdError::TooLong { .. })
        ));
        assert!(SubmissionId::from_sha256("abc").is_err());
        assert!(SubmissionId::from_sha256(&"g".repeat(64)).is_err());
    }

    #[test]
    fn print_ids_depend_on_every_field() {
        let p = |hash, t_frame, f_half_bins| Print {
            hash,
            t_frame,
            f_half_bins,
            warp: 0,
        };
        let base = SubmissionId::of_prints(&[p(1, 2, 3)]);
        assert!(base.as_str().starts_with(PRINTS_PREFIX));
        assert_ne!(base, SubmissionId::of_prints(&[p(9, 2, 3)]));
        assert_ne!(base, SubmissionId::of_prints(&[p(1, 9, 3)]));
        assert_ne!(base, SubmissionId::of_prints(&[p(1, 2, 9)]));
        assert_eq!(base.content_sha256(), None);
    }
}

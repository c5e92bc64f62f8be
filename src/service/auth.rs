//! Authentication (API keys sent as `authorization: Bearer …`) and the role
//! rules of every method.
//!
//! | method                                   | screener | rights holder        | admin |
//! |------------------------------------------|----------|----------------------|-------|
//! | `Screen`, `ScreenFingerprints`           | yes      | no                   | yes   |
//! | `RegisterWork`                           | no       | for its own holder   | yes   |
//! | `SetConsent`, `RemoveWork`, `GetWork`, `ConsentHistory` | no | own works only | yes |
//! | `ListWorks`, `AuditLog`                  | no       | filtered to own works | yes  |
//!
//! A missing, malformed, unknown or revoked key is `UNAUTHENTICATED`; a valid
//! key without the right role, or a rights holder touching another holder's
//! work, is `PERMISSION_DENIED`. Keys are checked by the registry: salted
//! SHA-256, compared in constant time.

use tonic::metadata::MetadataMap;

use super::error::ServiceError;
use crate::registry::{KeyInfo, Registry, Role};

/// Metadata key carrying the API key.
pub use crate::proto::AUTHORIZATION;
/// Scheme prefix of the authorization value.
const BEARER: &str = "Bearer ";
/// Actor recorded in the audit log in `--insecure-no-auth` mode.
pub const INSECURE_ACTOR: &str = "insecure-no-auth";

/// How callers are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// API keys from the registry (the default).
    ApiKeys,
    /// Development only: every caller is an admin. Logged loudly at startup.
    InsecureNoAuth,
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `None` in insecure mode.
    pub key_id: Option<String>,
    pub role: Role,
    /// The holder a rights-holder key acts for.
    pub holder: Option<String>,
}

impl Principal {
    fn from_key(info: KeyInfo) -> Self {
        Self {
            key_id: Some(info.key_id),
            role: info.role,
            holder: info.holder,
        }
    }

    /// The identity recorded in the audit log.
    pub fn actor(&self) -> String {
        match (&self.key_id, &self.holder) {
            (Some(id), Some(holder)) => format!("api-key:{id} ({holder})"),
            (Some(id), None) => format!("api-key:{id}"),
            (None, _) => INSECURE_ACTOR.to_owned(),
        }
    }

    fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Screening is for screeners and admins.
    pub fn require_screener(&self) -> Result<(), ServiceError> {
        match self.role {
            Role::Screener | Role::Admin => Ok(()),
            Role::RightsHolder => Err(ServiceError::PermissionDenied(
                "a rights-holder key cannot screen submissions".into(),
            )),
        }
    }

    /// Registry access is for rights holders and admins.
    pub fn require_registry(&self) -> Result<(), ServiceError> {
        match self.role {
            Role::RightsHolder | Role::Admin => Ok(()),
            Role::Screener => Err(ServiceError::PermissionDenied(
                "a screener key may only screen submissions".into(),
            )),
        }
    }

    /// May act on a work of `holder` (admins: any holder).
    pub fn require_holder(&self, holder: &str) -> Result<(), ServiceError> {
        self.require_registry()?;
        if self.is_admin() || self.owns(holder) {
            Ok(())
        } else {
            Err(ServiceError::PermissionDenied(format!(
                "this key acts for another rights holder, not for '{holder}'"
            )))
        }
    }

    /// True when this principal acts for `holder` (rights holders only).
    pub fn owns(&self, holder: &str) -> bool {
        self.holder.as_deref().map(str::trim) == Some(holder.trim())
    }

    /// `None` for an admin (sees everything), else the holder to filter on.
    pub fn holder_filter(&self) -> Option<&str> {
        if self.is_admin() {
            None
        } else {
            Some(self.holder.as_deref().unwrap_or_default())
        }
    }
}

/// Extracts the bearer token from request metadata.
pub fn bearer_token(metadata: &MetadataMap) -> Result<String, ServiceError> {
    let value = metadata
        .get(AUTHORIZATION)
        .ok_or_else(|| ServiceError::Unauthenticated("no authorization metadata".into()))?;
    let text = value
        .to_str()
        .map_err(|_| ServiceError::Unauthenticated("authorization is not ASCII".into()))?;
    let token = text
        .strip_prefix(BEARER)
        .or_else(|| text.strip_prefix("bearer "))
        .ok_or_else(|| {
            ServiceError::Unauthenticated("expected 'authorization: Bearer <key>'".into())
        })?;
    Ok(token.trim().to_owned())
}

/// Verifies `token` against the registry (blocking: call off the async workers).
pub fn verify(registry: &Registry, token: &str) -> Result<Principal, ServiceError> {
    match registry.verify_key(token)? {
        Some(info) => Ok(Principal::from_key(info)),
        None => Err(ServiceError::Unauthenticated(
            "unknown or revoked API key".into(),
        )),
    }
}

/// The principal every caller gets in insecure mode.
pub fn insecure_principal() -> Principal {
    Principal {
        key_id: None,
        role: Role::Admin,
        holder: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(name: &str) -> Principal {
        Principal {
            key_id: Some("k".into()),
            role: Role::RightsHolder,
            holder: Some(name.into()),
        }
    }

    #[test]
    fn role_rules() {
        let screener = Principal {
            key_id: Some("s".into()),
            role: Role::Screener,
            holder: None,
        };
        assert!(screener.require_screener().is_ok());
        assert!(screener.require_registry().is_err());
        let rh = holder("Wesnoth Devs");
        assert!(rh.require_screener().is_err());
        assert!(rh.require_holder("Wesnoth Devs").is_ok());
        assert!(rh.require_holder("Other").is_err());
        assert_eq!(rh.holder_filter(), Some("Wesnoth Devs"));
        let admin = insecure_principal();
        assert!(admin.require_holder("anyone").is_ok());
        assert_eq!(admin.holder_filter(), None);
        assert_eq!(admin.actor(), INSECURE_ACTOR);
    }

    #[test]
    fn bearer_parsing() {
        let mut md = MetadataMap::new();
        assert!(bearer_token(&md).is_err());
        md.insert(AUTHORIZATION, "Basic abc".parse().unwrap());
        assert!(bearer_token(&md).is_err());
        md.insert(AUTHORIZATION, "Bearer emk_1_2".parse().unwrap());
        assert_eq!(bearer_token(&md).unwrap(), "emk_1_2");
    }
}

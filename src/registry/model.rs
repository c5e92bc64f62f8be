//! Plain data types of the registry: works, consent records and their enums,
//! plus the canonical timestamp format used in the database.
//!
//! Timestamps are stored as RFC 3339 UTC text with whole seconds
//! (`2026-01-01T00:00:00Z`), a fixed-width form that sorts lexicographically in
//! time order, so SQL range filters on text columns are correct. Values are
//! normalised (converted to UTC, sub-seconds dropped) *before* they are stored
//! and returned, so what a caller gets back equals what the database holds.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use time::OffsetDateTime;
use time::format_description::FormatItem;
use time::macros::format_description;

use super::ids::{Isni, Isrc, Iswc, Territory, WorkId};

/// Canonical stored timestamp form.
const DB_TIME_FORMAT: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
/// Date-only input form accepted by [`parse_time_arg`] (midnight UTC).
const DATE_FORMAT: &[FormatItem<'static>] = format_description!("[year]-[month]-[day]");

/// A timestamp could not be parsed or formatted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid timestamp '{value}': {reason}")]
pub struct TimeError {
    pub value: String,
    pub reason: String,
}

/// Converts to UTC and drops sub-second precision.
pub fn normalize_time(t: OffsetDateTime) -> OffsetDateTime {
    t.to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .unwrap_or(t)
}

/// Formats a timestamp in the canonical stored form.
pub fn to_db_time(t: OffsetDateTime) -> Result<String, TimeError> {
    normalize_time(t)
        .format(DB_TIME_FORMAT)
        .map_err(|e| TimeError {
            value: t.to_string(),
            reason: e.to_string(),
        })
}

/// Parses a timestamp in the canonical stored form (or any RFC 3339 form).
pub fn from_db_time(s: &str) -> Result<OffsetDateTime, TimeError> {
    let parsed = time::PrimitiveDateTime::parse(s, DB_TIME_FORMAT)
        .map(|p| p.assume_utc())
        .or_else(|_| OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339));
    parsed.map(normalize_time).map_err(|e| TimeError {
        value: s.to_owned(),
        reason: e.to_string(),
    })
}

/// Parses user input: `YYYY-MM-DD` (midnight UTC) or a full RFC 3339 timestamp.
pub fn parse_time_arg(s: &str) -> Result<OffsetDateTime, TimeError> {
    let s = s.trim();
    if let Ok(date) = time::Date::parse(s, DATE_FORMAT) {
        return Ok(date.midnight().assume_utc());
    }
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(normalize_time)
        .map_err(|e| TimeError {
            value: s.to_owned(),
            reason: format!("expected YYYY-MM-DD or RFC 3339 ({e})"),
        })
}

/// A keyword did not name a known variant.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown {kind} '{value}' (expected one of: {expected})")]
pub struct ParseEnumError {
    pub kind: &'static str,
    pub value: String,
    pub expected: String,
}

/// Declares a kebab-case keyword enum with `as_str`, `Display`, `FromStr`, `ALL`.
macro_rules! keyword_enum {
    ($(#[$m:meta])* $name:ident, $kind:literal, { $($(#[$vm:meta])* $var:ident => $kw:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name { $($(#[$vm])* #[serde(rename = $kw)] $var),+ }
        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$var),+];
            /// The keyword used in storage, JSON and the CLI.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$var => $kw),+ }
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
        impl FromStr for $name {
            type Err = ParseEnumError;
            fn from_str(s: &str) -> Result<Self, ParseEnumError> {
                let wanted = s.trim().to_ascii_lowercase();
                Self::ALL.iter().copied().find(|v| v.as_str() == wanted).ok_or_else(|| ParseEnumError {
                    kind: $kind,
                    value: s.to_owned(),
                    expected: Self::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", "),
                })
            }
        }
    };
}

keyword_enum!(
    /// What a consent statement is about.
    ///
    /// Scopes form a small hierarchy (see [`Scope::parent`]): a statement about a
    /// broader scope also speaks to the narrower ones, but a statement about the
    /// exact scope takes precedence over it.
    Scope, "scope", {
        AiTraining => "ai-training",
        AiFineTuning => "ai-fine-tuning",
        AiGeneration => "ai-generation",
        VoiceSynthesis => "voice-synthesis",
        TextAndDataMining => "text-and-data-mining",
    }
);

impl Scope {
    /// The broader scope this one is a kind of: fine-tuning is training, training
    /// is text and data mining (EU DSM Art. 4 reservations, TDMRep), voice
    /// synthesis is generation.
    pub fn parent(self) -> Option<Scope> {
        match self {
            Scope::AiFineTuning => Some(Scope::AiTraining),
            Scope::AiTraining => Some(Scope::TextAndDataMining),
            Scope::VoiceSynthesis => Some(Scope::AiGeneration),
            Scope::AiGeneration | Scope::TextAndDataMining => None,
        }
    }

    /// How many steps up the hierarchy `broader` is from `self` (0 = same scope),
    /// or `None` when a statement about `broader` does not cover `self`.
    pub fn distance_to(self, broader: Scope) -> Option<u8> {
        let mut current = Some(self);
        let mut steps = 0;
        while let Some(scope) = current {
            if scope == broader {
                return Some(steps);
            }
            current = scope.parent();
            steps += 1;
        }
        None
    }
}

keyword_enum!(
    /// What a consent record states.
    ConsentStatus, "consent status", {
        /// The holder reserves the right: the use is not allowed.
        OptedOut => "opted-out",
        /// The holder licenses the use (with attribution).
        OptedIn => "opted-in",
        /// Allowed only under `terms`; without terms it counts as opted out.
        Constrained => "constrained",
    }
);

/// Where a consent statement came from. Known sources have variants; any other
/// lower-case keyword is kept as [`ConsentSource::Other`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ConsentSource {
    Registry,
    Tdmrep,
    C2pa,
    IptcPlus,
    Contract,
    Ddex,
    Other(String),
}

/// Longest accepted custom source keyword.
const SOURCE_MAX_LEN: usize = 32;

impl ConsentSource {
    pub fn as_str(&self) -> &str {
        match self {
            ConsentSource::Registry => "registry",
            ConsentSource::Tdmrep => "tdmrep",
            ConsentSource::C2pa => "c2pa",
            ConsentSource::IptcPlus => "iptc-plus",
            ConsentSource::Contract => "contract",
            ConsentSource::Ddex => "ddex",
            ConsentSource::Other(s) => s,
        }
    }
}

impl FromStr for ConsentSource {
    type Err = ParseEnumError;
    fn from_str(s: &str) -> Result<Self, ParseEnumError> {
        let kw = s.trim().to_ascii_lowercase();
        Ok(match kw.as_str() {
            "registry" => ConsentSource::Registry,
            "tdmrep" => ConsentSource::Tdmrep,
            "c2pa" => ConsentSource::C2pa,
            "iptc-plus" => ConsentSource::IptcPlus,
            "contract" => ConsentSource::Contract,
            "ddex" => ConsentSource::Ddex,
            _ => {
                let valid = !kw.is_empty()
                    && kw.len() <= SOURCE_MAX_LEN
                    && kw
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
                if !valid {
                    return Err(ParseEnumError {
                        kind: "consent source",
                        value: s.to_owned(),
                        expected: "registry, tdmrep, c2pa, iptc-plus, contract, ddex or a \
                                   keyword of up to 32 characters [a-z0-9-]"
                            .to_owned(),
                    });
                }
                ConsentSource::Other(kw)
            }
        })
    }
}

impl fmt::Display for ConsentSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for ConsentSource {
    type Error = ParseEnumError;
    fn try_from(value: String) -> Result<Self, ParseEnumError> {
        value.parse()
    }
}

impl From<ConsentSource> for String {
    fn from(value: ConsentSource) -> String {
        value.as_str().to_owned()
    }
}

/// Summary of the reference recording a work was fingerprinted from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferenceAudio {
    pub duration_s: f64,
    /// Id of the fingerprint configuration the index entries were made with.
    pub fingerprint_config: String,
    /// Lower-case hex SHA-256 of the reference file's bytes.
    pub audio_sha256: String,
    /// File name of the reference audio as given at registration.
    pub source_file: String,
}

/// A work to register.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewWork {
    pub id: WorkId,
    pub title: String,
    pub artists: Vec<String>,
    pub isrc: Option<Isrc>,
    pub iswc: Option<Iswc>,
    /// Name of the rights holder.
    pub holder: String,
    pub holder_isni: Option<Isni>,
    pub reference: ReferenceAudio,
}

/// A registered work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Work {
    pub id: WorkId,
    pub title: String,
    pub artists: Vec<String>,
    pub isrc: Option<Isrc>,
    pub iswc: Option<Iswc>,
    pub holder: String,
    pub holder_isni: Option<Isni>,
    pub reference: ReferenceAudio,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// A consent statement to append.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewConsent {
    pub scope: Scope,
    pub status: ConsentStatus,
    #[serde(with = "time::serde::rfc3339")]
    pub effective_from: OffsetDateTime,
    /// Exclusive end; `None` = open-ended.
    #[serde(with = "time::serde::rfc3339::option")]
    pub effective_until: Option<OffsetDateTime>,
    /// `None` = worldwide.
    pub territory: Option<Territory>,
    /// Who made the statement (the holder, an agent, a crawler…).
    pub asserted_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub asserted_at: OffsetDateTime,
    pub source: ConsentSource,
    pub policy_ref: Option<String>,
    /// Conditions of a `constrained` consent.
    pub terms: Option<String>,
}

impl NewConsent {
    /// A worldwide, open-ended statement from the registry, effective and
    /// asserted at `at`.
    pub fn new(scope: Scope, status: ConsentStatus, asserted_by: &str, at: OffsetDateTime) -> Self {
        Self {
            scope,
            status,
            effective_from: at,
            effective_until: None,
            territory: None,
            asserted_by: asserted_by.to_owned(),
            asserted_at: at,
            source: ConsentSource::Registry,
            policy_ref: None,
            terms: None,
        }
    }
}

/// A stored consent statement (immutable once written).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsentRecord {
    /// Record number, increasing in recording order.
    pub id: i64,
    pub work_id: WorkId,
    pub scope: Scope,
    pub status: ConsentStatus,
    #[serde(with = "time::serde::rfc3339")]
    pub effective_from: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub effective_until: Option<OffsetDateTime>,
    pub territory: Territory,
    pub asserted_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub asserted_at: OffsetDateTime,
    pub source: ConsentSource,
    pub policy_ref: Option<String>,
    pub terms: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub recorded_at: OffsetDateTime,
}

impl ConsentRecord {
    /// True when the record is in force at `at`: `effective_from <= at < effective_until`.
    pub fn in_force_at(&self, at: OffsetDateTime) -> bool {
        self.effective_from <= at && self.effective_until.is_none_or(|until| at < until)
    }

    /// True for a `constrained` record that carries terms.
    pub fn has_terms(&self) -> bool {
        self.terms.as_deref().is_some_and(|t| !t.trim().is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn time_round_trip_and_order() {
        let t = datetime!(2026-03-04 05:06:07.891 +02:00);
        let s = to_db_time(t).unwrap();
        assert_eq!(s, "2026-03-04T03:06:07Z");
        assert_eq!(
            from_db_time(&s).unwrap(),
            datetime!(2026-03-04 03:06:07 UTC)
        );
        assert!(to_db_time(datetime!(2026-01-01 0:00 UTC)).unwrap() < s);
        assert_eq!(
            parse_time_arg("2026-01-01").unwrap(),
            datetime!(2026-01-01 0:00 UTC)
        );
        assert!(parse_time_arg("01/02/2026").is_err());
    }

    #[test]
    fn scope_hierarchy() {
        assert_eq!(
            Scope::AiFineTuning.distance_to(Scope::AiFineTuning),
            Some(0)
        );
        assert_eq!(Scope::AiFineTuning.distance_to(Scope::AiTraining), Some(1));
        assert_eq!(
            Scope::AiFineTuning.distance_to(Scope::TextAndDataMining),
            Some(2)
        );
        assert_eq!(Scope::AiTraining.distance_to(Scope::AiFineTuning), None);
        assert_eq!(
            Scope::VoiceSynthesis.distance_to(Scope::AiGeneration),
            Some(1)
        );
        assert_eq!(
            Scope::AiGeneration.distance_to(Scope::TextAndDataMining),
            None
        );
    }

    #[test]
    fn keywords_parse() {
        assert_eq!("AI-Training".parse::<Scope>(), Ok(Scope::AiTraining));
        let err = "training".parse::<Scope>().unwrap_err();
        assert!(err.to_string().contains("ai-training, ai-fine-tuning"));
        assert_eq!(
            "opted-out".parse::<ConsentStatus>(),
            Ok(ConsentStatus::OptedOut)
        );
        assert_eq!(
            "iptc-plus".parse::<ConsentSource>(),
            Ok(ConsentSource::IptcPlus)
        );
        assert_eq!(
            "spotify-api".parse::<ConsentSource>(),
            Ok(ConsentSource::Other("spotify-api".into()))
        );
        assert!("bad source!".parse::<ConsentSource>().is_err());
        assert_eq!(
            serde_json::to_string(&Scope::TextAndDataMining).unwrap(),
            "\"text-and-data-mining\""
        );
    }
}

//! The service's error type and its ONE mapping to gRPC statuses.
//!
//! Handlers return [`ServiceError`]; [`ServiceError::into_status`] is the only
//! place that picks a gRPC code and attaches rich details (`google.rpc.*` via
//! `tonic-types`): `ErrorInfo` with a machine-readable reason on every error,
//! `BadRequest` for invalid fields, `QuotaFailure` for exceeded limits,
//! `RetryInfo` when shedding load, `ResourceInfo` for missing works,
//! `PreconditionFailure` for a fingerprint config mismatch and `RequestInfo`
//! with the request id. Internal errors are logged with their cause and sent
//! to the client without it.

use std::collections::HashMap;
use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::decode::DecodeError;
use crate::error::EngineError;
use crate::index::IndexError;
use crate::policy::PolicyError;
use crate::registry::RegistryError;
use crate::screening::ScreeningError;

/// `ErrorInfo.domain` of every error this service returns.
pub const ERROR_DOMAIN: &str = "earmark.v1";

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("missing or invalid API key: {0}")]
    Unauthenticated(String),
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    #[error("server not ready: {0}")]
    NotReady(String),
    #[error("server overloaded: {0}")]
    Overloaded(String),
    #[error("upload of {bytes} bytes exceeds the limit of {max_bytes} bytes")]
    UploadTooLarge { bytes: u64, max_bytes: u64 },
    #[error("{count} prints exceed the limit of {max} per request")]
    TooManyPrints { count: u64, max: u64 },
    #[error("fingerprint config {found:#010x} does not match the server's {expected:#010x}")]
    ConfigMismatch { found: u32, expected: u32 },
    #[error("the caller went away or cancelled the request")]
    Cancelled,
    #[error("the request's deadline passed")]
    DeadlineExceeded,
    #[error("work '{0}' is not registered")]
    WorkNotFound(String),
    // Domain errors are boxed to keep `Result<_, ServiceError>` small.
    #[error(transparent)]
    Engine(Box<EngineError>),
    #[error(transparent)]
    Registry(Box<RegistryError>),
    #[error(transparent)]
    Policy(Box<PolicyError>),
    /// The screening use case's own refusals (an index behind the registry).
    #[error(transparent)]
    Screening(Box<ScreeningError>),
    /// Reading the client's stream failed (caller gone, oversized message…).
    #[error("reading the request stream: {}", .0.message())]
    Stream(Box<Status>),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<EngineError> for ServiceError {
    fn from(err: EngineError) -> Self {
        ServiceError::Engine(Box::new(err))
    }
}

impl From<RegistryError> for ServiceError {
    fn from(err: RegistryError) -> Self {
        ServiceError::Registry(Box::new(err))
    }
}

impl From<PolicyError> for ServiceError {
    fn from(err: PolicyError) -> Self {
        ServiceError::Policy(Box::new(err))
    }
}

impl From<ScreeningError> for ServiceError {
    fn from(err: ScreeningError) -> Self {
        match err {
            ScreeningError::Policy(e) => ServiceError::Policy(e),
            ScreeningError::Registry(e) => ServiceError::Registry(e),
            ScreeningError::Index(e) => ServiceError::from(*e),
            other @ ScreeningError::IndexBehind { .. } => ServiceError::Screening(Box::new(other)),
        }
    }
}

impl From<DecodeError> for ServiceError {
    fn from(err: DecodeError) -> Self {
        EngineError::Decode(err).into()
    }
}

impl From<IndexError> for ServiceError {
    fn from(err: IndexError) -> Self {
        EngineError::Index(err).into()
    }
}

impl ServiceError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ServiceError::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The gRPC code this error maps to (see [`ServiceError::into_status`]).
    pub fn code(&self) -> Code {
        self.classify().code
    }

    /// Maps the error to a status with rich details; `request_id` goes into
    /// `RequestInfo` so a client can quote it.
    pub fn into_status(self, request_id: &str) -> Status {
        let c = self.classify();
        let message = if c.code == Code::Internal {
            tracing::error!(request_id, error = %self, "internal error");
            format!("internal error (request id {request_id})")
        } else {
            self.to_string()
        };
        let mut details = ErrorDetails::new();
        details.set_error_info(c.reason, ERROR_DOMAIN, c.metadata);
        details.set_request_info(request_id, "");
        for (field, reason) in c.bad_request {
            details.add_bad_request_violation(field, reason);
        }
        for (subject, description) in c.quota {
            details.add_quota_failure_violation(subject, description);
        }
        if let Some(delay) = c.retry {
            details.set_retry_info(Some(delay));
        }
        if let Some(name) = c.resource {
            details.set_resource_info(
                "earmark.v1.Work",
                name,
                "",
                "no registered work has this id",
            );
        }
        if let Some((subject, description)) = c.precondition {
            details.add_precondition_failure_violation("FINGERPRINT_CONFIG", subject, description);
        }
        Status::with_error_details(c.code, message, details)
    }

    fn classify(&self) -> Class {
        match self {
            ServiceError::Unauthenticated(_) => {
                Class::new(Code::Unauthenticated, "UNAUTHENTICATED")
            }
            ServiceError::PermissionDenied(_) => {
                Class::new(Code::PermissionDenied, "PERMISSION_DENIED")
            }
            ServiceError::InvalidArgument { field, reason } => {
                Class::new(Code::InvalidArgument, "INVALID_ARGUMENT").field(field, reason)
            }
            ServiceError::NotReady(_) => {
                Class::new(Code::Unavailable, "NOT_READY").retry(RETRY_NOT_READY)
            }
            ServiceError::Overloaded(what) => Class::new(Code::ResourceExhausted, "OVERLOADED")
                .retry(RETRY_OVERLOADED)
                .quota("concurrent requests", what),
            ServiceError::UploadTooLarge { bytes, max_bytes } => {
                Class::new(Code::ResourceExhausted, "UPLOAD_TOO_LARGE")
                    .quota(
                        "upload bytes",
                        format!("{bytes} bytes > {max_bytes} allowed per request"),
                    )
                    .meta("max_bytes", max_bytes)
            }
            ServiceError::TooManyPrints { count, max } => {
                Class::new(Code::ResourceExhausted, "TOO_MANY_PRINTS")
                    .quota(
                        "prints",
                        format!("{count} prints > {max} allowed per request"),
                    )
                    .meta("max_prints", max)
            }
            ServiceError::ConfigMismatch { found, expected } => {
                let mut c = Class::new(Code::FailedPrecondition, "FINGERPRINT_CONFIG_MISMATCH");
                c.precondition = Some((
                    format!("{found:#010x}"),
                    format!("prints must be computed with fingerprint config {expected:#010x}"),
                ));
                c.meta("expected_config_id", format!("{expected:#010x}"))
            }
            ServiceError::Cancelled => Class::new(Code::Cancelled, "CANCELLED"),
            ServiceError::DeadlineExceeded => {
                Class::new(Code::DeadlineExceeded, "DEADLINE_EXCEEDED")
            }
            ServiceError::WorkNotFound(id) => Class::not_found(id),
            ServiceError::Stream(status) => match status.code() {
                // tonic reports a message over the decoding limit as OUT_OF_RANGE
                // (RESOURCE_EXHAUSTED when decompressing); both are a size limit.
                Code::OutOfRange | Code::ResourceExhausted => {
                    Class::new(Code::ResourceExhausted, "MESSAGE_TOO_LARGE")
                        .quota("message bytes", status.message().to_owned())
                }
                // tonic reports a message that does not parse as INTERNAL; it
                // is the client's malformed request, not a server fault.
                Code::Internal => Class::new(Code::InvalidArgument, "MALFORMED_MESSAGE"),
                code => Class::new(code, "STREAM_ERROR"),
            },
            ServiceError::Engine(e) => classify_engine(e),
            ServiceError::Registry(e) => classify_registry(e),
            ServiceError::Policy(p) => match p.as_ref() {
                PolicyError::Registry { source, .. } => classify_registry(source),
                _ => Class::internal(),
            },
            ServiceError::Screening(e) => match e.as_ref() {
                ScreeningError::IndexBehind { required, held, .. } => {
                    Class::new(Code::Unavailable, "INDEX_BEHIND")
                        .retry(RETRY_INDEX_BEHIND)
                        .meta("required_generation", required)
                        .meta("held_generation", held)
                }
                ScreeningError::Registry(r) => classify_registry(r),
                ScreeningError::Index(i) => classify_index(i),
                ScreeningError::Policy(p) => match p.as_ref() {
                    PolicyError::Registry { source, .. } => classify_registry(source),
                    _ => Class::internal(),
                },
            },
            ServiceError::Internal(_) => Class::internal(),
        }
    }
}

/// Suggested retry delay when the server is not ready yet.
const RETRY_NOT_READY: Duration = Duration::from_secs(1);
/// Suggested retry delay when load is shed.
const RETRY_OVERLOADED: Duration = Duration::from_millis(500);
/// Suggested retry delay when the index or registry is locked by another process.
const RETRY_LOCKED: Duration = Duration::from_secs(2);
/// Suggested retry delay when this replica's index is behind the registry.
const RETRY_INDEX_BEHIND: Duration = Duration::from_secs(1);

/// Code and details of one error.
struct Class {
    code: Code,
    reason: &'static str,
    metadata: HashMap<String, String>,
    bad_request: Vec<(String, String)>,
    quota: Vec<(String, String)>,
    retry: Option<Duration>,
    resource: Option<String>,
    precondition: Option<(String, String)>,
}

impl Class {
    fn new(code: Code, reason: &'static str) -> Self {
        Self {
            code,
            reason,
            metadata: HashMap::new(),
            bad_request: Vec::new(),
            quota: Vec::new(),
            retry: None,
            resource: None,
            precondition: None,
        }
    }

    fn internal() -> Self {
        Self::new(Code::Internal, "INTERNAL")
    }

    fn not_found(work_id: &str) -> Self {
        let mut c = Self::new(Code::NotFound, "WORK_NOT_FOUND");
        c.resource = Some(work_id.to_owned());
        c
    }

    fn field(mut self, field: impl Into<String>, reason: impl Into<String>) -> Self {
        self.bad_request.push((field.into(), reason.into()));
        self
    }

    fn quota(mut self, subject: impl Into<String>, description: impl Into<String>) -> Self {
        self.quota.push((subject.into(), description.into()));
        self
    }

    fn retry(mut self, delay: Duration) -> Self {
        self.retry = Some(delay);
        self
    }

    fn meta(mut self, key: &str, value: impl ToString) -> Self {
        self.metadata.insert(key.to_owned(), value.to_string());
        self
    }
}

fn classify_engine(e: &EngineError) -> Class {
    match e {
        EngineError::Decode(d) => classify_decode(d),
        EngineError::Index(i) => classify_index(i),
        EngineError::TooShort { .. } => {
            Class::new(Code::InvalidArgument, "AUDIO_TOO_SHORT").field("audio", e.to_string())
        }
        EngineError::Silent { .. } | EngineError::TooFewPeaks { .. } => {
            Class::new(Code::InvalidArgument, "AUDIO_SILENT").field("audio", e.to_string())
        }
        EngineError::InvalidWorkId { reason, .. } => {
            Class::new(Code::InvalidArgument, "INVALID_WORK_ID").field("work_id", reason)
        }
        EngineError::AlreadyRegistered { .. } => Class::new(Code::AlreadyExists, "WORK_EXISTS"),
        EngineError::Registry(r) => classify_registry(r),
        EngineError::Policy(p) => match p.as_ref() {
            PolicyError::Registry { source, .. } => classify_registry(source),
            _ => Class::internal(),
        },
        // ReadFile, Policy and anything added later: the server's problem.
        _ => Class::internal(),
    }
}

fn classify_decode(d: &DecodeError) -> Class {
    let bad = |reason: &'static str| {
        Class::new(Code::InvalidArgument, reason).field("audio", d.to_string())
    };
    match d {
        DecodeError::TooLarge {
            bytes, max_bytes, ..
        } => Class::new(Code::ResourceExhausted, "UPLOAD_TOO_LARGE")
            .quota(
                "upload bytes",
                format!("{bytes} bytes > {max_bytes} allowed per request"),
            )
            .meta("max_bytes", max_bytes),
        DecodeError::TooLong { max_duration_s, .. } => {
            bad("AUDIO_TOO_LONG").meta("max_duration_s", max_duration_s)
        }
        DecodeError::Empty { .. } => bad("EMPTY_AUDIO"),
        DecodeError::UnsupportedFormat { .. } | DecodeError::NoAudioTrack { .. } => {
            bad("UNSUPPORTED_FORMAT")
        }
        DecodeError::UnsupportedCodec { .. } => bad("UNSUPPORTED_CODEC"),
        DecodeError::TooManyChannels { .. } => bad("TOO_MANY_CHANNELS"),
        DecodeError::BadParameters { .. }
        | DecodeError::Corrupt { .. }
        | DecodeError::Truncated { .. }
        | DecodeError::Unterminated { .. }
        | DecodeError::NoAudio { .. } => bad("UNDECODABLE_AUDIO"),
        // Open, Read, Resample, and anything added later.
        _ => Class::internal(),
    }
}

fn classify_index(i: &IndexError) -> Class {
    match i {
        IndexError::Locked { .. } => {
            Class::new(Code::Unavailable, "INDEX_LOCKED").retry(RETRY_LOCKED)
        }
        // The index directory cannot be read or written (a shared file
        // system gone or failing, a full disk): retry, here or elsewhere.
        IndexError::Io { .. } => {
            Class::new(Code::Unavailable, "INDEX_UNAVAILABLE").retry(RETRY_LOCKED)
        }
        IndexError::DuplicateWork { .. } => Class::new(Code::AlreadyExists, "WORK_EXISTS"),
        IndexError::UnknownWork { work_id } => Class::not_found(work_id),
        IndexError::ReferenceTooLong { .. } => {
            Class::new(Code::InvalidArgument, "REFERENCE_TOO_LONG").field("audio", i.to_string())
        }
        // Corruption, format or config mismatch, and anything added later.
        _ => Class::internal(),
    }
}

fn classify_registry(r: &RegistryError) -> Class {
    match r {
        RegistryError::WorkExists { .. } => Class::new(Code::AlreadyExists, "WORK_EXISTS"),
        RegistryError::WorkNotFound { id } => Class::not_found(id),
        RegistryError::Invalid { field, reason } => {
            Class::new(Code::InvalidArgument, "INVALID_ARGUMENT").field(*field, reason)
        }
        RegistryError::Id(e) => Class::new(Code::InvalidArgument, "INVALID_IDENTIFIER")
            .field(e.kind.to_string(), e.to_string()),
        RegistryError::Keyword(e) => {
            Class::new(Code::InvalidArgument, "INVALID_KEYWORD").field(e.kind, e.to_string())
        }
        RegistryError::Time(e) => {
            Class::new(Code::InvalidArgument, "INVALID_TIME").field("time", e.to_string())
        }
        e if e.is_busy() => Class::new(Code::Unavailable, "REGISTRY_BUSY").retry(RETRY_LOCKED),
        e if e.is_unavailable() => {
            Class::new(Code::Unavailable, "REGISTRY_UNAVAILABLE").retry(RETRY_LOCKED)
        }
        _ => Class::internal(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_table() {
        let cases = [
            (
                ServiceError::Unauthenticated("x".into()),
                Code::Unauthenticated,
            ),
            (
                ServiceError::PermissionDenied("x".into()),
                Code::PermissionDenied,
            ),
            (
                ServiceError::UploadTooLarge {
                    bytes: 2,
                    max_bytes: 1,
                },
                Code::ResourceExhausted,
            ),
            (
                ServiceError::Overloaded("x".into()),
                Code::ResourceExhausted,
            ),
            (ServiceError::NotReady("x".into()), Code::Unavailable),
            (
                ScreeningError::IndexBehind {
                    required: 5,
                    held: 4,
                    waited_s: 3.0,
                }
                .into(),
                Code::Unavailable,
            ),
            (ServiceError::WorkNotFound("w".into()), Code::NotFound),
            (ServiceError::Internal("boom".into()), Code::Internal),
            (
                RegistryError::WorkNotFound { id: "w".into() }.into(),
                Code::NotFound,
            ),
            (
                DecodeError::TooLong {
                    input: "a".into(),
                    duration_s: 2.0,
                    max_duration_s: 1.0,
                }
                .into(),
                Code::InvalidArgument,
            ),
        ];
        for (err, code) in cases {
            assert_eq!(err.code(), code, "{err}");
        }
    }

    #[test]
    fn statuses_carry_details_and_hide_internals() {
        let status = ServiceError::UploadTooLarge {
            bytes: 10,
            max_bytes: 5,
        }
        .into_status("req-1");
        assert_eq!(status.code(), Code::ResourceExhausted);
        let details = status.get_error_details();
        assert_eq!(
            details.error_info().map(|i| i.reason.as_str()),
            Some("UPLOAD_TOO_LARGE")
        );
        assert!(details.quota_failure().is_some());
        assert_eq!(
            details.request_info().map(|r| r.request_id.as_str()),
            Some("req-1")
        );

        let status = ServiceError::from(ScreeningError::IndexBehind {
            required: 7,
            held: 6,
            waited_s: 3.0,
        })
        .into_status("req-3");
        assert_eq!(status.code(), Code::Unavailable);
        assert!(
            status.message().contains("generation 6") && status.message().contains("generation 7"),
            "{}",
            status.message()
        );
        let details = status.get_error_details();
        let info = details.error_info().unwrap();
        assert_eq!(info.reason, "INDEX_BEHIND");
        assert_eq!(info.metadata["required_generation"], "7");
        assert_eq!(info.metadata["held_generation"], "6");
        assert!(details.retry_info().is_some());

        let status = ServiceError::Internal("secret path /x".into()).into_status("req-2");
        assert!(!status.message().contains("secret"));
        assert!(status.message().contains("req-2"));
    }
}

//! A small client for the service: connection (optionally TLS), API key
//! header, chunked uploads. Used by `earmark identify --remote`,
//! `earmark bench serve` and the integration tests.

use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Status};

use crate::proto::{self as pb, AUTHORIZATION};

/// Bytes per `chunk` message of an upload.
pub const CHUNK_BYTES: usize = 256 * 1024;
/// Connection timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid server address '{url}': {reason}")]
    Url { url: String, reason: String },
    #[error("cannot connect to {url}: {source}")]
    Connect {
        url: String,
        source: tonic::transport::Error,
    },
    #[error("the API key contains characters not allowed in a header")]
    Key,
}

/// TLS settings of a client.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// CA certificate (PEM) that signed the server's certificate.
    pub ca: Option<Vec<u8>>,
    /// Client certificate and key (PEM) for mTLS.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// Name to verify in the server's certificate (default: the URL's host).
    pub domain: Option<String>,
}

/// Adds `authorization: Bearer <key>` to every request.
#[derive(Clone)]
pub struct ApiKey(Option<MetadataValue<Ascii>>);

impl ApiKey {
    pub fn new(key: Option<&str>) -> Result<Self, ClientError> {
        key.map(|k| {
            MetadataValue::try_from(format!("Bearer {}", k.trim())).map_err(|_| ClientError::Key)
        })
        .transpose()
        .map(ApiKey)
    }
}

impl Interceptor for ApiKey {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            request.metadata_mut().insert(AUTHORIZATION, v.clone());
        }
        Ok(request)
    }
}

pub type ScreeningClient =
    pb::screening_client::ScreeningClient<InterceptedService<Channel, ApiKey>>;
pub type RegistryClient = pb::registry_client::RegistryClient<InterceptedService<Channel, ApiKey>>;

/// Connects to `url` (`http://host:port`, or `https://…` with `tls`).
pub async fn connect(url: &str, tls: Option<&ClientTls>) -> Result<Channel, ClientError> {
    let bad = |reason: String| ClientError::Url {
        url: url.to_owned(),
        reason,
    };
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| bad(e.to_string()))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    if let Some(tls) = tls {
        let mut config = ClientTlsConfig::new();
        if let Some(ca) = &tls.ca {
            config = config.ca_certificate(Certificate::from_pem(ca));
        }
        if let Some((cert, key)) = &tls.identity {
            config = config.identity(Identity::from_pem(cert, key));
        }
        if let Some(domain) = &tls.domain {
            config = config.domain_name(domain.clone());
        }
        endpoint = endpoint
            .tls_config(config)
            .map_err(|e| bad(e.to_string()))?;
    }
    endpoint
        .connect()
        .await
        .map_err(|source| ClientError::Connect {
            url: url.to_owned(),
            source,
        })
}

/// A screening client over `channel` sending `key`.
pub fn screening(
    channel: Channel,
    key: Option<&str>,
    max_message_bytes: usize,
) -> Result<ScreeningClient, ClientError> {
    Ok(
        pb::screening_client::ScreeningClient::with_interceptor(channel, ApiKey::new(key)?)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes),
    )
}

/// A registry client over `channel` sending `key`.
pub fn registry(
    channel: Channel,
    key: Option<&str>,
    max_message_bytes: usize,
) -> Result<RegistryClient, ClientError> {
    Ok(
        pb::registry_client::RegistryClient::with_interceptor(channel, ApiKey::new(key)?)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes),
    )
}

/// The `Screen` messages for an upload: metadata, then chunks of `bytes`.
pub fn screen_requests(metadata: pb::SubmissionMetadata, bytes: &[u8]) -> Vec<pb::ScreenRequest> {
    use pb::screen_request::Part;
    std::iter::once(Part::Metadata(metadata))
        .chain(bytes.chunks(CHUNK_BYTES).map(|c| Part::Chunk(c.to_vec())))
        .map(|p| pb::ScreenRequest { part: Some(p) })
        .collect()
}

/// The `RegisterWork` messages: metadata, then chunks of the reference audio.
pub fn register_requests(metadata: pb::WorkMetadata, bytes: &[u8]) -> Vec<pb::RegisterWorkRequest> {
    use pb::register_work_request::Part;
    std::iter::once(Part::Metadata(metadata))
        .chain(bytes.chunks(CHUNK_BYTES).map(|c| Part::Chunk(c.to_vec())))
        .map(|p| pb::RegisterWorkRequest { part: Some(p) })
        .collect()
}

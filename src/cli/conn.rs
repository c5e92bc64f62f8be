//! Reaching an earmark server from the command line: address, API key, TLS.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::client::{self, ClientTls, ScreeningClient};

/// Largest message the command-line clients accept.
pub(crate) const CLIENT_MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// How to reach and authenticate to a server.
#[derive(Debug, Clone, Args)]
pub struct ConnArgs {
    /// API key (`emk_…`) sent as `authorization: Bearer`.
    #[arg(long, env = "EARMARK_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// CA certificate (PEM) to verify an https:// server with.
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(long, requires = "tls_client_key")]
    pub tls_client_cert: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS.
    #[arg(long, requires = "tls_client_cert")]
    pub tls_client_key: Option<PathBuf>,
}

impl ConnArgs {
    pub(crate) fn tls(&self) -> Result<Option<ClientTls>> {
        if self.tls_ca.is_none() && self.tls_client_cert.is_none() {
            return Ok(None);
        }
        let identity = match (&self.tls_client_cert, &self.tls_client_key) {
            (Some(c), Some(k)) => Some((
                super::serve::read(c, "client certificate")?,
                super::serve::read(k, "client key")?,
            )),
            _ => None,
        };
        Ok(Some(ClientTls {
            ca: self
                .tls_ca
                .as_deref()
                .map(|p| super::serve::read(p, "CA certificate"))
                .transpose()?,
            identity,
            domain: None,
        }))
    }

    pub(crate) async fn screening(&self, url: &str) -> Result<ScreeningClient> {
        let tls = self.tls()?;
        let channel = client::connect(url, tls.as_ref()).await?;
        Ok(client::screening(
            channel,
            self.api_key.as_deref(),
            CLIENT_MAX_MESSAGE,
        )?)
    }
}

/// `--remote URL` options (flattened into `identify`).
#[derive(Debug, Clone, Args)]
pub struct RemoteArgs {
    /// Screen on an earmark server: files are fingerprinted here and only the
    /// prints are sent (ScreenFingerprints); fingerprint files from
    /// `earmark fingerprint` are sent as they are.
    #[arg(long, value_name = "URL")]
    pub remote: Option<String>,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// `http://` added to a bare `host:port`.
pub(crate) fn normalise_url(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    }
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

//! # The gRPC service (`earmark serve`)
//!
//! API: `proto/earmark/v1/` (package `earmark.v1`): `Screening` (screen audio
//! or client-side fingerprints) and `Registry` (works, consent, audit log),
//! plus `grpc.health.v1` and server reflection (v1 and v1alpha), so generic
//! clients such as grpcurl can discover and call every method.
//!
//! ## Shape
//! * [`server`]: builds the tonic server (limits, TLS, health, reflection),
//!   opens the data directory in the background, shuts down gracefully.
//! * [`state`]: the one [`Catalog`](crate::registration::Catalog), a read connection,
//!   the index snapshot, the bounded CPU pool and the load-shedding gate.
//! * `screening`, `registry_svc`: the adapters. They only authenticate, read
//!   the request, call the domain (on the CPU pool or blocking pool, never on
//!   the async workers) and map results with `convert`.
//! * `upload_limits`: a tower layer before every handler: upload slots and
//!   the idle / total-time cut of client streams.
//! * [`error`]: the one mapping from domain errors to gRPC statuses with rich
//!   `google.rpc` details.
//! * [`auth`]: API keys (`authorization: Bearer emk_…`) and the role rules.
//! * The wire types are [`crate::proto`]; the client the CLI, the scan and the
//!   tests use is [`crate::client`]; the fingerprint file `ScreenFingerprints`
//!   takes is [`crate::fingerprint::file`].
//!
//! Every call logs one line with its request id, method, code, verdict and
//! latency, and feeds the Prometheus metrics (`metrics`).

pub mod auth;
mod call;
mod convert;
pub mod error;
mod metrics;
pub use crate::proto as pb;
mod registry_svc;
mod screening;
pub mod server;
pub mod state;
mod upload_limits;

use std::sync::Arc;

use tonic::Request;

pub use auth::AuthMode;
pub use call::REQUEST_ID;
pub use convert::scope_to_pb;
pub use error::ServiceError;
pub use server::{ServerConfig, ServerHandle, TlsPem, run, start};
pub use state::Limits;

/// The gRPC service implementation shared by `Screening` and `Registry`.
#[derive(Clone)]
pub struct Service {
    shared: Arc<state::Shared>,
    auth: AuthMode,
}

impl Service {
    fn call<T>(&self, method: &'static str, request: &Request<T>) -> call::Call {
        call::Call::start(
            method,
            request,
            self.shared.settings.limits.max_request_time,
        )
    }
}

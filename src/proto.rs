//! Protobuf messages of the `earmark.v1` API (`proto/earmark/v1/`), generated
//! at build time: the wire format of the gRPC service and of fingerprint files.
//! With the `grpc` feature the same generated file also holds the tonic client
//! and server stubs.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

use crate::registry::Scope as RegistryScope;

include!(concat!(env!("OUT_DIR"), "/earmark.v1.rs"));

/// Encoded `FileDescriptorSet` of the earmark.v1 protos (and their imports),
/// served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/earmark_v1_descriptor.bin"));

/// Request metadata key of the API key (`authorization: Bearer emk_…`).
pub const AUTHORIZATION: &str = "authorization";

/// The wire value of a consent scope.
pub fn scope_to_pb(s: RegistryScope) -> Scope {
    match s {
        RegistryScope::AiTraining => Scope::AiTraining,
        RegistryScope::AiFineTuning => Scope::AiFineTuning,
        RegistryScope::AiGeneration => Scope::AiGeneration,
        RegistryScope::VoiceSynthesis => Scope::VoiceSynthesis,
        RegistryScope::TextAndDataMining => Scope::TextAndDataMining,
    }
}

//! Generated protobuf/gRPC code for `earmark.v1` (see `proto/earmark/v1/`).

#![allow(clippy::all, clippy::pedantic, missing_docs)]

tonic::include_proto!("earmark.v1");

/// Encoded `FileDescriptorSet` of the earmark.v1 protos (and their imports),
/// served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("earmark_v1_descriptor");

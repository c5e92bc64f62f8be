//! # earmark — an audio fingerprint consent gate
//!
//! earmark answers one question at ingestion time: *does this audio contain a
//! registered recording whose owners opted out of AI training?*
//!
//! ## Architecture (data flows top to bottom)
//!
//! ```text
//! bytes ─decode─▶ mono f32 @ 8 kHz ─spectrogram─▶ |STFT|² frames ─fingerprint─▶ peaks ─▶ triplet hashes
//!                                                                                          │
//!   registry (works, consent, audit) ◀─ policy ◀─ matches (work, score, time ranges) ◀─ matcher ◀─ index
//!                                        │
//!                                     verdict + evidence ─▶ report / CLI / gRPC / attribution ledger
//! ```
//!
//! * [`decode`] probes any supported container by content (symphonia), down-mixes to
//!   mono and resamples (rubato) to [`fingerprint::SAMPLE_RATE_HZ`], streaming in
//!   blocks so memory stays bounded; limits are checked before work is done.
//! * [`spectrogram`] computes a short-time power spectrum with an FFT planned once
//!   per thread (rustfft; two real frames share one complex transform) into an
//!   `ndarray` frames × bins matrix.
//! * [`fingerprint`] picks spectral peaks at a controlled density and hashes
//!   *triplets* of peaks with time **ratios** and log-frequency **differences**, so
//!   hashes survive speed, tempo and pitch changes as well as noise and codecs. Long
//!   inputs are cut into overlapping blocks fingerprinted in parallel with rayon.
//! * [`index`] stores hash → postings in immutable, checksummed, memory-mapped
//!   segments named by an atomically replaced manifest; removals are tombstones until
//!   `compact`.
//! * [`matcher`] votes postings into (work, time-scale, offset) clusters, fits the time
//!   map of each cluster and splits it into contiguous query ranges, so one submission
//!   can report several works at several places; each candidate alignment is then
//!   verified on the reference's stored spectral peaks and scored against chance.
//! * [`engine`] ties the pieces together for the CLI (and the service): open a data
//!   directory, register works, identify files.
//! * [`registry`] and [`policy`] turn matches into consent verdicts with evidence.
//!
//! Core modules are synchronous and know nothing of async runtimes.
//!
//! Module docs describe the design down to its private constants and stages;
//! read them with `cargo doc --document-private-items`.
#![allow(rustdoc::private_intra_doc_links)]

#[cfg(feature = "cli")]
pub mod cli;
#[cfg(feature = "grpc")]
pub mod client;
pub mod content;
pub mod data_dir;
pub mod decode;
pub mod error;
pub mod fingerprint;
pub mod index;
pub mod matcher;
pub mod policy;
pub mod proto;
pub mod registration;
pub mod registry;
pub mod report;
#[cfg(feature = "scan")]
pub mod scan;
pub mod screening;
#[cfg(feature = "grpc")]
pub mod service;
pub mod spectrogram;

/// Version of the engine, recorded in every verdict so results can be reproduced.
pub const ENGINE_VERSION: &str = env!("CARGO_PKG_VERSION");

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
//!                          screening: verdict + evidence ─▶ report / CLI / gRPC / attribution ledger
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
//! * [`registry`] holds works, consent records, the audit chain, the
//!   attribution ledger and the index generation it vouches for (SQLite, or
//!   PostgreSQL shared by service replicas); [`policy`] turns matches into
//!   consent verdicts with evidence.
//! * [`screening`] is the one use case every entry point calls: match →
//!   verdict → ledger record, with one rule for submission ids; on a shared
//!   index, no verdict from a snapshot older than the registry's generation.
//! * [`registration`] registers works (index and registry kept consistent;
//!   with a PostgreSQL registry, one writer at a time over all replicas);
//!   [`data_dir`], [`content`], [`error`] and [`proto`] are shared plumbing.
//! * [`html`] (feature `html`) renders scan report rows and the run
//!   summary as one self-contained HTML page: totals, works, a filterable item
//!   table with per-item timelines.
//!
//! The edges adapt, behind cargo features that are on by default: `cli`
//! (the `earmark` binary), `scan` (corpus scans), `grpc` (the service and its
//! client). The core builds without them (`--no-default-features`), is
//! synchronous and knows nothing of async runtimes; the edges never import one
//! another. See `docs/architecture.md`.
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
#[cfg(feature = "html")]
pub mod html;
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

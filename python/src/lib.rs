//! Python bindings of earmark (`earmark._earmark`): a data directory opened
//! for screening ([`NativeGate`]) and fingerprinting to the fingerprint file
//! format. The Python package `earmark` wraps these in its public API.
//!
//! Sources arrive from Python already classified (path, encoded bytes,
//! little-endian float32 PCM, or an invalid item with its reason) and are
//! copied into Rust before the GIL is released; screening then runs on the
//! gate's own rayon pool.

mod fingerprint;
mod screen;

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::str::FromStr;

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};
use rayon::prelude::*;
use time::OffsetDateTime;

use earmark::index::IndexError;
use earmark::policy::{POLICY_VERSION, PolicyConfig, UnknownConsent};
use earmark::registry::{Scope, Territory};
use screen::{Item, Label, OpenError, Screening, Source};

create_exception!(
    earmark._earmark,
    EarmarkError,
    PyException,
    "Base of earmark's exceptions."
);
create_exception!(
    earmark._earmark,
    DataDirError,
    EarmarkError,
    "The data directory is missing, unreadable, or not a usable earmark data directory."
);
create_exception!(
    earmark._earmark,
    ConfigMismatchError,
    DataDirError,
    "The index was built with another fingerprint configuration or format version."
);
create_exception!(
    earmark._earmark,
    GenerationMismatchError,
    EarmarkError,
    "The index is not at the generation a run screens against."
);
create_exception!(
    earmark._earmark,
    DecodeError,
    EarmarkError,
    "Audio could not be decoded."
);

fn open_error(err: OpenError) -> PyErr {
    match &err {
        OpenError::Engine(earmark::error::EngineError::Index(
            IndexError::ConfigMismatch { .. } | IndexError::FormatVersion { .. },
        )) => ConfigMismatchError::new_err(err.to_string()),
        _ => DataDirError::new_err(err.to_string()),
    }
}

fn value_error(err: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(err.to_string())
}

/// Threads of a gate's pool when none are asked for: the CPUs this process may use.
fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// A data directory opened for screening, with its own thread pool.
#[pyclass(module = "earmark._earmark", frozen)]
struct NativeGate {
    screening: Screening,
    pool: rayon::ThreadPool,
    threads: usize,
}

/// Copies one classified Python source into Rust.
fn extract_item(tuple: &Bound<'_, PyTuple>) -> PyResult<Item> {
    let (kind, payload, name, submission_id, sample_rate_hz, channels): (
        String,
        Bound<'_, PyAny>,
        String,
        Option<String>,
        u32,
        usize,
    ) = tuple.extract()?;
    let source = match kind.as_str() {
        "path" => Source::Path(PathBuf::from(payload.extract::<String>()?)),
        "bytes" => Source::Bytes(payload.cast::<PyBytes>()?.as_bytes().to_vec()),
        "pcm" => Source::Pcm {
            samples: payload
                .cast::<PyBytes>()?
                .as_bytes()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            sample_rate_hz,
            channels,
        },
        "invalid" => Source::Invalid(payload.extract::<String>()?),
        other => return Err(value_error(format!("unknown source kind '{other}'"))),
    };
    Ok(Item {
        source,
        label: Label {
            name,
            submission_id,
        },
    })
}

fn parse_instant(at: Option<&str>) -> PyResult<OffsetDateTime> {
    match at {
        None => Ok(OffsetDateTime::now_utc()),
        Some(text) => OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .map_err(|e| {
                value_error(format!(
                    "consent_at '{text}' is not an RFC 3339 instant: {e}"
                ))
            }),
    }
}

impl NativeGate {
    /// Screens one item; a panic in the core becomes an `error` result.
    fn screen_caught(&self, item: Item, at: OffsetDateTime) -> String {
        let label = Label {
            name: item.label.name.clone(),
            submission_id: item.label.submission_id.clone(),
        };
        std::panic::catch_unwind(AssertUnwindSafe(|| self.screening.screen(item, at)))
            .unwrap_or_else(|_| {
                self.screening.screen(
                    Item {
                        source: Source::Invalid(format!(
                            "{}: internal error while screening (please report it)",
                            label.name
                        )),
                        label,
                    },
                    at,
                )
            })
    }
}

#[pymethods]
impl NativeGate {
    #[new]
    #[pyo3(signature = (data_dir, purpose, threads, unknown_consent, territory, record_attributions))]
    fn new(
        py: Python<'_>,
        data_dir: PathBuf,
        purpose: &str,
        threads: Option<usize>,
        unknown_consent: &str,
        territory: Option<&str>,
        record_attributions: bool,
    ) -> PyResult<Self> {
        let purpose = Scope::from_str(purpose).map_err(value_error)?;
        let unknown_consent = match unknown_consent.trim().to_ascii_lowercase().as_str() {
            "flag" => UnknownConsent::Flag,
            "allow" => UnknownConsent::Allow,
            other => {
                return Err(value_error(format!(
                    "unknown_consent must be 'flag' or 'allow', not '{other}'"
                )));
            }
        };
        let territory = territory
            .map(Territory::parse)
            .transpose()
            .map_err(value_error)?;
        let policy = PolicyConfig {
            unknown_consent,
            territory,
        };
        let threads = match threads {
            Some(0) => return Err(value_error("threads must be at least 1")),
            Some(n) => n,
            None => default_threads(),
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("earmark-{i}"))
            .build()
            .map_err(|e| EarmarkError::new_err(format!("cannot start {threads} threads: {e}")))?;
        let screening = py
            .detach(|| Screening::open(&data_dir, purpose, policy, record_attributions))
            .map_err(open_error)?;
        Ok(Self {
            screening,
            pool,
            threads,
        })
    }

    #[getter]
    fn purpose(&self) -> &'static str {
        self.screening.purpose.as_str()
    }

    #[getter]
    fn records_attributions(&self) -> bool {
        self.screening.ledger.is_some()
    }

    #[getter]
    fn threads(&self) -> usize {
        self.threads
    }

    #[getter]
    fn index_generation(&self) -> u64 {
        self.screening.index.generation()
    }

    #[getter]
    fn registered_works(&self) -> usize {
        self.screening.index.live_work_count()
    }

    #[getter]
    fn policy_version(&self) -> &'static str {
        POLICY_VERSION
    }

    #[getter]
    fn engine_version(&self) -> &'static str {
        earmark::ENGINE_VERSION
    }

    #[getter]
    fn policy_json(&self) -> PyResult<String> {
        serde_json::to_string(&self.screening.policy).map_err(value_error)
    }

    /// One JSON result per item, in order; the GIL is released meanwhile.
    #[pyo3(signature = (items, consent_at))]
    fn screen_many(
        &self,
        py: Python<'_>,
        items: Vec<Bound<'_, PyTuple>>,
        consent_at: Option<&str>,
    ) -> PyResult<Vec<String>> {
        let at = parse_instant(consent_at)?;
        let items = items
            .iter()
            .map(extract_item)
            .collect::<PyResult<Vec<Item>>>()?;
        Ok(py.detach(|| {
            self.pool.install(|| {
                items
                    .into_par_iter()
                    .map(|item| self.screen_caught(item, at))
                    .collect()
            })
        }))
    }
}

#[pymodule]
fn _earmark(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("ENGINE_VERSION", earmark::ENGINE_VERSION)?;
    m.add("POLICY_VERSION", POLICY_VERSION)?;
    m.add(
        "FINGERPRINT_CONFIG_ID",
        format!("{:#010x}", earmark::fingerprint::CONFIG_ID),
    )?;
    m.add("EarmarkError", py.get_type::<EarmarkError>())?;
    m.add("DataDirError", py.get_type::<DataDirError>())?;
    m.add("ConfigMismatchError", py.get_type::<ConfigMismatchError>())?;
    m.add(
        "GenerationMismatchError",
        py.get_type::<GenerationMismatchError>(),
    )?;
    m.add("DecodeError", py.get_type::<DecodeError>())?;
    m.add_class::<NativeGate>()?;
    m.add_function(wrap_pyfunction!(fingerprint::fingerprint_path, m)?)?;
    m.add_function(wrap_pyfunction!(fingerprint::fingerprint_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(fingerprint::fingerprint_pcm, m)?)?;
    Ok(())
}

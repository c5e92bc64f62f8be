//! `earmark.fingerprint`: the bytes of an earmark fingerprint file, as
//! `earmark fingerprint FILE --out F` writes them and `ScreenFingerprints` /
//! `earmark identify --remote` accept them.

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use earmark::decode::DecodeLimits;
use earmark::fingerprint::audio;
use earmark::fingerprint::file::FingerprintFile;
use earmark::fingerprint::{Fingerprint, Side};

use crate::DecodeError;
use crate::screen::fingerprint_pcm as pcm_prints;

fn file_bytes(
    fingerprint: Fingerprint,
    duration_s: f64,
    name: &str,
    sha256: Option<String>,
) -> Vec<u8> {
    FingerprintFile::new(fingerprint, duration_s, name, sha256.as_deref()).to_bytes()
}

/// Fingerprint file of an audio file.
#[pyfunction]
pub fn fingerprint_path<'py>(py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyBytes>> {
    let bytes = py
        .detach(|| {
            FingerprintFile::from_audio(&path, &DecodeLimits::default()).map(|f| f.to_bytes())
        })
        .map_err(|e| DecodeError::new_err(e.to_string()))?;
    Ok(PyBytes::new(py, &bytes))
}

/// Fingerprint file of encoded audio held in memory.
#[pyfunction]
pub fn fingerprint_bytes<'py>(
    py: Python<'py>,
    data: &[u8],
    name: &str,
) -> PyResult<Bound<'py, PyBytes>> {
    let data = data.to_vec();
    let bytes = py
        .detach(|| {
            let sha = earmark::content::sha256_hex(&data);
            let ext = std::path::Path::new(name)
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_owned);
            audio::fingerprint_bytes(
                data,
                name,
                ext.as_deref(),
                &DecodeLimits::default(),
                Side::Query,
            )
            .map(|(fingerprint, info)| file_bytes(fingerprint, info.duration_s, name, Some(sha)))
            .map_err(|e| e.to_string())
        })
        .map_err(DecodeError::new_err)?;
    Ok(PyBytes::new(py, &bytes))
}

/// Fingerprint file of PCM samples (little-endian float32, interleaved).
#[pyfunction]
pub fn fingerprint_pcm<'py>(
    py: Python<'py>,
    samples: &[u8],
    sample_rate_hz: u32,
    channels: usize,
    name: &str,
) -> PyResult<Bound<'py, PyBytes>> {
    let samples: Vec<f32> = samples
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let bytes = py
        .detach(|| {
            pcm_prints(
                &samples,
                sample_rate_hz,
                channels,
                name,
                &DecodeLimits::default(),
            )
            .map(|(fingerprint, duration_s)| file_bytes(fingerprint, duration_s, name, None))
        })
        .map_err(DecodeError::new_err)?;
    Ok(PyBytes::new(py, &bytes))
}

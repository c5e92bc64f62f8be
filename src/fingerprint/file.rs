//! The fingerprint file written by `earmark fingerprint FILE --out F` and sent
//! by `ScreenFingerprints`, so audio never has to leave the client.
//!
//! Layout: the magic line [`MAGIC`], then a length-delimited protobuf
//! `earmark.v1.FingerprintHeader`, then one length-delimited
//! `earmark.v1.PrintBatch` holding every print, then one length-delimited
//! `earmark.v1.PeakBatch` holding every peak, then (format version 3) one
//! holding every brief peak (`brief` set). Version 2 files, without brief
//! peaks, are still read. The header's submission id is
//! `sha256:<hex>` of the audio file (the one rule of
//! [`SubmissionId`](crate::screening::SubmissionId)); the purpose is chosen when
//! screening.

use std::path::{Path, PathBuf};

use prost::Message;

use super::{CONFIG_ID, Fingerprint, PeakPoint, Print, QUERY_WARPS, Side};
use crate::decode::DecodeLimits;
use crate::error::EngineError;
use crate::proto as pb;

/// First bytes of every fingerprint file (format version 3).
pub const MAGIC: &[u8] = b"EARMARK-FINGERPRINT 3\n";
/// First bytes of a version 2 file (no brief peaks).
const MAGIC_V2: &[u8] = b"EARMARK-FINGERPRINT 2\n";
/// Prints per `PrintBatch` message when streaming to the server.
pub const PRINTS_PER_MESSAGE: usize = 65_536;

#[derive(Debug, thiserror::Error)]
pub enum FpFileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not an earmark fingerprint file (bad magic)")]
    BadMagic { path: PathBuf },
    #[error("{path}: corrupt fingerprint file: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error(transparent)]
    Engine(Box<EngineError>),
}

impl From<EngineError> for FpFileError {
    fn from(err: EngineError) -> Self {
        FpFileError::Engine(Box::new(err))
    }
}

/// A fingerprint with what the server needs to know about it.
#[derive(Debug, Clone)]
pub struct FingerprintFile {
    pub header: pb::FingerprintHeader,
    pub fingerprint: Fingerprint,
}

impl FingerprintFile {
    /// Decodes and fingerprints an audio file (query side), as the server would.
    pub fn from_audio(path: &Path, limits: &DecodeLimits) -> Result<Self, FpFileError> {
        let (fingerprint, info) =
            crate::fingerprint::audio::fingerprint_file(path, limits, Side::Query)?;
        let sha256 = crate::content::sha256_file(path)?;
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        Ok(Self::new(
            fingerprint,
            info.duration_s,
            &name,
            Some(&sha256),
        ))
    }

    /// A fingerprint file of prints made elsewhere: the submission id is
    /// `sha256:<hex>` of the audio when its SHA-256 is known (the one rule of
    /// [`SubmissionId`](crate::screening::SubmissionId)), else empty (the
    /// server then names it by its prints).
    pub fn new(
        fingerprint: Fingerprint,
        duration_s: f64,
        name: &str,
        content_sha256: Option<&str>,
    ) -> Self {
        let submission_id = content_sha256
            .and_then(|sha| crate::screening::SubmissionId::from_sha256(sha).ok())
            .map(String::from)
            .unwrap_or_default();
        Self {
            header: pb::FingerprintHeader {
                submission: Some(pb::SubmissionMetadata {
                    submission_id,
                    file_name: name.to_owned(),
                    ..pb::SubmissionMetadata::default()
                }),
                config_id: CONFIG_ID,
                frames: fingerprint.frames as u64,
                duration_s,
            },
            fingerprint,
        }
    }

    /// Serialises to the file format.
    pub fn to_bytes(&self) -> Vec<u8> {
        let batch = batch(&self.fingerprint.prints);
        let peaks = peak_batch(&self.fingerprint.peaks, false);
        let brief_peaks = peak_batch(&self.fingerprint.brief_peaks, true);
        let mut out = Vec::with_capacity(
            MAGIC.len()
                + self.header.encoded_len()
                + batch.encoded_len()
                + peaks.encoded_len()
                + brief_peaks.encoded_len()
                + 40,
        );
        out.extend_from_slice(MAGIC);
        // Writing to a Vec cannot fail for lack of space.
        let _ = self.header.encode_length_delimited(&mut out);
        let _ = batch.encode_length_delimited(&mut out);
        let _ = peaks.encode_length_delimited(&mut out);
        let _ = brief_peaks.encode_length_delimited(&mut out);
        out
    }

    /// Parses the file format.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self, FpFileError> {
        let corrupt = |reason: String| FpFileError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let (mut rest, has_brief) = match (bytes.strip_prefix(MAGIC), bytes.strip_prefix(MAGIC_V2))
        {
            (Some(rest), _) => (rest, true),
            (None, Some(rest)) => (rest, false),
            (None, None) => {
                return Err(FpFileError::BadMagic {
                    path: path.to_path_buf(),
                });
            }
        };
        let header = pb::FingerprintHeader::decode_length_delimited(&mut rest)
            .map_err(|e| corrupt(format!("header: {e}")))?;
        let batch = pb::PrintBatch::decode_length_delimited(&mut rest)
            .map_err(|e| corrupt(format!("prints: {e}")))?;
        let peak_batch = pb::PeakBatch::decode_length_delimited(&mut rest)
            .map_err(|e| corrupt(format!("peaks: {e}")))?;
        let brief_batch = if has_brief {
            pb::PeakBatch::decode_length_delimited(&mut rest)
                .map_err(|e| corrupt(format!("brief peaks: {e}")))?
        } else {
            pb::PeakBatch {
                brief: true,
                ..Default::default()
            }
        };
        if peak_batch.brief || !brief_batch.brief {
            return Err(corrupt("peak batches out of order".into()));
        }
        if !rest.is_empty() {
            return Err(corrupt(format!("{} trailing bytes", rest.len())));
        }
        let n = batch.hashes.len();
        if batch.t_frames.len() != n || batch.f_half_bins.len() != n {
            return Err(corrupt("print arrays differ in length".into()));
        }
        let warps = print_warps(&batch).map_err(corrupt)?;
        let prints = (0..n)
            .map(|i| {
                let f = u8::try_from(batch.f_half_bins[i])
                    .map_err(|_| corrupt("frequency out of range".into()))?;
                Ok(Print {
                    hash: batch.hashes[i],
                    t_frame: batch.t_frames[i],
                    f_half_bins: f,
                    warp: warps[i],
                })
            })
            .collect::<Result<Vec<_>, FpFileError>>()?;
        let mut peaks = Vec::new();
        append_peaks(&mut peaks, &peak_batch).map_err(corrupt)?;
        let mut brief_peaks = Vec::new();
        append_peaks(&mut brief_peaks, &brief_batch).map_err(corrupt)?;
        let frames =
            usize::try_from(header.frames).map_err(|_| corrupt("frame count too large".into()))?;
        Ok(Self {
            header,
            fingerprint: Fingerprint {
                prints,
                frames,
                peaks,
                brief_peaks,
            },
        })
    }

    pub fn write(&self, path: &Path) -> Result<(), FpFileError> {
        std::fs::write(path, self.to_bytes()).map_err(|source| FpFileError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    pub fn read(path: &Path) -> Result<Self, FpFileError> {
        let bytes = std::fs::read(path).map_err(|source| FpFileError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(path, &bytes)
    }

    /// The `ScreenFingerprints` messages: the header (with `purpose` and
    /// `territory` set), then the prints in batches.
    pub fn requests(
        &self,
        purpose: pb::Scope,
        territory: &str,
    ) -> Vec<pb::ScreenFingerprintsRequest> {
        use pb::screen_fingerprints_request::Part;
        let mut header = self.header.clone();
        let submission = header.submission.get_or_insert_with(Default::default);
        submission.purpose = purpose.into();
        submission.territory = territory.to_owned();
        let mut out = vec![pb::ScreenFingerprintsRequest {
            part: Some(Part::Header(header)),
        }];
        out.extend(self.fingerprint.prints.chunks(PRINTS_PER_MESSAGE).map(|c| {
            pb::ScreenFingerprintsRequest {
                part: Some(Part::Prints(batch(c))),
            }
        }));
        for (peaks, brief) in [
            (&self.fingerprint.peaks, false),
            (&self.fingerprint.brief_peaks, true),
        ] {
            out.extend(
                peaks
                    .chunks(PRINTS_PER_MESSAGE)
                    .map(|c| pb::ScreenFingerprintsRequest {
                        part: Some(Part::Peaks(peak_batch(c, brief))),
                    }),
            );
        }
        out
    }
}

fn peak_batch(peaks: &[PeakPoint], brief: bool) -> pb::PeakBatch {
    pb::PeakBatch {
        t_frames: peaks.iter().map(|p| p.t_frame).collect(),
        f_half_bins: peaks.iter().map(|p| u32::from(p.f_half_bins)).collect(),
        brief,
    }
}

/// Appends a batch of peaks received from a client, checking each field; keeps
/// `peaks` sorted (the matcher relies on it).
pub fn append_peaks(peaks: &mut Vec<PeakPoint>, batch: &pb::PeakBatch) -> Result<(), String> {
    if batch.t_frames.len() != batch.f_half_bins.len() {
        return Err("peaks: t_frames and f_half_bins differ in length".into());
    }
    let was_sorted_up_to = peaks.len();
    peaks.reserve(batch.t_frames.len());
    for (&t_frame, &f) in batch.t_frames.iter().zip(&batch.f_half_bins) {
        let f_half_bins =
            u8::try_from(f).map_err(|_| format!("peaks: frequency {f} is out of range 0..=255"))?;
        peaks.push(PeakPoint {
            t_frame,
            f_half_bins,
        });
    }
    if !peaks[was_sorted_up_to.saturating_sub(1)..].is_sorted() {
        peaks.sort_unstable();
    }
    Ok(())
}

/// The warp tag of each print of `batch` (all 0 when the batch sends none).
pub fn print_warps(batch: &pb::PrintBatch) -> Result<Vec<u8>, String> {
    let n = batch.hashes.len();
    if batch.warps.is_empty() {
        return Ok(vec![0; n]);
    }
    if batch.warps.len() != n {
        return Err("prints: warps and hashes differ in length".into());
    }
    let max = QUERY_WARPS.len();
    batch
        .warps
        .iter()
        .map(|&w| {
            u8::try_from(w)
                .ok()
                .filter(|&tag| usize::from(tag) <= max)
                .ok_or_else(|| format!("prints: warp {w} is out of range 0..={max}"))
        })
        .collect()
}

fn batch(prints: &[Print]) -> pb::PrintBatch {
    pb::PrintBatch {
        hashes: prints.iter().map(|p| p.hash).collect(),
        t_frames: prints.iter().map(|p| p.t_frame).collect(),
        f_half_bins: prints.iter().map(|p| u32::from(p.f_half_bins)).collect(),
        warps: if prints.iter().all(|p| p.warp == 0) {
            Vec::new()
        } else {
            prints.iter().map(|p| u32::from(p.warp)).collect()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects() {
        let file = FingerprintFile {
            header: pb::FingerprintHeader {
                config_id: CONFIG_ID,
                frames: 100,
                duration_s: 1.0,
                ..Default::default()
            },
            fingerprint: Fingerprint {
                prints: vec![
                    Print {
                        hash: 7,
                        t_frame: 1,
                        f_half_bins: 200,
                        warp: 0,
                    },
                    Print {
                        hash: 9,
                        t_frame: 5,
                        f_half_bins: 3,
                        warp: 0,
                    },
                ],
                frames: 100,
                peaks: vec![
                    PeakPoint {
                        t_frame: 1,
                        f_half_bins: 200,
                    },
                    PeakPoint {
                        t_frame: 9,
                        f_half_bins: 4,
                    },
                ],
                brief_peaks: vec![PeakPoint {
                    t_frame: 3,
                    f_half_bins: 90,
                }],
            },
        };
        let bytes = file.to_bytes();
        let back = FingerprintFile::from_bytes(Path::new("x"), &bytes).unwrap();
        assert_eq!(back.fingerprint.prints, file.fingerprint.prints);
        assert_eq!(back.fingerprint.peaks, file.fingerprint.peaks);
        assert_eq!(back.fingerprint.brief_peaks, file.fingerprint.brief_peaks);
        assert_eq!(back.header, file.header);
        // A version 2 file: the same without the brief peaks.
        let mut v2 = MAGIC_V2.to_vec();
        file.header.encode_length_delimited(&mut v2).unwrap();
        batch(&file.fingerprint.prints)
            .encode_length_delimited(&mut v2)
            .unwrap();
        peak_batch(&file.fingerprint.peaks, false)
            .encode_length_delimited(&mut v2)
            .unwrap();
        let old = FingerprintFile::from_bytes(Path::new("x"), &v2).unwrap();
        assert_eq!(old.fingerprint.peaks, file.fingerprint.peaks);
        assert!(old.fingerprint.brief_peaks.is_empty());
        // Brief peaks where the others belong: refused.
        let mut swapped = MAGIC.to_vec();
        file.header.encode_length_delimited(&mut swapped).unwrap();
        batch(&file.fingerprint.prints)
            .encode_length_delimited(&mut swapped)
            .unwrap();
        for brief in [true, false] {
            peak_batch(&file.fingerprint.peaks, brief)
                .encode_length_delimited(&mut swapped)
                .unwrap();
        }
        assert!(FingerprintFile::from_bytes(Path::new("x"), &swapped).is_err());
        assert!(matches!(
            FingerprintFile::from_bytes(Path::new("x"), b"nope"),
            Err(FpFileError::BadMagic { .. })
        ));
        assert!(FingerprintFile::from_bytes(Path::new("x"), &bytes[..bytes.len() - 3]).is_err());
        let requests = file.requests(pb::Scope::AiTraining, "");
        assert_eq!(requests.len(), 4, "header, prints, peaks, brief peaks");
    }

    #[test]
    fn print_warps_default_to_unwarped_and_reject_unknown_tags() {
        let batch = |warps: Vec<u32>| pb::PrintBatch {
            hashes: vec![1, 2],
            t_frames: vec![0, 5],
            f_half_bins: vec![7, 9],
            warps,
        };
        assert_eq!(print_warps(&batch(Vec::new())), Ok(vec![0, 0]));
        let last = QUERY_WARPS.len() as u32;
        assert_eq!(print_warps(&batch(vec![0, last])), Ok(vec![0, last as u8]));
        let unknown = print_warps(&batch(vec![0, last + 1])).unwrap_err();
        assert!(unknown.contains("warp"), "{unknown}");
        assert!(print_warps(&batch(vec![0])).is_err(), "length mismatch");
    }
}

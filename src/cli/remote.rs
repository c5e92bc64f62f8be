//! `identify --remote URL`: screening on a running `earmark serve` with local
//! fingerprints.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use super::{EXIT_CLEAN, EXIT_ERROR, EXIT_FOUND};
use crate::decode::DecodeLimits;
use crate::fingerprint::file::{FingerprintFile, MAGIC};
use crate::proto as pb;
use crate::registry::Scope;

use super::conn::{RemoteArgs, normalise_url, runtime};

/// The fingerprint of `path`: read if it is a fingerprint file, else computed.
pub(crate) fn load_fingerprint(path: &Path) -> Result<FingerprintFile> {
    let mut head = vec![0u8; MAGIC.len()];
    let is_fp = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
        .is_ok()
        && head == MAGIC;
    Ok(if is_fp {
        FingerprintFile::read(path)?
    } else {
        FingerprintFile::from_audio(path, &DecodeLimits::default())?
    })
}

/// `identify --remote URL`: one verdict per file from the server. Exit 0 when
/// every file is allowed, 1 when something is blocked or flagged, 2 on errors.
pub fn run_identify_remote(
    remote: &RemoteArgs,
    files: &[PathBuf],
    purpose: Scope,
    no_ledger: bool,
    json: bool,
) -> Result<u8> {
    let Some(url) = remote.remote.as_deref() else {
        bail!("--remote URL is required");
    };
    let url = normalise_url(url);
    let purpose = crate::proto::scope_to_pb(purpose);
    runtime()?.block_on(async {
        let mut client = remote.conn.screening(&url).await?;
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        let (mut errors, mut found) = (0usize, false);
        for path in files {
            let result = match load_fingerprint(path) {
                Ok(mut fp) => {
                    fp.header
                        .submission
                        .get_or_insert_with(Default::default)
                        .no_ledger = no_ledger;
                    client
                        .screen_fingerprints(tokio_stream::iter(fp.requests(purpose, "")))
                        .await
                        .map(tonic::Response::into_inner)
                        .map_err(|s| anyhow::anyhow!("{}: {}", s.code(), s.message()))
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(r) => {
                    let verdict = r.verdict.unwrap_or_default();
                    found |= verdict.decision() != pb::Decision::Allow;
                    if json {
                        writeln!(out, "{}", r.verdict_json)?;
                    } else {
                        writeln!(
                            out,
                            "{}: {}",
                            path.display(),
                            verdict.reasons.first().map_or("", String::as_str)
                        )?;
                        for e in verdict.evidence.iter().filter(|e| e.confident) {
                            writeln!(
                                out,
                                "  {} {:?} (score {:.0})",
                                e.work_id,
                                e.outcome(),
                                e.score
                            )?;
                        }
                    }
                }
                Err(e) => {
                    errors += 1;
                    eprintln!("earmark: {}: {e:#}", path.display());
                }
            }
        }
        Ok(if errors > 0 {
            EXIT_ERROR
        } else if found {
            EXIT_FOUND
        } else {
            EXIT_CLEAN
        })
    })
}

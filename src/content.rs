//! Content identity: the SHA-256 of submitted or registered audio bytes.

use std::path::Path;

use sha2::Digest;

use crate::error::EngineError;

/// Lower-case hex SHA-256 of bytes in memory.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Lower-case hex SHA-256 of a file's bytes (streamed).
pub fn sha256_file(path: &Path) -> Result<String, EngineError> {
    use std::io::Read;
    let read_err = |source| EngineError::ReadFile {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(read_err)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(read_err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

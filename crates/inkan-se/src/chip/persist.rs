//! The chip's NVM file. Every write goes to a temporary file in the same
//! directory, is fsynced, renamed over the old file, and the directory is
//! fsynced: a kill at any moment leaves either the old or the new image.

use super::state::{Nvm, FORMAT_VERSION};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A problem with the state file.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// Reading or writing failed.
    #[error("state file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a valid NVM image (not written by this emulator, or
    /// damaged by something other than a crash).
    #[error("state file {path} is not a valid chip image: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `create` found a file already there.
    #[error("state file {0} already exists")]
    AlreadyExists(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PersistError + '_ {
    move |source| PersistError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Loads and checks an image.
pub fn load(path: &Path) -> Result<Nvm, PersistError> {
    let bytes = zeroize::Zeroizing::new(std::fs::read(path).map_err(io(path))?);
    let nvm: Nvm = serde_json::from_slice(&bytes).map_err(|e| PersistError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if nvm.format != FORMAT_VERSION {
        return Err(PersistError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("format version {} (expected {FORMAT_VERSION})", nvm.format),
        });
    }
    if nvm.serial.len() != 9 || nvm.envelope_keys.len() != 2 {
        return Err(PersistError::Corrupt {
            path: path.to_path_buf(),
            reason: "bad serial or key table".into(),
        });
    }
    Ok(nvm)
}

/// Writes an image atomically.
pub fn save(path: &Path, nvm: &Nvm) -> Result<(), PersistError> {
    let bytes =
        zeroize::Zeroizing::new(serde_json::to_vec(nvm).map_err(|e| PersistError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp_name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    {
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io(path))?;
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io(&dir))?;
    Ok(())
}

//! The chip's NVM file. Every write goes to a temporary file in the same
//! directory, is fsynced, renamed over the old file, and the directory is
//! fsynced: a kill at any moment leaves either the old or the new image.
//!
//! The image is sealed, as a real chip's NVM cannot be edited from
//! outside: the file is a header line `{"generation": n, "mac": …}` then
//! the NVM as JSON, and the MAC is HMAC-SHA256 over the generation and the
//! NVM bytes under a key the emulator keeps apart, in `<state>.seal` with
//! the last generation written. A changed byte (a key digit, a counter) is
//! refused; so is an image older than the seal's generation (a rolled-back
//! anti-rollback counter). The state is written before the seal, so a
//! crash between the two leaves a newer image, which is accepted. Rolling
//! back both files together is outside what an emulator can detect; a real
//! chip keeps both inside.

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
    /// The image does not verify against its seal, or is older than it.
    #[error("state file {path} was altered or rolled back: {reason}")]
    Tampered {
        /// The file.
        path: PathBuf,
        /// What was found.
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

/// The seal kept beside a state file: the MAC key and the last generation
/// written.
#[derive(serde::Serialize, serde::Deserialize)]
struct Seal {
    key: String,
    generation: u64,
}

/// The header line of a sealed image.
#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    generation: u64,
    mac: String,
}

fn seal_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".seal");
    path.with_file_name(name)
}

/// A seal's MAC key and generation.
type SealKey = (zeroize::Zeroizing<Vec<u8>>, u64);

fn read_seal(path: &Path) -> Result<Option<SealKey>, PersistError> {
    let sp = seal_path(path);
    let bytes = match std::fs::read(&sp) {
        Ok(b) => zeroize::Zeroizing::new(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&sp)(e)),
    };
    let seal: Seal = serde_json::from_slice(&bytes).map_err(|e| PersistError::Corrupt {
        path: sp.clone(),
        reason: e.to_string(),
    })?;
    let key =
        zeroize::Zeroizing::new(hex::decode(&seal.key).map_err(|_| PersistError::Corrupt {
            path: sp.clone(),
            reason: "seal key is not hex".into(),
        })?);
    if key.len() != 32 {
        return Err(PersistError::Corrupt {
            path: sp,
            reason: "seal key is not 32 bytes".into(),
        });
    }
    Ok(Some((key, seal.generation)))
}

fn mac(key: &[u8], generation: u64, nvm: &[u8]) -> hmac::Hmac<sha2::Sha256> {
    use hmac::Mac;
    let mut m = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    m.update(b"inkan emulated NVM v1\0");
    m.update(&generation.to_be_bytes());
    m.update(nvm);
    m
}

/// Loads and checks an image: its seal, its MAC, its generation, its
/// contents.
pub fn load(path: &Path) -> Result<Nvm, PersistError> {
    let bytes = zeroize::Zeroizing::new(std::fs::read(path).map_err(io(path))?);
    let tampered = |reason: &str| PersistError::Tampered {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let (key, recorded) = read_seal(path)?.ok_or_else(|| tampered("its seal file is missing"))?;
    let split = bytes
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| tampered("no sealed header"))?;
    let header: Header =
        serde_json::from_slice(&bytes[..split]).map_err(|_| tampered("no sealed header"))?;
    let body = &bytes[split + 1..];
    let want = hex::decode(&header.mac).map_err(|_| tampered("a MAC that is not hex"))?;
    hmac::Mac::verify_slice(mac(&key, header.generation, body), &want)
        .map_err(|_| tampered("the MAC does not verify"))?;
    if header.generation < recorded {
        return Err(tampered(&format!(
            "generation {} is older than the {recorded} last written",
            header.generation
        )));
    }
    let nvm: Nvm = serde_json::from_slice(body).map_err(|e| PersistError::Corrupt {
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

/// Writes an image atomically, sealed with the next generation, then the
/// seal. The first write of a new chip makes its seal key.
pub fn save(path: &Path, nvm: &Nvm) -> Result<(), PersistError> {
    let body =
        zeroize::Zeroizing::new(serde_json::to_vec(nvm).map_err(|e| PersistError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?);
    let (key, generation) = match read_seal(path)? {
        Some((k, g)) => (k, g.saturating_add(1)),
        None if !path.exists() => {
            let mut k = zeroize::Zeroizing::new(vec![0u8; 32]);
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut k);
            (k, 1)
        }
        None => {
            return Err(PersistError::Tampered {
                path: path.to_path_buf(),
                reason: "its seal file is missing".into(),
            })
        }
    };
    let tag = hmac::Mac::finalize(mac(&key, generation, &body)).into_bytes();
    let header = serde_json::to_vec(&Header {
        generation,
        mac: hex::encode(tag),
    })
    .map_err(|e| PersistError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut image = zeroize::Zeroizing::new(header);
    image.push(b'\n');
    image.extend_from_slice(&body);
    write_atomic(path, &image)?;
    let seal = zeroize::Zeroizing::new(
        serde_json::to_vec(&Seal {
            key: hex::encode(&*key),
            generation,
        })
        .map_err(|e| PersistError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?,
    );
    write_atomic(&seal_path(path), &seal)
}

/// Writes a file atomically: temporary file, fsync, rename, directory
/// fsync.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), PersistError> {
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
        f.write_all(bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io(path))?;
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io(&dir))?;
    Ok(())
}

//! The batch journal: one JSON line per durable event, fsynced before the
//! factory acts on it. A line cut short by a crash (no newline) is ignored:
//! nothing that followed it was done, because the factory waits for the
//! fsync. This is what makes a batch resumable without ever issuing two
//! certificates for one chip or skipping one.

use crate::FactoryError;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// One journal event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A certificate was issued for a chip (before it is written to it).
    Issued {
        /// Chip serial (hex, upper case).
        serial: String,
        /// The certificate, DER in hex.
        certificate: String,
        /// The device public key, SEC1 in hex.
        public_key: String,
    },
    /// The chip is fully personalized and locked.
    Done {
        /// Chip serial.
        serial: String,
        /// Unix time.
        time: u64,
    },
}

/// An append-only, fsynced JSON-lines file.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: std::fs::File,
    /// Chip serial → Issued event.
    pub issued: HashMap<String, Event>,
    /// Chip serial → Done time.
    pub done: HashMap<String, u64>,
    /// Serials in the order they were issued.
    pub order: Vec<String>,
}

/// What a journal says, read without opening it for writing.
pub fn replay(path: &Path) -> Result<(HashMap<String, Event>, HashMap<String, u64>), FactoryError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(FactoryError::io(path, e)),
    };
    let complete = text.rfind('\n').map_or("", |i| &text[..=i]);
    let (mut issued, mut done) = (HashMap::new(), HashMap::new());
    for (n, line) in complete.lines().enumerate() {
        let ev: Event = serde_json::from_str(line).map_err(|e| FactoryError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("line {}: {e}", n + 1),
        })?;
        match &ev {
            Event::Issued { serial, .. } => {
                issued.insert(serial.clone(), ev.clone());
            }
            Event::Done { serial, time } => {
                done.insert(serial.clone(), *time);
            }
        }
    }
    Ok((issued, done))
}

impl Journal {
    /// Opens (creating) a journal and replays it.
    pub fn open(path: &Path) -> Result<Journal, FactoryError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(FactoryError::io(path, e)),
        };
        let mut j = Journal {
            path: path.to_path_buf(),
            file: std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| FactoryError::io(path, e))?,
            issued: HashMap::new(),
            done: HashMap::new(),
            order: Vec::new(),
        };
        let complete = match text.rfind('\n') {
            Some(i) => &text[..=i],
            None => "",
        };
        for (n, line) in complete.lines().enumerate() {
            let ev: Event = serde_json::from_str(line).map_err(|e| FactoryError::Corrupt {
                path: path.to_path_buf(),
                reason: format!("line {}: {e}", n + 1),
            })?;
            j.apply(ev);
        }
        if complete.len() != text.len() {
            // A torn final line from a crash: cut it so the next append
            // starts on a fresh line.
            j.file
                .set_len(complete.len() as u64)
                .map_err(|e| FactoryError::io(path, e))?;
        }
        Ok(j)
    }

    fn apply(&mut self, ev: Event) {
        match &ev {
            Event::Issued { serial, .. } => {
                if !self.issued.contains_key(serial) {
                    self.order.push(serial.clone());
                }
                self.issued.insert(serial.clone(), ev.clone());
            }
            Event::Done { serial, time } => {
                self.done.insert(serial.clone(), *time);
            }
        }
    }

    /// Appends an event and waits until it is on disk.
    pub fn record(&mut self, ev: Event) -> Result<(), FactoryError> {
        let mut line = serde_json::to_vec(&ev).map_err(|e| FactoryError::Corrupt {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .map_err(|e| FactoryError::io(&self.path, e))?;
        self.file
            .sync_data()
            .map_err(|e| FactoryError::io(&self.path, e))?;
        self.apply(ev);
        Ok(())
    }
}

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

/// What a journal says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// Chip serial → its Issued event.
    pub issued: HashMap<String, Event>,
    /// Chip serial → when it was finished.
    pub done: HashMap<String, u64>,
    /// Serials in the order their certificates were issued.
    pub order: Vec<String>,
}

impl State {
    fn apply(&mut self, ev: Event) {
        match &ev {
            Event::Issued { serial, .. } => {
                if !self.issued.contains_key(serial) {
                    self.order.push(serial.clone());
                }
                self.issued.insert(serial.clone(), ev);
            }
            Event::Done { serial, time } => {
                self.done.insert(serial.clone(), *time);
            }
        }
    }
}

/// Reads a journal without opening it for writing. Returns the state and
/// the length of its complete lines.
pub fn replay(path: &Path) -> Result<(State, usize), FactoryError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(FactoryError::io(path, e)),
    };
    let complete = text.rfind('\n').map_or("", |i| &text[..=i]);
    let mut state = State::default();
    for (n, line) in complete.lines().enumerate() {
        let ev: Event = serde_json::from_str(line).map_err(|e| FactoryError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("line {}: {e}", n + 1),
        })?;
        state.apply(ev);
    }
    Ok((state, complete.len()))
}

/// An append-only, fsynced JSON-lines file.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: std::fs::File,
    /// What the journal says so far.
    pub state: State,
}

impl Journal {
    /// Opens (creating) a journal and replays it. A torn final line is cut
    /// so that the next event starts on a fresh line.
    pub fn open(path: &Path) -> Result<Journal, FactoryError> {
        let (state, complete) = replay(path)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| FactoryError::io(path, e))?;
        let len = file
            .metadata()
            .map_err(|e| FactoryError::io(path, e))?
            .len();
        if len != complete as u64 {
            file.set_len(complete as u64)
                .map_err(|e| FactoryError::io(path, e))?;
        }
        Ok(Journal {
            path: path.to_path_buf(),
            file,
            state,
        })
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
        self.state.apply(ev);
        Ok(())
    }
}

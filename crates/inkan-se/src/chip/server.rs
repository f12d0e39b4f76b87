//! Serves an emulated chip over a Unix socket or a loopback TCP port using
//! the framing of [`crate::transport::socket`]. Connections share the one
//! chip, one transaction at a time, like hosts on one bus.

use super::ChipBus;
use crate::transport::socket::{read_request, Request, ACK, FRAMING_ERROR, NACK};
use crate::transport::{Address, BusError};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::sync::{Arc, Mutex};

/// A listening socket.
pub enum Listener {
    /// Unix socket.
    Unix(UnixListener),
    /// Loopback TCP.
    Tcp(TcpListener),
}

impl Listener {
    /// Binds an address. TCP must be loopback; a stale Unix socket file
    /// (nobody answers on it) is replaced, a live one refused.
    pub fn bind(addr: &Address) -> std::io::Result<Listener> {
        match addr {
            Address::Unix(p) => {
                if p.exists() {
                    if std::os::unix::net::UnixStream::connect(p).is_ok() {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::AddrInUse,
                            format!("another server already listens on {}", p.display()),
                        ));
                    }
                    std::fs::remove_file(p)?;
                }
                Ok(Listener::Unix(UnixListener::bind(p)?))
            }
            Address::Tcp(a) => {
                if !a.ip().is_loopback() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "only loopback addresses",
                    ));
                }
                Ok(Listener::Tcp(TcpListener::bind(a)?))
            }
            Address::I2c(..) => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the emulator cannot serve an I2C adapter",
            )),
        }
    }

    /// The bound address (with the real port for `tcp:127.0.0.1:0`).
    pub fn local_address(&self) -> std::io::Result<Address> {
        match self {
            Listener::Unix(l) => {
                let a = l.local_addr()?;
                let p = a.as_pathname().map(|p| p.to_path_buf()).unwrap_or_default();
                Ok(Address::Unix(p))
            }
            Listener::Tcp(l) => Ok(Address::Tcp(l.local_addr()?)),
        }
    }
}

fn handle<S: Read + Write>(mut s: S, bus: &Mutex<ChipBus>) {
    loop {
        let req = match read_request(&mut s) {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(BusError::Protocol(_)) => {
                let _ = s.write_all(&[FRAMING_ERROR]);
                return;
            }
            Err(_) => return,
        };
        let reply = {
            let Ok(mut bus) = bus.lock() else { return };
            match req {
                Request::Write { address, data } => match bus.write(address, &data) {
                    Ok(()) => vec![ACK],
                    Err(_) => vec![NACK],
                },
                Request::Read { address, len } => match bus.read(address, len) {
                    Ok(mut d) => {
                        d.insert(0, ACK);
                        d
                    }
                    Err(_) => vec![NACK],
                },
            }
        };
        if s.write_all(&reply).is_err() {
            return;
        }
    }
}

/// Accepts connections forever, one thread per connection.
pub fn serve(listener: Listener, bus: Arc<Mutex<ChipBus>>) -> std::io::Result<()> {
    match listener {
        Listener::Unix(l) => {
            for s in l.incoming() {
                let s = s?;
                let bus = bus.clone();
                std::thread::spawn(move || handle(s, &bus));
            }
        }
        Listener::Tcp(l) => {
            for s in l.incoming() {
                let s = s?;
                s.set_nodelay(true)?;
                let bus = bus.clone();
                std::thread::spawn(move || handle(s, &bus));
            }
        }
    }
    Ok(())
}

/// Starts a server on a background thread and returns the bound address.
pub fn spawn(addr: &Address, bus: ChipBus) -> std::io::Result<Address> {
    let l = Listener::bind(addr)?;
    let bound = l.local_address()?;
    let bus = Arc::new(Mutex::new(bus));
    std::thread::spawn(move || serve(l, bus));
    Ok(bound)
}

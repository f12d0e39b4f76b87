//! Every transport carries the same protocol: Unix socket, loopback TCP, and
//! the Linux I²C transport (driven here through a stand-in device that
//! answers like `/dev/i2c-N`, since no adapter exists on this machine).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use inkan_se::chip::server;
use inkan_se::transport::linux_i2c::{I2cDevice, LinuxI2c};
use inkan_se::transport::socket::{SocketTransport, FRAMING_ERROR};
use inkan_se::transport::{Address, AddressError, BusError};
use inkan_se::{BusyModel, Chip, ChipBus, Curve, Driver, Personality};
use std::io::{Read, Write};
use std::time::Duration;

fn exercise<T: inkan_se::transport::Transport>(d: &mut Driver<T>) {
    assert_eq!(d.echo(b"over the wire").unwrap(), b"over the wire");
    let public = d.generate_key(1, Curve::P256, 0, 0).unwrap();
    let sig = d.sign(1, &[9; 32]).unwrap();
    assert!(d.verify(Curve::P256, &public, &[9; 32], &sig).unwrap());
    let big = vec![0xA5; 700];
    d.update_zone(4, 10, &big).unwrap();
    assert_eq!(d.read_zone(4, 10, 700).unwrap(), big);
}

#[test]
fn unix_socket_carries_the_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let addr = Address::Unix(dir.path().join("se.sock"));
    let bus = ChipBus::new(Chip::new(Personality::A110, [1; 9]), BusyModel::Instant);
    let bound = server::spawn(&addr, bus).unwrap();
    let Address::Unix(p) = bound else { panic!() };
    let mut d = Driver::new(SocketTransport::unix(&p).unwrap()).unwrap();
    assert_eq!(d.personality(), Personality::A110);
    exercise(&mut d);
}

#[test]
fn loopback_tcp_with_a_busy_chip_and_two_hosts() {
    let bus = ChipBus::new(Chip::new(Personality::A120, [2; 9]), BusyModel::Nominal);
    let bound = server::spawn(&"tcp:127.0.0.1:0".parse().unwrap(), bus).unwrap();
    let Address::Tcp(a) = bound else { panic!() };
    let mut d1 = Driver::new(SocketTransport::tcp(a).unwrap()).unwrap();
    let mut d2 = Driver::new(SocketTransport::tcp(a).unwrap()).unwrap();
    exercise(&mut d1);
    // The second host sees the first host's key: one chip behind one bus.
    let (_, slots) = d2.key_table().unwrap();
    assert!(slots.iter().any(|s| s.slot == 1 && s.present));
}

#[test]
fn tcp_refuses_non_loopback() {
    assert!(matches!(
        "tcp:192.0.2.1:7000".parse::<Address>(),
        Err(AddressError::NotLoopback(_))
    ));
    assert!(matches!(
        SocketTransport::tcp("192.0.2.1:7000".parse().unwrap()),
        Err(BusError::Protocol(_))
    ));
    assert_eq!(
        "i2c:/dev/i2c-1".parse::<Address>().unwrap(),
        Address::I2c("/dev/i2c-1".into(), 0x20)
    );
    assert_eq!(
        "i2c:/dev/i2c-3@0x21".parse::<Address>().unwrap(),
        Address::I2c("/dev/i2c-3".into(), 0x21)
    );
    assert!("i2c:/dev/i2c-3@0x99".parse::<Address>().is_err());
    assert!("ftp:x".parse::<Address>().is_err());
}

#[test]
fn server_reports_framing_errors_and_closes() {
    let bus = ChipBus::new(Chip::new(Personality::A120, [2; 9]), BusyModel::Instant);
    let Address::Tcp(a) = server::spawn(&"tcp:127.0.0.1:0".parse().unwrap(), bus).unwrap() else {
        panic!()
    };
    let mut s = std::net::TcpStream::connect(a).unwrap();
    s.write_all(&[b'X', 0x20, 0, 1]).unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).unwrap();
    assert_eq!(reply, vec![FRAMING_ERROR]);
    // Oversized length.
    let mut s = std::net::TcpStream::connect(a).unwrap();
    s.write_all(&[b'W', 0x20, 0xFF, 0xFF]).unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).unwrap();
    assert_eq!(reply, vec![FRAMING_ERROR]);
    // A wrong I2C address is a NACK, not a framing error.
    let mut t = SocketTransport::tcp(a).unwrap().with_address(0x21);
    assert!(matches!(
        inkan_se::transport::Transport::read(&mut t, 5),
        Err(BusError::Nack)
    ));
}

/// Answers like the Linux i2c-dev driver: `EREMOTEIO` when the target does
/// not acknowledge, otherwise whole transactions.
struct StandInAdapter {
    bus: ChipBus,
    nacks: usize,
}

impl I2cDevice for StandInAdapter {
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.bus.write(0x20, bytes).map_err(|_| {
            self.nacks += 1;
            std::io::Error::from_raw_os_error(libc::EREMOTEIO)
        })
    }
    fn read_exact(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        let d = self.bus.read(0x20, buf.len()).map_err(|_| {
            self.nacks += 1;
            std::io::Error::from_raw_os_error(libc::ENXIO)
        })?;
        buf.copy_from_slice(&d);
        Ok(())
    }
}

#[test]
fn linux_i2c_transport_maps_nacks_and_carries_frames() {
    let bus = ChipBus::new(
        Chip::new(Personality::A110, [4; 9]),
        BusyModel::Fixed(Duration::from_millis(5)),
    );
    let t = LinuxI2c::from_device(StandInAdapter { bus, nacks: 0 });
    let mut d = Driver::new(t).unwrap();
    exercise(&mut d);
    // The busy chip NACKed and the driver polled through it.
    assert!(
        d.transport().device().nacks > 0,
        "the 5 ms busy chip should have NACKed at least once"
    );
    let other = std::io::Error::from_raw_os_error(libc::EIO);
    assert!(matches!(
        inkan_se::transport::linux_i2c::map_error(other),
        BusError::Io(_)
    ));
    assert!(matches!(
        inkan_se::transport::linux_i2c::map_error(std::io::Error::from_raw_os_error(
            libc::EREMOTEIO
        )),
        BusError::Nack
    ));
}

#[test]
fn opening_a_missing_adapter_is_a_clear_error() {
    let err = inkan_se::transport::connect(&"i2c:/dev/i2c-nonexistent".parse().unwrap())
        .err()
        .unwrap();
    assert!(
        matches!(err, BusError::Io(ref e) if e.kind() == std::io::ErrorKind::NotFound),
        "{err}"
    );
}

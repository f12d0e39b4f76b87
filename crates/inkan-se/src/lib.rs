#![doc = include_str!("../README.md")]

pub mod channel;
pub mod chip;
pub mod driver;
pub mod fuzz;
pub mod personality;
pub mod transport;
pub mod wire;

pub use channel::{AesKey, HostKeys};
pub use chip::{BusyModel, Chip, ChipBus, InProcess};
pub use driver::{Driver, DriverConfig, DriverError};
pub use personality::Personality;
pub use wire::{CommandCode, Curve, Status};

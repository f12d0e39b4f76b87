#![doc = include_str!("../README.md")]

pub mod cbor;
pub mod coap;
pub mod command;
pub mod edhoc;
pub mod fuzz;
pub mod hkdf;
pub mod oscore;
pub mod resources;
pub mod sign1;
pub mod telemetry;
pub mod transfer;

#![doc = include_str!("../README.md")]

pub mod api;
pub mod app;
pub mod auth;
pub mod campaigns;
pub mod commands;
pub mod devices;
pub mod echo;
pub mod firmware;
pub mod lifecycle;
pub mod metrics;
pub mod provider;
pub mod registry;
pub mod resources;
pub mod server;
pub mod store;
pub mod usage;

pub use app::App;
pub use auth::{AuthError, CloudIdentity, Limits};
pub use registry::{Registry, RegistryError};
pub use store::Store;

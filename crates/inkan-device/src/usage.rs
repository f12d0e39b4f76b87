//! Usage counted inside the chip: the one-way counter of zone 6 holds the
//! units of use left (set at the factory, `--usage-limit`). A device
//! decrements it per unit of use (a dose, a print, a command run) inside
//! its host session, and reports what is left to the cloud in a batch its
//! chip signs ([`crate::Uplink::report_usage`]).

use inkan_se::transport::Transport;
use inkan_se::{Driver, DriverError};

/// Zone of the usage counter (units of use left).
pub const USAGE_ZONE: u8 = 6;

/// A counter still at its initial value counts nothing: no usage limit
/// was set.
const UNMETERED: u32 = inkan_se::chip::state::COUNTER_INITIAL;

/// Units of use left (None: the chip has no usage limit).
pub fn remaining<T: Transport>(d: &mut Driver<T>) -> Result<Option<u32>, DriverError> {
    let (c, _) = d.read_counter(USAGE_ZONE, 0, 0)?;
    Ok((c != UNMETERED).then_some(c))
}

/// Why units could not be used.
#[derive(Debug, thiserror::Error)]
pub enum UseRefused {
    /// Fewer units are left than asked for; none was used.
    #[error("exhausted: {remaining} unit(s) left, {asked} asked")]
    Exhausted {
        /// Units left.
        remaining: u32,
        /// Units asked for.
        asked: u32,
    },
    /// The chip has no usage limit.
    #[error("not metered: the chip has no usage limit")]
    Unmetered,
    /// The chip refused (the decrement needs the host MAC) or the bus
    /// failed.
    #[error("secure element: {0}")]
    Chip(#[from] DriverError),
}

/// Uses `count` units: the chip decrements its usage counter (the caller
/// has the host session open; the chip refuses otherwise). Returns the
/// units left; none is used when fewer than `count` are left.
pub fn consume<T: Transport>(d: &mut Driver<T>, count: u32) -> Result<u32, UseRefused> {
    let left = remaining(d)?.ok_or(UseRefused::Unmetered)?;
    if left < count {
        return Err(UseRefused::Exhausted {
            remaining: left,
            asked: count,
        });
    }
    Ok(d.decrement(USAGE_ZONE, count, 0, &[])?)
}

/// The reading that reports `left` units at `time_ms`.
pub fn reading(left: u32, time_ms: u64) -> inkan_proto::telemetry::Reading {
    inkan_proto::telemetry::Reading {
        time_ms,
        channel: inkan_proto::telemetry::USAGE_CHANNEL,
        value: left.to_be_bytes().to_vec(),
    }
}

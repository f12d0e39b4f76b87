//! Issuing commands: each is a COSE_Sign1 signed with the cloud's command
//! key and addressed to one device by its chip serial; queued until the
//! device polls for it over its OSCORE session.

use crate::store::{DeviceRow, StoreError};
use crate::App;
use inkan_proto::command::Command;

/// The action that hands devices a new command key (see
/// `inkan_device::ROTATE_COMMAND_KEY`).
pub const ROTATE_COMMAND_KEY: &str = "rotate-command-key";

/// Where a command is: queued → delivered → succeeded / failed /
/// refused, or expired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommandState {
    /// Waiting for the device to poll.
    Queued,
    /// Delivered; delivered again until a result arrives.
    Delivered,
    /// Ran and succeeded.
    Succeeded,
    /// Ran and failed.
    Failed,
    /// Refused by the device (signature, binding, replay).
    Refused,
    /// Past its expiry before it ran.
    Expired,
}

impl CommandState {
    /// The store's text.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandState::Queued => "queued",
            CommandState::Delivered => "delivered",
            CommandState::Succeeded => "succeeded",
            CommandState::Failed => "failed",
            CommandState::Refused => "refused",
            CommandState::Expired => "expired",
        }
    }

    /// From the store's text.
    pub fn parse(s: &str) -> Option<CommandState> {
        [
            CommandState::Queued,
            CommandState::Delivered,
            CommandState::Succeeded,
            CommandState::Failed,
            CommandState::Refused,
            CommandState::Expired,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }

    /// The state a device's reported outcome puts a command in.
    pub fn of(outcome: inkan_proto::command::Outcome) -> CommandState {
        use inkan_proto::command::Outcome;
        match outcome {
            Outcome::Succeeded => CommandState::Succeeded,
            Outcome::Failed => CommandState::Failed,
            Outcome::Refused => CommandState::Refused,
            Outcome::Expired => CommandState::Expired,
        }
    }
}

/// Why a command could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The service runs without a command key.
    #[error("this service has no command key (inkan serve --command-key)")]
    NoKey,
    /// Signing failed.
    #[error("signing the command: {0}")]
    Sign(#[from] inkan_pki::PkiError),
    /// No device to send it to.
    #[error("no active device matches")]
    NoTarget,
    /// A bad request.
    #[error("{0}")]
    Invalid(&'static str),
    /// Storage failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Signs and queues `action(args)` for each device; returns (command id,
/// device id) pairs.
pub async fn issue(
    auth: &App,
    tenant_id: &str,
    devices: &[DeviceRow],
    action: &str,
    args: &[u8],
    ttl_secs: i64,
) -> Result<Vec<(String, String)>, IssueError> {
    let current = auth.command_key().ok_or(IssueError::NoKey)?;
    // A rotation hands devices the current key, signed by the one they
    // still pin.
    let (key, args) = if action == ROTATE_COMMAND_KEY {
        if !args.is_empty() {
            return Err(IssueError::Invalid(
                "a rotation carries the current command key itself: give no arguments",
            ));
        }
        (
            auth.previous_command_key().ok_or(IssueError::Invalid(
                "no previous command key to sign the rotation",
            ))?,
            inkan_pki::signer::spki_der(&current.public_point())?,
        )
    } else {
        (current, args.to_vec())
    };
    if devices.is_empty() {
        return Err(IssueError::NoTarget);
    }
    if action.is_empty() || action.len() > 64 || args.len() > 512 {
        return Err(IssueError::Invalid(
            "an action of 1 to 64 bytes and arguments of at most 512 bytes",
        ));
    }
    let max_ttl = i64::try_from(inkan_proto::command::MAX_TTL_SECS).unwrap_or(i64::MAX);
    if ttl_secs <= 0 || ttl_secs > max_ttl {
        return Err(IssueError::Invalid(
            "ttl_secs must be positive and at most 30 days (2592000)",
        ));
    }
    let now = crate::store::now();
    let mut out = Vec::with_capacity(devices.len());
    for d in devices {
        let (hex_id, cose) = sign_for(auth, key, d, action, &args, now, ttl_secs).await?;
        auth.registry
            .store
            .insert_command(
                &hex_id,
                tenant_id,
                &d.id,
                action,
                &cose,
                now.saturating_add(ttl_secs),
            )
            .await?;
        auth.registry
            .store
            .audit(
                Some(tenant_id),
                "command-issue",
                &d.serial,
                "ok",
                &format!("{action} {hex_id}"),
            )
            .await?;
        out.push((hex_id, d.id.clone()));
    }
    Ok(out)
}

/// Signs a command for one device, bound to its identity and to the
/// credential it authenticates with; returns its id (hex) and COSE.
pub(crate) async fn sign_for(
    auth: &App,
    key: &dyn inkan_pki::CaSigner,
    d: &DeviceRow,
    action: &str,
    args: &[u8],
    now: i64,
    ttl_secs: i64,
) -> Result<(String, Vec<u8>), IssueError> {
    let credential = auth
        .registry
        .store
        .current_credential(&d.id)
        .await?
        .ok_or(IssueError::NoTarget)?;
    let mut fp = [0u8; 32];
    hex::decode_to_slice(&credential.fingerprint, &mut fp)
        .map_err(|_| IssueError::Invalid("a credential fingerprint that is not SHA-256 hex"))?;
    let mut id = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut id);
    let cmd = Command {
        id,
        device: d.serial.clone(),
        ueid: hex::decode(&d.id).unwrap_or_else(|_| d.id.as_bytes().to_vec()),
        credential: fp,
        action: action.to_string(),
        args: args.to_vec(),
        issued: u64::try_from(now).unwrap_or(0),
        expires: u64::try_from(now.saturating_add(ttl_secs)).unwrap_or(0),
    };
    let cose = cmd.sign(|tbs| inkan_pki::signer::sign_raw(key, tbs))?;
    Ok((hex::encode(id), cose))
}

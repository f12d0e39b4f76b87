//! The lifecycle of a device and of its credentials: typed states and the
//! one transition table every change goes through. The crate README shows
//! the same table as a diagram.
//!
//! A device keeps one identity (its UEID) for life. Its certificates and
//! keys are [`CredentialState`]-tracked credentials of that identity.

use std::fmt;

/// Where a device is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeviceState {
    /// Known from its maker's batch manifest; nobody has used it yet.
    Manufactured,
    /// Claimed by an operator (registered, or received by transfer); not
    /// yet authenticated under this owner.
    Registered,
    /// Authenticates and works.
    Active,
    /// Temporarily refused; can be resumed.
    Suspended,
    /// Refused for good: its credentials are on the family's revocation
    /// list. Final but for decommissioning.
    Revoked,
    /// Taken out of service: credentials revoked, sessions ended, the
    /// device told to destroy its secrets. Terminal.
    Decommissioned,
}

/// What can happen to a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// An operator claims a manufactured device.
    Claim,
    /// The device authenticated successfully for the first time under its
    /// owner.
    Activate,
    /// Suspend.
    Suspend,
    /// Resume a suspended device.
    Resume,
    /// Revoke.
    Revoke,
    /// Decommission.
    Decommission,
    /// Ownership moves to another tenant by a signed transfer.
    Transfer,
}

/// Every state, in lifecycle order.
pub const STATES: [DeviceState; 6] = [
    DeviceState::Manufactured,
    DeviceState::Registered,
    DeviceState::Active,
    DeviceState::Suspended,
    DeviceState::Revoked,
    DeviceState::Decommissioned,
];

/// Every action.
pub const ACTIONS: [Action; 7] = [
    Action::Claim,
    Action::Activate,
    Action::Suspend,
    Action::Resume,
    Action::Revoke,
    Action::Decommission,
    Action::Transfer,
];

/// A transition not in the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a {from} device cannot be {}", action.past())]
pub struct TransitionRefused {
    /// The device's state.
    pub from: DeviceState,
    /// What was asked.
    pub action: Action,
}

/// The transition table: the state `action` leads to from `from`, or the
/// typed refusal. Nothing else changes a device's state.
pub fn transition(from: DeviceState, action: Action) -> Result<DeviceState, TransitionRefused> {
    use Action as A;
    use DeviceState as S;
    let to = match (from, action) {
        (S::Manufactured, A::Claim) => S::Registered,
        (S::Manufactured | S::Registered, A::Activate) => S::Active,
        (S::Registered | S::Active, A::Suspend) => S::Suspended,
        (S::Suspended, A::Resume) => S::Active,
        (S::Manufactured | S::Registered | S::Active | S::Suspended, A::Revoke) => S::Revoked,
        (
            S::Manufactured | S::Registered | S::Active | S::Suspended | S::Revoked,
            A::Decommission,
        ) => S::Decommissioned,
        (S::Manufactured | S::Registered | S::Active | S::Suspended, A::Transfer) => S::Registered,
        _ => return Err(TransitionRefused { from, action }),
    };
    Ok(to)
}

/// Whether a device in `state` may complete an authentication (a
/// decommissioned one only to fetch its erase order: see the registry).
pub fn may_authenticate(state: DeviceState) -> bool {
    matches!(
        state,
        DeviceState::Manufactured | DeviceState::Registered | DeviceState::Active
    )
}

impl DeviceState {
    /// The store's text for the state.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceState::Manufactured => "manufactured",
            DeviceState::Registered => "registered",
            DeviceState::Active => "active",
            DeviceState::Suspended => "suspended",
            DeviceState::Revoked => "revoked",
            DeviceState::Decommissioned => "decommissioned",
        }
    }

    /// The state from the store's text.
    pub fn parse(s: &str) -> Option<DeviceState> {
        STATES.into_iter().find(|st| st.as_str() == s)
    }
}

impl fmt::Display for DeviceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Action {
    /// The action's name (API paths, audit kinds).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Claim => "claim",
            Action::Activate => "activate",
            Action::Suspend => "suspend",
            Action::Resume => "resume",
            Action::Revoke => "revoke",
            Action::Decommission => "decommission",
            Action::Transfer => "transfer",
        }
    }

    fn past(self) -> &'static str {
        match self {
            Action::Claim => "claimed",
            Action::Activate => "activated",
            Action::Suspend => "suspended",
            Action::Resume => "resumed",
            Action::Revoke => "revoked",
            Action::Decommission => "decommissioned",
            Action::Transfer => "transferred",
        }
    }

    /// The action from its name; `reinstate` is the older name of
    /// `resume`.
    pub fn parse(s: &str) -> Option<Action> {
        if s == "reinstate" {
            return Some(Action::Resume);
        }
        ACTIONS.into_iter().find(|a| a.as_str() == s)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of one credential (a certificate and its key) of a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CredentialState {
    /// Issued, not yet usable (e.g. a renewal not yet confirmed).
    Issued,
    /// Authenticates its device.
    Active,
    /// Replaced; refused from now on.
    Retired,
    /// Revoked; on the family's revocation list.
    Revoked,
}

impl CredentialState {
    /// The store's text.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialState::Issued => "issued",
            CredentialState::Active => "active",
            CredentialState::Retired => "retired",
            CredentialState::Revoked => "revoked",
        }
    }

    /// From the store's text.
    pub fn parse(s: &str) -> Option<CredentialState> {
        [
            CredentialState::Issued,
            CredentialState::Active,
            CredentialState::Retired,
            CredentialState::Revoked,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }
}

impl fmt::Display for CredentialState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What proves the current owner's claim on a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proof {
    /// None: a claim made from public data alone before claims needed
    /// proof. The family's owner reclaims such devices.
    None,
    /// The owner registered the issuing family with proof of possession of
    /// its key.
    Family,
    /// The owner proved possession of the issuing CA key for this device.
    Issuer,
    /// A transfer signed by the previous owner's family key.
    Transfer,
}

impl Proof {
    /// The store's text.
    pub fn as_str(self) -> &'static str {
        match self {
            Proof::None => "none",
            Proof::Family => "family",
            Proof::Issuer => "issuer",
            Proof::Transfer => "transfer",
        }
    }

    /// From the store's text.
    pub fn parse(s: &str) -> Option<Proof> {
        [Proof::None, Proof::Family, Proof::Issuer, Proof::Transfer]
            .into_iter()
            .find(|p| p.as_str() == s)
    }
}

/// The state of a family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FamilyState {
    /// Its devices authenticate.
    Active,
    /// Its devices are refused for now.
    Suspended,
    /// Refused for good.
    Revoked,
}

impl FamilyState {
    /// The store's text.
    pub fn as_str(self) -> &'static str {
        match self {
            FamilyState::Active => "active",
            FamilyState::Suspended => "suspended",
            FamilyState::Revoked => "revoked",
        }
    }

    /// From the store's text.
    pub fn parse(s: &str) -> Option<FamilyState> {
        [
            FamilyState::Active,
            FamilyState::Suspended,
            FamilyState::Revoked,
        ]
        .into_iter()
        .find(|f| f.as_str() == s)
    }

    /// The family state an action leads to: suspend, resume (reinstate),
    /// revoke; revocation is final.
    pub fn after(self, action: Action) -> Result<FamilyState, FamilyTransitionRefused> {
        match (self, action) {
            (FamilyState::Active | FamilyState::Suspended, Action::Suspend) => {
                Ok(FamilyState::Suspended)
            }
            (FamilyState::Active | FamilyState::Suspended, Action::Resume) => {
                Ok(FamilyState::Active)
            }
            (_, Action::Revoke) => Ok(FamilyState::Revoked),
            _ => Err(FamilyTransitionRefused { from: self, action }),
        }
    }
}

/// A family transition not in the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a {} family cannot be {}", from.as_str(), action.past())]
pub struct FamilyTransitionRefused {
    /// The family's state.
    pub from: FamilyState,
    /// What was asked.
    pub action: Action,
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action as A;
    use DeviceState as S;

    /// Every state × every action: the table, written out once more by
    /// hand, must agree with [`transition`] on all 42 pairs.
    #[test]
    fn the_transition_table_exhaustively() {
        let expect = |from: S, action: A| -> Option<S> {
            Some(match (from, action) {
                (S::Manufactured, A::Claim) => S::Registered,
                (S::Manufactured, A::Activate) => S::Active,
                (S::Manufactured, A::Revoke) => S::Revoked,
                (S::Manufactured, A::Decommission) => S::Decommissioned,
                (S::Manufactured, A::Transfer) => S::Registered,
                (S::Registered, A::Activate) => S::Active,
                (S::Registered, A::Suspend) => S::Suspended,
                (S::Registered, A::Revoke) => S::Revoked,
                (S::Registered, A::Decommission) => S::Decommissioned,
                (S::Registered, A::Transfer) => S::Registered,
                (S::Active, A::Suspend) => S::Suspended,
                (S::Active, A::Revoke) => S::Revoked,
                (S::Active, A::Decommission) => S::Decommissioned,
                (S::Active, A::Transfer) => S::Registered,
                (S::Suspended, A::Resume) => S::Active,
                (S::Suspended, A::Revoke) => S::Revoked,
                (S::Suspended, A::Decommission) => S::Decommissioned,
                (S::Suspended, A::Transfer) => S::Registered,
                (S::Revoked, A::Decommission) => S::Decommissioned,
                _ => return None,
            })
        };
        let mut allowed = 0;
        for from in STATES {
            for action in ACTIONS {
                match (transition(from, action), expect(from, action)) {
                    (Ok(to), Some(want)) => {
                        assert_eq!(to, want, "{from} + {action}");
                        allowed += 1;
                    }
                    (Err(e), None) => {
                        assert_eq!(e, TransitionRefused { from, action });
                        assert!(e.to_string().contains(from.as_str()));
                    }
                    (got, want) => panic!("{from} + {action}: got {got:?}, want {want:?}"),
                }
            }
        }
        assert_eq!(allowed, 19);
        // The named refusals.
        assert_eq!(
            transition(S::Revoked, A::Resume).unwrap_err().to_string(),
            "a revoked device cannot be resumed"
        );
        assert!(transition(S::Decommissioned, A::Transfer).is_err());
        assert!(transition(S::Revoked, A::Transfer).is_err());
    }

    #[test]
    fn texts_round_trip() {
        for s in STATES {
            assert_eq!(DeviceState::parse(s.as_str()), Some(s));
        }
        for a in ACTIONS {
            assert_eq!(Action::parse(a.as_str()), Some(a));
        }
        assert_eq!(Action::parse("reinstate"), Some(A::Resume));
        assert_eq!(DeviceState::parse("gone"), None);
        for p in [Proof::None, Proof::Family, Proof::Issuer, Proof::Transfer] {
            assert_eq!(Proof::parse(p.as_str()), Some(p));
        }
        assert!(FamilyState::Revoked.after(A::Resume).is_err());
        assert_eq!(
            FamilyState::Suspended.after(A::Resume),
            Ok(FamilyState::Active)
        );
    }

    #[test]
    fn who_may_authenticate() {
        let ok: Vec<S> = STATES
            .into_iter()
            .filter(|s| may_authenticate(*s))
            .collect();
        assert_eq!(ok, [S::Manufactured, S::Registered, S::Active]);
    }
}

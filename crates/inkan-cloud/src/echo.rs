//! Address verification with the CoAP Echo option (RFC 9175 §2.4). Before
//! the device endpoint spends state on an unauthenticated request (a
//! message_1 while many arrive) or sends more than it received (a firmware
//! image block), the client proves it receives at its address: the cloud
//! answers 4.01 with an Echo value made for that address and the client
//! repeats the request with it. A value is the time it was made and a MAC
//! over that time and the address under a key every replica derives from
//! the cloud key, so nothing is stored per client and any replica checks
//! any value.

use crate::App;
use std::net::SocketAddr;

/// How long an Echo value proves an address.
pub const ECHO_LIFETIME_SECS: u32 = 300;

/// Bytes of MAC in an Echo value (after 4 bytes of time).
const ECHO_MAC: usize = 8;

fn now_secs() -> u32 {
    u32::try_from(crate::store::now()).unwrap_or(u32::MAX)
}

fn address_bytes(peer: SocketAddr) -> Vec<u8> {
    let mut v = match peer.ip() {
        std::net::IpAddr::V4(a) => a.octets().to_vec(),
        std::net::IpAddr::V6(a) => a.octets().to_vec(),
    };
    v.extend_from_slice(&peer.port().to_be_bytes());
    v
}

impl App {
    /// A fresh Echo value for `peer` (its address and port).
    pub fn echo_for(&self, peer: SocketAddr) -> Vec<u8> {
        self.echo_made_at(peer, now_secs())
    }

    fn echo_made_at(&self, peer: SocketAddr, t: u32) -> Vec<u8> {
        let time = t.to_be_bytes();
        let mac = self
            .identity()
            .derive("echo", &[&time, &address_bytes(peer)]);
        let mut v = time.to_vec();
        v.extend_from_slice(&mac[..ECHO_MAC]);
        v
    }

    /// Whether `echo` is a value this service made for `peer` within
    /// [`ECHO_LIFETIME_SECS`].
    pub fn echo_verifies(&self, peer: SocketAddr, echo: Option<&[u8]>) -> bool {
        let Some(echo) = echo else {
            return false;
        };
        let Some((time, _)) = echo.split_first_chunk::<4>() else {
            return false;
        };
        let t = u32::from_be_bytes(*time);
        let now = now_secs();
        if t > now.saturating_add(5) || now.saturating_sub(t) > ECHO_LIFETIME_SECS {
            return false;
        }
        subtle::ConstantTimeEq::ct_eq(echo, self.echo_made_at(peer, t).as_slice()).into()
    }

    /// Whether a message_1 from an address not yet verified is asked for
    /// an Echo first: when more than `Limits::echo_rate` arrive per second
    /// at this replica (0: always), so a flood from addresses that do not
    /// receive costs one small answer each and no state.
    pub(crate) fn message_1_needs_echo(&self) -> bool {
        let rate = f64::from(self.limits.echo_rate);
        if rate == 0.0 {
            return true;
        }
        let Ok(mut b) = self.unverified_message_1.lock() else {
            return true;
        };
        let now = std::time::Instant::now();
        let (tokens, last) = b.get_or_insert((rate, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(rate);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            false
        } else {
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> App {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let store = crate::Store::open("sqlite::memory:").await.unwrap();
            let scalar = [7u8; 32];
            let key = p256::ecdsa::SigningKey::from_slice(&scalar).unwrap();
            let ca = inkan_pki::cert::issue_root(
                &inkan_pki::SoftwareKey::P256(key),
                "echo test",
                "inkan cloud",
                &inkan_pki::CertPolicy::default(),
            )
            .unwrap();
            let id = crate::CloudIdentity::new(&scalar, &ca.der).unwrap();
            App::new(crate::Registry::new(store), id, crate::Limits::default())
        })
    }

    #[test]
    fn an_echo_value_proves_one_address_for_a_while() {
        let a = app();
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let e = a.echo_for(peer);
        assert!(a.echo_verifies(peer, Some(&e)));
        assert!(!a.echo_verifies(peer, None));
        // Another port, another host: refused.
        assert!(!a.echo_verifies("127.0.0.1:5001".parse().unwrap(), Some(&e)));
        assert!(!a.echo_verifies("127.0.0.2:5000".parse().unwrap(), Some(&e)));
        // A changed bit, a cut value: refused.
        for i in 0..e.len() {
            let mut bad = e.clone();
            bad[i] ^= 1;
            assert!(!a.echo_verifies(peer, Some(&bad)), "bit flipped at {i}");
            assert!(!a.echo_verifies(peer, Some(&e[..i])));
        }
        // Made too long ago, or claiming the future: refused even with a
        // genuine MAC.
        let old = a.echo_made_at(peer, now_secs() - ECHO_LIFETIME_SECS - 1);
        assert!(!a.echo_verifies(peer, Some(&old)));
        let later = a.echo_made_at(peer, now_secs() + 60);
        assert!(!a.echo_verifies(peer, Some(&later)));
        let recent = a.echo_made_at(peer, now_secs() - 10);
        assert!(a.echo_verifies(peer, Some(&recent)));
    }
}

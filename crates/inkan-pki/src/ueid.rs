//! The device's identity for life: an RFC 9711 Universal Entity ID (UEID),
//! fixed at personalization. Keys and certificates change; the UEID does
//! not. inkan makes type 0x01 (RAND) UEIDs of 16 random bytes; it accepts
//! the other RFC 9711 types when a device arrives with one.
//!
//! In a DevID certificate the UEID travels in the subjectAltName as an RFC
//! 4108 `HardwareModuleName` whose `hwType` is [`HW_TYPE_UEID`] and whose
//! `hwSerialNum` is the UEID's bytes, so a renewed certificate of the same
//! device names the same identity.

use crate::PkiError;

/// A UEID: the type byte followed by the identifier.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ueid(Vec<u8>);

/// UEID type RAND: 16, 24 or 32 random bytes follow.
pub const TYPE_RAND: u8 = 0x01;
/// UEID type IEEE EUI: an EUI-48 or EUI-64 follows.
pub const TYPE_EUI: u8 = 0x02;
/// UEID type IMEI: 14 bytes follow.
pub const TYPE_IMEI: u8 = 0x03;

/// The DER content octets of the OID naming "RFC 9711 UEID" as a hardware
/// type: 2.25.81987930398843414906075037048689814253, an OID derived from
/// a UUID (ITU-T X.667), which needs no registration. Its last arc is
/// wider than 32 bits, so it is kept as encoded bytes.
pub const HW_TYPE_UEID: [u8; 20] = hw_type_ueid();

const fn hw_type_ueid() -> [u8; 20] {
    // 2.25 -> 2*40+25 = 105; then the UUID as base-128, most significant
    // group first, every group but the last with the high bit set.
    let mut out = [0u8; 20];
    out[0] = 105;
    let v: u128 = 81_987_930_398_843_414_906_075_037_048_689_814_253;
    let mut i = 0;
    // 128 bits need 19 base-128 groups.
    while i < 19 {
        let shift = 7 * (18 - i);
        let group = ((v >> shift) & 0x7f) as u8;
        out[1 + i] = if i < 18 { group | 0x80 } else { group };
        i += 1;
    }
    out
}

impl Ueid {
    /// A fresh type-RAND UEID: 0x01 followed by 16 random bytes.
    pub fn random() -> Ueid {
        let mut v = vec![TYPE_RAND; 17];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut v[1..]);
        Ueid(v)
    }

    /// A UEID from its bytes, checked against the RFC 9711 types.
    pub fn from_bytes(b: &[u8]) -> Result<Ueid, PkiError> {
        let ok = match b.split_first() {
            Some((&TYPE_RAND, rest)) => matches!(rest.len(), 16 | 24 | 32),
            Some((&TYPE_EUI, rest)) => matches!(rest.len(), 6 | 8),
            Some((&TYPE_IMEI, rest)) => rest.len() == 14,
            _ => false,
        };
        if !ok {
            return Err(PkiError::malformed(
                "UEID",
                format!(
                    "{} bytes of type {:#04x} is not an RFC 9711 UEID",
                    b.len(),
                    b.first().copied().unwrap_or(0)
                ),
            ));
        }
        Ok(Ueid(b.to_vec()))
    }

    /// A UEID from lowercase or uppercase hex.
    pub fn from_hex(s: &str) -> Result<Ueid, PkiError> {
        let b =
            hex::decode(s).map_err(|_| PkiError::malformed("UEID", format!("{s:?} is not hex")))?;
        Ueid::from_bytes(&b)
    }

    /// The bytes, type first.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Lowercase hex: the device id in the cloud.
    pub fn to_hex(&self) -> String {
        hex::encode(&self.0)
    }
}

impl std::fmt::Display for Ueid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_and_lengths() {
        let u = Ueid::random();
        assert_eq!(u.as_bytes().len(), 17);
        assert_eq!(Ueid::from_hex(&u.to_hex()).unwrap(), u);
        assert!(
            Ueid::from_bytes(&[TYPE_RAND; 16]).is_err(),
            "15 bytes after the type"
        );
        assert!(Ueid::from_bytes(&[TYPE_EUI, 1, 2, 3, 4, 5, 6]).is_ok());
        assert!(Ueid::from_bytes(&[0x04; 17]).is_err(), "unknown type");
        assert!(Ueid::from_bytes(&[]).is_err());
        assert!(Ueid::from_hex("zz").is_err());
    }

    #[test]
    fn hw_type_oid_decodes_to_its_arcs() {
        // Decode the base-128 groups back into the integer.
        let mut v: u128 = 0;
        for b in &HW_TYPE_UEID[1..] {
            v = (v << 7) | u128::from(b & 0x7f);
        }
        assert_eq!(HW_TYPE_UEID[0], 105);
        assert_eq!(v, 81_987_930_398_843_414_906_075_037_048_689_814_253);
        assert_eq!(HW_TYPE_UEID[19] & 0x80, 0);
        assert_eq!(HW_TYPE_UEID[1] & 0x80, 0x80);
    }
}

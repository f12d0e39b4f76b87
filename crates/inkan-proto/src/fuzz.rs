//! Entry points shared by the fuzz targets (`fuzz/`) and the in-suite
//! smoke test: every parser the network reaches, on any bytes, returns a
//! typed result and never panics; what decodes re-encodes where a message
//! has an encoder.

use crate::edhoc::{Responder, Suite};

/// A CoAP datagram as the device endpoint and the device take it: request
/// and response parsing, the EDHOC payload split, message_1 processing
/// (with EAD), an EDHOC error message, the OSCORE option.
pub fn coap_edhoc(data: &[u8]) {
    if let Some(req) = crate::coap::parse_request_datagram(data) {
        if let Ok(crate::coap::EdhocRequest::Message1(m1)) =
            crate::coap::parse_request(&req.payload)
        {
            let _ = Responder::process_message_1(m1, &[Suite::P256Es256, Suite::X25519EdDsa]);
        }
    }
    let _ = crate::coap::parse_response(data);
    let _ = crate::coap::parse_request(data);
    let _ = Responder::process_message_1(data, &[Suite::P256Es256, Suite::X25519EdDsa]);
    let _ = crate::edhoc::parse_error_message(data);
    let _ = crate::oscore::OscoreOption::decode(data);
    if let Ok(p) = coap_lite::Packet::from_bytes(data) {
        let _ = crate::coap::echo_of(&p);
    }
}

/// A telemetry payload: a batch, or a batch signed in the chip (the
/// COSE_Sign1 is opened, its signature not checked here); a usage value.
pub fn telemetry(data: &[u8]) {
    if let Ok(batch) = crate::telemetry::decode_batch(data) {
        let again = crate::telemetry::decode_batch(&crate::telemetry::encode_batch(&batch));
        assert_eq!(again.as_ref().ok(), Some(&batch));
    }
    if crate::telemetry::is_signed(data) {
        let _ = crate::telemetry::open_signed(data);
    }
    let _ = crate::telemetry::open_signed(data);
}

/// The signed and CBOR messages of the device resources: commands and
/// their results, transfers, firmware offers, reports and tickets.
pub fn messages(data: &[u8]) {
    let _ = crate::command::Command::open(data);
    let _ = crate::command::decode_result(data);
    let _ = crate::transfer::Transfer::open(data, |_, _| true);
    let _ = crate::sign1::open_es256(data, None);
    use crate::resources::{FirmwareOffer, FirmwareReport, FirmwareTicket};
    if let Ok(o) = FirmwareOffer::decode(data) {
        assert_eq!(FirmwareOffer::decode(&o.encode()).ok(), Some(o));
    }
    if let Ok(r) = FirmwareReport::decode(data) {
        assert_eq!(FirmwareReport::decode(&r.encode()).ok(), Some(r));
    }
    if let Ok(t) = FirmwareTicket::decode(data) {
        assert_eq!(FirmwareTicket::decode(&t.encode()).ok(), Some(t));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A seeded mutation run over valid messages and noise: the same entry
    /// points the fuzz targets run, in every test run.
    #[test]
    #[allow(clippy::cast_possible_truncation, clippy::unwrap_used)]
    fn parsers_survive_mutated_and_random_input() {
        let mut seeds: Vec<Vec<u8>> = vec![Vec::new(), vec![0xF5], vec![0x40, 0x01, 0, 1]];
        let (_, m1) = crate::edhoc::Initiator::start(
            Suite::P256Es256,
            crate::edhoc::ConnId(vec![1]),
            &[],
            Box::new(crate::edhoc::crypto::SoftwareEphemeral::generate(
                Suite::P256Es256,
            )),
        );
        seeds.push(crate::coap::request(7, &[1], crate::coap::message_1_payload(&m1)).unwrap());
        seeds.push(crate::telemetry::encode_batch(&[
            crate::telemetry::Reading {
                time_ms: 1,
                channel: 2,
                value: vec![3; 5],
            },
        ]));
        seeds.push(
            crate::resources::FirmwareOffer {
                campaign: "c".into(),
                firmware: "f".into(),
            }
            .encode(),
        );
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..20_000 {
            let mut d = seeds[round % seeds.len()].clone();
            for _ in 0..(next() % 6) {
                let r = next();
                match r % 3 {
                    0 if !d.is_empty() => {
                        let i = (r >> 8) as usize % d.len();
                        d[i] ^= (r >> 32) as u8 | 1;
                    }
                    1 => d.push((r >> 16) as u8),
                    _ => {
                        d.truncate(d.len().saturating_sub(1));
                    }
                }
            }
            coap_edhoc(&d);
            telemetry(&d);
            messages(&d);
        }
    }
}

//! CoAP datagrams as the device endpoint and the device take them, EDHOC
//! message_1 (with EAD) and error messages, the OSCORE option: typed
//! results, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    inkan_proto::fuzz::coap_edhoc(data);
});

//! Signed commands and their results, transfers, firmware offers, reports
//! and tickets: typed results, never a panic; what decodes re-encodes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    inkan_proto::fuzz::messages(data);
});

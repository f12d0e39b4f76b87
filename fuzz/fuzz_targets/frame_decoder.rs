//! Command and response frame decoding never panics, and what decodes
//! re-encodes to an equal frame.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    inkan_se::fuzz::frame_decoder(data);
});

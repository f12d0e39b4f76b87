//! Telemetry batches and chip-signed batches: typed results, never a
//! panic; what decodes re-encodes to the same batch.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    inkan_proto::fuzz::telemetry(data);
});

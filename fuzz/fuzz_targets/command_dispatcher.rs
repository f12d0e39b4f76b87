//! The chip's dispatcher on any sequence of frames (valid CRCs appended so
//! the fuzzer reaches the command handlers) never panics and always answers
//! with a well-formed response frame.
#![no_main]

use inkan_se::Personality;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let personality = if data.first().is_some_and(|b| b & 1 == 1) { Personality::A110 } else { Personality::A120 };
    let mut chip = inkan_se::fuzz::fuzz_chip(personality);
    inkan_se::fuzz::command_dispatcher(&mut chip, data.get(1..).unwrap_or_default());
});

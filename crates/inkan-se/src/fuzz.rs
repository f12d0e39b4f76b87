//! Entry points shared by the fuzz targets (`fuzz/`) and the in-suite fuzz
//! smoke test: whatever the bytes, nothing panics.

use crate::chip::Chip;
use crate::personality::Personality;
use crate::wire::{CommandFrame, ResponseFrame};

/// Decodes `data` as a command and as a response frame; re-encodes what
/// decodes and checks it decodes to the same value.
pub fn frame_decoder(data: &[u8]) {
    if let Ok(f) = CommandFrame::decode(data, 4096) {
        let again = CommandFrame::decode(&f.encode(), 4096);
        assert_eq!(again.as_ref().ok(), Some(&f));
    }
    for rmac in [false, true] {
        if let Ok(r) = ResponseFrame::decode(data, rmac) {
            let again = ResponseFrame::decode(&r.encode(), rmac);
            assert_eq!(again.as_ref().ok(), Some(&r));
        }
    }
}

/// Feeds `data` to a chip as a sequence of frames (split at 0xFF 0xFE
/// markers, with a valid CRC appended so the dispatcher is reached), then
/// checks that every response is a well-formed frame.
pub fn command_dispatcher(chip: &mut Chip, data: &[u8]) {
    for part in data.split(|&b| b == 0xFE) {
        let mut frame = part.to_vec();
        let crc = crate::wire::crc::crc16(&frame);
        frame.extend_from_slice(&crc.to_be_bytes());
        let p = chip.process(&frame);
        assert!(ResponseFrame::decode(&p.response, false).is_ok());
    }
}

/// A fresh in-memory chip for dispatcher fuzzing, with a key in slot 0 and
/// an envelope key so that deep paths are reachable.
pub fn fuzz_chip(personality: Personality) -> Chip {
    let mut chip = Chip::new(personality, [7; 9]);
    let scalar = [0x11u8; 32];
    let _ = chip.manufacture_key(0, crate::wire::Curve::P256, &scalar);
    chip
}

//! The emulated chip's NVM file is sealed: a changed byte, an older image
//! (a rolled-back anti-rollback counter) or a missing seal is refused at
//! load; the chip's own writes always load.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use inkan_se::chip::{random_serial, PersistError};
use inkan_se::driver::key_mode;
use inkan_se::{Chip, Curve, Driver, InProcess, Personality};

fn tampered(r: Result<Chip, PersistError>, want: &str) {
    match r {
        Err(PersistError::Tampered { reason, .. }) => {
            assert!(reason.contains(want), "{reason}")
        }
        Err(e) => panic!("expected a tampering refusal ({want}), got {e}"),
        Ok(_) => panic!("a tampered image loaded ({want})"),
    }
}

#[test]
fn altered_rolled_back_or_unsealed_images_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chip.json");
    let seal = dir.path().join("chip.json.seal");
    Chip::create(&path, Personality::A120, random_serial()).unwrap();
    let first = std::fs::read(&path).unwrap();
    // A write by the chip itself: a key generated in slot 1.
    {
        let mut d = Driver::new(InProcess::new(Chip::open(&path).unwrap())).unwrap();
        d.generate_key(1, Curve::P256, 0, key_mode::SIGN_DIGEST)
            .unwrap();
    }
    let second = std::fs::read(&path).unwrap();
    assert_ne!(first, second);
    Chip::open(&path).unwrap();

    // One changed character in the NVM body (after the header line).
    let body = second.iter().position(|b| *b == b'\n').unwrap() + 1;
    let mut altered = second.clone();
    let at = body + (second.len() - body) / 2;
    altered[at] = if altered[at] == b'0' { b'1' } else { b'0' };
    std::fs::write(&path, &altered).unwrap();
    tampered(Chip::open(&path), "MAC does not verify");

    // The older, genuinely sealed image: a rollback.
    std::fs::write(&path, &first).unwrap();
    tampered(Chip::open(&path), "older than");

    // Back to the newest: it loads; without its seal it does not.
    std::fs::write(&path, &second).unwrap();
    Chip::open(&path).unwrap();
    let kept = std::fs::read(&seal).unwrap();
    std::fs::remove_file(&seal).unwrap();
    tampered(Chip::open(&path), "seal file is missing");
    std::fs::write(&seal, kept).unwrap();
    Chip::open(&path).unwrap();

    // A plain, unsealed image (what an editor would write) is refused.
    let plain = second[body..].to_vec();
    std::fs::write(&path, plain).unwrap();
    tampered(Chip::open(&path), "no sealed header");
}

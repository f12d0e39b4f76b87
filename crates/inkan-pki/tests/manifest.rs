//! Batch manifests: signed by a key certified under the root, verified
//! before anything is read from them; tampering and foreign signers fail.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cloned_ref_to_slice_refs
)]

use inkan_pki::cert;
use inkan_pki::manifest::{self, Manifest, ManifestEntry};
use inkan_pki::{CaSigner, CertPolicy, KeyCurve, PkiError, SoftwareKey};
use serde_bytes::ByteBuf;
use std::time::SystemTime;

fn setup() -> (
    SoftwareKey,
    cert::IssuedCert,
    SoftwareKey,
    cert::IssuedCert,
    Manifest,
) {
    let policy = CertPolicy::default();
    let root_key = SoftwareKey::generate(KeyCurve::P256);
    let root = cert::issue_root(&root_key, "o", "root", &policy).unwrap();
    let mkey = SoftwareKey::generate(KeyCurve::P256);
    let mcert = cert::issue_signer(
        &root_key,
        &root,
        &mkey.public_point(),
        "o",
        "manifest signer",
        &policy,
    )
    .unwrap();
    let m = Manifest {
        version: 1,
        batch: "b1".into(),
        family: "thermo".into(),
        family_certificate: ByteBuf::from(vec![0x30, 0x00]),
        created: 1_700_000_000,
        entries: (0..3)
            .map(|i| ManifestEntry {
                serial: format!("0{i}"),
                certificate: ByteBuf::from(vec![i; 10]),
                public_key: ByteBuf::from(vec![4; 65]),
                family: "thermo".into(),
                time: 1_700_000_000 + u64::from(i),
                ueid: Some(ByteBuf::from(vec![1; 17])),
            })
            .collect(),
    };
    (root_key, root, mkey, mcert, m)
}

#[test]
fn signed_manifest_verifies_and_round_trips() {
    let (_, root, mkey, mcert, m) = setup();
    let bytes = manifest::sign(&m, &mkey, &mcert).unwrap();
    assert_eq!(bytes[0], 0xD2, "tagged COSE_Sign1");
    assert_eq!(
        manifest::verify(&bytes, &root, SystemTime::now()).unwrap(),
        m
    );
}

#[test]
fn tampered_manifest_is_refused() {
    let (_, root, mkey, mcert, m) = setup();
    let bytes = manifest::sign(&m, &mkey, &mcert).unwrap();
    // Flip one bit in the payload region (every byte of the last 200 in turn
    // lies in the payload or the signature).
    for i in (bytes.len() - 150)..bytes.len() {
        let mut t = bytes.clone();
        t[i] ^= 0x01;
        let r = manifest::verify(&t, &root, SystemTime::now());
        assert!(r.is_err(), "flipping byte {i} went unnoticed");
    }
    let r = manifest::verify(&bytes[..bytes.len() - 1], &root, SystemTime::now());
    assert!(matches!(r, Err(PkiError::Malformed { .. })));
}

#[test]
fn a_signer_not_certified_by_the_root_is_refused() {
    let (_, root, _, _, m) = setup();
    // A signer certified by another root.
    let (_, _, other_key, other_cert, _) = setup();
    let bytes = manifest::sign(&m, &other_key, &other_cert).unwrap();
    assert!(matches!(
        manifest::verify(&bytes, &root, SystemTime::now()),
        Err(PkiError::BadSignature(_))
    ));
    // The root key signing directly (a CA certificate as manifest signer).
    let (root_key, root2, ..) = setup();
    let bytes = manifest::sign(&m, &root_key, &root2).unwrap();
    assert!(matches!(
        manifest::verify(&bytes, &root2, SystemTime::now()),
        Err(PkiError::BadSignature(_))
    ));
    // A key that does not match the certificate cannot sign.
    let (_, _, _, mcert, _) = setup();
    assert!(matches!(
        manifest::sign(&m, &SoftwareKey::generate(KeyCurve::P256), &mcert),
        Err(PkiError::KeyMismatch { .. })
    ));
    // Garbage.
    assert!(matches!(
        manifest::verify(b"not cbor", &root, SystemTime::now()),
        Err(PkiError::Malformed { .. })
    ));
}

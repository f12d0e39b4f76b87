//! Wycheproof HKDF-SHA256 through `inkan_proto::hkdf`, the extract and
//! expand EDHOC's key schedule and the OSCORE context derivation both use:
//! every case run (valid: the exact output; invalid, such as more than 255
//! blocks asked for: refused). Vectors from `INKAN_WYCHEPROOF_DIR`,
//! defaulting to the repository's `vectors/wycheproof`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[test]
fn wycheproof_hkdf_sha256_through_inkan_hkdf() {
    let dir = std::env::var_os("INKAN_WYCHEPROOF_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../vectors/wycheproof")
        });
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("hkdf_sha256_test.json")).unwrap()).unwrap();
    let h = |x: &serde_json::Value| hex::decode(x.as_str().unwrap()).unwrap();
    let (mut pass, mut fail) = (0, Vec::new());
    for g in v["testGroups"].as_array().unwrap() {
        for t in g["tests"].as_array().unwrap() {
            let size = usize::try_from(t["size"].as_u64().unwrap()).unwrap();
            let prk = inkan_proto::hkdf::extract(&h(&t["salt"]), &h(&t["ikm"]));
            let got = inkan_proto::hkdf::expand(&*prk, &h(&t["info"]), size);
            let ok = match t["result"].as_str().unwrap() {
                "valid" => got.is_ok_and(|o| *o == h(&t["okm"])),
                _ => got.is_err(),
            };
            if ok {
                pass += 1;
            } else {
                fail.push(format!("tcId {} ({})", t["tcId"], t["result"]));
            }
        }
    }
    println!(
        "HKDF-SHA256 through inkan_proto::hkdf: {pass} passed, {} failed, 0 skipped",
        fail.len()
    );
    assert!(fail.is_empty(), "{fail:?}");
    assert!(pass > 50, "only {pass} cases ran");
}

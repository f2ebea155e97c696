//! CIDs compared with two independent implementations of Kubo's `ipfs add`:
//! Debian's `ipfs_cid` (package `ipfs-cid`), which prints the CIDv0 and CIDv1 Kubo's
//! default `ipfs add` gives a file, and the UnixFS importer of the IPFS JavaScript
//! implementation (`tests/js/cid.mjs`), the reference here for CIDv1 with raw leaves
//! (`ipfs add --cid-version=1`). `scripts/setup` installs both.

use std::path::Path;
use std::process::Command;

use decloud_content::{AddOptions, CHUNK_SIZE, Cid, FileHasher, MAX_LINKS, cid_of, verify};

/// Runs `ipfs_cid` on a file and returns its (CIDv0, CIDv1).
fn ipfs_cid(path: &Path) -> (String, String) {
    let output = Command::new("ipfs_cid")
        .arg(path)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run ipfs_cid ({e}): install the Debian package ipfs-cid (scripts/setup)")
        });
    assert!(output.status.success(), "ipfs_cid failed: {output:?}");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    (
        json["CIDv0"].as_str().unwrap().to_owned(),
        json["CIDv1"].as_str().unwrap().to_owned(),
    )
}

/// Runs the JavaScript UnixFS importer on a file; `mode` is `v0` or `v1`.
fn js_cid(path: &Path, mode: &str) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js/cid.mjs");
    let output = Command::new("node")
        .arg(&script)
        .arg(path)
        .arg(mode)
        .output()
        .unwrap_or_else(|e| panic!("cannot run node ({e}): run scripts/setup"));
    assert!(
        output.status.success(),
        "{} failed (run scripts/setup to install its packages): {}",
        script.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// Deterministic pseudo-random bytes (splitmix64), so a failure reproduces exactly.
fn seeded_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn compare(name: &str, data: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, data).unwrap();
    let (v0, v1) = ipfs_cid(&path);

    let ours_v0 = cid_of(data, AddOptions::KUBO_DEFAULT);
    assert_eq!(ours_v0.to_string(), v0, "CIDv0 of {name}");
    // ipfs_cid's CIDv1 names the same dag-pb blocks as its CIDv0.
    assert_eq!(
        ours_v0.into_v1().unwrap().to_string(),
        v1,
        "CIDv1 of {name}"
    );

    // CIDv1 with raw leaves, as `ipfs add --cid-version=1`.
    let raw_v1 = cid_of(data, AddOptions::KUBO_CID_V1);
    assert_eq!(
        raw_v1.to_string(),
        js_cid(&path, "v1"),
        "raw-leaf CIDv1 of {name}"
    );
    assert_eq!(
        ours_v0.to_string(),
        js_cid(&path, "v0"),
        "js CIDv0 of {name}"
    );

    // Every form verifies against the content and the CIDs parse back.
    for cid in [&v0, &v1] {
        let parsed: Cid = decloud_content::parse_cid(cid).unwrap();
        verify(&parsed, data).unwrap();
    }
    verify(&raw_v1, data).unwrap();
}

#[test]
fn empty_file() {
    compare("empty", b"");
}

#[test]
fn six_bytes() {
    compare("hello", b"hello\n");
    assert_eq!(
        cid_of(b"hello\n", AddOptions::KUBO_DEFAULT).to_string(),
        "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN"
    );
}

#[test]
fn exactly_one_chunk() {
    compare("256k", &seeded_bytes(1, CHUNK_SIZE));
}

#[test]
fn one_chunk_plus_one_byte() {
    compare("256k1", &seeded_bytes(2, CHUNK_SIZE + 1));
}

#[test]
fn full_single_level_tree() {
    compare("full", &seeded_bytes(3, CHUNK_SIZE * MAX_LINKS));
}

#[test]
fn multi_level_tree() {
    // More than 174 chunks: the root has a full first child and a partial second one.
    let len = CHUNK_SIZE * (MAX_LINKS + 3) + 12_345;
    compare("multi", &seeded_bytes(4, len));
}

#[test]
fn streaming_hasher_agrees_with_ipfs_cid_on_odd_pieces() {
    let data = seeded_bytes(5, CHUNK_SIZE * 3 + 77);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pieces");
    std::fs::write(&path, &data).unwrap();
    let mut hasher = FileHasher::new(AddOptions::KUBO_DEFAULT);
    for piece in data.chunks(100_003) {
        hasher.update(piece);
    }
    assert_eq!(hasher.finish().to_string(), ipfs_cid(&path).0);
}

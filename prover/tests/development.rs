//! The development circuit (production depth, 4 challenges): the committed
//! `DevGroth16Verifier.sol` is exactly what the development setup produces, and its keys prove
//! and verify over the same commitments as the production circuit (same depth, same root).

use std::path::{Path, PathBuf};

use decloud_prover::{
    CircuitParams, DEV_VERIFIER_PATH, DEVELOPMENT_CHALLENGES, Keys, MerkleTree, PRODUCTION_DEPTH,
    PublicInputs, SEGMENT_BYTES, epoch_seed, generate_dev_verifier, prove, split_segments, verify,
};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

#[test]
fn committed_dev_verifier_matches_the_development_circuit() {
    let params = CircuitParams::DEVELOPMENT;
    assert_eq!(
        (params.depth, params.challenges),
        (PRODUCTION_DEPTH, DEVELOPMENT_CHALLENGES)
    );
    let keys = Keys::dev_setup(params).unwrap();
    let generated = generate_dev_verifier(keys.vk(), &params);
    let committed = std::fs::read_to_string(repo_root().join(DEV_VERIFIER_PATH)).unwrap();
    assert!(
        generated == committed,
        "{DEV_VERIFIER_PATH} differs from the verifier of the development circuit; regenerate it \
         with `cargo run -p decloud-prover -- export-verifier --development`"
    );
    assert!(committed.contains("contract DevGroth16Verifier is"));
    assert!(committed.contains("DEVELOPMENT ONLY"));

    // Same depth as production: the commitment a client computes is valid for both circuits.
    let data: Vec<u8> = (0..37 * SEGMENT_BYTES + 5)
        .map(|i| (i * 13 % 251) as u8)
        .collect();
    let tree = MerkleTree::from_data(&data, params.depth).unwrap();
    assert_eq!(
        tree.root(),
        MerkleTree::from_data(&data, CircuitParams::PRODUCTION.depth)
            .unwrap()
            .root()
    );
    let seed = epoch_seed([9; 32], 3, 1, 2);
    let proof = prove(&keys, &tree, &split_segments(&data), seed).unwrap();
    let public = PublicInputs {
        root: tree.root(),
        segment_count: tree.segment_count(),
        seed,
    };
    verify(keys.vk(), &public, &proof).unwrap();
    let other = PublicInputs {
        seed: epoch_seed([9; 32], 3, 1, 3),
        ..public
    };
    assert!(verify(keys.vk(), &other, &proof).is_err());
}

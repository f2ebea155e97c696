//! Storage proofs for DeCloud.
//!
//! A storage node is paid only for data it really keeps. This crate:
//!
//! - splits data into 1 KiB segments and packs each into 34 BN254 scalars
//!   ([`pack_segment`]);
//! - commits to the segments with a fixed-depth Poseidon Merkle tree ([`MerkleTree`]),
//!   whose root goes on-chain;
//! - proves with Groth16 over BN254 ([`prove`]) that the node holds the `k` segments an
//!   epoch seed selects; the indices are derived from the seed inside the circuit
//!   ([`StorageCircuit`]), so the prover cannot choose them;
//! - verifies proofs ([`verify`]) and generates the Solidity verifier
//!   ([`generate_verifier`]) that `StorageMarket` calls.
//!
//! The `decloud-prover` binary exposes this as `setup`, `commit`, `seed`, `prove`,
//! `verify`, `export-verifier`, `fixture` and `bench`.

mod bench;
mod circuit;
mod cli;
mod error;
mod field;
mod fixture;
mod groth;
mod merkle;
mod poseidon;
mod solidity;

pub use ark_bn254::{Bn254, Fr};
pub use ark_groth16::{Proof, VerifyingKey};
pub use bench::{BenchRow, EpochBench, bench_epoch, bench_row, count_constraints};
pub use circuit::{
    CircuitParams, DEVELOPMENT_CHALLENGES, INDEX_SOURCE_BITS, Opening, PRODUCTION_CHALLENGES,
    PRODUCTION_DEPTH, PublicInputs, StorageCircuit, challenge_index, challenged_indices,
};
pub use cli::{Cli, run, run_with};
pub use error::{Error, Result};
pub use field::{
    BYTES_PER_ELEMENT, ELEMENTS_PER_SEGMENT, SEGMENT_BYTES, fr_from_be_bytes, fr_from_hex,
    fr_to_be_bytes, fr_to_hex, pack_segment, parse_hex32, split_segments, unpack_segment,
};
pub use fixture::{Fixture, ProofFile, build_fixture};
pub use groth::{
    DEV_SETUP_SEED, KeyInfo, Keys, SegmentStore, SolidityProof, build_openings, epoch_seed,
    load_info, load_verifying_key, proof_from_solidity, proof_to_solidity, prove, prove_circuit,
    verify,
};
pub use merkle::{MAX_DEPTH, MerkleTree, hash_leaf, hash_segment, hash_segments, root_from_path};
pub use poseidon::{ALPHA, FULL_ROUNDS, PARTIAL_ROUNDS, RATE};
pub use solidity::{
    DEV_VERIFIER_CONTRACT, VERIFIER_CONTRACT, generate_dev_verifier, generate_verifier,
};

/// Path of the committed verifier, relative to the workspace root.
pub const VERIFIER_PATH: &str = "contracts/src/Groth16Verifier.sol";
/// Path of the committed DEVELOPMENT-circuit verifier ([`CircuitParams::DEVELOPMENT`]), relative
/// to the workspace root: local chains and tests only.
pub const DEV_VERIFIER_PATH: &str = "contracts/src/DevGroth16Verifier.sol";
/// Path of the forge fixture, relative to the workspace root.
pub const FIXTURE_PATH: &str = "contracts/test/fixtures/storage_proof.json";

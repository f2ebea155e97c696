//! Measurements for BENCHMARKS.md: constraint counts, key generation, proving and
//! verification times, proof size. Run with `decloud-prover bench` in a release build.

use std::time::Instant;

use ark_bn254::Fr;
use ark_relations::r1cs::{ConstraintSynthesizer, ConstraintSystem, SynthesisMode};
use ark_serialize::CanonicalSerialize;

use crate::circuit::{CircuitParams, PublicInputs, StorageCircuit};
use crate::error::Result;
use crate::field::{SEGMENT_BYTES, split_segments};
use crate::groth::{Keys, epoch_seed, prove, verify};
use crate::merkle::MerkleTree;

/// Rank-1 constraints of a circuit shape.
pub fn count_constraints(params: CircuitParams) -> Result<usize> {
    params.validate()?;
    let cs = ConstraintSystem::<Fr>::new_ref();
    cs.set_mode(SynthesisMode::Setup);
    StorageCircuit::blank(params).generate_constraints(cs.clone())?;
    cs.finalize();
    Ok(cs.num_constraints())
}

/// One line of the benchmark table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchRow {
    /// Circuit shape.
    pub params: CircuitParams,
    /// Constraints of the whole proof.
    pub constraints: usize,
    /// Seconds to generate the (development) keys.
    pub setup_seconds: f64,
    /// Seconds to prove, witness generation included.
    pub prove_seconds: f64,
    /// Milliseconds to verify in Rust.
    pub verify_millis: f64,
    /// Compressed proof size in bytes (the Solidity calldata is 8 words, 256 bytes).
    pub proof_bytes: usize,
    /// Compressed proving key size in bytes.
    pub proving_key_bytes: usize,
}

/// Measures one circuit shape on 1,000 segments (about 1 MB) of sample data.
pub fn bench_row(params: CircuitParams) -> Result<BenchRow> {
    let constraints = count_constraints(params)?;
    let started = Instant::now();
    let keys = Keys::dev_setup(params)?;
    let setup_seconds = started.elapsed().as_secs_f64();

    let data: Vec<u8> = (0..1000 * SEGMENT_BYTES).map(|i| (i % 241) as u8).collect();
    let tree = MerkleTree::from_data(&data, params.depth)?;
    let segments = split_segments(&data);
    let seed = epoch_seed([7; 32], 1, 0, 0);
    let started = Instant::now();
    let proof = prove(&keys, &tree, &segments, seed)?;
    let prove_seconds = started.elapsed().as_secs_f64();

    let public = PublicInputs {
        root: tree.root(),
        segment_count: tree.segment_count(),
        seed,
    };
    let started = Instant::now();
    verify(keys.vk(), &public, &proof)?;
    let verify_millis = started.elapsed().as_secs_f64() * 1000.0;

    Ok(BenchRow {
        params,
        constraints,
        setup_seconds,
        prove_seconds,
        verify_millis,
        proof_bytes: proof.compressed_size(),
        proving_key_bytes: keys.pk.compressed_size(),
    })
}

/// What one epoch of one replica costs a storage node, measured on pseudo-random data.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EpochBench {
    /// Circuit shape.
    pub params: CircuitParams,
    /// Replica size in bytes.
    pub bytes: u64,
    /// Seconds to hash every segment into a leaf and build the tree (a replica's first epoch).
    pub leaves_and_tree_seconds: f64,
    /// Seconds to build the tree from cached leaves (every later epoch).
    pub tree_from_leaves_seconds: f64,
    /// Seconds to prove, witness generation included.
    pub prove_seconds: f64,
}

/// Measures the epoch of a replica of `bytes` bytes with `keys`.
pub fn bench_epoch(keys: &Keys, bytes: u64) -> Result<EpochBench> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let data: Vec<u8> = (0..bytes)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let segments = split_segments(&data);
    let started = Instant::now();
    let tree = MerkleTree::from_segments(&segments, keys.params.depth)?;
    let leaves_and_tree_seconds = started.elapsed().as_secs_f64();
    let leaves: Vec<Fr> = (0..tree.segment_count())
        .map(|i| tree.leaf(i))
        .collect::<Result<_>>()?;
    let started = Instant::now();
    let rebuilt = MerkleTree::from_leaves(leaves, keys.params.depth)?;
    let tree_from_leaves_seconds = started.elapsed().as_secs_f64();
    assert_eq!(rebuilt.root(), tree.root());
    let seed = epoch_seed([3; 32], 1, 0, 0);
    let started = Instant::now();
    let proof = prove(keys, &rebuilt, &segments, seed)?;
    let prove_seconds = started.elapsed().as_secs_f64();
    let public = PublicInputs {
        root: rebuilt.root(),
        segment_count: rebuilt.segment_count(),
        seed,
    };
    verify(keys.vk(), &public, &proof)?;
    Ok(EpochBench {
        params: keys.params,
        bytes,
        leaves_and_tree_seconds,
        tree_from_leaves_seconds,
        prove_seconds,
    })
}

//! JSON files: proofs as the CLI writes them, and the forge fixture of positive and
//! negative cases that `contracts/test/StorageMarket.fixture.t.sol` reads.

use ark_bn254::{Fr, G1Affine};
use ark_ec::{AffineRepr, CurveGroup};
use ark_ff::One;
use serde::{Deserialize, Serialize};

use crate::circuit::{CircuitParams, PublicInputs, StorageCircuit};
use crate::error::{Error, Result};
use crate::field::{
    SEGMENT_BYTES, fr_from_hex, fr_to_hex, pack_segment, parse_hex32, split_segments,
};
use crate::groth::{
    Keys, SolidityProof, build_openings, epoch_seed, proof_from_solidity, proof_to_solidity, prove,
    prove_circuit, verify,
};
use crate::merkle::MerkleTree;

fn words_to_hex(words: &SolidityProof) -> Vec<String> {
    words
        .iter()
        .map(|w| format!("0x{}", hex::encode(w)))
        .collect()
}

fn hex_to_words(values: &[String]) -> Result<SolidityProof> {
    if values.len() != 8 {
        return Err(Error::InvalidProof);
    }
    let mut words = [[0u8; 32]; 8];
    for (word, value) in words.iter_mut().zip(values) {
        *word = parse_hex32(value)?;
    }
    Ok(words)
}

/// A proof with its statement, as `decloud-prover prove` writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProofFile {
    /// Circuit shape the proof is for.
    pub params: CircuitParams,
    /// Commitment root (hex scalar).
    pub root: String,
    /// Number of segments.
    pub segment_count: u64,
    /// Epoch seed (hex scalar).
    pub seed: String,
    /// The proof in the Solidity verifier's layout (eight hex words).
    pub proof: Vec<String>,
}

impl ProofFile {
    /// Builds the file contents from a statement and proof.
    pub fn new(
        params: CircuitParams,
        public: &PublicInputs,
        proof: &ark_groth16::Proof<ark_bn254::Bn254>,
    ) -> Self {
        Self {
            params,
            root: fr_to_hex(&public.root),
            segment_count: public.segment_count,
            seed: fr_to_hex(&public.seed),
            proof: words_to_hex(&proof_to_solidity(proof)),
        }
    }

    /// The statement.
    pub fn public_inputs(&self) -> Result<PublicInputs> {
        Ok(PublicInputs {
            root: fr_from_hex(&self.root)?,
            segment_count: self.segment_count,
            seed: fr_from_hex(&self.seed)?,
        })
    }

    /// The proof, parsed and checked for well-formed points.
    pub fn proof(&self) -> Result<ark_groth16::Proof<ark_bn254::Bn254>> {
        proof_from_solidity(&hex_to_words(&self.proof)?)
    }
}

/// The forge fixture: one valid proof and the negative cases the contracts must reject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Fixture {
    /// How to regenerate this file.
    pub regenerate: String,
    /// Circuit shape.
    pub params: CircuitParams,
    /// Commitment root.
    pub root: String,
    /// Segments in the committed data.
    pub segment_count: u64,
    /// Recorded block hash the seeds derive from.
    pub randomness: String,
    /// Deal id the seed is bound to.
    pub deal_id: u64,
    /// Replica index the seed is bound to.
    pub replica: u64,
    /// Epoch the proof is for.
    pub epoch: u64,
    /// Seed of that epoch.
    pub seed: String,
    /// A valid proof for (root, segmentCount, seed).
    pub proof: Vec<String>,
    /// Seed of the next epoch of the same replica (the proof must fail for it).
    pub next_epoch_seed: String,
    /// A root other than the committed one.
    pub wrong_root: String,
    /// A seed from other randomness.
    pub wrong_seed: String,
    /// The valid proof with `C` moved by the generator: well-formed points, wrong proof.
    pub tampered_proof: Vec<String>,
    /// Challenged segment the cheating prover did not hold.
    pub missing_segment: u64,
    /// Proof by a prover that lacks `missingSegment` and put zeros in its place.
    pub missing_segment_proof: Vec<String>,
}

/// Deterministic sample data for the fixture: `segments` segments minus a few bytes.
fn sample_data(segments: usize) -> Vec<u8> {
    (0..segments * SEGMENT_BYTES - 100)
        .map(|i| ((i * 31 + i / 977) % 251) as u8)
        .collect()
}

/// Builds the fixture with `keys`, checking in Rust that the positive case verifies and
/// every negative case does not.
pub fn build_fixture(keys: &Keys) -> Result<Fixture> {
    let params = keys.params;
    let data = sample_data(300);
    let tree = MerkleTree::from_data(&data, params.depth)?;
    let segments = split_segments(&data);
    let randomness = [0x5e; 32];
    let (deal_id, replica, epoch) = (1, 0, 0);
    let seed = epoch_seed(randomness, deal_id, replica, epoch);
    let public = PublicInputs {
        root: tree.root(),
        segment_count: tree.segment_count(),
        seed,
    };

    let proof = prove(keys, &tree, &segments, seed)?;
    verify(keys.vk(), &public, &proof)?;

    let next_epoch_seed = epoch_seed(randomness, deal_id, replica, epoch + 1);
    let wrong_root = tree.root() + Fr::one();
    let wrong_seed = epoch_seed([0xa1; 32], deal_id, replica, epoch);
    for bad in [
        PublicInputs {
            seed: next_epoch_seed,
            ..public
        },
        PublicInputs {
            root: wrong_root,
            ..public
        },
        PublicInputs {
            seed: wrong_seed,
            ..public
        },
    ] {
        if verify(keys.vk(), &bad, &proof).is_ok() {
            return Err(Error::Unsatisfied);
        }
    }

    let mut tampered = proof.clone();
    tampered.c = (tampered.c + G1Affine::generator()).into_affine();
    if verify(keys.vk(), &public, &tampered).is_ok() {
        return Err(Error::Unsatisfied);
    }

    // The cheating prover holds every segment but one challenged segment.
    let mut openings = build_openings(&params, &tree, &segments, seed)?;
    let missing_segment = openings[0].index;
    for opening in openings.iter_mut().filter(|o| o.index == missing_segment) {
        opening.elements = pack_segment(&[0u8; SEGMENT_BYTES]);
    }
    let cheat = prove_circuit(
        keys,
        StorageCircuit {
            params,
            public,
            openings,
        },
    )?;
    if verify(keys.vk(), &public, &cheat).is_ok() {
        return Err(Error::Unsatisfied);
    }

    Ok(Fixture {
        regenerate: "cargo run --release -p decloud-prover -- fixture".to_owned(),
        params,
        root: fr_to_hex(&public.root),
        segment_count: public.segment_count,
        randomness: format!("0x{}", hex::encode(randomness)),
        deal_id,
        replica,
        epoch,
        seed: fr_to_hex(&seed),
        proof: words_to_hex(&proof_to_solidity(&proof)),
        next_epoch_seed: fr_to_hex(&next_epoch_seed),
        wrong_root: fr_to_hex(&wrong_root),
        wrong_seed: fr_to_hex(&wrong_seed),
        tampered_proof: words_to_hex(&proof_to_solidity(&tampered)),
        missing_segment,
        missing_segment_proof: words_to_hex(&proof_to_solidity(&cheat)),
    })
}

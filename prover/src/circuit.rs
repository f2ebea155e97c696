//! The storage circuit: k challenged segments, derived in-circuit from the seed, each
//! opened against the committed Merkle root.
//!
//! Public inputs, in this order: the commitment root, the segment count `n`, the epoch
//! seed. For challenge `i` (0-based) the circuit computes `h_i = Poseidon(seed, i)`,
//! decomposes `h_i` canonically into bits, takes its low 64 bits `v_i`, and enforces
//! `v_i = q_i·n + idx_i` with `q_i < 2^64` and `0 ≤ idx_i < n` (as `n − 1 − idx_i` fits in
//! `depth` bits). The bits of `idx_i` steer the Merkle path, so the prover cannot pick
//! which segment it opens. Reducing 64 bits modulo `n ≤ 2^depth` makes every index
//! equally likely up to a bias below `2^depth / 2^64`.

use ark_bn254::Fr;
use ark_ff::{One, PrimeField};
use ark_r1cs_std::{
    alloc::AllocVar, boolean::Boolean, convert::ToBitsGadget, eq::EqGadget, fields::fp::FpVar,
    prelude::FieldVar, select::CondSelectGadget,
};
use ark_relations::r1cs::{ConstraintSynthesizer, ConstraintSystemRef, SynthesisError};

use crate::error::{Error, Result};
use crate::field::ELEMENTS_PER_SEGMENT;
use crate::merkle::MAX_DEPTH;
use crate::poseidon;

/// Tree depth of the production circuit: `2^20` segments of 1 KiB, 1 GiB per commitment.
pub const PRODUCTION_DEPTH: usize = 20;

/// Challenges per proof in production: the least `k` with `0.9^k ≤ 10^-4`, i.e.
/// `k ≥ ln(10^-4) / ln(0.9) = 87.4`, so a node missing 10% of a file is caught with
/// probability `1 − 0.9^88 ≥ 99.99%` in every proof.
pub const PRODUCTION_CHALLENGES: usize = 88;

/// Challenges per proof of the DEVELOPMENT circuit (local chains, tests, `decloud dev`): the
/// production depth (so commitments, and therefore clients, are the same on every network) with
/// few challenges, so a proof takes about two seconds instead of over a minute. A node missing
/// 10% of a file escapes one proof with probability `0.9^4 = 66%`: useless against a cheating
/// node, which is why it never leaves a local chain.
pub const DEVELOPMENT_CHALLENGES: usize = 4;

/// Bits of each challenge hash used to pick an index.
pub const INDEX_SOURCE_BITS: usize = 64;

/// Shape of a circuit: the verifying key is bound to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CircuitParams {
    /// Merkle tree depth; commitments hold at most `2^depth` segments.
    pub depth: usize,
    /// Segments challenged per proof (k).
    pub challenges: usize,
}

impl CircuitParams {
    /// The production parameters.
    pub const PRODUCTION: Self = Self {
        depth: PRODUCTION_DEPTH,
        challenges: PRODUCTION_CHALLENGES,
    };

    /// The DEVELOPMENT parameters: production depth, [`DEVELOPMENT_CHALLENGES`] challenges.
    /// Local chains and tests only (see [`DEVELOPMENT_CHALLENGES`]).
    pub const DEVELOPMENT: Self = Self {
        depth: PRODUCTION_DEPTH,
        challenges: DEVELOPMENT_CHALLENGES,
    };

    /// Checks the parameters are supported.
    pub fn validate(&self) -> Result<()> {
        if self.depth == 0 || self.depth > MAX_DEPTH {
            return Err(Error::InvalidDepth(self.depth));
        }
        if self.challenges == 0 {
            return Err(Error::NoChallenges);
        }
        Ok(())
    }

    /// Largest segment count a commitment may have under these parameters.
    pub fn max_segments(&self) -> u64 {
        1u64 << self.depth
    }
}

impl std::fmt::Display for CircuitParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "depth={} challenges={}", self.depth, self.challenges)
    }
}

/// The public statement a proof is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicInputs {
    /// Merkle root of the committed data.
    pub root: Fr,
    /// Number of data segments.
    pub segment_count: u64,
    /// Epoch seed, see [`crate::epoch_seed`].
    pub seed: Fr,
}

impl PublicInputs {
    /// The inputs in circuit order: root, segment count, seed.
    pub fn to_vec(&self) -> Vec<Fr> {
        vec![self.root, Fr::from(self.segment_count), self.seed]
    }
}

/// Low 64 bits of the challenge hash `Poseidon(seed, i)`.
fn challenge_source(seed: Fr, challenge: usize) -> u64 {
    poseidon::hash(&[seed, Fr::from(challenge as u64)])
        .into_bigint()
        .0[0]
}

/// Index of challenge `challenge` for a seed and segment count, as the circuit derives it.
pub fn challenge_index(seed: Fr, challenge: usize, segment_count: u64) -> u64 {
    challenge_source(seed, challenge) % segment_count.max(1)
}

/// All challenged indices of one proof (repeats are possible and harmless).
pub fn challenged_indices(params: &CircuitParams, seed: Fr, segment_count: u64) -> Vec<u64> {
    (0..params.challenges)
        .map(|i| challenge_index(seed, i, segment_count))
        .collect()
}

/// The witness for one challenge: a segment and its Merkle path.
#[derive(Debug, Clone)]
pub struct Opening {
    /// Index of the opened segment.
    pub index: u64,
    /// The segment's packed scalars (the leaf is their hash).
    pub elements: [Fr; ELEMENTS_PER_SEGMENT],
    /// Sibling hashes from the leaf up, `depth` of them.
    pub siblings: Vec<Fr>,
}

/// The storage circuit with its statement and witness.
#[derive(Debug, Clone)]
pub struct StorageCircuit {
    /// Shape.
    pub params: CircuitParams,
    /// Statement.
    pub public: PublicInputs,
    /// One opening per challenge.
    pub openings: Vec<Opening>,
}

impl StorageCircuit {
    /// A circuit of the given shape with an all-zero witness, for key generation and
    /// constraint counting (the shape does not depend on the witness).
    pub fn blank(params: CircuitParams) -> Self {
        let opening = Opening {
            index: 0,
            elements: [Fr::from(0u64); ELEMENTS_PER_SEGMENT],
            siblings: vec![Fr::from(0u64); params.depth],
        };
        Self {
            params,
            public: PublicInputs {
                root: Fr::from(0u64),
                segment_count: 1,
                seed: Fr::from(0u64),
            },
            openings: vec![opening; params.challenges],
        }
    }
}

fn witness_bits(
    cs: &ConstraintSystemRef<Fr>,
    value: u64,
    count: usize,
) -> Result<Vec<Boolean<Fr>>, SynthesisError> {
    (0..count)
        .map(|bit| Boolean::new_witness(cs.clone(), || Ok((value >> bit) & 1 == 1)))
        .collect()
}

impl ConstraintSynthesizer<Fr> for StorageCircuit {
    fn generate_constraints(self, cs: ConstraintSystemRef<Fr>) -> Result<(), SynthesisError> {
        let Self {
            params,
            public,
            openings,
        } = self;
        if openings.len() != params.challenges
            || openings.iter().any(|o| o.siblings.len() != params.depth)
        {
            return Err(SynthesisError::Unsatisfiable);
        }
        let root = FpVar::new_input(cs.clone(), || Ok(public.root))?;
        let count = FpVar::new_input(cs.clone(), || Ok(Fr::from(public.segment_count)))?;
        let seed = FpVar::new_input(cs.clone(), || Ok(public.seed))?;
        let count_minus_one = &count - Fr::one();

        for (challenge, opening) in openings.into_iter().enumerate() {
            // Index derivation: the prover only supplies the quotient and remainder bits.
            let hash = poseidon::hash_var(
                cs.clone(),
                &[seed.clone(), FpVar::constant(Fr::from(challenge as u64))],
            )?;
            let hash_bits = hash.to_bits_le()?;
            let source = Boolean::le_bits_to_fp(&hash_bits[..INDEX_SOURCE_BITS])?;
            let native_source = challenge_source(public.seed, challenge);
            let quotient = native_source.checked_div(public.segment_count).unwrap_or(0);
            let quotient =
                Boolean::le_bits_to_fp(&witness_bits(&cs, quotient, INDEX_SOURCE_BITS)?)?;
            let index_bits = witness_bits(&cs, opening.index, params.depth)?;
            let index = Boolean::le_bits_to_fp(&index_bits)?;
            (quotient * &count + &index).enforce_equal(&source)?;
            // idx < n  <=>  n - 1 - idx fits in `depth` bits (n ≤ 2^depth is checked on-chain).
            let gap = public
                .segment_count
                .wrapping_sub(1)
                .wrapping_sub(opening.index);
            let gap = Boolean::le_bits_to_fp(&witness_bits(&cs, gap, params.depth)?)?;
            (gap + &index).enforce_equal(&count_minus_one)?;

            // The leaf is the hash of the segment's own scalars.
            let elements = opening
                .elements
                .iter()
                .map(|e| FpVar::new_witness(cs.clone(), || Ok(*e)))
                .collect::<Result<Vec<_>, _>>()?;
            let mut node = poseidon::hash_var(cs.clone(), &elements)?;
            for (bit, sibling) in index_bits.iter().zip(&opening.siblings) {
                let sibling = FpVar::new_witness(cs.clone(), || Ok(*sibling))?;
                let left = FpVar::conditionally_select(bit, &sibling, &node)?;
                let right = &node + &sibling - &left;
                node = poseidon::hash_var(cs.clone(), &[left, right])?;
            }
            node.enforce_equal(&root)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::field::split_segments;
    use crate::merkle::MerkleTree;
    use ark_relations::r1cs::ConstraintSystem;

    fn satisfied(circuit: StorageCircuit) -> bool {
        let cs = ConstraintSystem::<Fr>::new_ref();
        circuit.generate_constraints(cs.clone()).unwrap();
        cs.is_satisfied().unwrap()
    }

    fn honest(params: CircuitParams, data: &[u8], seed: Fr) -> StorageCircuit {
        let tree = MerkleTree::from_data(data, params.depth).unwrap();
        let segments = split_segments(data);
        let openings = challenged_indices(&params, seed, tree.segment_count())
            .into_iter()
            .map(|index| Opening {
                index,
                elements: crate::field::pack_segment(&segments[index as usize]),
                siblings: tree.path(index).unwrap(),
            })
            .collect();
        StorageCircuit {
            params,
            public: PublicInputs {
                root: tree.root(),
                segment_count: tree.segment_count(),
                seed,
            },
            openings,
        }
    }

    const SMALL: CircuitParams = CircuitParams {
        depth: 4,
        challenges: 3,
    };

    fn data() -> Vec<u8> {
        (0..11 * 1024 + 17).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn honest_witness_satisfies() {
        assert!(satisfied(honest(SMALL, &data(), Fr::from(42u64))));
    }

    #[test]
    fn wrong_index_is_unsatisfied() {
        let mut circuit = honest(SMALL, &data(), Fr::from(42u64));
        // Open a different (valid) segment than the seed selects.
        let tree = MerkleTree::from_data(&data(), SMALL.depth).unwrap();
        let other = (circuit.openings[0].index + 1) % tree.segment_count();
        circuit.openings[0].index = other;
        circuit.openings[0].elements =
            crate::field::pack_segment(&split_segments(&data())[other as usize]);
        circuit.openings[0].siblings = tree.path(other).unwrap();
        assert!(!satisfied(circuit));
    }

    #[test]
    fn wrong_data_root_or_seed_is_unsatisfied() {
        let mut circuit = honest(SMALL, &data(), Fr::from(42u64));
        circuit.openings[1].elements[3] += Fr::one();
        assert!(!satisfied(circuit));
        let mut circuit = honest(SMALL, &data(), Fr::from(42u64));
        circuit.public.root += Fr::one();
        assert!(!satisfied(circuit));
        let mut circuit = honest(SMALL, &data(), Fr::from(42u64));
        circuit.public.seed = Fr::from(43u64);
        assert!(!satisfied(circuit));
        let mut circuit = honest(SMALL, &data(), Fr::from(42u64));
        circuit.public.segment_count = 0;
        assert!(!satisfied(circuit));
    }

    #[test]
    fn shape_does_not_depend_on_witness() {
        let blank = ConstraintSystem::<Fr>::new_ref();
        StorageCircuit::blank(SMALL)
            .generate_constraints(blank.clone())
            .unwrap();
        let real = ConstraintSystem::<Fr>::new_ref();
        honest(SMALL, &data(), Fr::from(9u64))
            .generate_constraints(real.clone())
            .unwrap();
        assert_eq!(blank.num_constraints(), real.num_constraints());
        assert_eq!(blank.num_witness_variables(), real.num_witness_variables());
        assert_eq!(real.num_instance_variables(), 4);
    }

    #[test]
    fn indices_stay_in_range_and_vary() {
        let params = CircuitParams {
            depth: 20,
            challenges: 88,
        };
        let indices = challenged_indices(&params, Fr::from(5u64), 1000);
        assert!(indices.iter().all(|i| *i < 1000));
        let distinct: std::collections::BTreeSet<_> = indices.iter().collect();
        assert!(
            distinct.len() > 70,
            "88 draws from 1000 should rarely repeat"
        );
        assert_ne!(indices, challenged_indices(&params, Fr::from(6u64), 1000));
    }
}

//! The fixed Poseidon instance used for commitments and challenges, out of circuit and in.
//!
//! Parameters: BN254 scalar field, state width 3 (rate 2, capacity 1), S-box x^5,
//! 8 full rounds and 57 partial rounds (the Poseidon paper's 128-bit choice for this
//! field and width). Round constants and the MDS matrix come from the paper's Grain
//! LFSR procedure, as implemented by `ark-crypto-primitives`
//! (`find_poseidon_ark_and_mds` with 254-bit prime, rate 2, skip 0 matrices). The
//! constants differ from circomlib's, which were derived differently; nothing on-chain
//! hashes with Poseidon, so only this crate needs them, and a test pins their digest.
//!
//! Every hash is the duplex sponge: absorb the inputs one scalar at a time, squeeze one
//! scalar. Inputs have a fixed length per use (34 scalars for a leaf, 2 for a node,
//! 2 for a challenge), and the Merkle depth is fixed by the circuit, so no length
//! padding or domain tag is needed for the tree to be binding.

use std::sync::OnceLock;

use ark_bn254::Fr;
use ark_crypto_primitives::sponge::{
    CryptographicSponge,
    constraints::CryptographicSpongeVar,
    poseidon::{
        PoseidonConfig, PoseidonSponge, constraints::PoseidonSpongeVar, find_poseidon_ark_and_mds,
    },
};
use ark_ff::PrimeField;
use ark_r1cs_std::fields::fp::FpVar;
use ark_relations::r1cs::{ConstraintSystemRef, SynthesisError};

/// Sponge rate in scalars.
pub const RATE: usize = 2;
/// Full rounds.
pub const FULL_ROUNDS: usize = 8;
/// Partial rounds.
pub const PARTIAL_ROUNDS: usize = 57;
/// S-box exponent.
pub const ALPHA: u64 = 5;

/// The Poseidon configuration, generated once per process.
pub(crate) fn config() -> &'static PoseidonConfig<Fr> {
    static CONFIG: OnceLock<PoseidonConfig<Fr>> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let (ark, mds) = find_poseidon_ark_and_mds::<Fr>(
            u64::from(Fr::MODULUS_BIT_SIZE),
            RATE,
            FULL_ROUNDS as u64,
            PARTIAL_ROUNDS as u64,
            0,
        );
        PoseidonConfig::new(FULL_ROUNDS, PARTIAL_ROUNDS, ALPHA, mds, ark, RATE, 1)
    })
}

/// Poseidon sponge hash of a fixed-length list of scalars.
pub(crate) fn hash(inputs: &[Fr]) -> Fr {
    let mut sponge = PoseidonSponge::new(config());
    for input in inputs {
        sponge.absorb(input);
    }
    sponge.squeeze_field_elements::<Fr>(1)[0]
}

/// Hash of two children, the inner node of the Merkle tree.
pub(crate) fn hash_pair(left: Fr, right: Fr) -> Fr {
    hash(&[left, right])
}

/// In-circuit counterpart of [`hash`]: the same sponge over constraint variables.
pub(crate) fn hash_var(
    cs: ConstraintSystemRef<Fr>,
    inputs: &[FpVar<Fr>],
) -> Result<FpVar<Fr>, SynthesisError> {
    let mut sponge = PoseidonSpongeVar::new(cs, config());
    for input in inputs {
        sponge.absorb(input)?;
    }
    Ok(sponge.squeeze_field_elements(1)?.remove(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::field::fr_to_hex;
    use ark_r1cs_std::{R1CSVar, alloc::AllocVar};
    use ark_relations::r1cs::ConstraintSystem;
    use proptest::prelude::*;
    use sha3::{Digest, Keccak256};

    /// Pins the constants: a change in the generator or its inputs changes every
    /// commitment ever made, so it must fail loudly here.
    #[test]
    fn constants_are_pinned() {
        let cfg = config();
        assert_eq!(cfg.ark.len(), FULL_ROUNDS + PARTIAL_ROUNDS);
        assert_eq!(cfg.mds.len(), RATE + 1);
        let mut digest = Keccak256::new();
        for value in cfg.ark.iter().chain(cfg.mds.iter()).flatten() {
            digest.update(fr_to_hex(value));
        }
        assert_eq!(
            hex::encode(digest.finalize()),
            include_str!("../testdata/poseidon_constants.keccak").trim()
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        #[test]
        fn gadget_matches_native(values in proptest::collection::vec(any::<u64>(), 1..6)) {
            let inputs: Vec<Fr> = values.iter().map(|v| Fr::from(*v)).collect();
            let cs = ConstraintSystem::<Fr>::new_ref();
            let vars: Vec<FpVar<Fr>> = inputs
                .iter()
                .map(|v| FpVar::new_witness(cs.clone(), || Ok(*v)).unwrap())
                .collect();
            let out = hash_var(cs.clone(), &vars).unwrap();
            prop_assert_eq!(out.value().unwrap(), hash(&inputs));
            prop_assert!(cs.is_satisfied().unwrap());
        }
    }
}

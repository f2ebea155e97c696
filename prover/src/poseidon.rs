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
    constraints::CryptographicSpongeVar,
    poseidon::{PoseidonConfig, constraints::PoseidonSpongeVar, find_poseidon_ark_and_mds},
};
use ark_ff::{AdditiveGroup, Field, PrimeField, Zero};
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

/// Width of the permutation's state: the rate plus one capacity scalar.
const WIDTH: usize = RATE + 1;
/// Rounds of one permutation.
const ROUNDS: usize = FULL_ROUNDS + PARTIAL_ROUNDS;

/// A square matrix acting on the state.
type Matrix = [[Fr; WIDTH]; WIDTH];

/// The permutation of [`config`], rearranged for speed out of circuit.
///
/// Clients hash every byte they store with it, so it runs on the stack: the sponge of
/// `ark-crypto-primitives` clones its whole configuration for each hash and allocates in every
/// round. And the partial rounds use the Poseidon paper's equivalent form (its appendix B):
/// - Their round constants only touch the first scalar. The rest of a constant passes the
///   S-box untouched, so it is carried through the MDS matrix into the next round's constants.
/// - Their matrix is sparse. A partial round's matrix `A = [[a, vᵀ], [w, Â]]` factors as
///   `diag(1, Â) · [[a, vᵀ], [Â⁻¹w, I]]`. The dense factor fixes the first scalar, so it
///   commutes with the next round's S-box and constant and joins the next round's matrix;
///   after the last partial round it is applied once.
///
/// The circuit keeps the sponge's gadget over the plain rounds, and tests hold this form to
/// the library's sponge on every input length.
struct Permutation {
    /// Constants of the full rounds, the last half with the partial rounds' carry folded in.
    full_constants: [[Fr; WIDTH]; FULL_ROUNDS],
    /// The constant added to the first scalar in each partial round.
    partial_constants: [Fr; PARTIAL_ROUNDS],
    /// The sparse factor of each partial round's matrix.
    sparse: [SparseMatrix; PARTIAL_ROUNDS],
    /// The dense factor left after the last partial round (it fixes the first scalar).
    tail: Matrix,
    mds: Matrix,
}

/// `[[first_row], [column, I]]`: the first output mixes every scalar, the others add a
/// multiple of the first input to their own.
#[derive(Clone, Copy)]
struct SparseMatrix {
    first_row: [Fr; WIDTH],
    column: [Fr; WIDTH],
}

impl Permutation {
    fn get() -> &'static Self {
        static PERMUTATION: OnceLock<Permutation> = OnceLock::new();
        PERMUTATION.get_or_init(|| Self::from_config(config()))
    }

    fn from_config(config: &PoseidonConfig<Fr>) -> Self {
        let row = |values: &[Fr]| -> [Fr; WIDTH] {
            values
                .try_into()
                .expect("the configuration has WIDTH columns")
        };
        let mds: Matrix = std::array::from_fn(|i| row(&config.mds[i]));
        let ark: [[Fr; WIDTH]; ROUNDS] = std::array::from_fn(|round| row(&config.ark[round]));
        let half = FULL_ROUNDS / 2;

        let mut full_constants: [[Fr; WIDTH]; FULL_ROUNDS] =
            std::array::from_fn(|i| ark[if i < half { i } else { i + PARTIAL_ROUNDS }]);
        let mut partial_constants = [Fr::ZERO; PARTIAL_ROUNDS];
        let mut carry = [Fr::ZERO; WIDTH];
        for (round, constant) in partial_constants.iter_mut().enumerate() {
            let mut rest = add(ark[half + round], carry);
            *constant = rest[0];
            rest[0] = Fr::ZERO;
            carry = multiply(&mds, &rest);
        }
        full_constants[half] = add(full_constants[half], carry);

        let mut sparse = [SparseMatrix {
            first_row: [Fr::ZERO; WIDTH],
            column: [Fr::ZERO; WIDTH],
        }; PARTIAL_ROUNDS];
        let mut dense = identity();
        for factor in sparse.iter_mut() {
            let (next_dense, next_sparse) = factor_matrix(&product(&mds, &dense));
            *factor = next_sparse;
            dense = next_dense;
        }
        Self {
            full_constants,
            partial_constants,
            sparse,
            tail: dense,
            mds,
        }
    }

    fn apply(&self, state: &mut [Fr; WIDTH]) {
        let (first, last) = self.full_constants.split_at(FULL_ROUNDS / 2);
        for constants in first {
            self.full_round(state, constants);
        }
        for (constant, matrix) in self.partial_constants.iter().zip(&self.sparse) {
            let x = s_box(state[0] + constant);
            let first = matrix
                .first_row
                .iter()
                .skip(1)
                .zip(&state[1..])
                .fold(matrix.first_row[0] * x, |sum, (m, value)| sum + *m * value);
            for (value, c) in state.iter_mut().zip(&matrix.column).skip(1) {
                *value += *c * x;
            }
            state[0] = first;
        }
        *state = multiply(&self.tail, state);
        for constants in last {
            self.full_round(state, constants);
        }
    }

    fn full_round(&self, state: &mut [Fr; WIDTH], constants: &[Fr; WIDTH]) {
        for (value, constant) in state.iter_mut().zip(constants) {
            *value = s_box(*value + constant);
        }
        *state = multiply(&self.mds, state);
    }
}

/// Splits `A = [[a, vᵀ], [w, Â]]` into `diag(1, Â)` and `[[a, vᵀ], [Â⁻¹w, I]]`.
fn factor_matrix(matrix: &Matrix) -> (Matrix, SparseMatrix) {
    let mut dense = identity();
    for i in 1..WIDTH {
        dense[i][1..].copy_from_slice(&matrix[i][1..]);
    }
    let inverse = invert(&dense).expect("the MDS matrix's lower blocks are invertible");
    let mut column = multiply(&inverse, &std::array::from_fn(|i| matrix[i][0]));
    column[0] = Fr::ZERO;
    (
        dense,
        SparseMatrix {
            first_row: matrix[0],
            column,
        },
    )
}

fn identity() -> Matrix {
    std::array::from_fn(|i| std::array::from_fn(|j| if i == j { Fr::ONE } else { Fr::ZERO }))
}

fn add(a: [Fr; WIDTH], b: [Fr; WIDTH]) -> [Fr; WIDTH] {
    std::array::from_fn(|i| a[i] + b[i])
}

fn multiply(matrix: &Matrix, vector: &[Fr; WIDTH]) -> [Fr; WIDTH] {
    std::array::from_fn(|i| {
        matrix[i]
            .iter()
            .zip(vector)
            .fold(Fr::ZERO, |sum, (m, value)| sum + *m * value)
    })
}

fn product(a: &Matrix, b: &Matrix) -> Matrix {
    std::array::from_fn(|i| {
        std::array::from_fn(|j| (0..WIDTH).fold(Fr::ZERO, |sum, k| sum + a[i][k] * b[k][j]))
    })
}

/// Gauss-Jordan elimination; `None` for a singular matrix.
fn invert(matrix: &Matrix) -> Option<Matrix> {
    let (mut left, mut right) = (*matrix, identity());
    for column in 0..WIDTH {
        let pivot = (column..WIDTH).find(|&r| !left[r][column].is_zero())?;
        left.swap(column, pivot);
        right.swap(column, pivot);
        let scale = left[column][column].inverse()?;
        for j in 0..WIDTH {
            left[column][j] *= scale;
            right[column][j] *= scale;
        }
        for r in (0..WIDTH).filter(|&r| r != column) {
            let factor = left[r][column];
            for j in 0..WIDTH {
                let (l, rr) = (left[column][j], right[column][j]);
                left[r][j] -= factor * l;
                right[r][j] -= factor * rr;
            }
        }
    }
    Some(right)
}

// `s_box` is written for this exponent.
const _: () = assert!(ALPHA == 5);

/// `x^5`, the S-box ([`ALPHA`]).
fn s_box(x: Fr) -> Fr {
    let square = x.square();
    square.square() * x
}

/// Poseidon sponge hash of a fixed-length list of scalars.
///
/// The duplex sponge with one capacity scalar first in the state: each group of [`RATE`]
/// inputs is added to the rate part and followed by a permutation (the last of them is the
/// permutation before squeezing), and the output is the first rate scalar.
pub(crate) fn hash(inputs: &[Fr]) -> Fr {
    let permutation = Permutation::get();
    let mut state = [Fr::ZERO; WIDTH];
    for group in inputs.chunks(RATE) {
        for (value, input) in state[1..].iter_mut().zip(group) {
            *value += input;
        }
        permutation.apply(&mut state);
    }
    if inputs.is_empty() {
        permutation.apply(&mut state);
    }
    state[1]
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
    use crate::field::{ELEMENTS_PER_SEGMENT, fr_to_hex};
    use ark_crypto_primitives::sponge::{CryptographicSponge, poseidon::PoseidonSponge};
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

    /// The sponge of `ark-crypto-primitives`, whose gadget the circuit uses.
    fn library_hash(inputs: &[Fr]) -> Fr {
        let mut sponge = PoseidonSponge::new(config());
        for input in inputs {
            sponge.absorb(input);
        }
        sponge.squeeze_field_elements::<Fr>(1)[0]
    }

    #[test]
    fn native_hash_matches_the_library_sponge_at_every_length() {
        for len in 0..=2 * ELEMENTS_PER_SEGMENT {
            let inputs: Vec<Fr> = (0..len).map(|i| -Fr::from(i as u64 * 7919 + 1)).collect();
            assert_eq!(hash(&inputs), library_hash(&inputs), "{len} inputs");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        #[test]
        fn native_hash_matches_the_library_sponge(values in proptest::collection::vec(any::<[u64; 4]>(), 0..40)) {
            let inputs: Vec<Fr> = values
                .iter()
                .map(|limbs| Fr::from_bigint(ark_ff::BigInt(*limbs)).unwrap_or(Fr::from(limbs[0])))
                .collect();
            prop_assert_eq!(hash(&inputs), library_hash(&inputs));
        }

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

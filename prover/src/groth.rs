//! Groth16 over BN254: key generation, key files, proving and verification.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use ark_bn254::{Bn254, Fq, Fq2, Fr, G1Affine, G2Affine};
use ark_ec::AffineRepr;
use ark_ff::{BigInteger, PrimeField};
use ark_groth16::{Groth16, Proof, ProvingKey, VerifyingKey};
use ark_relations::r1cs::{ConstraintSynthesizer, ConstraintSystem};
use ark_serialize::{CanonicalDeserialize, CanonicalSerialize};
use ark_snark::SNARK;
use rand_chacha::{ChaCha20Rng, rand_core::SeedableRng};
use serde::{Deserialize, Serialize};
use sha3::{Digest, Keccak256};

use crate::circuit::{CircuitParams, Opening, PublicInputs, StorageCircuit, challenged_indices};
use crate::error::{Error, Result};
use crate::field::{SEGMENT_BYTES, pack_segment};
use crate::merkle::{MerkleTree, hash_leaf};

/// Seed of the development key generation.
///
/// DEVELOPMENT ONLY: anyone who knows this seed knows the toxic waste (tau, alpha, beta,
/// gamma, delta) and can forge proofs for any statement. Production keys come from a
/// multi-party ceremony (a Powers of Tau phase 1 plus a circuit-specific phase 2 over the
/// production circuit, with contributions from independent parties); as long as one
/// contributor destroys their randomness nobody can forge. See the README.
pub const DEV_SETUP_SEED: [u8; 32] = *b"decloud-prover dev setup seed v1";

/// File names inside a key directory.
const PROVING_KEY_FILE: &str = "proving.key";
const VERIFYING_KEY_FILE: &str = "verifying.key";
const PARAMS_FILE: &str = "params.json";

/// A Groth16 proof in the order the Solidity verifier takes it:
/// `[A.x, A.y, B.x.c1, B.x.c0, B.y.c1, B.y.c0, C.x, C.y]`, each a 32-byte big-endian word
/// (EIP-197 puts the imaginary part of an Fp2 coordinate first).
pub type SolidityProof = [[u8; 32]; 8];

/// How a key directory was produced, stored beside the keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// Circuit shape.
    pub params: CircuitParams,
    /// Origin of the keys; `dev-seeded` keys are insecure by construction.
    pub setup: String,
}

/// A proving key with its verifying key and circuit shape.
#[derive(Debug, Clone)]
pub struct Keys {
    /// Circuit shape the keys belong to.
    pub params: CircuitParams,
    /// Groth16 proving key (contains the verifying key).
    pub pk: ProvingKey<Bn254>,
}

impl Keys {
    /// DEVELOPMENT ONLY key generation from [`DEV_SETUP_SEED`]: deterministic, so the
    /// committed Solidity verifier can be regenerated and compared byte for byte, and
    /// therefore insecure (the seed is public). Never use these keys with real money.
    pub fn dev_setup(params: CircuitParams) -> Result<Self> {
        params.validate()?;
        let mut rng = ChaCha20Rng::from_seed(DEV_SETUP_SEED);
        tracing::warn!(target: "prover::setup", %params, "generating DEVELOPMENT keys from a public seed: not for production");
        let (pk, _) =
            Groth16::<Bn254>::circuit_specific_setup(StorageCircuit::blank(params), &mut rng)?;
        Ok(Self { params, pk })
    }

    /// The verifying key.
    pub fn vk(&self) -> &VerifyingKey<Bn254> {
        &self.pk.vk
    }

    /// Writes `proving.key` (uncompressed, it is large and loads much faster),
    /// `verifying.key` (compressed) and `params.json` into `dir`.
    pub fn save(&self, dir: &Path, setup: &str) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
        write_with(&dir.join(PROVING_KEY_FILE), |w| {
            Ok(self.pk.serialize_uncompressed(w)?)
        })?;
        write_with(&dir.join(VERIFYING_KEY_FILE), |w| {
            Ok(self.pk.vk.serialize_compressed(w)?)
        })?;
        let info = KeyInfo {
            params: self.params,
            setup: setup.to_owned(),
        };
        write_with(&dir.join(PARAMS_FILE), |w| {
            Ok(serde_json::to_writer_pretty(w, &info)?)
        })
    }

    /// Loads keys written by [`Keys::save`]. The proving key is a local, trusted file, so
    /// its points are not re-checked (that would take longer than proving).
    pub fn load(dir: &Path) -> Result<Self> {
        let info = load_info(dir)?;
        let path = dir.join(PROVING_KEY_FILE);
        let file = File::open(&path).map_err(|e| Error::io("open", &path, e))?;
        let pk = ProvingKey::deserialize_uncompressed_unchecked(BufReader::new(file))?;
        Ok(Self {
            params: info.params,
            pk,
        })
    }
}

/// Reads `params.json` of a key directory.
pub fn load_info(dir: &Path) -> Result<KeyInfo> {
    let path = dir.join(PARAMS_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io("read", &path, e))?;
    Ok(serde_json::from_str(&text)?)
}

/// Loads and fully checks the verifying key of a key directory.
pub fn load_verifying_key(dir: &Path) -> Result<(KeyInfo, VerifyingKey<Bn254>)> {
    let info = load_info(dir)?;
    let path = dir.join(VERIFYING_KEY_FILE);
    let file = File::open(&path).map_err(|e| Error::io("open", &path, e))?;
    Ok((
        info,
        VerifyingKey::deserialize_compressed(BufReader::new(file))?,
    ))
}

fn write_with(path: &Path, f: impl FnOnce(&mut BufWriter<File>) -> Result<()>) -> Result<()> {
    let file = File::create(path).map_err(|e| Error::io("create", path, e))?;
    let mut writer = BufWriter::new(file);
    f(&mut writer)?;
    writer.flush().map_err(|e| Error::io("write", path, e))
}

/// Where a prover reads segments from: a node's local store.
pub trait SegmentStore {
    /// The segment at `index`, or `None` if the store does not hold it.
    fn segment(&self, index: u64) -> Option<[u8; SEGMENT_BYTES]>;
}

impl SegmentStore for [[u8; SEGMENT_BYTES]] {
    fn segment(&self, index: u64) -> Option<[u8; SEGMENT_BYTES]> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.get(i).copied())
    }
}

impl SegmentStore for Vec<[u8; SEGMENT_BYTES]> {
    fn segment(&self, index: u64) -> Option<[u8; SEGMENT_BYTES]> {
        self.as_slice().segment(index)
    }
}

impl SegmentStore for std::collections::BTreeMap<u64, [u8; SEGMENT_BYTES]> {
    fn segment(&self, index: u64) -> Option<[u8; SEGMENT_BYTES]> {
        self.get(&index).copied()
    }
}

/// Gathers the witness for a seed: every challenged segment from the store, checked
/// against the tree, with its Merkle path.
pub fn build_openings(
    params: &CircuitParams,
    tree: &MerkleTree,
    store: &(impl SegmentStore + ?Sized),
    seed: Fr,
) -> Result<Vec<Opening>> {
    challenged_indices(params, seed, tree.segment_count())
        .into_iter()
        .map(|index| {
            let segment = store.segment(index).ok_or(Error::MissingSegment(index))?;
            let elements = pack_segment(&segment);
            if hash_leaf(&elements) != tree.leaf(index)? {
                return Err(Error::SegmentMismatch(index));
            }
            Ok(Opening {
                index,
                elements,
                siblings: tree.path(index)?,
            })
        })
        .collect()
}

/// Proves that `store` holds every segment the seed challenges in the committed `tree`.
pub fn prove(
    keys: &Keys,
    tree: &MerkleTree,
    store: &(impl SegmentStore + ?Sized),
    seed: Fr,
) -> Result<Proof<Bn254>> {
    if tree.depth() != keys.params.depth {
        return Err(Error::ParamsMismatch {
            dir: PathBuf::new(),
            found: keys.params.to_string(),
            expected: format!("depth={}", tree.depth()),
        });
    }
    let public = PublicInputs {
        root: tree.root(),
        segment_count: tree.segment_count(),
        seed,
    };
    let openings = build_openings(&keys.params, tree, store, seed)?;
    let circuit = StorageCircuit {
        params: keys.params,
        public,
        openings,
    };
    if cfg!(debug_assertions) {
        // Cheap relative to proving, and turns a silent bad proof into a clear error.
        let cs = ConstraintSystem::<Fr>::new_ref();
        circuit.clone().generate_constraints(cs.clone())?;
        if !cs.is_satisfied()? {
            return Err(Error::Unsatisfied);
        }
    }
    prove_circuit(keys, circuit)
}

/// Proves an arbitrary circuit instance without checking it is satisfied; a proof of an
/// unsatisfied instance simply fails verification. Used for negative test vectors.
pub fn prove_circuit(keys: &Keys, circuit: StorageCircuit) -> Result<Proof<Bn254>> {
    let started = std::time::Instant::now();
    let proof = Groth16::<Bn254>::prove(&keys.pk, circuit, &mut rand::rngs::OsRng)?;
    tracing::debug!(target: "prover::prove", params = %keys.params, elapsed_ms = started.elapsed().as_millis() as u64, "proof generated");
    Ok(proof)
}

/// Verifies a proof; `Err(InvalidProof)` if it does not hold.
pub fn verify(vk: &VerifyingKey<Bn254>, public: &PublicInputs, proof: &Proof<Bn254>) -> Result<()> {
    if Groth16::<Bn254>::verify(vk, &public.to_vec(), proof)? {
        Ok(())
    } else {
        Err(Error::InvalidProof)
    }
}

fn fq_word(value: &Fq) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&value.into_bigint().to_bytes_be());
    out
}

fn fq_from_word(word: &[u8; 32]) -> Result<Fq> {
    let value = Fq::from_be_bytes_mod_order(word);
    if fq_word(&value) != *word {
        return Err(Error::InvalidProof);
    }
    Ok(value)
}

/// Affine coordinates of a G1 point as words; the point at infinity is `(0, 0)`.
pub(crate) fn g1_words(point: &G1Affine) -> [[u8; 32]; 2] {
    match point.xy() {
        Some((x, y)) => [fq_word(&x), fq_word(&y)],
        None => [[0; 32]; 2],
    }
}

/// Affine coordinates of a G2 point as `[x.c1, x.c0, y.c1, y.c0]` (EIP-197 order).
pub(crate) fn g2_words(point: &G2Affine) -> [[u8; 32]; 4] {
    match point.xy() {
        Some((x, y)) => [
            fq_word(&x.c1),
            fq_word(&x.c0),
            fq_word(&y.c1),
            fq_word(&y.c0),
        ],
        None => [[0; 32]; 4],
    }
}

/// A proof in the Solidity verifier's layout.
pub fn proof_to_solidity(proof: &Proof<Bn254>) -> SolidityProof {
    let [ax, ay] = g1_words(&proof.a);
    let [bx1, bx0, by1, by0] = g2_words(&proof.b);
    let [cx, cy] = g1_words(&proof.c);
    [ax, ay, bx1, bx0, by1, by0, cx, cy]
}

/// Parses a proof from the Solidity layout, checking every point is on its curve and in
/// the prime-order subgroup; a malformed proof is `InvalidProof`.
pub fn proof_from_solidity(words: &SolidityProof) -> Result<Proof<Bn254>> {
    let g1 = |x: &[u8; 32], y: &[u8; 32]| -> Result<G1Affine> {
        let point = G1Affine::new_unchecked(fq_from_word(x)?, fq_from_word(y)?);
        if !point.is_on_curve() || !point.is_in_correct_subgroup_assuming_on_curve() {
            return Err(Error::InvalidProof);
        }
        Ok(point)
    };
    let x = Fq2::new(fq_from_word(&words[3])?, fq_from_word(&words[2])?);
    let y = Fq2::new(fq_from_word(&words[5])?, fq_from_word(&words[4])?);
    let b = G2Affine::new_unchecked(x, y);
    if !b.is_on_curve() || !b.is_in_correct_subgroup_assuming_on_curve() {
        return Err(Error::InvalidProof);
    }
    Ok(Proof {
        a: g1(&words[0], &words[1])?,
        b,
        c: g1(&words[6], &words[7])?,
    })
}

/// The seed of one epoch of one replica of a deal, exactly as `StorageMarket` computes
/// it: `uint256(keccak256(abi.encode(randomness, dealId, replica, epoch))) mod r`, where
/// `randomness` is the recorded hash of the epoch's start block. Binding deal, replica
/// and epoch makes a proof for one epoch useless for any other.
pub fn epoch_seed(randomness: [u8; 32], deal_id: u64, replica: u64, epoch: u64) -> Fr {
    let mut hasher = Keccak256::new();
    hasher.update(randomness);
    for value in [deal_id, replica, epoch] {
        let mut word = [0u8; 32];
        word[24..].copy_from_slice(&value.to_be_bytes());
        hasher.update(word);
    }
    Fr::from_be_bytes_mod_order(&hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::field::split_segments;

    const SMALL: CircuitParams = CircuitParams {
        depth: 3,
        challenges: 2,
    };

    #[test]
    fn epoch_seed_matches_abi_encoding() {
        // `cast keccak $(cast abi-encode "f(bytes32,uint256,uint256,uint256)" 0x5e…5e 1 0 1)`, mod r.
        let seed = epoch_seed([0x5e; 32], 1, 0, 1);
        assert_eq!(
            crate::field::fr_to_hex(&seed),
            "0x0939aaa04ea2e1152edd345382818be0d28cd211bda6f4a400222c0eb46e8d39"
        );
        assert_ne!(seed, epoch_seed([0x5e; 32], 1, 0, 2));
        assert_ne!(seed, epoch_seed([0x5e; 32], 1, 1, 1));
        assert_ne!(seed, epoch_seed([0x5e; 32], 2, 0, 1));
    }

    #[test]
    fn prove_verify_and_roundtrip_keys() {
        let keys = Keys::dev_setup(SMALL).unwrap();
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 253) as u8).collect();
        let tree = MerkleTree::from_data(&data, SMALL.depth).unwrap();
        let segments = split_segments(&data);
        let seed = Fr::from(77u64);
        let proof = prove(&keys, &tree, &segments, seed).unwrap();
        let public = PublicInputs {
            root: tree.root(),
            segment_count: tree.segment_count(),
            seed,
        };
        verify(keys.vk(), &public, &proof).unwrap();

        let parsed = proof_from_solidity(&proof_to_solidity(&proof)).unwrap();
        assert_eq!(parsed, proof);

        let dir = tempfile::tempdir().unwrap();
        keys.save(dir.path(), "dev-seeded").unwrap();
        let loaded = Keys::load(dir.path()).unwrap();
        assert_eq!(loaded.pk, keys.pk);
        let (info, vk) = load_verifying_key(dir.path()).unwrap();
        assert_eq!(info.params, SMALL);
        assert_eq!(&vk, keys.vk());
        // Determinism of the dev setup: the same seed gives the same verifying key.
        assert_eq!(Keys::dev_setup(SMALL).unwrap().vk(), keys.vk());
    }

    #[test]
    fn malformed_solidity_proofs_are_rejected() {
        let mut words: SolidityProof = [[0u8; 32]; 8];
        words[0][31] = 1;
        words[1][31] = 3; // (1, 3) is not on y^2 = x^3 + 3
        assert!(matches!(
            proof_from_solidity(&words),
            Err(Error::InvalidProof)
        ));
        let mut words: SolidityProof = [[0xff; 32]; 8];
        words[0] = [0xff; 32];
        assert!(matches!(
            proof_from_solidity(&words),
            Err(Error::InvalidProof)
        ));
    }
}

//! How a file becomes the replicas that storage nodes keep and prove, all on the client.
//!
//! - **Keys.** The master key is HKDF-SHA256 over the wallet's EIP-191 signature of
//!   [`key_message`] (RFC 6979 signatures are deterministic, so the same wallet re-derives the
//!   same key anywhere and there is nothing to back up). Each file has a random 32-byte
//!   [`FileId`]; its [`FileKey`] and its [`RepairSecret`] are HKDF outputs of the master key
//!   salted with the file id.
//! - **Chunks.** The plaintext is cut into chunks of [`CHUNK_PLAINTEXT`] bytes (the last one
//!   shorter; an empty file is one empty chunk). Chunk `i` is sealed with AES-256-GCM under the
//!   file key, nonce `0^8 || i` and associated data `file id || i` (`i` as a big-endian u32), so a
//!   stored chunk (ciphertext and 16-byte tag) is exactly [`CHUNK_STORED`] = 1 MiB, a whole number
//!   of the prover's 1 KiB segments, and chunks cannot be swapped between positions or files.
//! - **Replicas.** Replica `r` stores each sealed chunk XOR a ChaCha20 keystream under the mask
//!   key `HKDF(R, info = "replica mask" || r)` with nonce `0^8 || i`. Replicas are therefore
//!   distinct byte strings with distinct commitments (one stored copy cannot answer another
//!   replica's challenges), and whoever holds the repair secret `R` can turn one replica into
//!   another ([`RepairSecret::remask`]) while seeing only AES-GCM ciphertext, never plaintext.
//! - **Commitments.** A replica's committed data is its stored chunks concatenated in index
//!   order; [`ReplicaCommitter`] computes `decloud-prover`'s Poseidon Merkle root over it, chunk
//!   by chunk, with the StorageMarket's circuit depth.

use std::fmt;

use aes_gcm::{AeadInOut as _, Aes256Gcm, KeyInit as _};
use alloy::{
    primitives::{Address, B256, U256},
    signers::{Signer, SignerSync},
};
use chacha20::{
    ChaCha20,
    cipher::{KeyIvInit as _, StreamCipher as _},
};
use decloud_prover::{Fr, MerkleTree, SEGMENT_BYTES, fr_to_be_bytes, hash_segments};
use hkdf::Hkdf;
use sha2::Sha256;

/// Bytes of the AES-GCM authentication tag appended to every chunk.
pub const TAG_BYTES: usize = 16;
/// Bytes of one stored chunk (sealed chunk, masked): 1 MiB, 1024 proof segments.
pub const CHUNK_STORED: usize = 1 << 20;
/// Plaintext bytes per chunk, so that the sealed chunk is exactly [`CHUNK_STORED`].
pub const CHUNK_PLAINTEXT: usize = CHUNK_STORED - TAG_BYTES;
/// Fixed first line of the text the wallet signs to derive its storage master key.
pub const KEY_DOMAIN: &str = "DeCloud storage key v1";

const MASTER_INFO: &[u8] = b"decloud storage master";
const FILE_KEY_INFO: &[u8] = b"file key";
const REPAIR_INFO: &[u8] = b"repair secret";
const MASK_INFO: &[u8] = b"replica mask";

/// What can go wrong encoding or decoding a file.
#[derive(Debug, thiserror::Error)]
pub enum EncodingError {
    /// A chunk did not decrypt: the key is not the one that sealed it, or the bytes changed.
    #[error("chunk {index} does not decrypt: wrong key (another wallet or chain) or damaged data")]
    Decrypt {
        /// Chunk index.
        index: u32,
    },
    /// A stored chunk is too short to hold an authentication tag, or longer than a chunk.
    #[error("chunk {index} has {bytes} bytes; a stored chunk has {TAG_BYTES} to {CHUNK_STORED}")]
    BadChunkLength {
        /// Chunk index.
        index: u32,
        /// Its length.
        bytes: usize,
    },
    /// A file has more chunks than a u32 index can number.
    #[error("a file of {bytes} bytes has too many chunks")]
    TooLarge {
        /// The file's size.
        bytes: u64,
    },
    /// A chunk other than the last is not exactly [`CHUNK_STORED`] bytes, so segments would
    /// straddle chunks.
    #[error(
        "chunk {index} has {bytes} bytes but only the last chunk may be shorter than {CHUNK_STORED}"
    )]
    UnalignedChunk {
        /// Chunk index.
        index: u32,
        /// Its length.
        bytes: usize,
    },
    /// The commitment could not be computed (no data, or more segments than the circuit holds).
    #[error("commitment: {0}")]
    Commitment(#[from] decloud_prover::Error),
}

/// The text a wallet signs (EIP-191) to derive its storage master key on chain `chain_id`.
pub fn key_message(chain_id: u64, owner: Address) -> String {
    format!(
        "{KEY_DOMAIN}\nchain: {chain_id}\nowner: {}",
        owner.to_checksum(None)
    )
}

fn expand(ikm: &[u8], salt: Option<&[u8]>, info: &[&[u8]]) -> [u8; 32] {
    let mut out = [0u8; 32];
    Hkdf::<Sha256>::new(salt, ikm)
        .expand_multi_info(info, &mut out)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    out
}

macro_rules! secret {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq)]
        pub struct $name([u8; 32]);

        impl $name {
            /// The key from its 32 bytes.
            pub const fn from_bytes(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }

            /// The key's 32 bytes.
            pub const fn to_bytes(&self) -> [u8; 32] {
                self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "(..)"))
            }
        }
    };
}

secret!(
    /// A wallet's storage master key: every file key and repair secret derives from it.
    MasterKey
);
secret!(
    /// The AES-256-GCM key of one file.
    FileKey
);
secret!(
    /// The secret that masks and unmasks a file's replicas; the owner may hand it to a repairer,
    /// which can then rebuild a replica from another without being able to decrypt either.
    RepairSecret
);

/// A file's random 32-byte id, chosen at `put`; with the master key it names the file's keys.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(pub B256);

impl FileId {
    /// A fresh random id.
    pub fn random() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)?;
        Ok(Self(B256::from(bytes)))
    }
}

impl fmt::Debug for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FileId({})", self.0)
    }
}

impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl MasterKey {
    /// The master key from the wallet's 65-byte signature of [`key_message`].
    pub fn from_signature(signature: &[u8; 65]) -> Self {
        Self(expand(signature, None, &[MASTER_INFO]))
    }

    /// Signs [`key_message`] with `signer` and derives the master key.
    pub fn derive(
        signer: &(impl SignerSync + Signer),
        chain_id: u64,
    ) -> Result<Self, alloy::signers::Error> {
        let owner = signer.address();
        let signature = signer.sign_message_sync(key_message(chain_id, owner).as_bytes())?;
        Ok(Self::from_signature(&signature.as_bytes()))
    }

    /// The AES-256-GCM key of file `file`.
    pub fn file_key(&self, file: &FileId) -> FileKey {
        FileKey(expand(&self.0, Some(file.0.as_slice()), &[FILE_KEY_INFO]))
    }

    /// The repair secret of file `file`.
    pub fn repair_secret(&self, file: &FileId) -> RepairSecret {
        RepairSecret(expand(&self.0, Some(file.0.as_slice()), &[REPAIR_INFO]))
    }
}

/// The 12-byte nonce of chunk `index`: eight zero bytes, then the index big-endian.
fn chunk_nonce(index: u32) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    nonce[8..].copy_from_slice(&index.to_be_bytes());
    nonce
}

fn chunk_aad(file: &FileId, index: u32) -> [u8; 36] {
    let mut aad = [0u8; 36];
    aad[..32].copy_from_slice(file.0.as_slice());
    aad[32..].copy_from_slice(&index.to_be_bytes());
    aad
}

impl FileKey {
    /// Seals plaintext chunk `index` of file `file`: ciphertext followed by the 16-byte tag.
    pub fn seal(&self, file: &FileId, index: u32, plaintext: &[u8]) -> Vec<u8> {
        let mut buffer = Vec::with_capacity(plaintext.len() + TAG_BYTES);
        buffer.extend_from_slice(plaintext);
        let cipher = Aes256Gcm::new(&self.0.into());
        cipher
            .encrypt_in_place(
                &chunk_nonce(index).into(),
                &chunk_aad(file, index),
                &mut buffer,
            )
            .expect("a chunk is far below AES-GCM's length limit and the buffer grows");
        buffer
    }

    /// Opens sealed chunk `index` of file `file`, checking its tag.
    pub fn open(
        &self,
        file: &FileId,
        index: u32,
        sealed: Vec<u8>,
    ) -> Result<Vec<u8>, EncodingError> {
        if sealed.len() < TAG_BYTES || sealed.len() > CHUNK_STORED {
            return Err(EncodingError::BadChunkLength {
                index,
                bytes: sealed.len(),
            });
        }
        let mut buffer = sealed;
        Aes256Gcm::new(&self.0.into())
            .decrypt_in_place(
                &chunk_nonce(index).into(),
                &chunk_aad(file, index),
                &mut buffer,
            )
            .map_err(|_| EncodingError::Decrypt { index })?;
        Ok(buffer)
    }
}

/// The ChaCha20 key that masks one replica.
#[derive(Clone, PartialEq, Eq)]
pub struct MaskKey([u8; 32]);

impl fmt::Debug for MaskKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MaskKey(..)")
    }
}

impl MaskKey {
    /// XORs chunk `index` with this replica's keystream: masks a sealed chunk, or unmasks a
    /// stored one (the operation is its own inverse).
    pub fn apply(&self, index: u32, data: &mut [u8]) {
        let mut cipher = ChaCha20::new(&self.0.into(), &chunk_nonce(index).into());
        cipher.apply_keystream(data);
    }
}

impl RepairSecret {
    /// The mask key of replica `replica`.
    pub fn mask_key(&self, replica: u32) -> MaskKey {
        MaskKey(expand(&self.0, None, &[MASK_INFO, &replica.to_be_bytes()]))
    }

    /// Turns stored chunk `index` of replica `from` into the same chunk of replica `to`, in
    /// place, without decrypting it.
    pub fn remask(&self, from: u32, to: u32, index: u32, data: &mut [u8]) {
        self.mask_key(from).apply(index, data);
        self.mask_key(to).apply(index, data);
    }
}

/// Chunks of a file of `bytes` bytes (an empty file is one empty chunk).
pub fn chunk_count(bytes: u64) -> Result<u32, EncodingError> {
    let chunks = bytes.div_ceil(CHUNK_PLAINTEXT as u64).max(1);
    u32::try_from(chunks).map_err(|_| EncodingError::TooLarge { bytes })
}

/// Plaintext bytes of chunk `index` of a file of `bytes` bytes.
pub fn plaintext_len(bytes: u64, index: u32) -> usize {
    let start = u64::from(index) * CHUNK_PLAINTEXT as u64;
    bytes.saturating_sub(start).min(CHUNK_PLAINTEXT as u64) as usize
}

/// Bytes a replica of a file of `bytes` bytes stores (every chunk carries a tag).
pub fn stored_len(bytes: u64) -> Result<u64, EncodingError> {
    Ok(bytes + u64::from(chunk_count(bytes)?) * TAG_BYTES as u64)
}

/// Proof segments of a replica of a file of `bytes` bytes: the deal's `segmentCount`.
pub fn segment_count(bytes: u64) -> Result<u64, EncodingError> {
    Ok(stored_len(bytes)?.div_ceil(SEGMENT_BYTES as u64))
}

/// The largest file whose replica fits in `max_segments` proof segments: every whole chunk
/// that fits, plus a last partial chunk in what is left beyond its tag. A deal's tree of depth
/// `d` proves `1 << d` segments; at the production depth of 20 that is 1 GiB of stored bytes,
/// so 16 KiB less than 1 GiB of file, since each of the 1,024 chunks carries a tag.
pub fn max_file_bytes(max_segments: u64) -> u64 {
    let capacity = max_segments * SEGMENT_BYTES as u64;
    let whole = capacity / CHUNK_STORED as u64;
    let rest = (capacity % CHUNK_STORED as u64).saturating_sub(TAG_BYTES as u64);
    whole * CHUNK_PLAINTEXT as u64 + rest
}

/// Everything needed to encode and decode one file's chunks for its owner.
#[derive(Debug, Clone)]
pub struct FileCodec {
    file: FileId,
    key: FileKey,
    repair: RepairSecret,
}

impl FileCodec {
    /// The codec of file `file` under `master`.
    pub fn new(master: &MasterKey, file: FileId) -> Self {
        Self {
            file,
            key: master.file_key(&file),
            repair: master.repair_secret(&file),
        }
    }

    /// The file's id.
    pub fn file(&self) -> FileId {
        self.file
    }

    /// The file's repair secret.
    pub fn repair_secret(&self) -> &RepairSecret {
        &self.repair
    }

    /// Seals plaintext chunk `index` (not yet masked for any replica).
    pub fn seal(&self, index: u32, plaintext: &[u8]) -> Vec<u8> {
        self.key.seal(&self.file, index, plaintext)
    }

    /// Replica `replica`'s stored chunk `index` from the sealed chunk.
    pub fn mask(&self, replica: u32, index: u32, sealed: &[u8]) -> Vec<u8> {
        let mut data = sealed.to_vec();
        self.repair.mask_key(replica).apply(index, &mut data);
        data
    }

    /// The plaintext of replica `replica`'s stored chunk `index`.
    pub fn decode(
        &self,
        replica: u32,
        index: u32,
        stored: Vec<u8>,
    ) -> Result<Vec<u8>, EncodingError> {
        let mut data = stored;
        self.repair.mask_key(replica).apply(index, &mut data);
        self.key.open(&self.file, index, data)
    }
}

/// Computes a replica's commitment (the Poseidon Merkle root `StorageMarket` stores) from its
/// stored chunks, given in index order.
#[derive(Debug, Clone)]
pub struct ReplicaCommitter {
    depth: usize,
    leaves: Vec<Fr>,
    chunks: u32,
    last_short: bool,
}

/// A replica's commitment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commitment {
    /// The Merkle root, below the BN254 scalar field.
    pub root: U256,
    /// Its 1 KiB segments.
    pub segment_count: u64,
}

impl ReplicaCommitter {
    /// A committer for a tree of depth `depth` (the market's `maxSegmentCount` is `2^depth`).
    pub fn new(depth: usize) -> Self {
        Self {
            depth,
            leaves: Vec::new(),
            chunks: 0,
            last_short: false,
        }
    }

    /// Adds the next stored chunk. Every chunk but the last must be [`CHUNK_STORED`] bytes.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), EncodingError> {
        let leaves = leaf_hashes(chunk);
        self.push_leaves(chunk.len(), leaves)
    }

    /// Adds the next stored chunk of `bytes` bytes by its leaf hashes (from [`leaf_hashes`],
    /// which callers may compute on other threads).
    pub fn push_leaves(&mut self, bytes: usize, leaves: Vec<Fr>) -> Result<(), EncodingError> {
        if self.last_short {
            return Err(EncodingError::UnalignedChunk {
                index: self.chunks - 1,
                bytes: self.leaves.len() % (CHUNK_STORED / SEGMENT_BYTES) * SEGMENT_BYTES,
            });
        }
        if bytes == 0 || bytes > CHUNK_STORED {
            return Err(EncodingError::BadChunkLength {
                index: self.chunks,
                bytes,
            });
        }
        self.last_short = bytes < CHUNK_STORED;
        self.leaves.extend(leaves);
        self.chunks += 1;
        Ok(())
    }

    /// The root and segment count over every chunk pushed.
    pub fn finish(self) -> Result<Commitment, EncodingError> {
        let tree = MerkleTree::from_leaves(self.leaves, self.depth)?;
        Ok(Commitment {
            root: U256::from_be_bytes(fr_to_be_bytes(&tree.root())),
            segment_count: tree.segment_count(),
        })
    }
}

/// The Merkle leaves of one stored chunk: the Poseidon hash of each 1 KiB segment (the last one
/// zero-padded).
pub fn leaf_hashes(chunk: &[u8]) -> Vec<Fr> {
    hash_segments(chunk)
}

/// Commitment to a whole replica held in memory (tests and small files).
pub fn commit(data: &[u8], depth: usize) -> Result<Commitment, EncodingError> {
    let mut committer = ReplicaCommitter::new(depth);
    if data.is_empty() {
        committer.push(&[])?;
    }
    for chunk in data.chunks(CHUNK_STORED) {
        committer.push(chunk)?;
    }
    committer.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::signers::local::PrivateKeySigner;
    use proptest::prelude::*;

    #[test]
    fn the_largest_file_fits_and_one_byte_more_does_not() {
        for depth in [4, 8, 10, 11, 16, 20] {
            let segments = 1u64 << depth;
            let max = max_file_bytes(segments);
            assert!(segment_count(max).unwrap() <= segments, "depth {depth}");
            assert!(segment_count(max + 1).unwrap() > segments, "depth {depth}");
        }
        assert_eq!(max_file_bytes(1 << 20), (1 << 30) - 1024 * TAG_BYTES as u64);
    }

    fn master(seed: u8) -> MasterKey {
        MasterKey::from_bytes([seed; 32])
    }

    /// Encodes `plaintext` as replica `replica` (all chunks concatenated).
    fn encode(codec: &FileCodec, replica: u32, plaintext: &[u8]) -> Vec<Vec<u8>> {
        let count = chunk_count(plaintext.len() as u64).unwrap();
        (0..count)
            .map(|i| {
                let start = i as usize * CHUNK_PLAINTEXT;
                let len = plaintext_len(plaintext.len() as u64, i);
                codec.mask(replica, i, &codec.seal(i, &plaintext[start..start + len]))
            })
            .collect()
    }

    fn decode(
        codec: &FileCodec,
        replica: u32,
        chunks: &[Vec<u8>],
    ) -> Result<Vec<u8>, EncodingError> {
        let mut out = Vec::new();
        for (i, chunk) in chunks.iter().enumerate() {
            out.extend(codec.decode(replica, i as u32, chunk.clone())?);
        }
        Ok(out)
    }

    #[test]
    fn master_key_is_deterministic_per_wallet_and_chain() {
        let signer = PrivateKeySigner::from_bytes(&B256::repeat_byte(7)).unwrap();
        let a = MasterKey::derive(&signer, 31337).unwrap();
        assert_eq!(a, MasterKey::derive(&signer, 31337).unwrap());
        assert_ne!(a, MasterKey::derive(&signer, 137).unwrap());
        let other = PrivateKeySigner::from_bytes(&B256::repeat_byte(8)).unwrap();
        assert_ne!(a, MasterKey::derive(&other, 31337).unwrap());
        assert_eq!(format!("{a:?}"), "MasterKey(..)");
        let message = key_message(31337, signer.address());
        assert!(message.starts_with("DeCloud storage key v1\nchain: 31337\nowner: 0x"));
        assert!(message.ends_with(&signer.address().to_checksum(None)));
    }

    #[test]
    fn file_keys_and_repair_secrets_differ_per_file_and_from_each_other() {
        let m = master(1);
        let (f1, f2) = (FileId(B256::repeat_byte(1)), FileId(B256::repeat_byte(2)));
        assert_ne!(m.file_key(&f1).to_bytes(), m.file_key(&f2).to_bytes());
        assert_ne!(m.file_key(&f1).to_bytes(), m.repair_secret(&f1).to_bytes());
        assert_ne!(
            m.repair_secret(&f1).mask_key(0),
            m.repair_secret(&f1).mask_key(1)
        );
    }

    #[test]
    fn chunk_sizes_keep_stored_chunks_aligned_to_segments() {
        assert_eq!(CHUNK_STORED % SEGMENT_BYTES, 0);
        assert_eq!(chunk_count(0).unwrap(), 1);
        assert_eq!(stored_len(0).unwrap(), 16);
        assert_eq!(segment_count(0).unwrap(), 1);
        assert_eq!(chunk_count(CHUNK_PLAINTEXT as u64).unwrap(), 1);
        assert_eq!(chunk_count(CHUNK_PLAINTEXT as u64 + 1).unwrap(), 2);
        assert_eq!(stored_len(CHUNK_PLAINTEXT as u64).unwrap(), 1 << 20);
        // 100 MiB: 101 chunks, 104,859,216 stored bytes, 102,402 segments (the last one partial).
        assert_eq!(segment_count(100 << 20).unwrap(), 102_402);
        assert_eq!(plaintext_len(CHUNK_PLAINTEXT as u64 + 5, 1), 5);
        assert_eq!(plaintext_len(3, 0), 3);
    }

    #[test]
    fn a_sealed_chunk_is_bound_to_its_key_file_and_position() {
        let m = master(1);
        let file = FileId(B256::repeat_byte(3));
        let key = m.file_key(&file);
        let sealed = key.seal(&file, 4, b"hello storage");
        assert_eq!(sealed.len(), 13 + TAG_BYTES);
        assert_eq!(
            key.open(&file, 4, sealed.clone()).unwrap(),
            b"hello storage"
        );
        // Another position, another file, another key, one flipped bit: refused.
        assert!(matches!(
            key.open(&file, 5, sealed.clone()),
            Err(EncodingError::Decrypt { index: 5 })
        ));
        let other = FileId(B256::repeat_byte(4));
        assert!(key.open(&other, 4, sealed.clone()).is_err());
        assert!(
            master(2)
                .file_key(&file)
                .open(&file, 4, sealed.clone())
                .is_err()
        );
        let mut flipped = sealed;
        flipped[0] ^= 1;
        assert!(key.open(&file, 4, flipped).is_err());
        assert!(matches!(
            key.open(&file, 4, vec![0; 3]),
            Err(EncodingError::BadChunkLength { bytes: 3, .. })
        ));
    }

    #[test]
    fn a_multi_chunk_file_round_trips_and_its_replicas_have_distinct_roots() {
        let codec = FileCodec::new(&master(9), FileId(B256::repeat_byte(5)));
        let plaintext: Vec<u8> = (0..CHUNK_PLAINTEXT + 3000)
            .map(|i| (i % 251) as u8)
            .collect();
        let replicas: Vec<Vec<Vec<u8>>> = (0..3).map(|r| encode(&codec, r, &plaintext)).collect();
        assert_eq!(replicas[0][0].len(), CHUNK_STORED);
        assert_eq!(replicas[0][1].len(), 3000 + TAG_BYTES);
        let mut roots = Vec::new();
        for (r, replica) in replicas.iter().enumerate() {
            assert_eq!(decode(&codec, r as u32, replica).unwrap(), plaintext);
            let flat = replica.concat();
            let commitment = commit(&flat, 12).unwrap();
            assert_eq!(
                commitment.segment_count,
                segment_count(plaintext.len() as u64).unwrap()
            );
            // Streaming commitment equals the prover's own tree over the whole byte string.
            let tree = MerkleTree::from_data(&flat, 12).unwrap();
            assert_eq!(
                commitment.root,
                U256::from_be_bytes(fr_to_be_bytes(&tree.root()))
            );
            roots.push(commitment.root);
        }
        assert_ne!(roots[0], roots[1]);
        assert_ne!(roots[1], roots[2]);
        assert_ne!(roots[0], roots[2]);
        // Decoding with another replica's mask fails.
        assert!(decode(&codec, 1, &replicas[0]).is_err());
    }

    #[test]
    fn the_committer_refuses_misaligned_chunks_and_files_over_the_circuit() {
        let mut c = ReplicaCommitter::new(10);
        c.push(&[1; 100]).unwrap();
        assert!(matches!(
            c.push(&[1; 100]),
            Err(EncodingError::UnalignedChunk { index: 0, .. })
        ));
        // Depth 10 holds 1024 segments = one stored chunk; two chunks do not fit.
        let mut c = ReplicaCommitter::new(10);
        c.push(&vec![0; CHUNK_STORED]).unwrap();
        c.push(&[0; 1]).unwrap();
        assert!(matches!(
            c.finish(),
            Err(EncodingError::Commitment(
                decloud_prover::Error::TooManySegments { .. }
            ))
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn chunks_round_trip_and_a_wrong_key_fails(
            data in proptest::collection::vec(any::<u8>(), 0..4096),
            index in any::<u32>(),
            seed in 1u8..255,
        ) {
            let file = FileId(B256::repeat_byte(seed));
            let codec = FileCodec::new(&master(seed), file);
            let stored = codec.mask(2, index, &codec.seal(index, &data));
            prop_assert_eq!(stored.len(), data.len() + TAG_BYTES);
            prop_assert_eq!(codec.decode(2, index, stored.clone()).unwrap(), data);
            let wrong = FileCodec::new(&master(seed.wrapping_add(1)), file);
            let is_decrypt_error = matches!(
                wrong.decode(2, index, stored),
                Err(EncodingError::Decrypt { .. })
            );
            prop_assert!(is_decrypt_error);
        }

        #[test]
        fn replicas_differ_and_remasking_turns_one_into_another(
            data in proptest::collection::vec(any::<u8>(), 1..4096),
            index in any::<u32>(),
            a in 0u32..16,
            b in 0u32..16,
        ) {
            let codec = FileCodec::new(&master(3), FileId(B256::repeat_byte(6)));
            let sealed = codec.seal(index, &data);
            let replica_a = codec.mask(a, index, &sealed);
            let replica_b = codec.mask(b, index, &sealed);
            if a != b {
                prop_assert_ne!(&replica_a, &replica_b);
                prop_assert_ne!(&replica_a, &sealed);
            }
            // unmask(a) then mask(b) == replica b, through the repair secret alone.
            let mut moved = replica_a.clone();
            codec.repair_secret().remask(a, b, index, &mut moved);
            prop_assert_eq!(&moved, &replica_b);
            let mut unmasked = replica_a;
            codec.repair_secret().mask_key(a).apply(index, &mut unmasked);
            prop_assert_eq!(codec.mask(b, index, &unmasked), replica_b);
        }
    }
}

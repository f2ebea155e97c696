//! Merkle trees whose proofs OpenZeppelin's `MerkleProof.verify` accepts, laid out exactly as
//! OpenZeppelin's `StandardMerkleTree` (JavaScript) lays them out, so roots agree across both.
//!
//! - Inner nodes hash their children as a sorted pair: `keccak256(min(a, b) ‖ max(a, b))`.
//! - Leaves are double-hashed: `keccak256(bytes.concat(keccak256(abi.encode(values…))))`, which
//!   keeps a 64-byte leaf preimage from being mistaken for an inner node.
//! - Leaves are sorted by hash; the tree is an array of `2n − 1` nodes with the leaves at the end in
//!   reverse order, node `i` having children `2i + 1` and `2i + 2`.
//!
//! ```
//! use alloy::primitives::{Address, U256};
//! use decloud_sdk::merkle::{MerkleTree, leaf_hash_of};
//!
//! let leaves = [(Address::repeat_byte(1), U256::from(5)), (Address::repeat_byte(2), U256::from(7))]
//!     .iter()
//!     .map(leaf_hash_of)
//!     .collect::<Vec<_>>();
//! let tree = MerkleTree::new(leaves.clone()).unwrap();
//! let proof = tree.proof(&leaves[0]).unwrap();
//! assert!(MerkleTree::verify(tree.root(), leaves[0], &proof));
//! ```

use alloy::{
    primitives::{B256, keccak256},
    sol_types::{SolType, SolValue, abi::TokenSeq},
};

/// Errors building a Merkle tree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MerkleError {
    /// A tree needs at least one leaf.
    #[error("a merkle tree needs at least one leaf")]
    Empty,
}

/// Hashes two nodes as a sorted pair, as `MerkleProof` does.
pub fn hash_pair(a: B256, b: B256) -> B256 {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let mut buf = [0u8; 64];
    buf[..32].copy_from_slice(lo.as_slice());
    buf[32..].copy_from_slice(hi.as_slice());
    keccak256(buf)
}

/// The leaf hash of already ABI-encoded values: `keccak256(keccak256(encoded))`.
pub fn leaf_hash(abi_encoded: &[u8]) -> B256 {
    keccak256(keccak256(abi_encoded))
}

/// The leaf hash of `values` as `StandardMerkleTree` computes it: the values are ABI-encoded as
/// function parameters (`abi.encode(a, b, …)`), then double-hashed. `values` is a tuple, `(x,)` for
/// a single value.
pub fn leaf_hash_of<T>(values: &T) -> B256
where
    T: SolValue,
    for<'a> <T::SolType as SolType>::Token<'a>: TokenSeq<'a>,
{
    leaf_hash(&values.abi_encode_params())
}

/// A Merkle tree over leaf hashes (see the module docs for the layout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerkleTree {
    /// `2n − 1` nodes; the root at 0, the sorted leaves at the end in reverse order.
    nodes: Vec<B256>,
    /// The leaves in sorted order.
    leaves: Vec<B256>,
}

impl MerkleTree {
    /// Builds a tree over leaf hashes (e.g. from [`leaf_hash_of`]). The leaves are sorted, as
    /// `StandardMerkleTree` sorts them, so the root does not depend on their order.
    pub fn new(leaves: impl IntoIterator<Item = B256>) -> Result<Self, MerkleError> {
        let mut leaves: Vec<B256> = leaves.into_iter().collect();
        if leaves.is_empty() {
            return Err(MerkleError::Empty);
        }
        leaves.sort_unstable();
        let n = leaves.len();
        let mut nodes = vec![B256::ZERO; 2 * n - 1];
        for (i, leaf) in leaves.iter().enumerate() {
            nodes[2 * n - 2 - i] = *leaf;
        }
        for i in (0..n - 1).rev() {
            nodes[i] = hash_pair(nodes[2 * i + 1], nodes[2 * i + 2]);
        }
        Ok(Self { nodes, leaves })
    }

    /// The root, as anchored on-chain.
    pub fn root(&self) -> B256 {
        self.nodes[0]
    }

    /// How many leaves the tree has.
    pub fn len(&self) -> usize {
        self.leaves.len()
    }

    /// Whether the tree has no leaves (never: [`Self::new`] rejects that).
    pub fn is_empty(&self) -> bool {
        self.leaves.is_empty()
    }

    /// The leaves in the tree's (sorted) order.
    pub fn leaves(&self) -> &[B256] {
        &self.leaves
    }

    /// The inclusion proof of `leaf` (siblings from the leaf up), or `None` when it is not a leaf.
    pub fn proof(&self, leaf: &B256) -> Option<Vec<B256>> {
        let position = self.leaves.binary_search(leaf).ok()?;
        let mut index = self.nodes.len() - 1 - position;
        let mut proof = Vec::new();
        while index > 0 {
            // Odd nodes are left children, their sibling is to the right; even nodes the reverse.
            let sibling = if index % 2 == 1 { index + 1 } else { index - 1 };
            proof.push(self.nodes[sibling]);
            index = (index - 1) / 2;
        }
        Some(proof)
    }

    /// The root that `proof` leads to from `leaf` (`MerkleProof.processProof`).
    pub fn process_proof(leaf: B256, proof: &[B256]) -> B256 {
        proof
            .iter()
            .fold(leaf, |node, sibling| hash_pair(node, *sibling))
    }

    /// Whether `proof` proves `leaf` under `root` (`MerkleProof.verify`).
    pub fn verify(root: B256, leaf: B256, proof: &[B256]) -> bool {
        Self::process_proof(leaf, proof) == root
    }
}

#[cfg(test)]
mod tests {
    use alloy::primitives::{Address, U256, b256};
    use proptest::prelude::*;

    use super::*;

    /// Produced with OpenZeppelin's JavaScript library (`@openzeppelin/merkle-tree` 1.x):
    /// `StandardMerkleTree.of([[0x11…11, 5e18], [0x22…22, 2.5e18], [0x33…33, 42]], ["address", "uint256"])`.
    #[test]
    fn matches_openzeppelin_standard_merkle_tree() {
        let values = [
            (
                Address::repeat_byte(0x11),
                U256::from(5_000_000_000_000_000_000u128),
            ),
            (
                Address::repeat_byte(0x22),
                U256::from(2_500_000_000_000_000_000u128),
            ),
            (Address::repeat_byte(0x33), U256::from(42)),
        ];
        let leaves: Vec<B256> = values.iter().map(leaf_hash_of).collect();
        assert_eq!(
            leaves[0],
            b256!("eb02c421cfa48976e66dfb29120745909ea3a0f843456c263cf8f1253483e283")
        );
        assert_eq!(
            leaves[1],
            b256!("b92c48e9d7abe27fd8dfd6b5dfdbfb1c9a463f80c712b66f3a5180a090cccafc")
        );
        assert_eq!(
            leaves[2],
            b256!("e17e2469047adc6db21d0ec305f3d9cb275607495e7ef0363a7609b1e77073ae")
        );

        let tree = MerkleTree::new(leaves.clone()).unwrap();
        assert_eq!(
            tree.root(),
            b256!("19b2b7d9c6dcf88f321aaa6e245dc70f8548381431f26d55858578731d3a2738")
        );
        assert_eq!(
            tree.proof(&leaves[0]).unwrap(),
            vec![b256!(
                "ad0c16c7b4445238bf1be722fb386543641d1864756c0de177f3cc92f635af12"
            )]
        );
        assert_eq!(tree.proof(&leaves[1]).unwrap(), vec![leaves[2], leaves[0]]);
        assert_eq!(tree.proof(&leaves[2]).unwrap(), vec![leaves[1], leaves[0]]);
    }

    #[test]
    fn single_leaf_is_its_own_root_and_empty_is_rejected() {
        let leaf = leaf_hash(b"one");
        let tree = MerkleTree::new([leaf]).unwrap();
        assert_eq!(tree.root(), leaf);
        assert_eq!(tree.proof(&leaf).unwrap(), Vec::<B256>::new());
        assert!(MerkleTree::verify(tree.root(), leaf, &[]));
        assert_eq!(MerkleTree::new([]), Err(MerkleError::Empty));
        assert_eq!(tree.proof(&leaf_hash(b"other")), None);
    }

    #[test]
    fn pair_hash_is_order_independent() {
        let (a, b) = (leaf_hash(b"a"), leaf_hash(b"b"));
        assert_eq!(hash_pair(a, b), hash_pair(b, a));
        let mut concat = a.to_vec();
        concat.extend_from_slice(b.as_slice());
        let sorted = if a < b {
            keccak256(&concat)
        } else {
            keccak256([b.as_slice(), a.as_slice()].concat())
        };
        assert_eq!(hash_pair(a, b), sorted);
    }

    /// An independent definition: recursive over the tree's index layout.
    fn reference_root(sorted: &[B256], index: usize) -> B256 {
        let n = sorted.len();
        if index >= n - 1 {
            return sorted[2 * n - 2 - index];
        }
        hash_pair(
            reference_root(sorted, 2 * index + 1),
            reference_root(sorted, 2 * index + 2),
        )
    }

    proptest! {
        #[test]
        fn every_leaf_proves_and_tampering_fails(
            seeds in prop::collection::vec(any::<u64>(), 1..40),
            flip_byte in 0usize..32,
        ) {
            let leaves: Vec<B256> = seeds.iter().map(|s| leaf_hash_of(&(U256::from(*s),))).collect();
            let tree = MerkleTree::new(leaves.clone()).unwrap();
            prop_assert_eq!(tree.root(), reference_root(tree.leaves(), 0));
            for leaf in &leaves {
                let proof = tree.proof(leaf).unwrap();
                prop_assert!(MerkleTree::verify(tree.root(), *leaf, &proof));
                let mut wrong_leaf = *leaf;
                wrong_leaf.0[flip_byte] ^= 1;
                prop_assert!(!MerkleTree::verify(tree.root(), wrong_leaf, &proof));
                if let Some(first) = proof.first() {
                    let mut tampered = proof.clone();
                    let mut sibling = *first;
                    sibling.0[flip_byte] ^= 0x80;
                    tampered[0] = sibling;
                    prop_assert!(!MerkleTree::verify(tree.root(), *leaf, &tampered));
                }
            }
        }

        #[test]
        fn root_does_not_depend_on_leaf_order(mut seeds in prop::collection::vec(any::<u64>(), 1..20)) {
            let leaves = |s: &[u64]| s.iter().map(|v| leaf_hash_of(&(U256::from(*v),))).collect::<Vec<_>>();
            let root = MerkleTree::new(leaves(&seeds)).unwrap().root();
            seeds.reverse();
            prop_assert_eq!(MerkleTree::new(leaves(&seeds)).unwrap().root(), root);
        }
    }
}

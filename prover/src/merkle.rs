//! Poseidon Merkle tree over segments; its root is the commitment to the data.

use ark_bn254::Fr;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::field::{ELEMENTS_PER_SEGMENT, SEGMENT_BYTES, pack_segment, split_segments};
use crate::poseidon;

/// Deepest tree supported. The production circuit uses [`crate::PRODUCTION_DEPTH`].
pub const MAX_DEPTH: usize = 32;

/// Hash of one leaf: Poseidon over the segment's 34 packed scalars.
pub fn hash_leaf(elements: &[Fr; ELEMENTS_PER_SEGMENT]) -> Fr {
    poseidon::hash(elements)
}

/// Hash of one raw segment.
pub fn hash_segment(segment: &[u8; SEGMENT_BYTES]) -> Fr {
    hash_leaf(&pack_segment(segment))
}

/// Leaf hashes of data split into [`SEGMENT_BYTES`] segments, the last one zero-padded,
/// hashed on every core.
pub fn hash_segments(data: &[u8]) -> Vec<Fr> {
    data.par_chunks(SEGMENT_BYTES)
        .map(|part| {
            let mut segment = [0u8; SEGMENT_BYTES];
            segment[..part.len()].copy_from_slice(part);
            hash_segment(&segment)
        })
        .collect()
}

/// A complete Merkle tree of fixed depth over `segment_count` leaves; leaves past the
/// data are the hash of an all-zero segment, so the tree has exactly `2^depth` leaves.
#[derive(Debug, Clone)]
pub struct MerkleTree {
    depth: usize,
    /// `levels[0]` are the leaves that hold data, `levels[depth]` is `[root]`.
    levels: Vec<Vec<Fr>>,
    /// `empty[l]` is the root of an all-padding subtree of height `l`.
    empty: Vec<Fr>,
}

impl MerkleTree {
    /// Builds the tree over the given data, split into [`SEGMENT_BYTES`] segments.
    pub fn from_data(data: &[u8], depth: usize) -> Result<Self> {
        Self::from_segments(&split_segments(data), depth)
    }

    /// Builds the tree over already split segments.
    pub fn from_segments(segments: &[[u8; SEGMENT_BYTES]], depth: usize) -> Result<Self> {
        let leaves: Vec<Fr> = segments.par_iter().map(hash_segment).collect();
        Self::from_leaves(leaves, depth)
    }

    /// Builds the tree over leaf hashes.
    pub fn from_leaves(leaves: Vec<Fr>, depth: usize) -> Result<Self> {
        if depth == 0 || depth > MAX_DEPTH {
            return Err(Error::InvalidDepth(depth));
        }
        if leaves.is_empty() {
            return Err(Error::EmptyData);
        }
        let max = 1u64 << depth;
        if leaves.len() as u64 > max {
            return Err(Error::TooManySegments {
                segments: leaves.len() as u64,
                depth,
                max,
            });
        }
        let mut empty = vec![hash_segment(&[0u8; SEGMENT_BYTES])];
        for level in 0..depth {
            empty.push(poseidon::hash_pair(empty[level], empty[level]));
        }
        let mut levels = vec![leaves];
        for level in 0..depth {
            let below = &levels[level];
            let above: Vec<Fr> = below
                .par_chunks(2)
                .map(|pair| {
                    poseidon::hash_pair(pair[0], pair.get(1).copied().unwrap_or(empty[level]))
                })
                .collect();
            levels.push(above);
        }
        Ok(Self {
            depth,
            levels,
            empty,
        })
    }

    /// The commitment.
    pub fn root(&self) -> Fr {
        self.levels[self.depth][0]
    }

    /// Tree depth.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Number of data segments (leaves that are not padding).
    pub fn segment_count(&self) -> u64 {
        self.levels[0].len() as u64
    }

    /// Leaf hash at `index`.
    pub fn leaf(&self, index: u64) -> Result<Fr> {
        self.check_index(index)?;
        Ok(self.levels[0][index as usize])
    }

    /// Sibling hashes from the leaf at `index` up to the root, bottom first.
    pub fn path(&self, index: u64) -> Result<Vec<Fr>> {
        self.check_index(index)?;
        let mut position = index as usize;
        let mut siblings = Vec::with_capacity(self.depth);
        for level in 0..self.depth {
            let sibling = position ^ 1;
            siblings.push(
                self.levels[level]
                    .get(sibling)
                    .copied()
                    .unwrap_or(self.empty[level]),
            );
            position >>= 1;
        }
        Ok(siblings)
    }

    fn check_index(&self, index: u64) -> Result<()> {
        if index >= self.segment_count() {
            return Err(Error::SegmentOutOfRange {
                index,
                segments: self.segment_count(),
            });
        }
        Ok(())
    }
}

/// Recomputes the root from a leaf hash, its index and its siblings.
pub fn root_from_path(leaf: Fr, index: u64, siblings: &[Fr]) -> Fr {
    siblings
        .iter()
        .enumerate()
        .fold(leaf, |node, (level, sibling)| {
            if (index >> level) & 1 == 0 {
                poseidon::hash_pair(node, *sibling)
            } else {
                poseidon::hash_pair(*sibling, node)
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rejects_bad_shapes() {
        assert!(matches!(
            MerkleTree::from_data(&[], 4),
            Err(Error::EmptyData)
        ));
        assert!(matches!(
            MerkleTree::from_data(&[1], 0),
            Err(Error::InvalidDepth(0))
        ));
        assert!(matches!(
            MerkleTree::from_data(&[1; 3 * SEGMENT_BYTES], 1),
            Err(Error::TooManySegments {
                segments: 3,
                depth: 1,
                max: 2
            })
        ));
        let tree = MerkleTree::from_data(&[1; 10], 3).unwrap();
        assert!(matches!(
            tree.path(1),
            Err(Error::SegmentOutOfRange {
                index: 1,
                segments: 1
            })
        ));
    }

    #[test]
    fn padding_matches_explicit_zero_segments() {
        let data = vec![7u8; 3 * SEGMENT_BYTES];
        let padded = [data.clone(), vec![0u8; SEGMENT_BYTES]].concat();
        let three = MerkleTree::from_data(&data, 2).unwrap();
        let four = MerkleTree::from_data(&padded, 2).unwrap();
        assert_eq!(three.root(), four.root());
        assert_eq!(three.segment_count(), 3);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]
        #[test]
        fn every_path_leads_to_root(segments in 1usize..9, seed in any::<u8>(), depth in 4usize..7) {
            let data: Vec<u8> = (0..segments * SEGMENT_BYTES - 5).map(|i| (i as u8).wrapping_mul(seed)).collect();
            let tree = MerkleTree::from_data(&data, depth).unwrap();
            for index in 0..tree.segment_count() {
                let path = tree.path(index).unwrap();
                prop_assert_eq!(path.len(), depth);
                prop_assert_eq!(root_from_path(tree.leaf(index).unwrap(), index, &path), tree.root());
            }
        }

        #[test]
        fn any_changed_byte_changes_root(position in 0usize..3000) {
            let data = vec![0xabu8; 3000];
            let mut changed = data.clone();
            changed[position] ^= 0x01;
            prop_assert_ne!(
                MerkleTree::from_data(&data, 4).unwrap().root(),
                MerkleTree::from_data(&changed, 4).unwrap().root()
            );
        }
    }
}

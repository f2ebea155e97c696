//! A proof made by the prover verifies; tampered proofs, wrong roots, wrong seeds, proofs
//! for another epoch and proofs by a node missing a challenged segment do not. Small
//! circuit parameters: none of these properties depends on the tree depth or on k.

use std::collections::BTreeMap;

use decloud_prover::{
    CircuitParams, Error, Fr, Keys, MerkleTree, PublicInputs, SEGMENT_BYTES, StorageCircuit,
    build_openings, challenged_indices, epoch_seed, pack_segment, proof_from_solidity,
    proof_to_solidity, prove, prove_circuit, split_segments, verify,
};

const PARAMS: CircuitParams = CircuitParams {
    depth: 6,
    challenges: 4,
};

struct Setup {
    keys: Keys,
    data: Vec<u8>,
    tree: MerkleTree,
    randomness: [u8; 32],
}

fn setup() -> Setup {
    let data: Vec<u8> = (0..37 * SEGMENT_BYTES + 123)
        .map(|i| ((i * 131 + i / 1024) % 256) as u8)
        .collect();
    let tree = MerkleTree::from_data(&data, PARAMS.depth).unwrap();
    Setup {
        keys: Keys::dev_setup(PARAMS).unwrap(),
        data,
        tree,
        randomness: [0x42; 32],
    }
}

fn public(s: &Setup, seed: Fr) -> PublicInputs {
    PublicInputs {
        root: s.tree.root(),
        segment_count: s.tree.segment_count(),
        seed,
    }
}

#[test]
fn honest_proof_verifies_and_every_forgery_is_rejected() {
    let s = setup();
    let segments = split_segments(&s.data);
    let seed = epoch_seed(s.randomness, 9, 0, 5);
    let proof = prove(&s.keys, &s.tree, &segments, seed).unwrap();
    verify(s.keys.vk(), &public(&s, seed), &proof).unwrap();

    // Wrong root.
    let mut wrong_root = public(&s, seed);
    wrong_root.root += Fr::from(1u64);
    assert!(matches!(
        verify(s.keys.vk(), &wrong_root, &proof),
        Err(Error::InvalidProof)
    ));

    // Wrong seed (other randomness) and a proof for another epoch, replica or deal.
    for other in [
        epoch_seed([0x43; 32], 9, 0, 5),
        epoch_seed(s.randomness, 9, 0, 6),
        epoch_seed(s.randomness, 9, 1, 5),
        epoch_seed(s.randomness, 10, 0, 5),
    ] {
        assert!(matches!(
            verify(s.keys.vk(), &public(&s, other), &proof),
            Err(Error::InvalidProof)
        ));
    }

    // Wrong segment count.
    let mut wrong_count = public(&s, seed);
    wrong_count.segment_count += 1;
    assert!(matches!(
        verify(s.keys.vk(), &wrong_count, &proof),
        Err(Error::InvalidProof)
    ));

    // Tampered proofs: each word changed in turn is either malformed or invalid.
    let words = proof_to_solidity(&proof);
    for position in 0..8 {
        let mut tampered = words;
        tampered[position][31] ^= 1;
        match proof_from_solidity(&tampered) {
            Err(Error::InvalidProof) => {}
            Ok(parsed) => {
                assert!(matches!(
                    verify(s.keys.vk(), &public(&s, seed), &parsed),
                    Err(Error::InvalidProof)
                ))
            }
            Err(other) => panic!("unexpected error {other}"),
        }
    }
}

#[test]
fn node_missing_a_challenged_segment_cannot_prove() {
    let s = setup();
    let segments = split_segments(&s.data);
    let seed = epoch_seed(s.randomness, 1, 0, 0);
    let challenged = challenged_indices(&PARAMS, seed, s.tree.segment_count());
    let missing = challenged[1];

    // The store lacks the segment: the prover refuses.
    let mut store: BTreeMap<u64, [u8; SEGMENT_BYTES]> = segments
        .iter()
        .enumerate()
        .map(|(i, seg)| (i as u64, *seg))
        .collect();
    store.remove(&missing);
    assert!(
        matches!(prove(&s.keys, &s.tree, &store, seed), Err(Error::MissingSegment(i)) if i == missing)
    );

    // The store holds a corrupted copy: the prover notices the mismatch.
    let mut corrupted = segments.clone();
    corrupted[missing as usize][7] ^= 0xff;
    assert!(
        matches!(prove(&s.keys, &s.tree, &corrupted, seed), Err(Error::SegmentMismatch(i)) if i == missing)
    );

    // A cheating prover that fills the gap with zeros and proves anyway gets a proof that fails.
    let mut openings = build_openings(&PARAMS, &s.tree, &segments, seed).unwrap();
    for opening in openings.iter_mut().filter(|o| o.index == missing) {
        opening.elements = pack_segment(&[0u8; SEGMENT_BYTES]);
    }
    let circuit = StorageCircuit {
        params: PARAMS,
        public: public(&s, seed),
        openings,
    };
    let cheat = prove_circuit(&s.keys, circuit).unwrap();
    assert!(matches!(
        verify(s.keys.vk(), &public(&s, seed), &cheat),
        Err(Error::InvalidProof)
    ));

    // Opening an unchallenged segment it does hold instead is rejected too.
    let mut openings = build_openings(&PARAMS, &s.tree, &segments, seed).unwrap();
    let substitute = (0..s.tree.segment_count())
        .find(|i| !challenged.contains(i))
        .unwrap();
    for opening in openings.iter_mut().filter(|o| o.index == missing) {
        opening.index = substitute;
        opening.elements = pack_segment(&segments[substitute as usize]);
        opening.siblings = s.tree.path(substitute).unwrap();
    }
    let circuit = StorageCircuit {
        params: PARAMS,
        public: public(&s, seed),
        openings,
    };
    let cheat = prove_circuit(&s.keys, circuit).unwrap();
    assert!(matches!(
        verify(s.keys.vk(), &public(&s, seed), &cheat),
        Err(Error::InvalidProof)
    ));
}

#[test]
fn node_keeping_only_digests_cannot_prove() {
    // A node that kept every leaf hash (the whole tree) but dropped the data has no store.
    let s = setup();
    let empty: Vec<[u8; SEGMENT_BYTES]> = Vec::new();
    let seed = epoch_seed(s.randomness, 2, 0, 0);
    assert!(matches!(
        prove(&s.keys, &s.tree, &empty, seed),
        Err(Error::MissingSegment(_))
    ));
}

//! The production circuit (depth 20, k = 88): the committed Solidity verifier is exactly what
//! the committed development setup produces, and the committed forge fixture (written by
//! `decloud-prover fixture`) holds a production proof that verifies, with negative cases
//! that do not. Key generation at this size takes a minute or two.

use std::path::{Path, PathBuf};

use decloud_prover::{
    CircuitParams, Error, FIXTURE_PATH, Fixture, Keys, PRODUCTION_CHALLENGES, PRODUCTION_DEPTH,
    PublicInputs, VERIFIER_PATH, count_constraints, fr_from_hex, generate_verifier, parse_hex32,
    proof_from_solidity, verify,
};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn words(values: &[String]) -> Result<[[u8; 32]; 8], Error> {
    let mut out = [[0u8; 32]; 8];
    for (word, value) in out.iter_mut().zip(values) {
        *word = parse_hex32(value)?;
    }
    Ok(out)
}

#[test]
fn committed_verifier_and_fixture_match_the_production_circuit() {
    let params = CircuitParams::PRODUCTION;
    assert_eq!(
        (params.depth, params.challenges),
        (PRODUCTION_DEPTH, PRODUCTION_CHALLENGES)
    );
    // k = 88 is the least k with 0.9^k <= 1e-4.
    assert!(0.9f64.powi(88) <= 1e-4 && 0.9f64.powi(87) > 1e-4);

    let keys = Keys::dev_setup(params).unwrap();
    let generated = generate_verifier(keys.vk(), &params);
    let committed = std::fs::read_to_string(repo_root().join(VERIFIER_PATH)).unwrap();
    assert!(
        generated == committed,
        "{VERIFIER_PATH} differs from the verifier of the dev setup; regenerate it with \
         `cargo run --release -p decloud-prover -- export-verifier`"
    );

    let fixture: Fixture =
        serde_json::from_str(&std::fs::read_to_string(repo_root().join(FIXTURE_PATH)).unwrap())
            .unwrap();
    assert_eq!(fixture.params, params);
    let public = PublicInputs {
        root: fr_from_hex(&fixture.root).unwrap(),
        segment_count: fixture.segment_count,
        seed: fr_from_hex(&fixture.seed).unwrap(),
    };
    let proof = proof_from_solidity(&words(&fixture.proof).unwrap()).unwrap();
    verify(keys.vk(), &public, &proof).expect("the fixture proof verifies");

    let reject = |public: &PublicInputs, proof_words: &[String]| match proof_from_solidity(
        &words(proof_words).unwrap(),
    ) {
        Ok(p) => matches!(verify(keys.vk(), public, &p), Err(Error::InvalidProof)),
        Err(Error::InvalidProof) => true,
        Err(other) => panic!("unexpected {other}"),
    };
    assert!(reject(
        &PublicInputs {
            root: fr_from_hex(&fixture.wrong_root).unwrap(),
            ..public
        },
        &fixture.proof
    ));
    assert!(reject(
        &PublicInputs {
            seed: fr_from_hex(&fixture.wrong_seed).unwrap(),
            ..public
        },
        &fixture.proof
    ));
    assert!(reject(
        &PublicInputs {
            seed: fr_from_hex(&fixture.next_epoch_seed).unwrap(),
            ..public
        },
        &fixture.proof
    ));
    assert!(reject(&public, &fixture.tampered_proof));
    assert!(reject(&public, &fixture.missing_segment_proof));
}

#[test]
fn production_constraint_count_is_k_times_per_challenge_plus_inputs() {
    let one = count_constraints(CircuitParams {
        depth: PRODUCTION_DEPTH,
        challenges: 1,
    })
    .unwrap();
    let two = count_constraints(CircuitParams {
        depth: PRODUCTION_DEPTH,
        challenges: 2,
    })
    .unwrap();
    let per_challenge = two - one;
    let full = count_constraints(CircuitParams::PRODUCTION).unwrap();
    assert_eq!(full, one + (PRODUCTION_CHALLENGES - 1) * per_challenge);
    assert!(
        per_challenge < 11_000,
        "a challenge costs {per_challenge} constraints"
    );
}

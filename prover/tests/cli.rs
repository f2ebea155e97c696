//! The command line end to end: setup, commit, seed, prove, verify, export-verifier.

use clap::Parser;
use decloud_prover::{Cli, ProofFile, parse_hex32, run_with};

fn run(args: &[&str]) -> Result<String, decloud_prover::Error> {
    let cli =
        Cli::try_parse_from(std::iter::once("decloud-prover").chain(args.iter().copied())).unwrap();
    let mut out = Vec::new();
    run_with(cli.command, &mut out)?;
    Ok(String::from_utf8(out).unwrap())
}

#[test]
fn setup_commit_prove_verify_export() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let file = dir.path().join("data.bin");
    let proof = dir.path().join("proof.json");
    let verifier = dir.path().join("Verifier.sol");
    std::fs::write(
        &file,
        (0..20_000u32).map(|i| (i % 97) as u8).collect::<Vec<_>>(),
    )
    .unwrap();
    let keys_s = keys.to_str().unwrap();
    let file_s = file.to_str().unwrap();
    let proof_s = proof.to_str().unwrap();

    run(&[
        "setup",
        "--keys",
        keys_s,
        "--depth",
        "5",
        "--challenges",
        "3",
    ])
    .unwrap();
    let commitment: serde_json::Value =
        serde_json::from_str(&run(&["commit", "--file", file_s, "--depth", "5"]).unwrap()).unwrap();
    assert_eq!(commitment["segmentCount"], 20);
    assert_eq!(commitment["bytes"], 20_000);

    let randomness = format!("0x{}", "ab".repeat(32));
    let seed = run(&[
        "seed",
        "--randomness",
        &randomness,
        "--deal",
        "3",
        "--replica",
        "1",
        "--epoch",
        "2",
    ])
    .unwrap();
    let seed = seed.trim();
    assert_eq!(seed.len(), 66);

    run(&[
        "prove", "--keys", keys_s, "--file", file_s, "--seed", seed, "--out", proof_s,
    ])
    .unwrap();
    let written: ProofFile = serde_json::from_slice(&std::fs::read(&proof).unwrap()).unwrap();
    assert_eq!(written.root, commitment["root"].as_str().unwrap());
    assert_eq!(written.seed, seed);
    assert_eq!(
        run(&["verify", "--keys", keys_s, "--proof", proof_s])
            .unwrap()
            .trim(),
        "valid"
    );

    // The same proof with another seed, or with a changed word, does not verify.
    let mut other = written.clone();
    other.seed = format!("0x{}", "0".repeat(63) + "7");
    std::fs::write(&proof, serde_json::to_vec(&other).unwrap()).unwrap();
    assert!(run(&["verify", "--keys", keys_s, "--proof", proof_s]).is_err());
    let mut tampered = written.clone();
    let mut word = parse_hex32(&tampered.proof[6]).unwrap();
    word[31] ^= 1;
    tampered.proof[6] = format!("0x{}", hex::encode(word));
    std::fs::write(&proof, serde_json::to_vec(&tampered).unwrap()).unwrap();
    assert!(run(&["verify", "--keys", keys_s, "--proof", proof_s]).is_err());

    // Proving with derived seed arguments gives the same statement.
    run(&[
        "prove",
        "--keys",
        keys_s,
        "--file",
        file_s,
        "--randomness",
        &randomness,
        "--deal",
        "3",
        "--replica",
        "1",
        "--epoch",
        "2",
        "--out",
        proof_s,
    ])
    .unwrap();
    let derived: ProofFile = serde_json::from_slice(&std::fs::read(&proof).unwrap()).unwrap();
    assert_eq!(derived.seed, seed);

    run(&[
        "export-verifier",
        "--keys",
        keys_s,
        "--out",
        verifier.to_str().unwrap(),
    ])
    .unwrap();
    let source = std::fs::read_to_string(&verifier).unwrap();
    assert!(source.contains("contract Groth16Verifier is IStorageProofVerifier"));
    assert!(source.contains("depth=5 challenges=3"));
}

#[test]
fn bad_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    let err = run(&["commit", "--file", empty.to_str().unwrap()]).unwrap_err();
    assert_eq!(err.to_string(), "cannot commit to empty data");
    let err = run(&[
        "commit",
        "--file",
        dir.path().join("absent").to_str().unwrap(),
    ])
    .unwrap_err();
    assert!(err.to_string().starts_with("read "));
    let err = run(&["seed", "--seed", "0xnothex"]).unwrap_err();
    assert!(err.to_string().contains("invalid hex"));
    let err = run(&[
        "setup",
        "--keys",
        dir.path().to_str().unwrap(),
        "--challenges",
        "0",
    ])
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the number of challenges must be at least 1"
    );
}

//! `decloud-prover`: commitments, storage proofs and the Solidity verifier from the shell.

fn main() -> std::process::ExitCode {
    decloud_prover::run()
}

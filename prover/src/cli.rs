//! Command line interface of `decloud-prover`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use crate::bench::{bench_epoch, bench_row, count_constraints};
use crate::circuit::{CircuitParams, PRODUCTION_CHALLENGES, PRODUCTION_DEPTH, PublicInputs};
use crate::error::{Error, Result};
use crate::field::{fr_from_hex, fr_to_hex, parse_hex32, split_segments};
use crate::fixture::{ProofFile, build_fixture};
use crate::groth::{Keys, epoch_seed, load_verifying_key, prove, verify};
use crate::merkle::MerkleTree;
use crate::solidity::{generate_dev_verifier, generate_verifier};
use crate::{DEV_VERIFIER_PATH, FIXTURE_PATH, VERIFIER_PATH};

/// Storage proofs for DeCloud: commit to data, prove possession of challenged
/// segments, verify proofs and export the Solidity verifier.
#[derive(Debug, Parser)]
#[command(name = "decloud-prover", version)]
pub struct Cli {
    /// Log filter (`RUST_LOG` syntax), e.g. `info` or `prover=debug` [default: $DECLOUD_LOG,
    /// else info].
    #[arg(long, global = true)]
    pub log: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Circuit shape flags.
#[derive(Debug, Clone, Copy, Args)]
pub struct ParamsArgs {
    /// Merkle tree depth (at most 2^depth segments of 1 KiB).
    #[arg(long, default_value_t = PRODUCTION_DEPTH)]
    pub depth: usize,
    /// Segments challenged per proof.
    #[arg(long, default_value_t = PRODUCTION_CHALLENGES)]
    pub challenges: usize,
}

impl ParamsArgs {
    fn params(self) -> Result<CircuitParams> {
        let params = CircuitParams {
            depth: self.depth,
            challenges: self.challenges,
        };
        params.validate()?;
        Ok(params)
    }
}

/// Where an epoch seed comes from: given directly, or derived from chain data.
#[derive(Debug, Clone, Args)]
pub struct SeedArgs {
    /// The seed itself (hex scalar), as `StorageMarket.epochSeed` returns it.
    #[arg(long, conflicts_with_all = ["randomness", "deal", "replica", "epoch"])]
    pub seed: Option<String>,
    /// Recorded block hash of the epoch (hex), see `StorageMarket.epochRandomness`.
    #[arg(long, requires_all = ["deal", "replica", "epoch"])]
    pub randomness: Option<String>,
    /// Deal id.
    #[arg(long)]
    pub deal: Option<u64>,
    /// Replica index within the deal.
    #[arg(long)]
    pub replica: Option<u64>,
    /// Epoch number.
    #[arg(long)]
    pub epoch: Option<u64>,
}

impl SeedArgs {
    fn seed(&self) -> Result<ark_bn254::Fr> {
        match (
            &self.seed,
            &self.randomness,
            self.deal,
            self.replica,
            self.epoch,
        ) {
            (Some(seed), ..) => fr_from_hex(seed),
            (None, Some(randomness), Some(deal), Some(replica), Some(epoch)) => {
                Ok(epoch_seed(parse_hex32(randomness)?, deal, replica, epoch))
            }
            _ => Err(Error::InvalidHex {
                value: String::new(),
                reason: "give --seed, or --randomness with --deal, --replica and --epoch"
                    .to_owned(),
            }),
        }
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// DEVELOPMENT ONLY: generate Groth16 keys from the public dev seed into a directory.
    Setup {
        /// Directory for proving.key, verifying.key and params.json.
        #[arg(long, env = "DECLOUD_PROVER_KEYS")]
        keys: PathBuf,
        /// Circuit shape.
        #[command(flatten)]
        params: ParamsArgs,
    },
    /// Commit to a file: print its Poseidon Merkle root and segment count.
    Commit {
        /// The file.
        #[arg(long)]
        file: PathBuf,
        /// Merkle tree depth.
        #[arg(long, default_value_t = PRODUCTION_DEPTH)]
        depth: usize,
    },
    /// Print the seed of a deal's replica epoch from the recorded randomness.
    Seed {
        /// Seed source.
        #[command(flatten)]
        seed: SeedArgs,
    },
    /// Prove possession of the segments an epoch seed challenges.
    Prove {
        /// Key directory written by `setup` (or by a ceremony).
        #[arg(long, env = "DECLOUD_PROVER_KEYS")]
        keys: PathBuf,
        /// The stored file.
        #[arg(long)]
        file: PathBuf,
        /// Seed source.
        #[command(flatten)]
        seed: SeedArgs,
        /// Write the proof JSON here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Verify a proof JSON written by `prove`; exits non-zero if it is invalid.
    Verify {
        /// Key directory (only verifying.key and params.json are read).
        #[arg(long, env = "DECLOUD_PROVER_KEYS")]
        keys: PathBuf,
        /// Proof JSON.
        #[arg(long)]
        proof: PathBuf,
    },
    /// Write the Solidity verifier for a verifying key.
    ExportVerifier {
        /// Key directory; without it, the development keys of the given shape are derived.
        #[arg(long, env = "DECLOUD_PROVER_KEYS")]
        keys: Option<PathBuf>,
        /// Circuit shape (used without --keys).
        #[command(flatten)]
        params: ParamsArgs,
        /// Write the DEVELOPMENT-circuit verifier instead (contract `DevGroth16Verifier`, depth 20,
        /// 4 challenges, development keys; default output contracts/src/DevGroth16Verifier.sol).
        #[arg(long, conflicts_with_all = ["keys", "depth", "challenges"])]
        development: bool,
        /// Output file [default: contracts/src/Groth16Verifier.sol].
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Write the forge fixture (a valid proof and negative cases).
    Fixture {
        /// Key directory; without it, the production development keys are derived.
        #[arg(long, env = "DECLOUD_PROVER_KEYS")]
        keys: Option<PathBuf>,
        /// Output file.
        #[arg(long, default_value = FIXTURE_PATH)]
        out: PathBuf,
    },
    /// Measure constraints, key generation, proving and verification (use --release).
    Bench {
        /// Merkle tree depth.
        #[arg(long, default_value_t = PRODUCTION_DEPTH)]
        depth: usize,
        /// Challenge counts to measure, comma separated.
        #[arg(long, value_delimiter = ',', default_values_t = vec![1, 16, PRODUCTION_CHALLENGES])]
        challenges: Vec<usize>,
    },
    /// Measure what one epoch of one replica costs a storage node: leaf hashing and tree (first
    /// epoch), tree from cached leaves (later epochs), the proof (use --release).
    BenchEpoch {
        /// Key directory; without it, the development keys of the given shape are derived (not
        /// counted in the times).
        #[arg(long, env = "DECLOUD_PROVER_KEYS")]
        keys: Option<PathBuf>,
        /// Circuit shape (used without --keys).
        #[command(flatten)]
        params: ParamsArgs,
        /// Replica size in MiB.
        #[arg(long, default_value_t = 100)]
        mib: u64,
    },
}

/// Entry point of the binary: parses the command line, runs it, reports errors.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    // The runtime silences arkworks' constraint spans (target `r1cs`) in every binary.
    decloud_runtime::init_logging_with(cli.log.as_deref(), decloud_runtime::LogFormat::Text, &[]);
    match run_with(cli.command, &mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Commitment {
    root: String,
    segment_count: u64,
    depth: usize,
    bytes: u64,
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io("read", path, e))
}

fn write(path: &Path, contents: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
    }
    std::fs::write(path, contents).map_err(|e| Error::io("write", path, e))
}

fn print(out: &mut impl Write, text: &str) -> Result<()> {
    writeln!(out, "{text}").map_err(|e| Error::io("write", "stdout", e))
}

fn keys_or_dev(keys: Option<&Path>, params: CircuitParams) -> Result<Keys> {
    match keys {
        Some(dir) => Keys::load(dir),
        None => Keys::dev_setup(params),
    }
}

/// Runs one command, writing results to `out` (logs go to stderr).
pub fn run_with(command: Command, out: &mut impl Write) -> Result<()> {
    match command {
        Command::Setup { keys, params } => {
            let params = params.params()?;
            let generated = Keys::dev_setup(params)?;
            generated.save(
                &keys,
                "dev-seeded (INSECURE: public seed, development only)",
            )?;
            print(
                out,
                &format!("wrote development keys for {params} to {}", keys.display()),
            )
        }
        Command::Commit { file, depth } => {
            let data = read(&file)?;
            let tree = MerkleTree::from_data(&data, depth)?;
            let commitment = Commitment {
                root: fr_to_hex(&tree.root()),
                segment_count: tree.segment_count(),
                depth,
                bytes: data.len() as u64,
            };
            print(out, &serde_json::to_string_pretty(&commitment)?)
        }
        Command::Seed { seed } => print(out, &fr_to_hex(&seed.seed()?)),
        Command::Prove {
            keys,
            file,
            seed,
            out: path,
        } => {
            let seed = seed.seed()?;
            let keys = Keys::load(&keys)?;
            let data = read(&file)?;
            let tree = MerkleTree::from_data(&data, keys.params.depth)?;
            let proof = prove(&keys, &tree, &split_segments(&data), seed)?;
            let public = PublicInputs {
                root: tree.root(),
                segment_count: tree.segment_count(),
                seed,
            };
            let json = serde_json::to_string_pretty(&ProofFile::new(keys.params, &public, &proof))?;
            match path {
                Some(path) => write(&path, json.as_bytes()),
                None => print(out, &json),
            }
        }
        Command::Verify { keys, proof } => {
            let (info, vk) = load_verifying_key(&keys)?;
            let file: ProofFile = serde_json::from_slice(&read(&proof)?)?;
            if file.params != info.params {
                return Err(Error::ParamsMismatch {
                    dir: keys,
                    found: info.params.to_string(),
                    expected: file.params.to_string(),
                });
            }
            verify(&vk, &file.public_inputs()?, &file.proof()?)?;
            print(out, "valid")
        }
        Command::ExportVerifier {
            keys,
            params,
            development,
            out: path,
        } => {
            let (keys, source, default_path) = if development {
                let keys = Keys::dev_setup(CircuitParams::DEVELOPMENT)?;
                let source = generate_dev_verifier(keys.vk(), &keys.params);
                (keys, source, DEV_VERIFIER_PATH)
            } else {
                let keys = keys_or_dev(keys.as_deref(), params.params()?)?;
                let source = generate_verifier(keys.vk(), &keys.params);
                (keys, source, VERIFIER_PATH)
            };
            let path = path.unwrap_or_else(|| PathBuf::from(default_path));
            write(&path, source.as_bytes())?;
            print(
                out,
                &format!("wrote {} for {}", path.display(), keys.params),
            )
        }
        Command::Fixture { keys, out: path } => {
            let keys = keys_or_dev(keys.as_deref(), CircuitParams::PRODUCTION)?;
            let fixture = build_fixture(&keys)?;
            write(
                &path,
                format!("{}\n", serde_json::to_string_pretty(&fixture)?).as_bytes(),
            )?;
            print(out, &format!("wrote {}", path.display()))
        }
        Command::BenchEpoch { keys, params, mib } => {
            let keys = keys_or_dev(keys.as_deref(), params.params()?)?;
            let row = bench_epoch(&keys, mib << 20)?;
            print(
                out,
                &format!(
                    "| {} | {mib} MiB | {:.1} | {:.1} | {:.1} | {:.1} |",
                    row.params,
                    row.leaves_and_tree_seconds,
                    row.tree_from_leaves_seconds,
                    row.prove_seconds,
                    row.tree_from_leaves_seconds + row.prove_seconds,
                ),
            )
        }
        Command::Bench { depth, challenges } => {
            print(
                out,
                "| k | depth | constraints | per challenge | setup (s) | prove (s) | verify (ms) | proof (B) | proving key (MB) |",
            )?;
            print(out, "|---|---|---|---|---|---|---|---|---|")?;
            let one = count_constraints(CircuitParams {
                depth,
                challenges: 1,
            })?;
            let two = count_constraints(CircuitParams {
                depth,
                challenges: 2,
            })?;
            let per_challenge = two - one;
            for k in challenges {
                let row = bench_row(CircuitParams {
                    depth,
                    challenges: k,
                })?;
                print(
                    out,
                    &format!(
                        "| {k} | {depth} | {} | {per_challenge} | {:.1} | {:.2} | {:.1} | {} | {:.1} |",
                        row.constraints,
                        row.setup_seconds,
                        row.prove_seconds,
                        row.verify_millis,
                        row.proof_bytes,
                        row.proving_key_bytes as f64 / 1e6
                    ),
                )?;
            }
            Ok(())
        }
    }
}

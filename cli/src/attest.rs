//! `decloud attest verify <id>`: checks one attestation of an orchestrator end to end — the
//! signature against the orchestrator's published signer, the link to the attestation before it,
//! the Merkle proof, and the root on AttestationAnchor through an RPC endpoint of the user's
//! choosing. The first attestation of a log rebuilt from an empty database (`log.resumed`)
//! links to the root of the last batch anchored before instead, which is checked on-chain too.

use std::process::ExitCode;

use alloy::{
    primitives::Address,
    providers::{Provider, ProviderBuilder},
};
use clap::{Args, Subcommand};
use decloud_sdk::attestation::{self, Evidence, SignerInfo, VerifyFailure};
use serde_json::json;
use url::Url;

/// `decloud attest …`.
#[derive(Debug, Subcommand)]
pub(crate) enum AttestCommand {
    /// Verify an attestation: signature, chain link, Merkle proof and on-chain root. Prints a
    /// verdict; exits 1 when the attestation does not verify, 2 when it could not be checked.
    Verify(VerifyArgs),
}

/// Arguments of `decloud attest verify`.
#[derive(Debug, Clone, Args)]
pub(crate) struct VerifyArgs {
    /// Attestation id (its sequence number).
    id: u64,
    /// Base URL of the orchestrator (its API is under /api/v1).
    #[arg(
        long,
        env = "DECLOUD_ORCHESTRATOR",
        default_value = "http://127.0.0.1:8080"
    )]
    orchestrator: Url,
    /// JSON-RPC URL of the chain the roots are anchored on (trust your own node, not the
    /// orchestrator's).
    #[arg(long, env = "DECLOUD_RPC_URL")]
    rpc_url: Url,
    /// Signer the attestation must be signed by (default: the orchestrator's published signer).
    #[arg(long)]
    signer: Option<Address>,
    /// AttestationAnchor the root must be on (default: the published domain's verifying contract).
    #[arg(long)]
    anchor: Option<Address>,
    /// Print the verdict as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `decloud attest …` and returns the exit code.
pub(crate) async fn run(command: AttestCommand) -> ExitCode {
    match command {
        AttestCommand::Verify(args) => verify(args).await,
    }
}

/// Why a check could not be made at all (as opposed to a check that failed).
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("cannot reach {url}: {message}")]
    Http { url: String, message: String },
    #[error("{url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url} answered something that is not {what}: {message}")]
    Decode {
        url: String,
        what: &'static str,
        message: String,
    },
}

async fn get<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    base: &Url,
    path: &str,
    what: &'static str,
) -> Result<T, FetchError> {
    let url = format!("{}/api/v1/{path}", base.as_str().trim_end_matches('/'));
    let response = client
        .get(&url)
        .send()
        .await
        .map_err(|e| FetchError::Http {
            url: url.clone(),
            message: e.to_string(),
        })?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| FetchError::Http {
        url: url.clone(),
        message: e.to_string(),
    })?;
    if !status.is_success() {
        return Err(FetchError::Status {
            url,
            status: status.as_u16(),
            body: String::from_utf8_lossy(&body).chars().take(300).collect(),
        });
    }
    serde_json::from_slice(&body).map_err(|e| FetchError::Decode {
        url,
        what,
        message: e.to_string(),
    })
}

/// The outcome of a verification.
enum Verdict {
    Valid(Box<Evidence>),
    Invalid {
        check: &'static str,
        failure: String,
    },
}

fn check_name(f: &VerifyFailure) -> &'static str {
    match f {
        VerifyFailure::PayloadMismatch { .. } | VerifyFailure::HashMismatch { .. } => "integrity",
        VerifyFailure::MalformedSignature(_) | VerifyFailure::WrongSigner { .. } => "signature",
        VerifyFailure::WrongPosition { .. }
        | VerifyFailure::BrokenLink { .. }
        | VerifyFailure::BadResumption(_) => "chain_link",
        VerifyFailure::NotBatched(_)
        | VerifyFailure::OutsideBatch { .. }
        | VerifyFailure::BadProof { .. } => "merkle_proof",
        VerifyFailure::NotAnchored(_)
        | VerifyFailure::RootNotOnChain(_)
        | VerifyFailure::Chain(_) => "on_chain_root",
    }
}

async fn check(args: &VerifyArgs) -> Result<Verdict, FetchError> {
    let client = reqwest::Client::new();
    let base = &args.orchestrator;
    let info: SignerInfo = get(&client, base, "attestations/signer", "a signer").await?;
    if let Some(expected) = args.signer
        && expected != info.signer
    {
        return Ok(Verdict::Invalid {
            check: "signature",
            failure: format!(
                "the orchestrator publishes signer {}, not the expected {expected}",
                info.signer
            ),
        });
    }
    if let Some(expected) = args.anchor
        && expected != info.verifying_contract
    {
        return Ok(Verdict::Invalid {
            check: "on_chain_root",
            failure: format!(
                "the orchestrator's domain names anchor {}, not the expected {expected}",
                info.verifying_contract
            ),
        });
    }
    let evidence: Evidence = get(
        &client,
        base,
        &format!("attestations/{}", args.id),
        "an attestation",
    )
    .await?;
    // The first attestation of a log rebuilt from an empty database links to the last anchored
    // batch (its root), not to an attestation the orchestrator still holds.
    let resumed = evidence.attestation.kind == attestation::RESUMED_KIND;
    let previous = match args.id.checked_sub(1).filter(|_| !resumed) {
        Some(prev) => Some(
            get::<Evidence>(
                &client,
                base,
                &format!("attestations/{prev}"),
                "an attestation",
            )
            .await?
            .attestation,
        ),
        None => None,
    };
    let offline = if resumed {
        attestation::check_offline_resumed(&info, args.id, &evidence).map(Some)
    } else {
        attestation::check_offline(&info, args.id, &evidence, previous.as_ref()).map(|()| None)
    };
    let resumption = match offline {
        Ok(r) => r,
        Err(f) => {
            return Ok(Verdict::Invalid {
                check: check_name(&f),
                failure: f.to_string(),
            });
        }
    };
    let provider = ProviderBuilder::new()
        .connect_http(args.rpc_url.clone())
        .erased();
    let chain_id = provider
        .get_chain_id()
        .await
        .map_err(|e| FetchError::Http {
            url: args.rpc_url.to_string(),
            message: e.to_string(),
        })?;
    if chain_id != info.chain_id {
        return Ok(Verdict::Invalid {
            check: "on_chain_root",
            failure: format!(
                "the RPC endpoint serves chain {chain_id}, the attestations are anchored on chain {}",
                info.chain_id
            ),
        });
    }
    if let Some(r) = &resumption {
        match attestation::check_resumed_on_chain(&provider, info.verifying_contract, r).await {
            Ok(()) => {}
            Err(VerifyFailure::Chain(message)) => {
                return Err(FetchError::Http {
                    url: args.rpc_url.to_string(),
                    message,
                });
            }
            Err(f) => {
                return Ok(Verdict::Invalid {
                    check: "chain_link",
                    failure: format!("the batch it resumes after: {f}"),
                });
            }
        }
    }
    let inclusion = evidence.inclusion.as_ref().expect("checked offline");
    match attestation::check_on_chain(&provider, info.verifying_contract, inclusion).await {
        Ok(()) => Ok(Verdict::Valid(Box::new(evidence))),
        Err(VerifyFailure::Chain(message)) => Err(FetchError::Http {
            url: args.rpc_url.to_string(),
            message,
        }),
        Err(f) => Ok(Verdict::Invalid {
            check: check_name(&f),
            failure: f.to_string(),
        }),
    }
}

async fn verify(args: VerifyArgs) -> ExitCode {
    match check(&args).await {
        Ok(Verdict::Valid(e)) => {
            let a = &e.attestation;
            let i = e
                .inclusion
                .as_ref()
                .expect("a valid attestation is batched");
            if args.json {
                println!(
                    "{}",
                    json!({
                        "id": args.id, "valid": true, "subject": a.subject, "kind": a.kind,
                        "time": a.time, "hash": a.hash, "batch": i.batch, "root": i.root,
                        "tx_hash": i.tx_hash, "block_number": i.block_number,
                    })
                );
            } else {
                println!(
                    "VALID: attestation {} ({} of {}) is signed by the orchestrator, linked to the one before it, \
                     and included in batch {} whose root {} is on-chain (tx {}, block {})",
                    args.id,
                    a.kind,
                    a.subject,
                    i.batch,
                    i.root,
                    i.tx_hash.map(|t| t.to_string()).unwrap_or_default(),
                    i.block_number.unwrap_or_default()
                );
            }
            ExitCode::SUCCESS
        }
        Ok(Verdict::Invalid { check, failure }) => {
            if args.json {
                println!(
                    "{}",
                    json!({ "id": args.id, "valid": false, "check": check, "reason": failure })
                );
            } else {
                println!(
                    "INVALID: attestation {} failed the {check} check: {failure}",
                    args.id
                );
            }
            ExitCode::from(1)
        }
        Err(e) => {
            if args.json {
                println!(
                    "{}",
                    json!({ "id": args.id, "valid": null, "error": e.to_string() })
                );
            }
            eprintln!("error: cannot verify attestation {}: {e}", args.id);
            ExitCode::from(2)
        }
    }
}

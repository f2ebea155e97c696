//! `decloud review …`: sign a review of a lease's node or template with your wallet (EIP-712) and
//! post it to the orchestrator, or verify a review offline.

use std::path::PathBuf;

use alloy::{primitives::U256, transports::http::reqwest};
use clap::{Args, Subcommand};
use serde_json::json;

use decloud_sdk::{
    api::ReviewView,
    reviews::{ReviewDraft, ReviewSubject, SignedReview, sign},
};

use crate::context::{Chain, CliError, GlobalArgs, Report, Settings};
use crate::tenant::{call_api_as, endpoint};

/// `decloud review …`.
#[derive(Debug, Subcommand)]
pub(crate) enum ReviewCommand {
    /// Review the node of one of your leases.
    Node(ReviewArgs),
    /// Review the template one of your leases deployed.
    Template(ReviewArgs),
    /// Check a review offline: well formed and signed by the reviewer it names (a review as
    /// `decloud review … --json` printed it, or as the API lists it).
    Verify(VerifyArgs),
}

/// What a review says.
#[derive(Debug, Args)]
pub(crate) struct ReviewArgs {
    /// The lease id.
    lease: U256,
    /// Stars, 1 to 5.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=5))]
    rating: u8,
    /// What you have to say (at most 2000 bytes).
    #[arg(long, default_value = "")]
    text: String,
    #[command(flatten)]
    global: GlobalArgs,
}

/// `decloud review verify`.
#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// A JSON file holding the review.
    file: PathBuf,
    /// Only --json matters: verifying reads no chain and no orchestrator.
    #[command(flatten)]
    global: GlobalArgs,
}

/// Runs a review command.
pub(crate) async fn run(command: ReviewCommand) -> Result<(), CliError> {
    match command {
        ReviewCommand::Node(args) => post(ReviewSubject::Node, args).await,
        ReviewCommand::Template(args) => post(ReviewSubject::Template, args).await,
        ReviewCommand::Verify(args) => verify(&args),
    }
}

async fn post(subject: ReviewSubject, args: ReviewArgs) -> Result<(), CliError> {
    let settings = Settings::from_process(&args.global)?;
    let chain = Chain::with_key(&settings).await?;
    let draft = ReviewDraft {
        lease_id: args.lease,
        subject,
        rating: args.rating,
        text: args.text.clone(),
    };
    let signed = sign(
        chain.signer(),
        chain.chain_id,
        chain.deployment.contracts.lease_escrow.address,
        &draft,
    )
    .map_err(|e| CliError::Invalid(e.to_string()))?;
    let accepted: ReviewView = call_api_as(
        reqwest::Client::new()
            .post(endpoint(&settings, "/reviews"))
            .json(&signed),
        "review",
    )
    .await?;
    if args.global.json {
        println!("{}", serde_json::to_string_pretty(&accepted).expect("JSON"));
        return Ok(());
    }
    Report::new(
        "review",
        vec![
            ("lease", json!(accepted.review.lease_id)),
            ("subject", json!(accepted.review.subject.as_str())),
            ("target", json!(accepted.target)),
            ("rating", json!(accepted.review.rating)),
            ("reviewer", json!(accepted.review.reviewer)),
            ("signature", json!(accepted.review.signature)),
        ],
    )
    .print(false);
    Ok(())
}

fn verify(args: &VerifyArgs) -> Result<(), CliError> {
    let text = std::fs::read_to_string(&args.file).map_err(|source| CliError::Io {
        path: args.file.clone(),
        source,
    })?;
    // A listed review carries more fields (target, time); the signed ones are what counts.
    let review: SignedReview = serde_json::from_str(&text)
        .map_err(|e| CliError::Invalid(format!("{}: not a review: {e}", args.file.display())))?;
    let signer = review
        .verify()
        .map_err(|e| CliError::Invalid(format!("{}: {e}", args.file.display())))?;
    Report::new(
        "review verify",
        vec![
            ("valid", json!(true)),
            ("signer", json!(format!("{signer:#x}"))),
            ("lease", json!(review.lease_id)),
            ("subject", json!(review.subject.as_str())),
            ("rating", json!(review.rating)),
            ("chain_id", json!(review.chain_id)),
            ("escrow", json!(review.escrow)),
        ],
    )
    .print(args.global.json);
    Ok(())
}

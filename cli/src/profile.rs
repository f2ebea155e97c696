//! `decloud operator profile`: publish a node's profile (tags and a description). The profile
//! document is stored by the orchestrator's content store, and its CID set as the node's
//! `metadataCid` on-chain, from where the marketplace reads it.

use alloy::{primitives::B256, transports::http::reqwest};
use clap::Args;
use serde_json::json;

use decloud_sdk::{
    api::{NodeProfile, ProfileStored},
    bindings::NodeRegistry,
    tx,
};

use crate::context::{Chain, CliError, GlobalArgs, Plan, Settings, execute};
use crate::tenant::{call_api_as, current_session, endpoint};

/// `decloud operator profile`.
#[derive(Debug, Args)]
pub(crate) struct ProfileArgs {
    /// Node id.
    node: B256,
    /// A tag buyers filter on (repeat for more), e.g. --tag ssd --tag nvme.
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// What the node offers, in words.
    #[arg(long, default_value = "")]
    description: String,
    #[command(flatten)]
    global: GlobalArgs,
}

/// Checks the profile, has the orchestrator store it, and sets its CID as the node's
/// `metadataCid` with everything else of the node unchanged.
pub(crate) async fn run(args: ProfileArgs) -> Result<(), CliError> {
    let settings = Settings::from_process(&args.global)?;
    let profile = NodeProfile {
        tags: args.tags.clone(),
        description: args.description.clone(),
    }
    .normalized()
    .map_err(CliError::Invalid)?;
    let chain = Chain::with_key(&settings).await?;
    let registry = NodeRegistry::new(
        chain.deployment.contracts.node_registry.address,
        &chain.provider,
    );
    // Read first: an unknown node or one of another operator stops here, before anything is
    // stored.
    let node = tx::read("NodeRegistry", registry.getNode(args.node)).await?;
    if node.operator != chain.sender() {
        return Err(CliError::Invalid(format!(
            "node {} is operated by {}, not by {}",
            args.node,
            node.operator,
            chain.sender()
        )));
    }
    let session = current_session(&settings)?;
    let stored: ProfileStored = call_api_as(
        reqwest::Client::new()
            .post(endpoint(&settings, "/operator/profile"))
            .bearer_auth(&session.token)
            .json(&profile),
        "profile",
    )
    .await?;
    let plan = Plan::new(
        "operator profile",
        "NodeRegistry",
        registry.update(
            args.node,
            node.nodeKey,
            node.region.clone(),
            node.capabilities.clone(),
            node.endpoint.clone(),
            stored.cid.clone(),
        ),
    )
    .detail("node", json!(args.node.to_string()))
    .detail("metadata_cid", json!(stored.cid))
    .detail("tags", json!(stored.profile.tags))
    .detail("description", json!(stored.profile.description));
    let sent = execute(&chain, &args.global, plan).await?;
    sent.report(Vec::new()).print(args.global.json);
    Ok(())
}

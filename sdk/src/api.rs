//! The orchestrator API's request and response types: what the orchestrator serves under
//! `/api/v1` and what the `decloud` CLI reads back, defined once. With the `openapi` feature
//! they derive `utoipa::ToSchema` (and `IntoParams` for query strings), from which the
//! orchestrator generates its OpenAPI document; without it they are plain serde types.
//!
//! Every error response has the shape [`ErrorBody`]: `{"error":{"code":"…","message":"…"}}`.

use crate::{
    LeaseId, NodeId, TemplateId, VmId,
    types::{LeaseStatus, NodeStatus, QualityTier, VmState},
};
use serde::{Deserialize, Serialize};

/// Hourly prices of a node in micro-USDC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Prices {
    /// Per vCPU and hour.
    pub cpu_per_hour: u64,
    /// Per GiB of memory and hour.
    pub memory_gib_per_hour: u64,
    /// Per GiB of disk and hour.
    pub storage_gib_per_hour: u64,
    /// Per GPU and hour.
    pub gpu_per_hour: u64,
}

/// Resources held on a node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Usage {
    /// Compute units (1/12 compute point).
    pub compute_units: u64,
    /// Memory, GiB.
    pub memory_gib: u64,
    /// Disk, GiB.
    pub disk_gib: u64,
    /// GPUs.
    pub gpus: u64,
}

/// What a VM needs and where it may go.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlacementRequest {
    /// vCPUs, at least 1.
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub vcpus: u64,
    /// Memory in GiB, at least 1.
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub memory_gib: u64,
    /// Disk in GiB.
    pub disk_gib: u64,
    /// GPUs.
    #[serde(default)]
    pub gpus: u64,
    /// Quality tier (CPU overcommit class).
    pub tier: QualityTier,
    /// Only nodes in this region.
    #[serde(default)]
    pub region: Option<String>,
    /// Highest acceptable price for the whole VM, micro-USDC per hour.
    #[serde(default)]
    pub max_price_per_hour: Option<u64>,
    /// Place on this node or nowhere.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(pattern = r"^0x[0-9a-fA-F]{64}$"))]
    pub node_id: Option<String>,
}

/// Where a VM goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Placement {
    /// The chosen node.
    pub node_id: String,
    /// The VM's price on that node, micro-USDC per hour.
    pub price_per_hour: u64,
    /// Compute units (1/12 point) the VM holds there.
    pub compute_units: u64,
    /// Why this node, in the scheduler's order of preference: the cheapest price first, then
    /// the highest uptime, then the most compute left free, then the lowest node id.
    #[serde(default)]
    pub why: PlacementScore,
}

/// The parts of a placement's score, each compared in turn between the nodes that fit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlacementScore {
    /// 30-day uptime of the chosen node, basis points (absent before its first expected
    /// heartbeat).
    #[serde(default)]
    pub uptime_bps: Option<u32>,
    /// Compute units the node has left free once the VM is placed.
    pub free_compute_units_after: u64,
    /// Nodes the scheduler looked at.
    pub considered: u64,
    /// Nodes among them that fit the request.
    pub fitting: u64,
}

/// A node as registered on-chain, plus the compute points its agent measured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeRecord {
    /// keccak256(machineId, operator), 0x-prefixed lowercase hex.
    pub node_id: NodeId,
    /// Operator address, lowercase hex.
    pub operator: String,
    /// Address of the key the node agent signs with.
    pub node_key: String,
    /// On-chain status.
    pub status: NodeStatus,
    /// Region, e.g. `eu-west`.
    pub region: String,
    /// Public endpoint the operator registered.
    pub endpoint: String,
    /// IPFS CID of the node's metadata.
    pub metadata_cid: String,
    /// Free-form tags from the metadata (lowercase).
    pub tags: Vec<String>,
    /// Logical CPUs offered.
    pub vcpus: u64,
    /// Memory offered, GiB.
    pub memory_gib: u64,
    /// Disk offered, GiB.
    pub disk_gib: u64,
    /// GPUs offered.
    pub gpus: u64,
    /// Uplink, Mbit/s.
    pub bandwidth_mbps: u64,
    /// Total compute points from the agent's CPU benchmark (0 until measured).
    pub compute_points: u64,
    /// Hourly prices as stored on-chain.
    pub prices: Prices,
    /// Registration time, unix seconds.
    pub registered_at: i64,
    /// Last on-chain change, unix seconds.
    pub updated_at: i64,
}

/// A node's reputation at one moment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Reputation {
    /// Heartbeat within the last two minutes.
    pub online: bool,
    /// Latest heartbeat, unix seconds.
    pub last_heartbeat: Option<i64>,
    /// 30-day rolling uptime, basis points; absent until a heartbeat was expected.
    pub uptime_bps: Option<u32>,
    /// Missed heartbeats per UTC day in the window (day = unix seconds / 86400), oldest first.
    pub failed_by_day: Vec<DailyFailures>,
    /// VMs ever placed on the node.
    pub vms_hosted: i64,
    /// VMs that ran until their lease ended normally.
    pub vms_completed: i64,
    /// Storage proof rate in basis points: replica-epochs proven over replica-epochs due,
    /// counted by the orchestrator from StorageMarket (never from the node's own report);
    /// absent for a node that stores nothing or before any epoch was due.
    #[serde(default)]
    pub storage_proof_rate_bps: Option<u32>,
}

/// Missed heartbeats on one UTC day.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DailyFailures {
    /// Days since the unix epoch.
    pub day: i64,
    /// Heartbeats missed that day.
    pub failed: i64,
}

/// A lease as opened on-chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LeaseRecord {
    /// On-chain lease id (decimal).
    pub lease_id: LeaseId,
    /// Tenant address, lowercase hex.
    pub tenant: String,
    /// Node the lease pays for.
    pub node_id: NodeId,
    /// `active`, `closed` or `terminated`.
    pub status: LeaseStatus,
    /// Quality tier.
    pub tier: QualityTier,
    /// vCPUs.
    pub vcpus: u64,
    /// Memory, GiB.
    pub memory_gib: u64,
    /// Storage, GiB.
    pub storage_gib: u64,
    /// GPUs.
    pub gpus: u64,
    /// Micro-USDC per hour computed on-chain.
    pub rate_per_hour: u64,
    /// Open time, unix seconds.
    pub opened_at: i64,
}

/// A VM and the resources it holds on its node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VmRecord {
    /// VM id.
    pub vm_id: VmId,
    /// Lease that pays for it.
    pub lease_id: LeaseId,
    /// Tenant address, lowercase hex.
    pub tenant: String,
    /// Node it runs on.
    pub node_id: NodeId,
    /// Lifecycle state (`pending`, `provisioning`, `running`, `stopping`, `stopped`,
    /// `terminated`, `failed`).
    pub state: VmState,
    /// Quality tier.
    pub tier: QualityTier,
    /// vCPUs.
    pub vcpus: u64,
    /// Memory, GiB.
    pub memory_gib: u64,
    /// Disk, GiB.
    pub disk_gib: u64,
    /// GPUs.
    pub gpus: u64,
    /// Creation time, unix seconds.
    pub created_at: i64,
    /// Last change, unix seconds.
    pub updated_at: i64,
    /// Why the VM failed, when it did.
    #[serde(default)]
    pub failure: Option<String>,
}

/// A node's profile: what its on-chain `metadataCid` names (JSON, at most
/// [`NodeProfile::MAX_SIZE`] bytes). The marketplace shows the description and filters on the
/// tags.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeProfile {
    /// Tags, e.g. `ssd`, `nvme`, `a100` (lowercase letters, digits, `-` and `.`; at most
    /// [`NodeProfile::MAX_TAGS`] of at most [`NodeProfile::MAX_TAG_LEN`] characters).
    #[serde(default)]
    pub tags: Vec<String>,
    /// What the node offers, in words (at most [`NodeProfile::MAX_DESCRIPTION`] characters).
    #[serde(default)]
    pub description: String,
}

impl NodeProfile {
    /// Largest profile document read, bytes.
    pub const MAX_SIZE: usize = 16 * 1024;
    /// Most tags.
    pub const MAX_TAGS: usize = 32;
    /// Longest tag, characters.
    pub const MAX_TAG_LEN: usize = 32;
    /// Longest description, characters.
    pub const MAX_DESCRIPTION: usize = 1_000;

    /// The profile with its tags trimmed, lowercased and deduplicated (in first-seen order) and
    /// its description trimmed, or why it breaks a limit.
    pub fn normalized(&self) -> Result<Self, String> {
        let mut tags: Vec<String> = Vec::new();
        for tag in &self.tags {
            let tag = tag.trim().to_lowercase();
            if tag.is_empty()
                || tag.chars().count() > Self::MAX_TAG_LEN
                || !tag
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
            {
                return Err(format!(
                    "tag {tag:?} must be 1 to {} of a-z, 0-9, '-' and '.'",
                    Self::MAX_TAG_LEN
                ));
            }
            if !tags.contains(&tag) {
                tags.push(tag);
            }
        }
        if tags.len() > Self::MAX_TAGS {
            return Err(format!("at most {} tags", Self::MAX_TAGS));
        }
        let description = self.description.trim().to_string();
        if description.chars().count() > Self::MAX_DESCRIPTION {
            return Err(format!(
                "the description is longer than {} characters",
                Self::MAX_DESCRIPTION
            ));
        }
        Ok(Self { tags, description })
    }
}

/// Where a stored profile document is: the CID to set as the node's `metadataCid`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProfileStored {
    /// Content id of the profile document.
    pub cid: String,
    /// The profile as stored (normalized).
    pub profile: NodeProfile,
}

/// A template draft: a bundle its author uploaded, which the validator accepted, to test on
/// their own leases before publishing it on TemplateMarket under the same content id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DraftView {
    /// Content id (CIDv1) of the bundle: what `TemplateMarket.publish` takes.
    pub cid: String,
    /// The author's address, lowercase.
    pub author: String,
    /// The bundle's slug.
    pub slug: String,
    /// The bundle's display name.
    pub name: String,
    /// Upload time, unix seconds.
    pub created_at: i64,
}

/// A draft armed for its author's next lease opened without a template.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DraftTest {
    /// Content id of the draft.
    pub cid: String,
    /// What happens next, in words.
    pub next: String,
}

/// A template in the catalog.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TemplateRecord {
    /// Unique slug, e.g. `postgresql`.
    pub slug: String,
    /// On-chain template id once published on TemplateMarket.
    pub template_id: Option<TemplateId>,
    /// Content id (CIDv1) of the published bundle.
    pub cid: String,
    /// Display name.
    pub name: String,
    /// Category, e.g. `database`.
    pub category: String,
    /// What it is.
    pub description: String,
    /// Lowercase tags.
    pub tags: Vec<String>,
    /// Minimum vCPUs.
    pub min_vcpus: u64,
    /// Minimum memory, GiB.
    pub min_memory_gib: u64,
    /// Minimum disk, GiB.
    pub min_disk_gib: u64,
    /// GPUs needed.
    pub gpus: u64,
    /// Price per deploy, micro-USDC (0 = free).
    pub price: u64,
    /// The bundle's manifest (ports, readiness checks, …).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub manifest: serde_json::Value,
    /// When it entered the catalog, unix seconds.
    pub added_at: i64,
    /// The published bundle (`decloud-templates` content), from which user-data is rendered.
    #[serde(skip)]
    pub content: Option<String>,
    /// Its tenants' reviews.
    #[serde(default)]
    pub rating: RatingSummary,
}

/// A node as the marketplace shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeListing {
    /// The on-chain record.
    #[serde(flatten)]
    pub node: NodeRecord,
    /// Heartbeat reputation.
    pub reputation: Reputation,
    /// Resources held by the node's VMs.
    pub used: Usage,
    /// Resources still free (compute units of 1/12 point, GiB, GPUs).
    pub free: Usage,
    /// The description of the node's profile (its `metadataCid`), empty when it has none.
    #[serde(default)]
    pub description: String,
    /// Its tenants' reviews.
    #[serde(default)]
    pub rating: RatingSummary,
}

/// The aggregate of the reviews of a node or a template.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RatingSummary {
    /// How many reviews.
    pub count: u64,
    /// The sum of their stars.
    pub stars: u64,
    /// The mean rating in hundredths of a star, rounded half up (450 = 4.5 stars); none
    /// without reviews.
    pub mean_hundredths: Option<u64>,
}

impl RatingSummary {
    /// The summary of `count` reviews with `stars` stars in all.
    pub fn of(count: u64, stars: u64) -> Self {
        Self {
            count,
            stars,
            // Half up: (100·stars + count/2) / count.
            mean_hundredths: (count > 0)
                .then(|| (stars.saturating_mul(100).saturating_add(count / 2)) / count),
        }
    }
}

/// A review the orchestrator accepted: the signed review (verifiable offline with
/// [`crate::reviews::SignedReview::verify`]), what it is about, and when it was accepted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReviewView {
    /// The review as signed.
    #[serde(flatten)]
    pub review: crate::reviews::SignedReview,
    /// The reviewed node's id, or the reviewed template's on-chain id.
    pub target: String,
    /// Acceptance time, unix seconds.
    pub created_at: i64,
}

/// Which reviews to list: those of one node or one template.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
pub struct ReviewQuery {
    /// A node id.
    pub node: Option<String>,
    /// An on-chain template id.
    pub template: Option<String>,
}

/// Sort orders of a search.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SortBy {
    /// Highest uptime first (nodes without uptime last).
    #[default]
    Uptime,
    /// Lowest CPU price first.
    Price,
    /// Most compute points first.
    Capacity,
}

/// Filters, sort and page of a node search.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams, utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct NodeSearch {
    /// Comma-separated tags; a node must have all of them.
    pub tags: Option<String>,
    /// Exact region (case-insensitive).
    pub region: Option<String>,
    /// Highest CPU price, micro-USDC per vCPU-hour.
    pub max_price: Option<u64>,
    /// Lowest 30-day uptime, basis points (0–10000).
    #[cfg_attr(feature = "openapi", param(maximum = 10000))]
    pub min_uptime: Option<u32>,
    /// Lowest total compute points.
    pub min_compute_points: Option<u64>,
    /// `true`: only nodes with a GPU; `false`: only nodes without.
    pub gpu: Option<bool>,
    /// Only nodes with a heartbeat in the last two minutes.
    pub online_only: Option<bool>,
    /// Sort order (default `uptime`).
    #[cfg_attr(feature = "openapi", param(inline))]
    pub sort: Option<SortBy>,
    /// Page size, 1–100 (default 50).
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 100))]
    pub limit: Option<usize>,
    /// Results to skip.
    pub offset: Option<usize>,
}

/// Sort orders of a template search.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TemplateSort {
    /// By name, A to Z.
    #[default]
    Name,
    /// Newest first.
    Newest,
    /// Cheapest first.
    Price,
}

/// Filters, sort and page of a template search.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct TemplateSearch {
    /// Category, e.g. `database`, `ai`.
    pub category: Option<String>,
    /// `true`: only templates that need a GPU; `false`: only those that do not.
    pub gpu: Option<bool>,
    /// Comma-separated tags; a template must have all of them.
    pub tags: Option<String>,
    /// Words that must all appear in the name, description or tags (case-insensitive).
    pub q: Option<String>,
    /// Sort order (default `name`).
    #[cfg_attr(feature = "openapi", param(inline))]
    pub sort: Option<TemplateSort>,
    /// Page size, 1–100 (default 50).
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 100))]
    pub limit: Option<usize>,
    /// Results to skip.
    pub offset: Option<usize>,
}

/// The body of every error response: `{"error":{"code":"…","message":"…"}}`, with `details`
/// only where a machine-readable explanation helps (e.g. why no node fits).
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// Code, message and optional details of an error.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `nonce_used`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// Structured explanation, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

/// Liveness and database reachability.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    /// `ok`, or `degraded` while something the server should do keeps failing.
    pub status: String,
    /// What is failing, when degraded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// A nonce to sign in with.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NonceResponse {
    /// Put this in the EIP-4361 message's `Nonce` field.
    pub nonce: String,
    /// Issue time, unix seconds.
    pub issued_at: i64,
    /// The nonce cannot be used after this, unix seconds.
    pub expires_at: i64,
    /// Domains a message may name.
    pub domains: Vec<String>,
    /// Chain ids a message may name.
    pub chain_ids: Vec<u64>,
}

/// A signed EIP-4361 message.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The message exactly as signed.
    pub message: String,
    /// The signature, hex (65 bytes for an EOA; any length for a contract wallet).
    pub signature: String,
}

/// A new session.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionResponse {
    /// Bearer token for `Authorization: Bearer …`; shown only here.
    pub token: String,
    /// Address the session is bound to.
    pub address: String,
    /// Chain id of the message.
    pub chain_id: u64,
    /// Expiry, unix seconds.
    pub expires_at: i64,
    /// Whether the signature was checked through EIP-1271.
    pub contract_wallet: bool,
}

/// The caller's session.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionInfo {
    /// Address the session is bound to.
    pub address: String,
    /// Chain id of the sign-in message.
    pub chain_id: u64,
    /// Expiry, unix seconds.
    pub expires_at: i64,
}

/// A page of node search results.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeSearchResponse {
    /// Nodes matching the filters, before paging.
    pub total: usize,
    /// This page.
    pub nodes: Vec<NodeListing>,
}

/// A page of template search results.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TemplateSearchResponse {
    /// Templates matching the filters, before paging.
    pub total: usize,
    /// This page.
    pub templates: Vec<TemplateRecord>,
}

/// One of the caller's nodes, with the VMs placed on it.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OperatorNode {
    /// The node as listed in the marketplace.
    pub node: NodeListing,
    /// VMs placed on it, newest first.
    pub vms: Vec<VmRecord>,
    /// How the node is reached and what it relays.
    #[serde(default)]
    pub reachability: NodeReachability,
}

/// Whether a node accepts inbound connections, the relay it goes through if not, and the bytes
/// it carried as a relay.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeReachability {
    /// The node's live heartbeats say it accepts no inbound connections (it reports a tunnel).
    pub behind_nat: bool,
    /// The relay the orchestrator assigned the node to.
    #[serde(default)]
    pub relay: Option<RelayEndpoint>,
    /// The node's address inside its relay's tunnel.
    #[serde(default)]
    pub tunnel_address: Option<String>,
    /// Bytes the node carried as a relay, per VM of the nodes it relays (cumulative).
    #[serde(default)]
    pub relayed: Vec<RelayedVmTraffic>,
}

/// Bytes a relay carried for one VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RelayedVmTraffic {
    /// The VM.
    pub vm_id: String,
    /// Its bytes.
    #[serde(flatten)]
    pub traffic: RelayTraffic,
}

/// The key that signs attestations and its EIP-712 domain.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SignerView {
    /// Address of the signing key.
    pub signer: String,
    /// EIP-712 domain name.
    pub name: String,
    /// EIP-712 domain version.
    pub version: String,
    /// EIP-712 domain chain id.
    pub chain_id: u64,
    /// EIP-712 verifying contract: the AttestationAnchor holding the batch roots.
    pub verifying_contract: String,
}

/// One signed attestation, exactly as stored.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AttestationView {
    /// Position in the log from 0; the attestation's id.
    pub sequence: u64,
    /// What it is about (`vm:…`, `lease:…`, `node:…`, `template:…`).
    pub subject: String,
    /// What happened (`vm.transition`, `lease.opened`, `service.distribution`, …).
    pub kind: String,
    /// The attested data, JSON text; `payload_hash` is keccak256 of these bytes.
    pub payload: String,
    /// keccak256 of `payload`.
    pub payload_hash: String,
    /// Hash of the previous attestation (zero for the first).
    pub previous: String,
    /// Unix seconds.
    pub time: u64,
    /// EIP-712 signing hash of (subject, kind, payload_hash, sequence, previous, time).
    pub hash: String,
    /// 65-byte signature of `hash`, hex.
    pub signature: String,
}

/// The batch of an attestation, its Merkle proof and its anchor.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InclusionView {
    /// Batch id on AttestationAnchor.
    pub batch: u64,
    /// First sequence number of the batch.
    pub first_sequence: u64,
    /// Attestations in the batch.
    pub count: u64,
    /// Merkle root (OpenZeppelin layout; leaf = keccak256(keccak256(abi.encode(hash)))).
    pub root: String,
    /// Sibling hashes from the leaf up.
    pub proof: Vec<String>,
    /// The anchoring transaction, once confirmed.
    pub tx_hash: Option<String>,
    /// Its block.
    pub block_number: Option<u64>,
}

/// An attestation with its inclusion proof and anchor.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EvidenceView {
    /// The attestation.
    pub attestation: AttestationView,
    /// Batch, proof and anchor; absent until the attestation is batched.
    pub inclusion: Option<InclusionView>,
}

/// Which attestations to list.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct AttestationQuery {
    /// Subject, e.g. `vm:vm-7`, `lease:7`, `node:0x…`.
    pub subject: String,
    /// Only attestations after this sequence number (keyset paging).
    pub after: Option<u64>,
    /// At most this many (1–500, default 100).
    pub limit: Option<u32>,
}

/// What a registered node offers.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Capabilities {
    /// Logical CPUs.
    pub vcpus: u64,
    /// Memory, GiB.
    pub memory_gib: u64,
    /// Disk, GiB.
    pub disk_gib: u64,
    /// GPUs.
    pub gpus: u64,
    /// Uplink, Mbit/s.
    pub bandwidth_mbps: u64,
    /// Compute points from the agent's CPU benchmark (0 until measured).
    pub compute_points: u64,
}

/// A registered node of the hosting network.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NetworkNode {
    /// Node id.
    pub node_id: String,
    /// Operator address.
    pub operator: String,
    /// Region.
    pub region: String,
    /// On-chain status.
    pub status: NodeStatus,
    /// Whether its agent sent a heartbeat in the last two minutes.
    pub online: bool,
    /// Address of the node's registered public key (what its agent signs with).
    pub public_key: String,
    /// Capabilities.
    pub capabilities: Capabilities,
}

/// The id of a new attestation.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AttestationCreated {
    /// Its sequence number (`GET /attestations/{id}`).
    pub attestation_id: u64,
}

/// What is distributed.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DistributionKind {
    /// A workload (VM image, container) to run in the regions.
    Workload,
    /// An artifact (file, bundle) to replicate to the regions.
    Artifact,
}

/// An intent to distribute a workload or artifact to regions.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DistributeRequest {
    /// Workload or artifact.
    pub kind: DistributionKind,
    /// Its name or content id (1–512 printable characters).
    pub artifact: String,
    /// SHA-256 of its bytes, 64 hex digits.
    pub sha256: String,
    /// Target regions: each must be the region of a registered active node; no duplicates.
    pub regions: Vec<String>,
}

/// A tenant's profile: what every VM created for the tenant from now on is set up with.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Profile {
    /// OpenSSH public keys installed for the VM's login user.
    pub ssh_keys: Vec<String>,
    /// X25519 public key (`0x` + 64 hex digits) that generated passwords are sealed to; derived
    /// from the tenant's wallet ([`crate::credentials`]). Without one no password is generated.
    #[serde(default)]
    pub sealing_key: Option<String>,
    /// Guest ports forwarded from the node for the tenant's next VMs, beside port 22/tcp and the
    /// template's.
    #[serde(default)]
    pub ports: Vec<crate::agent_protocol::PortSpec>,
}

/// A change of the caller's profile: each field present replaces the stored one, absent fields
/// are kept. Everything is checked first; one bad value changes nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ProfileUpdate {
    /// New SSH public keys (at most 32, each an OpenSSH `authorized_keys` line).
    #[serde(default)]
    pub ssh_keys: Option<Vec<String>>,
    /// New sealing public key.
    #[serde(default)]
    pub sealing_key: Option<String>,
    /// New guest ports (no duplicates, port 1–65535).
    #[serde(default)]
    pub ports: Option<Vec<crate::agent_protocol::PortSpec>>,
}

/// How a tenant reaches a VM: the node's public address, the ports forwarded to the guest, the
/// guest's own addresses as the node sees them, and the login user.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VmAccess {
    /// Address (IP or DNS name) of the node at which the forwarded ports answer, as its agent
    /// last reported it.
    #[serde(default)]
    pub public_address: Option<String>,
    /// Guest addresses known to the node.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Guest ports reachable at `public_address`.
    #[serde(default)]
    pub forwards: Vec<crate::agent_protocol::PortForward>,
    /// Guest ports the VM was created to expose (port 22/tcp, the template's, the tenant's).
    #[serde(default)]
    pub ports: Vec<crate::agent_protocol::PortSpec>,
    /// The user cloud-init creates, with the tenant's SSH keys.
    #[serde(default)]
    pub login_user: Option<String>,
    /// Whether sealed credentials exist (`GET /vms/{id}/credentials`).
    #[serde(default)]
    pub has_credentials: bool,
    /// `ssh -p <port> <user>@<address>`, when port 22 is forwarded.
    #[serde(default)]
    pub ssh_command: Option<String>,
    /// The VM's HTTP ports served over HTTPS by name through its node's ingress (empty when the
    /// orchestrator has no ingress domain, or the node runs no ingress).
    #[serde(default)]
    pub urls: Vec<IngressUrl>,
    /// Whether the VM's node runs an ingress, as its agent reported it (`None`: not reported).
    /// `false` on a node that is not relayed: the VM's HTTP ports get no names; they are
    /// forwarded directly (`forwards`). A relayed node's names are served by its relay.
    #[serde(default)]
    pub node_ingress: Option<bool>,
    /// The relay the VM is reached through, when its node accepts no inbound connections: then
    /// `public_address` is the relay's, `forwards` name the relay's ports, and the `urls`' names
    /// are served by the relay (their DNS records point at `public_address`).
    #[serde(default)]
    pub relay: Option<RelayEndpoint>,
    /// Bytes relays carried for the VM, summed over every relay that ever carried it.
    #[serde(default)]
    pub relay_traffic: Option<RelayTraffic>,
}

/// The relay a VM of a node behind NAT is reached through.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RelayEndpoint {
    /// Node id of the relay.
    pub relay_node_id: String,
    /// The relay's public address (IP or DNS name).
    pub address: String,
    /// Ports of the relay's own address, one per forwarded guest port that is published.
    #[serde(default)]
    pub forwards: Vec<crate::agent_protocol::PortForward>,
}

/// Bytes carried by relays for one VM (cumulative; counters that restart are continued).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RelayTraffic {
    /// Bytes from clients towards the VM.
    pub bytes_in: u64,
    /// Bytes from the VM towards clients.
    pub bytes_out: u64,
}

/// One HTTP port of a VM served at `https://<name>.<ingress domain>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IngressUrl {
    /// Port inside the guest that speaks HTTP.
    pub guest: u16,
    /// The name: one DNS label, unique on the orchestrator.
    pub name: String,
    /// `https://<name>.<domain>` (with the port when the ingress does not listen on 443).
    pub url: String,
    /// Whether the tenant chose the name (else it was derived from the VM and port).
    pub chosen: bool,
}

/// Serve one of a VM's guest ports over HTTPS by name (`PUT /vms/{id}/ingress/{port}`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ExposeRequest {
    /// The name (one lowercase DNS label); absent keeps the port's name, or derives one from
    /// the VM and port (`vm-7-8080`).
    #[serde(default)]
    pub name: Option<String>,
}

/// A name that is free now (`GET /ingress/names/{name}`): checked like a name a tenant gives a
/// VM's port, and held by no VM. Nothing is reserved.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IngressNameFree {
    /// The name.
    pub name: String,
    /// The URL a port with this name is served at.
    pub url: String,
}

/// Whether this orchestrator names HTTPS routes (`GET /ingress`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IngressInfo {
    /// The domain names live under; absent: no ingress names (HTTP ports are forwarded
    /// directly like any other port).
    pub domain: Option<String>,
    /// The port the nodes' ingress serves HTTPS on.
    pub https_port: Option<u16>,
}

/// One VM with how to reach it and whether its services are ready.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VmDetail {
    /// The VM.
    #[serde(flatten)]
    pub vm: VmRecord,
    /// How to reach it.
    pub access: VmAccess,
    /// Its services' readiness, as its node last checked them.
    #[serde(default)]
    pub readiness: VmReadiness,
}

/// Readiness of a VM's services (the checks of its template), as its node last reported them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VmReadiness {
    /// Whether the VM runs and every check passed; absent until its node reports the VM.
    #[serde(default)]
    pub ready: Option<bool>,
    /// When that report arrived, unix seconds (the orchestrator's clock).
    #[serde(default)]
    pub reported_at: Option<i64>,
    /// One entry per check, in the template's order.
    #[serde(default)]
    pub services: Vec<ServiceReadiness>,
}

/// Whether a service passed its check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    /// The check passed at its last run.
    Ready,
    /// The check failed at its last run (`detail` says why).
    NotReady,
}

/// One service's check and how it went.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServiceReadiness {
    /// What is checked, in words (`https :443/ expects 401`).
    pub check: String,
    /// The check itself.
    pub probe: crate::agent_protocol::ReadinessProbe,
    /// How its last run went.
    pub state: ServiceState,
    /// When it last ran, unix seconds (the node's clock).
    #[serde(default)]
    pub checked_at: Option<u64>,
    /// Why it is not ready, when it is not.
    #[serde(default)]
    pub detail: Option<String>,
}

impl From<&crate::agent_protocol::ProbeResult> for ServiceReadiness {
    fn from(result: &crate::agent_protocol::ProbeResult) -> Self {
        Self {
            check: result.probe.describe(),
            probe: result.probe.clone(),
            state: if result.ok {
                ServiceState::Ready
            } else {
                ServiceState::NotReady
            },
            checked_at: result.checked_at,
            detail: result.detail.clone(),
        }
    }
}

/// A VM's generated passwords, sealed to its tenant's key: only the tenant's wallet opens them
/// ([`crate::credentials::SealingKey::open`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SealedCredentials {
    /// VM id (the associated data of the seal).
    pub vm_id: String,
    /// HPKE suite.
    pub suite: String,
    /// The sealing public key it was sealed to.
    pub sealing_key: String,
    /// `hpke-v1:` + base64 of the encapsulated key and the ciphertext.
    pub sealed: String,
    /// When it was sealed, unix seconds.
    pub created_at: i64,
}

/// Parses a tenant's port request: `8080/tcp`, `53/udp`, `443/tcp+udp` (both), or a bare port
/// for TCP.
pub fn parse_port_request(text: &str) -> Result<Vec<crate::agent_protocol::PortSpec>, String> {
    use crate::agent_protocol::{PortProtocol, PortSpec};
    let (port, protocol) = text.trim().split_once('/').unwrap_or((text.trim(), "tcp"));
    let guest: u16 = port
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("port {port:?} is not a number from 1 to 65535"))?;
    let protocols: &[PortProtocol] = match protocol {
        "tcp" => &[PortProtocol::Tcp],
        "udp" => &[PortProtocol::Udp],
        "tcp+udp" | "udp+tcp" => &[PortProtocol::Tcp, PortProtocol::Udp],
        other => return Err(format!("protocol {other:?} is not tcp, udp or tcp+udp")),
    };
    Ok(protocols
        .iter()
        .map(|&protocol| PortSpec { guest, protocol })
        .collect())
}

/// Checks a list of requested ports: no port 0, no port twice for the same protocol.
pub fn check_ports(ports: &[crate::agent_protocol::PortSpec]) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for p in ports {
        if p.guest == 0 {
            return Err("port 0 is not a port: use 1 to 65535".into());
        }
        if !seen.insert((p.guest, p.protocol)) {
            return Err(format!("port {}/{} is listed twice", p.guest, p.protocol));
        }
    }
    Ok(())
}

/// Names a tenant may not choose for an HTTPS route: they commonly mean a service of the
/// domain itself.
pub const RESERVED_INGRESS_NAMES: &[&str] = &[
    "admin",
    "api",
    "app",
    "apps",
    "auth",
    "autoconfig",
    "autodiscover",
    "decloud",
    "dns",
    "ftp",
    "imap",
    "localhost",
    "login",
    "mail",
    "mx",
    "ns",
    "ns1",
    "ns2",
    "orchestrator",
    "pop",
    "relay",
    "root",
    "smtp",
    "status",
    "www",
];

/// Checks an ingress name: one DNS label (RFC 1123) of 1 to 63 characters `a-z`, `0-9` and
/// `-`, neither starting nor ending with `-`, not reserved ([`RESERVED_INGRESS_NAMES`]).
pub fn check_ingress_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 63 {
        return Err(format!(
            "name {name:?} must be 1 to 63 characters long (one DNS label)"
        ));
    }
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!("name {name:?} must be lowercase"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(format!(
            "name {name:?} may hold only a-z, 0-9 and - (one DNS label, no dots)"
        ));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(format!("name {name:?} must not start or end with -"));
    }
    if RESERVED_INGRESS_NAMES.contains(&name) {
        return Err(format!("name {name:?} is reserved"));
    }
    Ok(())
}

/// Checks an ingress domain: lowercase DNS labels (as [`check_ingress_name`], reserved words
/// allowed), at least two, at most 200 characters (room for a name in front).
pub fn check_ingress_domain(domain: &str) -> Result<(), String> {
    if domain.len() > 200 {
        return Err(format!("{domain:?} is longer than 200 characters"));
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return Err(format!(
            "{domain:?} needs at least two labels (apps.example.org)"
        ));
    }
    for label in labels {
        if let Err(e) = check_ingress_name(label)
            && !RESERVED_INGRESS_NAMES.contains(&label)
        {
            return Err(format!("{domain:?}: {e}"));
        }
    }
    Ok(())
}

impl From<crate::attestation::SignedAttestation> for AttestationView {
    fn from(a: crate::attestation::SignedAttestation) -> Self {
        Self {
            sequence: a.sequence,
            subject: a.subject,
            kind: a.kind,
            payload: a.payload,
            payload_hash: a.payload_hash.to_string(),
            previous: a.previous.to_string(),
            time: a.time,
            hash: a.hash.to_string(),
            signature: a.signature.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_carries_its_node_record_flattened() {
        let listing = NodeListing {
            node: NodeRecord {
                node_id: alloy::primitives::B256::with_last_byte(1).into(),
                operator: "0x01".into(),
                node_key: "0x02".into(),
                status: NodeStatus::Active,
                region: "eu-west".into(),
                endpoint: "https://n1".into(),
                metadata_cid: "bafy".into(),
                tags: vec!["ssd".into()],
                vcpus: 8,
                memory_gib: 32,
                disk_gib: 500,
                gpus: 0,
                bandwidth_mbps: 1000,
                compute_points: 800,
                prices: Prices::default(),
                registered_at: 1,
                updated_at: 2,
            },
            reputation: Reputation {
                online: true,
                last_heartbeat: Some(3),
                uptime_bps: None,
                failed_by_day: Vec::new(),
                vms_hosted: 0,
                vms_completed: 0,
                storage_proof_rate_bps: None,
            },
            used: Usage::default(),
            free: Usage::default(),
            description: String::new(),
            rating: RatingSummary::default(),
        };
        let json = serde_json::to_value(&listing).unwrap();
        assert_eq!(json["region"], "eu-west");
        assert_eq!(json["status"], "active");
        assert_eq!(json["reputation"]["online"], true);
        let back: NodeListing = serde_json::from_value(json).unwrap();
        assert_eq!(back, listing);
    }

    #[test]
    fn port_requests_parse_and_bad_ones_are_refused() {
        use crate::agent_protocol::{PortProtocol::*, PortSpec};
        assert_eq!(
            parse_port_request("8080/tcp").unwrap(),
            vec![PortSpec {
                guest: 8080,
                protocol: Tcp
            }]
        );
        assert_eq!(
            parse_port_request("53/tcp+udp").unwrap(),
            vec![
                PortSpec {
                    guest: 53,
                    protocol: Tcp
                },
                PortSpec {
                    guest: 53,
                    protocol: Udp
                }
            ]
        );
        for bad in ["0/tcp", "65536/udp", "x/tcp", "80/sctp", "-1"] {
            assert!(parse_port_request(bad).is_err(), "{bad}");
        }
        let twice = [PortSpec {
            guest: 80,
            protocol: Tcp,
        }; 2];
        assert!(check_ports(&twice).is_err());
        assert!(
            check_ports(&[PortSpec {
                guest: 0,
                protocol: Udp
            }])
            .is_err()
        );
    }

    #[test]
    fn ingress_names_are_one_lowercase_dns_label_and_not_reserved() {
        for good in ["myapp", "a", "web-1", "8080-vm-7", &"x".repeat(63)] {
            assert_eq!(check_ingress_name(good), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("", "1 to 63"),
            (&"x".repeat(64) as &str, "1 to 63"),
            ("MyApp", "lowercase"),
            ("my.app", "only a-z"),
            ("my_app", "only a-z"),
            ("-app", "start or end"),
            ("app-", "start or end"),
            ("www", "reserved"),
        ] {
            let e = check_ingress_name(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert_eq!(check_ingress_domain("apps.example.org"), Ok(()));
        assert_eq!(check_ingress_domain("apps.decloud.localhost"), Ok(()));
        for bad in ["localhost", "Apps.example.org", "apps..org", "a_b.org"] {
            assert!(check_ingress_domain(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_error_reply_parses_without_details() {
        let body: ErrorBody = serde_json::from_str(
            r#"{"error":{"code":"nonce_used","message":"nonce was already used"}}"#,
        )
        .unwrap();
        assert_eq!(body.error.code, "nonce_used");
        assert!(body.error.details.is_none());
    }
}

/// The orchestrator's repairer of storage deals (`GET /storage/repairer`): the address a deal's
/// owner names with `StorageMarket.setRepairer` before registering the deal's repair secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RepairerView {
    /// The repair key's address, checksummed.
    pub address: String,
    /// The chain the repairer works on.
    pub chain_id: u64,
    /// The StorageMarket whose deals it repairs.
    pub storage_market: String,
}

/// A deal's repair secret handed to the orchestrator (`POST /storage/deals/{id}/repair`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RepairRegistration {
    /// The deal's repair secret R, 32 bytes of hex (`0x` optional). It turns one replica's
    /// stored bytes into another's, never into plaintext.
    pub secret: String,
}

impl std::fmt::Debug for RepairRegistration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RepairRegistration { secret: .. }")
    }
}

/// A registered repair secret: what the orchestrator holds for the deal (never the secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RepairRegistered {
    /// The deal.
    pub deal_id: u64,
    /// Its owner, who registered the secret, lowercase hex.
    pub owner: String,
    /// The repairer address the deal names.
    pub repairer: String,
    /// When the secret was registered, unix seconds.
    pub registered_at: i64,
}

/// Where a storage repair job stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RepairJobState {
    /// To do: waiting for the market to allow the move, or for its next attempt after a failure.
    Open,
    /// The replica was rebuilt on the new node and moved there on-chain.
    Done,
    /// Nothing left to do: the deal ended, the replica was moved by someone else, or its node
    /// recovered before the move.
    Closed,
}

impl RepairJobState {
    /// The stable name, as in JSON and in the orchestrator's database.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Done => "done",
            Self::Closed => "closed",
        }
    }
}

impl std::fmt::Display for RepairJobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RepairJobState {
    type Err = crate::types::InvalidEnumName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "open" => Ok(Self::Open),
            "done" => Ok(Self::Done),
            "closed" => Ok(Self::Closed),
            _ => Err(crate::types::InvalidEnumName {
                name: "RepairJobState",
                value: s.to_string(),
            }),
        }
    }
}

/// A repair of one replica of a storage deal (`GET /storage/deals/{id}/repairs`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StorageRepairJob {
    /// The job's id.
    pub job_id: u64,
    /// The deal.
    pub deal_id: u64,
    /// The replica's index.
    pub replica: u32,
    /// The node the replica failed on, 0x-hex.
    pub from_node: String,
    /// Why the replica is repaired (missed epochs, node offline, node no longer active).
    pub reason: String,
    /// Where the job stands.
    pub state: RepairJobState,
    /// Attempts made to rebuild the replica.
    pub attempts: u32,
    /// The node the replica is rebuilt on, once chosen, 0x-hex.
    #[serde(default)]
    pub to_node: Option<String>,
    /// What stopped the latest attempt, or what the job waits for.
    #[serde(default)]
    pub error: Option<String>,
    /// When the job was opened, unix seconds.
    pub opened_at: i64,
    /// When the job last changed, unix seconds.
    pub updated_at: i64,
    /// When an open job is tried next, unix seconds.
    pub next_attempt_at: i64,
}

/// The repair jobs of a deal, newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StorageRepairs {
    /// The deal.
    pub deal_id: u64,
    /// Its jobs, newest first.
    pub jobs: Vec<StorageRepairJob>,
}

/// Where a new storage deal's replicas should go (`GET /storage/placement`): the query.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema, utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
pub struct StoragePlacementRequest {
    /// How many replicas, each on a distinct node.
    pub replicas: u32,
    /// Bytes each replica takes on its node (the padded, encrypted file).
    pub bytes: u64,
    /// Prefer nodes in this region (nodes elsewhere fill the rest).
    #[serde(default)]
    pub region: Option<String>,
    /// Node ids (0x-hex) to leave out, for example nodes that already failed an upload.
    #[serde(default)]
    pub exclude: Option<String>,
}

/// One storage node chosen for a replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StoragePlacementNode {
    /// The node's on-chain id, 0x-hex.
    pub node_id: String,
    /// The node's chunk API, as its agent last reported it.
    pub url: String,
    /// Quota minus stored bytes, as last reported.
    pub free_bytes: u64,
    /// The node's region, from its on-chain metadata (empty when it gave none).
    pub region: String,
    /// Replica-epochs proven over due, counted from StorageMarket, basis points; absent before
    /// any epoch was due.
    pub proof_rate_bps: Option<u32>,
    /// Why this node was chosen, for people.
    pub reason: String,
}

/// The chosen nodes, best first (`GET /storage/placement`); a 409 `not_enough_storage_nodes`
/// error when fewer nodes than replicas can take the deal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StoragePlacement {
    /// Exactly `replicas` distinct nodes.
    pub nodes: Vec<StoragePlacementNode>,
}

/// One storage node as the orchestrator knows it (`GET /storage/nodes/{node_id}`): where its
/// chunk API is and its state, so a deal's owner can reach a replica that moved to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StorageNodeView {
    /// The node's on-chain id, 0x-hex.
    pub node_id: NodeId,
    /// Its chunk API, as its agent last reported it; absent when it reported none.
    pub url: Option<String>,
    /// On-chain status.
    pub status: NodeStatus,
    /// Whether it sent a heartbeat lately.
    pub online: bool,
    /// Whether it drains (takes no new replicas).
    pub draining: bool,
    /// When its latest storage report arrived, unix seconds.
    pub reported_at: i64,
    /// Epochs the node proved over the epochs it was due to prove, counted from StorageMarket,
    /// basis points; absent before any epoch was due.
    pub proof_rate_bps: Option<u32>,
}

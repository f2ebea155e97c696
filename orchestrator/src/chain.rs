//! Chain events into orchestrator state, through the indexer's reorg-safe follower.
//!
//! [`ChainHandler`] runs inside the follower's transaction (the cursor moves with the writes):
//! NodeRegistry events keep the `nodes` table, LeaseEscrow's LeaseOpened records the lease and
//! its VM (Pending) and its funding, LeaseToppedUp its new funding, LeaseClosed/LeaseTerminated
//! mark the lease; TemplateMarket's TemplatePublished/TemplateUpdated give the catalog bundle
//! with that content id its on-chain template id and price, so a lease naming the template
//! finds its bundle. StorageMarket's deals, epoch challenges, accepted proofs and settlements
//! change no table and are only attested. Nothing is asked of any node
//! here; after each commit [`crate::lifecycle::drive`] acts on what was recorded (persist first,
//! side effects after, each retried by the next drive).
//!
//! The follower reads blocks `confirmations` deep. Effects of a lease event (a VM created on a
//! node) cannot be taken back, so a reorg deeper than that is refused: the follower stops with
//! an error instead of silently rewriting what nodes already did.

use crate::{
    clock::now,
    lifecycle::vm_id_of,
    scheduler::{Prices, QualityTier},
    store::{
        Attestor, LeaseFunding, LeaseOpened, NodeCapabilities, NodeRegistration, NodeStatus, chain,
    },
};
use alloy::primitives::Address;
use decloud_indexer::{BoxError, ContractKind, DecodedLog, EventDecoder, Handler, LogBatch};
use decloud_sdk::types::LeaseStatus;
use serde_json::Value;
use sqlx::AnyConnection;
use std::sync::Arc;
use tokio::sync::Notify;

/// The optional contracts the orchestrator follows besides the registry and the escrow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Markets {
    /// TemplateMarket: its publications give catalog bundles their on-chain template ids.
    pub template_market: Option<Address>,
    /// StorageMarket: its deals, epoch challenges, proofs and settlements are attested.
    pub storage_market: Option<Address>,
}

/// Applies NodeRegistry, LeaseEscrow and (when given) TemplateMarket events to the
/// orchestrator's tables, and attests (when given) StorageMarket's proof outcomes.
#[derive(Debug)]
pub struct ChainHandler {
    decoder: EventDecoder,
    committed: Arc<Notify>,
    attestor: Option<Arc<Attestor>>,
}

impl ChainHandler {
    /// A handler for the registry and escrow at these addresses; `committed` is notified after
    /// every batch that was stored.
    pub fn new(node_registry: Address, lease_escrow: Address, committed: Arc<Notify>) -> Self {
        Self::with_markets(node_registry, lease_escrow, Markets::default(), committed)
    }

    /// The same, also following whichever of the `markets` are given.
    pub fn with_markets(
        node_registry: Address,
        lease_escrow: Address,
        markets: Markets,
        committed: Arc<Notify>,
    ) -> Self {
        let decoder = EventDecoder::new(
            [
                (ContractKind::NodeRegistry, Some(node_registry)),
                (ContractKind::LeaseEscrow, Some(lease_escrow)),
                (ContractKind::TemplateMarket, markets.template_market),
                (ContractKind::StorageMarket, markets.storage_market),
            ]
            .into_iter()
            .filter_map(|(kind, address)| address.map(|a| (kind, a))),
        );
        Self {
            decoder,
            committed,
            attestor: None,
        }
    }

    /// The same, attesting every node, lease, template and storage event it applies (in the
    /// follower's transaction, so an event is applied and attested together or not at all).
    pub fn with_attestor(mut self, attestor: Attestor) -> Self {
        self.attestor = Some(Arc::new(attestor));
        self
    }

    /// The contract addresses to read logs from.
    pub fn addresses(&self) -> Vec<Address> {
        self.decoder.addresses()
    }
}

fn text(args: &Value, key: &str) -> Result<String, BoxError> {
    args.get(key)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| format!("event field {key} missing").into())
}

fn int(args: &Value, key: &str) -> Result<i64, BoxError> {
    let s = text(args, key)?;
    // uint256 amounts above i64 are clamped: they are ids and sizes here, never money.
    Ok(s.parse::<u128>()
        .map(|v| i64::try_from(v).unwrap_or(i64::MAX))
        .map_err(|_| format!("event field {key} is not an integer: {s}"))?)
}

fn field<'a>(args: &'a Value, key: &str) -> Result<&'a Value, BoxError> {
    args.get(key)
        .ok_or_else(|| format!("event field {key} missing").into())
}

fn uint(args: &Value, key: &str) -> Result<u64, BoxError> {
    // Above i64 the store clamps; these are sizes, rates and amounts of at most 64 bits on-chain.
    Ok(u64::try_from(int(args, key)?).unwrap_or(0))
}

fn capabilities(caps: &Value) -> Result<NodeCapabilities, BoxError> {
    Ok(NodeCapabilities {
        vcpus: uint(caps, "vcpus")?,
        memory_gib: uint(caps, "memoryGiB")?,
        disk_gib: uint(caps, "diskGiB")?,
        gpus: uint(caps, "gpus")?,
        bandwidth_mbps: uint(caps, "bandwidthMbps")?,
    })
}

async fn apply(
    conn: &mut AnyConnection,
    log: &DecodedLog,
    block_time: i64,
) -> Result<(), BoxError> {
    let a = &log.args;
    match log.name.as_str() {
        "NodeRegistered" | "NodeUpdated" => {
            let node = NodeRegistration {
                node_id: text(a, "nodeId")?,
                // NodeUpdated names no operator; the registration's stays.
                operator: if log.name == "NodeRegistered" {
                    text(a, "operator")?
                } else {
                    String::new()
                },
                node_key: text(a, "nodeKey")?,
                region: text(a, "region")?,
                endpoint: text(a, "endpoint")?,
                metadata_cid: text(a, "metadataCid")?,
                capabilities: capabilities(field(a, "capabilities")?)?,
            };
            if log.name == "NodeRegistered" {
                chain::node_registered(conn, &node, block_time).await?;
            } else {
                chain::node_updated(conn, &node, block_time).await?;
            }
        }
        "NodePricesSet" => {
            let p = field(a, "stored")?;
            let prices = Prices {
                cpu_per_hour: uint(p, "cpuPerHour")?,
                memory_gib_per_hour: uint(p, "memoryGiBPerHour")?,
                storage_gib_per_hour: uint(p, "storageGiBPerHour")?,
                gpu_per_hour: uint(p, "gpuPerHour")?,
            };
            chain::node_prices_set(conn, &text(a, "nodeId")?, &prices, block_time).await?;
        }
        "NodeStatusChanged" => {
            // The registry never emits None (0); a status this build does not know stops the
            // follower rather than being stored as something it is not.
            let status = match int(a, "status")? {
                1 => NodeStatus::Active,
                2 => NodeStatus::Paused,
                3 => NodeStatus::Retired,
                other => return Err(format!("unknown node status {other}").into()),
            };
            chain::node_status_changed(conn, &text(a, "nodeId")?, status, block_time).await?;
        }
        "LeaseOpened" => {
            let r = field(a, "resources")?;
            let tier = int(a, "quality")?;
            let lease = LeaseOpened {
                lease_id: text(a, "leaseId")?,
                tenant: text(a, "tenant")?,
                node_id: text(a, "nodeId")?,
                tier: u8::try_from(tier)
                    .ok()
                    .and_then(|t| QualityTier::try_from(t).ok())
                    .ok_or_else(|| format!("unknown quality tier {tier}"))?,
                vcpus: uint(r, "vcpus")?,
                memory_gib: uint(r, "memoryGiB")?,
                storage_gib: uint(r, "storageGiB")?,
                gpus: uint(r, "gpus")?,
                rate_per_hour: uint(a, "ratePerHour")?,
                opened_at: int(a, "openedAt")?,
                bandwidth: uint(a, "bandwidth")?,
                template_id: text(a, "templateId")?,
                funding: uint(a, "funding")?,
            };
            chain::lease_opened(conn, &lease, &vm_id_of(&lease.lease_id)).await?;
        }
        "LeaseToppedUp" => {
            let funding = LeaseFunding {
                funded: uint(a, "funded")?,
                accrual_start: int(a, "accrualStart")?,
                accrued_before: uint(a, "accruedBefore")?,
            };
            chain::lease_topped_up(conn, &text(a, "leaseId")?, &funding).await?;
        }
        "LeaseClosed" | "LeaseTerminated" => {
            let status = if log.name == "LeaseClosed" {
                LeaseStatus::Closed
            } else {
                LeaseStatus::Terminated
            };
            chain::lease_ended(conn, &text(a, "leaseId")?, status).await?;
        }
        "TemplatePublished" | "TemplateUpdated" => {
            // The bundle is known by its content id; a publication of content the catalog
            // does not hold names no bundle, and a lease on it fails its VM with that reason.
            chain::template_published(
                conn,
                &text(a, "templateId")?,
                uint(a, "price")?,
                &text(a, "cid")?,
            )
            .await?;
        }
        // Settlements, claims, storage deals and governance events change no orchestrator
        // state; storage deals are only attested.
        _ => {}
    }
    Ok(())
}

/// The subject and kind an applied event is attested under, for the events that change state.
fn attested_as(log: &DecodedLog) -> Option<(String, &'static str)> {
    let id = |key: &str| log.args.get(key).and_then(Value::as_str).unwrap_or("");
    let (prefix, key, kind) = match log.name.as_str() {
        "NodeRegistered" => ("node", "nodeId", "node.registered"),
        "NodeUpdated" => ("node", "nodeId", "node.updated"),
        "NodePricesSet" => ("node", "nodeId", "node.prices_set"),
        "NodeStatusChanged" => ("node", "nodeId", "node.status_changed"),
        "LeaseOpened" => ("lease", "leaseId", "lease.opened"),
        "LeaseToppedUp" => ("lease", "leaseId", "lease.topped_up"),
        "LeaseClosed" => ("lease", "leaseId", "lease.closed"),
        "LeaseTerminated" => ("lease", "leaseId", "lease.terminated"),
        "TemplatePublished" => ("template", "templateId", "template.published"),
        "TemplateUpdated" => ("template", "templateId", "template.updated"),
        // Storage proof outcomes, per deal: the challenge of an epoch (its randomness fixes the
        // segments every replica must prove), a replica's accepted and paid proof, and the
        // settlement whose refund is what the unproven, i.e. failed, epochs would have earned.
        "DealCreated" => ("deal", "dealId", "storage.deal_created"),
        "EpochRandomnessRecorded" => ("deal", "dealId", "storage.epoch_challenged"),
        "EpochProven" => ("deal", "dealId", "storage.epoch_proven"),
        "DealSettled" => ("deal", "dealId", "storage.deal_settled"),
        _ => return None,
    };
    Some((format!("{prefix}:{}", id(key).to_lowercase()), kind))
}

impl Handler for ChainHandler {
    async fn handle(&self, conn: &mut AnyConnection, batch: &LogBatch<'_>) -> Result<(), BoxError> {
        let block_time = i64::try_from(batch.to.timestamp).unwrap_or(i64::MAX);
        for log in batch.logs {
            if let Some(decoded) = self.decoder.decode(log) {
                apply(conn, &decoded, block_time).await?;
                if let (Some(attestor), Some((subject, kind))) =
                    (&self.attestor, attested_as(&decoded))
                {
                    let payload = serde_json::json!({
                        "event": decoded.name,
                        "args": decoded.args,
                        "block_number": log.block_number,
                        "transaction_hash": log.transaction_hash,
                        "log_index": log.log_index,
                    });
                    crate::store::append(conn, attestor, &subject, kind, &payload, now()).await?;
                }
            }
        }
        Ok(())
    }

    async fn rollback(&self, _conn: &mut AnyConnection, ancestor: u64) -> Result<(), BoxError> {
        Err(format!(
            "chain reorganised below block {ancestor}, deeper than the confirmation depth; lease events above it \
             may already have been carried out on nodes, so the orchestrator stops for an operator to decide"
        )
        .into())
    }

    fn committed(&self, _batch: &LogBatch<'_>) {
        self.committed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;
    use sqlx::Connection;

    #[tokio::test]
    async fn a_publication_names_the_catalog_bundle_with_its_content_id() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("o.db").display());
        let store = Store::connect(&url).await.unwrap();
        let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates/seed");
        crate::catalog::load_dir(&store, &seeds, 0).await.unwrap();
        let pg = store.template("postgresql").await.unwrap().unwrap();
        assert_eq!(pg.template_id, None);

        let mut conn = AnyConnection::connect(&url).await.unwrap();
        let published = |id: &str, cid: &str| DecodedLog {
            contract: ContractKind::TemplateMarket,
            name: "TemplatePublished".into(),
            args: serde_json::json!({
                "templateId": id, "author": "0x0000000000000000000000000000000000000001",
                "cid": cid, "price": "2500000", "metadata": "{}"
            }),
        };
        apply(&mut conn, &published("7", &pg.cid), 0).await.unwrap();
        // Content the catalog does not hold names no bundle and changes nothing.
        apply(&mut conn, &published("8", "bafynotinthecatalog"), 0)
            .await
            .unwrap();
        conn.close().await.unwrap();

        let by_id = store.template("7").await.unwrap().expect("found by id");
        assert_eq!(
            (
                by_id.slug.as_str(),
                by_id.template_id.as_deref(),
                by_id.price
            ),
            ("postgresql", Some("7"), 2_500_000)
        );
        assert!(store.template("8").await.unwrap().is_none());

        // A restart loads the catalog again; the mapping of unchanged content survives it.
        crate::catalog::load_dir(&store, &seeds, 1).await.unwrap();
        let again = store
            .template("7")
            .await
            .unwrap()
            .expect("still found by id");
        assert_eq!(
            (again.slug.as_str(), again.price),
            ("postgresql", 2_500_000)
        );
        store.close().await;
    }
}

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
//! Each event is decoded twice: into the SDK's generated binding of its contract, whose typed
//! fields are what the tables receive (a renamed event field is a compile error), and by the
//! indexer's generic decoder into a name and JSON arguments, which is what an attestation of the
//! event signs.
//!
//! The follower reads blocks `confirmations` deep. Effects of a lease event (a VM created on a
//! node) cannot be taken back, so a reorg deeper than that is refused: the follower stops with
//! an error instead of silently rewriting what nodes already did.

use crate::{
    clock::now,
    scheduler::{Prices, QualityTier},
    store::{
        Attestor, LeaseFunding, LeaseOpened, NodeCapabilities, NodeRegistration, NodeStatus, chain,
    },
};
use alloy::{
    primitives::{Address, Log, U256},
    sol_types::SolEventInterface,
};
use decloud_indexer::{BoxError, ContractKind, DecodedLog, EventDecoder, Handler, LogBatch};
use decloud_sdk::{
    VmId,
    bindings::{
        LeaseEscrow::LeaseEscrowEvents, NodeRegistry::NodeRegistryEvents,
        TemplateMarket::TemplateMarketEvents,
    },
    types::LeaseStatus,
};
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

/// A uint256 of the chain as the store keeps it: ids, sizes, rates and amounts that fit in 64
/// bits on-chain; anything larger is clamped (and the store clamps above i64), never wrapped.
fn clamp(v: U256) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// Seconds on-chain as the store keeps them.
fn secs(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Applies one event to the tables, decoded into the SDK's generated binding of the contract
/// that emitted it: a renamed or retyped event field is a compile error here, not a missing key
/// at run time. Events that change no orchestrator state (settlements, claims, storage deals,
/// governance) and logs no binding knows are left alone.
async fn apply(
    conn: &mut AnyConnection,
    contract: ContractKind,
    log: &Log,
    block_time: i64,
) -> Result<(), BoxError> {
    match contract {
        ContractKind::NodeRegistry => {
            let Ok(event) = NodeRegistryEvents::decode_log(log) else {
                return Ok(());
            };
            match event.data {
                NodeRegistryEvents::NodeRegistered(e) => {
                    let node = NodeRegistration {
                        node_id: e.nodeId.into(),
                        operator: format!("{:#x}", e.operator),
                        node_key: format!("{:#x}", e.nodeKey),
                        region: e.region,
                        endpoint: e.endpoint,
                        metadata_cid: e.metadataCid,
                        capabilities: NodeCapabilities {
                            vcpus: e.capabilities.vcpus.into(),
                            memory_gib: e.capabilities.memoryGiB.into(),
                            disk_gib: e.capabilities.diskGiB.into(),
                            gpus: e.capabilities.gpus.into(),
                            bandwidth_mbps: e.capabilities.bandwidthMbps.into(),
                            flags: e.capabilities.flags,
                        },
                    };
                    chain::node_registered(conn, &node, block_time).await?;
                }
                NodeRegistryEvents::NodeUpdated(e) => {
                    let node = NodeRegistration {
                        node_id: e.nodeId.into(),
                        // NodeUpdated names no operator; the registration's stays.
                        operator: String::new(),
                        node_key: format!("{:#x}", e.nodeKey),
                        region: e.region,
                        endpoint: e.endpoint,
                        metadata_cid: e.metadataCid,
                        capabilities: NodeCapabilities {
                            vcpus: e.capabilities.vcpus.into(),
                            memory_gib: e.capabilities.memoryGiB.into(),
                            disk_gib: e.capabilities.diskGiB.into(),
                            gpus: e.capabilities.gpus.into(),
                            bandwidth_mbps: e.capabilities.bandwidthMbps.into(),
                            flags: e.capabilities.flags,
                        },
                    };
                    chain::node_updated(conn, &node, block_time).await?;
                }
                NodeRegistryEvents::NodePricesSet(e) => {
                    let prices = Prices {
                        cpu_per_hour: e.stored.cpuPerHour,
                        memory_gib_per_hour: e.stored.memoryGiBPerHour,
                        storage_gib_per_hour: e.stored.storageGiBPerHour,
                        gpu_per_hour: e.stored.gpuPerHour,
                    };
                    chain::node_prices_set(conn, e.nodeId.into(), &prices, block_time).await?;
                }
                NodeRegistryEvents::NodeStatusChanged(e) => {
                    // The registry never emits None (0); a status this build does not know stops
                    // the follower rather than being stored as something it is not.
                    let status = match NodeStatus::try_from(e.status) {
                        Ok(s) if s != NodeStatus::None => s,
                        _ => return Err(format!("unknown node status {}", e.status).into()),
                    };
                    chain::node_status_changed(conn, e.nodeId.into(), status, block_time).await?;
                }
                _ => {}
            }
        }
        ContractKind::LeaseEscrow => {
            let Ok(event) = LeaseEscrowEvents::decode_log(log) else {
                return Ok(());
            };
            match event.data {
                LeaseEscrowEvents::LeaseOpened(e) => {
                    let lease = LeaseOpened {
                        lease_id: e.leaseId.into(),
                        tenant: format!("{:#x}", e.tenant),
                        node_id: e.nodeId.into(),
                        tier: QualityTier::try_from(e.quality)
                            .map_err(|_| format!("unknown quality tier {}", e.quality))?,
                        vcpus: e.resources.vcpus.into(),
                        memory_gib: e.resources.memoryGiB.into(),
                        storage_gib: e.resources.storageGiB.into(),
                        gpus: e.resources.gpus.into(),
                        rate_per_hour: e.ratePerHour,
                        opened_at: secs(e.openedAt),
                        bandwidth: e.bandwidth.into(),
                        template_id: (!e.templateId.is_zero()).then(|| e.templateId.into()),
                        funding: clamp(e.funding),
                    };
                    chain::lease_opened(conn, &lease, VmId::for_lease(lease.lease_id)).await?;
                }
                LeaseEscrowEvents::LeaseToppedUp(e) => {
                    let funding = LeaseFunding {
                        funded: clamp(e.funded),
                        accrual_start: secs(e.accrualStart),
                        accrued_before: clamp(e.accruedBefore),
                    };
                    chain::lease_topped_up(conn, e.leaseId.into(), &funding).await?;
                }
                LeaseEscrowEvents::LeaseClosed(e) => {
                    chain::lease_ended(conn, e.leaseId.into(), LeaseStatus::Closed).await?;
                }
                LeaseEscrowEvents::LeaseTerminated(e) => {
                    chain::lease_ended(conn, e.leaseId.into(), LeaseStatus::Terminated).await?;
                }
                _ => {}
            }
        }
        ContractKind::TemplateMarket => {
            let Ok(event) = TemplateMarketEvents::decode_log(log) else {
                return Ok(());
            };
            // The bundle is known by its content id; a publication of content the catalog does
            // not hold names no bundle, and a lease on it fails its VM with that reason.
            match event.data {
                TemplateMarketEvents::TemplatePublished(e) => {
                    chain::template_published(conn, e.templateId.into(), clamp(e.price), &e.cid)
                        .await?;
                }
                TemplateMarketEvents::TemplateUpdated(e) => {
                    chain::template_published(conn, e.templateId.into(), clamp(e.price), &e.cid)
                        .await?;
                }
                _ => {}
            }
        }
        // Storage deals change no table; they are only attested.
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
        // The owner's controls over a running deal: who may repair it, a replica moved off its
        // node (the record of which node lost which replica), and an early end.
        "RepairerSet" => ("deal", "dealId", "storage.repairer_set"),
        "ReplicaReplaced" => ("deal", "dealId", "storage.replica_replaced"),
        "DealEnded" => ("deal", "dealId", "storage.deal_ended"),
        _ => return None,
    };
    Some((format!("{prefix}:{}", id(key).to_lowercase()), kind))
}

impl Handler for ChainHandler {
    async fn handle(&self, conn: &mut AnyConnection, batch: &LogBatch<'_>) -> Result<(), BoxError> {
        let block_time = i64::try_from(batch.to.timestamp).unwrap_or(i64::MAX);
        for log in batch.logs {
            if let Some(decoded) = self.decoder.decode(log) {
                apply(conn, decoded.contract, &log.inner, block_time).await?;
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
        let published = |id: u64, cid: &str| Log {
            address: Address::ZERO,
            data: alloy::sol_types::SolEvent::encode_log_data(
                &decloud_sdk::bindings::TemplateMarket::TemplatePublished {
                    templateId: U256::from(id),
                    author: Address::with_last_byte(1),
                    cid: cid.to_string(),
                    price: U256::from(2_500_000u64),
                    metadata: "{}".to_string(),
                },
            ),
        };
        apply(
            &mut conn,
            ContractKind::TemplateMarket,
            &published(7, &pg.cid),
            0,
        )
        .await
        .unwrap();
        // Content the catalog does not hold names no bundle and changes nothing.
        apply(
            &mut conn,
            ContractKind::TemplateMarket,
            &published(8, "bafynotinthecatalog"),
            0,
        )
        .await
        .unwrap();
        conn.close().await.unwrap();

        let by_id = store.template("7").await.unwrap().expect("found by id");
        assert_eq!(
            (
                by_id.slug.as_str(),
                by_id.template_id.map(|id| id.to_string()).as_deref(),
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

//! The indexer's handler: stores every decoded log as a raw event and derives the entities from it
//! in the same transaction.

use std::collections::HashSet;

use alloy::primitives::{Address, B256, U256};
use alloy::rpc::types::Log;
use alloy::sol_types::SolEvent;
use serde::Serialize;
// Dynamic SQL here is assembled only from the schema's static identifiers and numbered placeholders;
// every value is bound, so `AssertSqlSafe` holds.
use sqlx::AssertSqlSafe;
use sqlx::{AnyConnection, Row};
use tokio::sync::broadcast;

use crate::db::Backend;
use crate::error::{BoxError, StoreError};
use crate::events::{
    ContractKind, DecodedLog, EventDecoder, IAttestationAnchor, ILeaseEscrow, INodeRegistry,
    IOperatorStaking, IStorageMarket, ITemplateMarket,
};
use crate::follower::{Handler, LogBatch};
use crate::schema::{
    ACCOUNTS, ANCHORS, CLAIMS, DEAL_EPOCHS, DEAL_REPLICAS, DEALS, EntityDef, LEASES, NODE_PRICES,
    NODES, PROOFS, PURCHASES, REPLICA_MOVES, STAKES, STORAGE_PAYEES, TEMPLATES, UNSTAKE_REQUESTS,
};
use crate::store::{Changes, EntityRow, Val, prune_undo, rollback};

/// A committed event, as sent to GraphQL subscribers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventNotice {
    /// `<transaction hash>-<log index>`.
    pub id: String,
    /// The block.
    pub block_number: u64,
    /// The block's hash.
    pub block_hash: String,
    /// The transaction.
    pub transaction_hash: String,
    /// The log's index in the block.
    pub log_index: u64,
    /// The emitting contract's address.
    pub address: String,
    /// The emitting contract.
    pub contract: String,
    /// The event's name.
    pub name: String,
    /// The arguments as JSON text.
    pub args: String,
}

/// Stores DeCloud's events and entities. Idempotent per (block hash, log index): logs already stored
/// are skipped with their entity effects.
#[derive(Debug)]
pub struct IndexerHandler {
    decoder: EventDecoder,
    backend: Backend,
    escrow: Option<Address>,
    notices: broadcast::Sender<EventNotice>,
}

impl IndexerHandler {
    /// A handler for the contracts the decoder knows.
    pub fn new(decoder: EventDecoder, backend: Backend) -> Self {
        let escrow = decoder
            .addresses()
            .into_iter()
            .find(|a| decoder.contract(*a) == Some(ContractKind::LeaseEscrow));
        let (notices, _) = broadcast::channel(4096);
        Self {
            decoder,
            backend,
            escrow,
            notices,
        }
    }

    /// Subscribes to committed events (a slow subscriber misses the oldest ones).
    pub fn subscribe(&self) -> broadcast::Receiver<EventNotice> {
        self.notices.subscribe()
    }

    /// The sender side, for servers that hand out subscriptions.
    pub fn notices(&self) -> broadcast::Sender<EventNotice> {
        self.notices.clone()
    }

    async fn stored(
        &self,
        conn: &mut AnyConnection,
        from: u64,
        to: u64,
    ) -> Result<HashSet<(String, i64)>, StoreError> {
        let sql = format!(
            "SELECT block_hash, log_index FROM events WHERE block_number >= {} AND block_number <= {}",
            self.backend.param(1),
            self.backend.param(2)
        );
        let rows = sqlx::query(AssertSqlSafe(sql.as_str()))
            .bind(from as i64)
            .bind(to as i64)
            .fetch_all(conn)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    async fn insert_events(
        &self,
        conn: &mut AnyConnection,
        events: &[(&Log, DecodedLog)],
    ) -> Result<(), StoreError> {
        const COLS: usize = 9;
        for chunk in events.chunks(30_000 / COLS) {
            let mut sql = String::from(
                "INSERT INTO events (id, block_number, block_hash, tx_hash, log_index, address, \
                 contract, name, args) VALUES ",
            );
            for r in 0..chunk.len() {
                if r > 0 {
                    sql.push(',');
                }
                sql.push('(');
                for c in 0..COLS {
                    if c > 0 {
                        sql.push(',');
                    }
                    sql.push_str(&self.backend.param(r * COLS + c + 1));
                }
                sql.push(')');
            }
            let mut q = sqlx::query(AssertSqlSafe(sql.as_str()));
            for (log, d) in chunk {
                let tx = log.transaction_hash.unwrap_or_default();
                let index = log.log_index.unwrap_or_default();
                q = q
                    .bind(format!("{tx}-{index}"))
                    .bind(log.block_number.unwrap_or_default() as i64)
                    .bind(log.block_hash.unwrap_or_default().to_string())
                    .bind(tx.to_string())
                    .bind(index as i64)
                    .bind(format!("{:#x}", log.address()))
                    .bind(d.contract.name())
                    .bind(d.name.clone())
                    .bind(d.args.to_string());
            }
            q.execute(&mut *conn).await?;
        }
        Ok(())
    }
}

impl Handler for IndexerHandler {
    async fn handle(&self, conn: &mut AnyConnection, batch: &LogBatch<'_>) -> Result<(), BoxError> {
        let stored = self.stored(conn, batch.from, batch.to.number).await?;
        let mut decoded = Vec::with_capacity(batch.logs.len());
        for log in batch.logs {
            let key = (
                log.block_hash.unwrap_or_default().to_string(),
                log.log_index.unwrap_or_default() as i64,
            );
            if stored.contains(&key) {
                continue;
            }
            if let Some(d) = self.decoder.decode(log) {
                decoded.push((log, d));
            }
        }
        self.insert_events(conn, &decoded).await?;
        let mut changes = Changes::new(self.backend, batch.final_block);
        for (log, d) in &decoded {
            apply(conn, &mut changes, log, d.contract, self.escrow).await?;
        }
        changes.flush(conn).await?;
        prune_undo(conn, self.backend, batch.final_block).await?;
        Ok(())
    }

    async fn rollback(&self, conn: &mut AnyConnection, ancestor: u64) -> Result<(), BoxError> {
        rollback(conn, self.backend, ancestor).await?;
        Ok(())
    }

    fn committed(&self, batch: &LogBatch<'_>) {
        if self.notices.receiver_count() == 0 {
            return;
        }
        for log in batch.logs {
            if let Some(d) = self.decoder.decode(log) {
                let tx = log.transaction_hash.unwrap_or_default();
                let index = log.log_index.unwrap_or_default();
                let _ = self.notices.send(EventNotice {
                    id: format!("{tx}-{index}"),
                    block_number: log.block_number.unwrap_or_default(),
                    block_hash: log.block_hash.unwrap_or_default().to_string(),
                    transaction_hash: tx.to_string(),
                    log_index: index,
                    address: format!("{:#x}", log.address()),
                    contract: d.contract.name().to_owned(),
                    name: d.name,
                    args: d.args.to_string(),
                });
            }
        }
    }
}

fn hex_addr(a: Address) -> Val {
    Val::text(format!("{a:#x}"))
}

fn hex_b256(b: B256) -> Val {
    Val::text(b.to_string())
}

/// The per-log context entity changes need.
struct Ctx<'a> {
    block: u64,
    tx: String,
    event_id: String,
    conn: &'a mut AnyConnection,
}

impl Ctx<'_> {
    async fn load(
        &mut self,
        changes: &mut Changes,
        def: &'static EntityDef,
        id: &str,
    ) -> Result<(Option<EntityRow>, EntityRow), StoreError> {
        let previous = changes.get(self.conn, def, id).await?;
        let row = previous.clone().unwrap_or_else(|| EntityRow::new(def, id));
        Ok((previous, row))
    }
}

/// Applies one decoded log to the entities.
async fn apply(
    conn: &mut AnyConnection,
    changes: &mut Changes,
    log: &Log,
    contract: ContractKind,
    escrow: Option<Address>,
) -> Result<(), StoreError> {
    let tx = log.transaction_hash.unwrap_or_default().to_string();
    let event_id = format!("{tx}-{}", log.log_index.unwrap_or_default());
    let mut cx = Ctx {
        block: log.block_number.unwrap_or_default(),
        tx,
        event_id,
        conn,
    };
    let data = &log.inner;
    match contract {
        ContractKind::NodeRegistry => {
            use INodeRegistry::INodeRegistryEvents as E;
            let Ok(event) = <E as alloy::sol_types::SolEventInterface>::decode_log(data) else {
                return Ok(());
            };
            node_registry(&mut cx, changes, event.data).await
        }
        ContractKind::OperatorStaking => {
            use IOperatorStaking::IOperatorStakingEvents as E;
            let Ok(event) = <E as alloy::sol_types::SolEventInterface>::decode_log(data) else {
                return Ok(());
            };
            staking(&mut cx, changes, event.data).await
        }
        ContractKind::LeaseEscrow => {
            use ILeaseEscrow::ILeaseEscrowEvents as E;
            let Ok(event) = <E as alloy::sol_types::SolEventInterface>::decode_log(data) else {
                return Ok(());
            };
            escrow_events(&mut cx, changes, event.data).await
        }
        ContractKind::TemplateMarket => {
            use ITemplateMarket::ITemplateMarketEvents as E;
            let Ok(event) = <E as alloy::sol_types::SolEventInterface>::decode_log(data) else {
                return Ok(());
            };
            templates(&mut cx, changes, event.data, escrow).await
        }
        ContractKind::AttestationAnchor => {
            let Ok(e) = IAttestationAnchor::BatchAnchored::decode_log(data) else {
                return Ok(());
            };
            let e = e.data;
            let mut row = EntityRow::new(&ANCHORS, e.batchId.to_string());
            row.set("batch_id", Val::big(e.batchId))
                .set("root", hex_b256(e.root))
                .set("count", Val::u64(e.count))
                .set("first_sequence", Val::u64(e.firstSequence))
                .set("timestamp", Val::u64(e.timestamp))
                .set("uri", Val::text(e.uri))
                .set("block_number", Val::u64(cx.block))
                .set("tx_hash", Val::text(cx.tx.clone()));
            // Batch ids are unique, so the row is new: no read needed on this hot path.
            changes.put(cx.block, None, row);
            Ok(())
        }
        ContractKind::StorageMarket => {
            use IStorageMarket::IStorageMarketEvents as E;
            let Ok(event) = <E as alloy::sol_types::SolEventInterface>::decode_log(data) else {
                return Ok(());
            };
            storage(&mut cx, changes, event.data).await
        }
    }
}

fn status_name(kind: &str, v: u8) -> String {
    let names: &[&str] = match kind {
        "node" => &["None", "Active", "Paused", "Retired"],
        _ => &["None", "Active", "Closed", "Terminated"],
    };
    names
        .get(v as usize)
        .map_or_else(|| format!("Unknown({v})"), |s| (*s).to_owned())
}

fn set_capabilities(row: &mut EntityRow, c: &INodeRegistry::Capabilities) {
    row.set("vcpus", Val::Int(c.vcpus.into()))
        .set("memory_gib", Val::Int(c.memoryGiB.into()))
        .set("disk_gib", Val::Int(c.diskGiB.into()))
        .set("gpus", Val::Int(c.gpus.into()))
        .set("bandwidth_mbps", Val::Int(c.bandwidthMbps.into()))
        .set("architecture", Val::Int(c.architecture as i64))
        .set("flags", Val::Int(c.flags.into()));
}

async fn node_registry(
    cx: &mut Ctx<'_>,
    changes: &mut Changes,
    event: INodeRegistry::INodeRegistryEvents,
) -> Result<(), StoreError> {
    use INodeRegistry::INodeRegistryEvents as E;
    match event {
        E::NodeRegistered(e) => {
            let (previous, mut row) = cx.load(changes, &NODES, &e.nodeId.to_string()).await?;
            row.set("operator", hex_addr(e.operator))
                .set("node_key", hex_addr(e.nodeKey))
                .set("machine_id", hex_b256(e.machineId))
                .set("region", Val::text(e.region))
                .set("endpoint", Val::text(e.endpoint))
                .set("metadata_cid", Val::text(e.metadataCid))
                .set("status", Val::text("Active"))
                .set("registered_block", Val::u64(cx.block))
                .set("updated_block", Val::u64(cx.block));
            set_capabilities(&mut row, &e.capabilities);
            changes.put(cx.block, previous.as_ref(), row);
        }
        E::NodeUpdated(e) => {
            let (previous, mut row) = cx.load(changes, &NODES, &e.nodeId.to_string()).await?;
            row.set("node_key", hex_addr(e.nodeKey))
                .set("region", Val::text(e.region))
                .set("endpoint", Val::text(e.endpoint))
                .set("metadata_cid", Val::text(e.metadataCid))
                .set("updated_block", Val::u64(cx.block));
            set_capabilities(&mut row, &e.capabilities);
            changes.put(cx.block, previous.as_ref(), row);
        }
        E::NodePricesSet(e) => {
            let node = e.nodeId.to_string();
            let (previous, mut row) = cx.load(changes, &NODES, &node).await?;
            row.set("cpu_per_hour", Val::u64(e.stored.cpuPerHour))
                .set("memory_gib_per_hour", Val::u64(e.stored.memoryGiBPerHour))
                .set("storage_gib_per_hour", Val::u64(e.stored.storageGiBPerHour))
                .set("gpu_per_hour", Val::u64(e.stored.gpuPerHour))
                .add_int("price_changes", 1)
                .set("updated_block", Val::u64(cx.block));
            changes.put(cx.block, previous.as_ref(), row);
            let mut price = EntityRow::new(&NODE_PRICES, cx.event_id.clone());
            price
                .set("node", Val::text(node))
                .set("cpu_per_hour", Val::u64(e.stored.cpuPerHour))
                .set("memory_gib_per_hour", Val::u64(e.stored.memoryGiBPerHour))
                .set("storage_gib_per_hour", Val::u64(e.stored.storageGiBPerHour))
                .set("gpu_per_hour", Val::u64(e.stored.gpuPerHour))
                .set("requested_cpu_per_hour", Val::u64(e.requested.cpuPerHour))
                .set(
                    "requested_memory_gib_per_hour",
                    Val::u64(e.requested.memoryGiBPerHour),
                )
                .set(
                    "requested_storage_gib_per_hour",
                    Val::u64(e.requested.storageGiBPerHour),
                )
                .set("requested_gpu_per_hour", Val::u64(e.requested.gpuPerHour))
                .set("block_number", Val::u64(cx.block))
                .set("tx_hash", Val::text(cx.tx.clone()));
            changes.put(cx.block, None, price);
        }
        E::NodeStatusChanged(e) => {
            let (previous, mut row) = cx.load(changes, &NODES, &e.nodeId.to_string()).await?;
            row.set("status", Val::text(status_name("node", e.status as u8)))
                .set("updated_block", Val::u64(cx.block));
            changes.put(cx.block, previous.as_ref(), row);
        }
        // Governance parameters live in the raw events only.
        E::FloorPricesSet(_) | E::DefaultPricesSet(_) => {}
    }
    Ok(())
}

async fn staking(
    cx: &mut Ctx<'_>,
    changes: &mut Changes,
    event: IOperatorStaking::IOperatorStakingEvents,
) -> Result<(), StoreError> {
    use IOperatorStaking::IOperatorStakingEvents as E;
    match event {
        E::Staked(e) => {
            let id = format!("{:#x}", e.operator);
            let (previous, mut row) = cx.load(changes, &STAKES, &id).await?;
            row.set("operator", hex_addr(e.operator))
                .set("active_stake", Val::big(e.activeStake))
                .add_big("total_staked", e.amount)
                .set("updated_block", Val::u64(cx.block));
            changes.put(cx.block, previous.as_ref(), row);
        }
        E::UnstakeRequested(e) => {
            let id = format!("{:#x}", e.operator);
            let (previous, mut row) = cx.load(changes, &STAKES, &id).await?;
            row.set("operator", hex_addr(e.operator))
                .set("active_stake", Val::big(e.activeStake))
                .add_big("unbonding", e.amount)
                .add_int("request_count", 1)
                .set("updated_block", Val::u64(cx.block));
            changes.put(cx.block, previous.as_ref(), row);
            let request_id = format!("{id}-{}", e.requestId);
            let (previous, mut request) = cx.load(changes, &UNSTAKE_REQUESTS, &request_id).await?;
            request
                .set("operator", hex_addr(e.operator))
                .set("request_id", Val::u64(e.requestId.saturating_to()))
                .set("amount", Val::big(e.amount))
                .set("unlock_at", Val::u64(e.unlockAt))
                .set("withdrawn", Val::bool(false))
                .set("requested_block", Val::u64(cx.block));
            changes.put(cx.block, previous.as_ref(), request);
        }
        E::Withdrawn(e) => {
            let id = format!("{:#x}", e.operator);
            let (previous, mut row) = cx.load(changes, &STAKES, &id).await?;
            row.set("operator", hex_addr(e.operator))
                .sub_big("unbonding", e.amount)
                .add_big("total_withdrawn", e.amount)
                .set("updated_block", Val::u64(cx.block));
            changes.put(cx.block, previous.as_ref(), row);
            let request_id = format!("{id}-{}", e.requestId);
            let (previous, mut request) = cx.load(changes, &UNSTAKE_REQUESTS, &request_id).await?;
            request
                .set("operator", hex_addr(e.operator))
                .set("request_id", Val::u64(e.requestId.saturating_to()))
                .set("withdrawn", Val::bool(true))
                .set("withdrawn_block", Val::u64(cx.block));
            changes.put(cx.block, previous.as_ref(), request);
        }
        E::PremiumThresholdSet(_) | E::UnbondingPeriodSet(_) => {}
    }
    Ok(())
}

async fn account_delta(
    cx: &mut Ctx<'_>,
    changes: &mut Changes,
    account: Address,
    add: U256,
    sub: U256,
) -> Result<(), StoreError> {
    let (previous, mut row) = cx
        .load(changes, &ACCOUNTS, &format!("{account:#x}"))
        .await?;
    row.add_big("balance", add)
        .sub_big("balance", sub)
        .set("updated_block", Val::u64(cx.block));
    changes.put(cx.block, previous.as_ref(), row);
    Ok(())
}

async fn escrow_events(
    cx: &mut Ctx<'_>,
    changes: &mut Changes,
    event: ILeaseEscrow::ILeaseEscrowEvents,
) -> Result<(), StoreError> {
    use ILeaseEscrow::ILeaseEscrowEvents as E;
    match event {
        E::Deposited(e) => {
            let (previous, mut row) = cx
                .load(changes, &ACCOUNTS, &format!("{:#x}", e.account))
                .await?;
            row.set("balance", Val::big(e.balance))
                .add_big("total_deposited", e.amount)
                .set("updated_block", Val::u64(cx.block));
            changes.put(cx.block, previous.as_ref(), row);
        }
        E::Withdrawn(e) => {
            let (previous, mut row) = cx
                .load(changes, &ACCOUNTS, &format!("{:#x}", e.account))
                .await?;
            row.set("balance", Val::big(e.balance))
                .add_big("total_withdrawn", e.amount)
                .set("updated_block", Val::u64(cx.block));
            changes.put(cx.block, previous.as_ref(), row);
        }
        E::LeaseOpened(e) => {
            let (previous, mut row) = cx.load(changes, &LEASES, &e.leaseId.to_string()).await?;
            row.set("lease_id", Val::big(e.leaseId))
                .set("tenant", hex_addr(e.tenant))
                .set("node", hex_b256(e.nodeId))
                .set("operator", hex_addr(e.operator))
                .set("vcpus", Val::Int(e.resources.vcpus.into()))
                .set("memory_gib", Val::Int(e.resources.memoryGiB.into()))
                .set("storage_gib", Val::Int(e.resources.storageGiB.into()))
                .set("gpus", Val::Int(e.resources.gpus.into()))
                .set("quality", Val::Int(e.quality as i64))
                .set("bandwidth", Val::Int(e.bandwidth as i64))
                .set("template_id", Val::big(e.templateId))
                .set("rate_per_hour", Val::u64(e.ratePerHour))
                .set("fee_bps", Val::Int(e.feeBps.into()))
                .set("funded", Val::big(e.funding))
                .set("accrual_start", Val::u64(e.openedAt))
                .set("settled_at", Val::u64(e.openedAt))
                .set("status", Val::text("Active"))
                .set("opened_at", Val::u64(e.openedAt))
                .set("opened_block", Val::u64(cx.block))
                .set("updated_block", Val::u64(cx.block));
            changes.put(cx.block, previous.as_ref(), row);
            // The funding leaves the tenant's free balance without a Withdrawn event.
            account_delta(cx, changes, e.tenant, U256::ZERO, e.funding).await?;
        }
        E::LeaseToppedUp(e) => {
            let (previous, mut row) = cx.load(changes, &LEASES, &e.leaseId.to_string()).await?;
            row.set("funded", Val::big(e.funded))
                .set("accrual_start", Val::u64(e.accrualStart))
                .set("accrued_before", Val::big(e.accruedBefore))
                .set("updated_block", Val::u64(cx.block));
            changes.put(cx.block, previous.as_ref(), row);
            account_delta(cx, changes, e.from, U256::ZERO, e.amount).await?;
        }
        E::LeaseSettled(e) => {
            let (previous, mut row) = cx.load(changes, &LEASES, &e.leaseId.to_string()).await?;
            row.set("settled", Val::big(e.settled))
                .set("settled_at", Val::u64(e.settledAt))
                .set("updated_block", Val::u64(cx.block));
            changes.put(cx.block, previous.as_ref(), row);
        }
        E::LeaseClaimed(e) => {
            let lease = e.leaseId.to_string();
            let (previous, mut row) = cx.load(changes, &LEASES, &lease).await?;
            row.add_big("operator_paid", e.operatorAmount)
                .add_big("platform_fee_paid", e.platformFee)
                .add_int("claim_count", 1)
                .set("updated_block", Val::u64(cx.block));
            changes.put(cx.block, previous.as_ref(), row);
            let mut claim = EntityRow::new(&CLAIMS, cx.event_id.clone());
            claim
                .set("lease", Val::text(lease))
                .set("operator", hex_addr(e.operator))
                .set("operator_amount", Val::big(e.operatorAmount))
                .set("platform_fee", Val::big(e.platformFee))
                .set("block_number", Val::u64(cx.block))
                .set("tx_hash", Val::text(cx.tx.clone()));
            changes.put(cx.block, None, claim);
        }
        E::LeaseClosed(e) => {
            let (previous, mut row) = cx.load(changes, &LEASES, &e.leaseId.to_string()).await?;
            row.set("status", Val::text(status_name("lease", 2)))
                .set("ended_at", Val::u64(e.endedAt))
                .set("settled", Val::big(e.settled))
                .set("refund", Val::big(e.refund))
                .set("updated_block", Val::u64(cx.block));
            let tenant: Address = row.text("tenant").parse().unwrap_or_default();
            changes.put(cx.block, previous.as_ref(), row);
            account_delta(cx, changes, tenant, e.refund, U256::ZERO).await?;
        }
        E::LeaseTerminated(e) => {
            let (previous, mut row) = cx.load(changes, &LEASES, &e.leaseId.to_string()).await?;
            row.set("status", Val::text(status_name("lease", 3)))
                .set("failed_at", Val::u64(e.failedAt))
                .set("ended_at", Val::u64(e.endedAt))
                .set("settled", Val::big(e.settled))
                .set("refund", Val::big(e.refund))
                .set("updated_block", Val::u64(cx.block));
            let tenant: Address = row.text("tenant").parse().unwrap_or_default();
            changes.put(cx.block, previous.as_ref(), row);
            account_delta(cx, changes, tenant, e.refund, U256::ZERO).await?;
        }
        E::PlatformFeesWithdrawn(_)
        | E::PlatformFeeSet(_)
        | E::TreasurySet(_)
        | E::TerminationWindowSet(_) => {}
    }
    Ok(())
}

async fn templates(
    cx: &mut Ctx<'_>,
    changes: &mut Changes,
    event: ITemplateMarket::ITemplateMarketEvents,
    escrow: Option<Address>,
) -> Result<(), StoreError> {
    use ITemplateMarket::ITemplateMarketEvents as E;
    match event {
        E::TemplatePublished(e) => {
            let (previous, mut row) = cx
                .load(changes, &TEMPLATES, &e.templateId.to_string())
                .await?;
            row.set("template_id", Val::big(e.templateId))
                .set("author", hex_addr(e.author))
                .set("cid", Val::text(e.cid))
                .set("price", Val::big(e.price))
                .set("metadata", Val::text(e.metadata))
                .set("published_block", Val::u64(cx.block))
                .set("updated_block", Val::u64(cx.block));
            changes.put(cx.block, previous.as_ref(), row);
        }
        E::TemplateUpdated(e) => {
            let (previous, mut row) = cx
                .load(changes, &TEMPLATES, &e.templateId.to_string())
                .await?;
            row.set("cid", Val::text(e.cid))
                .set("price", Val::big(e.price))
                .set("metadata", Val::text(e.metadata))
                .set("updated_block", Val::u64(cx.block));
            changes.put(cx.block, previous.as_ref(), row);
        }
        E::TemplateDeprecated(e) => {
            let (previous, mut row) = cx
                .load(changes, &TEMPLATES, &e.templateId.to_string())
                .await?;
            row.set("deprecated", Val::bool(true))
                .set("updated_block", Val::u64(cx.block));
            changes.put(cx.block, previous.as_ref(), row);
        }
        E::TemplatePurchased(e) => {
            let template = e.templateId.to_string();
            let (previous, mut row) = cx.load(changes, &TEMPLATES, &template).await?;
            row.add_int("purchase_count", 1)
                .add_big("revenue", e.price)
                .add_big("author_earnings", e.authorShare)
                .set("updated_block", Val::u64(cx.block));
            changes.put(cx.block, previous.as_ref(), row);
            let (previous, mut purchase) = cx
                .load(changes, &PURCHASES, &e.purchaseId.to_string())
                .await?;
            purchase
                .set("purchase_id", Val::big(e.purchaseId))
                .set("template", Val::text(template))
                .set("buyer", hex_addr(e.buyer))
                .set("payer", hex_addr(e.payer))
                .set("price", Val::big(e.price))
                .set("author_share", Val::big(e.authorShare))
                .set("platform_share", Val::big(e.platformShare))
                .set("block_number", Val::u64(cx.block))
                .set("tx_hash", Val::text(cx.tx.clone()));
            changes.put(cx.block, previous.as_ref(), purchase);
            // A deploy through the escrow pays the template from the tenant's free balance.
            if escrow == Some(e.payer) && !e.price.is_zero() {
                account_delta(cx, changes, e.buyer, U256::ZERO, e.price).await?;
            }
        }
        E::EarningsWithdrawn(_)
        | E::PlatformEarningsWithdrawn(_)
        | E::PlatformShareSet(_)
        | E::TreasurySet(_) => {}
    }
    Ok(())
}

async fn storage(
    cx: &mut Ctx<'_>,
    changes: &mut Changes,
    event: IStorageMarket::IStorageMarketEvents,
) -> Result<(), StoreError> {
    use IStorageMarket::IStorageMarketEvents as E;
    match event {
        E::DealCreated(e) => {
            let deal = e.dealId.to_string();
            let (previous, mut row) = cx.load(changes, &DEALS, &deal).await?;
            row.set("deal_id", Val::big(e.dealId))
                .set("owner", hex_addr(e.owner))
                .set("segment_count", Val::u64(e.segmentCount))
                .set("price_per_epoch", Val::big(U256::from(e.pricePerEpoch)))
                .set("epochs", Val::u64(e.epochs.into()))
                .set("start_block", Val::u64(e.startBlock))
                .set("fee_bps", Val::Int(e.feeBps.into()))
                .set("replica_count", Val::Int(e.replicas.len() as i64))
                .set("deposit", Val::big(e.deposit))
                .set("remaining", Val::big(e.deposit))
                .set("created_block", Val::u64(cx.block))
                .set("updated_block", Val::u64(cx.block));
            changes.put(cx.block, previous.as_ref(), row);
            for (i, replica) in e.replicas.iter().enumerate() {
                let id = format!("{deal}-{i}");
                let (previous, mut row) = cx.load(changes, &DEAL_REPLICAS, &id).await?;
                row.set("deal", Val::text(deal.clone()))
                    .set("replica", Val::Int(i as i64))
                    .set("node", hex_b256(replica.nodeId))
                    .set("payee", hex_addr(replica.payee))
                    .set("root", hex_b256(B256::from(replica.root)));
                changes.put(cx.block, previous.as_ref(), row);
            }
        }
        E::EpochRandomnessRecorded(e) => {
            let deal = e.dealId.to_string();
            let id = format!("{deal}-{}", e.epoch);
            let (previous, mut row) = cx.load(changes, &DEAL_EPOCHS, &id).await?;
            row.set("deal", Val::text(deal))
                .set("epoch", Val::u64(e.epoch.into()))
                .set("randomness", hex_b256(e.randomness))
                .set("recorded_block", Val::u64(cx.block));
            changes.put(cx.block, previous.as_ref(), row);
        }
        E::EpochProven(e) => {
            let deal = e.dealId.to_string();
            let paid = e.nodeAmount.saturating_add(e.fee);
            let (previous, mut row) = cx.load(changes, &DEALS, &deal).await?;
            // The market takes the whole epoch price out of the deal: the node's share plus the fee.
            row.sub_big("remaining", paid)
                .add_int("proven_epochs", 1)
                .add_big("node_paid", e.nodeAmount)
                .add_big("fees_paid", e.fee)
                .set("updated_block", Val::u64(cx.block));
            changes.put(cx.block, previous.as_ref(), row);

            let replica = format!("{deal}-{}", e.replica);
            let (previous, mut row) = cx.load(changes, &DEAL_REPLICAS, &replica).await?;
            row.add_int("proven_epochs", 1)
                .add_big("earned", e.nodeAmount);
            changes.put(cx.block, previous.as_ref(), row);

            let epoch = format!("{deal}-{}", e.epoch);
            let (previous, mut row) = cx.load(changes, &DEAL_EPOCHS, &epoch).await?;
            row.set("deal", Val::text(deal.clone()))
                .set("epoch", Val::u64(e.epoch.into()))
                .add_int("proven_replicas", 1);
            changes.put(cx.block, previous.as_ref(), row);

            let mut proof = EntityRow::new(&PROOFS, format!("{deal}-{}-{}", e.replica, e.epoch));
            proof
                .set("deal", Val::text(deal))
                .set("replica", Val::Int(e.replica.saturating_to()))
                .set("epoch", Val::u64(e.epoch.into()))
                .set("payee", hex_addr(e.payee))
                .set("node_amount", Val::big(e.nodeAmount))
                .set("fee", Val::big(e.fee))
                .set("block_number", Val::u64(cx.block))
                .set("tx_hash", Val::text(cx.tx.clone()));
            // A replica proves an epoch once (the market refuses a second proof): the row is new.
            changes.put(cx.block, None, proof);

            let (previous, mut row) = cx
                .load(changes, &STORAGE_PAYEES, &format!("{:#x}", e.payee))
                .await?;
            row.add_big("earned", e.nodeAmount)
                .add_big("unclaimed", e.nodeAmount)
                .add_int("proof_count", 1)
                .set("updated_block", Val::u64(cx.block));
            changes.put(cx.block, previous.as_ref(), row);
        }
        E::DealSettled(e) => {
            let (previous, mut row) = cx.load(changes, &DEALS, &e.dealId.to_string()).await?;
            row.set("remaining", Val::big(U256::ZERO))
                .set("settled", Val::bool(true))
                .set("refund", Val::big(e.refund))
                .set("settled_block", Val::u64(cx.block))
                .set("updated_block", Val::u64(cx.block));
            changes.put(cx.block, previous.as_ref(), row);
        }
        E::EarningsClaimed(e) => {
            let (previous, mut row) = cx
                .load(changes, &STORAGE_PAYEES, &format!("{:#x}", e.payee))
                .await?;
            row.add_big("claimed", e.amount)
                .sub_big("unclaimed", e.amount)
                .set("updated_block", Val::u64(cx.block));
            changes.put(cx.block, previous.as_ref(), row);
        }
        E::RepairerSet(e) => {
            let (previous, mut row) = cx.load(changes, &DEALS, &e.dealId.to_string()).await?;
            let repairer = if e.repairer.is_zero() {
                Val::Null
            } else {
                hex_addr(e.repairer)
            };
            row.set("repairer", repairer)
                .set("updated_block", Val::u64(cx.block));
            changes.put(cx.block, previous.as_ref(), row);
        }
        E::ReplicaReplaced(e) => {
            let deal = e.dealId.to_string();
            let replica = format!("{deal}-{}", e.replica);
            let (previous, mut row) = cx.load(changes, &DEAL_REPLICAS, &replica).await?;
            // Earnings and proven epochs stay with the replica: they were the old nodes' work.
            row.set("node", hex_b256(e.newNode))
                .set("payee", hex_addr(e.payee))
                .set("root", hex_b256(B256::from(e.newRoot)))
                .add_int("moves", 1);
            let n = row.int("moves");
            changes.put(cx.block, previous.as_ref(), row);

            let mut moved = EntityRow::new(&REPLICA_MOVES, format!("{replica}-{n}"));
            moved
                .set("deal", Val::text(deal.clone()))
                .set("replica", Val::Int(e.replica.saturating_to()))
                .set("old_node", hex_b256(e.oldNode))
                .set("new_node", hex_b256(e.newNode))
                .set("new_root", hex_b256(B256::from(e.newRoot)))
                .set("payee", hex_addr(e.payee))
                .set("block_number", Val::u64(cx.block))
                .set("tx_hash", Val::text(cx.tx.clone()));
            // The replica's move count makes the id, so the row is new.
            changes.put(cx.block, None, moved);

            let (previous, mut row) = cx.load(changes, &DEALS, &deal).await?;
            row.set("updated_block", Val::u64(cx.block));
            changes.put(cx.block, previous.as_ref(), row);
        }
        E::DealEnded(e) => {
            let (previous, mut row) = cx.load(changes, &DEALS, &e.dealId.to_string()).await?;
            row.set("epochs", Val::u64(e.epochs.into()))
                .set("ended_block", Val::u64(cx.block))
                .set("updated_block", Val::u64(cx.block));
            changes.put(cx.block, previous.as_ref(), row);
        }
        // Governance and treasury movements live in the raw events only.
        E::FeesWithdrawn(_) | E::PlatformFeeUpdated(_) | E::TreasuryUpdated(_) => {}
    }
    Ok(())
}

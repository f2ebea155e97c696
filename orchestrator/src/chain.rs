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

use alloy::primitives::Address;
use decloud_indexer::{BoxError, ContractKind, DecodedLog, EventDecoder, Handler, LogBatch};
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
    attestor: Option<Arc<crate::attestation::Attestor>>,
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
    pub fn with_attestor(mut self, attestor: crate::attestation::Attestor) -> Self {
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

async fn apply(
    conn: &mut AnyConnection,
    log: &DecodedLog,
    block_time: i64,
) -> Result<(), BoxError> {
    let a = &log.args;
    match log.name.as_str() {
        "NodeRegistered" | "NodeUpdated" => {
            let caps = field(a, "capabilities")?;
            let node_id = text(a, "nodeId")?;
            if log.name == "NodeRegistered" {
                sqlx::query(
                    "INSERT INTO nodes (node_id, operator, node_key, status, region, endpoint, metadata_cid, tags, \
                     vcpus, memory_gib, disk_gib, gpus, bandwidth_mbps, compute_points, price_cpu, price_memory, \
                     price_storage, price_gpu, registered_at, updated_at) \
                     VALUES ($1, $2, $3, 'active', $4, $5, $6, '', $7, $8, $9, $10, $11, 0, 0, 0, 0, 0, $12, $12) \
                     ON CONFLICT (node_id) DO NOTHING",
                )
                .bind(node_id.clone())
                .bind(text(a, "operator")?)
                .bind(text(a, "nodeKey")?)
                .bind(text(a, "region")?)
                .bind(text(a, "endpoint")?)
                .bind(text(a, "metadataCid")?)
                .bind(int(caps, "vcpus")?)
                .bind(int(caps, "memoryGiB")?)
                .bind(int(caps, "diskGiB")?)
                .bind(int(caps, "gpus")?)
                .bind(int(caps, "bandwidthMbps")?)
                .bind(block_time)
                .execute(&mut *conn)
                .await?;
            } else {
                sqlx::query(
                    "UPDATE nodes SET node_key = $2, region = $3, endpoint = $4, metadata_cid = $5, vcpus = $6, \
                     memory_gib = $7, disk_gib = $8, gpus = $9, bandwidth_mbps = $10, updated_at = $11 \
                     WHERE node_id = $1",
                )
                .bind(node_id)
                .bind(text(a, "nodeKey")?)
                .bind(text(a, "region")?)
                .bind(text(a, "endpoint")?)
                .bind(text(a, "metadataCid")?)
                .bind(int(caps, "vcpus")?)
                .bind(int(caps, "memoryGiB")?)
                .bind(int(caps, "diskGiB")?)
                .bind(int(caps, "gpus")?)
                .bind(int(caps, "bandwidthMbps")?)
                .bind(block_time)
                .execute(&mut *conn)
                .await?;
            }
        }
        "NodePricesSet" => {
            let p = field(a, "stored")?;
            sqlx::query(
                "UPDATE nodes SET price_cpu = $2, price_memory = $3, price_storage = $4, price_gpu = $5, \
                 updated_at = $6 WHERE node_id = $1",
            )
            .bind(text(a, "nodeId")?)
            .bind(int(p, "cpuPerHour")?)
            .bind(int(p, "memoryGiBPerHour")?)
            .bind(int(p, "storageGiBPerHour")?)
            .bind(int(p, "gpuPerHour")?)
            .bind(block_time)
            .execute(&mut *conn)
            .await?;
        }
        "NodeStatusChanged" => {
            let status = match int(a, "status")? {
                1 => "active",
                2 => "paused",
                3 => "retired",
                other => return Err(format!("unknown node status {other}").into()),
            };
            sqlx::query("UPDATE nodes SET status = $2, updated_at = $3 WHERE node_id = $1")
                .bind(text(a, "nodeId")?)
                .bind(status)
                .bind(block_time)
                .execute(&mut *conn)
                .await?;
        }
        "LeaseOpened" => {
            let r = field(a, "resources")?;
            let lease_id = text(a, "leaseId")?;
            let tenant = text(a, "tenant")?;
            let node_id = text(a, "nodeId")?;
            let opened_at = int(a, "openedAt")?;
            let tier = int(a, "quality")?;
            if !(0..=3).contains(&tier) {
                return Err(format!("unknown quality tier {tier}").into());
            }
            sqlx::query(
                "INSERT INTO leases (lease_id, tenant, node_id, status, tier, vcpus, memory_gib, storage_gib, gpus, \
                 rate_per_hour, opened_at, bandwidth, template_id, funded, accrual_start, accrued_before) \
                 VALUES ($1, $2, $3, 'active', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $10, 0) \
                 ON CONFLICT (lease_id) DO NOTHING",
            )
            .bind(lease_id.clone())
            .bind(tenant.clone())
            .bind(node_id.clone())
            .bind(tier)
            .bind(int(r, "vcpus")?)
            .bind(int(r, "memoryGiB")?)
            .bind(int(r, "storageGiB")?)
            .bind(int(r, "gpus")?)
            .bind(int(a, "ratePerHour")?)
            .bind(opened_at)
            .bind(int(a, "bandwidth")?)
            .bind(text(a, "templateId")?)
            .bind(int(a, "funding")?)
            .execute(&mut *conn)
            .await?;
            sqlx::query(
                "INSERT INTO vms (vm_id, lease_id, tenant, node_id, state, tier, vcpus, memory_gib, disk_gib, gpus, \
                 created_at, updated_at, failure) VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7, $8, $9, $10, $10, NULL) \
                 ON CONFLICT (vm_id) DO NOTHING",
            )
            .bind(crate::lifecycle::vm_id_of(&lease_id))
            .bind(lease_id)
            .bind(tenant)
            .bind(node_id)
            .bind(tier)
            .bind(int(r, "vcpus")?)
            .bind(int(r, "memoryGiB")?)
            .bind(int(r, "storageGiB")?)
            .bind(int(r, "gpus")?)
            .bind(opened_at)
            .execute(&mut *conn)
            .await?;
        }
        "LeaseToppedUp" => {
            sqlx::query("UPDATE leases SET funded = $2, accrual_start = $3, accrued_before = $4 WHERE lease_id = $1")
                .bind(text(a, "leaseId")?)
                .bind(int(a, "funded")?)
                .bind(int(a, "accrualStart")?)
                .bind(int(a, "accruedBefore")?)
                .execute(&mut *conn)
                .await?;
        }
        "LeaseClosed" | "LeaseTerminated" => {
            let status = if log.name == "LeaseClosed" {
                "closed"
            } else {
                "terminated"
            };
            sqlx::query("UPDATE leases SET status = $2 WHERE lease_id = $1 AND status = 'active'")
                .bind(text(a, "leaseId")?)
                .bind(status)
                .execute(&mut *conn)
                .await?;
        }
        "TemplatePublished" | "TemplateUpdated" => {
            // The bundle is known by its content id; a publication of content the catalog
            // does not hold names no bundle, and a lease on it fails its VM with that reason.
            sqlx::query("UPDATE templates SET template_id = $1, price = $2 WHERE cid = $3")
                .bind(text(a, "templateId")?)
                .bind(int(a, "price")?)
                .bind(text(a, "cid")?)
                .execute(&mut *conn)
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
                    crate::attestation::append(
                        conn,
                        attestor,
                        &subject,
                        kind,
                        &payload,
                        crate::api::now(),
                    )
                    .await?;
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

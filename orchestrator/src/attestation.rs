//! The attestation log: every significant action is signed ([`decloud_sdk::attestation`]) and
//! appended to a hash-chained log in the database, in the transaction of the state change it
//! attests; batches of consecutive attestations are sealed into Merkle roots and anchored on
//! AttestationAnchor.
//!
//! Exactly-once anchoring: a batch is first sealed (its range and root committed), then
//! anchored. Before sending, the anchorer asks the contract how many batches it holds: a batch
//! the chain already has (a crash after the transaction and before recording it) is recorded
//! from the chain's `BatchAnchored` event instead of being sent again, and the contract itself
//! refuses a second anchor of the same range (`SequenceMismatch`). A sealed batch that never
//! reached the chain (a crash before sending) is sent on the next pass.
//!
//! A log rebuilt from an empty database ([`Anchorer::resume_from_chain`], at start) continues
//! after the last batch the chain holds: that batch is recorded, and the first new attestation
//! is a `log.resumed` one at the next sequence number, whose `previous` is the batch's root
//! (see [`decloud_sdk::attestation::check_resumption`]).

use crate::store::{Store, StoreError};
use alloy::{
    primitives::{Address, B256, U256},
    providers::{DynProvider, Provider},
    rpc::types::Filter,
    sol_types::SolEvent,
};
use decloud_sdk::bindings::AttestationAnchor;
use std::time::Duration;

pub use crate::store::{Attestor, BatchRecord};

/// Errors of attesting and anchoring.
#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The chain failed or refused.
    #[error("anchoring failed: {0}")]
    Chain(#[from] decloud_sdk::Error),
    /// The confirmation did not come in time; the batch is retried.
    #[error("anchoring batch {0} was not confirmed in time")]
    Timeout(u64),
    /// The chain holds something else than this log for a batch: the anchor is shared or the
    /// database is not the one that anchored. Nothing is sent until an operator decides.
    #[error("AttestationAnchor disagrees with batch {batch}: {message}")]
    Conflict {
        /// Local batch id.
        batch: u64,
        /// What differs.
        message: String,
    },
}

/// Where and how batches are anchored.
#[derive(Clone, Debug)]
pub struct Anchorer {
    /// Provider signing with the key that holds ANCHOR_ROLE.
    pub provider: DynProvider,
    /// AttestationAnchor address.
    pub anchor: Address,
    /// How long to wait for a confirmation before asking the chain again.
    pub confirm_timeout: Duration,
}

impl Anchorer {
    /// The transaction that anchored batch `id` in `block`, from its `BatchAnchored` event.
    async fn anchoring_tx(&self, id: U256, block: u64) -> Result<Option<B256>, AttestError> {
        let filter = Filter::new()
            .address(self.anchor)
            .event_signature(AttestationAnchor::BatchAnchored::SIGNATURE_HASH)
            .topic1(B256::from(id))
            .from_block(block)
            .to_block(block);
        let logs = self
            .provider
            .get_logs(&filter)
            .await
            .map_err(decloud_sdk::Error::Rpc)?;
        Ok(logs.first().and_then(|l| l.transaction_hash))
    }

    /// Continues an empty log (a new or rebuilt database) after the last batch the chain holds,
    /// so anchoring carries on where the chain stands instead of disagreeing with it about
    /// batch 0 forever. Returns the sequence of the resumption attestation; `None` when the log
    /// is not empty or the chain holds no batch (a new log starts at 0).
    pub async fn resume_from_chain(
        &self,
        store: &Store,
        now: i64,
    ) -> Result<Option<u64>, AttestError> {
        if !store.attestation_log_is_empty().await? {
            return Ok(None);
        }
        let contract = AttestationAnchor::new(self.anchor, &self.provider);
        let count: U256 = decloud_sdk::tx::read("AttestationAnchor", contract.batchCount()).await?;
        let Some(last) = count.checked_sub(U256::from(1)) else {
            return Ok(None);
        };
        let held = decloud_sdk::tx::read("AttestationAnchor", contract.getBatch(last)).await?;
        let tx_hash = self.anchoring_tx(last, held.blockNumber).await?;
        let batch = BatchRecord {
            batch_id: u64::try_from(last).unwrap_or(u64::MAX),
            first_sequence: held.firstSequence,
            count: held.count,
            root: held.root.to_string(),
            created_at: now,
            tx_hash: tx_hash.map(|t| t.to_string()),
            block_number: Some(held.blockNumber),
        };
        let sequence = store.resume_log(&batch, now).await?;
        if let Some(sequence) = sequence {
            tracing::warn!(target: "orchestrator::attestation", batch = batch.batch_id, sequence, root = %held.root, "the log was empty while the chain holds batches: it continues after the last one");
        }
        Ok(sequence)
    }

    /// Anchors every sealed batch not yet recorded as anchored, in order; returns how many were
    /// recorded. A batch the chain already holds is recorded from the chain, never sent twice.
    pub async fn anchor_pending(&self, store: &Store, now: i64) -> Result<usize, AttestError> {
        let contract = AttestationAnchor::new(self.anchor, &self.provider);
        let mut recorded = 0;
        for batch in store.unanchored_batches().await? {
            let root: B256 = batch.root.parse().map_err(|_| StoreError::Corrupt {
                column: "root",
                value: batch.root.clone(),
            })?;
            let on_chain: U256 =
                decloud_sdk::tx::read("AttestationAnchor", contract.batchCount()).await?;
            let id = U256::from(batch.batch_id);
            if id < on_chain {
                // Anchored before a crash kept it from being recorded: take it from the chain.
                let held =
                    decloud_sdk::tx::read("AttestationAnchor", contract.getBatch(id)).await?;
                if held.root != root
                    || held.firstSequence != batch.first_sequence
                    || held.count != batch.count
                {
                    return Err(AttestError::Conflict {
                        batch: batch.batch_id,
                        message: format!(
                            "the chain holds root {} for {} attestations from {}",
                            held.root, held.count, held.firstSequence
                        ),
                    });
                }
                let tx_hash = self
                    .anchoring_tx(id, held.blockNumber)
                    .await?
                    .ok_or_else(|| AttestError::Conflict {
                        batch: batch.batch_id,
                        message: "its BatchAnchored event is missing".into(),
                    })?;
                store
                    .record_anchor(batch.batch_id, tx_hash, held.blockNumber, now)
                    .await?;
                tracing::info!(target: "orchestrator::attestation", batch_id = batch.batch_id, tx = %tx_hash, "batch found anchored on-chain; recorded");
                recorded += 1;
                continue;
            }
            if id > on_chain {
                return Err(AttestError::Conflict {
                    batch: batch.batch_id,
                    message: format!("the chain holds only {on_chain} batches"),
                });
            }
            let call = contract.anchor(root, batch.count, batch.first_sequence, String::new());
            let pending = call
                .send()
                .await
                .map_err(|e| decloud_sdk::Error::from_contract(e, Some("AttestationAnchor")))?;
            let tx_hash = *pending.tx_hash();
            tracing::info!(target: "orchestrator::attestation", batch_id = batch.batch_id, tx = %tx_hash, "anchor transaction sent");
            let receipt = tokio::time::timeout(self.confirm_timeout, pending.get_receipt())
                .await
                .map_err(|_| AttestError::Timeout(batch.batch_id))?
                .map_err(decloud_sdk::Error::from)?;
            if !receipt.status() {
                return Err(decloud_sdk::Error::TransactionFailed(tx_hash).into());
            }
            let block = receipt.block_number.unwrap_or_default();
            store
                .record_anchor(batch.batch_id, tx_hash, block, now)
                .await?;
            tracing::info!(target: "orchestrator::attestation", batch_id = batch.batch_id, tx = %tx_hash, block, gas = receipt.gas_used, "batch anchored");
            recorded += 1;
        }
        Ok(recorded)
    }
}

/// Seals every batch that is due and anchors every sealed one; what fails is retried by the next
/// pass.
pub async fn pass(
    store: &Store,
    anchorer: &Anchorer,
    batch_size: u64,
    batch_interval_secs: i64,
    now: i64,
) -> Result<usize, AttestError> {
    while store
        .seal_batch(batch_size, batch_interval_secs, now)
        .await?
        .is_some()
    {}
    anchorer.anchor_pending(store, now).await
}

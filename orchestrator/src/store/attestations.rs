//! The attestation log's storage: the hash-chained log of signed attestations, appended in the
//! transaction of the change each attests, and the sealed batches with their Merkle roots and
//! anchoring transactions.

use super::{Store, StoreError, u};
use alloy::{
    primitives::{Address, B256, Bytes},
    signers::local::PrivateKeySigner,
    sol_types::Eip712Domain,
};
use decloud_sdk::{
    attestation::{self, Evidence, Inclusion, SignedAttestation, SignerInfo},
    merkle::MerkleTree,
};
use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, Row, any::AnyRow};
use utoipa::ToSchema;

/// The orchestrator's attestation key and EIP-712 domain.
#[derive(Clone, Debug)]
pub struct Attestor {
    key: PrivateKeySigner,
    domain: Eip712Domain,
    chain_id: u64,
    anchor: Address,
}

impl Attestor {
    /// Signs with `key` for the AttestationAnchor at `anchor` on chain `chain_id`.
    pub fn new(key: PrivateKeySigner, chain_id: u64, anchor: Address) -> Self {
        Self {
            domain: attestation::domain(chain_id, anchor),
            key,
            chain_id,
            anchor,
        }
    }

    /// The signer's address.
    pub fn address(&self) -> Address {
        self.key.address()
    }

    /// The AttestationAnchor address.
    pub fn anchor(&self) -> Address {
        self.anchor
    }

    /// The EIP-712 domain.
    pub fn domain(&self) -> &Eip712Domain {
        &self.domain
    }

    /// The published signer and domain.
    pub fn info(&self) -> SignerInfo {
        SignerInfo {
            signer: self.address(),
            name: attestation::DOMAIN_NAME.into(),
            version: attestation::DOMAIN_VERSION.into(),
            chain_id: self.chain_id,
            verifying_contract: self.anchor,
        }
    }
}

fn hex_b256(row: &AnyRow, column: &'static str) -> Result<B256, StoreError> {
    let v: String = row.try_get(column)?;
    v.parse()
        .map_err(|_| StoreError::Corrupt { column, value: v })
}

fn attestation_from_row(row: &AnyRow) -> Result<SignedAttestation, StoreError> {
    let signature: String = row.try_get("signature")?;
    Ok(SignedAttestation {
        sequence: u(row, "sequence")?,
        subject: row.try_get("subject")?,
        kind: row.try_get("kind")?,
        payload: row.try_get("payload")?,
        payload_hash: hex_b256(row, "payload_hash")?,
        previous: hex_b256(row, "previous")?,
        time: u(row, "time")?,
        hash: hex_b256(row, "hash")?,
        signature: signature
            .parse::<Bytes>()
            .map_err(|_| StoreError::Corrupt {
                column: "signature",
                value: signature.clone(),
            })?,
    })
}

/// Signs and appends one attestation inside the caller's transaction; returns its sequence
/// number. Must run in a transaction that commits or rolls back with the attested change.
pub async fn append(
    conn: &mut AnyConnection,
    attestor: &Attestor,
    subject: &str,
    kind: &str,
    payload: &serde_json::Value,
    now: i64,
) -> Result<u64, StoreError> {
    // Taking the head first serialises concurrent appenders (row lock / SQLite write lock).
    sqlx::query("UPDATE attestation_head SET next_sequence = next_sequence + 1 WHERE id = 1")
        .execute(&mut *conn)
        .await?;
    let head = sqlx::query("SELECT next_sequence, last_hash FROM attestation_head WHERE id = 1")
        .fetch_one(&mut *conn)
        .await?;
    let sequence = u(&head, "next_sequence")? - 1;
    let previous = hex_b256(&head, "last_hash")?;
    let payload = payload.to_string();
    let body = attestation::Attestation::new(
        subject,
        kind,
        &payload,
        sequence,
        previous,
        u64::try_from(now).unwrap_or(0),
    );
    // A signing failure aborts the caller's transaction: no change goes unattested.
    let signed = attestation::sign(&attestor.key, &attestor.domain, body, &payload)
        .map_err(|e| StoreError::Attestation(e.to_string()))?;
    sqlx::query(
        "INSERT INTO attestations (sequence, subject, kind, payload, payload_hash, previous, time, hash, signature) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(sequence as i64)
    .bind(signed.subject.clone())
    .bind(signed.kind.clone())
    .bind(signed.payload.clone())
    .bind(signed.payload_hash.to_string())
    .bind(signed.previous.to_string())
    .bind(now)
    .bind(signed.hash.to_string())
    .bind(signed.signature.to_string())
    .execute(&mut *conn)
    .await
    .map_err(StoreError::from)?;
    sqlx::query("UPDATE attestation_head SET last_hash = $1 WHERE id = 1")
        .bind(signed.hash.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(sequence)
}

/// A sealed batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BatchRecord {
    /// Batch id (equal to the id AttestationAnchor gives it).
    pub batch_id: u64,
    /// First sequence number.
    pub first_sequence: u64,
    /// Attestations in the batch.
    pub count: u64,
    /// Merkle root, 0x hex.
    pub root: String,
    /// When it was sealed, unix seconds.
    pub created_at: i64,
    /// Anchoring transaction, once confirmed.
    pub tx_hash: Option<String>,
    /// Its block.
    pub block_number: Option<u64>,
}

fn batch_from_row(row: &AnyRow) -> Result<BatchRecord, StoreError> {
    let block: Option<i64> = row.try_get("block_number")?;
    Ok(BatchRecord {
        batch_id: u(row, "batch_id")?,
        first_sequence: u(row, "first_sequence")?,
        count: u(row, "count")?,
        root: row.try_get("root")?,
        created_at: row.try_get("created_at")?,
        tx_hash: row.try_get("tx_hash")?,
        block_number: block.map(|b| b as u64),
    })
}

async fn hashes(conn: &mut AnyConnection, first: u64, count: u64) -> Result<Vec<B256>, StoreError> {
    let rows = sqlx::query(
        "SELECT hash FROM attestations WHERE sequence >= $1 AND sequence < $2 ORDER BY sequence",
    )
    .bind(first as i64)
    .bind((first + count) as i64)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(|r| hex_b256(r, "hash")).collect()
}

impl Store {
    /// Appends one attestation in its own transaction (for actions that change no other state,
    /// such as an attested verdict or intent). `None` when no attestation key is configured.
    pub async fn attest(
        &self,
        subject: &str,
        kind: &str,
        payload: &serde_json::Value,
        now: i64,
    ) -> Result<Option<u64>, StoreError> {
        let Some(attestor) = self.attestor() else {
            return Ok(None);
        };
        let mut tx = self.begin_write().await?;
        let sequence = append(&mut tx, attestor, subject, kind, payload, now).await?;
        tx.commit().await?;
        Ok(Some(sequence))
    }

    /// One attestation by sequence number.
    pub async fn attestation(
        &self,
        sequence: u64,
    ) -> Result<Option<SignedAttestation>, StoreError> {
        let row = sqlx::query("SELECT * FROM attestations WHERE sequence = $1")
            .bind(i64::try_from(sequence).unwrap_or(i64::MAX))
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(attestation_from_row).transpose()
    }

    /// Attestations about `subject`, oldest first, from `after` on (exclusive), at most `limit`.
    pub async fn attestations_of(
        &self,
        subject: &str,
        after: Option<u64>,
        limit: u32,
    ) -> Result<Vec<SignedAttestation>, StoreError> {
        sqlx::query(
            "SELECT * FROM attestations WHERE subject = $1 AND sequence > $2 ORDER BY sequence LIMIT $3",
        )
        .bind(subject.to_string())
        .bind(after.map(|a| a as i64).unwrap_or(-1))
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(attestation_from_row)
        .collect()
    }

    /// How many attestations the log holds.
    pub async fn attestation_count(&self) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT next_sequence FROM attestation_head WHERE id = 1")
            .fetch_one(self.pool())
            .await?;
        u(&row, "next_sequence")
    }

    /// An attestation with its batch, inclusion proof and anchor.
    pub async fn evidence(&self, sequence: u64) -> Result<Option<Evidence>, StoreError> {
        let Some(attestation) = self.attestation(sequence).await? else {
            return Ok(None);
        };
        let row = sqlx::query(
            "SELECT * FROM attestation_batches WHERE first_sequence <= $1 AND first_sequence + count > $1",
        )
        .bind(sequence as i64)
        .fetch_optional(self.pool())
        .await?;
        let inclusion = match row {
            None => None,
            Some(row) => {
                let batch = batch_from_row(&row)?;
                let mut conn = self.pool().acquire().await?;
                let leaves: Vec<B256> = hashes(&mut conn, batch.first_sequence, batch.count)
                    .await?
                    .into_iter()
                    .map(attestation::leaf)
                    .collect();
                let tree = MerkleTree::new(leaves).map_err(|_| StoreError::Corrupt {
                    column: "attestation_batches",
                    value: batch.batch_id.to_string(),
                })?;
                Some(Inclusion {
                    batch: batch.batch_id,
                    first_sequence: batch.first_sequence,
                    count: batch.count,
                    root: batch.root.parse().map_err(|_| StoreError::Corrupt {
                        column: "root",
                        value: batch.root.clone(),
                    })?,
                    // A leaf the stored batch does not contain (an altered hash) has no proof.
                    proof: tree
                        .proof(&attestation::leaf(attestation.hash))
                        .unwrap_or_default(),
                    tx_hash: batch.tx_hash.as_deref().and_then(|t| t.parse().ok()),
                    block_number: batch.block_number,
                })
            }
        };
        Ok(Some(Evidence {
            attestation,
            inclusion,
        }))
    }

    /// Every batch, in order.
    pub async fn batches(&self) -> Result<Vec<BatchRecord>, StoreError> {
        sqlx::query("SELECT * FROM attestation_batches ORDER BY batch_id")
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(batch_from_row)
            .collect()
    }

    /// Sealed batches without a recorded anchor, in order.
    pub async fn unanchored_batches(&self) -> Result<Vec<BatchRecord>, StoreError> {
        sqlx::query("SELECT * FROM attestation_batches WHERE tx_hash IS NULL ORDER BY batch_id")
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(batch_from_row)
            .collect()
    }

    /// Seals the next batch when `max` attestations wait, or when the oldest waiting one is
    /// `max_age_secs` old: its range and Merkle root are committed before anything is sent.
    pub async fn seal_batch(
        &self,
        max: u64,
        max_age_secs: i64,
        now: i64,
    ) -> Result<Option<BatchRecord>, StoreError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "SELECT COALESCE(MAX(first_sequence + count), 0) AS next_first, \
             COALESCE(MAX(batch_id) + 1, 0) AS next_id FROM attestation_batches",
        )
        .fetch_one(&mut *tx)
        .await?;
        let first: i64 = row.try_get("next_first")?;
        let batch_id: i64 = row.try_get("next_id")?;
        let head = sqlx::query("SELECT next_sequence FROM attestation_head WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        let next: i64 = head.try_get("next_sequence")?;
        let waiting = (next - first).max(0) as u64;
        if waiting == 0 {
            return Ok(None);
        }
        let oldest: i64 = sqlx::query("SELECT time FROM attestations WHERE sequence = $1")
            .bind(first)
            .fetch_one(&mut *tx)
            .await?
            .try_get("time")?;
        if waiting < max && oldest > now - max_age_secs {
            return Ok(None);
        }
        let count = waiting.min(max.max(1));
        let leaves = hashes(&mut tx, first as u64, count)
            .await?
            .into_iter()
            .map(attestation::leaf);
        let root = MerkleTree::new(leaves)
            .map_err(|_| StoreError::NotFound("attestations of the batch"))?
            .root();
        sqlx::query(
            "INSERT INTO attestation_batches (batch_id, first_sequence, count, root, created_at, tx_hash, \
             block_number, anchored_at) VALUES ($1, $2, $3, $4, $5, NULL, NULL, NULL)",
        )
        .bind(batch_id)
        .bind(first)
        .bind(count as i64)
        .bind(root.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::info!(target: "orchestrator::attestation", batch_id, first, count, root = %root, "batch sealed");
        Ok(Some(BatchRecord {
            batch_id: batch_id as u64,
            first_sequence: first as u64,
            count,
            root: root.to_string(),
            created_at: now,
            tx_hash: None,
            block_number: None,
        }))
    }

    /// Whether the log holds nothing: no attestation and no batch (a new or rebuilt database).
    pub async fn attestation_log_is_empty(&self) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT (SELECT next_sequence FROM attestation_head WHERE id = 1) AS next_sequence, \
             (SELECT COUNT(*) FROM attestation_batches) AS batches",
        )
        .fetch_one(self.pool())
        .await?;
        Ok(u(&row, "next_sequence")? == 0 && u(&row, "batches")? == 0)
    }

    /// Continues an empty log after `batch`, the last one the chain holds (the database was
    /// rebuilt): the batch is recorded as anchored, and a [`attestation::RESUMED_KIND`]
    /// attestation is appended at the sequence after it, linked to its root. Returns that
    /// attestation's sequence; `None`, changing nothing, when the log is not empty or no
    /// attestation key is configured.
    pub async fn resume_log(
        &self,
        batch: &BatchRecord,
        now: i64,
    ) -> Result<Option<u64>, StoreError> {
        let Some(attestor) = self.attestor() else {
            return Ok(None);
        };
        let root: B256 = batch.root.parse().map_err(|_| StoreError::Corrupt {
            column: "root",
            value: batch.root.clone(),
        })?;
        let resumption = attestation::Resumption {
            batch: batch.batch_id,
            root,
            first_sequence: batch.first_sequence,
            count: batch.count,
        };
        let mut tx = self.begin_write().await?;
        // Taken first, as every append does, so no append can slip in between.
        sqlx::query("UPDATE attestation_head SET next_sequence = next_sequence WHERE id = 1")
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query(
            "SELECT (SELECT next_sequence FROM attestation_head WHERE id = 1) AS next_sequence, \
             (SELECT COUNT(*) FROM attestation_batches) AS batches",
        )
        .fetch_one(&mut *tx)
        .await?;
        if u(&row, "next_sequence")? != 0 || u(&row, "batches")? != 0 {
            return Ok(None);
        }
        sqlx::query(
            "INSERT INTO attestation_batches (batch_id, first_sequence, count, root, created_at, tx_hash, \
             block_number, anchored_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $5)",
        )
        .bind(i64::try_from(batch.batch_id).unwrap_or(i64::MAX))
        .bind(i64::try_from(batch.first_sequence).unwrap_or(i64::MAX))
        .bind(i64::try_from(batch.count).unwrap_or(i64::MAX))
        .bind(root.to_string())
        .bind(now)
        .bind(batch.tx_hash.clone())
        .bind(batch.block_number.map(|b| i64::try_from(b).unwrap_or(i64::MAX)))
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE attestation_head SET next_sequence = $1, last_hash = $2 WHERE id = 1")
            .bind(i64::try_from(resumption.next_sequence()).unwrap_or(i64::MAX))
            .bind(root.to_string())
            .execute(&mut *tx)
            .await?;
        let payload = serde_json::to_value(&resumption).expect("a resumption serializes");
        let sequence = append(
            &mut tx,
            attestor,
            attestation::LOG_SUBJECT,
            attestation::RESUMED_KIND,
            &payload,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(Some(sequence))
    }

    /// Records the confirmed anchoring transaction of a sealed batch (once: a batch already
    /// recorded keeps its first record).
    pub async fn record_anchor(
        &self,
        batch_id: u64,
        tx_hash: B256,
        block: u64,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE attestation_batches SET tx_hash = $2, block_number = $3, anchored_at = $4 \
             WHERE batch_id = $1 AND tx_hash IS NULL",
        )
        .bind(batch_id as i64)
        .bind(tx_hash.to_string())
        .bind(block as i64)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(())
    }
}

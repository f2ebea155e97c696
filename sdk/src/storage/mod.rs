//! Wire types of a storage node's chunk API, shared by the node agent (server) and clients.
//!
//! A storage node serves, over plain HTTP, the replicas that StorageMarket deals place on it.
//! A replica is a sequence of chunks numbered from 0, each at most [`MAX_CHUNK_BYTES`] and
//! addressed on the node's disk by its SHA-256:
//!
//! ```text
//! PUT    /v1/storage/deals/{deal}/replicas/{replica}/chunks/{index}   body: the chunk
//! GET    /v1/storage/deals/{deal}/replicas/{replica}/chunks/{index}   the chunk
//! GET    /v1/storage/deals/{deal}/replicas/{replica}                  a ReplicaManifest (JSON)
//! DELETE /v1/storage/deals/{deal}/replicas/{replica}                  drops the replica
//! ```
//!
//! Every request carries [`HEADER_EXPIRES`] and [`HEADER_SIGNATURE`]: an EIP-191 signature by
//! the deal's owner over [`StorageRequest::message`], which names the method, chain, market,
//! node, deal, replica, chunk, the chunk's SHA-256 (writes, also sent as [`HEADER_SHA256`]) and
//! the expiry. The node recovers the signer and compares it with the deal's owner on-chain,
//! and checks that the replica is placed on itself. The fixed first line
//! ([`STORAGE_AUTH_DOMAIN`]) keeps the signature from being valid as any other signed text, and
//! the expiry (at most [`MAX_VALIDITY_SECS`] ahead of the node's clock) bounds its replay: a
//! replayed write stores the same bytes again, a replayed read returns the same ciphertext.
//!
//! Errors are JSON [`ErrorBody`]s with an HTTP status that says what went wrong (see the node
//! agent's README).
//!
//! [`NodeClient`] speaks this API for a deal's owner: it signs each request, checks every chunk
//! it reads against the hash it expects, and uploads a replica resuming where an interrupted
//! upload stopped.
//!
//! [`encoding`] turns a file into those replicas on the client: wallet-derived keys, AES-256-GCM
//! chunks, per-replica masks and the commitments the StorageMarket stores.

mod client;
mod coordinator;
pub mod encoding;
mod files;

pub use client::{NodeClient, StorageClientError, UploadStats, sha256};
pub use coordinator::{CoordinatorError, StorageCoordinator};
pub use files::{
    DealState, FileIndex, FileRecord, FileStatus, FollowNote, NodeSource, Phase, Progress,
    ProgressFn, PutOptions, Removal, RepairSetup, ReplicaRecord, StorageClient, StorageError,
    StorageNode,
};

use std::fmt;

use alloy::{
    primitives::{Address, B256, Signature},
    signers::SignerSync,
};
use serde::{Deserialize, Serialize};

/// First line of every signed storage request.
pub const STORAGE_AUTH_DOMAIN: &str = "DeCloud storage request";
/// Bytes of one proof segment: a replica of a deal with `segmentCount` segments holds at most
/// `segmentCount * SEGMENT_BYTES` bytes (the same 1 KiB segments `decloud-prover` commits to).
pub const SEGMENT_BYTES: u64 = 1024;
/// Largest chunk a node accepts.
pub const MAX_CHUNK_BYTES: usize = 4 << 20;
/// Longest a signed request may stay valid, counted from the node's clock.
pub const MAX_VALIDITY_SECS: u64 = 600;
/// Header: Unix second after which the signature is refused.
pub const HEADER_EXPIRES: &str = "x-decloud-expires";
/// Header: the owner's 65-byte signature, 0x-hex.
pub const HEADER_SIGNATURE: &str = "x-decloud-signature";
/// Header: the chunk's SHA-256, 0x-hex (writes; the node also returns it with a read).
pub const HEADER_SHA256: &str = "x-decloud-sha256";

/// What a request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageMethod {
    /// Stores one chunk.
    Put,
    /// Reads one chunk.
    Get,
    /// Reads a replica's manifest.
    List,
    /// Drops a replica.
    Delete,
}

impl StorageMethod {
    /// The word signed for the method.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Put => "put",
            Self::Get => "get",
            Self::List => "list",
            Self::Delete => "delete",
        }
    }
}

impl fmt::Display for StorageMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything a storage request's signature covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageRequest {
    /// What the request does.
    pub method: StorageMethod,
    /// Chain id of the network the deal is on.
    pub chain_id: u64,
    /// The StorageMarket holding the deal.
    pub market: Address,
    /// The node the request is sent to.
    pub node: B256,
    /// Deal id.
    pub deal: u64,
    /// Replica index in the deal.
    pub replica: u32,
    /// Chunk index (put and get).
    pub chunk: Option<u32>,
    /// The chunk's SHA-256 (put).
    pub sha256: Option<B256>,
    /// Unix second after which the signature is refused.
    pub expires: u64,
}

impl StorageRequest {
    /// The signed text: the domain line, then one labelled line per field.
    pub fn message(&self) -> String {
        let chunk = self.chunk.map_or_else(|| "-".to_owned(), |c| c.to_string());
        let sha256 = self
            .sha256
            .map_or_else(|| "-".to_owned(), |h| h.to_string());
        format!(
            "{STORAGE_AUTH_DOMAIN}\nmethod: {}\nchain: {}\nmarket: {}\nnode: {}\ndeal: {}\n\
             replica: {}\nchunk: {chunk}\nsha256: {sha256}\nexpires: {}",
            self.method,
            self.chain_id,
            self.market.to_checksum(None),
            self.node,
            self.deal,
            self.replica,
            self.expires,
        )
    }

    /// Signs the request (EIP-191) with the deal owner's key.
    pub fn sign(&self, signer: &impl SignerSync) -> Result<Signature, alloy::signers::Error> {
        signer.sign_message_sync(self.message().as_bytes())
    }

    /// The address that signed `signature` over this request.
    pub fn recover(&self, signature: &Signature) -> Option<Address> {
        signature
            .recover_address_from_msg(self.message().as_bytes())
            .ok()
    }
}

/// One stored chunk of a replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkInfo {
    /// Index in the replica.
    pub index: u32,
    /// SHA-256 of the chunk.
    pub sha256: B256,
    /// Length in bytes.
    pub bytes: u64,
}

/// What a node holds of one replica: its chunks in index order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaManifest {
    /// Deal id.
    pub deal: u64,
    /// Replica index.
    pub replica: u32,
    /// Stored chunks, lowest index first.
    pub chunks: Vec<ChunkInfo>,
}

impl ReplicaManifest {
    /// Bytes stored for the replica.
    pub fn bytes(&self) -> u64 {
        self.chunks.iter().map(|c| c.bytes).sum()
    }
}

/// One replica in a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaSummary {
    /// Deal id.
    pub deal: u64,
    /// Replica index.
    pub replica: u32,
    /// Chunks stored.
    pub chunks: u64,
    /// Bytes stored.
    pub bytes: u64,
}

/// A storage node's report, carried by its heartbeats.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StorageReport {
    /// URL at which clients reach the node's chunk API, when the operator configured one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Bytes the operator gives the chunk store.
    pub quota_bytes: u64,
    /// Bytes the chunk store holds (each distinct chunk counted once).
    pub stored_bytes: u64,
    /// Every replica the node holds.
    pub replicas: Vec<ReplicaSummary>,
    /// Whether the node is draining: it takes no new replicas and keeps proving the ones it
    /// holds until they have moved.
    #[serde(default)]
    pub draining: bool,
    /// How the node's proofs went, per replica it proves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proofs: Vec<ReplicaProofs>,
}

impl StorageReport {
    /// The node's storage proof rate in basis points (10000 = every closed epoch proven): proven
    /// epochs over proven plus missed, over every replica it reports; `None` before any epoch
    /// closed. Rounded down: a node never shows a better record than it has.
    pub fn proof_rate_bps(&self) -> Option<u32> {
        let proven: u64 = self.proofs.iter().map(|p| u64::from(p.proven_epochs)).sum();
        let missed: u64 = self.proofs.iter().map(|p| u64::from(p.missed_epochs)).sum();
        let total = proven + missed;
        (total > 0).then(|| u32::try_from(proven * 10_000 / total).unwrap_or(10_000))
    }
}

/// How a storage node's proofs of one replica went, as the node saw them on-chain.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ReplicaProofs {
    /// Deal id.
    pub deal: u64,
    /// Replica index.
    pub replica: u32,
    /// Epochs of the replica proven on-chain while it was placed on this node.
    pub proven_epochs: u32,
    /// Epochs that closed unproven while the replica was placed on this node.
    pub missed_epochs: u32,
    /// The latest proven epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_proven_epoch: Option<u32>,
    /// When the latest proof was mined (Unix seconds, the block's time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_proof_at: Option<u64>,
    /// The transaction of the latest proof.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_proof_tx: Option<B256>,
    /// Why the current epoch could not be proven (a damaged chunk, an incomplete upload, data
    /// that does not match the replica's root, a chain error), when it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An error answer of the chunk API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, in words.
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::signers::local::PrivateKeySigner;

    fn request() -> StorageRequest {
        StorageRequest {
            method: StorageMethod::Put,
            chain_id: 31337,
            market: Address::repeat_byte(1),
            node: B256::repeat_byte(2),
            deal: 7,
            replica: 1,
            chunk: Some(3),
            sha256: Some(B256::repeat_byte(4)),
            expires: 1_000,
        }
    }

    #[test]
    fn signature_recovers_the_signer_and_binds_every_field() {
        let signer = PrivateKeySigner::random();
        let base = request();
        let signature = base.sign(&signer).unwrap();
        assert_eq!(base.recover(&signature), Some(signer.address()));
        assert!(base.message().starts_with(STORAGE_AUTH_DOMAIN));

        let changed = [
            StorageRequest {
                method: StorageMethod::Get,
                ..base.clone()
            },
            StorageRequest {
                chain_id: 1,
                ..base.clone()
            },
            StorageRequest {
                market: Address::repeat_byte(9),
                ..base.clone()
            },
            StorageRequest {
                node: B256::repeat_byte(9),
                ..base.clone()
            },
            StorageRequest {
                deal: 8,
                ..base.clone()
            },
            StorageRequest {
                replica: 2,
                ..base.clone()
            },
            StorageRequest {
                chunk: Some(4),
                ..base.clone()
            },
            StorageRequest {
                chunk: None,
                ..base.clone()
            },
            StorageRequest {
                sha256: Some(B256::repeat_byte(5)),
                ..base.clone()
            },
            StorageRequest {
                expires: 1_001,
                ..base.clone()
            },
        ];
        for other in changed {
            assert_ne!(
                other.recover(&signature),
                Some(signer.address()),
                "{other:?}"
            );
        }
    }

    #[test]
    fn manifest_counts_its_bytes() {
        let manifest = ReplicaManifest {
            deal: 1,
            replica: 0,
            chunks: vec![
                ChunkInfo {
                    index: 0,
                    sha256: B256::ZERO,
                    bytes: 10,
                },
                ChunkInfo {
                    index: 1,
                    sha256: B256::ZERO,
                    bytes: 5,
                },
            ],
        };
        assert_eq!(manifest.bytes(), 15);
        let json = serde_json::to_string(&manifest).unwrap();
        assert_eq!(
            serde_json::from_str::<ReplicaManifest>(&json).unwrap(),
            manifest
        );
    }
}

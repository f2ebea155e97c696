//! The storage role: a chunk store on disk and the HTTP chunk API through which deal owners
//! upload and read their replicas (see [`decloud_sdk::storage`] for the wire format).
//!
//! The role is on when the configuration has a `[storage]` section: it names the address the
//! chunk API listens on, the bytes the store may hold, and the chain and StorageMarket whose
//! deals the node serves.

mod chunks;
mod drain;
mod market;
mod prove;
mod server;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use alloy::primitives::{Address, B256};
use serde::{Deserialize, Serialize};
use url::Url;

pub use chunks::{ChunkStore, PutOutcome, ReplicaKey};
pub use decloud_sdk::storage::sha256;
pub use drain::{DRAIN_FLAG_FILE, Drain};
pub use market::{DealInfo, Market};
pub use prove::{
    PROOF_JOURNAL_FILE, PROVE_POLL_INTERVAL, PROVER_CACHE_DIR, ProofLog, Prover, select_keys,
};
pub use server::{StorageService, app, serve};

/// Directory of the chunk store under the data directory, unless configured.
pub const DEFAULT_CHUNKS_DIR: &str = "chunks";

/// The `[storage]` section of a configuration layer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageLayer {
    /// Address the chunk API listens on, e.g. `0.0.0.0:7700`.
    pub listen: Option<String>,
    /// Bytes the chunk store may hold.
    pub quota_bytes: Option<u64>,
    /// Chunk store directory (default `<data_dir>/chunks`).
    pub dir: Option<PathBuf>,
    /// JSON-RPC endpoint of the chain StorageMarket is on.
    pub rpc_url: Option<String>,
    /// StorageMarket's address.
    pub storage_market: Option<Address>,
    /// URL at which clients reach the chunk API from outside (e.g. `http://203.0.113.7:7700`),
    /// reported in heartbeats; none by default.
    pub public_url: Option<String>,
    /// Directory of the proving keys of StorageMarket's verifier (`proving.key`,
    /// `verifying.key`, `params.json`); not needed when the market verifies the development
    /// circuit, whose keys the agent derives itself.
    pub proving_keys: Option<PathBuf>,
    /// Drain mode: take no new replicas, keep proving the ones held (default false).
    pub drain: Option<bool>,
}

/// The resolved storage role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageConfig {
    /// Address the chunk API listens on.
    pub listen: SocketAddr,
    /// Bytes the chunk store may hold.
    pub quota_bytes: u64,
    /// Chunk store directory.
    pub dir: PathBuf,
    /// JSON-RPC endpoint.
    pub rpc_url: Url,
    /// StorageMarket's address.
    pub storage_market: Address,
    /// URL clients reach the chunk API at, reported in heartbeats.
    pub public_url: Option<Url>,
    /// Proving keys directory, when configured.
    pub proving_keys: Option<PathBuf>,
    /// Whether the configuration forces drain mode.
    pub drain: bool,
}

impl StorageLayer {
    /// Resolves the section; `data_dir` places the store when no `dir` is given.
    pub fn resolve(self, data_dir: &Path) -> Result<StorageConfig, String> {
        let missing = |key: &str| format!("storage.{key} is required when [storage] is set");
        let listen = self.listen.ok_or_else(|| missing("listen"))?;
        let listen = listen.parse().map_err(|_| {
            format!("storage.listen {listen:?} must be an address and port, e.g. 0.0.0.0:7700")
        })?;
        let quota_bytes = self.quota_bytes.ok_or_else(|| missing("quota_bytes"))?;
        if quota_bytes == 0 {
            return Err("storage.quota_bytes must be above 0".into());
        }
        let rpc_url = self.rpc_url.ok_or_else(|| missing("rpc_url"))?;
        let rpc_url: Url = rpc_url
            .parse()
            .map_err(|e| format!("storage.rpc_url {rpc_url:?} is not a URL: {e}"))?;
        if !matches!(rpc_url.scheme(), "http" | "https") {
            return Err(format!(
                "storage.rpc_url {rpc_url} must be an http:// or https:// URL"
            ));
        }
        let storage_market = self
            .storage_market
            .ok_or_else(|| missing("storage_market"))?;
        let public_url = self
            .public_url
            .map(|text| {
                let url: Url = text
                    .parse()
                    .map_err(|e| format!("storage.public_url {text:?} is not a URL: {e}"))?;
                if matches!(url.scheme(), "http" | "https") && url.host().is_some() {
                    Ok(url)
                } else {
                    Err(format!(
                        "storage.public_url {url} must be an http:// or https:// URL with a host"
                    ))
                }
            })
            .transpose()?;
        Ok(StorageConfig {
            listen,
            public_url,
            quota_bytes,
            dir: self
                .dir
                .unwrap_or_else(|| data_dir.join(DEFAULT_CHUNKS_DIR)),
            rpc_url,
            storage_market,
            proving_keys: self.proving_keys,
            drain: self.drain.unwrap_or(false),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer() -> StorageLayer {
        StorageLayer {
            listen: Some("127.0.0.1:7700".into()),
            quota_bytes: Some(1 << 30),
            dir: None,
            rpc_url: Some("http://127.0.0.1:8545".into()),
            storage_market: Some(Address::repeat_byte(1)),
            public_url: None,
            proving_keys: None,
            drain: None,
        }
    }

    #[test]
    fn the_section_resolves_with_its_defaults() {
        let config = layer().resolve(Path::new("/data")).unwrap();
        assert_eq!(config.dir, PathBuf::from("/data/chunks"));
        assert_eq!(config.listen.port(), 7700);
        assert_eq!(config.public_url, None);
        let config = StorageLayer {
            dir: Some("/disk2/chunks".into()),
            public_url: Some("https://node.example.org:7700".into()),
            ..layer()
        }
        .resolve(Path::new("/data"))
        .unwrap();
        assert_eq!(config.dir, PathBuf::from("/disk2/chunks"));
        assert_eq!(
            config.public_url.unwrap().as_str(),
            "https://node.example.org:7700/"
        );
    }

    #[test]
    fn bad_or_missing_values_are_refused_with_the_key() {
        let refused = |layer: StorageLayer, why: &str| {
            let e = layer.resolve(Path::new("/data")).unwrap_err();
            assert!(e.contains(why), "{why}: {e}");
        };
        refused(
            StorageLayer {
                listen: None,
                ..layer()
            },
            "storage.listen is required",
        );
        refused(
            StorageLayer {
                listen: Some("7700".into()),
                ..layer()
            },
            "address and port",
        );
        refused(
            StorageLayer {
                quota_bytes: None,
                ..layer()
            },
            "storage.quota_bytes is required",
        );
        refused(
            StorageLayer {
                quota_bytes: Some(0),
                ..layer()
            },
            "above 0",
        );
        refused(
            StorageLayer {
                rpc_url: None,
                ..layer()
            },
            "storage.rpc_url is required",
        );
        refused(
            StorageLayer {
                rpc_url: Some("ws://x".into()),
                ..layer()
            },
            "http://",
        );
        refused(
            StorageLayer {
                storage_market: None,
                ..layer()
            },
            "storage.storage_market",
        );
        refused(
            StorageLayer {
                public_url: Some("node:7700".into()),
                ..layer()
            },
            "public_url",
        );
        refused(
            StorageLayer {
                public_url: Some("not a url".into()),
                ..layer()
            },
            "public_url",
        );
    }
}

/// Everything that can go wrong in the storage role; each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A file of the store could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was attempted.
        action: &'static str,
        /// On which file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The request is malformed (a header or path segment).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The signature is missing, expired or unreadable.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The signer may not do this.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The chunk does not hash to what the owner signed: truncated or altered on the way.
    #[error(
        "chunk of {bytes} bytes hashes to {actual}, not the signed {expected}: the upload was truncated or altered"
    )]
    HashMismatch {
        /// Hash the owner signed.
        expected: B256,
        /// Hash of what arrived.
        actual: B256,
        /// Bytes that arrived.
        bytes: u64,
    },
    /// Another chunk is already stored at this index.
    #[error(
        "deal {deal} replica {replica} already holds a different chunk {index}; delete the replica to replace it"
    )]
    ChunkConflict {
        /// Deal id.
        deal: u64,
        /// Replica index.
        replica: u32,
        /// Chunk index.
        index: u32,
    },
    /// The replica would exceed the size its deal paid for.
    #[error("the replica would hold {bytes} bytes, more than the {limit} its deal paid for")]
    ReplicaTooLarge {
        /// Bytes after the write.
        bytes: u64,
        /// The deal's size.
        limit: u64,
    },
    /// The chunk store is full.
    #[error("the node's storage quota is full: {needed} bytes needed, {free} free")]
    OverQuota {
        /// Bytes the write needs.
        needed: u64,
        /// Bytes left.
        free: u64,
    },
    /// The chunk is larger than any chunk a node accepts.
    #[error("a chunk is at most {limit} bytes")]
    ChunkTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The market has no such deal.
    #[error("no deal {0} on this node's StorageMarket")]
    DealNotFound(u64),
    /// The deal's epochs are over: it takes no more data.
    #[error("deal {deal} ended at block {end_block}: its funds are spent or refunded")]
    DealEnded {
        /// Deal id.
        deal: u64,
        /// First block after its last epoch.
        end_block: u64,
    },
    /// The node holds no such chunk.
    #[error("no chunk {index} of deal {deal} replica {replica} on this node")]
    ChunkNotFound {
        /// Deal id.
        deal: u64,
        /// Replica index.
        replica: u32,
        /// Chunk index.
        index: u32,
    },
    /// A stored chunk failed its hash check; it is not served.
    #[error("stored chunk {sha256} is corrupt: {reason}")]
    Corrupt {
        /// Its name (the hash it was stored under).
        sha256: B256,
        /// What is wrong.
        reason: String,
    },
    /// The chain could not be read.
    #[error("chain: {0}")]
    Chain(String),
    /// The node takes no new replicas: it is draining.
    #[error(
        "this node is draining: it takes no new replicas (replicas it already holds part of may still be resumed)"
    )]
    Draining,
    /// Proving keys or the proof journal could not be used.
    #[error("prover: {0}")]
    Prover(String),
}

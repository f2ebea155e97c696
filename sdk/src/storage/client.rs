//! A deal owner's client of one storage node's chunk API.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alloy::{
    primitives::{Address, B256},
    signers::local::PrivateKeySigner,
};
use reqwest::{Method, RequestBuilder, StatusCode};
use sha2::{Digest as _, Sha256};
use url::Url;

use super::{
    ErrorBody, HEADER_EXPIRES, HEADER_SHA256, HEADER_SIGNATURE, MAX_CHUNK_BYTES, ReplicaManifest,
    StorageMethod, StorageRequest,
};

/// How long each request's signature stays valid.
const VALIDITY: Duration = Duration::from_secs(120);

/// SHA-256 of `data`, the name of a chunk.
pub fn sha256(data: &[u8]) -> B256 {
    B256::from(<[u8; 32]>::from(Sha256::digest(data)))
}

/// What can go wrong talking to a storage node.
#[derive(Debug, thiserror::Error)]
pub enum StorageClientError {
    /// The node could not be reached or the transfer broke off.
    #[error("storage node {url}: {source}")]
    Transport {
        /// The node's URL.
        url: String,
        /// What failed.
        #[source]
        source: reqwest::Error,
    },
    /// The node refused the request; `error` is its reason.
    #[error("storage node {url} answered {status}: {error}")]
    Refused {
        /// The node's URL.
        url: String,
        /// HTTP status.
        status: StatusCode,
        /// The node's reason.
        error: String,
    },
    /// The node served bytes that are not the chunk asked for.
    #[error(
        "storage node {url} served chunk {index} of deal {deal} replica {replica} hashing to {actual}, not {expected}"
    )]
    WrongChunk {
        /// The node's URL.
        url: String,
        /// Deal id.
        deal: u64,
        /// Replica index.
        replica: u32,
        /// Chunk index.
        index: u32,
        /// The hash the client expects.
        expected: B256,
        /// The hash of what it got.
        actual: B256,
    },
    /// A chunk is larger than nodes accept.
    #[error("chunk {index} has {bytes} bytes; a node accepts at most {MAX_CHUNK_BYTES}")]
    ChunkTooLarge {
        /// Chunk index.
        index: u32,
        /// Its size.
        bytes: usize,
    },
    /// The owner's key could not sign.
    #[error("signing the request: {0}")]
    Signing(#[from] alloy::signers::Error),
}

/// What [`NodeClient::upload_replica`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UploadStats {
    /// Chunks sent.
    pub sent_chunks: u64,
    /// Bytes sent.
    pub sent_bytes: u64,
    /// Chunks the node already held (a resumed upload).
    pub skipped_chunks: u64,
}

/// Signed requests to one node for the deals of one owner.
#[derive(Debug, Clone)]
pub struct NodeClient {
    http: reqwest::Client,
    url: Url,
    chain_id: u64,
    market: Address,
    node: B256,
    owner: PrivateKeySigner,
}

impl NodeClient {
    /// A client of the node `node` whose chunk API is at `url` (e.g. `http://203.0.113.7:7700`),
    /// for deals on the StorageMarket `market` of chain `chain_id`, signing as `owner`.
    pub fn new(
        url: Url,
        chain_id: u64,
        market: Address,
        node: B256,
        owner: PrivateKeySigner,
    ) -> Self {
        Self {
            http: reqwest::Client::new(),
            url,
            chain_id,
            market,
            node,
            owner,
        }
    }

    /// The node's id.
    pub fn node(&self) -> B256 {
        self.node
    }

    /// The node's URL.
    pub fn url(&self) -> &Url {
        &self.url
    }

    fn endpoint(&self, deal: u64, replica: u32, chunk: Option<u32>) -> Url {
        let mut path = format!("v1/storage/deals/{deal}/replicas/{replica}");
        if let Some(chunk) = chunk {
            path.push_str(&format!("/chunks/{chunk}"));
        }
        self.url.join(&path).unwrap_or_else(|_| self.url.clone())
    }

    fn signed(
        &self,
        method: StorageMethod,
        deal: u64,
        replica: u32,
        chunk: Option<u32>,
        sha256: Option<B256>,
    ) -> Result<RequestBuilder, StorageClientError> {
        let expires = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .saturating_add(VALIDITY)
            .as_secs();
        let request = StorageRequest {
            method,
            chain_id: self.chain_id,
            market: self.market,
            node: self.node,
            deal,
            replica,
            chunk,
            sha256,
            expires,
        };
        let signature = request.sign(&self.owner)?;
        let http_method = match method {
            StorageMethod::Put => Method::PUT,
            StorageMethod::Get | StorageMethod::List => Method::GET,
            StorageMethod::Delete => Method::DELETE,
        };
        Ok(self
            .http
            .request(http_method, self.endpoint(deal, replica, chunk))
            .header(HEADER_EXPIRES, expires.to_string())
            .header(
                HEADER_SIGNATURE,
                format!("0x{}", hex::encode(signature.as_bytes())),
            ))
    }

    async fn send(&self, request: RequestBuilder) -> Result<reqwest::Response, StorageClientError> {
        let response = request
            .send()
            .await
            .map_err(|source| self.transport(source))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let error = serde_json::from_str::<ErrorBody>(&text)
            .map(|b| b.error)
            .unwrap_or(text);
        Err(StorageClientError::Refused {
            url: self.url.to_string(),
            status,
            error,
        })
    }

    fn transport(&self, source: reqwest::Error) -> StorageClientError {
        StorageClientError::Transport {
            url: self.url.to_string(),
            source,
        }
    }

    /// Checks that the node's chunk API answers, before a deal names the node: an unsigned
    /// manifest request must come back as the API's own refusal (a JSON error) or a success.
    /// A node that is down, or a URL where no chunk API answers, fails.
    pub async fn probe(&self) -> Result<(), StorageClientError> {
        let response = self
            .http
            .get(self.endpoint(0, 0, None))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|source| self.transport(source))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if status.is_success() || serde_json::from_str::<ErrorBody>(&text).is_ok() {
            return Ok(());
        }
        Err(StorageClientError::Refused {
            url: self.url.to_string(),
            status,
            error: format!("no chunk API answers here ({})", text.trim()),
        })
    }

    /// Stores chunk `index` of a replica. Returns whether the node wrote it (`false`: it
    /// already held it).
    pub async fn put_chunk(
        &self,
        deal: u64,
        replica: u32,
        index: u32,
        data: Vec<u8>,
    ) -> Result<bool, StorageClientError> {
        if data.len() > MAX_CHUNK_BYTES {
            return Err(StorageClientError::ChunkTooLarge {
                index,
                bytes: data.len(),
            });
        }
        let hash = sha256(&data);
        let request = self
            .signed(StorageMethod::Put, deal, replica, Some(index), Some(hash))?
            .header(HEADER_SHA256, hash.to_string())
            .body(data);
        let response = self.send(request).await?;
        Ok(response.status() == StatusCode::CREATED)
    }

    /// Reads chunk `index` of a replica and checks that it hashes to `expected`.
    pub async fn get_chunk(
        &self,
        deal: u64,
        replica: u32,
        index: u32,
        expected: B256,
    ) -> Result<Vec<u8>, StorageClientError> {
        let request = self.signed(StorageMethod::Get, deal, replica, Some(index), None)?;
        let data = self
            .send(request)
            .await?
            .bytes()
            .await
            .map_err(|source| self.transport(source))?
            .to_vec();
        let actual = sha256(&data);
        if actual != expected {
            return Err(StorageClientError::WrongChunk {
                url: self.url.to_string(),
                deal,
                replica,
                index,
                expected,
                actual,
            });
        }
        Ok(data)
    }

    /// What the node holds of a replica.
    pub async fn manifest(
        &self,
        deal: u64,
        replica: u32,
    ) -> Result<ReplicaManifest, StorageClientError> {
        let request = self.signed(StorageMethod::List, deal, replica, None, None)?;
        self.send(request)
            .await?
            .json()
            .await
            .map_err(|source| self.transport(source))
    }

    /// Asks the node to drop a replica.
    pub async fn delete_replica(&self, deal: u64, replica: u32) -> Result<(), StorageClientError> {
        let request = self.signed(StorageMethod::Delete, deal, replica, None, None)?;
        self.send(request).await.map(drop)
    }

    /// Uploads a whole replica, `count` chunks made by `chunk(index)`, resuming an interrupted
    /// upload: chunks the node's manifest already lists with the same hash are not sent again.
    /// `progress(bytes)` is called after each chunk with the bytes it accounted for (sent or
    /// already held).
    pub async fn upload_replica(
        &self,
        deal: u64,
        replica: u32,
        count: u32,
        mut chunk: impl FnMut(u32) -> Vec<u8>,
        mut progress: impl FnMut(u64),
    ) -> Result<UploadStats, StorageClientError> {
        let held: std::collections::HashMap<u32, B256> = self
            .manifest(deal, replica)
            .await?
            .chunks
            .into_iter()
            .map(|c| (c.index, c.sha256))
            .collect();
        let mut stats = UploadStats::default();
        for index in 0..count {
            let data = chunk(index);
            let bytes = data.len() as u64;
            if held.get(&index) == Some(&sha256(&data)) {
                stats.skipped_chunks += 1;
            } else {
                self.put_chunk(deal, replica, index, data).await?;
                stats.sent_chunks += 1;
                stats.sent_bytes += bytes;
            }
            progress(bytes);
        }
        Ok(stats)
    }
}

//! The chunk API over HTTP: deal owners, and the repairers they name on-chain, write and read
//! their replicas' chunks with signed requests (see [`decloud_sdk::storage`]).
//!
//! Reads, lists and writes are allowed to the deal's owner and its repairer, for a replica the
//! deal places on this node. A delete is allowed to the owner, and to any signer once the replica
//! is no longer this node's (moved to another node) or the deal is settled.

use std::{
    future::Future,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use alloy::primitives::{Address, B256, Signature};
use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use decloud_sdk::storage::{
    ErrorBody, HEADER_EXPIRES, HEADER_SHA256, HEADER_SIGNATURE, MAX_CHUNK_BYTES, MAX_VALIDITY_SECS,
    ReplicaManifest, StorageMethod, StorageRequest,
};
use tokio::net::TcpListener;
use tracing::{error, info, warn};

use super::{ChunkStore, DealInfo, Drain, Market, PutOutcome, StorageError};

/// What the chunk API serves from: the store, the market and this node's id.
#[derive(Debug, Clone)]
pub struct StorageService {
    store: Arc<ChunkStore>,
    market: Arc<Market>,
    node: B256,
    drain: Option<Drain>,
}

impl StorageService {
    /// A service for node `node`.
    pub fn new(store: Arc<ChunkStore>, market: Arc<Market>, node: B256) -> Self {
        Self {
            store,
            market,
            node,
            drain: None,
        }
    }

    /// Refuses new replicas while `drain` says the node is draining.
    pub fn with_drain(mut self, drain: Drain) -> Self {
        self.drain = Some(drain);
        self
    }

    /// Checks a request's signature and expiry, that the deal exists and that the signer may do
    /// this to the replica (see the module docs). Returns the deal and the signer.
    async fn authorize(
        &self,
        headers: &HeaderMap,
        method: StorageMethod,
        deal: u64,
        replica: u32,
        chunk: Option<u32>,
        sha256: Option<B256>,
    ) -> Result<(DealInfo, Address), StorageError> {
        let expires: u64 = header_text(headers, HEADER_EXPIRES)?
            .parse()
            .map_err(|_| StorageError::BadRequest(format!("{HEADER_EXPIRES} is not a number")))?;
        let signature = header_text(headers, HEADER_SIGNATURE)?;
        let signature = hex::decode(signature.trim_start_matches("0x"))
            .ok()
            .and_then(|bytes| Signature::try_from(bytes.as_slice()).ok())
            .ok_or_else(|| {
                StorageError::BadRequest(format!(
                    "{HEADER_SIGNATURE} is not a 65-byte hex signature"
                ))
            })?;
        let now = unix_now();
        if expires < now {
            return Err(StorageError::Unauthorized(format!(
                "the signature expired at {expires} (node time {now})"
            )));
        }
        if expires > now + MAX_VALIDITY_SECS {
            return Err(StorageError::Unauthorized(format!(
                "the signature expires at {expires}, more than {MAX_VALIDITY_SECS} s after the node's time {now}"
            )));
        }
        let request = StorageRequest {
            method,
            chain_id: self.market.chain_id(),
            market: self.market.address(),
            node: self.node,
            deal,
            replica,
            chunk,
            sha256,
            expires,
        };
        let signer = request.recover(&signature).ok_or_else(|| {
            StorageError::Unauthorized("the signature does not recover to an address".into())
        })?;
        // The owner never changes, so the owner's requests may use a cached read. Anyone else's
        // rights change on-chain (a repairer named or cleared, a move, a settlement): they are
        // decided on what the chain says now.
        let info = self.market.deal(deal).await?;
        if signer == info.owner && self.permits(&info, method, deal, replica, signer).is_ok() {
            return Ok((info, signer));
        }
        let info = self.market.fresh_deal(deal).await?;
        self.permits(&info, method, deal, replica, signer)?;
        Ok((info, signer))
    }

    /// Whether `signer` may do `method` to the replica, by the deal as given.
    fn permits(
        &self,
        info: &DealInfo,
        method: StorageMethod,
        deal: u64,
        replica: u32,
        signer: Address,
    ) -> Result<(), StorageError> {
        let Some(node) = info.nodes.get(replica as usize) else {
            return Err(StorageError::BadRequest(format!(
                "deal {deal} has {} replicas, no replica {replica}",
                info.nodes.len()
            )));
        };
        let here = *node == self.node;
        if method == StorageMethod::Delete {
            return if signer == info.owner || !here || info.settled {
                Ok(())
            } else {
                Err(StorageError::Forbidden(format!(
                    "replica {replica} of deal {deal} is still placed on this node and the deal is \
                     not settled: only the deal's owner may delete it, not {signer}"
                )))
            };
        }
        if !here {
            return Err(StorageError::Forbidden(format!(
                "replica {replica} of deal {deal} is placed on node {node}, not on this node"
            )));
        }
        if !info.may_access(signer) {
            return Err(StorageError::Forbidden(format!(
                "the request is signed by {signer}, neither deal {deal}'s owner nor its repairer"
            )));
        }
        Ok(())
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, StorageError> {
    headers
        .get(name)
        .ok_or_else(|| StorageError::Unauthorized(format!("the request has no {name} header")))?
        .to_str()
        .map_err(|_| StorageError::BadRequest(format!("{name} is not text")))
}

/// The chunk API's routes.
pub fn app(service: StorageService) -> Router {
    Router::new()
        .route(
            "/v1/storage/deals/{deal}/replicas/{replica}/chunks/{index}",
            get(get_chunk).put(put_chunk),
        )
        .route(
            "/v1/storage/deals/{deal}/replicas/{replica}",
            get(get_manifest).delete(delete_replica),
        )
        .layer(DefaultBodyLimit::max(MAX_CHUNK_BYTES))
        .with_state(service)
}

/// Serves the chunk API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    service: StorageService,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(service))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageError::Chain(format!("store task failed: {e}")))?
}

async fn put_chunk(
    State(service): State<StorageService>,
    Path((deal, replica, index)): Path<(u64, u32, u32)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, StorageError> {
    let sha256: B256 = header_text(&headers, HEADER_SHA256)
        .map_err(|_| StorageError::BadRequest(format!("a write needs the {HEADER_SHA256} header")))?
        .parse()
        .map_err(|_| {
            StorageError::BadRequest(format!("{HEADER_SHA256} is not a 32-byte hex hash"))
        })?;
    let (info, _) = service
        .authorize(
            &headers,
            StorageMethod::Put,
            deal,
            replica,
            Some(index),
            Some(sha256),
        )
        .await?;
    // Draining: nothing new, but a replica the node already holds part of may be resumed.
    if service.drain.as_ref().is_some_and(Drain::is_draining)
        && service.store.manifest((deal, replica)).chunks.is_empty()
    {
        return Err(StorageError::Draining);
    }
    let end_block = service.market.end_block(&info);
    if service.market.block_number().await? >= end_block {
        return Err(StorageError::DealEnded { deal, end_block });
    }
    if body.len() > MAX_CHUNK_BYTES {
        return Err(StorageError::ChunkTooLarge {
            limit: MAX_CHUNK_BYTES,
        });
    }
    let max_bytes = info
        .segment_count
        .saturating_mul(decloud_sdk::storage::SEGMENT_BYTES);
    let store = service.store.clone();
    let outcome =
        blocking(move || store.put((deal, replica), index, sha256, &body, max_bytes)).await?;
    Ok(match outcome {
        PutOutcome::Stored => StatusCode::CREATED,
        PutOutcome::AlreadyStored => StatusCode::OK,
    })
}

async fn get_chunk(
    State(service): State<StorageService>,
    Path((deal, replica, index)): Path<(u64, u32, u32)>,
    headers: HeaderMap,
) -> Result<Response, StorageError> {
    service
        .authorize(
            &headers,
            StorageMethod::Get,
            deal,
            replica,
            Some(index),
            None,
        )
        .await?;
    let store = service.store.clone();
    let (sha256, data) = blocking(move || store.get((deal, replica), index)).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (
                header::HeaderName::from_static(HEADER_SHA256),
                sha256.to_string(),
            ),
        ],
        data,
    )
        .into_response())
}

async fn get_manifest(
    State(service): State<StorageService>,
    Path((deal, replica)): Path<(u64, u32)>,
    headers: HeaderMap,
) -> Result<Json<ReplicaManifest>, StorageError> {
    service
        .authorize(&headers, StorageMethod::List, deal, replica, None, None)
        .await?;
    Ok(Json(service.store.manifest((deal, replica))))
}

async fn delete_replica(
    State(service): State<StorageService>,
    Path((deal, replica)): Path<(u64, u32)>,
    headers: HeaderMap,
) -> Result<StatusCode, StorageError> {
    let (info, signer) = service
        .authorize(&headers, StorageMethod::Delete, deal, replica, None, None)
        .await?;
    let store = service.store.clone();
    let held = blocking(move || store.delete_replica((deal, replica))).await?;
    let by_owner = signer == info.owner;
    info!(target: "agent::storage", deal, replica, held, %signer, by_owner, "replica deleted");
    Ok(StatusCode::NO_CONTENT)
}

impl IntoResponse for StorageError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::BadRequest(_) | Self::HashMismatch { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::DealNotFound(_) | Self::ChunkNotFound { .. } => StatusCode::NOT_FOUND,
            Self::ChunkConflict { .. } => StatusCode::CONFLICT,
            Self::DealEnded { .. } => StatusCode::GONE,
            Self::ReplicaTooLarge { .. } | Self::ChunkTooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            Self::OverQuota { .. } => StatusCode::INSUFFICIENT_STORAGE,
            Self::Corrupt { .. } | Self::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Chain(_) | Self::Draining => StatusCode::SERVICE_UNAVAILABLE,
            Self::Prover(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = match &self {
            Self::Io { .. } => {
                error!(target: "agent::storage", error = %self, "chunk store failure");
                "internal error of the node's chunk store".to_owned()
            }
            Self::Chain(_) => {
                error!(target: "agent::storage", error = %self, "chain read failed");
                "the node cannot read the chain right now".to_owned()
            }
            Self::Corrupt { .. } => {
                warn!(target: "agent::storage", error = %self, "refused to serve a damaged chunk");
                self.to_string()
            }
            _ => self.to_string(),
        };
        (status, Json(ErrorBody { error: message })).into_response()
    }
}

//! What the chunk API needs of StorageMarket: a deal's owner, repairer, size, schedule and
//! placement.
//!
//! A deal's owner, size and start never change; its repairer, its end (`endDeal`) and its
//! placement (`replaceReplica`) do. A read is cached for [`DEAL_CACHE_TTL`] so that a stream of
//! the owner's chunk requests does not read the chain per chunk; the chunk API decides anyone
//! else's requests, and any refusal, on a fresh read.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use alloy::{
    primitives::{Address, B256, U256},
    providers::{DynProvider, Provider, ProviderBuilder},
};
use decloud_sdk::bindings::StorageMarket;
use tracing::debug;
use url::Url;

use super::StorageError;

/// How long a deal read from the chain is used before it is read again.
pub(crate) const DEAL_CACHE_TTL: Duration = Duration::from_secs(5);

/// A deal as the chunk API needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DealInfo {
    /// Who opened (and pays for) the deal.
    pub owner: Address,
    /// Who the owner lets read and rewrite the deal's replicas; zero when nobody.
    pub repairer: Address,
    /// Segments (1 KiB each) of every replica.
    pub segment_count: u64,
    /// Block the deal started at.
    pub start_block: u64,
    /// Epochs the deal runs (fewer once its owner ended it early).
    pub epochs: u32,
    /// Whether the deal was settled (its unproven epochs refunded).
    pub settled: bool,
    /// Node of each replica, by replica index.
    pub nodes: Vec<B256>,
}

impl DealInfo {
    /// Whether `signer` may read, list and write the deal's replicas: its owner or its repairer.
    pub fn may_access(&self, signer: Address) -> bool {
        signer == self.owner || (!self.repairer.is_zero() && signer == self.repairer)
    }
}

/// Reads deals from a StorageMarket, caching each read for [`DEAL_CACHE_TTL`].
#[derive(Debug)]
pub struct Market {
    provider: DynProvider,
    address: Address,
    chain_id: u64,
    epoch_blocks: u64,
    deals: Mutex<HashMap<u64, (Instant, DealInfo)>>,
}

fn chain_error(what: &str, e: impl std::fmt::Display) -> StorageError {
    StorageError::Chain(format!("{what}: {e}"))
}

impl Market {
    /// Connects to `rpc_url` and reads the market's chain id and epoch length.
    pub async fn connect(rpc_url: &Url, address: Address) -> Result<Self, StorageError> {
        let provider = ProviderBuilder::new()
            .connect_http(rpc_url.clone())
            .erased();
        let chain_id = provider
            .get_chain_id()
            .await
            .map_err(|e| chain_error("reading the chain id", e))?;
        let market = StorageMarket::new(address, &provider);
        let epoch_blocks = market
            .epochBlocks()
            .call()
            .await
            .map_err(|e| chain_error(&format!("reading StorageMarket at {address}"), e))?;
        Ok(Self {
            provider,
            address,
            chain_id,
            epoch_blocks,
            deals: Mutex::new(HashMap::new()),
        })
    }

    /// The market's address.
    pub fn address(&self) -> Address {
        self.address
    }

    /// The chain id.
    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// A deal, read from the chain at most [`DEAL_CACHE_TTL`] ago;
    /// [`StorageError::DealNotFound`] when the market has none of that id.
    pub async fn deal(&self, id: u64) -> Result<DealInfo, StorageError> {
        if let Some((read_at, info)) = self.deals.lock().expect("deal cache lock").get(&id)
            && read_at.elapsed() < DEAL_CACHE_TTL
        {
            return Ok(info.clone());
        }
        self.fresh_deal(id).await
    }

    /// A deal read from the chain now.
    pub async fn fresh_deal(&self, id: u64) -> Result<DealInfo, StorageError> {
        let market = StorageMarket::new(self.address, &self.provider);
        let count = market
            .dealCount()
            .call()
            .await
            .map_err(|e| chain_error("reading the deal count", e))?;
        if id == 0 || U256::from(id) > count {
            return Err(StorageError::DealNotFound(id));
        }
        let deal = market
            .getDeal(U256::from(id))
            .call()
            .await
            .map_err(|e| chain_error(&format!("reading deal {id}"), e))?;
        let replicas = market
            .getReplicas(U256::from(id))
            .call()
            .await
            .map_err(|e| chain_error(&format!("reading the replicas of deal {id}"), e))?;
        let repairer = market
            .repairerOf(U256::from(id))
            .call()
            .await
            .map_err(|e| chain_error(&format!("reading the repairer of deal {id}"), e))?;
        let info = DealInfo {
            owner: deal.owner,
            repairer,
            segment_count: deal.segmentCount,
            start_block: deal.startBlock,
            epochs: deal.epochs,
            settled: deal.settled,
            nodes: replicas.iter().map(|r| r.nodeId).collect(),
        };
        debug!(target: "agent::storage", deal = id, owner = %info.owner, repairer = %info.repairer, replicas = info.nodes.len(), "deal read from the chain");
        self.deals
            .lock()
            .expect("deal cache lock")
            .insert(id, (Instant::now(), info.clone()));
        Ok(info)
    }

    /// The first block after the deal's last epoch.
    pub fn end_block(&self, deal: &DealInfo) -> u64 {
        deal.start_block + u64::from(deal.epochs) * self.epoch_blocks
    }

    /// The chain's latest block number.
    pub async fn block_number(&self) -> Result<u64, StorageError> {
        self.provider
            .get_block_number()
            .await
            .map_err(|e| chain_error("reading the block number", e))
    }
}

//! What the chunk API needs of StorageMarket: a deal's owner, size, schedule and placement.

use std::{collections::HashMap, sync::Mutex};

use alloy::{
    primitives::{Address, B256, U256},
    providers::{DynProvider, Provider, ProviderBuilder},
};
use decloud_sdk::bindings::StorageMarket;
use tracing::debug;
use url::Url;

use super::StorageError;

/// The parts of a deal that never change once it is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DealInfo {
    /// Who opened (and pays for) the deal.
    pub owner: Address,
    /// Segments (1 KiB each) of every replica.
    pub segment_count: u64,
    /// Block the deal started at.
    pub start_block: u64,
    /// Epochs paid for.
    pub epochs: u32,
    /// Node of each replica, by replica index.
    pub nodes: Vec<B256>,
}

/// Reads deals from a StorageMarket; caches what cannot change.
#[derive(Debug)]
pub struct Market {
    provider: DynProvider,
    address: Address,
    chain_id: u64,
    epoch_blocks: u64,
    deals: Mutex<HashMap<u64, DealInfo>>,
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

    /// A deal; [`StorageError::DealNotFound`] when the market has none of that id.
    pub async fn deal(&self, id: u64) -> Result<DealInfo, StorageError> {
        if let Some(info) = self.deals.lock().expect("deal cache lock").get(&id) {
            return Ok(info.clone());
        }
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
        let info = DealInfo {
            owner: deal.owner,
            segment_count: deal.segmentCount,
            start_block: deal.startBlock,
            epochs: deal.epochs,
            nodes: replicas.iter().map(|r| r.nodeId).collect(),
        };
        debug!(target: "agent::storage", deal = id, owner = %info.owner, replicas = info.nodes.len(), "deal read from the chain");
        self.deals
            .lock()
            .expect("deal cache lock")
            .insert(id, info.clone());
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

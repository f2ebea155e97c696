//! Sending transactions and making calls through the generated bindings with decoded errors.
//!
//! ```no_run
//! # async fn example(
//! #     provider: alloy::providers::DynProvider,
//! #     address: alloy::primitives::Address,
//! #     node_id: alloy::primitives::B256,
//! # ) -> Result<(), decloud_sdk::Error> {
//! use decloud_sdk::{bindings::NodeRegistry, tx};
//!
//! let registry = NodeRegistry::new(address, &provider);
//! let receipt = tx::send("NodeRegistry", registry.pause(node_id)).await?;
//! let node = tx::read("NodeRegistry", registry.getNode(node_id)).await?;
//! # let _ = (receipt, node);
//! # Ok(())
//! # }
//! ```
//! A revert comes back as [`Error::Revert`] with the contract's custom error decoded.

use alloy::{
    contract::{CallBuilder, CallDecoder},
    eips::eip1559::Eip1559Estimation,
    network::{Ethereum, EthereumWallet, Network, TransactionBuilder},
    providers::{
        DynProvider, Provider, ProviderBuilder, SendableTx,
        fillers::{FillerControlFlow, TxFiller},
    },
    rpc::types::TransactionReceipt,
    signers::local::PrivateKeySigner,
    transports::TransportResult,
};
use url::Url;

use crate::Error;

/// A provider that signs with `signer` over HTTP. It asks the node for the account's nonce before
/// every transaction instead of caching it: a cached nonce is consumed even when the transaction
/// is refused at gas estimation (a revert), and every later transaction would then wait forever
/// behind the gap. Gas limits carry a margin over the node's estimate (see [`GasWithMargin`]).
pub fn signing_provider(url: Url, signer: PrivateKeySigner) -> DynProvider {
    ProviderBuilder::default()
        .filler(GasWithMargin)
        .with_simple_nonce_management()
        .fetch_chain_id()
        .wallet(EthereumWallet::from(signer))
        .connect_http(url)
        .erased()
}

/// Percentage of the node's gas estimate a transaction may use (the margin `forge script` uses).
pub const GAS_ESTIMATE_PERCENT: u64 = 130;

/// Fills a transaction's gas limit with the node's estimate plus a margin, and its EIP-1559 fees.
///
/// The estimate is exact for the state and block it was computed against, but the transaction
/// runs in a later block: a storage write of `block.timestamp` costs 100 gas when the estimate's
/// block has the same timestamp as the stored one and 2,900 once the second has turned, so an
/// unpadded estimate sometimes runs out of gas and the transaction reverts on chain.
#[derive(Debug, Clone, Copy, Default)]
pub struct GasWithMargin;

/// The gas fields [`GasWithMargin`] fills.
#[derive(Debug, Clone, Copy)]
pub struct GasFields {
    gas_limit: u64,
    fees: Eip1559Estimation,
}

/// `estimate` grown by [`GAS_ESTIMATE_PERCENT`], rounded up (at most `u64::MAX`).
pub fn gas_limit_with_margin(estimate: u64) -> u64 {
    let limit = (u128::from(estimate) * u128::from(GAS_ESTIMATE_PERCENT)).div_ceil(100);
    u64::try_from(limit).unwrap_or(u64::MAX)
}

impl<N: Network> TxFiller<N> for GasWithMargin {
    type Fillable = GasFields;

    fn status(&self, tx: &N::TransactionRequest) -> FillerControlFlow {
        if tx.gas_limit().is_some()
            && tx.max_fee_per_gas().is_some()
            && tx.max_priority_fee_per_gas().is_some()
        {
            FillerControlFlow::Finished
        } else {
            FillerControlFlow::Ready
        }
    }

    fn fill_sync(&self, _tx: &mut SendableTx<N>) {}

    async fn prepare<P: Provider<N>>(
        &self,
        provider: &P,
        tx: &N::TransactionRequest,
    ) -> TransportResult<Self::Fillable> {
        let gas_limit = match tx.gas_limit() {
            Some(limit) => limit,
            None => gas_limit_with_margin(provider.estimate_gas(tx.clone()).await?),
        };
        let fees = match (tx.max_fee_per_gas(), tx.max_priority_fee_per_gas()) {
            (Some(max_fee_per_gas), Some(max_priority_fee_per_gas)) => Eip1559Estimation {
                max_fee_per_gas,
                max_priority_fee_per_gas,
            },
            _ => provider.estimate_eip1559_fees().await?,
        };
        Ok(GasFields { gas_limit, fees })
    }

    async fn fill(
        &self,
        fields: Self::Fillable,
        mut tx: SendableTx<N>,
    ) -> TransportResult<SendableTx<N>> {
        if let Some(builder) = tx.as_mut_builder() {
            builder.set_gas_limit(fields.gas_limit);
            builder.set_max_fee_per_gas(fields.fees.max_fee_per_gas);
            builder.set_max_priority_fee_per_gas(fields.fees.max_priority_fee_per_gas);
        }
        Ok(tx)
    }
}

/// Sends a transaction, waits for its receipt and checks that it succeeded. `contract` names the
/// called contract (as in [`crate::bindings::CONTRACT_NAMES`]) so its custom errors are tried first.
pub async fn send<P, D>(
    contract: &str,
    call: CallBuilder<P, D, Ethereum>,
) -> Result<TransactionReceipt, Error>
where
    P: Provider<Ethereum>,
    D: CallDecoder,
{
    let pending = call
        .send()
        .await
        .map_err(|e| Error::from_contract(e, Some(contract)))?;
    let receipt = pending.get_receipt().await?;
    if !receipt.status() {
        return Err(Error::TransactionFailed(receipt.transaction_hash));
    }
    Ok(receipt)
}

/// Makes a read-only call and decodes its result. `contract` names the called contract.
pub async fn read<P, D>(
    contract: &str,
    call: CallBuilder<P, D, Ethereum>,
) -> Result<D::CallOutput, Error>
where
    P: Provider<Ethereum>,
    D: CallDecoder,
{
    call.call()
        .await
        .map_err(|e| Error::from_contract(e, Some(contract)))
}

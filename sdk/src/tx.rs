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
    network::{Ethereum, EthereumWallet},
    providers::{DynProvider, Provider, ProviderBuilder},
    rpc::types::TransactionReceipt,
    signers::local::PrivateKeySigner,
};
use url::Url;

use crate::Error;

/// A provider that signs with `signer` over HTTP. It asks the node for the account's nonce before
/// every transaction instead of caching it: a cached nonce is consumed even when the transaction
/// is refused at gas estimation (a revert), and every later transaction would then wait forever
/// behind the gap.
pub fn signing_provider(url: Url, signer: PrivateKeySigner) -> DynProvider {
    ProviderBuilder::default()
        .with_gas_estimation()
        .with_simple_nonce_management()
        .fetch_chain_id()
        .wallet(EthereumWallet::from(signer))
        .connect_http(url)
        .erased()
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

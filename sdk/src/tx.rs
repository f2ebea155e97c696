//! Sending transactions and making calls through the generated bindings with decoded errors.
//!
//! ```ignore
//! let registry = NodeRegistry::new(address, &provider);
//! let receipt = tx::send("NodeRegistry", registry.pause(node_id)).await?;
//! let node = tx::read("NodeRegistry", registry.getNode(node_id)).await?;
//! ```
//! A revert comes back as [`Error::Revert`] with the contract's custom error decoded.

use alloy::{
    contract::{CallBuilder, CallDecoder},
    network::Ethereum,
    providers::Provider,
    rpc::types::TransactionReceipt,
};

use crate::Error;

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

//! The SDK's error type.

use alloy::{
    primitives::{Bytes, TxHash},
    providers::PendingTransactionError,
    transports::TransportError,
};

use crate::{RevertError, deployments::DeploymentsError};

/// Everything that can go wrong when the SDK talks to the chain or reads its configuration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A contract reverted with one of our contracts' custom errors, decoded.
    #[error("{} reverted with {}: {:?}", .0.contract(), .0.signature(), .0)]
    Revert(RevertError),
    /// A contract reverted with data that matches no custom error of our contracts (e.g. a
    /// `require` message of a third-party token, a panic, or no data at all).
    #[error("execution reverted with undecoded data {0}")]
    UnknownRevert(Bytes),
    /// A transaction was mined but failed.
    #[error("transaction {0} was mined but reverted")]
    TransactionFailed(TxHash),
    /// A contract call failed before reaching the chain (encoding, decoding, unknown function…).
    #[error("contract call failed: {0}")]
    Contract(alloy::contract::Error),
    /// The RPC endpoint failed or answered with an error that is not a revert.
    #[error("rpc request failed: {0}")]
    Rpc(TransportError),
    /// A transaction was sent but its receipt could not be obtained.
    #[error("waiting for the transaction failed: {0}")]
    PendingTransaction(#[from] PendingTransactionError),
    /// Signing failed.
    #[error("signing failed: {0}")]
    Signer(#[from] alloy::signers::Error),
    /// A key or keystore could not be loaded.
    #[error("{0}")]
    Wallet(#[from] crate::wallet::WalletError),
    /// The deployment configuration or record is missing or invalid.
    #[error(transparent)]
    Deployments(#[from] DeploymentsError),
    /// A local tool (anvil) could not be found or started.
    #[error("{0}")]
    Tool(String),
    /// The chain is not in a state the operation expects.
    #[error("{0}")]
    Chain(String),
}

impl Error {
    /// Turns a contract error into an [`Error`], decoding revert data as a custom error of
    /// `contract` first (the called contract), then of every other contract.
    pub fn from_contract(err: alloy::contract::Error, contract: Option<&str>) -> Self {
        match err.as_revert_data() {
            Some(data) => Self::from_revert_data(contract, data),
            None => match err {
                alloy::contract::Error::TransportError(e) => Self::Rpc(e),
                other => Self::Contract(other),
            },
        }
    }

    /// Decodes revert data as a custom error of `contract` first, then of every other contract.
    pub fn from_revert_data(contract: Option<&str>, data: Bytes) -> Self {
        match RevertError::decode(contract, &data) {
            Some(decoded) => Self::Revert(decoded),
            None => Self::UnknownRevert(data),
        }
    }

    /// The decoded custom error, when this is a revert with one.
    pub fn revert(&self) -> Option<&RevertError> {
        match self {
            Self::Revert(e) => Some(e),
            _ => None,
        }
    }
}

impl From<alloy::contract::Error> for Error {
    fn from(err: alloy::contract::Error) -> Self {
        Self::from_contract(err, None)
    }
}

impl From<TransportError> for Error {
    fn from(err: TransportError) -> Self {
        match err.as_error_resp().and_then(|resp| resp.as_revert_data()) {
            Some(data) => Self::from_revert_data(None, data),
            None => Self::Rpc(err),
        }
    }
}

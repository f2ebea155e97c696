//! EIP-2612 permits: a tenant signs an allowance off-chain and `depositWithPermit` /
//! `stakeWithPermit` use it, so a deposit is one transaction instead of approve + deposit.

use alloy::{
    primitives::{Address, B256, U256},
    providers::Provider,
    signers::Signer,
    sol,
    sol_types::{Eip712Domain, SolStruct},
};

use crate::{Error, bindings::MockUSDC, tx};

sol! {
    /// The EIP-2612 `Permit` struct, as every ERC-2612 token hashes it.
    #[derive(Debug)]
    struct Permit {
        address owner;
        address spender;
        uint256 value;
        uint256 nonce;
        uint256 deadline;
    }
}

/// A signed permit, split as `depositWithPermit(amount, deadline, v, r, s)` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PermitSignature {
    /// The permitted amount.
    pub value: U256,
    /// Unix time after which the permit is void.
    pub deadline: U256,
    /// Recovery id, 27 or 28.
    pub v: u8,
    /// Signature `r`.
    pub r: B256,
    /// Signature `s`.
    pub s: B256,
}

/// The EIP-712 domain of an ERC-2612 token: `name()`, the chain id and the token address, with the
/// version that reproduces the token's `DOMAIN_SEPARATOR()` (OpenZeppelin tokens use "1", Circle's
/// USDC "2").
pub async fn token_domain<P: Provider>(
    provider: &P,
    token: Address,
) -> Result<Eip712Domain, Error> {
    // Only ERC-20/ERC-2612 functions are called: the MockUSDC binding fits any such token.
    let erc20 = MockUSDC::new(token, provider);
    let name = tx::read("MockUSDC", erc20.name()).await?;
    let separator = tx::read("MockUSDC", erc20.DOMAIN_SEPARATOR()).await?;
    let chain_id = provider.get_chain_id().await?;
    for version in ["1", "2"] {
        let domain = Eip712Domain::new(
            Some(name.clone().into()),
            Some(version.into()),
            Some(U256::from(chain_id)),
            Some(token),
            None,
        );
        if domain.separator() == separator {
            return Ok(domain);
        }
    }
    Err(Error::Chain(format!(
        "cannot reproduce the EIP-712 domain of token {token} ({name})"
    )))
}

/// Signs a permit letting `spender` take `value` of `signer`'s `token` until `deadline`, with the
/// owner's current nonce read from the token.
pub async fn sign_permit<P: Provider, S: Signer + Sync>(
    provider: &P,
    signer: &S,
    token: Address,
    spender: Address,
    value: U256,
    deadline: U256,
) -> Result<PermitSignature, Error> {
    let domain = token_domain(provider, token).await?;
    let owner = signer.address();
    let nonce = tx::read("MockUSDC", MockUSDC::new(token, provider).nonces(owner)).await?;
    let permit = Permit {
        owner,
        spender,
        value,
        nonce,
        deadline,
    };
    let hash = permit.eip712_signing_hash(&domain);
    let signature = signer.sign_hash(&hash).await?;
    Ok(PermitSignature {
        value,
        deadline,
        v: 27 + u8::from(signature.v()),
        r: signature.r().into(),
        s: signature.s().into(),
    })
}

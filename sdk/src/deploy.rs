//! Deploys the whole system in dependency order and grants its roles.
//!
//! Order: MockUSDC (local chains only) → NodeRegistry → OperatorStaking(usdc) →
//! TemplateMarket(usdc) → LeaseEscrow(usdc, registry, templates) → AttestationAnchor, then
//! ARBITER_ROLE and PAUSER_ROLE on LeaseEscrow and ANCHOR_ROLE on AttestationAnchor. The deployer
//! holds DEFAULT_ADMIN_ROLE (governance) of every contract.

use alloy::{
    primitives::{Address, U256},
    providers::{DynProvider, Provider},
    rpc::types::TransactionReceipt,
};
use tracing::info;

use crate::{
    Error, USDC,
    bindings::{
        AttestationAnchor, LeaseEscrow, MockUSDC, NodeRegistry, OperatorStaking, TemplateMarket,
    },
    deployments::{ContractDeployment, Contracts, Deployment, Roles},
    tx,
};

/// Where the system's USDC comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsdcSource {
    /// The network's USDC at this address.
    Existing(Address),
    /// Deploy a MockUSDC (local chains only).
    Mock,
}

/// Default unbonding period of OperatorStaking: 7 days.
pub const DEFAULT_UNBONDING_PERIOD: u64 = 7 * 24 * 3600;
/// Default premium threshold of OperatorStaking: 1,000 USDC.
pub const DEFAULT_PREMIUM_THRESHOLD: u64 = 1_000 * USDC;

/// What to deploy and who gets which role. Role holders default to the deployer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployConfig {
    /// The USDC to use or deploy.
    pub usdc: UsdcSource,
    /// The network's name, recorded in the deployment.
    pub network: Option<String>,
    /// Receives platform fees and template platform earnings.
    pub treasury: Option<Address>,
    /// May terminate leases of failed nodes.
    pub arbiter: Option<Address>,
    /// May anchor attestation roots.
    pub anchor: Option<Address>,
    /// May pause LeaseEscrow.
    pub pauser: Option<Address>,
    /// OperatorStaking's unbonding period, seconds.
    pub unbonding_period: u64,
    /// OperatorStaking's premium threshold, micro-USDC.
    pub premium_threshold: U256,
}

impl DeployConfig {
    /// A configuration with every role on the deployer and the default staking parameters.
    pub fn new(usdc: UsdcSource) -> Self {
        Self {
            usdc,
            network: None,
            treasury: None,
            arbiter: None,
            anchor: None,
            pauser: None,
            unbonding_period: DEFAULT_UNBONDING_PERIOD,
            premium_threshold: U256::from(DEFAULT_PREMIUM_THRESHOLD),
        }
    }
}

fn created(name: &str, receipt: &TransactionReceipt) -> Result<ContractDeployment, Error> {
    let address = receipt
        .contract_address
        .ok_or_else(|| Error::Chain(format!("the deployment of {name} created no contract")))?;
    let block = receipt
        .block_number
        .ok_or_else(|| Error::Chain(format!("the deployment of {name} has no block")))?;
    info!(target: "decloud::deploy", contract = name, %address, block, "deployed");
    Ok(ContractDeployment {
        address,
        tx_hash: receipt.transaction_hash,
        block,
    })
}

/// Deploys the system from `deployer` (the signer of `provider`'s wallet), grants the roles and
/// returns the record (not yet written: see [`Deployment::save`]).
pub async fn deploy_system(
    provider: &DynProvider,
    deployer: Address,
    config: &DeployConfig,
) -> Result<Deployment, Error> {
    let chain_id = provider.get_chain_id().await?;
    let roles = Roles {
        admin: deployer,
        treasury: config.treasury.unwrap_or(deployer),
        arbiter: config.arbiter.unwrap_or(deployer),
        anchor: config.anchor.unwrap_or(deployer),
        pauser: config.pauser.unwrap_or(deployer),
    };
    for (role, address) in [
        ("treasury", roles.treasury),
        ("arbiter", roles.arbiter),
        ("anchor", roles.anchor),
        ("pauser", roles.pauser),
    ] {
        if address == Address::ZERO {
            return Err(Error::Chain(format!(
                "the {role} cannot be the zero address"
            )));
        }
    }
    info!(target: "decloud::deploy", chain_id, %deployer, "deploying DeCloud");

    let (mock_usdc, usdc) = match config.usdc {
        UsdcSource::Mock => {
            let receipt = tx::send("MockUSDC", MockUSDC::deploy_builder(provider)).await?;
            let mock = created("MockUSDC", &receipt)?;
            (Some(mock), mock.address)
        }
        UsdcSource::Existing(address) => {
            if provider.get_code_at(address).await?.is_empty() {
                return Err(Error::Chain(format!(
                    "no contract at the USDC address {address} on chain {chain_id}"
                )));
            }
            (None, address)
        }
    };

    let receipt = tx::send(
        "NodeRegistry",
        NodeRegistry::deploy_builder(provider, roles.admin),
    )
    .await?;
    let node_registry = created("NodeRegistry", &receipt)?;

    let receipt = tx::send(
        "OperatorStaking",
        OperatorStaking::deploy_builder(
            provider,
            usdc,
            config.unbonding_period,
            config.premium_threshold,
            roles.admin,
        ),
    )
    .await?;
    let operator_staking = created("OperatorStaking", &receipt)?;

    let receipt = tx::send(
        "TemplateMarket",
        TemplateMarket::deploy_builder(provider, usdc, roles.treasury, roles.admin),
    )
    .await?;
    let template_market = created("TemplateMarket", &receipt)?;

    let receipt = tx::send(
        "LeaseEscrow",
        LeaseEscrow::deploy_builder(
            provider,
            usdc,
            node_registry.address,
            template_market.address,
            roles.treasury,
            roles.admin,
        ),
    )
    .await?;
    let lease_escrow = created("LeaseEscrow", &receipt)?;

    let receipt = tx::send(
        "AttestationAnchor",
        AttestationAnchor::deploy_builder(provider, roles.admin),
    )
    .await?;
    let attestation_anchor = created("AttestationAnchor", &receipt)?;

    let mut setup_txs = Vec::new();
    let escrow = LeaseEscrow::new(lease_escrow.address, provider);
    let arbiter_role = tx::read("LeaseEscrow", escrow.ARBITER_ROLE()).await?;
    let pauser_role = tx::read("LeaseEscrow", escrow.PAUSER_ROLE()).await?;
    setup_txs.push(
        tx::send("LeaseEscrow", escrow.grantRole(arbiter_role, roles.arbiter))
            .await?
            .transaction_hash,
    );
    setup_txs.push(
        tx::send("LeaseEscrow", escrow.grantRole(pauser_role, roles.pauser))
            .await?
            .transaction_hash,
    );
    let anchor = AttestationAnchor::new(attestation_anchor.address, provider);
    let anchor_role = tx::read("AttestationAnchor", anchor.ANCHOR_ROLE()).await?;
    setup_txs.push(
        tx::send(
            "AttestationAnchor",
            anchor.grantRole(anchor_role, roles.anchor),
        )
        .await?
        .transaction_hash,
    );
    info!(target: "decloud::deploy", arbiter = %roles.arbiter, pauser = %roles.pauser, anchor = %roles.anchor, "roles granted");

    let deploy_block = mock_usdc.map_or(node_registry.block, |m| m.block);
    Ok(Deployment {
        chain_id,
        network: config.network.clone(),
        deployer,
        usdc,
        deploy_block,
        contracts: Contracts {
            mock_usdc,
            node_registry,
            operator_staking,
            template_market,
            lease_escrow,
            attestation_anchor,
        },
        roles,
        setup_txs,
    })
}

/// Mints `amount` MockUSDC to each of `accounts` (local chains only: MockUSDC mints to anyone).
pub async fn mint_mock_usdc(
    provider: &DynProvider,
    mock_usdc: Address,
    accounts: &[Address],
    amount: U256,
) -> Result<(), Error> {
    let token = MockUSDC::new(mock_usdc, provider);
    for account in accounts {
        let receipt = tx::send("MockUSDC", token.mint(*account, amount)).await?;
        if !receipt.status() {
            return Err(Error::TransactionFailed(receipt.transaction_hash));
        }
    }
    info!(target: "decloud::deploy", accounts = accounts.len(), %amount, "minted MockUSDC");
    Ok(())
}

//! Deploys the whole system in dependency order and grants its roles.
//!
//! Order: MockUSDC (local chains only) → NodeRegistry → OperatorStaking(usdc) →
//! TemplateMarket(usdc) → LeaseEscrow(usdc, registry, templates) → AttestationAnchor →
//! the storage-proof verifier (local chains: DevGroth16Verifier) → StorageMarket(usdc, registry,
//! verifier), then
//! ARBITER_ROLE and PAUSER_ROLE on LeaseEscrow, PURCHASER_ROLE on TemplateMarket for LeaseEscrow
//! (it buys templates for the tenants who open leases) and ANCHOR_ROLE on AttestationAnchor
//! (StorageMarket has no role besides governance). The deployer holds DEFAULT_ADMIN_ROLE
//! (governance) of every contract.
//!
//! Local chains get `DevGroth16Verifier`, the verifier of the DEVELOPMENT circuit (production
//! depth, 4 challenges: a proof takes seconds, see `prover/README.md`). It and the
//! `Groth16Verifier` committed in `contracts/src` (the production circuit) both come from the
//! development setup, whose secrets anyone can re-derive: with them, anyone could forge storage
//! proofs and be paid for storing nothing. Neither is ever deployed off a local chain; every
//! other chain must name a verifier
//! generated from ceremony keys, pinned by its code hash ([`VerifierSource::Production`], see
//! `prover/README.md`), and a deployment without one is refused before anything is sent.

use alloy::{
    primitives::{Address, B256, U256, keccak256},
    providers::{DynProvider, Provider},
    rpc::types::TransactionReceipt,
};
use tracing::info;

use crate::{
    Error, USDC,
    bindings::{
        AttestationAnchor, DevGroth16Verifier, Groth16Verifier, LeaseEscrow, MockUSDC,
        NodeRegistry, OperatorStaking, StorageMarket, TemplateMarket,
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

/// Which Groth16 verifier StorageMarket trusts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifierSource {
    /// Deploy the committed verifier of the DEVELOPMENT circuit, `DevGroth16Verifier` (local
    /// chains only: its keys are public and its 4 challenges catch little).
    Development,
    /// Deploy the committed `Groth16Verifier`: the production circuit (88 challenges) with the
    /// development keys (local chains only: its keys are public). For measuring and testing
    /// production proving on a local chain.
    DevelopmentProductionCircuit,
    /// A verifier already deployed from ceremony keys, accepted only if the keccak256 of its
    /// runtime code is `code_hash` and it is not the development verifier.
    Production {
        /// Where it is deployed.
        address: Address,
        /// keccak256 of its runtime code, as the ceremony published it.
        code_hash: B256,
    },
}

/// Whether a chain id is a local development chain (anvil's 31337, or 1337), the only chains
/// where the development verifier and MockUSDC may be deployed.
pub fn is_local_chain(chain_id: u64) -> bool {
    matches!(chain_id, 31337 | 1337)
}

/// Default unbonding period of OperatorStaking: 7 days.
pub const DEFAULT_UNBONDING_PERIOD: u64 = 7 * 24 * 3600;
/// Default premium threshold of OperatorStaking: 1,000 USDC.
pub const DEFAULT_PREMIUM_THRESHOLD: u64 = 1_000 * USDC;
/// Segments the committed verifiers' circuits support: 2^20 (depth 20, 1 GiB of 1 KiB segments;
/// the development circuit has the production depth). StorageMarket rejects deals above it,
/// which the circuit could not prove.
pub const STORAGE_MAX_SEGMENTS: u64 = 1 << 20;
/// StorageMarket's epoch length when the network sets none: 43,200 blocks, about one day on
/// Polygon.
pub const DEFAULT_STORAGE_EPOCH_BLOCKS: u64 = 43_200;
/// StorageMarket's epoch length on local chains (`decloud dev`, tests), as the anvil network of
/// `deployments/networks.toml` sets it: anvil mines a block per transaction, so short epochs keep
/// local storage deals quick to exercise.
pub const LOCAL_STORAGE_EPOCH_BLOCKS: u64 = 20;
/// StorageMarket's initial platform fee: 5%, the same as LeaseEscrow's.
pub const DEFAULT_STORAGE_FEE_BPS: u16 = 500;
/// StorageMarket's fee cap (`MAX_FEE_BPS`), checked before anything is sent so that a bad fee
/// never leaves a half-deployed system.
pub const STORAGE_MAX_FEE_BPS: u16 = 2_000;

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
    /// StorageMarket's epoch length in blocks.
    pub storage_epoch_blocks: u64,
    /// StorageMarket's initial platform fee in basis points.
    pub storage_fee_bps: u16,
    /// The Groth16 verifier of storage proofs.
    pub verifier: VerifierSource,
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
            storage_epoch_blocks: DEFAULT_STORAGE_EPOCH_BLOCKS,
            storage_fee_bps: DEFAULT_STORAGE_FEE_BPS,
            verifier: VerifierSource::Development,
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
    if config.storage_epoch_blocks == 0 {
        return Err(Error::Chain(
            "the storage epoch length must be at least one block".into(),
        ));
    }
    if config.storage_fee_bps > STORAGE_MAX_FEE_BPS {
        return Err(Error::Chain(format!(
            "the storage platform fee {} bps is above the cap of {STORAGE_MAX_FEE_BPS} bps",
            config.storage_fee_bps
        )));
    }
    check_verifier(provider, chain_id, config.verifier).await?;
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

    let groth16_verifier = match config.verifier {
        VerifierSource::Development => {
            let receipt = tx::send(
                "DevGroth16Verifier",
                DevGroth16Verifier::deploy_builder(provider),
            )
            .await?;
            created("DevGroth16Verifier", &receipt)?
        }
        VerifierSource::DevelopmentProductionCircuit => {
            let receipt =
                tx::send("Groth16Verifier", Groth16Verifier::deploy_builder(provider)).await?;
            created("Groth16Verifier", &receipt)?
        }
        // Deployed before this run: the record keeps its address, with no transaction of ours.
        VerifierSource::Production { address, .. } => ContractDeployment {
            address,
            tx_hash: B256::ZERO,
            block: provider.get_block_number().await?,
        },
    };

    let receipt = tx::send(
        "StorageMarket",
        StorageMarket::deploy_builder(
            provider,
            usdc,
            node_registry.address,
            groth16_verifier.address,
            STORAGE_MAX_SEGMENTS,
            config.storage_epoch_blocks,
            roles.admin,
            roles.treasury,
            config.storage_fee_bps,
        ),
    )
    .await?;
    let storage_market = created("StorageMarket", &receipt)?;

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
    let market = TemplateMarket::new(template_market.address, provider);
    let purchaser_role = tx::read("TemplateMarket", market.PURCHASER_ROLE()).await?;
    setup_txs.push(
        tx::send(
            "TemplateMarket",
            market.grantRole(purchaser_role, lease_escrow.address),
        )
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
            groth16_verifier,
            storage_market,
        },
        roles,
        setup_txs,
    })
}

/// Refuses, before anything is sent, a verifier anyone could forge proofs for: the development
/// verifier off a local chain, or a "production" verifier whose code is not the pinned one or is
/// the development verifier's.
async fn check_verifier(
    provider: &DynProvider,
    chain_id: u64,
    verifier: VerifierSource,
) -> Result<(), Error> {
    match verifier {
        VerifierSource::Development | VerifierSource::DevelopmentProductionCircuit
            if is_local_chain(chain_id) =>
        {
            Ok(())
        }
        VerifierSource::Development | VerifierSource::DevelopmentProductionCircuit => {
            Err(Error::Chain(format!(
                "refusing to deploy the development Groth16 verifier on chain {chain_id}: its keys \
             come from a public seed, so anyone could forge storage proofs. Name the verifier \
             generated from the ceremony keys (`verifier` and `verifier_code_hash` in \
             networks.toml, or --verifier and --verifier-code-hash; see prover/README.md)"
            )))
        }
        VerifierSource::Production { address, code_hash } => {
            let code = provider.get_code_at(address).await?;
            if code.is_empty() {
                return Err(Error::Chain(format!(
                    "no contract at the verifier address {address} on chain {chain_id}"
                )));
            }
            if code == Groth16Verifier::DEPLOYED_BYTECODE
                || code == DevGroth16Verifier::DEPLOYED_BYTECODE
            {
                return Err(Error::Chain(format!(
                    "the verifier at {address} is the development verifier, whose keys are \
                     public: deploy the one generated from the ceremony keys"
                )));
            }
            let actual = keccak256(&code);
            if actual != code_hash {
                return Err(Error::Chain(format!(
                    "the verifier at {address} has code hash {actual}, not the pinned \
                     {code_hash}: it is not the ceremony's verifier"
                )));
            }
            Ok(())
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_segments_match_the_committed_verifier_circuits() {
        for file in ["Groth16Verifier.sol", "DevGroth16Verifier.sol"] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../contracts/src")
                .join(file);
            let source = std::fs::read_to_string(&path).unwrap();
            // The generator writes the circuit's parameters into the header, e.g. "(depth=20 challenges=88".
            let depth: u32 = source
                .split("depth=")
                .nth(1)
                .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|digits| digits.parse().ok())
                .expect("the verifier names its circuit depth");
            assert_eq!(STORAGE_MAX_SEGMENTS, 1u64 << depth, "{file}");
        }
    }
}

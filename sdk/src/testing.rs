//! Test helpers for every DeCloud crate (feature `testing`): a real anvil on a free port (killed
//! when dropped), the whole system deployed on it, funded signers and time travel.
//!
//! ```no_run
//! // Cargo.toml: [dev-dependencies] decloud-sdk = { workspace = true, features = ["testing"] }
//! # async fn example() -> Result<(), decloud_sdk::Error> {
//! use decloud_sdk::{bindings::{LeaseEscrow, StorageMarket}, testing::{self, TestSystem}};
//!
//! let system = TestSystem::start().await?; // anvil on a free port, everything deployed
//! let tenant = system.provider(1); // anvil account 1, holding 1,000,000 USDC
//! let escrow = LeaseEscrow::new(system.deployment.contracts.lease_escrow.address, &tenant);
//! // Storage deals: StorageMarket, wired to its Groth16Verifier, with 20-block epochs.
//! let storage = StorageMarket::new(system.deployment.contracts.storage_market.address, &tenant);
//! testing::increase_time(&tenant, 3600).await?;
//! # let _ = (escrow, storage);
//! # Ok(())
//! # }
//! ```

use std::{
    io::Write as _,
    process::{Command, Stdio},
};

use alloy::{
    contract::{CallBuilder, CallDecoder},
    network::Ethereum,
    node_bindings::{Anvil, AnvilInstance},
    primitives::{Address, Bytes, U256},
    providers::{DynProvider, Provider, ext::AnvilApi},
    rpc::types::TransactionReceipt,
    signers::local::PrivateKeySigner,
};

use crate::{
    Error, USDC,
    deploy::{
        DeployConfig, LOCAL_STORAGE_EPOCH_BLOCKS, UsdcSource, VerifierSource, deploy_system,
        mint_mock_usdc,
    },
    deployments::Deployment,
    paths, tx,
};

/// USDC minted to each anvil account by [`TestSystem::start`]: 1,000,000 USDC.
pub const TEST_FUNDS: u64 = 1_000_000 * USDC;

/// Sending contract calls in tests: a receipt is not success (a reverted transaction is mined
/// too), so a test that goes on after an unchecked send may assert on a state that never happened.
pub trait SendOk {
    /// Sends the call and waits until it is mined; panics, naming the decoded revert, unless it
    /// succeeded.
    fn send_ok(self) -> impl Future<Output = TransactionReceipt>;
}

impl<P: Provider<Ethereum>, D: CallDecoder> SendOk for CallBuilder<P, D, Ethereum> {
    async fn send_ok(self) -> TransactionReceipt {
        tx::send("", self)
            .await
            .unwrap_or_else(|e| panic!("transaction failed: {e}"))
    }
}

/// Starts the repository's pinned anvil on a free port. The process is killed when the returned
/// instance is dropped.
pub fn spawn_anvil() -> Result<AnvilInstance, Error> {
    let root = paths::repo_root()?;
    let anvil = paths::anvil_path(&root)?;
    // Not `--silent`: the instance waits for anvil's "Listening on" line to learn the port.
    Anvil::at(anvil)
        .port(0u16)
        .try_spawn()
        .map_err(|e| Error::Tool(format!("cannot start anvil: {e}")))
}

/// Anvil's account `index` as a signer (anvil's well-known test keys).
pub fn signer(anvil: &AnvilInstance, index: usize) -> PrivateKeySigner {
    let key = anvil
        .keys()
        .get(index)
        .unwrap_or_else(|| panic!("anvil has no account {index}"));
    PrivateKeySigner::from(key.clone())
}

/// A provider that signs with `signer` and talks to `anvil`.
pub fn provider_for(anvil: &AnvilInstance, signer: PrivateKeySigner) -> DynProvider {
    tx::signing_provider(anvil.endpoint_url(), signer)
}

/// Moves the chain's clock forward by `seconds` (`evm_increaseTime`) and mines a block at the new
/// time.
pub async fn increase_time<P: Provider>(provider: &P, seconds: u64) -> Result<(), Error> {
    provider.anvil_increase_time(seconds).await?;
    mine(provider).await
}

/// Makes the next block's timestamp exactly `timestamp` (no block is mined).
pub async fn set_next_block_timestamp<P: Provider>(
    provider: &P,
    timestamp: u64,
) -> Result<(), Error> {
    provider.anvil_set_next_block_timestamp(timestamp).await?;
    Ok(())
}

/// Mines one block.
pub async fn mine<P: Provider>(provider: &P) -> Result<(), Error> {
    provider.evm_mine(None).await?;
    Ok(())
}

/// The timestamp of the latest block.
pub async fn latest_timestamp<P: Provider>(provider: &P) -> Result<u64, Error> {
    let block = provider
        .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
        .await?
        .ok_or_else(|| Error::Chain("the chain has no latest block".into()))?;
    Ok(block.header.timestamp)
}

/// An anvil with the whole system deployed by account 0 and [`TEST_FUNDS`] of MockUSDC minted to
/// every account. Dropping it kills anvil.
#[derive(Debug)]
pub struct TestSystem {
    /// The running anvil.
    pub anvil: AnvilInstance,
    /// What was deployed, every contract included (storage: `contracts.groth16_verifier` and
    /// `contracts.storage_market`, with [`LOCAL_STORAGE_EPOCH_BLOCKS`]-block epochs); also the role
    /// holders: every role is on account 0.
    pub deployment: Deployment,
}

impl TestSystem {
    /// Starts anvil, deploys everything with account 0 and funds every account. StorageMarket
    /// verifies proofs of the development circuit (`DevGroth16Verifier`).
    pub async fn start() -> Result<Self, Error> {
        Self::start_with_verifier(VerifierSource::Development).await
    }

    /// [`TestSystem::start`] with another local verifier, e.g.
    /// [`VerifierSource::DevelopmentProductionCircuit`] for the production circuit.
    pub async fn start_with_verifier(verifier: VerifierSource) -> Result<Self, Error> {
        let anvil = spawn_anvil()?;
        let deployer = signer(&anvil, 0);
        let deployer_address = deployer.address();
        let provider = provider_for(&anvil, deployer);
        let mut config = DeployConfig::new(UsdcSource::Mock);
        config.network = Some("anvil".into());
        config.storage_epoch_blocks = LOCAL_STORAGE_EPOCH_BLOCKS;
        config.verifier = verifier;
        let deployment = deploy_system(&provider, deployer_address, &config).await?;
        let usdc = deployment.usdc;
        mint_mock_usdc(&provider, usdc, anvil.addresses(), U256::from(TEST_FUNDS)).await?;
        Ok(Self { anvil, deployment })
    }

    /// Anvil's account `index` as a signer.
    pub fn signer(&self, index: usize) -> PrivateKeySigner {
        signer(&self.anvil, index)
    }

    /// The address of anvil's account `index`.
    pub fn address(&self, index: usize) -> Address {
        self.anvil.addresses()[index]
    }

    /// A provider signing as anvil's account `index`.
    pub fn provider(&self, index: usize) -> DynProvider {
        provider_for(&self.anvil, self.signer(index))
    }

    /// The RPC endpoint.
    pub fn rpc_url(&self) -> url::Url {
        self.anvil.endpoint_url()
    }
}

/// Compiles `contract` from a Solidity source file of the repository (a test fixture) with the
/// pinned solc (`contracts/bin/solc`) and the settings of `contracts/foundry.toml`, and returns
/// its creation bytecode. `path` is relative to the repository root; imports resolve from there
/// (`contracts/src/interfaces/…`, or relative to the file).
///
/// # Panics
/// When solc cannot run or reports an error: this is for tests, which should fail loudly.
pub fn compile_fixture(path: &str, contract: &str) -> Bytes {
    let root = paths::repo_root().expect("repository root");
    let source = std::fs::read_to_string(root.join(path))
        .unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    compile_source(path, &source, contract)
}

/// Like [`compile_fixture`] for source text made at run time (e.g. a generated verifier);
/// `unit` is the repository-relative path the source would have, against which its relative
/// imports resolve.
///
/// # Panics
/// When solc cannot run or reports an error.
pub fn compile_source(unit: &str, source: &str, contract: &str) -> Bytes {
    let root = paths::repo_root().expect("repository root");
    let input = serde_json::json!({
        "language": "Solidity",
        "sources": { unit: { "content": source } },
        "settings": {
            "optimizer": { "enabled": true, "runs": 200 },
            "evmVersion": "cancun",
            "remappings": ["@openzeppelin/=contracts/node_modules/@openzeppelin/"],
            "outputSelection": { unit: { contract: ["evm.bytecode.object"] } },
        },
    });
    let mut child = Command::new(root.join("contracts/bin/solc"))
        .arg("--base-path")
        .arg(&root)
        .arg("--standard-json")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("contracts/bin/solc runs (scripts/setup installs it)");
    child
        .stdin
        .take()
        .expect("solc's stdin")
        .write_all(input.to_string().as_bytes())
        .expect("write solc's input");
    let output = child.wait_with_output().expect("solc finishes");
    assert!(output.status.success(), "solc failed on {unit}");
    let json: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("solc's JSON output");
    let errors: Vec<_> = json["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["severity"] == "error")
        .collect();
    assert!(errors.is_empty(), "solc errors in {unit}: {errors:#?}");
    json["contracts"][unit][contract]["evm"]["bytecode"]["object"]
        .as_str()
        .unwrap_or_else(|| panic!("no bytecode for {contract} in solc's output for {unit}"))
        .parse()
        .expect("bytecode is hex")
}

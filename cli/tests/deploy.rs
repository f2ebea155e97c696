//! `decloud deploy` against a real anvil: the record is written, loads back, points at real
//! contracts and the roles went where they were asked; bad input changes nothing.

use std::{path::Path, process::Command};

use alloy::{
    primitives::{Address, U256, hex},
    providers::{Provider, ProviderBuilder},
};
use decloud_sdk::{
    bindings::{
        AttestationAnchor, Groth16Verifier, LeaseEscrow, MockUSDC, NodeRegistry, StorageMarket,
        TemplateMarket,
    },
    deploy::{DEFAULT_STORAGE_FEE_BPS, STORAGE_MAX_FEE_BPS, STORAGE_MAX_SEGMENTS},
    deployments::Deployment,
    testing::{signer, spawn_anvil},
    tx,
};

const ENV_TO_CLEAR: &[&str] = &[
    "DECLOUD_PRIVATE_KEY",
    "DECLOUD_KEYSTORE_PASSWORD",
    "DECLOUD_USDC",
    "DECLOUD_TREASURY",
    "DECLOUD_ARBITER",
    "DECLOUD_ANCHOR",
    "DECLOUD_PAUSER",
    "DECLOUD_AMOY_RPC_URL",
    "DECLOUD_POLYGON_RPC_URL",
];

fn decloud(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_decloud"));
    cmd.arg("deploy")
        .args(args)
        .arg("--deployments-dir")
        .arg(dir);
    for var in ENV_TO_CLEAR {
        cmd.env_remove(var);
    }
    cmd
}

fn deployments_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let networks = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deployments/networks.toml");
    std::fs::copy(networks, dir.path().join("networks.toml")).unwrap();
    dir
}

#[tokio::test]
async fn deploy_writes_a_loadable_record_of_live_contracts() {
    let anvil = spawn_anvil().unwrap();
    let deployer = signer(&anvil, 0);
    let key = hex::encode_prefixed(deployer.to_bytes());
    let dir = deployments_dir();
    let arbiter = Address::repeat_byte(0xa1);
    let anchor = Address::repeat_byte(0xa2);
    let treasury = Address::repeat_byte(0xa3);

    let output = decloud(
        dir.path(),
        &[
            "--rpc-url",
            &anvil.endpoint(),
            "--arbiter",
            &arbiter.to_string(),
            "--treasury",
            &treasury.to_string(),
        ],
    )
    .env("DECLOUD_PRIVATE_KEY", &key)
    .env("DECLOUD_ANCHOR", anchor.to_string())
    .output()
    .unwrap();
    assert!(
        output.status.success(),
        "deploy failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    let deployment = Deployment::load(dir.path(), 31337).expect("31337.json written and loadable");
    let printed: Deployment =
        serde_json::from_slice(&output.stdout).expect("the record is printed on stdout");
    assert_eq!(printed, deployment);
    assert_eq!(
        deployment.network.as_deref(),
        Some("anvil"),
        "matched by chain id"
    );
    assert_eq!(deployment.deployer, deployer.address());
    let mock = deployment
        .contracts
        .mock_usdc
        .expect("anvil has no USDC: MockUSDC deployed");
    assert_eq!(deployment.usdc, mock.address);
    assert_eq!(deployment.deploy_block, mock.block);
    assert_eq!(deployment.roles.arbiter, arbiter);
    assert_eq!(deployment.roles.anchor, anchor);
    assert_eq!(deployment.roles.pauser, deployer.address());

    let provider = ProviderBuilder::new().connect_http(anvil.endpoint_url());
    let c = &deployment.contracts;
    for contract in [
        mock,
        c.node_registry,
        c.operator_staking,
        c.template_market,
        c.lease_escrow,
        c.attestation_anchor,
        c.groth16_verifier,
        c.storage_market,
    ] {
        assert!(
            !provider
                .get_code_at(contract.address)
                .await
                .unwrap()
                .is_empty()
        );
        let receipt = provider
            .get_transaction_receipt(contract.tx_hash)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(receipt.contract_address, Some(contract.address));
        assert_eq!(receipt.block_number, Some(contract.block));
    }
    // ARBITER_ROLE, PAUSER_ROLE, TemplateMarket's PURCHASER_ROLE for LeaseEscrow, ANCHOR_ROLE.
    assert_eq!(deployment.setup_txs.len(), 4);
    let market = TemplateMarket::new(c.template_market.address, &provider);
    let purchaser_role = tx::read("TemplateMarket", market.PURCHASER_ROLE())
        .await
        .unwrap();
    assert!(
        tx::read(
            "TemplateMarket",
            market.hasRole(purchaser_role, c.lease_escrow.address)
        )
        .await
        .unwrap(),
        "LeaseEscrow buys templates for tenants"
    );

    let escrow = LeaseEscrow::new(c.lease_escrow.address, &provider);
    let arbiter_role = tx::read("LeaseEscrow", escrow.ARBITER_ROLE())
        .await
        .unwrap();
    let pauser_role = tx::read("LeaseEscrow", escrow.PAUSER_ROLE()).await.unwrap();
    assert!(
        tx::read("LeaseEscrow", escrow.hasRole(arbiter_role, arbiter))
            .await
            .unwrap()
    );
    assert!(
        !tx::read(
            "LeaseEscrow",
            escrow.hasRole(arbiter_role, deployer.address())
        )
        .await
        .unwrap()
    );
    assert!(
        tx::read(
            "LeaseEscrow",
            escrow.hasRole(pauser_role, deployer.address())
        )
        .await
        .unwrap()
    );
    assert_eq!(
        tx::read("LeaseEscrow", escrow.usdc()).await.unwrap(),
        mock.address
    );
    assert_eq!(
        tx::read("LeaseEscrow", escrow.registry()).await.unwrap(),
        c.node_registry.address
    );
    assert_eq!(
        tx::read("LeaseEscrow", escrow.templates()).await.unwrap(),
        c.template_market.address
    );
    let anchor_contract = AttestationAnchor::new(c.attestation_anchor.address, &provider);
    let anchor_role = tx::read("AttestationAnchor", anchor_contract.ANCHOR_ROLE())
        .await
        .unwrap();
    assert!(
        tx::read(
            "AttestationAnchor",
            anchor_contract.hasRole(anchor_role, anchor)
        )
        .await
        .unwrap()
    );
    let registry = NodeRegistry::new(c.node_registry.address, &provider);
    let admin_role = tx::read("NodeRegistry", registry.DEFAULT_ADMIN_ROLE())
        .await
        .unwrap();
    assert!(
        tx::read(
            "NodeRegistry",
            registry.hasRole(admin_role, deployer.address())
        )
        .await
        .unwrap()
    );

    // StorageMarket is wired to this deployment's USDC, registry and verifier, with the anvil
    // network's epoch length from networks.toml and the requested treasury.
    let market = StorageMarket::new(c.storage_market.address, &provider);
    assert_eq!(
        tx::read("StorageMarket", market.usdc()).await.unwrap(),
        mock.address
    );
    assert_eq!(
        tx::read("StorageMarket", market.registry()).await.unwrap(),
        c.node_registry.address
    );
    assert_eq!(
        tx::read("StorageMarket", market.verifier()).await.unwrap(),
        c.groth16_verifier.address
    );
    assert_eq!(
        tx::read("StorageMarket", market.maxSegmentCount())
            .await
            .unwrap(),
        STORAGE_MAX_SEGMENTS
    );
    assert_eq!(
        tx::read("StorageMarket", market.epochBlocks())
            .await
            .unwrap(),
        20
    );
    assert_eq!(
        tx::read("StorageMarket", market.treasury()).await.unwrap(),
        treasury
    );
    assert_eq!(
        tx::read("StorageMarket", market.platformFeeBps())
            .await
            .unwrap(),
        DEFAULT_STORAGE_FEE_BPS
    );
    assert_eq!(
        tx::read("StorageMarket", market.MAX_FEE_BPS())
            .await
            .unwrap(),
        STORAGE_MAX_FEE_BPS,
        "the SDK checks the fee against the contract's cap"
    );
    let market_admin = tx::read("StorageMarket", market.DEFAULT_ADMIN_ROLE())
        .await
        .unwrap();
    assert!(
        tx::read(
            "StorageMarket",
            market.hasRole(market_admin, deployer.address())
        )
        .await
        .unwrap()
    );
    // The deployed verifier is the committed storage-circuit verifier: it answers (and rejects
    // an all-zero proof) rather than reverting.
    let verifier = Groth16Verifier::new(c.groth16_verifier.address, &provider);
    assert!(
        !tx::read(
            "Groth16Verifier",
            verifier.verifyProof([U256::ZERO; 8], [U256::ZERO; 3])
        )
        .await
        .unwrap()
    );

    assert_eq!(
        tx::read(
            "MockUSDC",
            MockUSDC::new(mock.address, &provider).decimals()
        )
        .await
        .unwrap(),
        6
    );
}

#[tokio::test]
async fn deploy_refuses_bad_input_and_writes_nothing() {
    let anvil = spawn_anvil().unwrap();
    let dir = deployments_dir();
    let key = hex::encode_prefixed(signer(&anvil, 0).to_bytes());

    // No key anywhere.
    let output = decloud(dir.path(), &["--rpc-url", &anvil.endpoint()])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("DECLOUD_PRIVATE_KEY"));

    // A public network without its RPC URL in the environment.
    let output = decloud(dir.path(), &["--network", "amoy"])
        .env("DECLOUD_PRIVATE_KEY", &key)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("DECLOUD_AMOY_RPC_URL"));

    // A network whose chain id is not the endpoint's.
    let output = decloud(
        dir.path(),
        &["--network", "polygon", "--rpc-url", &anvil.endpoint()],
    )
    .env("DECLOUD_PRIVATE_KEY", &key)
    .output()
    .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("chain 137"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // A USDC address with no contract behind it.
    let output = decloud(
        dir.path(),
        &[
            "--rpc-url",
            &anvil.endpoint(),
            "--usdc",
            &Address::repeat_byte(5).to_string(),
        ],
    )
    .env("DECLOUD_PRIVATE_KEY", &key)
    .output()
    .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no contract at the USDC address"));

    // A storage fee above StorageMarket's cap is refused before anything is sent.
    let output = decloud(
        dir.path(),
        &["--rpc-url", &anvil.endpoint(), "--storage-fee-bps", "2001"],
    )
    .env("DECLOUD_PRIVATE_KEY", &key)
    .output()
    .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("above the cap"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // No private-key flag exists.
    let output = decloud(
        dir.path(),
        &["--rpc-url", &anvil.endpoint(), "--private-key", &key],
    )
    .output()
    .unwrap();
    assert!(!output.status.success());

    assert!(!dir.path().join("31337.json").exists());
    let provider = ProviderBuilder::new().connect_http(anvil.endpoint_url());
    assert_eq!(
        provider.get_block_number().await.unwrap(),
        0,
        "nothing was sent to the chain"
    );
}

/// Deploys `code` from `deployer` and returns the new contract's address.
async fn deploy_code(
    provider: &alloy::providers::DynProvider,
    code: alloy::primitives::Bytes,
) -> Address {
    use alloy::{network::TransactionBuilder as _, rpc::types::TransactionRequest};
    let receipt = provider
        .send_transaction(TransactionRequest::default().with_deploy_code(code))
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    assert!(receipt.status());
    receipt.contract_address.unwrap()
}

/// The development verifier's keys come from a public seed: off a local chain the deployment
/// refuses it (and a "production" verifier that is really it, or whose code is not the pinned
/// one) before anything is sent, and takes a verifier pinned by its code hash.
#[tokio::test]
async fn deploy_refuses_the_development_verifier_off_local_chains() {
    use alloy::node_bindings::Anvil;
    let root = decloud_sdk::paths::repo_root().unwrap();
    // A chain with Amoy's id: networks.toml knows it and pins no verifier for it yet.
    let anvil = Anvil::at(decloud_sdk::paths::anvil_path(&root).unwrap())
        .port(0u16)
        .chain_id(80002)
        .try_spawn()
        .unwrap();
    let dir = deployments_dir();
    let deployer = signer(&anvil, 0);
    let key = hex::encode_prefixed(deployer.to_bytes());
    let provider = decloud_sdk::testing::provider_for(&anvil, deployer.clone());
    // Amoy's USDC does not exist on this anvil: the test's own token stands in for it.
    let usdc = deploy_code(&provider, MockUSDC::BYTECODE.clone()).await;
    let (endpoint, usdc_arg) = (anvil.endpoint(), usdc.to_string());
    let run = |extra: &[&str]| {
        let mut args = vec!["--rpc-url", endpoint.as_str(), "--usdc", usdc_arg.as_str()];
        args.extend_from_slice(extra);
        decloud(dir.path(), &args)
            .env("DECLOUD_PRIVATE_KEY", &key)
            .output()
            .unwrap()
    };
    let nonce = || async {
        provider
            .get_transaction_count(deployer.address())
            .await
            .unwrap()
    };
    let before = nonce().await;

    let output = run(&[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("refusing to deploy the development Groth16 verifier on chain 80002"),
        "{stderr}"
    );

    // The committed development verifier, deployed by hand and passed off as production.
    let development = deploy_code(&provider, Groth16Verifier::BYTECODE.clone()).await;
    let development_hash =
        alloy::primitives::keccak256(provider.get_code_at(development).await.unwrap());
    let output = run(&[
        "--verifier",
        &development.to_string(),
        "--verifier-code-hash",
        &development_hash.to_string(),
    ]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("is the development verifier"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // A verifier of other keys stands in for the ceremony's: it is accepted only with its own hash.
    let params = decloud_prover::CircuitParams {
        depth: 4,
        challenges: 2,
    };
    let keys = decloud_prover::Keys::dev_setup(params).unwrap();
    let ceremony = deploy_code(
        &provider,
        decloud_sdk::testing::compile_source(
            "contracts/src/Groth16Verifier.sol",
            &decloud_prover::generate_verifier(keys.vk(), &params),
            "Groth16Verifier",
        ),
    )
    .await;
    let ceremony_hash = alloy::primitives::keccak256(provider.get_code_at(ceremony).await.unwrap());
    let output = run(&[
        "--verifier",
        &ceremony.to_string(),
        "--verifier-code-hash",
        &development_hash.to_string(),
    ]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("not the pinned"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        nonce().await,
        before + 2,
        "only the test's own two deployments were sent"
    );
    assert!(!dir.path().join("80002.json").exists());

    let output = run(&[
        "--verifier",
        &ceremony.to_string(),
        "--verifier-code-hash",
        &ceremony_hash.to_string(),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let deployment = Deployment::load(dir.path(), 80002).unwrap();
    assert_eq!(deployment.contracts.groth16_verifier.address, ceremony);
    assert!(deployment.contracts.mock_usdc.is_none());
    let market = StorageMarket::new(deployment.contracts.storage_market.address, &provider);
    assert_eq!(market.verifier().call().await.unwrap(), ceremony);
}

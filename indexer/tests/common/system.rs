//! The real contracts, deployed by the SDK's `TestSystem`, driven by their real users: operators
//! register and reprice nodes and stake, tenants deposit, open, top up and fund leases with a paid
//! template, an author publishes, governance anchors attestations. Rounds of such calls are built
//! as plain transactions so that the same round can be sent now or handed to `anvil_reorg` as the
//! replacement of blocks.

use alloy::eips::BlockId;
use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, B256, Bytes, U256, keccak256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::TransactionRequest;
use alloy::sol;
use decloud_indexer::{ContractKind, EventDecoder, FollowerConfig, deployment_contracts};
use decloud_sdk::bindings::{
    AttestationAnchor, LeaseEscrow, MockUSDC, NodeRegistry, OperatorStaking, StorageMarket,
    TemplateMarket, lease_escrow::ILeaseEscrow, node_registry::INodeRegistry,
};
use decloud_sdk::testing::{SendOk as _, TestSystem};

pub const USDC: u64 = 1_000_000;

/// Who does what (anvil accounts).
pub const ADMIN: usize = 0;
pub const OPERATOR_A: usize = 1;
pub const OPERATOR_B: usize = 2;
pub const AUTHOR: usize = 3;
pub const TENANT_A: usize = 4;
pub const TENANT_B: usize = 5;

/// The real system on anvil and what the indexer needs to follow it.
pub struct System {
    pub system: TestSystem,
    pub reader: DynProvider,
    pub contracts: Vec<(ContractKind, Address)>,
    pub deploy_block: u64,
    pub node_a: B256,
    pub node_b: B256,
}

/// One contract call by one of the actors.
#[derive(Clone, Debug)]
pub struct Action {
    pub from: usize,
    pub to: Address,
    pub input: Bytes,
}

impl Action {
    fn new(from: usize, to: Address, input: &Bytes) -> Self {
        Self {
            from,
            to,
            input: input.clone(),
        }
    }
}

pub fn capabilities(vcpus: u32) -> INodeRegistry::Capabilities {
    INodeRegistry::Capabilities {
        vcpus,
        memoryGiB: vcpus * 4,
        diskGiB: 500,
        gpus: 0,
        bandwidthMbps: 1000,
        architecture: 0,
        flags: 1,
    }
}

pub fn prices(salt: u64) -> INodeRegistry::Prices {
    INodeRegistry::Prices {
        cpuPerHour: 6_000 + salt,
        memoryGiBPerHour: 2_000 + salt,
        storageGiBPerHour: 20 + salt,
        gpuPerHour: 0,
    }
}

pub fn resources(vcpus: u32) -> ILeaseEscrow::Resources {
    ILeaseEscrow::Resources {
        vcpus,
        memoryGiB: vcpus * 2,
        storageGiB: 20,
        gpus: 0,
    }
}

impl System {
    /// Starts anvil with everything deployed and the setup every round relies on: two nodes, two
    /// funded tenant accounts with one open lease each (one with a paid template), a stake, an
    /// anchored batch.
    pub async fn start() -> Self {
        let system = TestSystem::start().await.unwrap();
        let reader = ProviderBuilder::new()
            .connect_http(system.rpc_url())
            .erased();
        let deployment = &system.deployment;
        let contracts = deployment_contracts(deployment)
            .into_iter()
            .map(|(name, entry)| (name.parse::<ContractKind>().unwrap(), entry.address))
            .collect();
        let mut s = Self {
            deploy_block: deployment.deploy_block,
            system,
            reader,
            contracts,
            node_a: B256::ZERO,
            node_b: B256::ZERO,
        };
        s.setup().await;
        s
    }

    pub fn address(&self, kind: ContractKind) -> Address {
        self.contracts.iter().find(|(k, _)| *k == kind).unwrap().1
    }

    pub fn provider(&self, who: usize) -> DynProvider {
        self.system.provider(who)
    }

    pub fn account(&self, who: usize) -> Address {
        self.system.address(who)
    }

    pub fn decoder(&self) -> EventDecoder {
        EventDecoder::new(self.contracts.clone())
    }

    pub fn follower_config(&self, name: &str) -> FollowerConfig {
        let mut c = FollowerConfig::new(
            name,
            self.contracts.iter().map(|(_, a)| *a).collect(),
            self.deploy_block,
        );
        c.reorg_window = 128;
        c.initial_range = 16;
        c
    }

    async fn setup(&mut self) {
        let registry = self.address(ContractKind::NodeRegistry);
        let staking = self.address(ContractKind::OperatorStaking);
        let escrow = self.address(ContractKind::LeaseEscrow);
        let market = self.address(ContractKind::TemplateMarket);
        let usdc = self.system.deployment.usdc;
        for (who, machine) in [(OPERATOR_A, "machine-a"), (OPERATOR_B, "machine-b")] {
            let p = self.provider(who);
            let r = NodeRegistry::new(registry, &p);
            r.register(
                keccak256(machine),
                self.account(who),
                "eu-west".into(),
                capabilities(64),
                format!("https://{machine}.example"),
                "bafynode".into(),
                prices(0),
            )
            .send_ok()
            .await;
            let id = r
                .computeNodeId(keccak256(machine), self.account(who))
                .call()
                .await
                .unwrap();
            if who == OPERATOR_A {
                self.node_a = id;
            } else {
                self.node_b = id;
            }
            MockUSDC::new(usdc, &p)
                .approve(staking, U256::MAX)
                .send_ok()
                .await;
        }
        OperatorStaking::new(staking, self.provider(OPERATOR_A))
            .stake(U256::from(500 * USDC))
            .send_ok()
            .await;
        TemplateMarket::new(market, self.provider(AUTHOR))
            .publish("bafytemplate".into(), U256::from(USDC), "{}".into())
            .send_ok()
            .await;
        for (tenant, node, template) in [(TENANT_A, self.node_a, 1u64), (TENANT_B, self.node_b, 0)]
        {
            let p = self.provider(tenant);
            MockUSDC::new(usdc, &p)
                .approve(escrow, U256::MAX)
                .send_ok()
                .await;
            let e = LeaseEscrow::new(escrow, &p);
            e.deposit(U256::from(1_000 * USDC)).send_ok().await;
            e.openLease(
                node,
                resources(2),
                1,
                1,
                U256::from(template),
                U256::from(template * USDC),
                u64::MAX,
                U256::from(50 * USDC),
            )
            .send_ok()
            .await;
        }
        MockUSDC::new(usdc, self.provider(TENANT_A))
            .approve(self.address(ContractKind::StorageMarket), U256::MAX)
            .send_ok()
            .await;
        let sequence = self.next_sequence(BlockId::latest()).await;
        self.send(&[anchor_action(self, 0, sequence)]).await;
    }

    /// The anchor's next sequence number at `block`.
    pub async fn next_sequence(&self, block: BlockId) -> u64 {
        AttestationAnchor::new(self.address(ContractKind::AttestationAnchor), &self.reader)
            .nextSequence()
            .block(block)
            .call()
            .await
            .unwrap()
    }

    /// A round of calls that is valid after the setup whatever rounds came before: price changes,
    /// an update, a registration, deposits, withdrawals, a stake and an unstake request, a lease
    /// with a template purchase, top-ups, template publication and update, a two-replica storage
    /// deal, and an anchor whose first sequence is `sequence`. `salt` makes every round's data
    /// different.
    pub fn round(&self, salt: u64, sequence: u64) -> Vec<Action> {
        use ContractKind as K;
        let (registry_at, staking_at, escrow_at, market_at) = (
            self.address(K::NodeRegistry),
            self.address(K::OperatorStaking),
            self.address(K::LeaseEscrow),
            self.address(K::TemplateMarket),
        );
        let registry = NodeRegistry::new(registry_at, &self.reader);
        let staking = OperatorStaking::new(staking_at, &self.reader);
        let escrow = LeaseEscrow::new(escrow_at, &self.reader);
        let market = TemplateMarket::new(market_at, &self.reader);
        let storage_at = self.address(K::StorageMarket);
        let storage = StorageMarket::new(storage_at, &self.reader);
        let operator_b = self.account(OPERATOR_B);
        vec![
            Action::new(
                OPERATOR_A,
                registry_at,
                registry.setPrices(self.node_a, prices(salt)).calldata(),
            ),
            Action::new(
                TENANT_A,
                escrow_at,
                escrow.deposit(U256::from(USDC + salt)).calldata(),
            ),
            Action::new(
                OPERATOR_B,
                registry_at,
                registry.setPrices(self.node_b, prices(2 * salt)).calldata(),
            ),
            Action::new(
                TENANT_B,
                escrow_at,
                escrow
                    .topUp(U256::from(2), U256::from(1_000 * salt + 1))
                    .calldata(),
            ),
            Action::new(
                OPERATOR_A,
                staking_at,
                staking.stake(U256::from(10 * USDC + salt)).calldata(),
            ),
            Action::new(
                OPERATOR_A,
                staking_at,
                staking.requestUnstake(U256::from(USDC + salt)).calldata(),
            ),
            Action::new(
                TENANT_A,
                escrow_at,
                escrow
                    .openLease(
                        self.node_a,
                        resources(1 + (salt % 4) as u32),
                        (salt % 4) as u8,
                        (salt % 3) as u8,
                        U256::from(1),
                        U256::from(USDC),
                        u64::MAX,
                        U256::from(5 * USDC),
                    )
                    .calldata(),
            ),
            Action::new(
                OPERATOR_B,
                registry_at,
                registry
                    .register(
                        keccak256(format!("machine-{salt}")),
                        operator_b,
                        format!("region-{salt}"),
                        capabilities(4 + (salt % 8) as u32),
                        format!("https://node-{salt}.example"),
                        format!("bafy{salt}"),
                        prices(salt),
                    )
                    .calldata(),
            ),
            Action::new(
                TENANT_B,
                escrow_at,
                escrow.withdraw(U256::from(1_000 + salt)).calldata(),
            ),
            Action::new(
                OPERATOR_B,
                registry_at,
                registry
                    .update(
                        self.node_b,
                        operator_b,
                        format!("moved-{salt}"),
                        capabilities(8 + (salt % 8) as u32),
                        "https://machine-b.example".into(),
                        format!("bafymoved{salt}"),
                    )
                    .calldata(),
            ),
            Action::new(
                AUTHOR,
                market_at,
                market
                    .update(
                        U256::from(1),
                        format!("bafytemplate{salt}"),
                        U256::from(USDC),
                        format!("{{\"v\":{salt}}}"),
                    )
                    .calldata(),
            ),
            Action::new(
                TENANT_A,
                escrow_at,
                escrow
                    .topUp(U256::from(1), U256::from(2_000 + salt))
                    .calldata(),
            ),
            Action::new(
                AUTHOR,
                market_at,
                market
                    .publish(
                        format!("bafyother{salt}"),
                        U256::from(100 * salt),
                        "{}".into(),
                    )
                    .calldata(),
            ),
            Action::new(
                TENANT_A,
                storage_at,
                storage
                    .createDeal(
                        vec![self.node_a, self.node_b],
                        // Roots are BN254 scalars: small numbers are.
                        vec![U256::from(1_000 + salt), U256::from(2_000 + salt)],
                        10 + salt % 50,
                        100 + u128::from(salt),
                        1 + (salt % 5) as u32,
                    )
                    .calldata(),
            ),
            anchor_action(self, salt, sequence),
        ]
    }

    /// Sends the actions one by one (one block each) and checks that each succeeded.
    pub async fn send(&self, actions: &[Action]) {
        for a in actions {
            let p = self.provider(a.from);
            let tx = TransactionRequest::default()
                .with_to(a.to)
                .with_input(a.input.clone());
            let receipt = p
                .send_transaction(tx)
                .await
                .unwrap()
                .get_receipt()
                .await
                .unwrap();
            assert!(receipt.status(), "call by account {} reverted", a.from);
        }
    }

    /// Sends `rounds` rounds with salts from `first_salt`.
    pub async fn rounds(&self, first_salt: u64, rounds: u64) {
        for salt in first_salt..first_salt + rounds {
            let sequence = self.next_sequence(BlockId::latest()).await;
            self.send(&self.round(salt, sequence)).await;
        }
    }
}

/// Anchors a batch of five attestations.
pub fn anchor_action(s: &System, salt: u64, sequence: u64) -> Action {
    let at = s.address(ContractKind::AttestationAnchor);
    Action::new(
        ADMIN,
        at,
        AttestationAnchor::new(at, &s.reader)
            .anchor(
                keccak256(format!("root-{salt}")),
                5,
                sequence,
                format!("ipfs://batch-{salt}"),
            )
            .calldata(),
    )
}

sol! {
    /// The PriceChurner fixture's functions (tests/fixtures/PriceChurner.sol).
    #[sol(rpc)]
    contract PriceChurner {
        struct Capabilities { uint32 vcpus; uint32 memoryGiB; uint32 diskGiB; uint16 gpus; uint32 bandwidthMbps; uint8 architecture; uint32 flags; }
        struct Prices { uint64 cpuPerHour; uint64 memoryGiBPerHour; uint64 storageGiBPerHour; uint64 gpuPerHour; }
        function register(bytes32 machineId, address nodeKey, Capabilities capabilities, Prices prices) external;
        function churn(uint256 n, uint64 firstCpuPrice, Prices prices) external;
    }
}

impl System {
    /// Makes the real NodeRegistry emit `total` `NodePricesSet` events, `per_tx` per transaction,
    /// through a PriceChurner fixture that operates one node.
    pub async fn price_changes(&self, total: u64, per_tx: u64) {
        let code = decloud_sdk::testing::compile_fixture(
            "indexer/tests/fixtures/PriceChurner.sol",
            "PriceChurner",
        );
        let p = self.provider(ADMIN);
        let mut code = code.to_vec();
        code.extend_from_slice(&self.address(ContractKind::NodeRegistry).into_word().0);
        let receipt = p
            .send_transaction(TransactionRequest::default().with_deploy_code(code))
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
        assert!(receipt.status());
        let churner = PriceChurner::new(receipt.contract_address.unwrap(), &p);
        let fixture_prices = || PriceChurner::Prices {
            cpuPerHour: 6_000,
            memoryGiBPerHour: 2_000,
            storageGiBPerHour: 20,
            gpuPerHour: 0,
        };
        churner
            .register(
                keccak256("churner"),
                self.account(ADMIN),
                PriceChurner::Capabilities {
                    vcpus: 4,
                    memoryGiB: 16,
                    diskGiB: 100,
                    gpus: 0,
                    bandwidthMbps: 100,
                    architecture: 0,
                    flags: 0,
                },
                fixture_prices(),
            )
            .send_ok()
            .await;
        // One at a time: anvil automines when a transaction arrives, and transactions that arrive
        // together beyond one block's gas stay in its pool until another one comes.
        let mut done = 0;
        while done < total {
            let n = per_tx.min(total - done);
            churner
                .churn(U256::from(n), 6_000 + done, fixture_prices())
                .send_ok()
                .await;
            done += n;
        }
    }
}

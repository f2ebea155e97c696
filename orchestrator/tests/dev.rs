//! `decloud dev`'s orchestrator and node agent services on a real anvil with the system deployed:
//! the agent service registers its node on-chain, the orchestrator follows the chain and sees the
//! agent online; stopping both frees the API.

use std::time::{Duration, Instant};

use alloy::{primitives::hex, transports::http::reqwest};
use decloud_node_agent::{NodeAgentService, dev::TEST_DRIVER_URI};
use decloud_orchestrator::{OrchestratorService, dev::DEV_IMAGE};
use decloud_sdk::{
    agent_protocol,
    bindings::NodeRegistry,
    dev::{DevAccount, DevContext, DevService},
    testing::TestSystem,
    tx,
};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_services_register_the_node_and_link_its_agent() {
    let system = TestSystem::start().await.unwrap();
    let accounts = (0..3)
        .map(|i| DevAccount {
            address: system.address(i),
            private_key: hex::encode_prefixed(system.signer(i).to_bytes()),
        })
        .collect();
    let mut ctx = DevContext {
        rpc_url: Some(system.rpc_url()),
        deployment: Some(system.deployment.clone()),
        accounts,
        ..DevContext::default()
    };
    let mut orchestrator = OrchestratorService::default();
    orchestrator.start(&mut ctx).await.unwrap();
    let mut agent = NodeAgentService::new(TEST_DRIVER_URI, DEV_IMAGE);
    agent.start(&mut ctx).await.unwrap();

    // The node is on-chain under account 1 with the agent's key.
    let node = ctx
        .nodes
        .first()
        .expect("the agent service records its node");
    assert_eq!(node.operator, system.address(1));
    assert_eq!(
        node.node_id,
        agent_protocol::node_id(
            agent_protocol::machine_id("decloud-dev-node"),
            node.operator
        )
    );
    let registry = NodeRegistry::new(
        system.deployment.contracts.node_registry.address,
        system.provider(0),
    );
    let onchain = tx::read("NodeRegistry", registry.getNode(node.node_id))
        .await
        .unwrap();
    assert_eq!(onchain.operator, node.operator);
    assert_eq!(onchain.nodeKey, node.node_key);
    assert!(
        ctx.warnings.iter().any(|w| w.contains("SIMULATED")),
        "{:?}",
        ctx.warnings
    );

    // The orchestrator follows the chain and sees the agent connected.
    let api = ctx
        .endpoints
        .iter()
        .find(|(name, _)| name == "orchestrator (HTTP API)")
        .map(|(_, url)| url.clone())
        .unwrap();
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let body: Option<Value> = match http
            .get(format!("{api}/nodes/{}", node.node_id))
            .send()
            .await
        {
            Ok(response) => response.json().await.ok(),
            Err(_) => None,
        };
        if body
            .as_ref()
            .is_some_and(|b| b["reputation"]["online"] == Value::Bool(true))
        {
            break;
        }
        assert!(Instant::now() < deadline, "agent never online: {body:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The registration was attested, signed by the account holding ANCHOR_ROLE.
    let signer: Value = http
        .get(format!("{api}/attestations/signer"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        signer["signer"]
            .as_str()
            .unwrap()
            .parse::<alloy::primitives::Address>()
            .unwrap(),
        system.deployment.roles.anchor
    );
    let attested: Value = http
        .get(format!(
            "{api}/attestations?subject=node:{:#x}",
            node.node_id
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(attested[0]["kind"], "node.registered", "{attested}");

    // Storage deals are repaired by a fresh key of its own, funded for gas.
    let repairer: Value = http
        .get(format!("{api}/storage/repairer"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let address: alloy::primitives::Address =
        repairer["address"].as_str().unwrap().parse().unwrap();
    assert!((0..10).all(|i| address != system.address(i)), "{repairer}");
    assert_eq!(
        repairer["storage_market"]
            .as_str()
            .unwrap()
            .parse::<alloy::primitives::Address>()
            .unwrap(),
        system.deployment.contracts.storage_market.address
    );
    use alloy::providers::Provider as _;
    assert!(
        !system
            .provider(0)
            .get_balance(address)
            .await
            .unwrap()
            .is_zero()
    );

    agent.stop().await;
    orchestrator.stop().await;
    assert!(http.get(format!("{api}/health")).send().await.is_err());
}

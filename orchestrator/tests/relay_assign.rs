//! Relay assignment, refusal, failover, persistence and accounting, on the orchestrator's own
//! parts (its store on SQLite and PostgreSQL, its agent hub, the relay pass) with the heartbeats
//! of relays and nodes recorded as the agent WebSocket records them. The whole path with real
//! agents, tunnels and a guest is `tests/relay_failover.rs`.

mod support;

use alloy::{primitives::B256, signers::local::PrivateKeySigner};
use decloud_orchestrator::{
    Store,
    agent::{AgentHub, LinkReport, SessionTicket},
    config::RelaysConfig,
    metrics::Metrics,
    relay::{self, RelayMemory},
    store::{NodeCapabilities, NodeRegistration, chain::node_registered},
};
use decloud_sdk::{
    NodeId, VmId,
    agent_protocol::{self as proto, CommandAction},
    relay::{
        RELAY_FLAG, RelayPorts, RelayReport, TunnelBinding, TunnelKey, TunnelReport, VmTraffic,
    },
};
use sqlx::Connection;
use std::{net::Ipv4Addr, sync::Arc};

const NOW: i64 = 1_700_000_000;
const FAILOVER_SECS: u64 = 10;

struct Node {
    key: PrivateKeySigner,
    node_id: NodeId,
}

async fn register(url: &str, name: &str, flags: u32) -> Node {
    let key = PrivateKeySigner::random();
    let operator = alloy::primitives::Address::repeat_byte(0x11);
    let node_id = NodeId::from(proto::node_id(proto::machine_id(name), operator));
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    node_registered(
        &mut conn,
        &NodeRegistration {
            node_id,
            operator: format!("{operator:#x}"),
            node_key: format!("{:#x}", key.address()),
            region: "eu-west".into(),
            endpoint: "ws://node".into(),
            metadata_cid: String::new(),
            capabilities: NodeCapabilities {
                vcpus: 2,
                memory_gib: 2,
                disk_gib: 20,
                gpus: 0,
                bandwidth_mbps: 100,
                flags,
            },
        },
        NOW,
    )
    .await
    .unwrap();
    conn.close().await.unwrap();
    Node { key, node_id }
}

fn relay_report(n: u8) -> RelayReport {
    RelayReport {
        key: TunnelKey([n; 32]),
        endpoint: format!("203.0.113.{n}:51820"),
        tunnel_address: Ipv4Addr::new(10, 98, n, 1),
        nodes: Vec::new(),
        traffic: Vec::new(),
        tunnel_prefix: Some(24),
        ports: Some(RelayPorts {
            first: 20_000,
            last: 20_099,
        }),
    }
}

fn heartbeat(
    hub: &AgentHub,
    node: &Node,
    relay: Option<RelayReport>,
    tunnel: Option<TunnelReport>,
    at: i64,
) -> SessionTicket {
    let ticket = hub.open_session(node.node_id);
    hub.record_links(
        &ticket,
        LinkReport {
            relay,
            tunnel,
            received_at: at,
        },
    );
    hub.record_report(&ticket, Vec::new(), at);
    ticket
}

fn tunnel(signer: &PrivateKeySigner, node: &Node, key: u8) -> TunnelReport {
    TunnelReport {
        binding: TunnelBinding::sign(signer, node.node_id.into(), TunnelKey([key; 32])).unwrap(),
        relay_node_id: None,
        latest_handshake: None,
    }
}

/// The actions queued for a node, in order.
async fn queued(store: &Store, node: NodeId) -> Vec<CommandAction> {
    store
        .due_commands(node, i64::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|c| serde_json::from_str(&c.action).unwrap())
        .collect()
}

async fn relays_assign_refuse_fail_over_and_count(url: &str) {
    let store = Store::connect(url).await.unwrap();
    let hub = AgentHub::new(store.clone(), Arc::new(Metrics::default()), 30);
    let memory = RelayMemory::default();
    let config = RelaysConfig {
        failover_secs: FAILOVER_SECS,
    };
    let pass = |hub: AgentHub, memory: RelayMemory, now: i64| {
        let (store, config) = (store.clone(), config.clone());
        async move {
            relay::pass(&store, &hub, None, &config, &memory, now)
                .await
                .unwrap()
        }
    };

    // Two relays flagged on-chain, one node that runs a relay without the flag.
    let relay_a = register(url, "relay-a", 1 | RELAY_FLAG).await;
    let relay_b = register(url, "relay-b", 1 | RELAY_FLAG).await;
    let unflagged = register(url, "unflagged", 1).await;
    let (first, second) = if relay_a.node_id < relay_b.node_id {
        (&relay_a, &relay_b)
    } else {
        (&relay_b, &relay_a)
    };
    let first_ticket = heartbeat(&hub, first, Some(relay_report(1)), None, NOW);
    heartbeat(&hub, second, Some(relay_report(2)), None, NOW);
    heartbeat(&hub, &unflagged, Some(relay_report(3)), None, NOW);

    // A node behind NAT whose tunnel key is bound by its registered key gets the least loaded
    // relay (both empty: the lowest id); the relay is told to publish it, the node to dial.
    let node = register(url, "behind-nat", 2).await;
    heartbeat(&hub, &node, None, Some(tunnel(&node.key, &node, 7)), NOW);
    // A node whose binding is signed by another key than its registered one gets nothing.
    let forged = register(url, "forged", 2).await;
    let stranger = PrivateKeySigner::random();
    heartbeat(
        &hub,
        &forged,
        None,
        Some(tunnel(&stranger, &forged, 8)),
        NOW,
    );
    pass(hub.clone(), memory.clone(), NOW).await;

    let assigned = store.relay_assignment(node.node_id).await.unwrap().unwrap();
    assert_eq!(assigned.relay_node_id, first.node_id);
    assert_eq!(assigned.relay_address, "203.0.113.1");
    assert_eq!(assigned.tunnel_address, Ipv4Addr::new(10, 98, 1, 2));
    let to_relay = queued(&store, first.node_id).await;
    assert!(
        matches!(&to_relay[..], [CommandAction::PublishNode { node: n }]
            if n.node_id == B256::from(node.node_id) && n.node_key == node.key.address()
                && n.tunnel_address == assigned.tunnel_address && n.binding.key == TunnelKey([7; 32])),
        "{to_relay:?}"
    );
    let to_node = queued(&store, node.node_id).await;
    assert!(
        matches!(&to_node[..], [CommandAction::JoinRelay { assignment: a }]
            if a.relay_node_id == B256::from(first.node_id) && a.endpoint == "203.0.113.1:51820"
                && a.relay_key == TunnelKey([1; 32]) && a.node_address == assigned.tunnel_address),
        "{to_node:?}"
    );
    assert!(
        store
            .relay_assignment(forged.node_id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(queued(&store, forged.node_id).await.is_empty());
    assert!(queued(&store, second.node_id).await.is_empty());
    assert!(queued(&store, unflagged.node_id).await.is_empty());

    // A second node goes to the other relay (the first has one node now).
    let other = register(url, "behind-nat-2", 2).await;
    heartbeat(&hub, &other, None, Some(tunnel(&other.key, &other, 9)), NOW);
    pass(hub.clone(), memory.clone(), NOW + 1).await;
    let other_assigned = store
        .relay_assignment(other.node_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(other_assigned.relay_node_id, second.node_id);
    // Nothing is sent twice while the relay and node have not reported back.
    pass(hub.clone(), memory.clone(), NOW + 2).await;
    assert_eq!(queued(&store, first.node_id).await.len(), 1);
    assert_eq!(queued(&store, node.node_id).await.len(), 1);

    // The first relay goes away: nothing moves before failover_secs, then its node moves to
    // the other relay, and the first is told to unpublish it (delivered when it returns).
    hub.close_session(&first_ticket);
    pass(hub.clone(), memory.clone(), NOW + 3).await;
    assert_eq!(
        store
            .relay_assignment(node.node_id)
            .await
            .unwrap()
            .unwrap()
            .relay_node_id,
        first.node_id
    );
    pass(hub.clone(), memory.clone(), NOW + 3 + FAILOVER_SECS as i64).await;
    let moved = store.relay_assignment(node.node_id).await.unwrap().unwrap();
    assert_eq!(moved.relay_node_id, second.node_id);
    assert_eq!(moved.relay_address, "203.0.113.2");
    assert_ne!(moved.tunnel_address, other_assigned.tunnel_address);
    // (Commands queued in the same second come in no particular order.)
    assert!(queued(&store, first.node_id).await.iter().any(
        |c| matches!(c, CommandAction::UnpublishNode { node_id } if *node_id == B256::from(node.node_id))
    ));
    assert!(queued(&store, node.node_id).await.iter().any(
        |c| matches!(c, CommandAction::JoinRelay { assignment: a } if a.relay_node_id == B256::from(second.node_id) && a.node_address == moved.tunnel_address)
    ));
    assert!(queued(&store, second.node_id).await.iter().any(
        |c| matches!(c, CommandAction::PublishNode { node: n } if n.node_id == B256::from(node.node_id) && n.tunnel_address == moved.tunnel_address)
    ));

    // A restart (new hub, new memory, same store): the assignments are whole and, with the
    // relay and node reporting them, nothing is sent again.
    let store2 = Store::connect(url).await.unwrap();
    let hub2 = AgentHub::new(store2.clone(), Arc::new(Metrics::default()), 30);
    assert_eq!(
        store2
            .relay_assignment(node.node_id)
            .await
            .unwrap()
            .unwrap(),
        moved
    );
    let mut report = relay_report(2);
    report.nodes = vec![node.node_id.into(), other.node_id.into()];
    heartbeat(&hub2, second, Some(report), None, NOW + 100);
    let mut joined = tunnel(&node.key, &node, 7);
    joined.relay_node_id = Some(second.node_id.into());
    heartbeat(&hub2, &node, None, Some(joined), NOW + 100);
    let mut joined = tunnel(&other.key, &other, 9);
    joined.relay_node_id = Some(second.node_id.into());
    heartbeat(&hub2, &other, None, Some(joined), NOW + 100);
    let before: usize = queued(&store2, second.node_id).await.len();
    let before_node = queued(&store2, node.node_id).await.len();
    relay::pass(
        &store2,
        &hub2,
        None,
        &config,
        &RelayMemory::default(),
        NOW + 100,
    )
    .await
    .unwrap();
    assert_eq!(queued(&store2, second.node_id).await.len(), before);
    assert_eq!(queued(&store2, node.node_id).await.len(), before_node);
    assert_eq!(
        store2
            .relay_assignment(node.node_id)
            .await
            .unwrap()
            .unwrap(),
        moved
    );

    // Bytes: cumulative per VM, a counter that restarts adds its new value, a repeated report
    // adds nothing, and two relays' counts add up.
    let vm: VmId = "vm-1".parse().unwrap();
    let counts = |bytes_in, bytes_out| {
        vec![VmTraffic {
            node_id: node.node_id.into(),
            vm_id: "vm-1".into(),
            bytes_in,
            bytes_out,
        }]
    };
    assert_eq!(store2.vm_relay_traffic(vm).await.unwrap(), None);
    store2
        .record_relay_traffic(first.node_id, &counts(100, 200), NOW)
        .await
        .unwrap();
    store2
        .record_relay_traffic(first.node_id, &counts(150, 260), NOW + 1)
        .await
        .unwrap();
    store2
        .record_relay_traffic(first.node_id, &counts(150, 260), NOW + 2)
        .await
        .unwrap();
    store2
        .record_relay_traffic(first.node_id, &counts(10, 20), NOW + 3)
        .await
        .unwrap();
    store2
        .record_relay_traffic(second.node_id, &counts(5, 5), NOW + 4)
        .await
        .unwrap();
    let total = store2.vm_relay_traffic(vm).await.unwrap().unwrap();
    assert_eq!((total.bytes_in, total.bytes_out), (165, 285));
    let per_relay = store2.relay_traffic_of(first.node_id).await.unwrap();
    assert_eq!(per_relay.len(), 1);
    assert_eq!(per_relay[0].0, "vm-1");
    assert_eq!(
        (per_relay[0].1.bytes_in, per_relay[0].1.bytes_out),
        (160, 280)
    );
}

#[tokio::test]
async fn relays_on_sqlite() {
    let (url, _dir) = support::sqlite_database();
    relays_assign_refuse_fail_over_and_count(&url).await;
}

#[tokio::test]
async fn relays_on_postgres() {
    let url = support::postgres_database().await;
    relays_assign_refuse_fail_over_and_count(&url).await;
}

//! Relays for nodes that accept no inbound connections.
//!
//! A node that cannot be reached from the internet says so: its heartbeats carry a tunnel report
//! (its agent runs with `behind_nat = true`, or it is relayed now), with its tunnel key bound to
//! its node key. Such a node is assigned a relay: an online node whose on-chain capability flags
//! say it relays ([`RELAY_FLAG`]) and whose heartbeats carry a relay report, the one with the
//! fewest nodes. The relay is told to publish the node (`publish_node`: the node's binding,
//! checked here first against the node key registered on-chain, a tunnel address in the relay's
//! subnet, and per VM its forwards at relay ports and its HTTPS names), and the node to dial the
//! relay (`join_relay`).
//!
//! [`pass`] runs every few seconds and keeps all of that current from what heartbeats say:
//! - a publication follows the node's VMs (their forwards, as the node reports them, and their
//!   ingress names), so creating, deleting, exposing and unexposing reach the relay;
//! - a relay whose report lacks a node it should publish (it restarted), or a node whose tunnel
//!   goes elsewhere, is told again (at most every [`RESEND_SECS`]);
//! - a relay without a live session or without a recent heartbeat for `[relays] failover_secs`
//!   loses its nodes: each is moved to another relay (`join_relay` to the node, `publish_node` to
//!   the new relay) and the old relay is told `unpublish_node`, which waits in the command queue
//!   until it comes back.
//!
//! Assignments and publications live in the store (`relay_assignments`), so a restarted
//! orchestrator keeps every relay port and tunnel address; what was only in memory (since when
//! a relay is down, when a command was last re-sent) starts afresh.

use crate::{
    agent::{AgentHub, enqueue_command, reported_vms},
    config::{IngressConfig, RelaysConfig},
    store::{RelayAssignmentRecord, Store, StoreError},
};
use decloud_sdk::{
    NodeId, VmId,
    agent_protocol::{CommandAction, HEARTBEAT_INTERVAL_SECS, PortForward, PortProtocol},
    api::RelayEndpoint,
    relay::{
        RELAY_FLAG, RelayAssignment, RelayForward, RelayPorts, RelayReport, RelayRoute,
        RelayedNode, RelayedVm,
    },
};
use rand::Rng;
use std::{
    collections::{BTreeSet, HashMap},
    net::Ipv4Addr,
    sync::{Arc, Mutex},
};

/// Seconds before a relay or node that did not pick up a command is told again.
pub const RESEND_SECS: i64 = 30;

/// A relay counts as silent when its last heartbeat is older than this (one interval missed,
/// with some slack for a busy link).
const SILENT_AFTER_SECS: i64 = HEARTBEAT_INTERVAL_SECS as i64 + 5;

/// What the relay pass keeps in memory between passes.
#[derive(Debug, Default, Clone)]
pub struct RelayMemory {
    inner: Arc<Mutex<Memory>>,
}

#[derive(Debug, Default)]
struct Memory {
    /// Since when each relay with assigned nodes has been down (unix seconds).
    down_since: HashMap<NodeId, i64>,
    /// When a command of a kind was last queued for (target, subject).
    sent: HashMap<(NodeId, NodeId, &'static str), i64>,
}

/// A relay that can take nodes now: online, flagged on-chain, reporting its role.
#[derive(Clone, Debug)]
struct LiveRelay {
    node_id: NodeId,
    report: RelayReport,
    prefix: u8,
    ports: RelayPorts,
}

impl LiveRelay {
    /// The relay's public address: the host part of its WireGuard endpoint.
    fn address(&self) -> String {
        host_of(&self.report.endpoint)
    }
}

/// The host of a `host:port` (IPv6 brackets removed).
fn host_of(endpoint: &str) -> String {
    let host = endpoint.rsplit_once(':').map_or(endpoint, |(host, _)| host);
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_string()
}

/// Why a pass failed.
#[derive(Debug, thiserror::Error)]
pub enum RelayPassError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Queueing a command failed.
    #[error(transparent)]
    Agent(#[from] crate::agent::AgentError),
}

fn command_id(kind: &str) -> String {
    format!("relay-{kind}-{:016x}", rand::rng().random::<u64>())
}

/// One pass: assign relays to nodes that need one, move nodes off relays that are gone, and
/// keep every publication and tunnel current.
pub async fn pass(
    store: &Store,
    hub: &AgentHub,
    ingress: Option<&IngressConfig>,
    config: &RelaysConfig,
    memory: &RelayMemory,
    now: i64,
) -> Result<(), RelayPassError> {
    let links = hub.links();
    let mut relays: HashMap<NodeId, LiveRelay> = HashMap::new();
    for (node_id, link) in &links {
        let Some(report) = &link.relay else { continue };
        if link.received_at < now - SILENT_AFTER_SECS {
            continue;
        }
        let (Some(prefix), Some(ports)) = (report.tunnel_prefix, report.ports) else {
            continue;
        };
        if store.node_flags(*node_id).await? & RELAY_FLAG == 0 {
            tracing::debug!(target: "orchestrator::relay", %node_id, "runs a relay but is not flagged as one on-chain");
            continue;
        }
        relays.insert(
            *node_id,
            LiveRelay {
                node_id: *node_id,
                report: report.clone(),
                prefix,
                ports,
            },
        );
    }
    let mut assignments: HashMap<NodeId, RelayAssignmentRecord> = store
        .relay_assignments()
        .await?
        .into_iter()
        .map(|a| (a.node_id, a))
        .collect();

    // Relays that went away lose their nodes once they stayed away for failover_secs.
    let failover_secs = i64::try_from(config.failover_secs).unwrap_or(i64::MAX);
    let mut moving = Vec::new();
    {
        let mut memory = memory.inner.lock().unwrap_or_else(|e| e.into_inner());
        let assigned_relays: BTreeSet<NodeId> =
            assignments.values().map(|a| a.relay_node_id).collect();
        memory
            .down_since
            .retain(|relay, _| assigned_relays.contains(relay) && !relays.contains_key(relay));
        for relay in assigned_relays {
            if relays.contains_key(&relay) {
                continue;
            }
            let since = *memory.down_since.entry(relay).or_insert(now);
            if now - since >= failover_secs {
                moving.extend(
                    assignments
                        .values()
                        .filter(|a| a.relay_node_id == relay)
                        .map(|a| a.node_id),
                );
            }
        }
    }
    for node_id in moving {
        let Some(old) = assignments.get(&node_id).cloned() else {
            continue;
        };
        let Some(relay) = pick_relay(&relays, &assignments, node_id, Some(old.relay_node_id))
        else {
            tracing::warn!(target: "orchestrator::relay", %node_id, relay = %old.relay_node_id, "the node's relay is gone and no other relay is online");
            continue;
        };
        let Some(record) = assign(
            store,
            &relays,
            &assignments,
            node_id,
            relay,
            &old.published,
            now,
        )
        .await?
        else {
            continue;
        };
        tracing::info!(target: "orchestrator::relay", %node_id, from = %old.relay_node_id, to = %relay, "node moved to another relay");
        enqueue_command(
            hub,
            old.relay_node_id,
            &command_id("unpublish"),
            &CommandAction::UnpublishNode {
                node_id: node_id.into(),
            },
        )
        .await?;
        assignments.insert(node_id, record);
        forget_sent(memory, node_id);
    }

    // Nodes that ask for a relay and have none.
    for (node_id, link) in &links {
        let Some(tunnel) = &link.tunnel else { continue };
        if assignments.contains_key(node_id) {
            continue;
        }
        let Some(node) = store.node(*node_id).await? else {
            continue;
        };
        // A relay checks the binding too; one that does not verify here is never sent.
        let registered = node.node_key.parse().ok();
        if let Err(e) = registered
            .ok_or_else(|| "unparsable node key".to_string())
            .and_then(|k| {
                tunnel
                    .binding
                    .verify((*node_id).into(), k)
                    .map_err(|e| e.to_string())
            })
        {
            tracing::warn!(target: "orchestrator::relay", %node_id, error = %e, "tunnel key binding refused: no relay assigned");
            continue;
        }
        let Some(relay) = pick_relay(&relays, &assignments, *node_id, None) else {
            tracing::debug!(target: "orchestrator::relay", %node_id, "a node needs a relay and none is online");
            continue;
        };
        let empty = RelayedNode {
            node_id: (*node_id).into(),
            node_key: registered.unwrap_or_default(),
            binding: tunnel.binding.clone(),
            tunnel_address: Ipv4Addr::UNSPECIFIED,
            vms: Vec::new(),
        };
        if let Some(record) =
            assign(store, &relays, &assignments, *node_id, relay, &empty, now).await?
        {
            tracing::info!(target: "orchestrator::relay", %node_id, %relay, tunnel_address = %record.tunnel_address, "relay assigned");
            assignments.insert(*node_id, record);
        }
    }

    // Every assignment on a live relay: publication current, relay and node told.
    let ids: Vec<NodeId> = assignments.keys().copied().collect();
    for node_id in ids {
        let current = assignments[&node_id].clone();
        let Some(relay) = relays.get(&current.relay_node_id) else {
            continue;
        };
        let mut published = current.published.clone();
        if let Some(tunnel) = links.get(&node_id).and_then(|l| l.tunnel.as_ref()) {
            // A node that made a new tunnel key (its data directory was reset) binds it anew;
            // a binding that does not verify is never published.
            if tunnel.binding != published.binding
                && tunnel
                    .binding
                    .verify(node_id.into(), published.node_key)
                    .is_ok()
            {
                published.binding = tunnel.binding.clone();
            }
        }
        if hub.report(node_id).is_some() {
            published.vms = desired_vms(
                store,
                hub,
                ingress,
                node_id,
                relay,
                &assignments,
                &current.published,
            )
            .await?;
        }
        let changed = published != current.published;
        if changed {
            let record = RelayAssignmentRecord {
                published: published.clone(),
                ..current.clone()
            };
            store.put_relay_assignment(&record, now).await?;
            assignments.insert(node_id, record);
        }
        let relay_has_it = relay.report.nodes.contains(&node_id.into());
        if changed || (!relay_has_it && due(memory, relay.node_id, node_id, "publish", now)) {
            enqueue_command(
                hub,
                relay.node_id,
                &command_id("publish"),
                &CommandAction::PublishNode {
                    node: published.clone(),
                },
            )
            .await?;
            mark_sent(memory, relay.node_id, node_id, "publish", now);
        }
        let tunnel_relay = links
            .get(&node_id)
            .and_then(|l| l.tunnel.as_ref())
            .and_then(|t| t.relay_node_id);
        if tunnel_relay != Some(relay.node_id.into())
            && due(memory, node_id, relay.node_id, "join", now)
        {
            enqueue_command(
                hub,
                node_id,
                &command_id("join"),
                &CommandAction::JoinRelay {
                    assignment: RelayAssignment {
                        relay_node_id: relay.node_id.into(),
                        endpoint: relay.report.endpoint.clone(),
                        relay_key: relay.report.key,
                        relay_address: relay.report.tunnel_address,
                        node_address: published.tunnel_address,
                    },
                },
            )
            .await?;
            mark_sent(memory, node_id, relay.node_id, "join", now);
        }
    }
    Ok(())
}

fn due(
    memory: &RelayMemory,
    target: NodeId,
    subject: NodeId,
    kind: &'static str,
    now: i64,
) -> bool {
    let memory = memory.inner.lock().unwrap_or_else(|e| e.into_inner());
    memory
        .sent
        .get(&(target, subject, kind))
        .is_none_or(|at| now - at >= RESEND_SECS)
}

fn mark_sent(memory: &RelayMemory, target: NodeId, subject: NodeId, kind: &'static str, now: i64) {
    let mut memory = memory.inner.lock().unwrap_or_else(|e| e.into_inner());
    memory.sent.insert((target, subject, kind), now);
}

/// A moved node is told at once, whatever was sent before.
fn forget_sent(memory: &RelayMemory, node_id: NodeId) {
    let mut memory = memory.inner.lock().unwrap_or_else(|e| e.into_inner());
    memory
        .sent
        .retain(|(target, subject, _), _| *target != node_id && *subject != node_id);
}

/// The live relay with the fewest assigned nodes (then the lowest id), never the node itself
/// nor `except`.
fn pick_relay(
    relays: &HashMap<NodeId, LiveRelay>,
    assignments: &HashMap<NodeId, RelayAssignmentRecord>,
    node_id: NodeId,
    except: Option<NodeId>,
) -> Option<NodeId> {
    relays
        .keys()
        .filter(|r| **r != node_id && Some(**r) != except)
        .min_by_key(|r| {
            (
                assignments
                    .values()
                    .filter(|a| a.relay_node_id == **r)
                    .count(),
                **r,
            )
        })
        .copied()
}

/// Assigns `node_id` to `relay_id`: a free tunnel address in its subnet and its VMs' forwards
/// at free relay ports; stored before anything is sent. `None` when the relay's subnet is full.
async fn assign(
    store: &Store,
    relays: &HashMap<NodeId, LiveRelay>,
    assignments: &HashMap<NodeId, RelayAssignmentRecord>,
    node_id: NodeId,
    relay_id: NodeId,
    before: &RelayedNode,
    now: i64,
) -> Result<Option<RelayAssignmentRecord>, StoreError> {
    let relay = &relays[&relay_id];
    let others: Vec<&RelayAssignmentRecord> = assignments
        .values()
        .filter(|a| a.relay_node_id == relay_id && a.node_id != node_id)
        .collect();
    let taken: BTreeSet<Ipv4Addr> = others.iter().map(|a| a.tunnel_address).collect();
    let Some(tunnel_address) = free_address(relay.report.tunnel_address, relay.prefix, &taken)
    else {
        tracing::warn!(target: "orchestrator::relay", relay = %relay_id, "the relay's tunnel subnet is full");
        return Ok(None);
    };
    let mut used = used_ports(&others);
    let vms = before
        .vms
        .iter()
        .map(|vm| RelayedVm {
            vm_id: vm.vm_id.clone(),
            forwards: vm
                .forwards
                .iter()
                .filter_map(|f| {
                    let port = free_port(relay.ports, f.protocol, &mut used)?;
                    Some(RelayForward {
                        relay_port: port,
                        ..*f
                    })
                })
                .collect(),
            routes: vm.routes.clone(),
        })
        .collect();
    let record = RelayAssignmentRecord {
        node_id,
        relay_node_id: relay_id,
        relay_address: relay.address(),
        tunnel_address,
        published: RelayedNode {
            tunnel_address,
            vms,
            ..before.clone()
        },
        assigned_at: now,
    };
    store.put_relay_assignment(&record, now).await?;
    Ok(Some(record))
}

/// The lowest address of the relay's subnet that is neither the network, the relay, the
/// broadcast address nor taken.
fn free_address(relay: Ipv4Addr, prefix: u8, taken: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    let prefix = u32::from(prefix.min(32));
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    let network = u32::from(relay) & mask;
    let broadcast = network | !mask;
    (network + 1..broadcast)
        .map(Ipv4Addr::from)
        .find(|a| *a != relay && !taken.contains(a))
}

fn used_ports(publications: &[&RelayAssignmentRecord]) -> BTreeSet<(PortProtocol, u16)> {
    publications
        .iter()
        .flat_map(|a| &a.published.vms)
        .flat_map(|vm| &vm.forwards)
        .map(|f| (f.protocol, f.relay_port))
        .collect()
}

fn free_port(
    range: RelayPorts,
    protocol: PortProtocol,
    used: &mut BTreeSet<(PortProtocol, u16)>,
) -> Option<u16> {
    let port = (range.first..=range.last).find(|p| !used.contains(&(protocol, *p)))?;
    used.insert((protocol, port));
    Some(port)
}

/// What the relay should publish for the node's VMs now: each VM of this node that the node
/// reports, its forwards at relay ports (a forward keeps its relay port while it stays) and
/// its HTTPS names routed to the node's forward of the named port.
async fn desired_vms(
    store: &Store,
    hub: &AgentHub,
    ingress: Option<&IngressConfig>,
    node_id: NodeId,
    relay: &LiveRelay,
    assignments: &HashMap<NodeId, RelayAssignmentRecord>,
    before: &RelayedNode,
) -> Result<Vec<RelayedVm>, StoreError> {
    let Some(report) = hub.report(node_id) else {
        return Ok(before.vms.clone());
    };
    let others: Vec<&RelayAssignmentRecord> = assignments
        .values()
        .filter(|a| a.relay_node_id == relay.node_id && a.node_id != node_id)
        .collect();
    let mut used = used_ports(&others);
    // Forwards that stay keep their port: reserve them first.
    let kept: HashMap<(String, PortProtocol, u16), u16> = before
        .vms
        .iter()
        .flat_map(|vm| {
            vm.forwards
                .iter()
                .map(|f| ((vm.vm_id.clone(), f.protocol, f.node_port), f.relay_port))
        })
        .filter(|(_, port)| (relay.ports.first..=relay.ports.last).contains(port))
        .collect();
    let mut vms = Vec::new();
    let mut reported: Vec<(VmId, Vec<PortForward>)> = Vec::new();
    for (vm_id, vm) in reported_vms(&report.vms) {
        // A node speaks only for its own VMs: a name of another node's VM is never routed here.
        match store.vm(vm_id).await? {
            Some(record) if record.node_id == node_id => {}
            _ => continue,
        }
        reported.push((vm_id, vm.forwards.clone()));
    }
    reported.sort_by_key(|(id, _)| id.to_string());
    for (vm_id, forwards) in &reported {
        for f in forwards {
            if let Some(port) = kept.get(&(vm_id.to_string(), f.protocol, f.public)) {
                used.insert((f.protocol, *port));
            }
        }
    }
    for (vm_id, forwards) in reported {
        let id = vm_id.to_string();
        let mut relayed = RelayedVm {
            vm_id: id.clone(),
            forwards: Vec::new(),
            routes: Vec::new(),
        };
        for f in &forwards {
            let port = match kept.get(&(id.clone(), f.protocol, f.public)) {
                Some(port) => Some(*port),
                None => free_port(relay.ports, f.protocol, &mut used),
            };
            match port {
                Some(relay_port) => relayed.forwards.push(RelayForward {
                    protocol: f.protocol,
                    relay_port,
                    node_port: f.public,
                }),
                None => {
                    tracing::warn!(target: "orchestrator::relay", relay = %relay.node_id, vm = %id, "the relay has no free port left")
                }
            }
        }
        if let Some(config) = ingress {
            for name in store.vm_ingress(vm_id).await? {
                // The relay's Caddy reaches the guest through the node's forward of the port.
                if let Some(f) = forwards
                    .iter()
                    .find(|f| f.guest == name.guest && f.protocol == PortProtocol::Tcp)
                {
                    relayed.routes.push(RelayRoute {
                        host: crate::ingress::host(&name.name, config),
                        node_port: f.public,
                    });
                }
            }
        }
        relayed
            .forwards
            .sort_by_key(|f| (f.relay_port, f.node_port));
        relayed.routes.sort();
        if !relayed.forwards.is_empty() || !relayed.routes.is_empty() {
            vms.push(relayed);
        }
    }
    Ok(vms)
}

/// How a VM of `node_id` is reached through its relay, given what its node reports
/// (`forwards`: the node's own ports); `None` when the node is not relayed.
pub async fn endpoint(
    store: &Store,
    node_id: NodeId,
    vm_id: VmId,
    forwards: &[PortForward],
) -> Result<Option<RelayEndpoint>, StoreError> {
    let Some(assignment) = store.relay_assignment(node_id).await? else {
        return Ok(None);
    };
    let id = vm_id.to_string();
    let published = assignment
        .published
        .vms
        .iter()
        .find(|vm| vm.vm_id == id)
        .map(|vm| vm.forwards.as_slice())
        .unwrap_or_default();
    let forwards = forwards
        .iter()
        .filter_map(|f| {
            published
                .iter()
                .find(|p| p.protocol == f.protocol && p.node_port == f.public)
                .map(|p| PortForward {
                    guest: f.guest,
                    public: p.relay_port,
                    protocol: f.protocol,
                })
        })
        .collect();
    Ok(Some(RelayEndpoint {
        relay_node_id: assignment.relay_node_id.to_string(),
        address: assignment.relay_address,
        forwards,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunnel_addresses_skip_the_network_the_relay_and_the_broadcast() {
        let relay: Ipv4Addr = "10.98.0.1".parse().unwrap();
        let mut taken = BTreeSet::new();
        assert_eq!(
            free_address(relay, 24, &taken),
            Some("10.98.0.2".parse().unwrap())
        );
        taken.insert("10.98.0.2".parse().unwrap());
        assert_eq!(
            free_address(relay, 24, &taken),
            Some("10.98.0.3".parse().unwrap())
        );
        // A /30 holds the relay and one node.
        let full: BTreeSet<Ipv4Addr> = ["10.98.0.2".parse().unwrap()].into();
        assert_eq!(free_address(relay, 30, &full), None);
    }

    #[test]
    fn relay_ports_are_the_lowest_free_per_protocol() {
        let range = RelayPorts {
            first: 20000,
            last: 20001,
        };
        let mut used = BTreeSet::from([(PortProtocol::Tcp, 20000)]);
        assert_eq!(free_port(range, PortProtocol::Tcp, &mut used), Some(20001));
        assert_eq!(free_port(range, PortProtocol::Tcp, &mut used), None);
        assert_eq!(free_port(range, PortProtocol::Udp, &mut used), Some(20000));
    }

    #[test]
    fn the_relay_address_is_the_host_of_its_endpoint() {
        assert_eq!(host_of("203.0.113.7:51820"), "203.0.113.7");
        assert_eq!(host_of("relay.example.org:51820"), "relay.example.org");
        assert_eq!(host_of("[2001:db8::1]:51820"), "2001:db8::1");
    }
}

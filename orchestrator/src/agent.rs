//! The agent hub: the services' side of the node agent link. Commands are queued in the store
//! first, then the connection of the node they are for is woken to deliver them; the WebSocket
//! that connections run over is the HTTP layer's ([`crate::api`] serves it). The hub has its
//! own state (the store, the metrics, the resend interval and one waker per node), so the
//! lifecycle can queue commands without knowing about HTTP.
//!
//! The hub also holds what each connected node last said it runs (the VMs of its latest
//! heartbeat) and which nodes reported since the reconciler last looked, so the lifecycle can
//! compare desired and actual state ([`crate::reconcile`]). One live session per node: a new
//! authenticated session replaces the one before it ([`AgentHub::open_session`]).

use crate::{
    clock::now,
    console::ConsoleRelay,
    metrics::Metrics,
    store::{Store, StoreError},
};
use decloud_sdk::{
    NodeId, VmId,
    agent_protocol::{CommandAction, VmReport},
};
use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex},
};
use tokio::sync::Notify;

/// Errors of queueing a command.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The node does not exist.
    #[error("node {0} is not registered")]
    UnknownNode(NodeId),
}

/// The node agent link's state: where commands are queued and how the connection of a node is
/// woken to deliver them. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AgentHub {
    inner: Arc<HubInner>,
}

#[derive(Debug)]
struct HubInner {
    store: Store,
    metrics: Arc<Metrics>,
    resend_secs: i64,
    wakers: Mutex<HashMap<NodeId, Arc<Notify>>>,
    consoles: ConsoleRelay,
    sessions: Mutex<Sessions>,
    /// Notified when a node reported (a heartbeat) or its session ended.
    reported: Arc<Notify>,
}

/// The live session of each node and what it last reported.
#[derive(Debug, Default)]
struct Sessions {
    next_id: u64,
    live: HashMap<NodeId, LiveSession>,
    /// Nodes whose report changed since [`AgentHub::take_reported`] last ran.
    dirty: BTreeSet<NodeId>,
}

#[derive(Debug)]
struct LiveSession {
    id: u64,
    /// Notified when a newer session of the same node replaces this one.
    replaced: Arc<Notify>,
    /// The session's latest heartbeat; `None` until its first.
    report: Option<NodeReport>,
    /// The relay and tunnel parts of the session's latest heartbeat; `None` until its first.
    links: Option<LinkReport>,
}

/// What a node said about relays in a heartbeat: its relay role's report and its tunnel's.
#[derive(Clone, Debug)]
pub struct LinkReport {
    /// The relay role's report (a relay's heartbeat).
    pub relay: Option<decloud_sdk::relay::RelayReport>,
    /// The tunnel's report (a node behind NAT, or relayed now).
    pub tunnel: Option<decloud_sdk::relay::TunnelReport>,
    /// When the heartbeat arrived, unix seconds (server clock).
    pub received_at: i64,
}

/// What a node said it runs in a heartbeat.
#[derive(Clone, Debug)]
pub struct NodeReport {
    /// Every VM the agent has (those it is deleting left out).
    pub vms: Vec<VmReport>,
    /// When the heartbeat arrived, unix seconds (server clock).
    pub received_at: i64,
}

impl NodeReport {
    /// The report of one VM, if the node has it.
    pub fn vm(&self, vm_id: VmId) -> Option<&VmReport> {
        reported_vms(&self.vms).find_map(|(id, report)| (id == vm_id).then_some(report))
    }
}

/// The VMs of a node's report whose ids are VM ids of this orchestrator (`vm-<lease id>`),
/// with their ids parsed. A node may run VMs of its own beside them (an operator's, or a
/// test's); those are none of the orchestrator's business and are skipped.
pub fn reported_vms(vms: &[VmReport]) -> impl Iterator<Item = (VmId, &VmReport)> {
    vms.iter()
        .filter_map(|vm| vm.id.parse::<VmId>().ok().map(|id| (id, vm)))
}

/// A node's authenticated session, as the hub knows it: [`AgentHub::close_session`] ends it.
#[derive(Debug)]
pub struct SessionTicket {
    /// The node.
    pub node_id: NodeId,
    /// Unique within this process.
    pub id: u64,
    /// Notified when a newer session of the same node replaced this one: the connection must end.
    pub replaced: Arc<Notify>,
}

impl AgentHub {
    /// A hub over `store`, recording connections and heartbeats in `metrics`, sending an
    /// unacknowledged command again after `resend_secs`.
    pub fn new(store: Store, metrics: Arc<Metrics>, resend_secs: i64) -> Self {
        Self {
            inner: Arc::new(HubInner {
                store,
                metrics,
                resend_secs,
                wakers: Mutex::new(HashMap::new()),
                consoles: ConsoleRelay::default(),
                sessions: Mutex::new(Sessions::default()),
                reported: Arc::new(Notify::new()),
            }),
        }
    }

    /// The store commands are queued in.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The metrics connections report to.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Routes VM consoles between tenants and the agents' connections.
    pub fn consoles(&self) -> &ConsoleRelay {
        &self.inner.consoles
    }

    /// Seconds after which an unacknowledged command is sent again.
    pub fn resend_secs(&self) -> i64 {
        self.inner.resend_secs
    }

    /// What the connection of `node_id` waits on for commands to deliver.
    pub fn waker(&self, node_id: NodeId) -> Arc<Notify> {
        let mut wakers = self.inner.wakers.lock().unwrap_or_else(|e| e.into_inner());
        wakers.entry(node_id).or_default().clone()
    }

    /// Wakes the connection of `node_id`, if any, to deliver what is due.
    pub fn wake(&self, node_id: NodeId) {
        // notify_one keeps a permit when nobody waits, so a command queued between two
        // deliveries is not missed.
        self.waker(node_id).notify_one();
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.inner
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a node's new authenticated session. One live session per node: an older one is
    /// told (through its ticket's `replaced`) to end, so a reconnecting agent is never locked out
    /// by a half-open connection the server has not noticed is dead yet.
    pub fn open_session(&self, node_id: NodeId) -> SessionTicket {
        let mut sessions = self.sessions();
        sessions.next_id += 1;
        let id = sessions.next_id;
        let replaced = Arc::new(Notify::new());
        let previous = sessions.live.insert(
            node_id,
            LiveSession {
                id,
                replaced: replaced.clone(),
                report: None,
                links: None,
            },
        );
        if let Some(previous) = previous {
            tracing::warn!(target: "orchestrator::agent", %node_id, "a new session replaces the node's live one");
            // notify_one keeps the permit should the old session not be waiting right now.
            previous.replaced.notify_one();
        }
        SessionTicket {
            node_id,
            id,
            replaced,
        }
    }

    /// Ends a session; the node counts as disconnected unless a newer session replaced it.
    pub fn close_session(&self, ticket: &SessionTicket) {
        let mut sessions = self.sessions();
        if sessions
            .live
            .get(&ticket.node_id)
            .is_some_and(|s| s.id == ticket.id)
        {
            sessions.live.remove(&ticket.node_id);
            sessions.dirty.insert(ticket.node_id);
            drop(sessions);
            self.inner.reported.notify_one();
        }
    }

    /// Whether `ticket` is still the node's live session.
    pub fn is_live(&self, ticket: &SessionTicket) -> bool {
        self.sessions()
            .live
            .get(&ticket.node_id)
            .is_some_and(|s| s.id == ticket.id)
    }

    /// Records the VMs a node's heartbeat reported (ignored from a replaced session) and wakes
    /// whoever waits on [`AgentHub::reported`].
    pub fn record_report(&self, ticket: &SessionTicket, vms: Vec<VmReport>, received_at: i64) {
        let mut sessions = self.sessions();
        let Some(live) = sessions
            .live
            .get_mut(&ticket.node_id)
            .filter(|s| s.id == ticket.id)
        else {
            return;
        };
        live.report = Some(NodeReport { vms, received_at });
        sessions.dirty.insert(ticket.node_id);
        drop(sessions);
        self.inner.reported.notify_one();
    }

    /// Records the relay and tunnel reports of a node's heartbeat (ignored from a replaced
    /// session).
    pub fn record_links(&self, ticket: &SessionTicket, links: LinkReport) {
        let mut sessions = self.sessions();
        if let Some(live) = sessions
            .live
            .get_mut(&ticket.node_id)
            .filter(|s| s.id == ticket.id)
        {
            live.links = Some(links);
        }
    }

    /// The relay and tunnel reports of every node with a live session that reported them.
    pub fn links(&self) -> HashMap<NodeId, LinkReport> {
        self.sessions()
            .live
            .iter()
            .filter_map(|(n, s)| s.links.clone().map(|l| (*n, l)))
            .collect()
    }

    /// What a node's agent runs, as its latest heartbeat in its live session said: `None` while
    /// the node has no live session or has not reported in it yet (it is not reachable).
    pub fn report(&self, node_id: NodeId) -> Option<NodeReport> {
        self.sessions()
            .live
            .get(&node_id)
            .and_then(|s| s.report.clone())
    }

    /// Nodes with a live session that reported at least once.
    pub fn reporting_nodes(&self) -> Vec<NodeId> {
        let sessions = self.sessions();
        let mut nodes: Vec<NodeId> = sessions
            .live
            .iter()
            .filter(|(_, s)| s.report.is_some())
            .map(|(n, _)| *n)
            .collect();
        nodes.sort();
        nodes
    }

    /// The nodes that reported (or disconnected) since the last call, and clears the set.
    pub fn take_reported(&self) -> Vec<NodeId> {
        std::mem::take(&mut self.sessions().dirty)
            .into_iter()
            .collect()
    }

    /// Notified whenever a node reports or disconnects.
    pub fn reported(&self) -> Arc<Notify> {
        self.inner.reported.clone()
    }
}

/// Queues a command for a node and wakes its connection. Returns `false` when a command with
/// this id was already queued (nothing changes then).
pub async fn enqueue_command(
    hub: &AgentHub,
    node_id: NodeId,
    command_id: &str,
    action: &CommandAction,
) -> Result<bool, AgentError> {
    if hub.store().node(node_id).await?.is_none() {
        return Err(AgentError::UnknownNode(node_id));
    }
    let json = serde_json::to_string(action).expect("command actions always serialize");
    let new = hub
        .store()
        .enqueue_command(command_id, node_id, &json, now())
        .await?;
    hub.wake(node_id);
    Ok(new)
}

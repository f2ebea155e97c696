//! The agent hub: the services' side of the node agent link. Commands are queued in the store
//! first, then the connection of the node they are for is woken to deliver them; the WebSocket
//! that connections run over is the HTTP layer's ([`crate::api`] serves it). The hub has its
//! own state (the store, the metrics, the resend interval and one waker per node), so the
//! lifecycle can queue commands without knowing about HTTP.

use crate::{
    clock::now,
    console::ConsoleRelay,
    metrics::Metrics,
    store::{Store, StoreError},
};
use decloud_sdk::agent_protocol::CommandAction;
use std::{
    collections::HashMap,
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
    UnknownNode(String),
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
    wakers: Mutex<HashMap<String, Arc<Notify>>>,
    consoles: ConsoleRelay,
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
    pub fn waker(&self, node_id: &str) -> Arc<Notify> {
        let mut wakers = self.inner.wakers.lock().unwrap_or_else(|e| e.into_inner());
        wakers.entry(node_id.to_string()).or_default().clone()
    }

    /// Wakes the connection of `node_id`, if any, to deliver what is due.
    pub fn wake(&self, node_id: &str) {
        // notify_one keeps a permit when nobody waits, so a command queued between two
        // deliveries is not missed.
        self.waker(node_id).notify_one();
    }
}

/// Queues a command for a node and wakes its connection. Returns `false` when a command with
/// this id was already queued (nothing changes then).
pub async fn enqueue_command(
    hub: &AgentHub,
    node_id: &str,
    command_id: &str,
    action: &CommandAction,
) -> Result<bool, AgentError> {
    let node_id = node_id.to_lowercase();
    if hub.store().node(&node_id).await?.is_none() {
        return Err(AgentError::UnknownNode(node_id));
    }
    let json = serde_json::to_string(action).expect("command actions always serialize");
    let new = hub
        .store()
        .enqueue_command(command_id, &node_id, &json, now())
        .await?;
    hub.wake(&node_id);
    Ok(new)
}

//! The console relay: joins a tenant's console WebSocket ([`crate::api`] serves it) to a console
//! session on the node agent's link (`decloud_sdk::agent_protocol`, section "Console").
//!
//! Each connected agent registers its connection's outgoing console queue here
//! ([`ConsoleRelay::attach_link`]); a tenant's session ([`ConsoleRelay::open`]) sends
//! `console_open`, its input and finally `console_close` through that queue, and the agent
//! connection hands the agent's `console_output` and `console_closed` frames to the session
//! ([`ConsoleRelay::output`], [`ConsoleRelay::closed`]).
//!
//! Nothing waits on a tenant: every queue is bounded and filled with `try_send`. A session
//! whose tenant does not read its output fast enough is dropped (the agent is told to close
//! it), so a slow or vanished tenant never holds up the agent's connection, its heartbeats or
//! another tenant's console.
//!
//! The relay lives in one process: a console works when the tenant's WebSocket reaches the
//! replica that holds the node agent's connection.

use decloud_sdk::{
    NodeId, VmId,
    agent_protocol::{CONSOLE_CHUNK_BYTES, ServerMessage},
};
use rand::Rng;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};
use tokio::sync::mpsc;

/// Console frames waiting to go out on one agent connection.
pub const LINK_QUEUE: usize = 256;
/// Output chunks waiting for one tenant; more and the session is dropped.
pub const TENANT_QUEUE: usize = 256;

/// Why a console session cannot start, or cannot take more input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsoleError {
    /// The node's agent is not connected to this orchestrator.
    #[error(
        "node {0} has no agent connected to this orchestrator; its VMs' consoles are unreachable"
    )]
    NodeOffline(NodeId),
    /// The agent's connection does not take console frames as fast as they come.
    #[error("the link to node {0} is saturated; try again")]
    LinkBusy(NodeId),
}

/// What the agent sent for a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleEvent {
    /// Bytes the guest printed.
    Output(Vec<u8>),
    /// The session ended on the agent, with the agent's reason.
    Closed(String),
}

/// Routes console frames between tenants' sessions and agents' connections. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct ConsoleRelay {
    inner: Arc<RelayInner>,
}

#[derive(Debug, Default)]
struct RelayInner {
    /// Per node: the current connection's console queue and a number naming that connection.
    links: Mutex<HashMap<NodeId, (u64, mpsc::Sender<ServerMessage>)>>,
    /// Per session id: its node and the tenant's event queue.
    sessions: Mutex<HashMap<String, Route>>,
    next_link: std::sync::atomic::AtomicU64,
}

#[derive(Debug)]
struct Route {
    node_id: NodeId,
    /// The connection the session runs over.
    link: u64,
    tenant: mpsc::Sender<ConsoleEvent>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ConsoleRelay {
    /// Registers the console queue of a freshly authenticated connection of `node_id`
    /// (replacing an older connection's). The connection sends what the receiver yields; the
    /// guard unregisters it, and ends the node's sessions, when the connection ends.
    pub fn attach_link(&self, node_id: NodeId) -> (LinkGuard, mpsc::Receiver<ServerMessage>) {
        let (tx, rx) = mpsc::channel(LINK_QUEUE);
        let link = self
            .inner
            .next_link
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        lock(&self.inner.links).insert(node_id, (link, tx));
        (
            LinkGuard {
                relay: self.clone(),
                node_id,
                link,
            },
            rx,
        )
    }

    /// Whether an agent connection of `node_id` is registered here.
    pub fn is_linked(&self, node_id: NodeId) -> bool {
        lock(&self.inner.links).contains_key(&node_id)
    }

    fn link(&self, node_id: NodeId) -> Option<(u64, mpsc::Sender<ServerMessage>)> {
        lock(&self.inner.links).get(&node_id).cloned()
    }

    /// Opens a console session on `vm_id` of `node_id`.
    pub fn open(&self, node_id: NodeId, vm_id: VmId) -> Result<ConsoleSession, ConsoleError> {
        let (link_id, link) = self
            .link(node_id)
            .ok_or(ConsoleError::NodeOffline(node_id))?;
        let id = hex::encode(rand::rng().random::<[u8; 16]>());
        let (tenant, events) = mpsc::channel(TENANT_QUEUE);
        lock(&self.inner.sessions).insert(
            id.clone(),
            Route {
                node_id,
                link: link_id,
                tenant,
            },
        );
        let session = ConsoleSession {
            relay: self.clone(),
            id: id.clone(),
            node_id,
            link,
            events,
        };
        session.push(ServerMessage::ConsoleOpen {
            session: id,
            vm_id: vm_id.to_string(),
        })?;
        Ok(session)
    }

    /// Output the agent of `node_id` sent for `session`. A tenant who does not keep up loses
    /// the session: the route goes (the tenant sees its queue end) and the agent is told to
    /// close it.
    pub fn output(&self, node_id: NodeId, session: &str, data: Vec<u8>) {
        let mut sessions = lock(&self.inner.sessions);
        let Some(route) = sessions.get(session).filter(|r| r.node_id == node_id) else {
            return;
        };
        if let Err(mpsc::error::TrySendError::Full(_) | mpsc::error::TrySendError::Closed(_)) =
            route.tenant.try_send(ConsoleEvent::Output(data))
        {
            sessions.remove(session);
            drop(sessions);
            tracing::info!(target: "orchestrator::console", %node_id, %session, "tenant does not keep up, dropping the console session");
            if let Some((_, link)) = self.link(node_id) {
                let _ = link.try_send(ServerMessage::ConsoleClose {
                    session: session.to_string(),
                });
            }
        }
    }

    /// The agent of `node_id` ended `session`.
    pub fn closed(&self, node_id: NodeId, session: &str, reason: String) {
        let mut sessions = lock(&self.inner.sessions);
        if sessions.get(session).is_some_and(|r| r.node_id == node_id)
            && let Some(route) = sessions.remove(session)
        {
            let _ = route.tenant.try_send(ConsoleEvent::Closed(reason));
        }
    }

    /// Number of open sessions (for tests and metrics).
    pub fn sessions(&self) -> usize {
        lock(&self.inner.sessions).len()
    }
}

/// Keeps a connection's console queue registered; dropping it unregisters the queue (unless a
/// newer connection of the node replaced it) and ends the sessions that ran over it.
#[derive(Debug)]
pub struct LinkGuard {
    relay: ConsoleRelay,
    node_id: NodeId,
    link: u64,
}

impl Drop for LinkGuard {
    fn drop(&mut self) {
        let mut links = lock(&self.relay.inner.links);
        if links
            .get(&self.node_id)
            .is_some_and(|(l, _)| *l == self.link)
        {
            links.remove(&self.node_id);
        }
        drop(links);
        // The agent drops its sessions with the connection; tell their tenants.
        let mut sessions = lock(&self.relay.inner.sessions);
        let gone: Vec<String> = sessions
            .iter()
            .filter(|(_, r)| r.node_id == self.node_id && r.link == self.link)
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            if let Some(route) = sessions.remove(&id) {
                let _ = route.tenant.try_send(ConsoleEvent::Closed(
                    "the node agent disconnected from the orchestrator".into(),
                ));
            }
        }
    }
}

/// A tenant's console session. Dropping it closes the session on the agent.
#[derive(Debug)]
pub struct ConsoleSession {
    relay: ConsoleRelay,
    id: String,
    node_id: NodeId,
    link: mpsc::Sender<ServerMessage>,
    events: mpsc::Receiver<ConsoleEvent>,
}

impl ConsoleSession {
    /// The session id on the agent link.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn push(&self, frame: ServerMessage) -> Result<(), ConsoleError> {
        self.link.try_send(frame).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ConsoleError::LinkBusy(self.node_id),
            mpsc::error::TrySendError::Closed(_) => ConsoleError::NodeOffline(self.node_id),
        })
    }

    /// Sends the tenant's bytes to the guest, in frames of at most [`CONSOLE_CHUNK_BYTES`].
    pub fn input(&self, data: &[u8]) -> Result<(), ConsoleError> {
        for chunk in data.chunks(CONSOLE_CHUNK_BYTES) {
            self.push(ServerMessage::ConsoleInput {
                session: self.id.clone(),
                data: chunk.to_vec().into(),
            })?;
        }
        Ok(())
    }

    /// The next event; `None` when the relay dropped the session because its output was not
    /// read fast enough.
    pub async fn next(&mut self) -> Option<ConsoleEvent> {
        self.events.recv().await
    }
}

impl Drop for ConsoleSession {
    fn drop(&mut self) {
        let open = lock(&self.relay.inner.sessions).remove(&self.id).is_some();
        // A session the agent already ended needs no close.
        if open {
            let _ = self.link.try_send(ServerMessage::ConsoleClose {
                session: self.id.clone(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(byte: u8) -> NodeId {
        alloy::primitives::B256::with_last_byte(byte).into()
    }

    #[tokio::test]
    async fn sessions_route_both_ways_and_close_once() {
        let relay = ConsoleRelay::default();
        assert_eq!(
            relay.open(n(1), "vm-1".parse().unwrap()).unwrap_err(),
            ConsoleError::NodeOffline(n(1))
        );
        let (guard, mut link) = relay.attach_link(n(1));
        let mut session = relay.open(n(1), "vm-1".parse().unwrap()).unwrap();
        let id = session.id().to_string();
        assert_eq!(
            link.recv().await,
            Some(ServerMessage::ConsoleOpen {
                session: id.clone(),
                vm_id: "vm-1".into()
            })
        );
        let big = vec![7u8; CONSOLE_CHUNK_BYTES + 1];
        session.input(&big).unwrap();
        for len in [CONSOLE_CHUNK_BYTES, 1] {
            match link.recv().await {
                Some(ServerMessage::ConsoleInput { data, .. }) => assert_eq!(data.len(), len),
                other => panic!("{other:?}"),
            }
        }
        // Output of another node for this session id is not routed.
        relay.output(n(2), &id, b"spoofed".to_vec());
        relay.output(n(1), &id, b"hi".to_vec());
        assert_eq!(
            session.next().await,
            Some(ConsoleEvent::Output(b"hi".to_vec()))
        );
        relay.closed(n(1), &id, "vm stopped".into());
        assert_eq!(
            session.next().await,
            Some(ConsoleEvent::Closed("vm stopped".into()))
        );
        drop(session);
        assert!(
            link.try_recv().is_err(),
            "no close for a session the agent ended"
        );
        assert_eq!(relay.sessions(), 0);

        // A tenant leaving closes the session on the agent.
        let session = relay.open(n(1), "vm-1".parse().unwrap()).unwrap();
        let id = session.id().to_string();
        let _open = link.recv().await;
        drop(session);
        assert_eq!(
            link.recv().await,
            Some(ServerMessage::ConsoleClose { session: id })
        );
        drop(guard);
        assert!(!relay.is_linked(n(1)));
    }

    #[tokio::test]
    async fn a_tenant_that_does_not_read_loses_its_session_and_the_link_goes_on() {
        let relay = ConsoleRelay::default();
        let (_guard, mut link) = relay.attach_link(n(1));
        let mut slow = relay.open(n(1), "vm-1".parse().unwrap()).unwrap();
        let slow_id = slow.id().to_string();
        let mut other = relay.open(n(1), "vm-2".parse().unwrap()).unwrap();
        let other_id = other.id().to_string();
        for _ in 0..=TENANT_QUEUE {
            relay.output(n(1), &slow_id, vec![b'x']);
        }
        relay.output(n(1), &other_id, b"fine".to_vec());
        // The agent is told to close the slow session; the other one still flows.
        let mut frames = Vec::new();
        while let Ok(frame) = link.try_recv() {
            frames.push(frame);
        }
        assert!(
            frames.contains(&ServerMessage::ConsoleClose {
                session: slow_id.clone()
            }),
            "{frames:?}"
        );
        assert_eq!(
            other.next().await,
            Some(ConsoleEvent::Output(b"fine".to_vec()))
        );
        let mut drained = 0;
        while let Some(event) = slow.next().await {
            assert_eq!(event, ConsoleEvent::Output(vec![b'x']));
            drained += 1;
        }
        assert_eq!(
            drained, TENANT_QUEUE,
            "what was queued is delivered, then the end"
        );
    }

    #[tokio::test]
    async fn a_lost_link_ends_its_sessions_but_not_a_newer_links() {
        let relay = ConsoleRelay::default();
        let (old_guard, _old_link) = relay.attach_link(n(1));
        let mut session = relay.open(n(1), "vm-1".parse().unwrap()).unwrap();
        let (_new_guard, _new_link) = relay.attach_link(n(1));
        let newer = relay.open(n(1), "vm-2".parse().unwrap()).unwrap();
        drop(old_guard);
        assert!(
            relay.is_linked(n(1)),
            "the newer connection stays registered"
        );
        assert!(
            matches!(session.next().await, Some(ConsoleEvent::Closed(r)) if r.contains("disconnected"))
        );
        assert_eq!(
            relay.sessions(),
            1,
            "the session on the newer connection lives on"
        );
        drop(newer);
        assert_eq!(relay.sessions(), 0);
    }
}

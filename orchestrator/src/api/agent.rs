//! The WebSocket of the node agent protocol (`decloud_sdk::agent_protocol`): the server half.
//!
//! The agent opens a WebSocket to `/api/v1/agent/ws` (so nodes behind CGNAT work), says
//! `hello`, signs a fresh challenge with its node key, and is welcomed only if that key is the
//! one registered on-chain for its node id. Afterwards:
//! - each heartbeat is booked in the store (reputation) at the server's receive time, and the
//!   compute points the agent measured are kept on the node, as is a storage node's report;
//! - commands are queued in the store first, then delivered: at once when queued, all
//!   unacknowledged ones on every (re)connect, and again every `agent_resend_secs` (30 s by
//!   default) until acknowledged. The command id is the idempotency key: the agent never executes an id
//!   twice, and the first acknowledgement of an id is the one kept;
//! - the VMs each heartbeat reports are handed to the hub, where the reconciler compares them
//!   with what the chain says should run ([`crate::reconcile`]).
//!
//! One live session per node: a new authenticated session of a node replaces its older one,
//! which is told `rejected` ("replaced by a newer session") and closed. A reconnecting agent
//! is thus never refused because the server has not yet noticed its previous connection died;
//! two agents running with the same node key take turns, and each turn is logged.

use crate::{
    agent::{AgentHub, SessionTicket},
    clock::now,
    lifecycle,
    store::{AckRecorded, NodeStatus},
};
use alloy::primitives::B256;
use axum::{
    extract::{
        State,
        ws::{Message, WebSocket, WebSocketUpgrade},
    },
    response::Response,
};
use decloud_sdk::NodeId;
use decloud_sdk::agent_protocol::{
    self as proto, AgentMessage, Challenge, CommandAction, HEARTBEAT_INTERVAL_SECS, Heartbeat,
    PROTOCOL_VERSION, ServerMessage, Welcome,
};
use rand::Rng;
use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

/// How long a challenge may be answered.
const CHALLENGE_TTL_SECS: u64 = 30;
/// How long the agent has for each handshake step.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a connection looks for commands due again (at most), and for a silent agent.
const RETRY_TICK: Duration = Duration::from_secs(5);
/// How often an idle connection looks for commands queued by another orchestrator replica.
const IDLE_POLL: Duration = Duration::from_secs(60);
/// A connection without any frame for this long is closed (the node is offline by then).
const SILENCE_LIMIT: Duration = Duration::from_secs(120);
/// Largest frame an agent may send.
const MAX_FRAME: usize = 1 << 20;

/// `GET /api/v1/agent/ws`: upgrades to the agent protocol.
pub(super) async fn ws_handler(State(hub): State<AgentHub>, ws: WebSocketUpgrade) -> Response {
    ws.max_message_size(MAX_FRAME)
        .on_upgrade(move |socket| serve(hub, socket))
}

async fn send(socket: &mut WebSocket, msg: &ServerMessage) -> Result<(), String> {
    socket
        .send(Message::Text(msg.to_json().into()))
        .await
        .map_err(|e| e.to_string())
}

async fn reject(socket: &mut WebSocket, reason: String) {
    tracing::info!(target: "orchestrator::agent", %reason, "agent rejected");
    let _ = send(socket, &ServerMessage::Rejected { reason }).await;
    let _ = socket.send(Message::Close(None)).await;
}

async fn recv(socket: &mut WebSocket) -> Result<AgentMessage, String> {
    loop {
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, socket.recv()).await {
            Err(_) => return Err("timed out waiting for the agent".into()),
            Ok(None) | Ok(Some(Ok(Message::Close(_)))) => return Err("connection closed".into()),
            Ok(Some(Err(e))) => return Err(e.to_string()),
            Ok(Some(Ok(Message::Text(t)))) => {
                return AgentMessage::from_json(t.as_str())
                    .map_err(|e| format!("malformed frame: {e}"));
            }
            Ok(Some(Ok(Message::Binary(_)))) => {
                return Err("binary frames are not part of the protocol".into());
            }
            Ok(Some(Ok(_))) => continue,
        }
    }
}

async fn serve(hub: AgentHub, mut socket: WebSocket) {
    match handshake(&hub, &mut socket).await {
        Ok(node_id) => {
            tracing::info!(target: "orchestrator::agent", %node_id, "agent connected");
            hub.metrics().agent_connected(1);
            let ticket = hub.open_session(node_id);
            let result = session(&hub, &mut socket, &ticket).await;
            hub.close_session(&ticket);
            hub.metrics().agent_connected(-1);
            match result {
                Ok(()) => {
                    tracing::info!(target: "orchestrator::agent", %node_id, "agent disconnected")
                }
                Err(reason) => {
                    tracing::warn!(target: "orchestrator::agent", %node_id, %reason, "agent session ended");
                    reject(&mut socket, reason).await;
                }
            }
        }
        Err(reason) => reject(&mut socket, reason).await,
    }
}

/// Hello → challenge → auth → welcome. Returns the node id (lowercase hex).
async fn handshake(hub: &AgentHub, socket: &mut WebSocket) -> Result<NodeId, String> {
    let AgentMessage::Hello(hello) = recv(socket).await? else {
        return Err("expected hello".into());
    };
    if hello.protocol_version != PROTOCOL_VERSION {
        return Err(format!(
            "unsupported protocol version {}, this server speaks {PROTOCOL_VERSION}",
            hello.protocol_version
        ));
    }
    let challenge = Challenge {
        nonce: B256::from(rand::rng().random::<[u8; 32]>()),
        expires_at: now() as u64 + CHALLENGE_TTL_SECS,
    };
    send(socket, &ServerMessage::Challenge(challenge.clone())).await?;
    let AgentMessage::Auth(auth) = recv(socket).await? else {
        return Err("expected auth".into());
    };
    let signer =
        proto::verify_auth(&hello, &challenge, &auth, now() as u64).map_err(|e| e.to_string())?;
    let node_id = NodeId::from(hello.node_id);
    let node = hub
        .store()
        .node(node_id)
        .await
        .map_err(|e| {
            tracing::error!(target: "orchestrator::agent", error = %e, "node lookup failed");
            "internal error".to_string()
        })?
        .ok_or_else(|| format!("node {node_id} is not registered"))?;
    if node.status == NodeStatus::Retired {
        return Err(format!("node {node_id} is retired"));
    }
    if !node.node_key.eq_ignore_ascii_case(&format!("{signer:#x}")) {
        return Err(format!(
            "{signer:#x} is not the node key registered for node {node_id}"
        ));
    }
    send(
        socket,
        &ServerMessage::Welcome(Welcome {
            heartbeat_interval_secs: HEARTBEAT_INTERVAL_SECS,
        }),
    )
    .await?;
    Ok(node_id)
}

/// Sends every unacknowledged command of the node last sent at or before `sent_before`.
async fn deliver(
    hub: &AgentHub,
    socket: &mut WebSocket,
    node_id: NodeId,
    sent_before: i64,
    awaiting: &mut HashSet<String>,
) -> Result<(), String> {
    let due = hub
        .store()
        .due_commands(node_id, sent_before)
        .await
        .map_err(|e| e.to_string())?;
    for command in due {
        let action: CommandAction = match serde_json::from_str(&command.action) {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(target: "orchestrator::agent", command_id = %command.command_id, error = %e, "stored command unreadable");
                continue;
            }
        };
        // User-data waits sealed in the store; it is opened only on its way out.
        let action = match crate::access::open_for_node(action.clone()) {
            Ok(a) => a,
            Err(e) => match reseal(hub, &command.command_id, action).await {
                Some(a) => a,
                None => {
                    access_lost(hub, node_id, &command.command_id, &e.to_string()).await?;
                    continue;
                }
            },
        };
        let msg = ServerMessage::Command(proto::Command {
            id: command.command_id.clone(),
            action,
        });
        send(socket, &msg).await?;
        hub.store()
            .mark_command_sent(&command.command_id, now())
            .await
            .map_err(|e| e.to_string())?;
        tracing::debug!(target: "orchestrator::agent", %node_id, command_id = %command.command_id, attempt = command.attempts + 1, "command sent");
        awaiting.insert(command.command_id);
    }
    Ok(())
}

/// A create command sealed by an earlier run of the orchestrator, put together again and opened.
async fn reseal(hub: &AgentHub, command_id: &str, action: CommandAction) -> Option<CommandAction> {
    let CommandAction::CreateVm { spec } = action else {
        return None;
    };
    match lifecycle::reseal_create(hub.store(), command_id, spec).await {
        Ok(Some(action)) => crate::access::open_for_node(action).ok(),
        Ok(None) => None,
        Err(e) => {
            tracing::error!(target: "orchestrator::agent", command_id, error = %e, "create command could not be sealed again");
            None
        }
    }
}

/// A create command whose user-data cannot be opened nor put together again: it can never be
/// sent, so it is settled as failed and its VM fails saying why.
async fn access_lost(
    hub: &AgentHub,
    node_id: NodeId,
    command_id: &str,
    error: &str,
) -> Result<(), String> {
    tracing::error!(target: "orchestrator::agent", %node_id, command_id, error, "create command cannot be opened");
    let outcome = proto::AckOutcome::Failed {
        error: "this VM's setup could not be put together again after the orchestrator \
                restarted before it reached the node; open a new lease"
            .into(),
    };
    let json = serde_json::to_string(&outcome).expect("outcomes always serialize");
    hub.store()
        .ack_command(node_id, command_id, &json, now())
        .await
        .map_err(|e| e.to_string())?;
    if let Err(e) = lifecycle::on_command_acked(hub.store(), command_id, &outcome).await {
        tracing::error!(target: "orchestrator::agent", %node_id, command_id, error = %e, "could not fail the vm");
    }
    Ok(())
}

async fn on_heartbeat(
    hub: &AgentHub,
    ticket: &SessionTicket,
    hb: &Heartbeat,
    points: &mut Option<u64>,
    arrived: Instant,
) -> Result<(), String> {
    let node_id = ticket.node_id;
    // The benchmark changes rarely; write it only when it does. It is written before the
    // heartbeat is booked, so whoever sees the heartbeat also sees the points it carried.
    if hb.resources.compute_points > 0 && *points != Some(hb.resources.compute_points) {
        hub.store()
            .set_compute_points(node_id, hb.resources.compute_points)
            .await
            .map_err(|e| e.to_string())?;
        *points = Some(hb.resources.compute_points);
    }
    crate::access::record_heartbeat(hub.store(), node_id, hb, now())
        .await
        .map_err(|e| e.to_string())?;
    // A storage node's report: where its chunk API is, its room, and its proof record
    // (placement and the storage proof rate of its reputation).
    if let Some(storage) = &hb.storage {
        hub.store()
            .save_storage_report(node_id, storage, now())
            .await
            .map_err(|e| e.to_string())?;
    }
    // Each service's readiness, for `GET /vms/{id}` (a node speaks only for its own VMs).
    for (vm_id, vm) in crate::agent::reported_vms(&hb.vms) {
        hub.store()
            .record_vm_readiness(node_id, vm_id, &vm.readiness, now())
            .await
            .map_err(|e| e.to_string())?;
    }
    let missed = hub
        .store()
        .record_heartbeat(node_id, now())
        .await
        .map_err(|e| e.to_string())?;
    hub.metrics().record_heartbeat(arrived.elapsed());
    if let Some(relay) = &hb.relay {
        hub.store()
            .record_relay_traffic(node_id, &relay.traffic, now())
            .await
            .map_err(|e| e.to_string())?;
    }
    hub.record_links(
        ticket,
        crate::agent::LinkReport {
            relay: hb.relay.clone(),
            tunnel: hb.tunnel.clone(),
            received_at: now(),
        },
    );
    hub.record_report(ticket, hb.vms.clone(), now());
    if missed > 0 {
        tracing::info!(target: "orchestrator::agent", %node_id, missed, "heartbeat after a gap");
    }
    tracing::debug!(target: "orchestrator::agent", %node_id, seq = hb.seq, vms = hb.vms.len(), events = hb.events.len(), "heartbeat");
    Ok(())
}

/// The authenticated part of a connection. `Err` carries a protocol violation to report.
async fn session(
    hub: &AgentHub,
    socket: &mut WebSocket,
    ticket: &SessionTicket,
) -> Result<(), String> {
    let node_id = ticket.node_id;
    let waker = hub.waker(node_id);
    // After a (re)connect everything unacknowledged goes out again, whenever it was last sent.
    let mut awaiting = HashSet::new();
    deliver(hub, socket, node_id, i64::MAX, &mut awaiting).await?;
    let resend_after = hub.resend_secs();
    let mut tick = tokio::time::interval(RETRY_TICK.min(Duration::from_secs(resend_after as u64)));
    let mut last_poll = Instant::now();
    let mut last_frame = Instant::now();
    let mut points = None;
    // Console frames for this connection; sessions over it end with it (the guard).
    let (_console_link, mut console_frames) = hub.consoles().attach_link(node_id);
    loop {
        tokio::select! {
            Some(frame) = console_frames.recv() => send(socket, &frame).await?,
            frame = socket.recv() => {
                let text = match frame {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => { last_frame = Instant::now(); continue; }
                    Some(Ok(Message::Binary(_))) => return Err("binary frames are not part of the protocol".into()),
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Ok(()),
                };
                last_frame = Instant::now();
                match AgentMessage::from_json(text.as_str()) {
                    Ok(AgentMessage::Heartbeat(hb)) => on_heartbeat(hub, ticket, &hb, &mut points, last_frame).await?,
                    Ok(AgentMessage::Ack(ack)) => {
                        let outcome = serde_json::to_string(&ack.outcome).expect("outcomes always serialize");
                        let recorded = hub.store().ack_command(node_id, &ack.command_id, &outcome, now()).await.map_err(|e| e.to_string())?;
                        awaiting.remove(&ack.command_id);
                        match recorded {
                            AckRecorded::Recorded => {
                                tracing::info!(target: "orchestrator::agent", %node_id, command_id = %ack.command_id, "command acknowledged");
                                if let Err(e) = lifecycle::on_command_acked(hub.store(), &ack.command_id, &ack.outcome).await {
                                    tracing::error!(target: "orchestrator::agent", %node_id, command_id = %ack.command_id, error = %e, "acknowledgement did not move the vm");
                                }
                            }
                            AckRecorded::Duplicate => tracing::debug!(target: "orchestrator::agent", %node_id, command_id = %ack.command_id, "repeated acknowledgement"),
                            AckRecorded::Unknown => tracing::warn!(target: "orchestrator::agent", %node_id, command_id = %ack.command_id, "acknowledgement of an unknown command"),
                        }
                    }
                    Ok(AgentMessage::ConsoleOutput { session, data }) => hub.consoles().output(node_id, &session, data.to_vec()),
                    Ok(AgentMessage::ConsoleClosed { session, reason }) => hub.consoles().closed(node_id, &session, reason),
                    Ok(AgentMessage::Hello(_) | AgentMessage::Auth(_)) => return Err("already authenticated".into()),
                    Err(e) => return Err(format!("malformed frame: {e}")),
                }
            }
            () = ticket.replaced.notified() => return Err("replaced by a newer session of this node".into()),
            _ = waker.notified() => deliver(hub, socket, node_id, now() - resend_after, &mut awaiting).await?,
            _ = tick.tick() => {
                if last_frame.elapsed() > SILENCE_LIMIT {
                    return Err("no frame for two minutes".into());
                }
                // Look at the store only when this connection waits for acknowledgements (to
                // resend) or once a minute (commands queued by another replica, whose wake-up
                // cannot reach this process); 10,000 idle agents then cost ~170 queries/s, not 2,000.
                if !awaiting.is_empty() || last_poll.elapsed() >= IDLE_POLL {
                    last_poll = Instant::now();
                    deliver(hub, socket, node_id, now() - resend_after, &mut awaiting).await?;
                }
            }
        }
    }
}

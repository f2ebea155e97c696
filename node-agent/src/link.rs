//! The outbound link to the orchestrator: one WebSocket the agent opens (so NAT and CGNAT
//! need no port forward), the challenge handshake, heartbeats, commands and acks, and
//! reconnection with exponential backoff. The protocol is documented in
//! [`decloud_sdk::agent_protocol`].

use std::time::Duration;

use decloud_sdk::agent_protocol::{
    Ack, AgentMessage, Hello, PROTOCOL_VERSION, ServerMessage, sign_challenge,
};
use futures_util::{SinkExt, StreamExt};
use tokio::{net::TcpStream, sync::mpsc, sync::watch, time::timeout};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite::Message};
use tracing::{debug, info, warn};

use crate::{
    agent::Agent,
    console::Consoles,
    error::{Error, Result},
};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Console frames waiting for the socket, shared by the connection's console sessions; a
/// session whose output finds it full is dropped (see [`crate::console`]).
const CONSOLE_QUEUE: usize = 256;

/// Ends every console session when the connection they report over ends, whichever way.
struct CloseConsolesOnDrop<'a>(&'a Consoles);

impl Drop for CloseConsolesOnDrop<'_> {
    fn drop(&mut self) {
        self.0.close_all();
    }
}

/// Time the server gets to answer a handshake step.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Reconnection policy.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// First delay after a failure.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }
}

/// Keeps the link up until `shutdown` turns true: connects, serves the session, and after
/// any failure waits (doubling the delay up to `backoff.max`, back to `backoff.initial`
/// after a session that was welcomed) and connects again.
pub async fn run(agent: Agent, url: String, backoff: Backoff, mut shutdown: watch::Receiver<bool>) {
    let mut delay = backoff.initial;
    let mut seq = 0u64;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let mut welcomed = false;
        match session(&agent, &url, &mut seq, &mut welcomed, &mut shutdown).await {
            Ok(()) => return,
            Err(error) => warn!(target: "agent::link", %url, %error, "link down"),
        }
        if welcomed {
            delay = backoff.initial;
        }
        let jitter = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let wait = reconnect_wait(delay, jitter);
        info!(target: "agent::link", wait_ms = wait.as_millis() as u64, "reconnecting");
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        delay = (delay * 2).min(backoff.max);
    }
}

/// The wait before the next attempt: `delay` less up to 25% of it, picked by `jitter` (any
/// number), so a fleet that lost the orchestrator does not return in lockstep. Jitter only ever
/// shortens the delay, so the wait never exceeds the backoff's maximum.
fn reconnect_wait(delay: Duration, jitter: u32) -> Duration {
    delay - delay * (jitter % 250) / 1000
}

async fn send(socket: &mut Socket, message: &AgentMessage) -> Result<()> {
    socket
        .send(Message::text(message.to_json()))
        .await
        .map_err(|e| Error::Link(format!("send failed: {e}")))
}

async fn receive(socket: &mut Socket) -> Result<ServerMessage> {
    loop {
        let frame = timeout(HANDSHAKE_TIMEOUT, socket.next())
            .await
            .map_err(|_| Error::Link("server did not answer in time".into()))?;
        match frame {
            None => return Err(Error::Link("server closed the connection".into())),
            Some(Err(e)) => return Err(Error::Link(e.to_string())),
            Some(Ok(Message::Text(text))) => return Ok(ServerMessage::from_json(text.as_str())?),
            Some(Ok(Message::Close(frame))) => {
                return Err(Error::Link(format!(
                    "server closed the connection: {frame:?}"
                )));
            }
            Some(Ok(_)) => continue,
        }
    }
}

async fn send_heartbeat(agent: &Agent, socket: &mut Socket, seq: &mut u64) -> Result<()> {
    *seq += 1;
    let heartbeat = agent.heartbeat(*seq).await?;
    let last_event = heartbeat.events.last().map(|e| e.seq);
    send(socket, &AgentMessage::Heartbeat(Box::new(heartbeat))).await?;
    // Only events that left in a frame the socket accepted count as reported.
    if let Some(last) = last_event {
        agent.store().events_reported(last).await?;
    }
    debug!(target: "agent::link", seq = *seq, "heartbeat sent");
    Ok(())
}

async fn send_ack(agent: &Agent, socket: &mut Socket, ack: &Ack) -> Result<()> {
    send(socket, &AgentMessage::Ack(ack.clone())).await?;
    agent.store().mark_ack_delivered(&ack.command_id).await
}

async fn session(
    agent: &Agent,
    url: &str,
    seq: &mut u64,
    welcomed: &mut bool,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<()> {
    // No Nagle: console output goes out in small frames one after another, and holding the
    // second until the first is acknowledged (delayed by the peer) adds ~40 ms to a keystroke.
    let connect = tokio_tungstenite::connect_async_with_config(url, None, true);
    let (mut socket, _) = timeout(HANDSHAKE_TIMEOUT, connect)
        .await
        .map_err(|_| Error::Link("connect timed out".into()))?
        .map_err(|e| Error::Link(format!("cannot connect: {e}")))?;
    let identity = agent.identity();
    send(
        &mut socket,
        &AgentMessage::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            node_id: identity.node_id,
            address: identity.address(),
            agent_version: env!("CARGO_PKG_VERSION").into(),
        }),
    )
    .await?;
    let challenge = match receive(&mut socket).await? {
        ServerMessage::Challenge(challenge) => challenge,
        ServerMessage::Rejected { reason } => {
            return Err(Error::Link(format!("rejected: {reason}")));
        }
        other => return Err(Error::Link(format!("expected a challenge, got {other:?}"))),
    };
    let auth = sign_challenge(&identity.signer, identity.node_id, &challenge)?;
    send(&mut socket, &AgentMessage::Auth(auth)).await?;
    let welcome = match receive(&mut socket).await? {
        ServerMessage::Welcome(welcome) => welcome,
        ServerMessage::Rejected { reason } => {
            return Err(Error::Link(format!("rejected: {reason}")));
        }
        other => return Err(Error::Link(format!("expected welcome, got {other:?}"))),
    };
    *welcomed = true;
    info!(target: "agent::link", %url, node_id = %identity.node_id, "authenticated");

    // Acks of commands that finished while the link was down, then the full state.
    for ack in agent.store().undelivered_acks().await? {
        send_ack(agent, &mut socket, &ack).await?;
    }
    send_heartbeat(agent, &mut socket, seq).await?;

    let period = Duration::from_secs(welcome.heartbeat_interval_secs.max(1));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let (ack_tx, mut ack_rx) = mpsc::channel::<Ack>(64);
    // Console frames of every session of this connection; sessions end with the connection.
    let (console_tx, mut console_rx) = mpsc::channel::<AgentMessage>(CONSOLE_QUEUE);
    let _consoles = CloseConsolesOnDrop(agent.consoles());
    loop {
        tokio::select! {
            _ = ticker.tick() => send_heartbeat(agent, &mut socket, seq).await?,
            Some(ack) = ack_rx.recv() => send_ack(agent, &mut socket, &ack).await?,
            Some(frame) = console_rx.recv() => send(&mut socket, &frame).await?,
            frame = socket.next() => match frame {
                None => return Err(Error::Link("server closed the connection".into())),
                Some(Err(e)) => return Err(Error::Link(e.to_string())),
                Some(Ok(Message::Close(frame))) => {
                    return Err(Error::Link(format!("server closed the connection: {frame:?}")));
                }
                Some(Ok(Message::Text(text))) => match ServerMessage::from_json(text.as_str()) {
                    Ok(ServerMessage::Command(command)) => {
                        let agent = agent.clone();
                        let ack_tx = ack_tx.clone();
                        // Commands run beside the session so heartbeats continue during a
                        // long stop; the ack is stored before it is queued, so a link that
                        // drops meanwhile delivers it after the next handshake.
                        tokio::spawn(async move {
                            let id = command.id.clone();
                            match agent.execute(command).await {
                                Ok(ack) => {
                                    let _ = ack_tx.send(ack).await;
                                }
                                Err(error) => {
                                    warn!(target: "agent::command", %id, %error, "command not executed");
                                }
                            }
                        });
                    }
                    Ok(ServerMessage::ConsoleOpen { session, vm_id }) => {
                        agent.consoles().open(agent.clone(), session, vm_id, console_tx.clone());
                    }
                    Ok(ServerMessage::ConsoleInput { session, data }) => {
                        agent.consoles().input(&session, data.to_vec());
                    }
                    Ok(ServerMessage::ConsoleClose { session }) => agent.consoles().close(&session),
                    Ok(ServerMessage::Rejected { reason }) => {
                        return Err(Error::Link(format!("rejected: {reason}")));
                    }
                    Ok(other) => warn!(target: "agent::link", ?other, "unexpected message"),
                    Err(error) => warn!(target: "agent::link", %error, "undecodable message"),
                },
                Some(Ok(_)) => {}
            },
            _ = shutdown.changed() => {
                let _ = socket.close(None).await;
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_waits_never_exceed_the_backoff_maximum() {
        let backoff = Backoff::default();
        let mut delay = backoff.initial;
        for attempt in 0..20u32 {
            for jitter in [
                0,
                1,
                249,
                250,
                999,
                u32::MAX,
                attempt.wrapping_mul(2_654_435_761),
            ] {
                let wait = reconnect_wait(delay, jitter);
                assert!(wait <= backoff.max, "{wait:?} after attempt {attempt}");
                assert!(
                    wait <= delay && wait * 4 >= delay * 3,
                    "{wait:?} for {delay:?}"
                );
            }
            delay = (delay * 2).min(backoff.max);
        }
        assert_eq!(delay, backoff.max);
    }
}

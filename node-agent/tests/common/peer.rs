//! `TestOrchestratorPeer`: a small protocol peer that plays the orchestrator's half of
//! `decloud_sdk::agent_protocol` over a real WebSocket on 127.0.0.1, so the agent's own tests
//! drive it command by command: it issues challenges, verifies signatures with the SDK's
//! `verify_auth`, sends commands and reads heartbeats and acks.

use std::time::Duration;

use decloud_sdk::agent_protocol::{
    Ack, AgentMessage, Challenge, Command, CommandAction, Heartbeat, Hello, ServerMessage, Welcome,
    verify_auth,
};
use futures_util::{SinkExt, StreamExt};
use tokio::{
    net::{TcpListener, TcpStream},
    time::timeout,
};
use tokio_tungstenite::{WebSocketStream, tungstenite::Message};

/// How long the peer waits for the agent's next message before it calls the agent hung. An
/// agent restarting beside three guests under software emulation on a busy 2-core machine
/// can take a while to reconcile and dial back, so this is generous: it only stops a hung
/// test, it measures nothing.
pub const WAIT: Duration = Duration::from_secs(120);

/// Test peer standing in for the orchestrator (server half of the protocol).
pub struct TestOrchestratorPeer {
    listener: TcpListener,
}

pub struct PeerSession {
    pub socket: WebSocketStream<TcpStream>,
    pub hello: Hello,
}

impl TestOrchestratorPeer {
    pub async fn bind() -> Self {
        Self {
            listener: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}", self.listener.local_addr().unwrap())
    }

    /// Accepts the agent's next connection and runs the handshake.
    pub async fn accept(&self) -> PeerSession {
        let (tcp, _) = timeout(WAIT, self.listener.accept())
            .await
            .expect("agent connects")
            .unwrap();
        let mut socket = tokio_tungstenite::accept_async(tcp).await.unwrap();
        let hello = match receive(&mut socket).await {
            AgentMessage::Hello(hello) => hello,
            other => panic!("expected hello, got {other:?}"),
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let challenge = Challenge {
            // A fresh random 32-byte value (a throwaway key's bytes).
            nonce: alloy::signers::local::PrivateKeySigner::random().to_bytes(),
            expires_at: now + 60,
        };
        send(&mut socket, ServerMessage::Challenge(challenge.clone())).await;
        let auth = match receive(&mut socket).await {
            AgentMessage::Auth(auth) => auth,
            other => panic!("expected auth, got {other:?}"),
        };
        let signer = verify_auth(&hello, &challenge, &auth, now).expect("valid signature");
        assert_eq!(signer, hello.address);
        send(
            &mut socket,
            ServerMessage::Welcome(Welcome {
                heartbeat_interval_secs: 1,
            }),
        )
        .await;
        PeerSession { socket, hello }
    }
}

pub async fn send(socket: &mut WebSocketStream<TcpStream>, message: ServerMessage) {
    socket.send(Message::text(message.to_json())).await.unwrap();
}

pub async fn receive(socket: &mut WebSocketStream<TcpStream>) -> AgentMessage {
    loop {
        let frame = timeout(WAIT, socket.next())
            .await
            .expect("agent message in time");
        match frame.expect("connection open").unwrap() {
            Message::Text(text) => return AgentMessage::from_json(text.as_str()).unwrap(),
            Message::Close(frame) => panic!("agent closed: {frame:?}"),
            _ => continue,
        }
    }
}

impl PeerSession {
    pub async fn command(&mut self, id: &str, action: CommandAction) {
        send(
            &mut self.socket,
            ServerMessage::Command(Command {
                id: id.into(),
                action,
            }),
        )
        .await;
    }

    pub async fn next_heartbeat(&mut self) -> Heartbeat {
        loop {
            if let AgentMessage::Heartbeat(heartbeat) = receive(&mut self.socket).await {
                return *heartbeat;
            }
        }
    }

    pub async fn next_ack(&mut self) -> Ack {
        loop {
            if let AgentMessage::Ack(ack) = receive(&mut self.socket).await {
                return ack;
            }
        }
    }
}

//! The orchestrator link over real WebSockets on 127.0.0.1.
//!
//! The orchestrator does not exist yet; `TestOrchestratorPeer` below is a small protocol
//! peer written for this test that plays the server half of
//! `decloud_sdk::agent_protocol`: it issues challenges, verifies signatures with the SDK's
//! `verify_auth`, sends commands and reads heartbeats and acks.

mod common;

use std::time::Duration;

use common::*;
use decloud_node_agent::{Backoff, run_link};
use decloud_sdk::agent_protocol::{
    Ack, AckOutcome, AgentMessage, Challenge, Command, CommandAction, Heartbeat, Hello,
    ServerMessage, VmState, Welcome, verify_auth,
};
use futures_util::{SinkExt, StreamExt};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
    time::timeout,
};
use tokio_tungstenite::{WebSocketStream, tungstenite::Message};

const WAIT: Duration = Duration::from_secs(20);

/// Test peer standing in for the orchestrator (server half of the protocol).
struct TestOrchestratorPeer {
    listener: TcpListener,
}

struct PeerSession {
    socket: WebSocketStream<TcpStream>,
    hello: Hello,
}

impl TestOrchestratorPeer {
    async fn bind() -> Self {
        Self {
            listener: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        }
    }

    fn url(&self) -> String {
        format!("ws://{}", self.listener.local_addr().unwrap())
    }

    /// Accepts the agent's next connection and runs the handshake.
    async fn accept(&self) -> PeerSession {
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

async fn send(socket: &mut WebSocketStream<TcpStream>, message: ServerMessage) {
    socket.send(Message::text(message.to_json())).await.unwrap();
}

async fn receive(socket: &mut WebSocketStream<TcpStream>) -> AgentMessage {
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
    async fn command(&mut self, id: &str, action: CommandAction) {
        send(
            &mut self.socket,
            ServerMessage::Command(Command {
                id: id.into(),
                action,
            }),
        )
        .await;
    }

    async fn next_heartbeat(&mut self) -> Heartbeat {
        loop {
            if let AgentMessage::Heartbeat(heartbeat) = receive(&mut self.socket).await {
                return *heartbeat;
            }
        }
    }

    async fn next_ack(&mut self) -> Ack {
        loop {
            if let AgentMessage::Ack(ack) = receive(&mut self.socket).await {
                return ack;
            }
        }
    }
}

#[tokio::test]
async fn link_authenticates_heartbeats_executes_and_reports_changes_after_reconnect() {
    let dir = data_dir();
    let agent = open_agent(test_driver_config(dir.path(), "link")).await;
    agent.reconcile().await.unwrap();
    let peer = TestOrchestratorPeer::bind().await;
    let (stop_tx, stop_rx) = watch::channel(false);
    let backoff = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(1),
    };
    let link = tokio::spawn(run_link(agent.clone(), peer.url(), backoff, stop_rx));

    let mut session = peer.accept().await;
    assert_eq!(session.hello.node_id, agent.identity().node_id);
    assert_eq!(session.hello.address, agent.identity().address());
    let first = session.next_heartbeat().await;
    assert!(first.ready);
    assert!(first.vms.is_empty());
    assert!(first.free.millicores > 0 && first.free.memory_mib > 0);

    let create = CommandAction::CreateVm {
        spec: spec("linked", "blank"),
    };
    session.command("c-1", create.clone()).await;
    let ack = session.next_ack().await;
    assert_eq!(ack.command_id, "c-1");
    let AckOutcome::Done { vm: Some(vm) } = &ack.outcome else {
        panic!("{ack:?}")
    };
    assert_eq!(vm.state, VmState::Running);
    // The same command again: the same ack, no second VM.
    session.command("c-1", create).await;
    assert_eq!(session.next_ack().await, ack);
    assert_eq!(agent.owned_domains().await.unwrap().len(), 1);

    // Heartbeats keep coming once a second and carry the VM and its events, once.
    let mut seen_events = Vec::new();
    let beat = loop {
        let beat = session.next_heartbeat().await;
        seen_events.extend(beat.events.iter().map(|e| (e.vm_id.clone(), e.state)));
        if beat.vms.iter().any(|v| v.id == "linked") {
            break beat;
        }
    };
    assert_eq!(beat.vms[0].state, VmState::Running);
    assert!(beat.vms[0].readiness.ready, "no probes: ready once running");
    let beat = session.next_heartbeat().await;
    seen_events.extend(beat.events.iter().map(|e| (e.vm_id.clone(), e.state)));
    assert_eq!(
        seen_events,
        [
            ("linked".to_owned(), VmState::Creating),
            ("linked".to_owned(), VmState::Running)
        ]
    );

    // The orchestrator goes away; meanwhile the VM stops.
    drop(session);
    agent.stop_vm("linked").await.unwrap();

    // The agent comes back by itself and reports what changed while it was away.
    let mut session = peer.accept().await;
    let beat = session.next_heartbeat().await;
    assert_eq!(beat.vms.len(), 1);
    assert_eq!(beat.vms[0].state, VmState::Stopped);
    assert!(!beat.vms[0].readiness.ready);
    let events: Vec<_> = beat
        .events
        .iter()
        .map(|e| (e.vm_id.as_str(), e.state))
        .collect();
    assert_eq!(events, [("linked", VmState::Stopped)]);

    // Commands on the new session work, and unknown VMs get a clear failure.
    session
        .command(
            "c-2",
            CommandAction::DeleteVm {
                vm_id: "linked".into(),
            },
        )
        .await;
    assert_eq!(
        session.next_ack().await.outcome,
        AckOutcome::Done { vm: None }
    );
    session
        .command(
            "c-3",
            CommandAction::StartVm {
                vm_id: "nope".into(),
            },
        )
        .await;
    let ack = session.next_ack().await;
    assert!(
        matches!(ack.outcome, AckOutcome::Failed { ref error } if error == "no vm with id nope")
    );
    assert!(agent.owned_domains().await.unwrap().is_empty());

    stop_tx.send(true).unwrap();
    timeout(WAIT, link)
        .await
        .expect("link stops on shutdown")
        .unwrap();
}

#[tokio::test]
async fn acks_of_commands_finished_while_away_are_delivered_after_reconnect() {
    let dir = data_dir();
    let agent = open_agent(test_driver_config(dir.path(), "link-acks")).await;
    agent.reconcile().await.unwrap();
    // A command executed but whose ack never left (the link dropped right after).
    let ack = agent
        .execute(Command {
            id: "early".into(),
            action: CommandAction::CreateVm {
                spec: spec("acked-late", "blank"),
            },
        })
        .await
        .unwrap();
    let peer = TestOrchestratorPeer::bind().await;
    let (stop_tx, stop_rx) = watch::channel(false);
    let backoff = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(1),
    };
    let link = tokio::spawn(run_link(agent.clone(), peer.url(), backoff, stop_rx));
    let mut session = peer.accept().await;
    assert_eq!(session.next_ack().await, ack);
    drop(session);
    // Delivered once: the next session starts with a heartbeat, not the ack again.
    let mut session = peer.accept().await;
    match receive(&mut session.socket).await {
        AgentMessage::Heartbeat(_) => {}
        other => panic!("expected a heartbeat first, got {other:?}"),
    }
    agent.delete_vm("acked-late").await.unwrap();
    stop_tx.send(true).unwrap();
    timeout(WAIT, link).await.unwrap().unwrap();
}

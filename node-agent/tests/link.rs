//! The orchestrator link over real WebSockets on 127.0.0.1.
//!
//! The orchestrator does not exist yet; `common::peer::TestOrchestratorPeer` is a protocol
//! peer standing in for it.

mod common;

use std::time::Duration;

use common::peer::{TestOrchestratorPeer, WAIT, receive};
use common::*;
use decloud_node_agent::{Backoff, run_link};
use decloud_sdk::agent_protocol::{AckOutcome, AgentMessage, Command, CommandAction, VmState};
use tokio::{sync::watch, time::timeout};

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
    let AckOutcome::Done { vm: Some(vm), .. } = &ack.outcome else {
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
        AckOutcome::Done {
            vm: None,
            user_data_sha256: None,
        }
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

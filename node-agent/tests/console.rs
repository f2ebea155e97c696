//! The interactive serial console of a real VM (the busybox test guest under QEMU, through the
//! system libvirtd) over the agent's real link: a test peer plays the orchestrator, opens
//! console sessions, types into the guest's shell and reads its answers.

mod common;

use std::time::Duration;

use common::{
    peer::{PeerSession, TestOrchestratorPeer, receive, send},
    *,
};
use decloud_node_agent::{Backoff, Config, ConfigLayer, Identity, console_socket_path, run_link};
use decloud_sdk::agent_protocol::{AgentMessage, ServerMessage, VmState};

const BOOT_LIMIT: Duration = Duration::from_secs(180);

fn config_from(toml_text: &str) -> Config {
    let layer: ConfigLayer = toml::from_str(toml_text).unwrap();
    Config::resolve(Some(layer), ConfigLayer::default(), ConfigLayer::default()).unwrap()
}

async fn input(peer: &mut PeerSession, session: &str, text: &str) {
    send(
        &mut peer.socket,
        ServerMessage::ConsoleInput {
            session: session.into(),
            data: text.as_bytes().to_vec().into(),
        },
    )
    .await;
}

/// Reads frames until the output of `session` contains `needle`; returns that output. Panics
/// if the session closes first.
async fn output_until(peer: &mut PeerSession, session: &str, needle: &str) -> String {
    let mut text = String::new();
    loop {
        match receive(&mut peer.socket).await {
            AgentMessage::ConsoleOutput { session: s, data } if s == session => {
                text.push_str(&String::from_utf8_lossy(&data));
                if text.contains(needle) {
                    return text;
                }
            }
            AgentMessage::ConsoleClosed { session: s, reason } if s == session => {
                panic!("session {session} closed ({reason}) before {needle:?}; output:\n{text}")
            }
            _ => {}
        }
    }
}

/// Reads frames until `session` is reported closed; returns the reason.
async fn closed(peer: &mut PeerSession, session: &str) -> String {
    loop {
        if let AgentMessage::ConsoleClosed { session: s, reason } = receive(&mut peer.socket).await
            && s == session
        {
            return reason;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn console_sessions_type_into_the_guest_shell_and_end_cleanly() {
    require_libvirtd();
    let dir = data_dir();
    let peer = TestOrchestratorPeer::bind().await;
    let config = config_from(&real_vm_config_toml(
        dir.path(),
        "real-vm-console",
        Some(&peer.url()),
    ));
    let (identity, _) = Identity::load_or_create(&config).unwrap();
    let agent = decloud_node_agent::Agent::open(config, identity, resources())
        .await
        .unwrap();
    agent.reconcile().await.unwrap();
    let vm = "console-check";
    let report = agent
        .create_vm(test_guest_spec(vm, &unique_value()))
        .await
        .unwrap();
    assert_eq!(report.state, VmState::Running);
    assert!(console_socket_path(&agent, vm).exists());
    let log = agent.vm_dir(vm).join("console.log");
    // The guest starts its shell right after this line.
    wait_for_console(&log, "Cloud-init v. test-guest finished at", BOOT_LIMIT).await;

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let link = tokio::spawn(run_link(
        agent.clone(),
        peer.url(),
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        },
        stopped,
    ));
    let mut session = peer.accept().await;

    // A console of a VM this node does not have is refused with the reason.
    send(
        &mut session.socket,
        ServerMessage::ConsoleOpen {
            session: "nope".into(),
            vm_id: "no-such-vm".into(),
        },
    )
    .await;
    let reason = closed(&mut session, "nope").await;
    assert!(reason.contains("no vm no-such-vm"), "{reason}");

    // Typed input reaches the guest's shell, and its answer comes back (the typed line
    // echoes as `hello-$((6*7))`, so `hello-42` can only be the shell's result).
    send(
        &mut session.socket,
        ServerMessage::ConsoleOpen {
            session: "s1".into(),
            vm_id: vm.into(),
        },
    )
    .await;
    input(&mut session, "s1", "echo hello-$((6*7))\r").await;
    output_until(&mut session, "s1", "hello-42").await;
    assert_eq!(
        agent.consoles().attached(),
        vec![(vm.to_owned(), "s1".to_owned())]
    );
    // The log the readiness probes read still gets everything.
    wait_for_console(&log, "hello-42", Duration::from_secs(10)).await;

    // A second session replaces the first, which is told why.
    send(
        &mut session.socket,
        ServerMessage::ConsoleOpen {
            session: "s2".into(),
            vm_id: vm.into(),
        },
    )
    .await;
    let reason = closed(&mut session, "s1").await;
    assert!(reason.contains("replaced"), "{reason}");
    input(&mut session, "s2", "echo hello-$((7*8))\r").await;
    output_until(&mut session, "s2", "hello-56").await;

    // The orchestrator closes it: the agent ends it and confirms.
    send(
        &mut session.socket,
        ServerMessage::ConsoleClose {
            session: "s2".into(),
        },
    )
    .await;
    let reason = closed(&mut session, "s2").await;
    assert!(reason.contains("closed by the orchestrator"), "{reason}");
    assert!(agent.consoles().attached().is_empty());

    // A session ends when its VM stops.
    send(
        &mut session.socket,
        ServerMessage::ConsoleOpen {
            session: "s3".into(),
            vm_id: vm.into(),
        },
    )
    .await;
    input(&mut session, "s3", "echo ready-$((2*3))\r").await;
    output_until(&mut session, "s3", "ready-6").await;
    let stopper = {
        let agent = agent.clone();
        tokio::spawn(async move { agent.stop_vm(vm).await })
    };
    let reason = closed(&mut session, "s3").await;
    assert!(reason.contains("vm stopped"), "{reason}");
    assert_eq!(stopper.await.unwrap().unwrap().state, VmState::Stopped);

    // A stopped VM has no console to attach to.
    send(
        &mut session.socket,
        ServerMessage::ConsoleOpen {
            session: "s4".into(),
            vm_id: vm.into(),
        },
    )
    .await;
    let reason = closed(&mut session, "s4").await;
    assert!(reason.contains("is stopped"), "{reason}");
    assert!(agent.consoles().attached().is_empty());

    let _ = stop.send(true);
    tokio::time::timeout(Duration::from_secs(10), link)
        .await
        .expect("the link stops")
        .unwrap();
    agent.delete_vm(vm).await.unwrap();
    assert!(!agent.vm_dir(vm).exists());
    agent.close().await;
}

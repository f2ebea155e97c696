//! Real virtual machines under QEMU (software emulation) through the system libvirtd.
//!
//! The guest is the host's kernel booted directly with an initramfs built at test time from
//! busybox-static (see `decloud_node_agent::test_guest`): it mounts the `cidata` seed and
//! prints a value from the user-data on its serial console. scripts/test installs and
//! starts libvirtd; these tests fail, with what to do, when it is not running.

mod common;

use std::time::Duration;

use common::{peer::TestOrchestratorPeer, *};
use decloud_node_agent::{
    Config, ConfigLayer, Hypervisor, Identity, domain_name, test_guest::VALUE_MARKER,
};
use decloud_sdk::agent_protocol::{self, AckOutcome, CommandAction, VmState};

const BOOT_LIMIT: Duration = Duration::from_secs(180);

fn config_from(toml_text: &str) -> Config {
    let layer: ConfigLayer = toml::from_str(toml_text).unwrap();
    Config::resolve(Some(layer), ConfigLayer::default(), ConfigLayer::default()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn real_vm_reads_its_seed_then_stops_and_is_deleted_without_leftovers() {
    require_libvirtd();
    let dir = data_dir();
    let config = config_from(&real_vm_config_toml(dir.path(), "real-vm-lifecycle", None));
    let data = config.data_dir.clone();
    let (identity, _) = Identity::load_or_create(&config).unwrap();
    let agent = decloud_node_agent::Agent::open(config, identity, resources())
        .await
        .unwrap();
    agent.reconcile().await.unwrap();

    let value = unique_value();
    let report = agent
        .create_vm(test_guest_spec("seed-check", &value))
        .await
        .unwrap();
    assert_eq!(report.state, VmState::Running);
    let console = agent.vm_dir("seed-check").join("console.log");
    wait_for_console(&console, &format!("{VALUE_MARKER}{value}"), BOOT_LIMIT).await;

    // The readiness probe reads the same console; the guest prints its cloud-init-style
    // final line right after the value.
    wait_for_console(&console, "Cloud-init v. test-guest finished at", BOOT_LIMIT).await;
    agent.observe().await.unwrap();
    let report = agent.report("seed-check").await.unwrap();
    assert!(report.readiness.ready, "{report:?}");

    let stopped = agent.stop_vm("seed-check").await.unwrap();
    assert_eq!(stopped.state, VmState::Stopped);
    agent.delete_vm("seed-check").await.unwrap();

    let names = agent
        .with_hypervisor(|h| h.all_domain_names())
        .await
        .unwrap();
    assert!(
        !names.contains(&agent.domain_name("seed-check")),
        "{names:?}"
    );
    assert!(agent.owned_domains().await.unwrap().is_empty());
    assert!(!agent.vm_dir("seed-check").exists());
    let left: Vec<_> = files_under(&data.join("vms"));
    assert!(left.is_empty(), "files left behind: {left:?}");
    agent.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkilled_agent_adopts_its_running_vm_on_restart() {
    require_libvirtd();
    let dir = data_dir();
    let peer = TestOrchestratorPeer::bind().await;
    let machine = "real-vm-sigkill";
    let config_path = dir.path().join("agent.toml");
    std::fs::write(
        &config_path,
        real_vm_config_toml(dir.path(), machine, Some(&peer.url())),
    )
    .unwrap();
    let agent_log = dir.path().join("agent.log");
    let node_id = agent_protocol::node_id(agent_protocol::machine_id(machine), OPERATOR);
    let libvirt = Hypervisor::open("qemu:///system").unwrap();

    let mut agent = AgentProcess::start(&config_path, &agent_log);
    let mut session = peer.accept().await;
    let value = unique_value();
    session
        .command(
            "create-1",
            CommandAction::CreateVm {
                spec: test_guest_spec("survivor", &value),
            },
        )
        .await;
    let ack = session.next_ack().await;
    assert!(
        matches!(&ack.outcome, AckOutcome::Done { vm: Some(vm), .. } if vm.state == VmState::Running),
        "{ack:?}"
    );
    let console = dir.path().join("data/vms/survivor/console.log");
    wait_for_console(&console, &format!("{VALUE_MARKER}{value}"), BOOT_LIMIT).await;
    let before = libvirt.owned_domains(node_id).unwrap();
    assert_eq!(before.len(), 1);

    agent.sigkill();
    drop(session);
    assert_eq!(
        libvirt
            .is_active(&domain_name(&node_id, "survivor"))
            .unwrap(),
        Some(true),
        "the VM outlives the agent"
    );

    let mut agent = AgentProcess::start(&config_path, &agent_log);
    let mut session = peer.accept().await;
    let beat = session.next_heartbeat().await;
    assert_eq!(beat.vms.len(), 1, "{beat:?}");
    assert_eq!(
        (beat.vms[0].id.as_str(), beat.vms[0].state),
        ("survivor", VmState::Running)
    );
    // Adopted: the same domain, still running, not defined again and not rebooted.
    let after = libvirt.owned_domains(node_id).unwrap();
    assert_eq!(after, before);
    let log = std::fs::read_to_string(&agent_log).unwrap();
    assert!(log.contains("adopted: [\"survivor\"]"), "{log}");
    let console_text = std::fs::read_to_string(&console).unwrap();
    assert_eq!(
        console_text
            .matches(&format!("{VALUE_MARKER}{value}"))
            .count(),
        1
    );

    // Resending the create after the restart does not make a second VM.
    session
        .command(
            "create-1",
            CommandAction::CreateVm {
                spec: test_guest_spec("survivor", &value),
            },
        )
        .await;
    assert_eq!(session.next_ack().await, ack);
    assert_eq!(libvirt.owned_domains(node_id).unwrap().len(), 1);

    session
        .command(
            "delete-1",
            CommandAction::DeleteVm {
                vm_id: "survivor".into(),
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
    assert!(libvirt.owned_domains(node_id).unwrap().is_empty());
    assert!(!dir.path().join("data/vms/survivor").exists());
    agent.sigterm();
}

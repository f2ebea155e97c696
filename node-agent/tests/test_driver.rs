//! VM lifecycle, bad specs, reconciliation and command idempotency against libvirt's
//! in-process `test:///default` driver (real libvirt code, no daemon, no guest).
//!
//! The driver's state is shared by every connection in the process while one is open, so
//! each test uses its own machine id (hence node id) and VM ids; the driver's built-in
//! `test` domain is a domain the agents do not own and must leave alone.

mod common;

use common::*;
use decloud_node_agent::{DOMAIN_PREFIX, Desired, Error, node_tag, render_domain_xml};
use decloud_sdk::agent_protocol::{
    AckOutcome, Command, CommandAction, PortProtocol, PortSpec, QualityTier, ReadinessProbe,
    VmState,
};

#[tokio::test]
async fn lifecycle_create_stop_start_delete() {
    let dir = data_dir();
    let agent = open_agent(test_driver_config(dir.path(), "lifecycle")).await;
    agent.reconcile().await.unwrap();

    let report = agent.create_vm(spec("web-1", "blank")).await.unwrap();
    assert_eq!(report.state, VmState::Running);
    let vm_dir = agent.vm_dir("web-1");
    assert!(vm_dir.join("disk.qcow2").is_file());
    assert!(vm_dir.join("seed.iso").is_file());
    let owned = agent.owned_domains().await.unwrap();
    assert_eq!(owned.len(), 1);
    assert_eq!((owned[0].vm_id.as_str(), owned[0].active), ("web-1", true));
    // The overlay really sits on the base image.
    let info = std::process::Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(vm_dir.join("disk.qcow2"))
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert!(
        info["backing-filename"]
            .as_str()
            .unwrap()
            .ends_with("base.qcow2")
    );
    assert_eq!(info["virtual-size"].as_u64(), Some(1 << 30));

    let stopped = agent.stop_vm("web-1").await.unwrap();
    assert_eq!(stopped.state, VmState::Stopped);
    let name = agent.domain_name("web-1");
    let active = agent
        .with_hypervisor(move |h| h.is_active(&name))
        .await
        .unwrap();
    assert_eq!(active, Some(false));

    let started = agent.start_vm("web-1").await.unwrap();
    assert_eq!(started.state, VmState::Running);

    agent.delete_vm("web-1").await.unwrap();
    assert!(agent.owned_domains().await.unwrap().is_empty());
    assert!(!vm_dir.exists());
    assert!(agent.store().vm("web-1").await.unwrap().is_none());
    assert!(matches!(
        agent.delete_vm("web-1").await,
        Err(Error::UnknownVm(_))
    ));

    let states: Vec<VmState> = agent
        .store()
        .pending_events()
        .await
        .unwrap()
        .iter()
        .map(|e| e.state)
        .collect();
    assert_eq!(
        states,
        [
            VmState::Creating,
            VmState::Running,
            VmState::Stopped,
            VmState::Running,
            VmState::Deleted
        ]
    );
}

/// A simulated VM's forwards are allocated and reported like a real one's, but no rule is
/// made on the host (its guest has no address here), so a `decloud dev` on the test driver
/// never touches the host's firewall or another agent's rules.
#[tokio::test]
async fn simulated_vms_get_forwards_but_no_host_rules() {
    let dir = data_dir();
    let config = test_driver_config(dir.path(), "simulated-forwards");
    let (identity, _) = decloud_node_agent::Identity::load_or_create(&config).unwrap();
    let tag = node_tag(&identity.node_id);
    let agent = open_agent(config).await;
    agent.reconcile().await.unwrap();

    let mut with_ports = spec("fwd-1", "blank");
    with_ports.ports = vec![PortSpec {
        guest: 22,
        protocol: PortProtocol::Tcp,
    }];
    let report = agent.create_vm(with_ports).await.unwrap();
    assert_eq!(report.forwards.len(), 1, "{report:?}");
    assert_eq!(report.forwards[0].guest, 22);
    let rules = iptables_save();
    assert!(
        !rules.contains(&format!("decloud:{tag}:")),
        "a simulated vm got a host rule: {rules}"
    );
    agent.delete_vm("fwd-1").await.unwrap();
}

#[tokio::test]
async fn bad_specs_are_refused_and_create_nothing() {
    let dir = data_dir();
    let agent = open_agent(test_driver_config(dir.path(), "bad-specs")).await;
    agent.reconcile().await.unwrap();
    agent.create_vm(spec("taken", "blank")).await.unwrap();
    let (host_cpus, _) = agent.with_hypervisor(|h| h.node_capacity()).await.unwrap();

    let zero_memory = {
        let mut s = spec("a", "blank");
        s.memory_mib = 0;
        s
    };
    let unknown_image = spec("b", "no-such-image");
    let too_many_vcpus = {
        let mut s = spec("c", "blank");
        s.quality = QualityTier::Dedicated;
        s.vcpus = host_cpus + 1;
        s
    };
    let overwrite = spec("taken", "blank");
    let traversal = spec("../taken", "blank");
    let with_probe = |id: &str, probe: ReadinessProbe| {
        let mut s = spec(id, "blank");
        s.readiness = vec![ReadinessProbe::CloudInit, probe];
        s
    };
    let relative_command = with_probe(
        "e",
        ReadinessProbe::Exec {
            command: vec!["pg_isready".into()],
        },
    );
    let empty_command = with_probe("f", ReadinessProbe::Exec { command: vec![] });
    let http = |path: &str, expect_status| ReadinessProbe::Http {
        port: 80,
        path: path.into(),
        expect_status,
        tls: false,
    };
    let bad_path = with_probe("g", http("health z", None));
    let bad_status = with_probe("h", http("/", Some(42)));
    let cases = [
        (relative_command, "must be an absolute path in the guest"),
        (empty_command, "readiness command is empty"),
        (bad_path, "must start with '/' and contain no whitespace"),
        (bad_status, "status 42 is not an HTTP status"),
        (zero_memory, "memory must be at least"),
        (unknown_image, "unknown image \"no-such-image\""),
        (too_many_vcpus, "under the Dedicated tier's 1:1 overcommit"),
        (overwrite, "already exists on this node"),
        (traversal, "must be 1 to 48 characters"),
    ];
    let data = agent.config().data_dir.clone();
    let files_before = files_under(&data).len();
    for (bad, expected) in cases {
        let id = bad.id.clone();
        let error = agent.create_vm(bad).await.unwrap_err().to_string();
        assert!(error.contains(expected), "{id}: {error}");
    }
    // The same host takes 4x as many vCPUs in the Burstable tier.
    let mut burstable = spec("d", "blank");
    burstable.vcpus = host_cpus * 4 + 1;
    let error = agent.create_vm(burstable).await.unwrap_err().to_string();
    assert!(error.contains("4:1 overcommit"), "{error}");

    // A directory left on disk by nobody on record is another VM's disk as far as we know.
    std::fs::create_dir(agent.vm_dir("stray")).unwrap();
    std::fs::write(agent.vm_dir("stray").join("disk.qcow2"), b"precious").unwrap();
    let error = agent
        .create_vm(spec("stray", "blank"))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("refusing to overwrite"), "{error}");
    assert_eq!(
        std::fs::read(agent.vm_dir("stray").join("disk.qcow2")).unwrap(),
        b"precious"
    );
    std::fs::remove_dir_all(agent.vm_dir("stray")).unwrap();

    assert_eq!(files_under(&data).len(), files_before);
    let owned = agent.owned_domains().await.unwrap();
    assert_eq!(
        owned.iter().map(|d| d.vm_id.as_str()).collect::<Vec<_>>(),
        ["taken"]
    );
    assert_eq!(agent.store().vms().await.unwrap().len(), 1);
}

#[tokio::test]
async fn reconcile_adopts_restarts_redefines_and_removes_only_owned_orphans() {
    let dir = data_dir();
    let config = test_driver_config(dir.path(), "reconcile");
    let agent = open_agent(config.clone()).await;
    agent.reconcile().await.unwrap();
    for id in ["keep", "crashed", "lost", "going"] {
        agent.create_vm(spec(id, "blank")).await.unwrap();
    }
    let keep_uuid = agent.store().vm("keep").await.unwrap().unwrap().domain_uuid;

    // What a host reboot, an operator's virsh and a crash mid-delete leave behind:
    let crashed = agent.domain_name("crashed");
    let lost = agent.domain_name("lost");
    agent
        .with_hypervisor(move |h| {
            h.stop(&crashed, std::time::Duration::ZERO)?;
            h.remove(&lost)
        })
        .await
        .unwrap();
    agent
        .store()
        .set_desired("going", Desired::Deleted)
        .await
        .unwrap();
    // A domain with this node's metadata but no record (a crash between define and insert),
    // and a foreign domain the agent must never touch.
    let orphan_spec = spec("orphan", "blank");
    let image = config.images["blank"].clone();
    let orphan_xml = render_domain_xml(&decloud_node_agent::DomainPlan {
        spec: &orphan_spec,
        node_id: agent.identity().node_id,
        domain_type: config.domain_type,
        image: &image,
        disk: dir.path().join("orphan.qcow2"),
        seed: dir.path().join("orphan.iso"),
        console_log: dir.path().join("orphan.log"),
        network: &config.network,
        shaping: config.bandwidth_shaping,
        pci_devices: &[],
    });
    let orphan_name = agent.domain_name("orphan");
    let foreign_xml = orphan_xml
        .replace(&orphan_name, "someone-elses-vm")
        .replace(
            &agent.identity().node_id.to_string(),
            &format!("0x{}", "ee".repeat(32)),
        );
    let other_node_xml = orphan_xml
        .replace(&orphan_name, &format!("{DOMAIN_PREFIX}other-node"))
        .replace(
            &agent.identity().node_id.to_string(),
            &format!("0x{}", "dd".repeat(32)),
        );
    agent
        .with_hypervisor(move |h| {
            for xml in [&orphan_xml, &foreign_xml, &other_node_xml] {
                h.define(xml)?;
            }
            h.start("someone-elses-vm")
        })
        .await
        .unwrap();

    let report = agent.reconcile().await.unwrap();
    assert_eq!(report.adopted, ["keep"]);
    assert_eq!(report.restarted, ["crashed"]);
    assert_eq!(report.redefined, ["lost"]);
    assert_eq!(report.deletions_finished, ["going"]);
    assert_eq!(report.orphans_removed, ["orphan"]);
    assert!(report.failed.is_empty());

    // The driver is shared by every test in this process, so check only this test's names.
    let names = agent
        .with_hypervisor(|h| h.all_domain_names())
        .await
        .unwrap();
    for present in [
        agent.domain_name("crashed"),
        agent.domain_name("keep"),
        agent.domain_name("lost"),
        "decloud-other-node".to_owned(),
        "someone-elses-vm".to_owned(),
        "test".to_owned(),
    ] {
        assert!(names.contains(&present), "{present} missing from {names:?}");
    }
    for absent in [agent.domain_name("orphan"), agent.domain_name("going")] {
        assert!(!names.contains(&absent), "{absent} still in {names:?}");
    }
    for id in ["keep", "crashed", "lost"] {
        assert_eq!(
            agent.report(id).await.unwrap().state,
            VmState::Running,
            "{id}"
        );
    }
    assert_eq!(
        agent.store().vm("keep").await.unwrap().unwrap().domain_uuid,
        keep_uuid
    );
    assert!(agent.store().vm("going").await.unwrap().is_none());
    assert!(!agent.vm_dir("going").exists());
    let foreign_active = agent
        .with_hypervisor(|h| h.is_active("someone-elses-vm"))
        .await
        .unwrap();
    assert_eq!(foreign_active, Some(true));

    // A second pass changes nothing.
    let again = agent.reconcile().await.unwrap();
    assert_eq!(again.adopted, ["crashed", "keep", "lost"]);
    assert!(again.orphans_removed.is_empty() && again.restarted.is_empty());
}

#[tokio::test]
async fn observe_records_a_guest_power_off() {
    let dir = data_dir();
    let agent = open_agent(test_driver_config(dir.path(), "observe")).await;
    agent.reconcile().await.unwrap();
    agent.create_vm(spec("observed", "blank")).await.unwrap();
    let name = agent.domain_name("observed");
    agent
        .with_hypervisor(move |h| h.stop(&name, std::time::Duration::ZERO))
        .await
        .unwrap();
    agent.observe().await.unwrap();
    let record = agent.store().vm("observed").await.unwrap().unwrap();
    assert_eq!(
        (record.state, record.desired),
        (VmState::Stopped, Desired::Stopped)
    );
    let last = agent.store().pending_events().await.unwrap().pop().unwrap();
    assert_eq!(last.reason.as_deref(), Some("guest powered off"));
}

/// Every check is listed from the start, not yet run; after an observation round each has
/// run with its time and reason. A command check goes to libvirt, which on the test driver
/// has no guest agent to carry it (real guests: `tests/readiness.rs`).
#[tokio::test]
async fn readiness_lists_every_check_and_reports_each_run() {
    let dir = data_dir();
    let agent = open_agent(test_driver_config(dir.path(), "readiness")).await;
    agent.reconcile().await.unwrap();
    let mut checked = spec("checked", "blank");
    checked.readiness = vec![
        ReadinessProbe::CloudInit,
        ReadinessProbe::Exec {
            command: vec!["/bin/true".into()],
        },
    ];
    let report = agent.create_vm(checked).await.unwrap();
    assert!(!report.readiness.ready);
    assert_eq!(report.readiness.probes.len(), 2);
    for probe in &report.readiness.probes {
        assert!(!probe.ok && probe.checked_at.is_none(), "{probe:?}");
        assert_eq!(probe.detail.as_deref(), Some("not checked yet"));
    }
    agent.observe().await.unwrap();
    let report = agent.report("checked").await.unwrap();
    assert!(!report.readiness.ready);
    let [cloud_init, command] = &report.readiness.probes[..] else {
        panic!("{report:?}")
    };
    assert!(cloud_init.checked_at.is_some() && command.checked_at.is_some());
    assert_eq!(
        cloud_init.detail.as_deref(),
        Some("cloud-init has not finished")
    );
    let detail = command.detail.as_deref().unwrap();
    assert!(detail.contains("not supported"), "{detail}");
    agent.delete_vm("checked").await.unwrap();
}

#[tokio::test]
async fn commands_execute_once_per_id() {
    let dir = data_dir();
    let agent = open_agent(test_driver_config(dir.path(), "commands")).await;
    agent.reconcile().await.unwrap();
    let create = Command {
        id: "cmd-1".into(),
        action: CommandAction::CreateVm {
            spec: spec("once", "blank"),
        },
    };
    let first = agent.execute(create.clone()).await.unwrap();
    // The same id with other user-data (an orchestrator that put it together again after a
    // restart) runs nothing either: the ack names the user-data the VM was created from.
    let mut rebuilt = create.clone();
    let CommandAction::CreateVm {
        spec: ref mut rebuilt_spec,
    } = rebuilt.action
    else {
        unreachable!()
    };
    rebuilt_spec.user_data = "#cloud-config\nhostname: other\n".into();
    let again = agent.execute(rebuilt).await.unwrap();
    assert_eq!(first, again);
    let CommandAction::CreateVm { spec: created } = &create.action else {
        unreachable!()
    };
    assert!(
        matches!(&first.outcome, AckOutcome::Done { vm: Some(vm), user_data_sha256: Some(digest) }
            if vm.state == VmState::Running
                && *digest == decloud_sdk::agent_protocol::user_data_sha256(&created.user_data))
    );
    assert_eq!(agent.owned_domains().await.unwrap().len(), 1);

    // A new command id for the same VM is a new request, and refused.
    let duplicate = Command {
        id: "cmd-2".into(),
        action: CommandAction::CreateVm {
            spec: spec("once", "blank"),
        },
    };
    let ack = agent.execute(duplicate).await.unwrap();
    assert!(
        matches!(ack.outcome, AckOutcome::Failed { ref error } if error.contains("already exists"))
    );

    let delete = Command {
        id: "cmd-3".into(),
        action: CommandAction::DeleteVm {
            vm_id: "once".into(),
        },
    };
    assert_eq!(
        agent.execute(delete.clone()).await.unwrap().outcome,
        AckOutcome::Done {
            vm: None,
            user_data_sha256: None,
        }
    );
    // Repeating the delete repeats its ack; it does not fail with "no such vm".
    assert_eq!(
        agent.execute(delete).await.unwrap().outcome,
        AckOutcome::Done {
            vm: None,
            user_data_sha256: None,
        }
    );
    assert!(agent.owned_domains().await.unwrap().is_empty());
}

/// The `<hostdev>` PCI addresses (`dddd:bb:ss.f`) of a domain's XML, in document order.
fn hostdev_addresses(xml: &str) -> Vec<String> {
    let doc = roxmltree::Document::parse(xml).unwrap();
    doc.descendants()
        .filter(|n| {
            n.has_tag_name("hostdev")
                && n.attribute("mode") == Some("subsystem")
                && n.attribute("type") == Some("pci")
                && n.attribute("managed") == Some("yes")
        })
        .filter_map(|h| h.descendants().find(|n| n.has_tag_name("address")))
        .map(|a| {
            let part = |name: &str| {
                u32::from_str_radix(a.attribute(name).unwrap().trim_start_matches("0x"), 16)
                    .unwrap()
            };
            format!(
                "{:04x}:{:02x}:{:02x}.{:x}",
                part("domain"),
                part("bus"),
                part("slot"),
                part("function")
            )
        })
        .collect()
}

async fn libvirt_xml(agent: &decloud_node_agent::Agent, vm_id: &str) -> Option<String> {
    let name = agent.domain_name(vm_id);
    agent
        .with_hypervisor(move |h| h.domain_xml(&name))
        .await
        .unwrap()
}

/// GPU passthrough on a node whose GPUs come from a fake sysfs tree (this host has none):
/// one passable GPU with its audio function in IOMMU group 7, and a second GPU without an
/// IOMMU group. The first GPU VM gets the GPU (and its group's audio function) as VFIO
/// hostdevs in the domain libvirt holds; a second is refused with the reason and leaves
/// nothing behind; the reservation survives an agent restart (the domain, lost meanwhile, is
/// defined again with it) and is released by the delete.
#[tokio::test]
async fn gpus_are_reserved_passed_through_kept_across_restarts_and_released() {
    let dir = data_dir();
    let sysfs = tempfile::tempdir().unwrap();
    fake_sysfs(
        sysfs.path(),
        &[
            ("0000:01:00.0", "0x030000", Some(7)),
            ("0000:01:00.1", "0x040300", Some(7)),
            ("0000:02:00.0", "0x030000", None),
        ],
    );
    let mut node = resources();
    node.gpus = decloud_node_agent::discover_gpus(sysfs.path());
    assert_eq!(node.gpus.len(), 2);
    let config = test_driver_config(dir.path(), "gpus");
    let agent = open_agent_with(config.clone(), node.clone()).await;
    agent.reconcile().await.unwrap();
    assert_eq!(agent.free_gpus().await.unwrap(), 1);

    let gpu_spec = |id: &str| {
        let mut spec = spec(id, "blank");
        spec.gpus = 1;
        spec
    };
    let report = agent.create_vm(gpu_spec("gpu-a")).await.unwrap();
    assert_eq!(report.state, VmState::Running);
    let xml = libvirt_xml(&agent, "gpu-a").await.unwrap();
    assert_eq!(hostdev_addresses(&xml), ["0000:01:00.0", "0000:01:00.1"]);
    assert_eq!(agent.free_gpus().await.unwrap(), 0);
    // A VM without GPUs gets no hostdev.
    agent.create_vm(spec("gpu-none", "blank")).await.unwrap();
    let xml = libvirt_xml(&agent, "gpu-none").await.unwrap();
    assert!(hostdev_addresses(&xml).is_empty());

    let refused = agent.create_vm(gpu_spec("gpu-b")).await.unwrap_err();
    assert!(matches!(refused, Error::Capacity(_)), "{refused}");
    assert_eq!(
        refused.to_string(),
        "insufficient capacity: 1 GPUs wanted: 0 of this node's 1 passable GPUs are free (1 held by other vms)"
    );
    assert!(agent.store().vm("gpu-b").await.unwrap().is_none());
    assert!(libvirt_xml(&agent, "gpu-b").await.is_none());
    assert!(!agent.vm_dir("gpu-b").exists());

    // The host loses the domain (a reboot with a transient definition, an operator's virsh),
    // and the agent restarts.
    let name = agent.domain_name("gpu-a");
    agent
        .with_hypervisor(move |h| h.remove(&name))
        .await
        .unwrap();
    agent.close().await;
    drop(agent);
    let agent = open_agent_with(config.clone(), node.clone()).await;
    let report = agent.reconcile().await.unwrap();
    // (The test driver forgets every domain when its last connection closes, so the VM
    // without GPUs may have been defined again too, depending on the other tests.)
    assert!(report.redefined.contains(&"gpu-a".to_owned()), "{report:?}");
    assert_eq!(
        agent.store().gpus_of("gpu-a").await.unwrap(),
        ["0000:01:00.0"]
    );
    let xml = libvirt_xml(&agent, "gpu-a").await.unwrap();
    assert_eq!(hostdev_addresses(&xml), ["0000:01:00.0", "0000:01:00.1"]);
    assert!(matches!(
        agent.create_vm(gpu_spec("gpu-b")).await,
        Err(Error::Capacity(_))
    ));

    agent.delete_vm("gpu-a").await.unwrap();
    assert_eq!(agent.free_gpus().await.unwrap(), 1);
    agent.create_vm(gpu_spec("gpu-b")).await.unwrap();
    let xml = libvirt_xml(&agent, "gpu-b").await.unwrap();
    assert_eq!(hostdev_addresses(&xml), ["0000:01:00.0", "0000:01:00.1"]);
    for id in ["gpu-b", "gpu-none"] {
        agent.delete_vm(id).await.unwrap();
    }

    // A node without any GPU says so.
    let plain_dir = data_dir();
    let plain = open_agent(test_driver_config(plain_dir.path(), "gpus-none")).await;
    plain.reconcile().await.unwrap();
    let refused = plain.create_vm(gpu_spec("gpu-c")).await.unwrap_err();
    assert_eq!(
        refused.to_string(),
        "insufficient capacity: 1 GPUs wanted: this node has no GPU"
    );
}

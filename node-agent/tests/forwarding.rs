//! Port forwarding through the kernel, with real parts: the system libvirtd, a NAT network
//! the agent creates, real QEMU guests (the busybox test guest serving its user-data value
//! with `httpd` on port 80), real iptables rules, and a client in a network namespace
//! joined to the node by a veth pair, standing in for a host on the internet.
//!
//! Each test has its own network, subnet, public port range and namespace, so they run in
//! parallel; `HostCleanup` removes domains, rules and the network even when a test fails.

mod common;

use std::time::Duration;

use common::{peer::TestOrchestratorPeer, *};
use decloud_node_agent::{
    Agent, COMMENT_PREFIX, Config, ConfigLayer, Error, Identity, ifb_name, node_tag,
    test_guest::{ADDRESS_MARKER, HTTP_PORT, VALUE_MARKER},
};
use decloud_sdk::agent_protocol::{
    self, AckOutcome, CommandAction, PortForward, PortProtocol, PortSpec, QualityTier, VmSpec,
    VmState,
};

const BOOT_LIMIT: Duration = Duration::from_secs(240);

fn config_from(toml_text: &str) -> Config {
    let layer: ConfigLayer = toml::from_str(toml_text).unwrap();
    Config::resolve(Some(layer), ConfigLayer::default(), ConfigLayer::default()).unwrap()
}

fn web_spec(id: &str, value: &str, ports: &[(PortProtocol, u16)]) -> VmSpec {
    let mut spec = test_guest_spec(id, value);
    spec.ports = ports
        .iter()
        .map(|(protocol, guest)| PortSpec {
            guest: *guest,
            protocol: *protocol,
        })
        .collect();
    spec
}

/// How many rules of the saved tables carry exactly `comment`.
fn count_comment(saved: &str, comment: &str) -> usize {
    saved
        .lines()
        .filter(|l| l.split_whitespace().any(|w| w.trim_matches('"') == comment))
        .count()
}

/// The comments of this node's rules in the saved tables.
fn node_comments(saved: &str, tag: &str) -> Vec<String> {
    let prefix = format!("{COMMENT_PREFIX}{tag}:");
    let mut comments: Vec<String> = saved
        .lines()
        .flat_map(|l| l.split_whitespace())
        .map(|w| w.trim_matches('"'))
        .filter(|w| w.starts_with(&prefix))
        .map(str::to_owned)
        .collect();
    comments.sort();
    comments
}

fn rule_comment(tag: &str, vm: &str, forward: &PortForward, ip: &str) -> String {
    format!(
        "{COMMENT_PREFIX}{tag}:{vm}:{}:{}:{ip}:{}",
        forward.protocol, forward.public, forward.guest
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forwarded_port_reaches_the_guest_and_is_freed_when_the_vm_is_deleted() {
    require_libvirtd();
    let dir = data_dir();
    let machine = "forwarding-one";
    let network = "dcfwd-one";
    let node_id = agent_protocol::node_id(agent_protocol::machine_id(machine), OPERATOR);
    let _cleanup = HostCleanup {
        node_id,
        network: network.into(),
        extra_rules: vec![],
    };
    let outside = OutsideHost::new("one", 31);
    // Two public ports only, so the test can exhaust the range.
    let config = config_from(&nat_vm_config_toml(
        dir.path(),
        machine,
        None,
        network,
        "192.168.231.0/24",
        "31000-31001",
    ));
    let (identity, _) = Identity::load_or_create(&config).unwrap();
    let tag = node_tag(&identity.node_id);
    let agent = Agent::open(config, identity, resources()).await.unwrap();
    agent.reconcile().await.unwrap();

    let value = unique_value();
    let web = agent
        .create_vm(web_spec("web", &value, &[(PortProtocol::Tcp, HTTP_PORT)]))
        .await
        .unwrap();
    let forward = PortForward {
        guest: HTTP_PORT,
        public: 31000,
        protocol: PortProtocol::Tcp,
    };
    assert_eq!(web.forwards, vec![forward]);
    // The reservation is the first address of the subnet's lower half; the rule points at
    // it before the guest has even booted.
    let web_comment = rule_comment(&tag, "web", &forward, "192.168.231.2");
    let saved = iptables_save();
    assert_eq!(count_comment(&saved, &web_comment), 2, "{saved}");

    // The Basic tier's 10 Mbit/s cap is in place both ways: on the tap (to the guest) and on
    // the IFB device its ingress is redirected to (from the guest).
    let web_domain = agent.domain_name("web");
    let tap = agent
        .with_hypervisor(move |h| h.nic_device(&web_domain))
        .await
        .unwrap()
        .unwrap();
    let ifb = ifb_name(&tag, "web");
    for device in [tap.as_str(), ifb.as_str()] {
        let classes = std::process::Command::new("tc")
            .args(["class", "show", "dev", device])
            .output()
            .unwrap();
        let classes = String::from_utf8_lossy(&classes.stdout);
        assert!(classes.contains("rate 10Mbit"), "{device}: {classes}");
    }
    let console = agent.vm_dir("web").join("console.log");
    wait_for_console(&console, &format!("{VALUE_MARKER}{value}"), BOOT_LIMIT).await;
    wait_for_console(
        &console,
        &format!("{ADDRESS_MARKER}192.168.231.2"),
        BOOT_LIMIT,
    )
    .await;
    let body = outside
        .get_eventually(31000, "/", Duration::from_secs(60))
        .await;
    assert_eq!(body.trim(), value);
    // The node itself reaches the forward at its own (non-loopback) address too.
    let from_node = http_get(&format!("{}:31000", outside.node_address()), "/").unwrap();
    let (head, body) = from_node.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{from_node}");
    assert_eq!(body.trim(), value);
    // The address libvirt reports comes from the network's DHCP lease.
    agent.observe().await.unwrap();
    let report = agent.report("web").await.unwrap();
    assert_eq!(report.addresses, vec!["192.168.231.2".to_owned()]);
    let beat = agent.heartbeat(1).await.unwrap();
    assert_eq!(beat.public_address.as_deref(), Some("203.0.113.7"));
    assert_eq!(beat.vms[0].forwards, vec![forward]);

    // Two ports asked, one left: refused, and nothing of it is made or recorded.
    let before = iptables_save();
    let refused = agent
        .create_vm(web_spec(
            "greedy",
            "x",
            &[(PortProtocol::Tcp, HTTP_PORT), (PortProtocol::Udp, 53)],
        ))
        .await;
    assert!(
        matches!(&refused, Err(Error::Capacity(m)) if m.contains("31000-31001")),
        "{refused:?}"
    );
    assert!(agent.store().vm("greedy").await.unwrap().is_none());
    assert!(!agent.vm_dir("greedy").exists());
    assert_eq!(
        node_comments(&iptables_save(), &tag),
        node_comments(&before, &tag)
    );

    // A second VM gets the other port, never the one the first holds.
    let second = agent
        .create_vm(web_spec("second", "y", &[(PortProtocol::Tcp, HTTP_PORT)]))
        .await
        .unwrap();
    assert_eq!(second.forwards[0].public, 31001);

    // Deleting the first removes its rules and frees its port for the next VM.
    agent.delete_vm("web").await.unwrap();
    let saved = iptables_save();
    assert_eq!(count_comment(&saved, &web_comment), 0, "{saved}");
    assert!(outside.get(31000, "/").is_err());
    let links = std::process::Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&links.stdout).contains(&ifb));
    let third = agent
        .create_vm(web_spec("third", "z", &[(PortProtocol::Tcp, HTTP_PORT)]))
        .await
        .unwrap();
    assert_eq!(third.forwards[0].public, 31000);
    // Its address is a fresh one, not the deleted VM's (whose lease the DHCP server keeps).
    let third_address = agent.store().attachment("third").await.unwrap().unwrap().ip;
    assert_eq!(third_address.to_string(), "192.168.231.4");

    // Another node on the same network, knowing nothing of this one's history, skips the
    // address the DHCP server still leases to the deleted VM's MAC: dnsmasq would not give
    // it to a new MAC, and the guest would come up on an address no rule points at.
    let web_mac = agent.mac_address("web");
    let leases = agent
        .with_hypervisor(move |h| h.dhcp_leases(network))
        .await
        .unwrap();
    assert!(
        leases
            .iter()
            .any(|l| l.mac == web_mac && l.ip.to_string() == "192.168.231.2"),
        "{leases:?}"
    );
    let other_dir = data_dir();
    let other_machine = "forwarding-one-other";
    let other_node = agent_protocol::node_id(agent_protocol::machine_id(other_machine), OPERATOR);
    let _other_cleanup = HostCleanup {
        node_id: other_node,
        network: network.into(),
        extra_rules: vec![],
    };
    let other_config = config_from(&nat_vm_config_toml(
        other_dir.path(),
        other_machine,
        None,
        network,
        "192.168.231.0/24",
        "31010-31011",
    ));
    let (other_identity, _) = Identity::load_or_create(&other_config).unwrap();
    let other = Agent::open(other_config, other_identity, resources())
        .await
        .unwrap();
    other
        .create_vm(web_spec("late", "w", &[(PortProtocol::Tcp, HTTP_PORT)]))
        .await
        .unwrap();
    let late_address = other.store().attachment("late").await.unwrap().unwrap().ip;
    assert_eq!(late_address.to_string(), "192.168.231.5");
    wait_for_console(
        &other.vm_dir("late").join("console.log"),
        &format!("{ADDRESS_MARKER}{late_address}"),
        BOOT_LIMIT,
    )
    .await;
    other.delete_vm("late").await.unwrap();
    other.close().await;

    for vm in ["second", "third"] {
        agent.delete_vm(vm).await.unwrap();
    }
    assert!(node_comments(&iptables_save(), &tag).is_empty());
    let hosts = agent
        .with_hypervisor(move |h| h.network(network))
        .await
        .unwrap()
        .hosts;
    assert!(hosts.is_empty(), "reservations left: {hosts:?}");
    agent.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkilled_agent_restarts_with_every_forward_working_and_no_rule_duplicated() {
    require_libvirtd();
    let dir = data_dir();
    let machine = "forwarding-sigkill";
    let network = "dcfwd-kill";
    let node_id = agent_protocol::node_id(agent_protocol::machine_id(machine), OPERATOR);
    let tag = node_tag(&node_id);
    let hand_comment = format!("hand-made-{}", std::process::id());
    let hand_spec = [
        "-p",
        "tcp",
        "--dport",
        "42999",
        "-m",
        "comment",
        "--comment",
        hand_comment.as_str(),
        "-j",
        "DNAT",
        "--to-destination",
        "192.168.232.200:80",
    ];
    let hand_rule = |action: &'static str| -> Vec<String> {
        ["-t", "nat", action, "PREROUTING"]
            .iter()
            .chain(hand_spec.iter())
            .map(|a| (*a).to_owned())
            .collect()
    };
    let delete_hand_rule = hand_rule("-D");
    let _cleanup = HostCleanup {
        node_id,
        network: network.into(),
        extra_rules: vec![delete_hand_rule],
    };
    let outside = OutsideHost::new("kill", 32);
    let peer = TestOrchestratorPeer::bind().await;
    let config_path = dir.path().join("agent.toml");
    std::fs::write(
        &config_path,
        nat_vm_config_toml(
            dir.path(),
            machine,
            Some(&peer.url()),
            network,
            "192.168.232.0/24",
            "31200-31209",
        ),
    )
    .unwrap();
    let agent_log = dir.path().join("agent.log");

    let mut agent = AgentProcess::start(&config_path, &agent_log);
    let mut session = peer.accept().await;
    let mut vms = Vec::new();
    for (n, id) in ["alpha", "beta", "gamma"].into_iter().enumerate() {
        let value = unique_value();
        let mut spec = web_spec(id, &value, &[(PortProtocol::Tcp, HTTP_PORT)]);
        // Three VMs on a 2-CPU host: half a core each.
        spec.quality = QualityTier::Balanced;
        session
            .command(&format!("create-{id}"), CommandAction::CreateVm { spec })
            .await;
        let ack = session.next_ack().await;
        let AckOutcome::Done {
            vm: Some(report), ..
        } = &ack.outcome
        else {
            panic!("{ack:?}");
        };
        assert_eq!(report.state, VmState::Running);
        let forward = report.forwards[0];
        let ip = format!("192.168.232.{}", n + 2);
        vms.push((id, value, forward, rule_comment(&tag, id, &forward, &ip)));
    }
    let publics: Vec<u16> = vms.iter().map(|v| v.2.public).collect();
    assert_eq!(publics, vec![31200, 31201, 31202]);
    for (_, value, forward, _) in &vms {
        let body = outside
            .get_eventually(forward.public, "/", BOOT_LIMIT)
            .await;
        assert_eq!(&body.trim(), value);
    }

    agent.sigkill();
    drop(session);
    // While the agent is down: a rule made by hand outside the agent's chains, a rule of
    // this node for a VM it has no record of, and a duplicate of one of its own rules.
    let insert_hand_rule = hand_rule("-I");
    iptables(
        &insert_hand_rule
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let ghost = format!("{COMMENT_PREFIX}{tag}:ghost:tcp:31205:192.168.232.99:80");
    iptables(&[
        "-t",
        "nat",
        "-A",
        "DECLOUD-DNAT",
        "-p",
        "tcp",
        "--dport",
        "31205",
        "-m",
        "comment",
        "--comment",
        &ghost,
        "-j",
        "DNAT",
        "--to-destination",
        "192.168.232.99:80",
    ]);
    let duplicated = &vms[1];
    iptables(&[
        "-t",
        "filter",
        "-A",
        "DECLOUD-FWD",
        "-d",
        "192.168.232.3/32",
        "-p",
        "tcp",
        "-m",
        "comment",
        "--comment",
        &duplicated.3,
        "-j",
        "ACCEPT",
    ]);
    assert_eq!(count_comment(&iptables_save(), &duplicated.3), 3);

    let mut agent = AgentProcess::start(&config_path, &agent_log);
    let mut session = peer.accept().await;
    let beat = session.next_heartbeat().await;
    assert_eq!(beat.public_address.as_deref(), Some("203.0.113.7"));
    let mut reported: Vec<(String, Vec<PortForward>)> = beat
        .vms
        .iter()
        .map(|v| (v.id.clone(), v.forwards.clone()))
        .collect();
    reported.sort_by(|a, b| a.0.cmp(&b.0));
    let mut expected: Vec<(String, Vec<PortForward>)> = vms
        .iter()
        .map(|(id, _, forward, _)| ((*id).to_owned(), vec![*forward]))
        .collect();
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(reported, expected);

    let saved = iptables_save();
    for (_, _, _, comment) in &vms {
        // One DNAT rule and one ACCEPT rule per forward, none twice.
        assert_eq!(count_comment(&saved, comment), 2, "{comment}\n{saved}");
    }
    assert_eq!(count_comment(&saved, &ghost), 0, "{saved}");
    assert_eq!(count_comment(&saved, &hand_comment), 1, "{saved}");
    for jump in [
        "-A PREROUTING -j DECLOUD-DNAT",
        "-A OUTPUT -j DECLOUD-DNAT",
        "-A FORWARD -j DECLOUD-FWD",
    ] {
        assert_eq!(saved.lines().filter(|l| *l == jump).count(), 1, "{saved}");
    }
    for (_, value, forward, _) in &vms {
        let body = outside
            .get_eventually(forward.public, "/", Duration::from_secs(30))
            .await;
        assert_eq!(&body.trim(), value);
    }
    let log = std::fs::read_to_string(&agent_log).unwrap();
    assert!(
        log.contains("adopted: [\"alpha\", \"beta\", \"gamma\"]"),
        "{log}"
    );

    for (id, _, _, _) in &vms {
        session
            .command(
                &format!("delete-{id}"),
                CommandAction::DeleteVm {
                    vm_id: (*id).to_owned(),
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
    }
    assert!(node_comments(&iptables_save(), &tag).is_empty());
    assert_eq!(count_comment(&iptables_save(), &hand_comment), 1);
    agent.sigterm();
}

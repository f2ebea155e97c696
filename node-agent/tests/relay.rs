//! Relays, with real parts: network namespaces standing in for the internet, a relay, a NAT
//! router that lets only outbound connections through, and a client; `wireguard-go` tunnels;
//! iptables in each namespace; a real Caddy on the relay; and a real QEMU guest (the busybox
//! test guest serving its user-data value with `httpd` on port 80) on the node, which is this
//! host's own namespace behind the NAT router.
//!
//! ```text
//!  client 172.31.71.3 ─┐
//!  relay  172.31.71.2 ─┼─ bridge (namespace "internet")
//!  NAT    172.31.71.4 ─┘  └─ 172.31.72.1 ── 172.31.72.2 node (this host) ── libvirt NAT ── guest
//! ```
//!
//! Everything host-global the test makes is named after its process id and removed by Drop
//! guards, also when it fails.

mod common;

use std::{
    net::Ipv4Addr,
    sync::mpsc,
    time::{Duration, Instant},
};

use alloy::signers::local::PrivateKeySigner;
use common::{netns::*, *};
use decloud_node_agent::{
    Agent, Config, ConfigLayer, Identity, RelayConfig, TunnelKeys, WgInterface,
    test_guest::HTTP_PORT,
};
use decloud_sdk::{
    agent_protocol::{
        self, AckOutcome, Command as AgentCommand, CommandAction, PortProtocol, PortSpec,
    },
    relay::{
        RelayAssignment, RelayForward, RelayReport, RelayRoute, RelayedNode, RelayedVm,
        TunnelBinding,
    },
};

const BOOT_LIMIT: Duration = Duration::from_secs(240);
const RELAY_ADDRESS: &str = "172.31.71.2";
const CLIENT_ADDRESS: &str = "172.31.71.3";
const NAT_ADDRESS: &str = "172.31.71.4";
const TUNNEL_SUBNET: &str = "10.97.71.0/24";
const RELAY_PORT: u16 = 24000;
const WG_PORT: u16 = 51820;

/// The namespaces, links and routes of the topology; all removed when dropped.
struct Topology {
    internet: String,
    relay: String,
    client: String,
    nat: String,
    host_link: String,
}

impl Topology {
    fn new(unique: &str) -> Self {
        let this = Self {
            internet: format!("dcri-{unique}"),
            relay: format!("dcrr-{unique}"),
            client: format!("dcrc-{unique}"),
            nat: format!("dcrn-{unique}"),
            host_link: format!("dcrh-{unique}"),
        };
        this.remove();
        for ns in [&this.internet, &this.relay, &this.client, &this.nat] {
            must("ip", &["netns", "add", ns]);
            in_ns(ns, &["ip", "link", "set", "lo", "up"]).unwrap();
        }
        in_ns(
            &this.internet,
            &["ip", "link", "add", "br0", "type", "bridge"],
        )
        .unwrap();
        in_ns(&this.internet, &["ip", "link", "set", "br0", "up"]).unwrap();
        for (ns, address, port) in [
            (&this.relay, RELAY_ADDRESS, "p-relay"),
            (&this.client, CLIENT_ADDRESS, "p-client"),
            (&this.nat, NAT_ADDRESS, "p-nat"),
        ] {
            must(
                "ip",
                &[
                    "link",
                    "add",
                    "eth0",
                    "netns",
                    ns,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    port,
                    "netns",
                    &this.internet,
                ],
            );
            in_ns(
                &this.internet,
                &["ip", "link", "set", port, "master", "br0"],
            )
            .unwrap();
            in_ns(&this.internet, &["ip", "link", "set", port, "up"]).unwrap();
            in_ns(
                ns,
                &["ip", "addr", "add", &format!("{address}/24"), "dev", "eth0"],
            )
            .unwrap();
            in_ns(ns, &["ip", "link", "set", "eth0", "up"]).unwrap();
        }
        // The node (this host) reaches the internet only through the NAT namespace.
        must(
            "ip",
            &[
                "link",
                "add",
                &this.host_link,
                "type",
                "veth",
                "peer",
                "name",
                "inside",
                "netns",
                &this.nat,
            ],
        );
        must(
            "ip",
            &["addr", "add", "172.31.72.2/30", "dev", &this.host_link],
        );
        must("ip", &["link", "set", &this.host_link, "up"]);
        must(
            "ip",
            &["route", "add", "172.31.71.0/24", "via", "172.31.72.1"],
        );
        for step in [
            vec!["ip", "addr", "add", "172.31.72.1/30", "dev", "inside"],
            vec!["ip", "link", "set", "inside", "up"],
            vec!["sysctl", "-qw", "net.ipv4.ip_forward=1"],
            vec![
                "iptables",
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-o",
                "eth0",
                "-j",
                "MASQUERADE",
            ],
            vec!["iptables", "-P", "FORWARD", "DROP"],
            vec![
                "iptables", "-A", "FORWARD", "-i", "inside", "-o", "eth0", "-j", "ACCEPT",
            ],
            vec![
                "iptables",
                "-A",
                "FORWARD",
                "-i",
                "eth0",
                "-m",
                "conntrack",
                "--ctstate",
                "ESTABLISHED,RELATED",
                "-j",
                "ACCEPT",
            ],
            vec!["iptables", "-P", "INPUT", "DROP"],
            vec![
                "iptables",
                "-A",
                "INPUT",
                "-m",
                "conntrack",
                "--ctstate",
                "ESTABLISHED,RELATED",
                "-j",
                "ACCEPT",
            ],
            vec!["iptables", "-A", "INPUT", "-i", "inside", "-j", "ACCEPT"],
        ] {
            in_ns(&this.nat, &step).unwrap();
        }
        this
    }

    fn remove(&self) {
        let _ = sh(
            "ip",
            &["route", "del", "172.31.71.0/24", "via", "172.31.72.1"],
        );
        let _ = sh("ip", &["link", "del", &self.host_link]);
        for ns in [&self.internet, &self.relay, &self.client, &self.nat] {
            let _ = sh("ip", &["netns", "del", ns]);
        }
    }

    /// `curl` from the client: (HTTP status, body), or curl's error.
    fn client_curl(&self, args: &[&str]) -> Result<(u16, String), String> {
        let mut all = vec!["curl", "-sS", "--max-time", "5", "-w", "\n%{http_code}"];
        all.extend(args);
        let text = in_ns(&self.client, &all)?;
        let (body, status) = text.rsplit_once('\n').ok_or("no status")?;
        Ok((
            status.trim().parse().map_err(|_| "bad status")?,
            body.to_owned(),
        ))
    }

    fn client_get_eventually(&self, args: &[&str], limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            match self.client_curl(args) {
                Ok((200, body)) => return body,
                other if Instant::now() > deadline => {
                    panic!("no answer to {args:?} within {limit:?}: {other:?}")
                }
                _ => std::thread::sleep(Duration::from_millis(500)),
            }
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.remove();
    }
}

type Job = Box<dyn FnOnce(&tokio::runtime::Runtime) + Send>;

/// A thread inside a network namespace with its own runtime: what it runs, and every process
/// and socket that makes, lives in that namespace.
struct NsThread {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NsThread {
    fn new(namespace: &str) -> Self {
        let (jobs, receiver) = mpsc::channel::<Job>();
        let path = format!("/var/run/netns/{namespace}");
        let thread = std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            let file = std::fs::File::open(&path).unwrap();
            // SAFETY: setns(2) on a descriptor we own; it changes only this thread.
            assert_eq!(
                unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
                0
            );
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            while let Ok(job) = receiver.recv() {
                job(&runtime);
            }
        });
        Self {
            jobs: Some(jobs),
            thread: Some(thread),
        }
    }

    fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&tokio::runtime::Runtime) -> T + Send + 'static,
    ) -> T {
        let (done, result) = mpsc::channel();
        self.jobs
            .as_ref()
            .unwrap()
            .send(Box::new(move |runtime| {
                let _ = done.send(f(runtime));
            }))
            .unwrap();
        result.recv().expect("the namespace thread answers")
    }
}

impl Drop for NsThread {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn config_from(toml_text: &str) -> Config {
    let layer: ConfigLayer = toml::from_str(toml_text).unwrap();
    Config::resolve(Some(layer), ConfigLayer::default(), ConfigLayer::default()).unwrap()
}

fn relay_config() -> RelayConfig {
    RelayConfig {
        listen_port: WG_PORT,
        public_address: RELAY_ADDRESS.into(),
        tunnel_subnet: TUNNEL_SUBNET.into(),
        port_range: format!("{RELAY_PORT}-{}", RELAY_PORT + 99),
        ingress: Some(
            toml::from_str(&format!(
                "admin = \"{}\"\nlisten = \":443\"\ntls = \"internal\"\n",
                NsCaddy::ADMIN
            ))
            .unwrap(),
        ),
    }
}

/// `iptables-save` of a namespace's nat and filter tables, counters left out.
fn saved_rules(namespace: &str) -> String {
    let mut out = in_ns(namespace, &["iptables-save", "-t", "nat"]).unwrap();
    out.push_str(&in_ns(namespace, &["iptables-save", "-t", "filter"]).unwrap());
    out.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with(':'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs `action` as a command of the relay agent, on its namespace's thread.
fn relay_command(thread: &NsThread, relay: &Agent, id: &str, action: CommandAction) -> AckOutcome {
    let (relay, id) = (relay.clone(), id.to_owned());
    thread.run(move |runtime| {
        runtime
            .block_on(relay.execute(AgentCommand { id, action }))
            .unwrap()
            .outcome
    })
}

fn relay_heartbeat(thread: &NsThread, relay: &Agent) -> RelayReport {
    let relay = relay.clone();
    thread.run(move |runtime| runtime.block_on(relay.heartbeat(1)).unwrap().relay.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_vm_behind_nat_is_reached_through_the_relay_by_port_and_by_name() {
    require_libvirtd();
    let unique = format!("{}", std::process::id() % 100_000);
    let dir = data_dir();
    let machine = format!("relay-node-{unique}");
    let network = format!("dcrly-{unique}");
    let node_id = agent_protocol::node_id(agent_protocol::machine_id(&machine), OPERATOR);
    let _cleanup = HostCleanup {
        node_id,
        network: network.clone(),
        extra_rules: vec![],
    };
    let topology = Topology::new(&unique);

    // The relay: a node agent with a [relay] section (on libvirt's test driver: it runs no
    // VM here) in its namespace, with its own Caddy.
    let caddy = NsCaddy::start(&topology.relay);
    let relay_thread = NsThread::new(&topology.relay);
    let relay_dir = tempfile::tempdir().unwrap();
    let mut relay_config_resolved =
        test_driver_config(relay_dir.path(), &format!("relay-{unique}"));
    relay_config_resolved.relay = Some(relay_config());
    let relay_node_id = {
        let config = relay_config_resolved.clone();
        agent_protocol::node_id(
            agent_protocol::machine_id(config.machine_id.as_deref().unwrap()),
            OPERATOR,
        )
    };
    let relay_agent: Agent = relay_thread.run(move |runtime| {
        runtime.block_on(async move {
            let agent = open_agent(relay_config_resolved).await;
            agent.reconcile().await.unwrap();
            agent
        })
    });
    let relay = relay_agent.relay().unwrap();
    let relay_key_file = relay_dir
        .path()
        .join("data")
        .join(decloud_node_agent::RELAY_KEY_FILE);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&relay_key_file)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let report = relay_heartbeat(&relay_thread, &relay_agent);
    assert_eq!(report.key, relay.public_key());
    assert_eq!(report.endpoint, format!("{RELAY_ADDRESS}:{WG_PORT}"));
    assert!(report.nodes.is_empty() && report.traffic.is_empty());

    // The node, declared behind the NAT, with a VM forwarding its HTTP port.
    let config = config_from(&format!(
        "behind_nat = true\n{}",
        nat_vm_config_toml(
            dir.path(),
            &machine,
            None,
            &network,
            "192.168.241.0/24",
            "31400-31409",
        )
    ));
    let (identity, _) = Identity::load_or_create(&config).unwrap();
    let node_key = identity.signer.address();
    let agent = Agent::open(config, identity, resources()).await.unwrap();
    agent.reconcile().await.unwrap();
    // Its heartbeats carry its tunnel key, bound to its node key, before it has a relay.
    let tunnel = agent.heartbeat(1).await.unwrap().tunnel.unwrap();
    tunnel.binding.verify(node_id, node_key).unwrap();
    assert_eq!(tunnel.relay_node_id, None);
    let binding = tunnel.binding;
    let tunnel_key = dir
        .path()
        .join("data")
        .join(decloud_node_agent::TUNNEL_KEY_FILE);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&tunnel_key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let value = unique_value();
    let mut spec = test_guest_spec("web", &value);
    spec.ports = vec![PortSpec {
        guest: HTTP_PORT,
        protocol: PortProtocol::Tcp,
    }];
    let web = agent.create_vm(spec).await.unwrap();
    let node_port = web.forwards[0].public;
    let console = agent.vm_dir("web").join("console.log");
    wait_for_console(
        &console,
        &format!("{}{value}", decloud_node_agent::test_guest::VALUE_MARKER),
        BOOT_LIMIT,
    )
    .await;
    // The node cannot be reached from the internet: its NAT lets only outbound through.
    assert!(
        topology
            .client_curl(&[&format!("http://{NAT_ADDRESS}:{node_port}/")])
            .is_err()
    );

    // The node dials the relay (told to by the orchestrator's command).
    let node_address: Ipv4Addr = "10.97.71.2".parse().unwrap();
    let assignment = RelayAssignment {
        relay_node_id,
        endpoint: report.endpoint.clone(),
        relay_key: report.key,
        relay_address: report.tunnel_address,
        node_address,
    };
    let ack = agent
        .execute(AgentCommand {
            id: "join-1".into(),
            action: CommandAction::JoinRelay { assignment },
        })
        .await
        .unwrap();
    assert_eq!(
        ack.outcome,
        AckOutcome::Done {
            vm: None,
            user_data_sha256: None,
        }
    );
    let host = format!("web-{unique}.relay.test");
    let published = RelayedNode {
        node_id,
        node_key,
        binding: binding.clone(),
        tunnel_address: node_address,
        vms: vec![RelayedVm {
            vm_id: "web".into(),
            forwards: vec![RelayForward {
                protocol: PortProtocol::Tcp,
                relay_port: RELAY_PORT,
                node_port,
            }],
            routes: vec![RelayRoute {
                host: host.clone(),
                node_port,
            }],
        }],
    };

    // Refused, nothing changed: a tunnel key bound by another key than the node's registered one.
    let rules_before = saved_rules(&topology.relay);
    let stranger = PrivateKeySigner::random();
    let forged = RelayedNode {
        binding: TunnelBinding::sign(&stranger, node_id, binding.key).unwrap(),
        ..published.clone()
    };
    let refused = relay_command(
        &relay_thread,
        &relay_agent,
        "publish-forged",
        CommandAction::PublishNode { node: forged },
    );
    assert!(
        matches!(&refused, AckOutcome::Failed { error } if error.contains("is not bound to node")),
        "{refused:?}"
    );
    assert!(relay.nodes().is_empty());
    assert!(relay.peers().unwrap().is_empty());
    assert_eq!(saved_rules(&topology.relay), rules_before);
    assert!(
        topology
            .client_curl(&[&format!("http://{RELAY_ADDRESS}:{RELAY_PORT}/")])
            .is_err()
    );
    // A node that is not a relay refuses to publish.
    let not_relay = agent
        .execute(AgentCommand {
            id: "publish-on-node".into(),
            action: CommandAction::PublishNode {
                node: published.clone(),
            },
        })
        .await
        .unwrap();
    assert!(
        matches!(&not_relay.outcome, AckOutcome::Failed { error } if error.contains("not a relay")),
        "{not_relay:?}"
    );

    // Published: the node's peer and its VM's port and name.
    assert_eq!(
        relay_command(
            &relay_thread,
            &relay_agent,
            "publish-1",
            CommandAction::PublishNode {
                node: published.clone()
            },
        ),
        AckOutcome::Done {
            vm: None,
            user_data_sha256: None,
        }
    );
    let body = topology.client_get_eventually(
        &[&format!("http://{RELAY_ADDRESS}:{RELAY_PORT}/")],
        Duration::from_secs(60),
    );
    assert_eq!(body.trim(), value);
    let tunnel = agent.heartbeat(2).await.unwrap().tunnel.unwrap();
    assert_eq!(tunnel.relay_node_id, Some(relay_node_id));
    assert!(tunnel.latest_handshake.is_some(), "{tunnel:?}");

    let resolve = format!("{host}:443:{RELAY_ADDRESS}");
    let url = format!("https://{host}/");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !caddy.root_certificate().exists() {
        assert!(Instant::now() < deadline, "no certificate: {}", caddy.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ca = caddy.root_certificate().to_string_lossy().into_owned();
    let body = topology.client_get_eventually(
        &["--resolve", &resolve, "--cacert", &ca, &url],
        Duration::from_secs(60),
    );
    assert_eq!(body.trim(), value);

    // The relay counted both directions for the VM, and reports it in its heartbeat.
    let report = relay_heartbeat(&relay_thread, &relay_agent);
    assert_eq!(report.nodes, vec![node_id]);
    let traffic = report.traffic;
    assert_eq!(traffic.len(), 1, "{traffic:?}");
    assert_eq!(
        (traffic[0].node_id, traffic[0].vm_id.as_str()),
        (node_id, "web")
    );
    assert!(traffic[0].bytes_in > 0, "{traffic:?}");
    assert!(traffic[0].bytes_out > 2 * value.len() as u64, "{traffic:?}");

    // A tunnel from a node the relay was not assigned gets no handshake and reaches nothing.
    let rogue_thread = NsThread::new(&topology.client);
    let rogue_dir = tempfile::tempdir().unwrap();
    let rogue_relay_key = relay.public_key();
    let rogue_name = format!("dcrg{unique}");
    let rogue = rogue_thread.run({
        let path = rogue_dir.path().join("rogue.key");
        let endpoint = relay.endpoint();
        move |_| {
            let keys = TunnelKeys::load_or_create(&path).unwrap();
            let interface =
                WgInterface::up(&rogue_name, &keys, None, "10.97.71.9".parse().unwrap(), 24)
                    .unwrap();
            interface
                .set_peer(&rogue_relay_key, "10.97.71.0/24", Some(&endpoint), Some(1))
                .unwrap();
            interface
        }
    });
    let pinged = in_ns(
        &topology.client,
        &["ping", "-c", "3", "-W", "1", "10.97.71.2"],
    );
    assert!(pinged.is_err(), "{pinged:?}");
    let rogue_peer = rogue.peers().unwrap();
    assert_eq!(rogue_peer.len(), 1);
    assert_eq!(rogue_peer[0].latest_handshake, 0, "{rogue_peer:?}");
    let relay_peers: Vec<_> = relay.peers().unwrap().into_iter().map(|p| p.key).collect();
    assert_eq!(relay_peers, vec![binding.key]);
    drop(rogue);

    // Unpublished: the port and the name are gone, and so is the peer.
    assert_eq!(
        relay_command(
            &relay_thread,
            &relay_agent,
            "unpublish-1",
            CommandAction::UnpublishNode { node_id },
        ),
        AckOutcome::Done {
            vm: None,
            user_data_sha256: None,
        }
    );
    assert!(relay.peers().unwrap().is_empty());
    assert!(
        topology
            .client_curl(&[&format!("http://{RELAY_ADDRESS}:{RELAY_PORT}/")])
            .is_err()
    );
    assert!(
        !saved_rules(&topology.relay).contains("dcr:"),
        "{}",
        saved_rules(&topology.relay)
    );

    relay_thread.run({
        let relay_agent = relay_agent.clone();
        move |runtime| runtime.block_on(relay_agent.close())
    });
    assert!(!saved_rules(&topology.relay).contains("DCR-"));
    agent.leave_relay().unwrap();
    agent.delete_vm("web").await.unwrap();
    agent.close().await;
}

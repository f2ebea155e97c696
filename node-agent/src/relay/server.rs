//! The relay role: a WireGuard interface that relayed nodes dial, iptables rules that publish
//! their VMs' forwarded ports at the relay's public address and carry them through the
//! tunnel, the relay's Caddy serving their ingress names, and byte counters per VM.
//!
//! Layout, for the relay tagged `<tag>` (first 8 bytes of its node id in hex):
//! - interface `dcr<tag[..8]>`, the relay's address the first of its tunnel subnet;
//! - nat chain `DCR-<tag>` (jumped to from `PREROUTING`): per forward, a DNAT of the relay
//!   port on the relay's own addresses to the node's tunnel address and forward port;
//! - nat chain `DCR-<tag>-SNAT` (from `POSTROUTING`): what leaves through the tunnel takes
//!   the relay's tunnel address, so replies come back through the tunnel;
//! - filter chain `DCR-<tag>` (first in `FORWARD`): per forward, one ACCEPT rule each way
//!   (their byte counters are the accounting), then a DROP of everything else into or out of
//!   the tunnel: a relayed node cannot use the relay as a way out to the internet;
//! - filter chain `DCR-<tag>-LOCAL` (first in `OUTPUT` and `INPUT`): per ingress route, the
//!   counters of the relay's Caddy talking to the node, then a DROP of connections the node
//!   opens to the relay itself.
//!
//! Every per-VM rule has a comment naming the node, the VM and both ends; changes add and
//! delete single rules, so counters of rules that stay keep counting.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    net::{Ipv4Addr, SocketAddrV4},
    path::Path,
    sync::Mutex,
};

use alloy::primitives::B256;
use decloud_sdk::relay::{RelayForward, RelayedNode, TunnelKey, VmTraffic};
use serde::{Deserialize, Serialize};
use tracing::info;

use super::wg::{PeerStatus, TunnelKeys, WgInterface, run_tool};
use crate::{
    config::{Ipv4Subnet, PortRange},
    error::{Error, Result},
    ingress::{Ingress, IngressConfig, IngressRule, valid_host},
};

/// The relay key's file in the data directory.
pub const RELAY_KEY_FILE: &str = "relay.key";
/// Every relay rule comment starts with this.
pub const RELAY_COMMENT_PREFIX: &str = "dcr:";

/// The relay role's settings (`[relay]` in the configuration file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    /// UDP port of the WireGuard listener nodes dial.
    pub listen_port: u16,
    /// Address (IP or DNS name) nodes dial and clients reach published ports at.
    pub public_address: String,
    /// Subnet of tunnel addresses, e.g. `10.98.0.0/24`; the relay takes the first address,
    /// the orchestrator gives each relayed node another.
    pub tunnel_subnet: String,
    /// Public ports given to relayed nodes' forwards, `first-last`.
    pub port_range: String,
    /// The Caddy serving relayed nodes' ingress names; without it names are not relayed.
    #[serde(default)]
    pub ingress: Option<IngressConfig>,
}

impl RelayConfig {
    /// Checks every field.
    pub fn validate(&self) -> Result<()> {
        let bad = |why: String| Err(Error::Config(format!("relay: {why}")));
        if self.listen_port == 0 {
            return bad("listen_port must not be 0".into());
        }
        let address = self.public_address.trim();
        if address.is_empty() || address.chars().any(|c| c.is_whitespace() || c == '/') {
            return bad(format!(
                "public_address {:?} must be an IP address or a DNS name",
                self.public_address
            ));
        }
        let subnet = self.subnet()?;
        if subnet.prefix > 30 {
            return bad(format!(
                "tunnel_subnet {} holds no node",
                self.tunnel_subnet
            ));
        }
        self.ports()?;
        if let Some(ingress) = &self.ingress {
            ingress.validate()?;
        }
        Ok(())
    }

    /// The tunnel subnet.
    pub fn subnet(&self) -> Result<Ipv4Subnet> {
        self.tunnel_subnet
            .parse()
            .map_err(|e: Error| Error::Config(format!("relay: tunnel_subnet: {e}")))
    }

    /// The public port range.
    pub fn ports(&self) -> Result<PortRange> {
        self.port_range
            .parse()
            .map_err(|e: Error| Error::Config(format!("relay: port_range: {e}")))
    }

    /// The relay's own address in the tunnel (the subnet's first).
    pub fn relay_address(&self) -> Result<Ipv4Addr> {
        Ok(self.subnet()?.nth(1))
    }
}

/// A relay: its interface, rules and Caddy client. Taken down (interface and rules) by
/// [`Relay::shutdown`], or the interface alone when dropped.
#[derive(Debug)]
pub struct Relay {
    config: RelayConfig,
    tag: String,
    keys: TunnelKeys,
    interface: WgInterface,
    address: Ipv4Addr,
    ingress: Option<Ingress>,
    nodes: Mutex<BTreeMap<B256, RelayedNode>>,
}

/// One rule the relay wants in one of its chains.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Rule {
    table: &'static str,
    chain: String,
    comment: String,
    args: Vec<String>,
}

fn iptables(args: &[&str]) -> Result<String> {
    let mut all = vec!["-w"];
    all.extend(args);
    run_tool("iptables", "iptables", &all, None)
}

impl Relay {
    /// Brings the relay up: its key pair (made in `data_dir` on first start), its interface
    /// and its chains (emptied: what was published before is published again by the
    /// orchestrator).
    pub fn start(config: RelayConfig, tag: &str, data_dir: &Path) -> Result<Self> {
        config.validate()?;
        let address = config.relay_address()?;
        let keys = TunnelKeys::load_or_create(&data_dir.join(RELAY_KEY_FILE))?;
        let short = &tag[..tag.len().min(8)];
        let interface = WgInterface::up(
            &format!("dcr{short}"),
            &keys,
            Some(config.listen_port),
            address,
            config.subnet()?.prefix,
        )?;
        let ingress = config
            .ingress
            .clone()
            .map(|c| Ingress::new(c, &format!("relay-{tag}")))
            .transpose()?;
        let relay = Self {
            config,
            tag: tag.to_owned(),
            keys,
            interface,
            address,
            ingress,
            nodes: Mutex::new(BTreeMap::new()),
        };
        // Forwarding between the public side and the tunnel.
        run_tool("procps", "sysctl", &["-qw", "net.ipv4.ip_forward=1"], None)?;
        relay.remove_chains();
        relay.make_chains()?;
        info!(target: "agent::relay", interface = relay.interface.name(), key = %relay.keys.public, "relay up");
        Ok(relay)
    }

    /// The relay's WireGuard public key (nodes' assignments name it).
    pub fn public_key(&self) -> TunnelKey {
        self.keys.public
    }

    /// `host:port` nodes dial.
    pub fn endpoint(&self) -> String {
        format!("{}:{}", self.config.public_address, self.config.listen_port)
    }

    /// The relay's settings.
    pub fn config(&self) -> &RelayConfig {
        &self.config
    }

    /// The relay's address in the tunnel.
    pub fn address(&self) -> Ipv4Addr {
        self.address
    }

    /// The WireGuard interface's name.
    pub fn interface(&self) -> &str {
        self.interface.name()
    }

    /// The nodes published now.
    pub fn nodes(&self) -> Vec<RelayedNode> {
        self.lock().values().cloned().collect()
    }

    /// The tunnel peers as WireGuard has them.
    pub fn peers(&self) -> Result<Vec<PeerStatus>> {
        self.interface.peers()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<B256, RelayedNode>> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn chain(&self) -> String {
        format!("DCR-{}", self.tag)
    }

    fn snat_chain(&self) -> String {
        format!("DCR-{}-SNAT", self.tag)
    }

    fn local_chain(&self) -> String {
        format!("DCR-{}-LOCAL", self.tag)
    }

    /// Jumps into the relay's chains: (table, built-in chain, relay chain).
    fn jumps(&self) -> Vec<(&'static str, &'static str, String)> {
        vec![
            ("nat", "PREROUTING", self.chain()),
            ("nat", "POSTROUTING", self.snat_chain()),
            ("filter", "FORWARD", self.chain()),
            ("filter", "OUTPUT", self.local_chain()),
            ("filter", "INPUT", self.local_chain()),
        ]
    }

    fn make_chains(&self) -> Result<()> {
        let wg = self.interface.name().to_owned();
        for (table, chain) in [
            ("nat", self.chain()),
            ("nat", self.snat_chain()),
            ("filter", self.chain()),
            ("filter", self.local_chain()),
        ] {
            iptables(&["-t", table, "-N", &chain])?;
        }
        for (table, builtin, chain) in self.jumps() {
            iptables(&["-t", table, "-I", builtin, "1", "-j", &chain])?;
        }
        let relay_address = self.address.to_string();
        iptables(&[
            "-t",
            "nat",
            "-A",
            &self.snat_chain(),
            "-o",
            &wg,
            "-j",
            "SNAT",
            "--to-source",
            &relay_address,
        ])?;
        for direction in ["-i", "-o"] {
            iptables(&[
                "-t",
                "filter",
                "-A",
                &self.chain(),
                direction,
                &wg,
                "-j",
                "DROP",
            ])?;
        }
        // The relay's own connections to nodes (its Caddy) get their answers; nodes open none.
        iptables(&[
            "-t",
            "filter",
            "-A",
            &self.local_chain(),
            "-i",
            &wg,
            "-m",
            "conntrack",
            "--ctstate",
            "ESTABLISHED,RELATED",
            "-j",
            "ACCEPT",
        ])?;
        iptables(&[
            "-t",
            "filter",
            "-A",
            &self.local_chain(),
            "-i",
            &wg,
            "-j",
            "DROP",
        ])?;
        Ok(())
    }

    fn remove_chains(&self) {
        for (table, builtin, chain) in self.jumps() {
            while iptables(&["-t", table, "-D", builtin, "-j", &chain]).is_ok() {}
        }
        for (table, chain) in [
            ("nat", self.chain()),
            ("nat", self.snat_chain()),
            ("filter", self.chain()),
            ("filter", self.local_chain()),
        ] {
            let _ = iptables(&["-t", table, "-F", &chain]);
            let _ = iptables(&["-t", table, "-X", &chain]);
        }
    }
}

/// Checks `node` against the relay's settings (validated) and the other published nodes.
fn check(
    config: &RelayConfig,
    node: &RelayedNode,
    others: &BTreeMap<B256, RelayedNode>,
) -> Result<()> {
    {
        let refuse = |why: String| Err(Error::Relay(why));
        let subnet = config.subnet()?;
        let relay_address = config.relay_address()?;
        let range = config.ports()?;
        node.binding
            .verify(node.node_id, node.node_key)
            .map_err(|e| Error::Relay(e.to_string()))?;
        let address = node.tunnel_address;
        if !subnet.contains(address)
            || address == relay_address
            || address == subnet.network
            || address == subnet.nth(subnet.size() - 1)
        {
            return refuse(format!(
                "tunnel address {address} is not a node address of {}",
                config.tunnel_subnet
            ));
        }
        let mut ports = HashSet::new();
        let mut hosts = BTreeSet::new();
        let mut vms = BTreeSet::new();
        for vm in &node.vms {
            crate::agent::validate_id(&vm.vm_id).map_err(|e| Error::Relay(e.to_string()))?;
            if !vms.insert(vm.vm_id.as_str()) {
                return refuse(format!("vm {} is named twice", vm.vm_id));
            }
            for forward in &vm.forwards {
                if !range.ports().contains(&forward.relay_port) {
                    return refuse(format!(
                        "relay port {} is outside the relay's range {}",
                        forward.relay_port, config.port_range
                    ));
                }
                if forward.node_port == 0 {
                    return refuse(format!("vm {} forwards to node port 0", vm.vm_id));
                }
                if !ports.insert((forward.protocol, forward.relay_port)) {
                    return refuse(format!(
                        "relay port {}/{} is given twice",
                        forward.relay_port, forward.protocol
                    ));
                }
            }
            for route in &vm.routes {
                if !valid_host(&route.host) {
                    return refuse(format!("ingress host {:?} is not a DNS name", route.host));
                }
                if route.node_port == 0 {
                    return refuse(format!("ingress host {} names node port 0", route.host));
                }
                if !hosts.insert(route.host.as_str()) {
                    return refuse(format!("ingress host {} is named twice", route.host));
                }
            }
            if !vm.routes.is_empty() && config.ingress.is_none() {
                return refuse("this relay has no ingress configured".into());
            }
        }
        for other in others.values().filter(|o| o.node_id != node.node_id) {
            if other.tunnel_address == address {
                return refuse(format!(
                    "tunnel address {address} belongs to node {}",
                    other.node_id
                ));
            }
            if other.binding.key == node.binding.key {
                return refuse(format!(
                    "tunnel key {} belongs to node {}",
                    node.binding.key, other.node_id
                ));
            }
            for vm in &other.vms {
                for forward in &vm.forwards {
                    if ports.contains(&(forward.protocol, forward.relay_port)) {
                        return refuse(format!(
                            "relay port {}/{} belongs to node {}",
                            forward.relay_port, forward.protocol, other.node_id
                        ));
                    }
                }
                for route in &vm.routes {
                    if hosts.contains(route.host.as_str()) {
                        return refuse(format!(
                            "ingress host {} belongs to node {}",
                            route.host, other.node_id
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

impl Relay {
    /// Accepts `node`'s tunnel and publishes its VMs (replacing what was published for it).
    /// Refused, with nothing changed, when its tunnel key is not bound to its registered key,
    /// or a port, name or address is not the relay's to give or belongs to another node.
    pub async fn publish(&self, node: RelayedNode) -> Result<()> {
        let previous = {
            let mut nodes = self.lock();
            check(&self.config, &node, &nodes)?;
            nodes.insert(node.node_id, node.clone())
        };
        if let Err(error) = self.apply(&node, previous.as_ref()).await {
            // Put back what was published before; the error says why the change failed.
            {
                let mut nodes = self.lock();
                match &previous {
                    Some(previous) => nodes.insert(node.node_id, previous.clone()),
                    None => nodes.remove(&node.node_id),
                };
            }
            if previous
                .as_ref()
                .is_none_or(|p| p.binding.key != node.binding.key)
            {
                let _ = self.interface.remove_peer(&node.binding.key);
            }
            if let Some(previous) = &previous {
                let _ = self.interface.set_peer(
                    &previous.binding.key,
                    &format!("{}/32", previous.tunnel_address),
                    None,
                    None,
                );
            }
            let _ = self.sync().await;
            return Err(error);
        }
        info!(target: "agent::relay", node = %node.node_id, key = %node.binding.key, vms = node.vms.len(), "node published");
        Ok(())
    }

    /// Makes the peer, rules and routes of a newly recorded `node`.
    async fn apply(&self, node: &RelayedNode, previous: Option<&RelayedNode>) -> Result<()> {
        if let Some(previous) = previous
            && previous.binding.key != node.binding.key
        {
            self.interface.remove_peer(&previous.binding.key)?;
        }
        self.interface.set_peer(
            &node.binding.key,
            &format!("{}/32", node.tunnel_address),
            None,
            None,
        )?;
        self.sync().await
    }

    /// Removes a node's peer and everything published for it.
    pub async fn unpublish(&self, node_id: B256) -> Result<()> {
        let Some(node) = self.lock().remove(&node_id) else {
            return Err(Error::Relay(format!("node {node_id} is not relayed here")));
        };
        self.interface.remove_peer(&node.binding.key)?;
        self.sync().await?;
        info!(target: "agent::relay", node = %node_id, "node unpublished");
        Ok(())
    }

    /// Every rule the published nodes need.
    fn desired(&self) -> Vec<Rule> {
        let wg = self.interface.name().to_owned();
        let mut rules = Vec::new();
        for node in self.lock().values() {
            let short = crate::identity::node_tag(&node.node_id);
            let tunnel = node.tunnel_address.to_string();
            for vm in &node.vms {
                for RelayForward {
                    protocol,
                    relay_port,
                    node_port,
                } in &vm.forwards
                {
                    let protocol = protocol.to_string();
                    let comment = |direction: &str| {
                        format!(
                            "{RELAY_COMMENT_PREFIX}{short}:{}:{direction}:{protocol}:{relay_port}:{tunnel}:{node_port}",
                            vm.vm_id
                        )
                    };
                    let rule = |table, chain: String, direction: &str, args: Vec<String>| Rule {
                        table,
                        chain,
                        comment: comment(direction),
                        args,
                    };
                    let strings = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect();
                    rules.push(rule(
                        "nat",
                        self.chain(),
                        "dnat",
                        strings(&[
                            "-p",
                            &protocol,
                            "-m",
                            "addrtype",
                            "--dst-type",
                            "LOCAL",
                            "!",
                            "-d",
                            "127.0.0.0/8",
                            "-m",
                            &protocol,
                            "--dport",
                            &relay_port.to_string(),
                            "-j",
                            "DNAT",
                            "--to-destination",
                            &format!("{tunnel}:{node_port}"),
                        ]),
                    ));
                    let origin = relay_port.to_string();
                    let conntrack = [
                        "-m",
                        "conntrack",
                        "--ctstate",
                        "DNAT",
                        "--ctorigdstport",
                        origin.as_str(),
                    ];
                    let mut inward: Vec<String> = strings(&[
                        "-o", &wg, "-d", &tunnel, "-p", &protocol, "-m", &protocol, "--dport",
                    ]);
                    inward.push(node_port.to_string());
                    inward.extend(strings(&conntrack));
                    inward.extend(strings(&["-j", "ACCEPT"]));
                    rules.push(rule("filter", self.chain(), "in", inward));
                    let mut outward: Vec<String> = strings(&[
                        "-i", &wg, "-s", &tunnel, "-p", &protocol, "-m", &protocol, "--sport",
                    ]);
                    outward.push(node_port.to_string());
                    outward.extend(strings(&conntrack));
                    outward.extend(strings(&["-j", "ACCEPT"]));
                    rules.push(rule("filter", self.chain(), "out", outward));
                }
                for route in &vm.routes {
                    let port = route.node_port.to_string();
                    let comment = |direction: &str| {
                        format!(
                            "{RELAY_COMMENT_PREFIX}{short}:{}:{direction}:https:{}:{tunnel}:{port}",
                            vm.vm_id, route.host
                        )
                    };
                    let strings = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect();
                    rules.push(Rule {
                        table: "filter",
                        chain: self.local_chain(),
                        comment: comment("in"),
                        args: strings(&[
                            "-o", &wg, "-d", &tunnel, "-p", "tcp", "-m", "tcp", "--dport", &port,
                            "-j", "ACCEPT",
                        ]),
                    });
                    rules.push(Rule {
                        table: "filter",
                        chain: self.local_chain(),
                        comment: comment("out"),
                        args: strings(&[
                            "-i",
                            &wg,
                            "-s",
                            &tunnel,
                            "-p",
                            "tcp",
                            "-m",
                            "tcp",
                            "--sport",
                            &port,
                            "-m",
                            "conntrack",
                            "--ctstate",
                            "ESTABLISHED",
                            "-j",
                            "ACCEPT",
                        ]),
                    });
                }
            }
        }
        rules
    }

    /// The relay's per-VM rules in the kernel: (table, chain, rule number, comment).
    fn current(&self) -> Result<Vec<(&'static str, String, usize, String)>> {
        let mut found = Vec::new();
        for (table, chain) in [
            ("nat", self.chain()),
            ("filter", self.chain()),
            ("filter", self.local_chain()),
        ] {
            let listing = iptables(&["-t", table, "-S", &chain])?;
            let prefix = format!("-A {chain} ");
            for (n, line) in listing
                .lines()
                .filter(|l| l.starts_with(&prefix))
                .enumerate()
            {
                if let Some(comment) = comment_of(line)
                    && comment.starts_with(RELAY_COMMENT_PREFIX)
                {
                    found.push((table, chain.clone(), n + 1, comment));
                }
            }
        }
        Ok(found)
    }

    /// Brings the rules and Caddy's routes to what the published nodes need.
    async fn sync(&self) -> Result<()> {
        let desired = self.desired();
        let wanted: BTreeSet<(&str, &str, &str)> = desired
            .iter()
            .map(|r| (r.table, r.chain.as_str(), r.comment.as_str()))
            .collect();
        let current = self.current()?;
        // Highest rule numbers first, so the numbers of the rest stay valid.
        let mut stale: Vec<_> = current
            .iter()
            .filter(|(t, c, _, comment)| !wanted.contains(&(*t, c.as_str(), comment.as_str())))
            .collect();
        stale.sort_by(|a, b| a.0.cmp(b.0).then(a.1.cmp(&b.1)).then(b.2.cmp(&a.2)));
        for (table, chain, number, _) in stale {
            iptables(&["-t", table, "-D", chain, &number.to_string()])?;
        }
        let present: BTreeSet<(&str, &str, &str)> = current
            .iter()
            .map(|(t, c, _, comment)| (*t, c.as_str(), comment.as_str()))
            .collect();
        for rule in &desired {
            if present.contains(&(rule.table, rule.chain.as_str(), rule.comment.as_str())) {
                continue;
            }
            // Ahead of the closing DROP rules.
            let mut args = vec!["-t", rule.table, "-I", rule.chain.as_str(), "1"];
            args.extend(rule.args.iter().map(String::as_str));
            args.extend(["-m", "comment", "--comment", rule.comment.as_str()]);
            iptables(&args)?;
        }
        if let Some(ingress) = &self.ingress {
            let mut routes = Vec::new();
            for node in self.lock().values() {
                for vm in &node.vms {
                    for route in &vm.routes {
                        routes.push(IngressRule {
                            host: route.host.clone(),
                            vm_id: vm.vm_id.clone(),
                            upstream: SocketAddrV4::new(node.tunnel_address, route.node_port),
                        });
                    }
                }
            }
            routes.sort();
            ingress.reconcile(&routes).await?;
        }
        Ok(())
    }

    /// Bytes carried per VM of the published nodes, from the rules' counters (since each
    /// rule was made).
    pub fn traffic(&self) -> Result<Vec<VmTraffic>> {
        let mut totals: BTreeMap<(B256, String), (u64, u64)> = BTreeMap::new();
        let nodes = self.lock().clone();
        let by_tag: BTreeMap<String, B256> = nodes
            .keys()
            .map(|id| (crate::identity::node_tag(id), *id))
            .collect();
        for node in nodes.values() {
            for vm in &node.vms {
                totals.entry((node.node_id, vm.vm_id.clone())).or_default();
            }
        }
        for chain in [self.chain(), self.local_chain()] {
            let listing = iptables(&["-t", "filter", "-S", &chain, "-v"])?;
            for line in listing.lines() {
                let (Some(comment), Some(bytes)) = (comment_of(line), counter_bytes(line)) else {
                    continue;
                };
                let Some(rest) = comment.strip_prefix(RELAY_COMMENT_PREFIX) else {
                    continue;
                };
                let mut parts = rest.split(':');
                let (Some(tag), Some(vm), Some(direction)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    continue;
                };
                let Some(node_id) = by_tag.get(tag) else {
                    continue;
                };
                let Some(total) = totals.get_mut(&(*node_id, vm.to_owned())) else {
                    continue;
                };
                match direction {
                    "in" => total.0 += bytes,
                    "out" => total.1 += bytes,
                    _ => {}
                }
            }
        }
        Ok(totals
            .into_iter()
            .map(|((node_id, vm_id), (bytes_in, bytes_out))| VmTraffic {
                node_id,
                vm_id,
                bytes_in,
                bytes_out,
            })
            .collect())
    }

    /// Takes the relay down: its routes in Caddy, its rules, its interface.
    pub async fn shutdown(&self) -> Result<()> {
        self.lock().clear();
        let routes = match &self.ingress {
            Some(ingress) => ingress.reconcile(&[]).await.map(drop),
            None => Ok(()),
        };
        self.remove_chains();
        routes
    }
}

/// The comment of a rule as `iptables -S` prints it (unquoted: the relay's have no spaces).
fn comment_of(line: &str) -> Option<String> {
    let mut words = line.split_whitespace();
    while let Some(word) = words.next() {
        if word == "--comment" {
            return words.next().map(|c| c.trim_matches('"').to_owned());
        }
    }
    None
}

/// The byte counter of a rule as `iptables -S -v` prints it (`-c <packets> <bytes>`).
fn counter_bytes(line: &str) -> Option<u64> {
    let mut words = line.split_whitespace();
    while let Some(word) = words.next() {
        if word == "-c" {
            words.next()?;
            return words.next()?.parse().ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_and_counters_are_read_from_listings() {
        let line = "-A DCR-ab -o dcrab -d 10.98.0.2/32 -p tcp -m tcp --dport 31000 -m comment --comment dcr:0011:web:in:tcp:24000:10.98.0.2:31000 -c 12 3456 -j ACCEPT";
        assert_eq!(
            comment_of(line).as_deref(),
            Some("dcr:0011:web:in:tcp:24000:10.98.0.2:31000")
        );
        assert_eq!(counter_bytes(line), Some(3456));
        assert_eq!(counter_bytes("-A X -j DROP"), None);
    }

    fn config(ingress: bool) -> RelayConfig {
        RelayConfig {
            listen_port: 51820,
            public_address: "203.0.113.9".into(),
            tunnel_subnet: "10.98.0.0/24".into(),
            port_range: "20000-20009".into(),
            ingress: ingress.then(|| {
                toml::from_str("admin = \"127.0.0.1:2019\"\nlisten = \":443\"\n").unwrap()
            }),
        }
    }

    fn node(byte: u8, address: [u8; 4], relay_port: u16, host: &str) -> RelayedNode {
        use alloy::signers::local::PrivateKeySigner;
        use decloud_sdk::{
            agent_protocol::PortProtocol,
            relay::{RelayRoute, RelayedVm, TunnelBinding},
        };
        let key = PrivateKeySigner::from_bytes(&B256::repeat_byte(byte)).unwrap();
        let node_id = B256::repeat_byte(byte);
        RelayedNode {
            node_id,
            node_key: key.address(),
            binding: TunnelBinding::sign(&key, node_id, TunnelKey([byte; 32])).unwrap(),
            tunnel_address: address.into(),
            vms: vec![RelayedVm {
                vm_id: format!("vm-{byte}"),
                forwards: vec![RelayForward {
                    protocol: PortProtocol::Tcp,
                    relay_port,
                    node_port: 40000,
                }],
                routes: vec![RelayRoute {
                    host: host.into(),
                    node_port: 40001,
                }],
            }],
        }
    }

    fn refusal(config: &RelayConfig, node: &RelayedNode, others: &[RelayedNode]) -> String {
        let others = others.iter().map(|n| (n.node_id, n.clone())).collect();
        match check(config, node, &others) {
            Err(Error::Relay(why)) => why,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn nodes_a_relay_cannot_publish_are_refused_with_the_reason() {
        let config = config(true);
        let first = node(1, [10, 98, 0, 2], 20000, "a.example.org");
        check(&config, &first, &BTreeMap::new()).unwrap();
        let others = std::slice::from_ref(&first);
        // Republishing the same node is a replacement, not a conflict with itself.
        check(&config, &first, &[(first.node_id, first.clone())].into()).unwrap();

        let forged = RelayedNode {
            node_key: node(2, [10, 98, 0, 3], 20001, "b.example.org").node_key,
            ..node(3, [10, 98, 0, 3], 20001, "b.example.org")
        };
        assert!(refusal(&config, &forged, &[]).contains("is not bound to node"));
        for (address, why) in [
            ([10, 98, 1, 2], "is not a node address"),
            ([10, 98, 0, 1], "is not a node address"),
            ([10, 98, 0, 0], "is not a node address"),
            ([10, 98, 0, 255], "is not a node address"),
            ([10, 98, 0, 2], "belongs to node"),
        ] {
            let why_got = refusal(&config, &node(2, address, 20001, "b.example.org"), others);
            assert!(why_got.contains(why), "{address:?}: {why_got}");
        }
        let outside = refusal(
            &config,
            &node(2, [10, 98, 0, 3], 20010, "b.example.org"),
            &[],
        );
        assert!(outside.contains("outside the relay's range"), "{outside}");
        let taken_port = refusal(
            &config,
            &node(2, [10, 98, 0, 3], 20000, "b.example.org"),
            others,
        );
        assert!(
            taken_port.contains("relay port 20000/tcp belongs to node"),
            "{taken_port}"
        );
        let taken_host = refusal(
            &config,
            &node(2, [10, 98, 0, 3], 20001, "a.example.org"),
            others,
        );
        assert!(
            taken_host.contains("ingress host a.example.org belongs to node"),
            "{taken_host}"
        );
        let mut same_key = node(2, [10, 98, 0, 3], 20001, "b.example.org");
        let key2 = alloy::signers::local::PrivateKeySigner::from_bytes(&B256::repeat_byte(2));
        same_key.binding = decloud_sdk::relay::TunnelBinding::sign(
            &key2.unwrap(),
            same_key.node_id,
            first.binding.key,
        )
        .unwrap();
        let why = refusal(&config, &same_key, others);
        assert!(why.contains("belongs to node"), "{why}");

        let mut bad = node(2, [10, 98, 0, 3], 20001, "B_bad");
        assert!(refusal(&config, &bad, &[]).contains("is not a DNS name"));
        bad.vms[0].routes.clear();
        bad.vms[0].forwards[0].node_port = 0;
        assert!(refusal(&config, &bad, &[]).contains("node port 0"));
        bad.vms[0].forwards[0].node_port = 40000;
        bad.vms[0].vm_id = "Bad Id".into();
        assert!(!refusal(&config, &bad, &[]).is_empty());
        let mut twice = node(2, [10, 98, 0, 3], 20001, "b.example.org");
        twice.vms.push(twice.vms[0].clone());
        assert!(refusal(&config, &twice, &[]).contains("named twice"));
        let mut two_ports = node(2, [10, 98, 0, 3], 20001, "b.example.org");
        let forward = two_ports.vms[0].forwards[0];
        two_ports.vms[0].forwards.push(forward);
        assert!(refusal(&config, &two_ports, &[]).contains("is given twice"));

        let without_ingress = refusal(
            &super::tests::config(false),
            &node(2, [10, 98, 0, 3], 20001, "b.example.org"),
            &[],
        );
        assert!(without_ingress.contains("no ingress"), "{without_ingress}");
    }

    #[test]
    fn a_relay_config_is_checked_whole() {
        let good = RelayConfig {
            listen_port: 51820,
            public_address: "relay.example.org".into(),
            tunnel_subnet: "10.98.0.0/24".into(),
            port_range: "20000-20999".into(),
            ingress: None,
        };
        good.validate().unwrap();
        assert_eq!(good.relay_address().unwrap(), Ipv4Addr::new(10, 98, 0, 1));
        for bad in [
            RelayConfig {
                listen_port: 0,
                ..good.clone()
            },
            RelayConfig {
                public_address: "a b".into(),
                ..good.clone()
            },
            RelayConfig {
                tunnel_subnet: "10.98.0.0/31".into(),
                ..good.clone()
            },
            RelayConfig {
                port_range: "9-1".into(),
                ..good.clone()
            },
        ] {
            let err = bad.validate().unwrap_err();
            assert!(err.to_string().contains("relay:"), "{err}");
        }
    }
}

//! Port forwarding in the kernel with iptables: each forwarded port is a DNAT rule in the
//! nat table's `DECLOUD-DNAT` chain (jumped to from `PREROUTING`, for traffic from outside,
//! and from `OUTPUT`, for traffic the node sends to its own address) and an ACCEPT rule in
//! the filter table's `DECLOUD-FWD` chain (jumped to first from `FORWARD`, ahead of
//! libvirt's own chains, which reject new connections into a NAT network).
//!
//! The agent only ever changes its own two chains and the one jump into each: rules anyone
//! else made, in any other chain, are never touched. Each rule's comment names the node (a
//! tag of its id), the VM, the protocol and both ends, so the rules can be compared with
//! the agent's records and another agent on the same host keeps its own.
//!
//! Only packets addressed to one of the host's own addresses are forwarded, and never those
//! to 127.0.0.0/8: DNAT of loopback traffic to a guest would need `route_localnet`, which
//! also exposes services listening on loopback, so the agent leaves it off.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs::File,
    net::Ipv4Addr,
    os::fd::AsRawFd,
    process::Command,
    sync::Mutex,
};

use decloud_sdk::agent_protocol::{PortForward, PortProtocol};
use tracing::{info, warn};

use crate::error::{Error, Result};

/// nat-table chain of the DNAT rules.
pub const DNAT_CHAIN: &str = "DECLOUD-DNAT";
/// filter-table chain of the rules accepting forwarded traffic.
pub const FORWARD_CHAIN: &str = "DECLOUD-FWD";
/// Every rule comment of the agent starts with this.
pub const COMMENT_PREFIX: &str = "decloud:";
/// Lock file serialising the agent's iptables changes between processes on one host.
const LOCK_FILE: &str = "/run/decloud-node-agent.iptables.lock";

/// Serialises the check-then-change sequences between threads of one process.
static LOCAL_LOCK: Mutex<()> = Mutex::new(());

/// One forwarded port as the kernel sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardRule {
    /// VM the port belongs to.
    pub vm_id: String,
    /// Protocol.
    pub protocol: PortProtocol,
    /// Port on the node's addresses.
    pub public: u16,
    /// The guest's reserved address.
    pub guest_ip: Ipv4Addr,
    /// Port inside the guest.
    pub guest: u16,
}

impl ForwardRule {
    /// The rule of `forward` to `guest_ip`.
    pub fn new(vm_id: &str, guest_ip: Ipv4Addr, forward: &PortForward) -> Self {
        Self {
            vm_id: vm_id.to_owned(),
            protocol: forward.protocol,
            public: forward.public,
            guest_ip,
            guest: forward.guest,
        }
    }

    /// The comment both of its rules carry; it has no spaces, so it needs no quoting.
    pub fn comment(&self, tag: &str) -> String {
        format!(
            "{COMMENT_PREFIX}{tag}:{}:{}:{}:{}:{}",
            self.vm_id, self.protocol, self.public, self.guest_ip, self.guest
        )
    }

    fn dnat_args(&self, tag: &str) -> Vec<String> {
        let protocol = self.protocol.to_string();
        [
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
            &self.public.to_string(),
            "-m",
            "comment",
            "--comment",
            &self.comment(tag),
            "-j",
            "DNAT",
            "--to-destination",
            &format!("{}:{}", self.guest_ip, self.guest),
        ]
        .map(str::to_owned)
        .to_vec()
    }

    fn accept_args(&self, tag: &str) -> Vec<String> {
        let protocol = self.protocol.to_string();
        [
            "-d",
            &format!("{}/32", self.guest_ip),
            "-p",
            &protocol,
            "-m",
            &protocol,
            "--dport",
            &self.guest.to_string(),
            // Only connections this forward's DNAT made: the guest stays closed to
            // everything else from outside.
            "-m",
            "conntrack",
            "--ctstate",
            "DNAT",
            "--ctorigdstport",
            &self.public.to_string(),
            "-m",
            "comment",
            "--comment",
            &self.comment(tag),
            "-j",
            "ACCEPT",
        ]
        .map(str::to_owned)
        .to_vec()
    }
}

/// One rule found in one of the agent's chains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundRule {
    /// `nat` or `filter`.
    pub table: &'static str,
    /// The chain.
    pub chain: &'static str,
    /// The rule's comment, when it has one.
    pub comment: Option<String>,
    /// The rule's arguments after the chain name, as `iptables -D <chain>` takes them.
    pub args: Vec<String>,
}

impl FoundRule {
    /// The node tag of the comment, when it is one of an agent's comments.
    pub fn tag(&self) -> Option<&str> {
        self.comment
            .as_deref()?
            .strip_prefix(COMMENT_PREFIX)?
            .split(':')
            .next()
    }

    /// The public port of an agent's DNAT rule.
    pub fn public_port(&self) -> Option<u16> {
        let comment = self.comment.as_deref()?.strip_prefix(COMMENT_PREFIX)?;
        comment.split(':').nth(3)?.parse().ok()
    }

    /// The VM id of an agent's rule.
    pub fn vm_id(&self) -> Option<&str> {
        let comment = self.comment.as_deref()?.strip_prefix(COMMENT_PREFIX)?;
        comment.split(':').nth(1)
    }
}

/// What a reconciliation of the rules did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FirewallReport {
    /// Rules added (each forward has two).
    pub added: usize,
    /// Rules removed: of forwards not in the records, duplicates, and unmarked rules in
    /// the agent's chains.
    pub removed: usize,
}

/// The agent's iptables rules, for the node tagged `tag`.
#[derive(Debug, Clone)]
pub struct Firewall {
    tag: String,
    /// Whether rules are made on this host: not for libvirt's test driver, whose simulated VMs
    /// have no address here (their forwards are still allocated, recorded and reported).
    on_host: bool,
}

/// Holds both locks while the agent reads and changes rules.
struct Guard {
    _local: std::sync::MutexGuard<'static, ()>,
    _file: Option<File>,
}

fn lock() -> Guard {
    let local = LOCAL_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    // Another agent process on the host (tests run several) must not interleave its
    // check-then-insert with ours; the lock file is released when the file closes.
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_FILE)
        .ok();
    if let Some(file) = &file {
        // SAFETY: flock(2) on a descriptor we own for the guard's lifetime.
        unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    }
    Guard {
        _local: local,
        _file: file,
    }
}

fn run(program: &str, args: &[String]) -> Result<String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| Error::Tool {
            tool: "iptables",
            message: format!("cannot run {program} ({e}); install iptables"),
        })?;
    if !output.status.success() {
        return Err(Error::Tool {
            tool: "iptables",
            message: format!(
                "{program} {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn iptables(table: &str, args: &[&str]) -> Result<String> {
    // -w: wait for the xtables lock rather than fail when libvirt changes rules meanwhile.
    let mut all = vec!["-w".to_owned(), "-t".to_owned(), table.to_owned()];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    run("iptables", &all)
}

fn iptables_rule(table: &str, action: &str, chain: &str, rule: &[String]) -> Result<()> {
    let mut all = vec![
        "-w".to_owned(),
        "-t".to_owned(),
        table.to_owned(),
        action.to_owned(),
        chain.to_owned(),
    ];
    all.extend(rule.iter().cloned());
    run("iptables", &all).map(|_| ())
}

/// `iptables-save` of one table.
fn save(table: &str) -> Result<String> {
    run("iptables-save", &["-t".to_owned(), table.to_owned()])
}

/// Splits an `iptables-save` rule line into arguments. The agent's comments have no
/// spaces; a quoted argument of someone else's rule is kept whole.
fn split_rule(line: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut started = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                started = true;
            }
            c if c.is_whitespace() && !quoted => {
                if started {
                    args.push(std::mem::take(&mut current));
                    started = false;
                }
            }
            c => {
                current.push(c);
                started = true;
            }
        }
    }
    if started {
        args.push(current);
    }
    args
}

/// Rules of `chain` in an `iptables-save` listing.
pub fn parse_rules(saved: &str, table: &'static str, chain: &'static str) -> Vec<FoundRule> {
    let prefix = format!("-A {chain} ");
    saved
        .lines()
        .filter_map(|line| line.strip_prefix(&prefix))
        .map(|rest| {
            let args = split_rule(rest);
            let comment = args
                .iter()
                .position(|a| a == "--comment")
                .and_then(|i| args.get(i + 1))
                .cloned();
            FoundRule {
                table,
                chain,
                comment,
                args,
            }
        })
        .collect()
}

/// Destination ports (and port ranges) matched by DNAT and REDIRECT rules of a saved nat table.
pub fn redirected_ports(saved: &str) -> BTreeSet<u16> {
    let mut ports = BTreeSet::new();
    for line in saved.lines().filter(|l| l.starts_with("-A ")) {
        let args = split_rule(line);
        let redirects = args
            .windows(2)
            .any(|w| w[0] == "-j" && (w[1] == "DNAT" || w[1] == "REDIRECT"));
        if !redirects {
            continue;
        }
        for pair in args.windows(2) {
            if pair[0] != "--dport" && pair[0] != "--dports" {
                continue;
            }
            for part in pair[1].split(',') {
                let (first, last) = part.split_once(':').unwrap_or((part, part));
                if let (Ok(first), Ok(last)) = (first.parse::<u16>(), last.parse::<u16>()) {
                    ports.extend(first..=last);
                }
            }
        }
    }
    ports
}

/// Makes the two chains exist and each built-in chain jump to its agent chain exactly once;
/// `FORWARD`'s jump first, ahead of libvirt's chains.
fn ensure_chains() -> Result<()> {
    for (table, chain, parents) in [
        ("nat", DNAT_CHAIN, &["PREROUTING", "OUTPUT"][..]),
        ("filter", FORWARD_CHAIN, &["FORWARD"][..]),
    ] {
        let saved = save(table)?;
        if !saved
            .lines()
            .any(|l| l == format!(":{chain} - [0:0]") || l.starts_with(&format!(":{chain} ")))
        {
            iptables(table, &["-N", chain])?;
        }
        let jump = format!("-j {chain}");
        for parent in parents {
            let rules: Vec<&str> = saved
                .lines()
                .filter_map(|l| l.strip_prefix(&format!("-A {parent} ")))
                .collect();
            let jumps = rules.iter().filter(|r| **r == jump).count();
            // FORWARD's jump must come before libvirt's REJECT rules; the nat chains hold
            // nothing that would stop a DNAT before it.
            let must_be_first = table == "filter";
            let in_place = if must_be_first {
                rules.first() == Some(&jump.as_str())
            } else {
                jumps > 0
            };
            if jumps == 1 && in_place {
                continue;
            }
            for _ in 0..jumps {
                iptables(table, &["-D", parent, "-j", chain])?;
            }
            iptables(table, &["-I", parent, "1", "-j", chain])?;
        }
    }
    Ok(())
}

impl Firewall {
    /// The rules of the node tagged `tag` (see [`crate::identity::node_tag`]).
    pub fn new(tag: impl Into<String>) -> Self {
        Self {
            tag: tag.into(),
            on_host: true,
        }
    }

    /// The forwards of simulated VMs (libvirt's test driver): no rule is made, read or
    /// removed on this host, so a simulated node never touches the host's firewall nor
    /// another agent's rules.
    pub fn for_simulated_vms(tag: impl Into<String>) -> Self {
        Self {
            tag: tag.into(),
            on_host: false,
        }
    }

    /// The node tag in the rule comments.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Every rule in the agent's two chains, whoever's.
    pub fn rules(&self) -> Result<Vec<FoundRule>> {
        let mut rules = parse_rules(&save("nat")?, "nat", DNAT_CHAIN);
        rules.extend(parse_rules(&save("filter")?, "filter", FORWARD_CHAIN));
        Ok(rules)
    }

    /// Public ports that NAT rules on the host already redirect: this node's and another
    /// agent's in `DECLOUD-DNAT`, and any DNAT or REDIRECT rule someone else made. A port
    /// is never handed out over someone's forward, which the agent's rule would shadow.
    pub fn public_ports_in_use(&self) -> Result<BTreeSet<u16>> {
        if !self.on_host {
            return Ok(BTreeSet::new());
        }
        let _guard = lock();
        Ok(redirected_ports(&save("nat")?))
    }

    /// Adds a forward's two rules, each unless it exists already.
    pub fn add(&self, rule: &ForwardRule) -> Result<()> {
        if !self.on_host {
            return Ok(());
        }
        let _guard = lock();
        enable_ip_forward();
        ensure_chains()?;
        let comment = rule.comment(&self.tag);
        let present = self.rules()?;
        for (table, chain, args) in [
            ("nat", DNAT_CHAIN, rule.dnat_args(&self.tag)),
            ("filter", FORWARD_CHAIN, rule.accept_args(&self.tag)),
        ] {
            let exists = present
                .iter()
                .any(|r| r.table == table && r.comment.as_deref() == Some(comment.as_str()));
            if !exists {
                iptables_rule(table, "-A", chain, &args)?;
            }
        }
        info!(target: "agent::firewall", vm = %rule.vm_id, %comment, "forwarding");
        Ok(())
    }

    /// Removes every rule of this node for `vm_id`.
    pub fn remove_vm(&self, vm_id: &str) -> Result<usize> {
        if !self.on_host {
            return Ok(0);
        }
        let _guard = lock();
        let mut removed = 0;
        for rule in self.rules()? {
            if rule.tag() == Some(self.tag.as_str()) && rule.vm_id() == Some(vm_id) {
                iptables_rule(rule.table, "-D", rule.chain, &rule.args)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Brings the agent's chains in line with `desired`: missing rules are added, a rule
    /// present more than once is kept once, rules of this node not desired are removed, and
    /// unmarked rules in the agent's chains are removed. Rules carrying another node's tag
    /// (another agent on this host) and every rule outside the two chains stay.
    pub fn reconcile(&self, desired: &[ForwardRule]) -> Result<FirewallReport> {
        if !self.on_host {
            return Ok(FirewallReport::default());
        }
        let _guard = lock();
        if !desired.is_empty() {
            enable_ip_forward();
        }
        ensure_chains()?;
        let mut report = FirewallReport::default();
        let mut wanted: BTreeMap<(&str, String), (&str, Vec<String>)> = BTreeMap::new();
        for rule in desired {
            let comment = rule.comment(&self.tag);
            wanted.insert(
                ("nat", comment.clone()),
                (DNAT_CHAIN, rule.dnat_args(&self.tag)),
            );
            wanted.insert(
                ("filter", comment),
                (FORWARD_CHAIN, rule.accept_args(&self.tag)),
            );
        }
        let mut seen: BTreeMap<(&str, String), usize> = BTreeMap::new();
        for rule in self.rules()? {
            let keep = match (&rule.comment, rule.tag()) {
                (Some(comment), Some(tag)) if tag == self.tag => {
                    let key = (rule.table, comment.clone());
                    let count = seen.entry(key.clone()).or_default();
                    *count += 1;
                    wanted.contains_key(&key) && *count == 1
                }
                (_, Some(_)) => true,
                (_, None) => false,
            };
            if !keep {
                warn!(target: "agent::firewall", table = rule.table, chain = rule.chain, rule = %rule.args.join(" "), "removing a rule not in the records");
                iptables_rule(rule.table, "-D", rule.chain, &rule.args)?;
                report.removed += 1;
            }
        }
        for ((table, comment), (chain, args)) in &wanted {
            if !seen.contains_key(&(*table, comment.clone())) {
                iptables_rule(table, "-A", chain, args)?;
                report.added += 1;
            }
        }
        Ok(report)
    }
}

/// Forwarding between interfaces must be on for DNAT to a guest to work. libvirt turns it
/// on when it starts a NAT network; the agent makes sure, since an operator's sysctl
/// reload can turn it off again.
fn enable_ip_forward() {
    const PATH: &str = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(PATH).is_ok_and(|v| v.trim() == "1") {
        return;
    }
    match std::fs::write(PATH, "1") {
        Ok(()) => info!(target: "agent::firewall", "enabled net.ipv4.ip_forward"),
        Err(error) => {
            warn!(target: "agent::firewall", %error, "cannot enable net.ipv4.ip_forward; forwarded ports will not answer")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_rules_split_back_into_their_arguments() {
        let saved = "*nat\n:DECLOUD-DNAT - [0:0]\n\
            -A PREROUTING -j DECLOUD-DNAT\n\
            -A DECLOUD-DNAT ! -d 127.0.0.0/8 -p udp -m addrtype --dst-type LOCAL -m udp --dport 40001 -m comment --comment decloud:00aa:vm-1:udp:40001:192.168.123.2:53 -j DNAT --to-destination 192.168.123.2:53\n\
            -A DECLOUD-DNAT -p tcp -m comment --comment \"made by hand\" -j ACCEPT\n\
            COMMIT\n";
        let rules = parse_rules(saved, "nat", DNAT_CHAIN);
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].tag(), Some("00aa"));
        assert_eq!(rules[0].vm_id(), Some("vm-1"));
        assert_eq!(rules[0].public_port(), Some(40001));
        assert_eq!(rules[0].args.first().map(String::as_str), Some("!"));
        assert_eq!(rules[1].comment.as_deref(), Some("made by hand"));
        assert_eq!(rules[1].tag(), None);
        assert_eq!(
            rules[1].args,
            [
                "-p",
                "tcp",
                "-m",
                "comment",
                "--comment",
                "made by hand",
                "-j",
                "ACCEPT"
            ]
        );
    }

    #[test]
    fn ports_redirected_by_anyone_count_as_in_use() {
        let saved = "*nat\n\
            -A PREROUTING -p tcp -m tcp --dport 40005 -j DNAT --to-destination 10.0.0.5:22\n\
            -A PREROUTING -p udp -m multiport --dports 40010:40012,40020 -j DNAT --to-destination 10.0.0.6\n\
            -A OUTPUT -p tcp -m tcp --dport 40030 -j REDIRECT --to-ports 8080\n\
            -A PREROUTING -p tcp -m tcp --dport 40040 -j ACCEPT\n\
            -A DECLOUD-DNAT -p tcp -m tcp --dport 40050 -m comment --comment decloud:ff:vm:tcp:40050:192.168.123.2:80 -j DNAT --to-destination 192.168.123.2:80\n\
            COMMIT\n";
        assert_eq!(
            redirected_ports(saved),
            BTreeSet::from([40005, 40010, 40011, 40012, 40020, 40030, 40050])
        );
    }

    #[test]
    fn both_rules_of_a_forward_carry_one_comment_and_its_protocol() {
        let rule = ForwardRule {
            vm_id: "web".into(),
            protocol: PortProtocol::Udp,
            public: 40123,
            guest_ip: Ipv4Addr::new(192, 168, 123, 9),
            guest: 53,
        };
        let comment = rule.comment("0011223344556677");
        assert_eq!(
            comment,
            "decloud:0011223344556677:web:udp:40123:192.168.123.9:53"
        );
        let dnat = rule.dnat_args("0011223344556677").join(" ");
        assert!(dnat.contains("-p udp"), "{dnat}");
        assert!(dnat.contains("--dport 40123"), "{dnat}");
        assert!(dnat.contains("--to-destination 192.168.123.9:53"), "{dnat}");
        assert!(dnat.contains(&comment), "{dnat}");
        let accept = rule.accept_args("0011223344556677").join(" ");
        assert!(
            accept.contains("-d 192.168.123.9/32 -p udp -m udp --dport 53"),
            "{accept}"
        );
        assert!(accept.contains("--ctorigdstport 40123"), "{accept}");
    }
}

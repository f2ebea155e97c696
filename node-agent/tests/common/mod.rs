//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

pub mod caddy;
pub mod netns;
pub mod peer;

use std::{
    collections::BTreeMap,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use alloy::primitives::Address;
use decloud_node_agent::{
    Agent, Config, ConfigLayer, DomainType, Identity, ImageConfig, NetworkConfig,
    create_blank_qcow2,
};
use decloud_sdk::agent_protocol::{BandwidthTier, NodeResources, QualityTier, VmSpec};

/// Operator address used by every test node.
pub const OPERATOR: Address = Address::repeat_byte(0x42);

/// A data directory QEMU (running as its own user) can reach.
pub fn data_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("decloud-agent-test-")
        .tempdir_in("/var/tmp")
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// A blank 16 MiB qcow2 base image in `dir`.
pub fn base_image(dir: &Path) -> PathBuf {
    let base = dir.join("base.qcow2");
    create_blank_qcow2(&base, 16).unwrap();
    base
}

/// Config for the in-process libvirt test driver.
pub fn test_driver_config(dir: &Path, machine: &str) -> Config {
    let mut images = BTreeMap::new();
    images.insert(
        "blank".to_owned(),
        ImageConfig {
            base: base_image(dir),
            kernel: None,
            initrd: None,
            cmdline: None,
        },
    );
    let layer = ConfigLayer {
        data_dir: Some(dir.join("data")),
        libvirt_uri: Some("test:///default".into()),
        domain_type: Some(DomainType::Qemu),
        operator: Some(OPERATOR),
        machine_id: Some(machine.into()),
        shutdown_timeout_secs: Some(2),
        // A network per test: tests run in parallel, and agents reserving addresses in one
        // network at the same moment could pick the same free address.
        network: Some(NetworkConfig::Network {
            name: format!("test-{machine}"),
        }),
        images,
        ..Default::default()
    };
    Config::resolve(None, layer, ConfigLayer::default()).unwrap()
}

/// Resources as discovery would report them, without spending time on the benchmark.
pub fn resources() -> NodeResources {
    NodeResources {
        arch: std::env::consts::ARCH.into(),
        cpu_model: "test".into(),
        cpu_cores: 2,
        memory_mib: 2048,
        disks: vec![],
        vm_storage_free_bytes: 1 << 30,
        gpus: vec![],
        compute_points: 100,
    }
}

/// Opens an agent (without reconciling).
pub async fn open_agent(config: Config) -> Agent {
    open_agent_with(config, resources()).await
}

/// Opens an agent with the given resources (without reconciling).
pub async fn open_agent_with(config: Config, resources: NodeResources) -> Agent {
    let (identity, _) = Identity::load_or_create(&config).unwrap();
    Agent::open(config, identity, resources).await.unwrap()
}

/// Builds a fake sysfs tree under `root` for GPU discovery (this host has no GPU):
/// `bus/pci/devices/<address>/{class,vendor,device}` for each `(address, class, iommu group)`,
/// and `kernel/iommu_groups/<n>/devices/<address>` (symlinks on a real host, plain files here).
pub fn fake_sysfs(root: &Path, devices: &[(&str, &str, Option<u32>)]) {
    for (address, class, group) in devices {
        let dir = root.join("bus/pci/devices").join(address);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("class"), format!("{class}\n")).unwrap();
        std::fs::write(dir.join("vendor"), "0x10de\n").unwrap();
        std::fs::write(dir.join("device"), "0x2684\n").unwrap();
        if let Some(group) = group {
            let members = root.join(format!("kernel/iommu_groups/{group}/devices"));
            std::fs::create_dir_all(&members).unwrap();
            std::fs::write(members.join(address), "").unwrap();
        }
    }
}

/// A small spec.
pub fn spec(id: &str, image: &str) -> VmSpec {
    VmSpec {
        id: id.into(),
        image: image.into(),
        vcpus: 1,
        memory_mib: 64,
        disk_gib: 1,
        quality: QualityTier::Burstable,
        bandwidth: BandwidthTier::Basic,
        gpus: 0,
        hostname: None,
        user_data: "#cloud-config\n".into(),
        ports: vec![],
        readiness: vec![],
        ingress: Vec::new(),
    }
}

/// Files under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(files_under(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// The direct-boot test guest, built for the host's kernel: (kernel, initramfs).
/// Panics with what to install when something is missing.
pub fn test_guest(dir: &Path) -> (PathBuf, PathBuf) {
    let kernel = decloud_node_agent::test_guest::find_kernel()
        .unwrap_or_else(|e| panic!("real-VM tests need a kernel: {e}"));
    let release = decloud_node_agent::test_guest::kernel_release(&kernel).unwrap();
    let initrd = dir.join("test-guest.cpio");
    decloud_node_agent::test_guest::build_initramfs(&release, &initrd)
        .unwrap_or_else(|e| panic!("building the test guest initramfs: {e}"));
    (kernel, initrd)
}

/// Fails with instructions unless libvirtd answers on qemu:///system.
pub fn require_libvirtd() {
    if let Err(e) = decloud_node_agent::Hypervisor::open("qemu:///system") {
        panic!(
            "real-VM tests need libvirtd and virtlogd running with QEMU installed \
             (scripts/test installs and starts them; by hand: scripts/setup, then \
             `virtlogd -d && libvirtd -d`): {e}"
        );
    }
}

/// Config TOML for a real QEMU guest under qemu:///system with user-mode networking.
pub fn real_vm_config_toml(dir: &Path, machine: &str, orchestrator: Option<&str>) -> String {
    let (kernel, initrd) = test_guest(dir);
    let base = base_image(dir);
    let orchestrator = orchestrator
        .map(|url| format!("orchestrator_url = \"{url}\"\n"))
        .unwrap_or_default();
    format!(
        "data_dir = \"{data}\"\nlibvirt_uri = \"qemu:///system\"\ndomain_type = \"qemu\"\n\
         operator = \"{OPERATOR}\"\nmachine_id = \"{machine}\"\nshutdown_timeout_secs = 3\n\
         network = {{ type = \"user\" }}\n{orchestrator}\n\
         [images.test-guest]\nbase = \"{base}\"\nkernel = \"{kernel}\"\ninitrd = \"{initrd}\"\n\
         cmdline = \"{cmdline}\"\n",
        data = dir.join("data").display(),
        base = base.display(),
        kernel = kernel.display(),
        initrd = initrd.display(),
        cmdline = decloud_node_agent::test_guest::CMDLINE,
    )
}

/// A spec for the test guest whose user-data carries `value`.
pub fn test_guest_spec(id: &str, value: &str) -> VmSpec {
    let mut spec = spec(id, "test-guest");
    spec.memory_mib = 256;
    // An uncapped vCPU: the Burstable tier's 25 % quota makes the emulated boot 4x slower.
    spec.quality = decloud_sdk::agent_protocol::QualityTier::Dedicated;
    spec.user_data = format!("#cloud-config\ndecloud_test_value: {value}\n");
    spec.readiness = vec![decloud_sdk::agent_protocol::ReadinessProbe::CloudInit];
    spec
}

/// Waits until the console log contains `needle`; returns the log.
pub async fn wait_for_console(log: &Path, needle: &str, limit: std::time::Duration) -> String {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let text = String::from_utf8_lossy(&std::fs::read(log).unwrap_or_default()).into_owned();
        if text.contains(needle) {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{needle:?} did not appear on the console within {limit:?}; console so far:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// A value no earlier run can have printed.
pub fn unique_value() -> String {
    format!(
        "v{}x{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// Config TOML for a real QEMU guest under qemu:///system on the agent's own NAT network
/// `network` (created on `subnet`), forwarding public ports from `range`.
///
/// Tests that expect particular public ports take their `range` below the kernel's ephemeral
/// range (32768-60999): the agent skips ports bound on the host, and on a busy machine any
/// outgoing connection may hold an ephemeral port for a while.
pub fn nat_vm_config_toml(
    dir: &Path,
    machine: &str,
    orchestrator: Option<&str>,
    network: &str,
    subnet: &str,
    range: &str,
) -> String {
    real_vm_config_toml(dir, machine, orchestrator).replace(
        "network = { type = \"user\" }\n",
        &format!(
            "network = {{ type = \"network\", name = \"{network}\" }}\nnetwork_subnet = \"{subnet}\"\n\
             public_port_range = \"{range}\"\npublic_address = \"203.0.113.7\"\n"
        ),
    )
}

/// A host outside the node: a network namespace joined to the node by a veth pair, with
/// its default route through the node, like a client on the internet reaching the node's
/// public address. Removed (with its links) when dropped.
pub struct OutsideHost {
    namespace: String,
    host_link: String,
    node_address: String,
}

fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let output = std::process::Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

impl OutsideHost {
    /// A namespace `dcx-<name>` on 10.250.`index`.0/30; the node side is .1, the client .2.
    pub fn new(name: &str, index: u8) -> Self {
        let namespace = format!("dcx-{name}");
        let host_link = format!("dcxh-{name}");
        let peer_link = format!("dcxn-{name}");
        // Leftovers of an earlier run that died before its cleanup.
        let _ = run("ip", &["netns", "del", &namespace]);
        let _ = run("ip", &["link", "del", &host_link]);
        let node_address = format!("10.250.{index}.1");
        let client = format!("10.250.{index}.2/30");
        let steps: Vec<Vec<String>> = vec![
            vec!["netns".into(), "add".into(), namespace.clone()],
            vec![
                "link".into(),
                "add".into(),
                host_link.clone(),
                "type".into(),
                "veth".into(),
                "peer".into(),
                "name".into(),
                peer_link.clone(),
            ],
            vec![
                "link".into(),
                "set".into(),
                peer_link.clone(),
                "netns".into(),
                namespace.clone(),
            ],
            vec![
                "addr".into(),
                "add".into(),
                format!("{node_address}/30"),
                "dev".into(),
                host_link.clone(),
            ],
            vec!["link".into(), "set".into(), host_link.clone(), "up".into()],
        ];
        let this = Self {
            namespace: namespace.clone(),
            host_link,
            node_address: node_address.clone(),
        };
        for step in steps {
            let args: Vec<&str> = step.iter().map(String::as_str).collect();
            run("ip", &args).unwrap_or_else(|e| panic!("setting up the outside host: {e}"));
        }
        for step in [
            vec!["addr", "add", &client, "dev", &peer_link],
            vec!["link", "set", &peer_link, "up"],
            vec!["link", "set", "lo", "up"],
            vec!["route", "add", "default", "via", &node_address],
        ] {
            let mut args = vec!["netns", "exec", &namespace, "ip"];
            args.extend(step);
            run("ip", &args).unwrap_or_else(|e| panic!("setting up the outside host: {e}"));
        }
        this
    }

    /// The node's address as this host sees it.
    pub fn node_address(&self) -> &str {
        &self.node_address
    }

    /// GET `http://<node address>:<port><path>` from inside the namespace; the body.
    pub fn get(&self, port: u16, path: &str) -> Result<String, String> {
        let address = format!("{}:{port}", self.node_address);
        let response = in_namespace(&self.namespace, {
            let path = path.to_owned();
            move || http_get(&address, &path)
        })?;
        match response.split_once("\r\n\r\n") {
            Some((head, body))
                if head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200") =>
            {
                Ok(body.to_owned())
            }
            _ => Err(format!("unexpected response: {response}")),
        }
    }

    /// Retries [`Self::get`] until it answers (the guest may still be booting).
    pub async fn get_eventually(
        &self,
        port: u16,
        path: &str,
        limit: std::time::Duration,
    ) -> String {
        let deadline = std::time::Instant::now() + limit;
        loop {
            match self.get(port, path) {
                Ok(body) => return body,
                Err(e) if std::time::Instant::now() > deadline => {
                    panic!("no answer through port {port} within {limit:?}: {e}")
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(500)).await,
            }
        }
    }
}

/// Runs `f` on a thread that joined the network namespace `namespace` (sockets it opens
/// live there), and returns its result.
pub fn in_namespace<T: Send + 'static>(
    namespace: &str,
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    use std::os::fd::AsRawFd;
    let path = format!("/var/run/netns/{namespace}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
        // SAFETY: setns(2) on a descriptor we own; it changes only this thread's namespace.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(format!("setns {path}: {}", std::io::Error::last_os_error()));
        }
        f()
    })
    .join()
    .map_err(|_| "the namespace thread panicked".to_owned())?
}

/// A plain HTTP/1.0 GET; the whole response.
pub fn http_get(address: &str, path: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let timeout = std::time::Duration::from_secs(5);
    let socket: std::net::SocketAddr = address.parse().map_err(|e| format!("{address}: {e}"))?;
    let mut stream = std::net::TcpStream::connect_timeout(&socket, timeout)
        .map_err(|e| format!("connecting to {address}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .map_err(|e| format!("sending to {address}: {e}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| format!("reading from {address}: {e}"))?;
    Ok(String::from_utf8_lossy(&response).into_owned())
}

impl Drop for OutsideHost {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.namespace]);
        let _ = run("ip", &["link", "del", &self.host_link]);
    }
}

/// `iptables-save` of the nat and filter tables.
pub fn iptables_save() -> String {
    let mut out = run("iptables-save", &["-t", "nat"]).unwrap();
    out.push_str(&run("iptables-save", &["-t", "filter"]).unwrap());
    out
}

/// Runs iptables with `args`, panicking on failure.
pub fn iptables(args: &[&str]) {
    run("iptables", args).unwrap_or_else(|e| panic!("{e}"));
}

/// Removes what a test made on the host, also when it fails: the domains of its node, its
/// forwarding rules, its NAT network. Built before the test makes anything.
pub struct HostCleanup {
    pub node_id: alloy::primitives::B256,
    pub network: String,
    /// Exact `iptables` rule specs to delete, e.g. rules a test added by hand.
    pub extra_rules: Vec<Vec<String>>,
}

impl Drop for HostCleanup {
    fn drop(&mut self) {
        if let Ok(libvirt) = decloud_node_agent::Hypervisor::open("qemu:///system") {
            for domain in libvirt.owned_domains(self.node_id).unwrap_or_default() {
                let _ = libvirt.remove(&domain.name);
            }
            let _ = libvirt.remove_network(&self.network);
        }
        let tag = decloud_node_agent::node_tag(&self.node_id);
        let firewall = decloud_node_agent::Firewall::new(tag.clone());
        for rule in firewall.rules().unwrap_or_default() {
            if rule.tag() == Some(tag.as_str()) {
                let mut args = vec!["-t", rule.table, "-D", rule.chain];
                args.extend(rule.args.iter().map(String::as_str));
                let _ = run("iptables", &args);
            }
        }
        // The agent's IFB shaping devices of this node.
        let prefix = format!("{}{}", decloud_node_agent::IFB_PREFIX, &tag[..5]);
        if let Ok(links) = run("ip", &["-o", "link", "show"]) {
            for link in links.lines() {
                let name = link.split(':').nth(1).unwrap_or_default().trim();
                let name = name.split('@').next().unwrap_or_default();
                if name.starts_with(&prefix) {
                    let _ = run("ip", &["link", "del", name]);
                }
            }
        }
        for rule in &self.extra_rules {
            let args: Vec<&str> = rule.iter().map(String::as_str).collect();
            let _ = run("iptables", &args);
        }
    }
}

/// The agent binary running `run --config <file>`, killed when dropped.
pub struct AgentProcess(std::process::Child);

impl AgentProcess {
    pub fn start(config_path: &std::path::Path, log: &std::path::Path) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_decloud-node-agent"))
            .arg("run")
            .arg("--config")
            .arg(config_path)
            .env("DECLOUD_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Self(child)
    }

    pub fn sigkill(&mut self) {
        // Child::kill sends SIGKILL: no cleanup code of the agent runs.
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }

    pub fn sigterm(&mut self) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let status = self.0.wait().unwrap();
        assert!(status.success(), "agent exited with {status}");
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

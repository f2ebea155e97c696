//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

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
        network: Some(NetworkConfig::Network {
            name: "default".into(),
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
    let (identity, _) = Identity::load_or_create(&config).unwrap();
    Agent::open(config, identity, resources()).await.unwrap()
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
        hostname: None,
        user_data: "#cloud-config\n".into(),
        ports: vec![],
        readiness: vec![],
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

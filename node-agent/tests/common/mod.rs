//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

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

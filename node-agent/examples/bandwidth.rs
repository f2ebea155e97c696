//! Bandwidth benchmark (not a test): one VM per bandwidth tier on the agent's NAT network,
//! each serving a file of zeros with busybox `httpd` through a forwarded public port; a
//! client in a network namespace (joined to the node by a veth pair, like a host on the
//! internet) downloads it with curl and the rate is printed in Mbit/s. The download is the
//! guest's outbound traffic, which the agent caps at the tier's rate.
//!
//! Run as root with libvirtd running: `cargo run --release -p decloud-node-agent --example
//! bandwidth`. It removes its VMs, network, namespace and rules when it ends.

use std::{
    collections::BTreeMap,
    os::unix::fs::PermissionsExt,
    process::Command,
    time::{Duration, Instant},
};

use alloy::primitives::Address;
use decloud_node_agent::{
    Agent, Config, ConfigLayer, DomainType, Identity, ImageConfig, NetworkConfig,
    create_blank_qcow2, test_guest,
};
use decloud_sdk::agent_protocol::{
    BandwidthTier, PortProtocol, PortSpec, QualityTier, ReadinessProbe, VmSpec,
};

const NETWORK: &str = "dcbench";
const NAMESPACE: &str = "dcbench-client";
const HOST_LINK: &str = "dcbench-h";
const NODE_ADDRESS: &str = "10.251.0.1";
const TRANSFERS: usize = 3;

fn sh(program: &str, args: &[&str]) -> Result<String, String> {
    let output = Command::new(program)
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

fn must(program: &str, args: &[&str]) {
    sh(program, args).unwrap_or_else(|e| panic!("{e}"));
}

fn client_up() {
    client_down();
    must("ip", &["netns", "add", NAMESPACE]);
    must(
        "ip",
        &[
            "link",
            "add",
            HOST_LINK,
            "type",
            "veth",
            "peer",
            "name",
            "dcbench-n",
        ],
    );
    must("ip", &["link", "set", "dcbench-n", "netns", NAMESPACE]);
    must(
        "ip",
        &[
            "addr",
            "add",
            &format!("{NODE_ADDRESS}/30"),
            "dev",
            HOST_LINK,
        ],
    );
    must("ip", &["link", "set", HOST_LINK, "up"]);
    for step in [
        &["addr", "add", "10.251.0.2/30", "dev", "dcbench-n"][..],
        &["link", "set", "dcbench-n", "up"],
        &["route", "add", "default", "via", NODE_ADDRESS],
    ] {
        let mut args = vec!["netns", "exec", NAMESPACE, "ip"];
        args.extend(step);
        must("ip", &args);
    }
}

fn client_down() {
    let _ = sh("ip", &["netns", "del", NAMESPACE]);
    let _ = sh("ip", &["link", "del", HOST_LINK]);
}

/// Downloads `url` from the client namespace; returns the rate in Mbit/s.
fn download_mbps(url: &str) -> Result<f64, String> {
    let out = sh(
        "ip",
        &[
            "netns",
            "exec",
            NAMESPACE,
            "curl",
            "-sS",
            "--fail",
            "--max-time",
            "120",
            "-o",
            "/dev/null",
            "-w",
            "%{speed_download} %{size_download}",
            url,
        ],
    )?;
    let mut parts = out.split_whitespace();
    let bytes_per_sec: f64 = parts
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or(out.clone())?;
    Ok(bytes_per_sec * 8.0 / 1e6)
}

fn spec(id: &str, tier: BandwidthTier, blob_mib: u32) -> VmSpec {
    VmSpec {
        id: id.into(),
        image: "guest".into(),
        vcpus: 1,
        memory_mib: 256 + u64::from(blob_mib),
        disk_gib: 1,
        // An uncapped vCPU: the emulated guest's own speed should not be what is measured.
        quality: QualityTier::Dedicated,
        bandwidth: tier,
        hostname: None,
        user_data: format!(
            "#cloud-config\ndecloud_test_value: {id}\ndecloud_test_blob_mib: {blob_mib}\n"
        ),
        ports: vec![PortSpec {
            guest: test_guest::HTTP_PORT,
            protocol: PortProtocol::Tcp,
        }],
        readiness: vec![ReadinessProbe::CloudInit],
    }
}

async fn run(agent: &Agent) {
    println!("| tier | target Mbit/s | file MiB | measured Mbit/s (each transfer) | median |");
    println!("|---|---:|---:|---|---:|");
    for (id, tier, blob_mib) in [
        ("basic", BandwidthTier::Basic, 12),
        ("performance", BandwidthTier::Performance, 96),
        ("unmetered", BandwidthTier::Unmetered, 96),
    ] {
        let report = agent
            .create_vm(spec(id, tier, blob_mib))
            .await
            .expect("create");
        let public = report.forwards[0].public;
        let url = format!("http://{NODE_ADDRESS}:{public}/blob");
        let deadline = Instant::now() + Duration::from_secs(300);
        // The guest serves once it has written the file and started httpd.
        while sh(
            "ip",
            &[
                "netns",
                "exec",
                NAMESPACE,
                "curl",
                "-sS",
                "--fail",
                "--max-time",
                "5",
                "-I",
                &url,
            ],
        )
        .is_err()
        {
            assert!(Instant::now() < deadline, "{id} never served {url}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let mut rates: Vec<f64> = (0..TRANSFERS)
            .map(|_| download_mbps(&url).expect("download"))
            .collect();
        let each: Vec<String> = rates.iter().map(|r| format!("{r:.1}")).collect();
        rates.sort_by(f64::total_cmp);
        let target = tier
            .mbps()
            .map_or_else(|| "none".to_owned(), |m| m.to_string());
        println!(
            "| {tier:?} | {target} | {blob_mib} | {} | {:.1} |",
            each.join(", "),
            rates[TRANSFERS / 2]
        );
        agent.delete_vm(id).await.expect("delete");
    }
}

#[tokio::main]
async fn main() {
    let dir = tempfile::Builder::new()
        .prefix("decloud-agent-bandwidth-")
        .tempdir_in("/var/tmp")
        .expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let base = dir.path().join("base.qcow2");
    create_blank_qcow2(&base, 16).expect("base image");
    let kernel = test_guest::find_kernel().expect("kernel");
    let release = test_guest::kernel_release(&kernel).expect("release");
    let initrd = dir.path().join("guest.cpio");
    test_guest::build_initramfs(&release, &initrd).expect("initramfs");
    let mut images = BTreeMap::new();
    images.insert(
        "guest".to_owned(),
        ImageConfig {
            base,
            kernel: Some(kernel),
            initrd: Some(initrd),
            cmdline: Some(test_guest::CMDLINE.into()),
        },
    );
    let layer = ConfigLayer {
        data_dir: Some(dir.path().join("data")),
        libvirt_uri: Some("qemu:///system".into()),
        domain_type: Some(DomainType::Qemu),
        operator: Some(Address::repeat_byte(0x42)),
        machine_id: Some("bench-bandwidth".into()),
        shutdown_timeout_secs: Some(1),
        network: Some(NetworkConfig::Network {
            name: NETWORK.into(),
        }),
        network_subnet: Some("192.168.241.0/24".into()),
        public_port_range: Some("43000-43009".into()),
        images,
        ..Default::default()
    };
    let config: Config = Config::resolve(None, layer, ConfigLayer::default()).expect("config");
    let (identity, _) = Identity::load_or_create(&config).expect("identity");
    let resources = decloud_node_agent::discover(&config.data_dir).expect("resources");
    let agent = Agent::open(config, identity, resources)
        .await
        .expect("agent");
    agent.reconcile().await.expect("reconcile");
    client_up();

    println!(
        "## bandwidth through a forwarded port (guest -> client, curl from a network namespace, {TRANSFERS} transfers each)"
    );
    run(&agent).await;

    client_down();
    agent
        .with_hypervisor(|h| h.remove_network(NETWORK))
        .await
        .expect("removing the network");
    agent.close().await;
}

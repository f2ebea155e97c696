//! Bandwidth benchmark (not a test): one VM per bandwidth tier on the agent's NAT network,
//! each serving a file of zeros with busybox `httpd` through a forwarded public port; a
//! client in a network namespace (joined to the node by a veth pair, like a host on the
//! internet) downloads it over plain TCP and the rate is printed in Mbit/s. The download is the
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

/// Downloads `http://<address><path>` from a thread inside the client namespace; returns
/// the body's size and the rate in Mbit/s.
fn download(address: &str, path: &str) -> Result<(usize, f64), String> {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    let address: std::net::SocketAddr = address.parse().map_err(|e| format!("{e}"))?;
    let request = format!("GET {path} HTTP/1.0\r\n\r\n");
    std::thread::spawn(move || {
        let netns = format!("/var/run/netns/{NAMESPACE}");
        let file = std::fs::File::open(&netns).map_err(|e| format!("{netns}: {e}"))?;
        // SAFETY: setns(2) on a descriptor we own; it changes only this thread's namespace.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(format!("setns: {}", std::io::Error::last_os_error()));
        }
        let start = Instant::now();
        let mut stream = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(5))
            .map_err(|e| format!("connecting to {address}: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        stream
            .write_all(request.as_bytes())
            .map_err(|e| e.to_string())?;
        let mut buffer = vec![0; 1 << 16];
        let mut status = Vec::new();
        let mut total = 0;
        loop {
            match stream.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => {
                    if status.len() < 12 {
                        status.extend_from_slice(&buffer[..n.min(12 - status.len())]);
                    }
                    total += n;
                }
                Err(e) => return Err(format!("reading from {address}: {e}")),
            }
        }
        let seconds = start.elapsed().as_secs_f64();
        if !status.ends_with(b" 200") {
            return Err(format!(
                "{address} answered {:?}",
                String::from_utf8_lossy(&status)
            ));
        }
        Ok((total, total as f64 * 8.0 / seconds / 1e6))
    })
    .join()
    .map_err(|_| "download thread panicked".to_owned())?
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
        gpus: 0,
        hostname: None,
        user_data: format!(
            "#cloud-config\ndecloud_test_value: {id}\ndecloud_test_blob_mib: {blob_mib}\n"
        ),
        ports: vec![PortSpec {
            guest: test_guest::HTTP_PORT,
            protocol: PortProtocol::Tcp,
        }],
        readiness: vec![ReadinessProbe::CloudInit],
        ingress: Vec::new(),
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
        let address = format!("{NODE_ADDRESS}:{public}");
        let deadline = Instant::now() + Duration::from_secs(300);
        // httpd starts only after the file is written, so any answer means it is complete.
        while download(&address, "/").is_err() {
            assert!(
                Instant::now() < deadline,
                "{id} never answered at {address}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let mut rates: Vec<f64> = (0..TRANSFERS)
            .map(|_| {
                let (bytes, mbps) = download(&address, "/blob").expect("download");
                assert!(
                    bytes > (blob_mib as usize) << 20,
                    "{bytes} bytes: {address}"
                );
                mbps
            })
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
        "## bandwidth through a forwarded port (guest to a client in a network namespace, {TRANSFERS} transfers each)"
    );
    run(&agent).await;

    client_down();
    agent
        .with_hypervisor(|h| h.remove_network(NETWORK))
        .await
        .expect("removing the network");
    agent.close().await;
}

//! Node agent benchmark (not a test): real-VM create and delete times under the system
//! libvirtd, the agent's memory at idle and with 20 domains on libvirt's test driver, and
//! the compute-points benchmark twice.
//!
//! Run: `cargo run --release -p decloud-node-agent --example bench` with libvirtd and
//! virtlogd running (scripts/setup installs them; `virtlogd -d && libvirtd -d`).

use std::{
    collections::BTreeMap,
    os::unix::fs::PermissionsExt,
    time::{Duration, Instant},
};

use alloy::primitives::Address;
use decloud_node_agent::{
    Agent, Config, ConfigLayer, DomainType, Identity, ImageConfig, NetworkConfig,
    create_blank_qcow2, test_guest,
};
use decloud_sdk::agent_protocol::{BandwidthTier, QualityTier, VmSpec};

const REAL_RUNS: usize = 5;
const TEST_DRIVER_DOMAINS: usize = 20;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

fn spec(id: &str, image: &str, memory_mib: u64, user_data: String, quality: QualityTier) -> VmSpec {
    VmSpec {
        id: id.into(),
        image: image.into(),
        vcpus: 1,
        memory_mib,
        disk_gib: 1,
        quality,
        bandwidth: BandwidthTier::Basic,
        gpus: 0,
        hostname: None,
        user_data,
        ports: vec![],
        readiness: vec![],
        ingress: Vec::new(),
    }
}

fn config(
    dir: &std::path::Path,
    uri: &str,
    machine: &str,
    image: ImageConfig,
    timeout: u64,
) -> Config {
    let mut images = BTreeMap::new();
    images.insert("guest".to_owned(), image);
    let layer = ConfigLayer {
        data_dir: Some(dir.join(machine)),
        libvirt_uri: Some(uri.into()),
        domain_type: Some(DomainType::Qemu),
        operator: Some(Address::repeat_byte(0x42)),
        machine_id: Some(machine.into()),
        shutdown_timeout_secs: Some(timeout),
        network: Some(NetworkConfig::User),
        images,
        ..Default::default()
    };
    Config::resolve(None, layer, ConfigLayer::default()).expect("config")
}

async fn open(config: Config) -> Agent {
    let (identity, _) = Identity::load_or_create(&config).expect("identity");
    let resources = decloud_node_agent::discover(&config.data_dir).expect("resources");
    let agent = Agent::open(config, identity, resources)
        .await
        .expect("agent");
    agent.reconcile().await.expect("reconcile");
    agent
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summary(tier: &str, name: &str, samples: &mut [f64]) {
    samples.sort_by(|a, b| a.total_cmp(b));
    let mean = samples.iter().sum::<f64>() / samples.len() as f64;
    println!(
        "| {tier} | {name} | {:.0} | {:.0} | {:.0} | {:.0} |",
        samples[0],
        samples[samples.len() / 2],
        mean,
        samples[samples.len() - 1]
    );
}

#[tokio::main]
async fn main() {
    let dir = tempfile::Builder::new()
        .prefix("decloud-agent-bench-")
        .tempdir_in("/var/tmp")
        .expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let base = dir.path().join("base.qcow2");
    create_blank_qcow2(&base, 16).expect("base image");

    println!(
        "## compute points (best of {} x {} ms rounds)",
        decloud_node_agent::BENCH_ROUNDS,
        decloud_node_agent::BENCH_ROUND_MILLIS
    );
    for run in 1..=3 {
        let rate = decloud_node_agent::single_core_rate();
        let cores = std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1);
        println!(
            "run {run}: {rate} keccak256/s per core, {cores} cores -> {} compute points",
            decloud_node_agent::compute_points(cores, rate)
        );
    }

    // Memory on the test driver: idle, then with 20 running domains.
    let blank = ImageConfig {
        base: base.clone(),
        kernel: None,
        initrd: None,
        cmdline: None,
    };
    let agent = open(config(
        dir.path(),
        "test:///default",
        "bench-memory",
        blank,
        1,
    ))
    .await;
    agent.observe().await.expect("observe");
    let idle = rss_kib();
    for i in 0..TEST_DRIVER_DOMAINS {
        agent
            .create_vm(spec(
                &format!("mem-{i}"),
                "guest",
                64,
                "#cloud-config\n".into(),
                QualityTier::Burstable,
            ))
            .await
            .expect("create on the test driver");
    }
    agent.observe().await.expect("observe");
    agent.heartbeat(1).await.expect("heartbeat");
    let loaded = rss_kib();
    println!("\n## memory (VmRSS of the process running the agent library)");
    println!(
        "idle, reconciled, 0 domains: {:.1} MiB",
        idle as f64 / 1024.0
    );
    println!(
        "{TEST_DRIVER_DOMAINS} running domains on test:///default: {:.1} MiB",
        loaded as f64 / 1024.0
    );
    for i in 0..TEST_DRIVER_DOMAINS {
        agent.delete_vm(&format!("mem-{i}")).await.expect("delete");
    }
    agent.close().await;

    // Real VMs.
    let kernel = test_guest::find_kernel().expect("kernel");
    let release = test_guest::kernel_release(&kernel).expect("release");
    let initrd = dir.path().join("guest.cpio");
    test_guest::build_initramfs(&release, &initrd).expect("initramfs");
    let image = ImageConfig {
        base,
        kernel: Some(kernel),
        initrd: Some(initrd),
        cmdline: Some(test_guest::CMDLINE.into()),
    };
    let agent = open(config(dir.path(), "qemu:///system", "bench-real", image, 1)).await;
    println!("\n## real VM under qemu:///system (TCG), milliseconds");
    println!("| tier | step | min | median | mean | max |");
    println!("|---|---|---|---|---|---|");
    for (quality, runs) in [
        (QualityTier::Dedicated, REAL_RUNS),
        (QualityTier::Burstable, 2),
    ] {
        let (mut create, mut boot, mut stop, mut delete) = (vec![], vec![], vec![], vec![]);
        for run in 0..runs {
            let id = format!("bench-{run}");
            let value = format!("run{run}");
            let user_data = format!("#cloud-config\ndecloud_test_value: {value}\n");
            let start = Instant::now();
            agent
                .create_vm(spec(&id, "guest", 256, user_data, quality))
                .await
                .expect("create");
            create.push(ms(start.elapsed()));
            let console = agent.vm_dir(&id).join("console.log");
            let marker = format!("{}{value}", test_guest::VALUE_MARKER);
            loop {
                let text = std::fs::read_to_string(&console).unwrap_or_default();
                if text.contains(&marker) {
                    break;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(300),
                    "guest did not boot"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            boot.push(ms(start.elapsed()));
            let t = Instant::now();
            agent.stop_vm(&id).await.expect("stop");
            stop.push(ms(t.elapsed()));
            let t = Instant::now();
            agent.delete_vm(&id).await.expect("delete");
            delete.push(ms(t.elapsed()));
        }
        let tier = format!("{quality:?} ({runs} runs)");
        summary(
            &tier,
            "create → running (overlay, seed ISO, define, start)",
            &mut create,
        );
        summary(&tier, "create → seed value on the guest console", &mut boot);
        summary(
            &tier,
            "stop (ACPI request, forced off after the 1 s timeout)",
            &mut stop,
        );
        summary(
            &tier,
            "delete of the stopped VM (undefine, remove disks)",
            &mut delete,
        );
    }
    agent.close().await;
}

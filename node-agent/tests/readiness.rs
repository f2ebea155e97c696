//! Per-service readiness on a real guest: the system libvirtd, a NAT network the agent
//! creates, and the busybox test guest under QEMU, whose `httpd` serves `/` (200) and a page
//! behind basic auth (401), as templates' services behind a login do. The agent's probes
//! reach the guest at the address libvirt reports and find each service in the state it
//! really answers; a command check goes through libvirt to the guest agent, which this guest
//! does not run, and says so.

mod common;

use std::time::Duration;

use common::*;
use decloud_node_agent::{
    Agent, Config, ConfigLayer, Identity, http_probe,
    test_guest::{ADDRESS_MARKER, HTTP_PORT, LOGIN_PATH},
};
use decloud_sdk::agent_protocol::{self, ReadinessProbe, VmReport};

const BOOT_LIMIT: Duration = Duration::from_secs(240);

fn config_from(toml_text: &str) -> Config {
    let layer: ConfigLayer = toml::from_str(toml_text).unwrap();
    Config::resolve(Some(layer), ConfigLayer::default(), ConfigLayer::default()).unwrap()
}

/// Observes until `done` holds for the VM's report, within the boot limit.
async fn observe_until(agent: &Agent, vm: &str, done: impl Fn(&VmReport) -> bool) -> VmReport {
    let deadline = std::time::Instant::now() + BOOT_LIMIT;
    loop {
        agent.observe().await.unwrap();
        let report = agent.report(vm).await.unwrap();
        if done(&report) {
            return report;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{vm} did not get there: {report:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_service_is_reported_in_the_state_it_really_answers() {
    require_libvirtd();
    let dir = data_dir();
    let machine = "readiness-real";
    let network = "dcready";
    let node_id = agent_protocol::node_id(agent_protocol::machine_id(machine), OPERATOR);
    let _cleanup = HostCleanup {
        node_id,
        network: network.into(),
        extra_rules: vec![],
    };
    let config = config_from(&nat_vm_config_toml(
        dir.path(),
        machine,
        None,
        network,
        "192.168.233.0/24",
        "31100-31109",
    ));
    let (identity, _) = Identity::load_or_create(&config).unwrap();
    let agent = Agent::open(config, identity, resources()).await.unwrap();
    agent.reconcile().await.unwrap();

    let http = |path: &str, expect_status| ReadinessProbe::Http {
        port: HTTP_PORT,
        path: path.into(),
        expect_status,
        tls: false,
    };
    let mut web = test_guest_spec("ready-web", &unique_value());
    web.readiness = vec![
        ReadinessProbe::CloudInit,
        ReadinessProbe::Tcp { port: HTTP_PORT },
        http("/", None),
        // Behind a login: ready when it asks for credentials.
        http(LOGIN_PATH, Some(401)),
    ];
    agent.create_vm(web).await.unwrap();
    let mut exec = test_guest_spec("ready-exec", &unique_value());
    exec.readiness = vec![ReadinessProbe::Exec {
        command: vec!["/bin/true".into()],
    }];
    agent.create_vm(exec).await.unwrap();

    let console = agent.vm_dir("ready-web").join("console.log");
    wait_for_console(&console, ADDRESS_MARKER, BOOT_LIMIT).await;
    let report = observe_until(&agent, "ready-web", |r| r.readiness.ready).await;
    assert_eq!(report.readiness.probes.len(), 4);
    for probe in &report.readiness.probes {
        assert!(probe.ok && probe.detail.is_none(), "{probe:?}");
        assert!(probe.checked_at.is_some(), "{probe:?}");
    }
    // The same services, asked for what they do not answer, are not ready, and say why.
    let address = report.addresses[0].clone();
    assert_eq!(
        http_probe(&address, HTTP_PORT, "/", Some(401), false).await,
        Err("HTTP status 200, expected 401".into())
    );
    assert_eq!(
        http_probe(&address, HTTP_PORT, LOGIN_PATH, None, false).await,
        Err("HTTP status 401, expected 2xx or 3xx".into())
    );
    assert!(
        http_probe(&address, HTTP_PORT, "/", None, true)
            .await
            .is_err(),
        "plain HTTP is not HTTPS"
    );

    // The heartbeat carries each check's result.
    let beat = agent.heartbeat(1).await.unwrap();
    let reported = beat.vms.iter().find(|v| v.id == "ready-web").unwrap();
    assert_eq!(reported.readiness, report.readiness);

    // No guest agent in this guest: libvirt answers for it, and the check says so.
    let report = observe_until(&agent, "ready-exec", |r| {
        r.readiness
            .probes
            .first()
            .is_some_and(|p| p.checked_at.is_some())
    })
    .await;
    assert!(!report.readiness.ready);
    let detail = report.readiness.probes[0].detail.clone().unwrap();
    assert!(detail.to_lowercase().contains("agent"), "{detail}");

    for vm in ["ready-web", "ready-exec"] {
        agent.delete_vm(vm).await.unwrap();
    }
    agent.close().await;
}

/// A command check through a real guest agent: the Debian guest image (`scripts/guest-image`,
/// or `$DECLOUD_GUEST_IMAGE`) runs `qemu-guest-agent`; libvirt carries `guest-exec` to it.
/// Slow (cloud-init's first boot under software emulation), so it runs with
/// `scripts/test --long` only.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "boots the Debian guest image under emulation (scripts/test --long)"]
async fn long_a_command_check_runs_through_the_guest_agent() {
    require_libvirtd();
    let image_dir = match std::env::var_os("DECLOUD_GUEST_IMAGE") {
        Some(dir) => std::path::PathBuf::from(dir),
        None => {
            let script =
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/guest-image");
            let out = std::process::Command::new(&script)
                .stderr(std::process::Stdio::inherit())
                .output()
                .unwrap();
            assert!(out.status.success(), "{} failed", script.display());
            std::path::PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
        }
    };
    let images = std::fs::read_to_string(image_dir.join("image.toml")).unwrap();
    let dir = data_dir();
    let machine = "readiness-qga";
    let node_id = agent_protocol::node_id(agent_protocol::machine_id(machine), OPERATOR);
    let _cleanup = HostCleanup {
        node_id,
        network: "unused-readiness-qga".into(),
        extra_rules: vec![],
    };
    let config = config_from(&format!(
        "data_dir = \"{data}\"\nlibvirt_uri = \"qemu:///system\"\ndomain_type = \"qemu\"\n\
         operator = \"{OPERATOR}\"\nmachine_id = \"{machine}\"\nshutdown_timeout_secs = 3\n\
         network = {{ type = \"user\" }}\n\n{images}",
        data = dir.path().join("data").display(),
    ));
    let image = config.images.keys().next().unwrap().clone();
    let base_size = decloud_node_agent::image_virtual_size(&config.images[&image].base)
        .await
        .unwrap();
    let (identity, _) = Identity::load_or_create(&config).unwrap();
    let agent = Agent::open(config, identity, resources()).await.unwrap();
    agent.reconcile().await.unwrap();

    let mut spec = spec("qga", &image);
    spec.memory_mib = 1024;
    spec.disk_gib = base_size.div_ceil(1 << 30);
    spec.quality = agent_protocol::QualityTier::Dedicated;
    spec.readiness = vec![
        ReadinessProbe::Exec {
            command: vec!["/usr/bin/test".into(), "-d".into(), "/etc/cloud".into()],
        },
        ReadinessProbe::Exec {
            command: vec![
                "/bin/sh".into(),
                "-c".into(),
                "echo not serving yet >&2; exit 4".into(),
            ],
        },
    ];
    agent.create_vm(spec).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(900);
    let report = loop {
        agent.observe().await.unwrap();
        let report = agent.report("qga").await.unwrap();
        if report.readiness.probes.first().is_some_and(|p| p.ok) {
            break report;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the guest agent never ran the command: {report:?}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    assert!(!report.readiness.ready);
    assert_eq!(
        report.readiness.probes[1].detail.as_deref(),
        Some("exit code 4: not serving yet")
    );
    agent.delete_vm("qga").await.unwrap();
    agent.close().await;
}

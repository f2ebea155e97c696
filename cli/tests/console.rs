//! `decloud vm console` end to end: the real `decloud` binary against the orchestrator's router
//! on a real socket, a real node agent connected over its link, and a real guest (the busybox
//! test guest under QEMU through the system libvirtd, with a shell on its serial port). Piped
//! input is typed into the shell and the answer printed; on a terminal (a pseudo-terminal made
//! by util-linux `script`) Ctrl-] detaches; another tenant and an unknown VM are refused with
//! the orchestrator's reason.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::SocketAddr,
    os::unix::fs::PermissionsExt,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use alloy::{primitives::Address, signers::local::PrivateKeySigner};
use decloud_node_agent::{
    Agent, Backoff, ConfigLayer, DomainType, Identity, ImageConfig, NetworkConfig,
    create_blank_qcow2, run_link, test_guest,
};
use decloud_orchestrator::{
    AppState, Config, Store, app,
    auth::token_hash,
    clock::now,
    scheduler::{Prices, QualityTier},
    store::{LeaseRecord, NodeRecord, NodeStatus, SessionRecord, VmRecord},
};
use decloud_sdk::{
    agent_protocol::{BandwidthTier, NodeResources, QualityTier as AgentTier, VmSpec},
    types::{LeaseStatus, VmState},
};

// A VM id (`vm-<lease id>`) no other test uses: its libvirt domain lives on the shared libvirtd.
const VM: &str = "vm-7103";
/// Generous for an emulated boot on a shared two-core machine; a bound, not a measurement.
const WAIT: Duration = Duration::from_secs(180);

async fn eventually<F: AsyncFn() -> bool>(what: &str, check: F) {
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A configuration home whose sessions file holds a live session of `address` with the
/// orchestrator at `base` (what `decloud login` leaves behind).
async fn signed_in(store: &Store, base: &str, address: Address, nonce: &str) -> tempfile::TempDir {
    let token = format!("token-{nonce}");
    store.create_nonce(nonce, now(), now() + 600).await.unwrap();
    let expires_at = now() + 3600;
    store
        .consume_nonce_and_create_session(
            nonce,
            now(),
            &token_hash(&token),
            &SessionRecord {
                address: format!("{address:#x}"),
                chain_id: 31337,
                expires_at,
            },
        )
        .await
        .unwrap();
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("decloud")).unwrap();
    let sessions = serde_json::json!({
        base: {
            "token": token,
            "address": format!("{address:#x}"),
            "chain_id": 31337,
            "expires_at": expires_at,
        }
    });
    std::fs::write(
        home.path().join("decloud/sessions.json"),
        sessions.to_string(),
    )
    .unwrap();
    home
}

/// `decloud vm console <vm>` with the session in `home`; stdin, stdout and stderr piped.
fn console_command(home: &Path, base: &str, vm: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_decloud"));
    cmd.args(["vm", "console", vm, "--orchestrator", base])
        .env("XDG_CONFIG_HOME", home)
        .env("DECLOUD_LOG", "warn")
        .env_remove("DECLOUD_ORCHESTRATOR")
        .env_remove("DECLOUD_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Collects a child's stdout as it comes.
fn collect(child: &mut Child) -> Arc<Mutex<Vec<u8>>> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let mut stdout = child.stdout.take().unwrap();
    let sink = out.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    out
}

async fn wait_for_output(out: &Arc<Mutex<Vec<u8>>>, needle: &str) {
    eventually(&format!("{needle:?} on the console"), async || {
        String::from_utf8_lossy(&out.lock().unwrap()).contains(needle)
    })
    .await;
}

async fn wait_exit(child: &mut Child) -> (i32, String) {
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "decloud vm console did not exit");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status.code().unwrap_or(-1), stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_console_types_into_the_guest_and_detaches_cleanly() {
    if let Err(e) = decloud_node_agent::Hypervisor::open("qemu:///system") {
        panic!("this test needs libvirtd and virtlogd running (scripts/test starts them): {e}");
    }
    let db = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!(
        "sqlite:{}",
        db.path().join("orchestrator.db").display()
    ))
    .await
    .unwrap();
    let state = AppState::new(store.clone(), Config::default()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let base = format!("http://{addr}");
    let router = app(state.clone());
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });

    // The node agent on the system libvirtd, with the test guest as its image.
    let dir = tempfile::Builder::new()
        .prefix("decloud-cli-console-")
        .tempdir_in("/var/tmp")
        .unwrap();
    // QEMU runs as its own user and must reach the VM's files.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let kernel = test_guest::find_kernel().unwrap();
    let initrd = dir.path().join("test-guest.cpio");
    test_guest::build_initramfs(&test_guest::kernel_release(&kernel).unwrap(), &initrd).unwrap();
    let image = dir.path().join("base.qcow2");
    create_blank_qcow2(&image, 16).unwrap();
    let operator = Address::repeat_byte(0x42);
    let agent_config = decloud_node_agent::Config::resolve(
        None,
        ConfigLayer {
            data_dir: Some(dir.path().join("data")),
            libvirt_uri: Some("qemu:///system".into()),
            domain_type: Some(DomainType::Qemu),
            operator: Some(operator),
            machine_id: Some("cli-console-test".into()),
            shutdown_timeout_secs: Some(2),
            network: Some(NetworkConfig::User),
            images: BTreeMap::from([(
                "test-guest".to_string(),
                ImageConfig {
                    base: image,
                    kernel: Some(kernel),
                    initrd: Some(initrd),
                    cmdline: Some(test_guest::CMDLINE.into()),
                },
            )]),
            ..Default::default()
        },
        ConfigLayer::default(),
    )
    .unwrap();
    let (identity, _) = Identity::load_or_create(&agent_config).unwrap();
    let node_id = decloud_sdk::NodeId::from(identity.node_id);
    let node_key = identity.address();
    let agent = Agent::open(
        agent_config,
        identity,
        NodeResources {
            arch: std::env::consts::ARCH.into(),
            cpu_model: "test".into(),
            cpu_cores: 2,
            memory_mib: 2048,
            disks: vec![],
            vm_storage_free_bytes: 1 << 30,
            gpus: vec![],
            compute_points: 100,
        },
    )
    .await
    .unwrap();
    agent.reconcile().await.unwrap();

    // The orchestrator knows the node (by its key), the lease and the VM, which is Alice's.
    let alice = PrivateKeySigner::random().address();
    let bob = PrivateKeySigner::random().address();
    store
        .upsert_node(&NodeRecord {
            node_id,
            operator: format!("{operator:#x}"),
            node_key: format!("{node_key:#x}"),
            status: NodeStatus::Active,
            region: "eu-west".into(),
            endpoint: String::new(),
            metadata_cid: String::new(),
            tags: Vec::new(),
            vcpus: 2,
            memory_gib: 2,
            disk_gib: 10,
            gpus: 0,
            bandwidth_mbps: 100,
            compute_points: 0,
            prices: Prices::default(),
            registered_at: 0,
            updated_at: 0,
        })
        .await
        .unwrap();
    store
        .upsert_lease(&LeaseRecord {
            lease_id: "1".parse().unwrap(),
            tenant: format!("{alice:#x}"),
            node_id,
            status: LeaseStatus::Active,
            tier: QualityTier::Dedicated,
            vcpus: 1,
            memory_gib: 1,
            storage_gib: 1,
            gpus: 0,
            rate_per_hour: 1,
            opened_at: 1,
        })
        .await
        .unwrap();
    store
        .insert_vm(&VmRecord {
            vm_id: VM.parse().unwrap(),
            lease_id: "1".parse().unwrap(),
            tenant: format!("{alice:#x}"),
            node_id,
            state: VmState::Running,
            tier: QualityTier::Dedicated,
            vcpus: 1,
            memory_gib: 1,
            disk_gib: 1,
            gpus: 0,
            created_at: 1,
            updated_at: 1,
            failure: None,
        })
        .await
        .unwrap();
    let alice_home = signed_in(&store, &base, alice, "nonce-alice").await;
    let bob_home = signed_in(&store, &base, bob, "nonce-bob").await;

    agent
        .create_vm(VmSpec {
            id: VM.into(),
            image: "test-guest".into(),
            vcpus: 1,
            memory_mib: 256,
            disk_gib: 1,
            quality: AgentTier::Dedicated,
            bandwidth: BandwidthTier::Basic,
            gpus: 0,
            hostname: None,
            user_data: "#cloud-config\n".into(),
            ports: vec![],
            readiness: vec![],
            ingress: Vec::new(),
        })
        .await
        .unwrap();
    let log = agent.vm_dir(VM).join("console.log");
    eventually("the guest to start its shell", async || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("Cloud-init v. test-guest finished at")
    })
    .await;
    let (stop_link, link_stopped) = tokio::sync::watch::channel(false);
    let link = tokio::spawn(run_link(
        agent.clone(),
        format!("ws://{addr}/api/v1/agent/ws"),
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        },
        link_stopped,
    ));
    eventually("the agent to connect", async || {
        state.agents().consoles().is_linked(node_id)
    })
    .await;

    // Another tenant and an unknown VM: refused with the orchestrator's reason, nothing attached.
    let refused = console_command(bob_home.path(), &base, VM)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("403") && stderr.contains("belongs to another address"),
        "{stderr}"
    );
    let unknown = console_command(alice_home.path(), &base, "vm-999")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        !unknown.status.success() && stderr.contains("404") && stderr.contains("vm not found"),
        "{stderr}"
    );
    // A malformed id is refused by the CLI itself, before any request.
    let malformed = console_command(alice_home.path(), &base, "vm-nope")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&malformed.stderr);
    assert!(
        !malformed.status.success() && stderr.contains("invalid vm id \"vm-nope\""),
        "{stderr}"
    );
    assert!(agent.consoles().attached().is_empty());

    // Pipe mode: the line is typed in, the answer printed; the end of input detaches (after
    // the guest has been quiet), which ends the session on the agent.
    let mut piped = console_command(alice_home.path(), &base, VM)
        .spawn()
        .unwrap();
    let out = collect(&mut piped);
    let mut stdin = piped.stdin.take().unwrap();
    stdin.write_all(b"echo hello-$((6*7))\n").unwrap();
    wait_for_output(&out, "hello-42").await;
    drop(stdin);
    let (code, stderr) = wait_exit(&mut piped).await;
    assert_eq!(code, 0, "{stderr}");
    eventually("the agent to end the piped session", async || {
        agent.consoles().attached().is_empty()
    })
    .await;

    // A terminal: raw mode, the detach hint, Ctrl-] detaches and exits cleanly.
    let inner = console_command(alice_home.path(), &base, VM);
    let quote = |s: &std::ffi::OsStr| format!("'{}'", s.to_string_lossy().replace('\'', "'\\''"));
    let line = std::iter::once(quote(inner.get_program()))
        .chain(inner.get_args().map(quote))
        .collect::<Vec<_>>()
        .join(" ");
    let mut script = Command::new("script");
    script
        .args(["-q", "-e", "-c", &line, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in inner.get_envs() {
        match value {
            Some(value) => script.env(key, value),
            None => script.env_remove(key),
        };
    }
    let mut terminal = script.spawn().expect("script (util-linux) runs");
    let out = collect(&mut terminal);
    wait_for_output(&out, "Detach with Ctrl-]").await;
    let mut keys = terminal.stdin.take().unwrap();
    keys.write_all(b"echo tty-$((5*5))\r").unwrap();
    wait_for_output(&out, "tty-25").await;
    keys.write_all(&[0x1d]).unwrap();
    let (code, stderr) = wait_exit(&mut terminal).await;
    assert_eq!(code, 0, "{stderr}");
    wait_for_output(&out, "Detached from the console").await;
    eventually("the agent to end the terminal's session", async || {
        agent.consoles().attached().is_empty()
    })
    .await;
    drop(keys);

    let _ = stop_link.send(true);
    tokio::time::timeout(Duration::from_secs(10), link)
        .await
        .expect("the link stops")
        .unwrap();
    agent.delete_vm(VM).await.unwrap();
    agent.close().await;
}

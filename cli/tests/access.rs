//! Getting into a VM with the CLI: `decloud lease open --ssh-key --port` saves the keys, the
//! ports and the wallet-derived sealing key before the lease transaction, so the VM the chain
//! event creates has them; `decloud vm show` prints the node's address, the forwards, the
//! ssh command and each service's readiness (checked by the agent's own probes against real
//! local servers); `decloud vm credentials` opens the generated password with the wallet;
//! `decloud vm stop|start|reboot` go through the lifecycle; `decloud profile ssh-key …` manages
//! the keys; everything is refused for another account. The orchestrator is the real router on a
//! real socket following the test chain; its lifecycle runs in the test, and the node's side
//! (acknowledging the create, reporting address and forwards) is played through the
//! orchestrator's own store calls.

mod support;

use std::{
    future::Future,
    net::SocketAddr,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use alloy::{
    primitives::Address,
    providers::{Provider as _, ProviderBuilder},
};
use decloud_orchestrator::{
    AppState, Config, Store, access, app,
    chain::{ChainHandler, Markets},
    clock::now,
    config::SiweConfig,
    lifecycle::{self, Workload},
};
use decloud_sdk::NodeId;
use decloud_sdk::agent_protocol::{
    self, AckOutcome, BandwidthTier, CommandAction, PortForward, PortProtocol, PortSpec, Readiness,
    VmReport, VmState as AgentVmState,
};
use serde_json::Value;
use support::Cli;

const OPERATOR: usize = 1;
const TENANT: usize = 3;
const OTHER: usize = 4;
const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIERmbRxmpvQ4hxusWzab9mGUW2vGk+MoKYYUAqvQsETX alice@laptop";

async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Serves the orchestrator for `cli`'s chain on a free port; returns its base URL and state.
async fn serve_orchestrator(cli: &Cli, db_dir: &Path) -> (String, AppState) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let base = format!("http://{addr}");
    let config = Config {
        listen: addr,
        database_url: format!("sqlite:{}", db_dir.join("orchestrator.db").display()),
        siwe: SiweConfig {
            domains: vec![addr.to_string()],
            uris: vec![base.clone()],
            ..SiweConfig::default()
        },
        ingress: Some(decloud_orchestrator::config::IngressConfig {
            domain: "apps.cli.test".into(),
            https_port: 443,
            ..Default::default()
        }),
        // Read by the API (naming a lease's ports before its VM exists); the follower and the
        // lifecycle run in this test.
        chain: Some(decloud_orchestrator::config::ChainConfig {
            rpc_url: cli.system.rpc_url().to_string(),
            node_registry: cli
                .system
                .deployment
                .contracts
                .node_registry
                .address
                .to_string(),
            lease_escrow: cli
                .system
                .deployment
                .contracts
                .lease_escrow
                .address
                .to_string(),
            template_market: None,
            storage_market: None,
            start_block: cli.system.deployment.deploy_block,
            confirmations: 0,
            image: "debian-12".into(),
            grace_secs: 86_400,
            reconnect_grace_secs: 0,
            sla_window_secs: 1_800,
        }),
        ..Config::default()
    };
    let store = Store::connect(&config.database_url).await.unwrap();
    let contracts = &cli.system.deployment.contracts;
    let handler = ChainHandler::with_markets(
        contracts.node_registry.address,
        contracts.lease_escrow.address,
        Markets {
            template_market: Some(contracts.template_market.address),
            storage_market: None,
        },
        Arc::new(tokio::sync::Notify::new()),
    );
    let mut follower_config = decloud_indexer::FollowerConfig::new(
        "orchestrator",
        handler.addresses(),
        cli.system.deployment.deploy_block,
    );
    follower_config.poll_interval = Duration::from_millis(100);
    let provider = ProviderBuilder::new()
        .connect_http(cli.system.rpc_url())
        .erased();
    let mut follower = decloud_indexer::Follower::new(
        provider,
        store.follower_database(),
        follower_config,
        handler,
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let _keep_open = stop;
        follower.run(stopped).await
    });
    let state = AppState::new(store, config).unwrap();
    let served = state.clone();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app(served).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    (base, state)
}

async fn run(cli: &Arc<Cli>, account: usize, args: &[&str]) -> support::Run {
    let cli = cli.clone();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli.run(account, &args)
    })
    .await
    .unwrap()
}

async fn ok(cli: &Arc<Cli>, account: usize, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["--yes", "--json"]);
    run(cli, account, &all).await.json()
}

/// Acknowledges a command as the node would, with the VM running and its forwards.
async fn node_acks(store: &Store, node_id: NodeId, command_id: &str, forwards: Vec<PortForward>) {
    let outcome = AckOutcome::Done {
        vm: Some(VmReport {
            id: "vm-1".into(),
            state: AgentVmState::Running,
            readiness: Readiness {
                ready: true,
                probes: Vec::new(),
            },
            addresses: Vec::new(),
            forwards,
            error: None,
        }),
        user_data_sha256: None,
    };
    store
        .ack_command(
            node_id,
            command_id,
            &serde_json::to_string(&outcome).unwrap(),
            now(),
        )
        .await
        .unwrap();
    lifecycle::on_command_acked(store, command_id, &outcome)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_gets_into_the_vm_with_the_cli() {
    let mut cli = Cli::start().await;
    let db = tempfile::tempdir().unwrap();
    let (base, state) = serve_orchestrator(&cli, db.path()).await;
    cli.orchestrator = Some(base);
    let cli = Arc::new(cli);
    let store = state.store().clone();

    let operator = cli.system.address(OPERATOR);
    let machine_id = agent_protocol::machine_id("access-machine");
    let node_id = NodeId::from(agent_protocol::node_id(machine_id, operator));
    let node_text = node_id.to_string();
    ok(
        &cli,
        OPERATOR,
        &[
            "operator",
            "register",
            "--machine-id",
            &machine_id.to_string(),
            "--node-key",
            &Address::repeat_byte(7).to_string(),
            "--region",
            "eu-west",
            "--vcpus",
            "8",
            "--memory",
            "16",
            "--disk",
            "100",
            "--cpu-price",
            "0.008",
        ],
    )
    .await;
    eventually("the node in the store", || {
        let store = store.clone();
        async move { store.node(node_id).await.unwrap().map(|_| ()) }
    })
    .await;
    store.set_compute_points(node_id, 800).await.unwrap();
    // The node is online: its agent's heartbeat, as the agent link books it.
    store.record_heartbeat(node_id, now()).await.unwrap();

    let keys = tempfile::tempdir().unwrap();
    let good = keys.path().join("id_ed25519.pub");
    std::fs::write(&good, format!("{KEY}\n")).unwrap();
    let bad = keys.path().join("broken.pub");
    std::fs::write(&bad, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIERmbR\n").unwrap();

    ok(&cli, TENANT, &["login"]).await;
    ok(&cli, TENANT, &["deposit", "20"]).await;

    // Bad keys and bad ports are refused before anything is saved or sent.
    let open = |extra: &[&str]| {
        let mut args = vec!["lease", "open", "--node", &node_text, "--funding", "5"];
        args.extend_from_slice(extra);
        args.iter().map(|s| s.to_string()).collect::<Vec<String>>()
    };
    for (extra, says) in [
        (
            vec!["--ssh-key", bad.to_str().unwrap()],
            "malformed ssh public key",
        ),
        (vec!["--port", "70000/tcp"], "1 to 65535"),
        (vec!["--port", "80/sctp"], "tcp, udp or tcp+udp"),
        (vec!["--port", "80/tcp", "--port", "80"], "listed twice"),
        (vec!["--expose", "8080=My_App"], "lowercase"),
        (vec!["--expose", "8080"], "PORT=NAME"),
        (vec!["--expose", "0=web"], "not a port"),
        (
            vec!["--expose", "8080=web", "--expose", "8080=other"],
            "names port 8080 twice",
        ),
        (vec!["--expose", "8080=www"], "reserved"),
        (vec!["--expose", "8080=vm-1-8080"], "derived name"),
    ] {
        let args = open(&extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let refused = run(&cli, TENANT, &[&args[..], &["--yes"]].concat()).await;
        assert!(refused.failure().contains(says), "{refused:#?}");
    }
    let profile = ok(&cli, TENANT, &["profile", "show"]).await;
    assert_eq!(profile["ssh_keys"], Value::Array(Vec::new()), "{profile}");
    assert_eq!(profile["sealing_key"], Value::Null, "{profile}");

    // The lease is opened with a key and ports; the VM is created with them.
    let args = open(&[
        "--ssh-key",
        good.to_str().unwrap(),
        "--port",
        "8080/tcp",
        "--port",
        "53/tcp+udp",
        "--bandwidth",
        "performance",
        "--expose",
        "8080=opened",
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let opened = ok(&cli, TENANT, &args).await;
    assert_eq!(opened["lease"], "1");
    // The name was given before the orchestrator created the VM (read from the chain).
    assert_eq!(
        opened["urls"],
        serde_json::json!(["https://opened.apps.cli.test"]),
        "{opened}"
    );
    let profile = ok(&cli, TENANT, &["profile", "show"]).await;
    assert_eq!(profile["ssh_keys"][0], KEY);
    assert!(
        profile["sealing_key"]
            .as_str()
            .is_some_and(|k| k.len() == 66)
    );
    let workload = Workload {
        image: "debian-12".into(),
        user_data: String::new(),
        bandwidth: BandwidthTier::Basic,
        grace_secs: 86_400,
        reconnect_grace_until: 0,
        ingress: state.config().ingress.clone(),
    };
    // The node's agent is connected and has reported (running nothing): placement waits for
    // that. The rest of the node's side is played through the store below.
    let session = state.agents().open_session(node_id);
    state
        .agents()
        .record_report(&session, Vec::new(), decloud_orchestrator::clock::now());
    let create = eventually("the create command", || {
        let state = state.clone();
        let workload = workload.clone();
        async move {
            lifecycle::drive(state.store(), state.agents(), &workload)
                .await
                .unwrap();
            if let Some(vm) = state.store().vm("vm-1".parse().unwrap()).await.unwrap() {
                assert_ne!(vm.state.as_str(), "failed", "{:?}", vm.failure);
            }
            state
                .store()
                .due_commands(node_id, i64::MAX)
                .await
                .unwrap()
                .into_iter()
                .next()
        }
    })
    .await;
    let action: CommandAction = serde_json::from_str(&create.action).unwrap();
    let CommandAction::CreateVm { spec } = access::open_for_node(action).unwrap() else {
        panic!("not a create: {}", create.action)
    };
    assert_eq!(spec.bandwidth, BandwidthTier::Performance);
    // The name chosen at lease open is in the create command: the node serves it at once.
    assert_eq!(
        spec.ingress,
        vec![agent_protocol::IngressRoute {
            host: "opened.apps.cli.test".into(),
            guest: 8080
        }]
    );
    let port = |guest, protocol| PortSpec { guest, protocol };
    assert_eq!(
        spec.ports,
        vec![
            port(22, PortProtocol::Tcp),
            port(8080, PortProtocol::Tcp),
            port(53, PortProtocol::Tcp),
            port(53, PortProtocol::Udp),
        ]
    );
    assert!(spec.user_data.contains(KEY), "{}", spec.user_data);
    let password = spec
        .user_data
        .lines()
        .find_map(|l| l.trim().strip_prefix("plain_text_passwd: "))
        .expect("a generated password")
        .trim_matches('\'')
        .to_string();

    // The node creates the VM and reports its address and forwards.
    let ssh = PortForward {
        guest: 22,
        public: 40022,
        protocol: PortProtocol::Tcp,
    };
    node_acks(&store, node_id, &create.command_id, vec![ssh]).await;
    store
        .record_node_address(node_id, Some("203.0.113.9"), None, now())
        .await
        .unwrap();
    store
        .record_vm_reported(
            node_id,
            "vm-1".parse().unwrap(),
            &["10.0.0.2".into()],
            &[ssh],
            now(),
        )
        .await
        .unwrap();

    let shown = run(&cli, TENANT, &["vm", "show", "vm-1"]).await;
    assert_eq!(shown.code, Some(0), "{shown:#?}");
    assert!(shown.stdout.contains("address 203.0.113.9"), "{shown:#?}");
    assert!(
        shown.stdout.contains("port 40022/tcp -> guest 22"),
        "{shown:#?}"
    );
    assert!(
        shown.stdout.contains("ssh -p 40022 decloud@203.0.113.9"),
        "{shown:#?}"
    );
    let shown = ok(&cli, TENANT, &["vm", "show", "vm-1"]).await;
    assert_eq!(shown["state"], "running");
    assert_eq!(shown["access"]["forwards"][0]["public"], 40022);
    assert_eq!(shown["readiness"]["ready"], Value::Null, "{shown}");
    let shown = run(&cli, TENANT, &["vm", "show", "vm-1"]).await;
    assert!(
        shown
            .stdout
            .contains("readiness: not reported by the node yet"),
        "{shown:#?}"
    );

    // Readiness per service, as the node's agent checks it: a real local HTTP server behind a
    // login (401, the agent's own probe expecting 401 finds it ready) and a closed port.
    let login = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let login_port = login.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        while let Ok((mut socket, _)) = login.accept().await {
            let mut request = [0u8; 1024];
            let _ = socket.read(&mut request).await;
            let _ = socket
                .write_all(b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"vm\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .await;
        }
    });
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let probes = [
        agent_protocol::ReadinessProbe::Http {
            port: login_port,
            path: "/".into(),
            expect_status: Some(401),
            tls: false,
        },
        agent_protocol::ReadinessProbe::Tcp { port: closed },
    ];
    let checked = decloud_node_agent::check_readiness(
        &probes,
        true,
        &["127.0.0.1".to_owned()],
        Path::new("/nonexistent/console.log"),
        |_| async { Err::<decloud_node_agent::ExecOutcome, _>("no exec check here".to_owned()) },
    )
    .await;
    assert!(checked.probes[0].ok, "{checked:?}");
    assert!(!checked.probes[1].ok, "{checked:?}");
    // What the agent's heartbeat carries, booked as the agent link books it.
    assert!(
        store
            .record_vm_readiness(node_id, "vm-1".parse().unwrap(), &checked, now())
            .await
            .unwrap()
    );
    let shown = ok(&cli, TENANT, &["vm", "show", "vm-1"]).await;
    let readiness = &shown["readiness"];
    assert_eq!(readiness["ready"], false, "{shown}");
    assert_eq!(readiness["services"][0]["state"], "ready", "{shown}");
    assert_eq!(
        readiness["services"][0]["check"],
        format!("http :{login_port}/ expects 401")
    );
    assert!(readiness["services"][0]["checked_at"].is_u64(), "{shown}");
    assert_eq!(readiness["services"][1]["state"], "not_ready", "{shown}");
    assert!(
        readiness["services"][1]["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("127.0.0.1: ")),
        "{shown}"
    );
    let text = run(&cli, TENANT, &["vm", "show", "vm-1"]).await;
    assert!(text.stdout.contains("readiness: not ready"), "{text:#?}");
    assert!(
        text.stdout.contains(&format!(
            "ready     http :{login_port}/ expects 401  (checked "
        )),
        "{text:#?}"
    );
    assert!(
        text.stdout
            .contains(&format!("not ready tcp :{closed}  (checked ")),
        "{text:#?}"
    );
    // Another node's report about this VM is not taken.
    assert!(
        !store
            .record_vm_readiness(
                alloy::primitives::B256::repeat_byte(0xab).into(),
                "vm-1".parse().unwrap(),
                &Readiness {
                    ready: true,
                    probes: vec![]
                },
                now()
            )
            .await
            .unwrap()
    );

    // The wallet opens the password; it is the one the node got.
    let credentials = ok(&cli, TENANT, &["vm", "credentials", "vm-1"]).await;
    assert_eq!(credentials["user"], "decloud");
    assert_eq!(credentials["password"], password);
    let text = run(&cli, TENANT, &["vm", "credentials", "vm-1"]).await;
    assert!(
        text.stdout.contains(&format!("password: {password}")),
        "{text:#?}"
    );

    // An HTTPS name for port 8080: chosen, shown, refused when malformed (before anything is
    // sent) or taken, removed.
    let exposed = ok(
        &cli,
        TENANT,
        &["vm", "expose", "vm-1", "--port", "8080", "--name", "myapp"],
    )
    .await;
    assert_eq!(exposed["url"], "https://myapp.apps.cli.test", "{exposed}");
    let shown = run(&cli, TENANT, &["vm", "show", "vm-1"]).await;
    assert!(
        shown
            .stdout
            .contains("https://myapp.apps.cli.test -> guest 8080/http"),
        "{shown:#?}"
    );
    let refused = run(
        &cli,
        TENANT,
        &["vm", "expose", "vm-1", "--port", "80", "--name", "My_App"],
    )
    .await;
    assert!(refused.failure().contains("lowercase"), "{refused:#?}");
    let refused = run(
        &cli,
        TENANT,
        &["vm", "expose", "vm-1", "--port", "80", "--name", "myapp"],
    )
    .await;
    assert!(
        refused.failure().contains("409") && refused.failure().contains("is taken"),
        "{refused:#?}"
    );
    let derived = ok(&cli, TENANT, &["vm", "expose", "vm-1", "--port", "3000"]).await;
    assert_eq!(
        derived["url"], "https://vm-1-3000.apps.cli.test",
        "{derived}"
    );
    let removed = ok(&cli, TENANT, &["vm", "unexpose", "vm-1", "--port", "3000"]).await;
    assert_eq!(
        removed["urls"],
        serde_json::json!(["https://myapp.apps.cli.test"]),
        "{removed}"
    );

    // Another account is refused everything about the VM.
    ok(&cli, OTHER, &["login"]).await;
    // A name taken is refused before another tenant's lease is paid for.
    let balance = ok(&cli, OTHER, &["balance"]).await;
    let args = open(&["--expose", "9000=myapp"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let refused = run(&cli, OTHER, &[&args[..], &["--yes"]].concat()).await;
    assert!(
        refused.failure().contains("is taken") && refused.failure().contains("nothing was sent"),
        "{refused:#?}"
    );
    assert_eq!(ok(&cli, OTHER, &["balance"]).await, balance);
    // Naming the ports of a lease that is not yours is refused, and of one that does not
    // exist on the chain too (the session file holds the latest sign-in: OTHER's).
    let sessions: serde_json::Map<String, Value> = serde_json::from_str(
        &std::fs::read_to_string(cli.config_home.path().join("decloud/sessions.json")).unwrap(),
    )
    .unwrap();
    let other_token = sessions.values().next().unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let put_name = |lease: u64| {
        reqwest::Client::new()
            .put(format!(
                "{}/api/v1/leases/{lease}/ingress/9000",
                cli.orchestrator.as_ref().unwrap()
            ))
            .bearer_auth(&other_token)
            .json(&serde_json::json!({"name": "stolen"}))
            .send()
    };
    assert_eq!(put_name(99).await.unwrap().status().as_u16(), 404);
    let response = put_name(1).await.unwrap();
    assert_eq!(response.status().as_u16(), 403);
    for verb in ["credentials", "stop", "start", "reboot", "show"] {
        let refused = run(&cli, OTHER, &["vm", verb, "vm-1"]).await;
        assert!(refused.failure().contains("403"), "{verb}: {refused:#?}");
    }
    for verb in ["expose", "unexpose"] {
        let refused = run(&cli, OTHER, &["vm", verb, "vm-1", "--port", "8080"]).await;
        assert!(refused.failure().contains("403"), "{verb}: {refused:#?}");
    }
    assert_eq!(
        store
            .vm("vm-1".parse().unwrap())
            .await
            .unwrap()
            .unwrap()
            .state
            .as_str(),
        "running"
    );

    // Control through the lifecycle (the session file keeps one session per orchestrator: sign
    // in as the tenant again).
    ok(&cli, TENANT, &["login"]).await;
    let refused = run(&cli, TENANT, &["vm", "start", "vm-1"]).await;
    assert!(refused.failure().contains("409"), "{refused:#?}");
    let rebooted = ok(&cli, TENANT, &["vm", "reboot", "vm-1"]).await;
    assert_eq!(rebooted["state"], "running");
    let stopped = ok(&cli, TENANT, &["vm", "stop", "vm-1"]).await;
    assert_eq!(stopped["state"], "stopping");
    let queued: Vec<String> = store
        .due_commands(node_id, i64::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.action)
        .collect();
    assert!(queued.iter().any(|a| a.contains("reboot_vm")), "{queued:?}");
    assert!(queued.iter().any(|a| a.contains("stop_vm")), "{queued:?}");

    // Profile keys: listed, removed by comment, a broken one refused.
    let listed = ok(&cli, TENANT, &["profile", "ssh-key", "list"]).await;
    assert_eq!(listed, serde_json::json!([KEY]));
    let refused = run(
        &cli,
        TENANT,
        &["profile", "ssh-key", "add", bad.to_str().unwrap()],
    )
    .await;
    assert!(refused.failure().contains("malformed"), "{refused:#?}");
    let removed = ok(
        &cli,
        TENANT,
        &["profile", "ssh-key", "remove", "alice@laptop"],
    )
    .await;
    assert_eq!(removed["ssh_keys"], Value::Array(Vec::new()));
    let added = ok(
        &cli,
        TENANT,
        &["profile", "ssh-key", "add", good.to_str().unwrap()],
    )
    .await;
    assert_eq!(added["ssh_keys"][0], KEY);
}

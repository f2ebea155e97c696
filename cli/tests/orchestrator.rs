//! The orchestrator side of the CLI: an orchestrator (the real router on a real socket, SQLite,
//! following the test chain through the indexer's follower) serves `decloud login`, `nodes`,
//! `templates`, `vm list|show` and `logout`; what the CLI registers and opens on-chain shows up
//! there.

mod support;

use std::{
    future::Future,
    net::SocketAddr,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use alloy::{
    primitives::{Address, B256, U256},
    providers::{Provider as _, ProviderBuilder},
};
use decloud_orchestrator::{
    AppState, Config, Store, app,
    chain::{ChainHandler, Markets},
    config::SiweConfig,
};
use decloud_sdk::{agent_protocol, bindings::LeaseEscrow, tx};
use serde_json::Value;
use support::Cli;

const OPERATOR: usize = 1;
const TENANT: usize = 3;
const OTHER: usize = 4;

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

/// Serves the orchestrator for `cli`'s chain on a free port; returns its base URL and its store.
/// Its tasks stop with the test's runtime.
async fn serve_orchestrator(cli: &Cli, db_dir: &Path) -> (String, Store) {
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
        ..Config::default()
    };
    let store = Store::connect(&config.database_url).await.unwrap();
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates/seed");
    let loaded = decloud_orchestrator::catalog::load_dir(&store, &seeds, 0)
        .await
        .unwrap();
    assert!(loaded > 0);

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

    let state = AppState::new(store.clone(), config).unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app(state).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    (base, store)
}

/// Runs the binary on a blocking thread so the in-process orchestrator keeps serving.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_marketplace_and_vms_through_the_orchestrator() {
    let mut cli = Cli::start().await;
    let db = tempfile::tempdir().unwrap();
    let (base, _) = serve_orchestrator(&cli, db.path()).await;
    cli.orchestrator = Some(base.clone());
    let cli = Arc::new(cli);

    // The operator registers a node with the CLI; the marketplace lists it once followed.
    let operator = cli.system.address(OPERATOR);
    let machine_id = agent_protocol::machine_id("orchestrated-machine");
    let node_id = agent_protocol::node_id(machine_id, operator).to_string();
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
    let listed = eventually("the node in the marketplace", || {
        let cli = cli.clone();
        async move {
            let found = ok(&cli, TENANT, &["nodes", "--region", "eu-west"]).await;
            (found["total"] == 1).then_some(found)
        }
    })
    .await;
    assert_eq!(listed["nodes"][0]["node_id"], node_id);
    assert_eq!(listed["nodes"][0]["prices"]["cpu_per_hour"], 8_000);
    let none = ok(&cli, TENANT, &["nodes", "--max-price", "0.007"]).await;
    assert_eq!(none["total"], 0, "the price filter is applied: {none}");
    let human = run(&cli, TENANT, &["nodes"]).await;
    assert_eq!(human.code, Some(0), "{human:#?}");
    assert!(human.stdout.contains(&node_id), "{human:#?}");
    assert!(
        human.stdout.contains("0.008000 USDC per vCPU"),
        "{human:#?}"
    );

    // Templates come from the catalog.
    let found = ok(&cli, TENANT, &["templates", "postgres"]).await;
    assert_eq!(found["templates"][0]["slug"], "postgresql", "{found}");
    let bad = run(&cli, TENANT, &["templates", "--limit", "0"]).await;
    assert!(bad.failure().contains("invalid_query"), "{bad:#?}");

    // Without a session the VM commands say to sign in.
    let anonymous = run(&cli, TENANT, &["vm", "list"]).await;
    assert!(
        anonymous.failure().contains("decloud login"),
        "{anonymous:#?}"
    );

    // Sign in: the session lands in the config directory, owner-only.
    let login = ok(&cli, TENANT, &["login"]).await;
    let tenant = cli.system.address(TENANT);
    assert_eq!(login["address"], format!("{tenant:#x}"));
    assert_eq!(login["chain_id"], 31_337);
    let sessions = cli.decloud_config_dir().join("sessions.json");
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&sessions).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let vms = ok(&cli, TENANT, &["vm", "list"]).await;
    assert_eq!(vms, Value::Array(Vec::new()));

    // A lease opened with the CLI becomes a VM the tenant sees.
    ok(&cli, TENANT, &["deposit", "20"]).await;
    let opened = ok(
        &cli,
        TENANT,
        &["lease", "open", "--node", &node_id, "--funding", "5"],
    )
    .await;
    assert_eq!(opened["lease"], "1");
    let vms = eventually("the lease's VM", || {
        let cli = cli.clone();
        async move {
            let vms = ok(&cli, TENANT, &["vm", "list"]).await;
            (vms.as_array().is_some_and(|v| !v.is_empty())).then_some(vms)
        }
    })
    .await;
    let vm = &vms[0];
    assert_eq!(vm["lease_id"], "1");
    assert_eq!(vm["node_id"], node_id);
    let vm_id = vm["vm_id"].as_str().unwrap().to_string();
    let shown = ok(&cli, TENANT, &["vm", "show", &vm_id]).await;
    assert_eq!(shown["vm_id"], vm_id);
    assert_eq!(shown["tenant"], format!("{tenant:#x}"));
    let text = run(&cli, TENANT, &["vm", "list"]).await;
    assert!(
        text.stdout.contains(&vm_id) && text.stdout.contains("lease 1"),
        "{text:#?}"
    );

    // Log out: the server revokes the session and the CLI forgets it.
    let token = {
        let text = std::fs::read_to_string(&sessions).unwrap();
        let all: Value = serde_json::from_str(&text).unwrap();
        all[base.as_str()]["token"].as_str().unwrap().to_string()
    };
    let out = ok(&cli, TENANT, &["logout"]).await;
    assert_eq!(out["revoked"], true);
    let after = run(&cli, TENANT, &["vm", "list"]).await;
    assert!(after.failure().contains("decloud login"), "{after:#?}");
    let status = alloy::transports::http::reqwest::Client::new()
        .get(format!("{base}/api/v1/vms"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(
        status.as_u16(),
        401,
        "the old token was revoked server-side"
    );

    // Another signed-in account (the session file keeps one session per orchestrator) cannot see
    // the VM.
    ok(&cli, OTHER, &["login"]).await;
    let foreign = run(&cli, OTHER, &["vm", "show", &vm_id]).await;
    assert!(foreign.failure().contains("403"), "{foreign:#?}");
}

/// Registers a node of the operator with the CLI at `cpu_price` USDC per vCPU-hour; returns its id.
async fn register_node(cli: &Arc<Cli>, machine: &str, cpu_price: &str) -> String {
    let machine_id = agent_protocol::machine_id(machine);
    ok(
        cli,
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
            cpu_price,
        ],
    )
    .await;
    agent_protocol::node_id(machine_id, cli.system.address(OPERATOR)).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_open_without_a_node_asks_the_scheduler_and_opens_where_it_says() {
    let mut cli = Cli::start().await;
    let db = tempfile::tempdir().unwrap();
    let (base, store) = serve_orchestrator(&cli, db.path()).await;
    cli.orchestrator = Some(base);
    let cli = Arc::new(cli);

    // Three nodes: the cheapest is offline, so the next cheapest of the two online ones wins.
    let offline = register_node(&cli, "placement-offline", "0.004").await;
    let cheap = register_node(&cli, "placement-cheap", "0.006").await;
    let dear = register_node(&cli, "placement-dear", "0.009").await;
    eventually("the three nodes in the marketplace", || {
        let cli = cli.clone();
        async move {
            let found = ok(&cli, TENANT, &["nodes"]).await;
            (found["total"] == 3).then_some(())
        }
    })
    .await;
    // The two online nodes measured their compute and sent a heartbeat, as their agents would.
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for node in [&cheap, &dear] {
        let node: decloud_sdk::NodeId = node.parse().unwrap();
        store.set_compute_points(node, 800).await.unwrap();
        store.record_heartbeat(node, now).await.unwrap();
    }

    ok(&cli, TENANT, &["deposit", "20"]).await;
    let run_open = run(
        &cli,
        TENANT,
        &[
            "lease",
            "open",
            "--vcpus",
            "2",
            "--funding",
            "5",
            "--yes",
            "--json",
        ],
    )
    .await;
    let opened = run_open.json();
    assert_eq!(opened["node"], cheap, "{opened}");
    let placement = &opened["placement"];
    assert_eq!(placement["chosen_by"], "scheduler", "{opened}");
    assert_eq!(
        (
            placement["considered"].as_u64(),
            placement["fitting"].as_u64()
        ),
        (Some(3), Some(2)),
        "{opened}"
    );
    assert!(
        run_open
            .stderr
            .contains(&format!("the scheduler chose node {cheap}")),
        "{run_open:#?}"
    );
    // The lease is on that node on chain.
    let observer = cli.system.provider(0);
    let escrow = LeaseEscrow::new(
        cli.system.deployment.contracts.lease_escrow.address,
        &observer,
    );
    let lease = tx::read("LeaseEscrow", escrow.getLease(U256::from(1)))
        .await
        .unwrap();
    assert_eq!(lease.nodeId, cheap.parse::<B256>().unwrap());
    assert_ne!(cheap, offline);
    assert_ne!(cheap, dear);

    // No node has 64 vCPUs: refused with the scheduler's reasons, and nothing is sent.
    let refused = run(
        &cli,
        TENANT,
        &["lease", "open", "--vcpus", "64", "--funding", "5", "--yes"],
    )
    .await;
    let why = refused.failure();
    assert!(
        why.contains("no node fits this lease") && why.contains("too_many_vcpus"),
        "{refused:#?}"
    );
    assert_eq!(
        tx::read("LeaseEscrow", escrow.leaseCount()).await.unwrap(),
        U256::from(1),
        "no lease was opened"
    );
}

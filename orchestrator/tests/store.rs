//! One suite of store checks, run against SQLite and against a real PostgreSQL.

mod support;

use alloy::primitives::B256;
use decloud_orchestrator::{
    reputation::{DAY_SECS, HEARTBEAT_INTERVAL_SECS},
    scheduler::{Prices, QualityTier},
    store::{
        AckRecorded, LeaseRecord, NodeRecord, NodeStatus, NonceProblem, SessionRecord, Store,
        StoreError, VmRecord,
    },
};
use decloud_sdk::NodeId;
use decloud_sdk::types::{LeaseStatus, VmState};

const OPERATOR: &str = "0xAbCdEf0000000000000000000000000000000001";

fn node(n: u8) -> NodeRecord {
    NodeRecord {
        node_id: B256::with_last_byte(n).into(),
        operator: OPERATOR.into(),
        node_key: format!("0x{:040x}", 0x1000 + n as u32),
        status: NodeStatus::Active,
        region: "eu-west".into(),
        endpoint: "https://node.example".into(),
        metadata_cid: "bafy".into(),
        tags: vec!["NVMe".into(), "ssd".into()],
        vcpus: 8,
        memory_gib: 32,
        disk_gib: 500,
        gpus: 0,
        bandwidth_mbps: 1000,
        compute_points: 800,
        prices: Prices {
            cpu_per_hour: 10_000,
            memory_gib_per_hour: 2_000,
            storage_gib_per_hour: 100,
            gpu_per_hour: 0,
        },
        registered_at: 1_000,
        updated_at: 1_000,
    }
}

fn vm(id: &str, node_id: NodeId, state: &str, tier: QualityTier) -> VmRecord {
    VmRecord {
        vm_id: id.parse().unwrap(),
        lease_id: "1".parse().unwrap(),
        tenant: "0x00000000000000000000000000000000000000aa".into(),
        node_id,
        state: state.parse().unwrap(),
        tier,
        vcpus: 2,
        memory_gib: 4,
        disk_gib: 20,
        gpus: 0,
        created_at: 10,
        updated_at: 10,
        failure: None,
    }
}

async fn nodes_round_trip(url: String) {
    let store = Store::connect(&url).await.unwrap();
    let mut a = node(1);
    store.upsert_node(&a).await.unwrap();
    store.upsert_node(&node(2)).await.unwrap();
    let got = store.node(a.node_id).await.unwrap().unwrap();
    assert_eq!(got.operator, OPERATOR.to_lowercase());
    assert_eq!(got.tags, vec!["nvme", "ssd"]);
    assert_eq!(got.prices, a.prices);
    a.status = NodeStatus::Paused;
    a.region = "us-east".into();
    store.upsert_node(&a).await.unwrap();
    let got = store
        // Any spelling of the id parses to the same key.
        .node(
            a.node_id
                .to_string()
                .to_uppercase()
                .replacen("0X", "0x", 1)
                .parse()
                .unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (got.status, got.region.as_str()),
        (NodeStatus::Paused, "us-east")
    );
    assert_eq!(store.nodes().await.unwrap().len(), 2);
    assert_eq!(store.nodes_of_operator(OPERATOR).await.unwrap().len(), 2);
    assert!(store.nodes_of_operator("0x01").await.unwrap().is_empty());
    assert!(
        store
            .node(B256::with_last_byte(0xde).into())
            .await
            .unwrap()
            .is_none()
    );
    // Reopening runs the migrations again without harm.
    store.close().await;
    let store = Store::connect(&url).await.unwrap();
    assert_eq!(store.nodes().await.unwrap().len(), 2);
}

async fn heartbeats_build_reputation_that_survives_restart(url: String) {
    let store = Store::connect(&url).await.unwrap();
    let n = node(1);
    store.upsert_node(&n).await.unwrap();
    let t0 = 50 * DAY_SECS + DAY_SECS - 60;
    assert_eq!(store.record_heartbeat(n.node_id, t0).await.unwrap(), 0);
    assert_eq!(store.record_heartbeat(n.node_id, t0 + 15).await.unwrap(), 0);
    // Two minutes of silence across midnight: 7 slots missed, split 2 before and 5 after.
    let t1 = t0 + 15 + 120;
    assert_eq!(store.record_heartbeat(n.node_id, t1).await.unwrap(), 7);
    // A late duplicate books nothing and does not move time back.
    assert_eq!(store.record_heartbeat(n.node_id, t0).await.unwrap(), 0);
    let live = store.liveness(n.node_id).await.unwrap().unwrap();
    assert_eq!(
        (live.first_heartbeat, live.last_heartbeat, live.heartbeats),
        (t0, t1, 4)
    );
    store.record_vm_hosted(n.node_id, t1).await.unwrap();
    store.record_vm_hosted(n.node_id, t1).await.unwrap();
    store.record_vm_completed(n.node_id, t1).await.unwrap();
    store.close().await;

    let store = Store::connect(&url).await.unwrap();
    let rep = store.reputation(n.node_id, t1).await.unwrap();
    assert!(rep.online);
    assert_eq!(rep.last_heartbeat, Some(t1));
    let days: Vec<(i64, i64)> = rep
        .failed_by_day
        .iter()
        .map(|d| (d.day, d.failed))
        .collect();
    assert_eq!(days, vec![(50, 2), (51, 5)]);
    let expected = (t1 - t0) / HEARTBEAT_INTERVAL_SECS;
    assert_eq!(
        rep.uptime_bps,
        Some(((expected - 7) * 10_000 / expected) as u32)
    );
    assert_eq!((rep.vms_hosted, rep.vms_completed), (2, 1));
    // Three minutes later without a heartbeat the node is offline and the open gap counts.
    let later = store.reputation(n.node_id, t1 + 180).await.unwrap();
    assert!(!later.online);
    assert!(later.uptime_bps.unwrap() < rep.uptime_bps.unwrap());
    let all = store.reputations(t1).await.unwrap();
    assert_eq!(all[&n.node_id].uptime_bps, rep.uptime_bps);
    // Unknown nodes are refused and leave no trace.
    let unknown = NodeId::from(B256::with_last_byte(99));
    assert!(matches!(
        store.record_heartbeat(unknown, t1).await,
        Err(StoreError::NotFound("node"))
    ));
    assert!(store.liveness(unknown).await.unwrap().is_none());
    assert!(matches!(
        store.record_vm_hosted(unknown, t1).await,
        Err(StoreError::NotFound("node"))
    ));
}

async fn counters_before_first_heartbeat_do_not_start_the_clock(url: String) {
    let store = Store::connect(&url).await.unwrap();
    let n = node(3);
    store.upsert_node(&n).await.unwrap();
    store.record_vm_hosted(n.node_id, 100).await.unwrap();
    let rep = store.reputation(n.node_id, 10_000).await.unwrap();
    assert_eq!(
        (rep.online, rep.uptime_bps, rep.vms_hosted),
        (false, None, 1)
    );
    assert_eq!(store.record_heartbeat(n.node_id, 10_000).await.unwrap(), 0);
    let live = store.liveness(n.node_id).await.unwrap().unwrap();
    assert_eq!(
        (live.first_heartbeat, live.heartbeats, live.vms_hosted),
        (10_000, 1, 1)
    );
}

async fn concurrent_heartbeats_are_all_counted(url: String) {
    let store = Store::connect(&url).await.unwrap();
    let n = node(4);
    store.upsert_node(&n).await.unwrap();
    store.record_heartbeat(n.node_id, 1_000).await.unwrap();
    let mut tasks = Vec::new();
    for k in 1..=8 {
        let store = store.clone();
        let id = n.node_id;
        tasks.push(tokio::spawn(async move {
            store.record_heartbeat(id, 1_000 + k).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let live = store.liveness(n.node_id).await.unwrap().unwrap();
    assert_eq!((live.heartbeats, live.last_heartbeat), (9, 1_008));
}

async fn leases_vms_and_usage(url: String) {
    let store = Store::connect(&url).await.unwrap();
    let n = node(1);
    store.upsert_node(&n).await.unwrap();
    let lease = LeaseRecord {
        lease_id: "7".parse().unwrap(),
        tenant: "0x00000000000000000000000000000000000000AA".into(),
        node_id: n.node_id,
        status: LeaseStatus::Active,
        tier: QualityTier::Balanced,
        vcpus: 2,
        memory_gib: 4,
        storage_gib: 20,
        gpus: 0,
        rate_per_hour: 12_345,
        opened_at: 5,
    };
    store.upsert_lease(&lease).await.unwrap();
    let got = store.lease("7".parse().unwrap()).await.unwrap().unwrap();
    assert_eq!(got.tenant, lease.tenant.to_lowercase());
    assert_eq!(got.tier, QualityTier::Balanced);
    assert_eq!(
        store.leases_of_tenant(&lease.tenant).await.unwrap().len(),
        1
    );
    assert!(store.leases_of_tenant("0x01").await.unwrap().is_empty());

    store
        .insert_vm(&vm("vm-21", n.node_id, "running", QualityTier::Dedicated))
        .await
        .unwrap();
    store
        .insert_vm(&vm("vm-22", n.node_id, "pending", QualityTier::Burstable))
        .await
        .unwrap();
    store
        .insert_vm(&vm(
            "vm-23",
            n.node_id,
            "terminated",
            QualityTier::Dedicated,
        ))
        .await
        .unwrap();
    // The same id twice is refused, and the first record is untouched.
    assert!(
        store
            .insert_vm(&vm("vm-21", n.node_id, "failed", QualityTier::Burstable))
            .await
            .is_err()
    );
    assert_eq!(
        store
            .vm("vm-21".parse().unwrap())
            .await
            .unwrap()
            .unwrap()
            .state,
        "running"
    );
    let usage = store.usage_by_node().await.unwrap();
    let u = usage[&n.node_id];
    assert_eq!(
        (u.compute_units, u.memory_gib, u.disk_gib),
        ((200 + 50) * 12, 8, 40)
    );
    assert_eq!(
        store
            .vms_of_tenant("0x00000000000000000000000000000000000000aa")
            .await
            .unwrap()
            .len(),
        3
    );
    assert_eq!(store.vms_on_node(n.node_id).await.unwrap().len(), 3);
}

async fn nonces_are_single_use_and_expire(url: String) {
    let store = Store::connect(&url).await.unwrap();
    let session = SessionRecord {
        address: "0x00000000000000000000000000000000000000Bb".into(),
        chain_id: 31337,
        expires_at: 5_000,
    };
    store
        .create_nonce("aaaaaaaaaaaaaaaa", 100, 700)
        .await
        .unwrap();
    store
        .create_nonce("bbbbbbbbbbbbbbbb", 100, 700)
        .await
        .unwrap();
    assert_eq!(
        store.usable_nonce("aaaaaaaaaaaaaaaa", 200).await.unwrap(),
        100
    );
    store
        .consume_nonce_and_create_session("aaaaaaaaaaaaaaaa", 200, "h1", &session)
        .await
        .unwrap();
    let again = store
        .consume_nonce_and_create_session("aaaaaaaaaaaaaaaa", 201, "h2", &session)
        .await;
    assert!(
        matches!(again, Err(StoreError::Nonce(NonceProblem::Used))),
        "{again:?}"
    );
    let late = store
        .consume_nonce_and_create_session("bbbbbbbbbbbbbbbb", 700, "h3", &session)
        .await;
    assert!(
        matches!(late, Err(StoreError::Nonce(NonceProblem::Expired))),
        "{late:?}"
    );
    let unknown = store
        .consume_nonce_and_create_session("cccccccccccccccc", 200, "h4", &session)
        .await;
    assert!(
        matches!(unknown, Err(StoreError::Nonce(NonceProblem::Unknown))),
        "{unknown:?}"
    );
    // Refused sign-ins created no session.
    for h in ["h2", "h3", "h4"] {
        assert!(store.session(h, 200).await.unwrap().is_none());
    }
    let s = store.session("h1", 200).await.unwrap().unwrap();
    assert_eq!(
        (s.address.as_str(), s.chain_id),
        ("0x00000000000000000000000000000000000000bb", 31337)
    );
    assert!(
        store.session("h1", 5_000).await.unwrap().is_none(),
        "expired"
    );
    assert!(store.revoke_session("h1", 300).await.unwrap());
    assert!(!store.revoke_session("h1", 301).await.unwrap());
    assert!(store.session("h1", 300).await.unwrap().is_none(), "revoked");
    assert!(store.prune_auth(800).await.unwrap() >= 3);
}

async fn one_nonce_races_to_one_session(url: String) {
    let store = Store::connect(&url).await.unwrap();
    store
        .create_nonce("racenonce0000000", 100, 700)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for k in 0..6 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let s = SessionRecord {
                address: "0x01".into(),
                chain_id: 1,
                expires_at: 999,
            };
            store
                .consume_nonce_and_create_session("racenonce0000000", 200, &format!("race{k}"), &s)
                .await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap().is_ok() {
            ok += 1;
        }
    }
    assert_eq!(ok, 1);
}

async fn agent_commands_queue_and_ack(url: String) {
    let store = Store::connect(&url).await.unwrap();
    let n = node(5);
    store.upsert_node(&n).await.unwrap();
    assert!(
        store
            .enqueue_command("c1", n.node_id, "{\"a\":1}", 100)
            .await
            .unwrap()
    );
    assert!(
        !store
            .enqueue_command("c1", n.node_id, "{\"a\":2}", 101)
            .await
            .unwrap()
    );
    assert!(
        store
            .enqueue_command("c2", n.node_id, "{}", 102)
            .await
            .unwrap()
    );
    let due: Vec<_> = store
        .due_commands(n.node_id, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.command_id)
        .collect();
    assert_eq!(due, ["c1", "c2"]);
    store.mark_command_sent("c1", 110).await.unwrap();
    // Sent at 110: not due again before 110, due at 110 and after.
    assert_eq!(store.due_commands(n.node_id, 109).await.unwrap().len(), 1);
    assert_eq!(store.due_commands(n.node_id, 110).await.unwrap().len(), 2);
    assert_eq!(
        store
            .ack_command(n.node_id, "c1", "done", 120)
            .await
            .unwrap(),
        AckRecorded::Recorded
    );
    assert_eq!(
        store
            .ack_command(n.node_id, "c1", "failed", 121)
            .await
            .unwrap(),
        AckRecorded::Duplicate
    );
    assert_eq!(
        store
            .ack_command(n.node_id, "nope", "done", 121)
            .await
            .unwrap(),
        AckRecorded::Unknown
    );
    assert_eq!(
        store
            .ack_command(B256::with_last_byte(1).into(), "c2", "done", 121)
            .await
            .unwrap(),
        AckRecorded::Unknown,
        "another node's command"
    );
    let c1 = store.command("c1").await.unwrap().unwrap();
    assert_eq!(
        (
            c1.action.as_str(),
            c1.attempts,
            c1.acked_at,
            c1.outcome.as_deref()
        ),
        ("{\"a\":1}", 1, Some(120), Some("done"))
    );
    assert_eq!(
        store.due_commands(n.node_id, i64::MAX).await.unwrap().len(),
        1
    );
    store.set_compute_points(n.node_id, 4_321).await.unwrap();
    assert_eq!(
        store.node(n.node_id).await.unwrap().unwrap().compute_points,
        4_321
    );
    assert!(matches!(
        store
            .set_compute_points(B256::with_last_byte(1).into(), 1)
            .await,
        Err(StoreError::NotFound("node"))
    ));
}

async fn vm_transitions_are_compare_and_set(url: String) {
    let store = Store::connect(&url).await.unwrap();
    let n = node(6);
    store.upsert_node(&n).await.unwrap();
    store
        .insert_vm(&vm("vm-20", n.node_id, "pending", QualityTier::Standard))
        .await
        .unwrap();
    // The command is queued only together with the state it belongs to.
    assert!(
        store
            .transition_vm(
                "vm-20".parse().unwrap(),
                VmState::Pending,
                VmState::Provisioning,
                None,
                Some(("create-vm-20", "{}")),
                50
            )
            .await
            .unwrap()
    );
    assert!(
        !store
            .transition_vm(
                "vm-20".parse().unwrap(),
                VmState::Pending,
                VmState::Failed,
                Some("x"),
                Some(("other", "{}")),
                51
            )
            .await
            .unwrap()
    );
    assert!(store.command("other").await.unwrap().is_none());
    assert_eq!(
        store
            .vm("vm-20".parse().unwrap())
            .await
            .unwrap()
            .unwrap()
            .state,
        "provisioning"
    );
    assert_eq!(
        store.command_vm("create-vm-20").await.unwrap(),
        Some("vm-20".parse().unwrap())
    );
    assert_eq!(
        store
            .command("create-vm-20")
            .await
            .unwrap()
            .unwrap()
            .node_id,
        n.node_id
    );
    assert!(store.unapplied_acks().await.unwrap().is_empty());
    store
        .ack_command(n.node_id, "create-vm-20", "{\"status\":\"done\"}", 60)
        .await
        .unwrap();
    assert_eq!(
        store.unapplied_acks().await.unwrap(),
        vec![(
            "create-vm-20".to_string(),
            "{\"status\":\"done\"}".to_string()
        )]
    );
    assert!(
        store
            .transition_vm(
                "vm-20".parse().unwrap(),
                VmState::Provisioning,
                VmState::Failed,
                Some("boom"),
                None,
                61
            )
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .vm_failure("vm-20".parse().unwrap())
            .await
            .unwrap()
            .as_deref(),
        Some("boom")
    );
    assert!(store.unapplied_acks().await.unwrap().is_empty());
}

async fn templates_round_trip(url: String) {
    let store = Store::connect(&url).await.unwrap();
    let mut t = decloud_orchestrator::store::TemplateRecord {
        slug: "pg".into(),
        template_id: None,
        cid: "bafy1".into(),
        name: "PG".into(),
        category: "database".into(),
        description: "db".into(),
        tags: vec!["sql".into(), "db".into()],
        min_vcpus: 1,
        min_memory_gib: 2,
        min_disk_gib: 10,
        gpus: 0,
        price: 0,
        manifest: serde_json::json!({"ports": []}),
        added_at: 5,
        content: None,
        rating: Default::default(),
    };
    store.upsert_template(&t).await.unwrap();
    // Several unpublished templates may coexist (NULL ids are distinct in both databases).
    store
        .upsert_template(&decloud_orchestrator::store::TemplateRecord {
            slug: "other".into(),
            ..t.clone()
        })
        .await
        .unwrap();
    t.template_id = Some("3".parse().unwrap());
    t.price = 1_000;
    store.upsert_template(&t).await.unwrap();
    assert_eq!(store.template("pg").await.unwrap().unwrap(), t);
    assert_eq!(store.template("3").await.unwrap().unwrap().slug, "pg");
    assert!(store.template("4").await.unwrap().is_none());
    assert_eq!(store.templates().await.unwrap().len(), 2);
    // One on-chain id belongs to one template.
    let clash = decloud_orchestrator::store::TemplateRecord {
        slug: "third".into(),
        ..t.clone()
    };
    assert!(store.upsert_template(&clash).await.is_err());
    assert!(store.template("third").await.unwrap().is_none());
}

async fn lifecycle_queries(url: String) {
    let store = Store::connect(&url).await.unwrap();
    let n = node(7);
    store.upsert_node(&n).await.unwrap();
    let lease = LeaseRecord {
        lease_id: "9".parse().unwrap(),
        tenant: "0x00000000000000000000000000000000000000aa".into(),
        node_id: n.node_id,
        status: LeaseStatus::Active,
        tier: QualityTier::Dedicated,
        vcpus: 1,
        memory_gib: 1,
        storage_gib: 1,
        gpus: 0,
        rate_per_hour: 3_600,
        opened_at: 1,
    };
    store.upsert_lease(&lease).await.unwrap();
    let mut v = vm("vm-9", n.node_id, "running", QualityTier::Dedicated);
    v.lease_id = "9".parse().unwrap();
    store.insert_vm(&v).await.unwrap();
    assert_eq!(
        store.vms_in_state(VmState::Running).await.unwrap(),
        ["vm-9".parse().unwrap()]
    );
    assert!(
        store
            .vms_in_state(VmState::Pending)
            .await
            .unwrap()
            .is_empty()
    );
    // Leases recorded without chain funding or template: nothing to compute.
    assert_eq!(
        store.lease_template("9".parse().unwrap()).await.unwrap(),
        None
    );
    assert_eq!(
        store.lease_depleted_at("9".parse().unwrap()).await.unwrap(),
        None
    );
    assert!(store.leases_to_close().await.unwrap().is_empty());
    store
        .upsert_lease(&LeaseRecord {
            status: LeaseStatus::Closed,
            ..lease.clone()
        })
        .await
        .unwrap();
    assert_eq!(
        store.leases_to_close().await.unwrap(),
        [("9".parse().unwrap(), LeaseStatus::Closed)]
    );
    assert!(
        store
            .transition_vm(
                "vm-9".parse().unwrap(),
                VmState::Running,
                VmState::Stopping,
                None,
                None,
                2
            )
            .await
            .unwrap()
    );
    assert!(
        store.leases_to_close().await.unwrap().is_empty(),
        "already being removed"
    );
}

async fn storage_reports_and_repair_jobs(url: String) {
    use decloud_sdk::{
        api::RepairJobState,
        storage::{ReplicaProofs, StorageReport},
    };
    let store = Store::connect(&url).await.unwrap();
    let id: NodeId = B256::with_last_byte(9).into();
    store.upsert_node(&node(9)).await.unwrap();
    let report = |stored: u64, proven: u32, missed: u32| StorageReport {
        url: Some("http://node9:7000".into()),
        quota_bytes: 1 << 30,
        stored_bytes: stored,
        replicas: Vec::new(),
        draining: false,
        proofs: vec![
            ReplicaProofs {
                deal: 1,
                replica: 0,
                proven_epochs: proven,
                missed_epochs: 0,
                ..Default::default()
            },
            ReplicaProofs {
                deal: 2,
                replica: 1,
                proven_epochs: 1,
                missed_epochs: missed,
                ..Default::default()
            },
        ],
    };
    store
        .save_storage_report(id, &report(100, 3, 1), 50)
        .await
        .unwrap();
    // An older report (a retried delivery) does not replace a newer one.
    store
        .save_storage_report(id, &report(5, 0, 9), 40)
        .await
        .unwrap();
    let kept = store.storage_report(id).await.unwrap().unwrap();
    assert_eq!(
        (kept.stored_bytes, kept.proven_epochs, kept.missed_epochs),
        (100, 4, 1)
    );
    assert_eq!(kept.free_bytes(), (1 << 30) - 100);
    assert_eq!(kept.url.as_deref(), Some("http://node9:7000"));
    // The node's own proof record is kept but gives it no proof rate: that is counted from the
    // chain only.
    store.record_heartbeat(id, 60).await.unwrap();
    let rep = store.reputation(id, 60).await.unwrap();
    assert_eq!(rep.storage_proof_rate_bps, None);
    assert_eq!(
        store.reputations(60).await.unwrap()[&id].storage_proof_rate_bps,
        None
    );

    // One open job per replica; a second failure of the same replica finds it.
    let from = id.to_string();
    let (job, opened) = store
        .open_repair_job(7, 1, &from, "missed epoch 3", 100)
        .await
        .unwrap();
    assert!(opened);
    assert_eq!(
        (job.deal_id, job.replica, job.state, job.attempts),
        (7, 1, RepairJobState::Open, 0)
    );
    let (again, opened) = store
        .open_repair_job(7, 1, &from, "offline", 101)
        .await
        .unwrap();
    assert!(!opened);
    assert_eq!(
        (again.job_id, again.reason.as_str()),
        (job.job_id, "missed epoch 3")
    );
    let (other, _) = store
        .open_repair_job(7, 2, &from, "offline", 101)
        .await
        .unwrap();
    assert_ne!(other.job_id, job.job_id);
    assert_eq!(store.due_repair_jobs(100).await.unwrap().len(), 1);

    // An attempt records its node first; a failure waits and keeps the error.
    let to = B256::with_last_byte(10).to_string();
    store
        .start_repair_attempt(job.job_id, &to, 102)
        .await
        .unwrap();
    store
        .defer_repair_job(job.job_id, "node refused", 200, 102)
        .await
        .unwrap();
    let due: Vec<u64> = store
        .due_repair_jobs(150)
        .await
        .unwrap()
        .iter()
        .map(|j| j.job_id)
        .collect();
    assert_eq!(due, vec![other.job_id]);
    // Restarted: the job is whole.
    store.close().await;
    let store = Store::connect(&url).await.unwrap();
    let job = store.repair_job(job.job_id).await.unwrap().unwrap();
    assert_eq!(job.attempts, 1);
    assert_eq!(job.to_node.as_deref(), Some(to.as_str()));
    assert_eq!(job.error.as_deref(), Some("node refused"));
    assert_eq!(job.next_attempt_at, 200);
    store.count_repair_attempt(job.job_id, 201).await.unwrap();
    store
        .finish_repair_job(job.job_id, RepairJobState::Done, None, 210)
        .await
        .unwrap();
    // Once done, the replica can fail again: a new job.
    let (next, opened) = store
        .open_repair_job(7, 1, &to, "offline", 300)
        .await
        .unwrap();
    assert!(opened);
    let jobs = store.repair_jobs_of_deal(7).await.unwrap();
    assert_eq!(
        jobs.iter().map(|j| (j.job_id, j.state)).collect::<Vec<_>>(),
        vec![
            (next.job_id, RepairJobState::Open),
            (other.job_id, RepairJobState::Open),
            (job.job_id, RepairJobState::Done),
        ]
    );
    assert_eq!(jobs[2].attempts, 2);
    assert!(store.repair_jobs_of_deal(8).await.unwrap().is_empty());
    store.close().await;
}

async fn storage_proof_counts_from_the_chain(url: String) {
    use decloud_orchestrator::store::{ProofCounts, ProofCursor};
    use decloud_sdk::storage::{ReplicaProofs, StorageReport};
    let store = Store::connect(&url).await.unwrap();
    let (a, b): (NodeId, NodeId) = (
        B256::with_last_byte(9).into(),
        B256::with_last_byte(10).into(),
    );
    store.upsert_node(&node(9)).await.unwrap();
    store.upsert_node(&node(10)).await.unwrap();
    assert_eq!(store.storage_proof_rate(a).await.unwrap(), None);
    assert_eq!(store.proof_cursor(1, 0).await.unwrap(), None);
    let at = |node, next_epoch| ProofCursor { node, next_epoch };
    let counts = |due, proven| ProofCounts { due, proven };

    // Epochs 0 to 2 of deal 1's replica 0, all proven by `a`.
    assert!(
        store
            .count_proof_epochs(1, 0, None, at(a, 3), &[(a, counts(3, 3))])
            .await
            .unwrap()
    );
    // A second counter that read the cursor before (none) finds it moved: nothing is counted twice.
    assert!(
        !store
            .count_proof_epochs(1, 0, None, at(a, 3), &[(a, counts(3, 3))])
            .await
            .unwrap()
    );
    assert_eq!(store.storage_proof_counts(a).await.unwrap(), counts(3, 3));
    // Epochs 3 and 4 missed.
    assert!(
        store
            .count_proof_epochs(1, 0, Some(at(a, 3)), at(a, 5), &[(a, counts(2, 0))])
            .await
            .unwrap()
    );
    assert!(
        !store
            .count_proof_epochs(1, 0, Some(at(a, 3)), at(a, 5), &[(a, counts(2, 0))])
            .await
            .unwrap()
    );
    // A cursor never moves back.
    assert!(
        store
            .count_proof_epochs(1, 0, Some(at(a, 5)), at(a, 4), &[])
            .await
            .is_err()
    );
    // The replica moved to `b` in epoch 5, which proved epochs 5 and 6; another deal's replica
    // on `b` proved one of two.
    assert!(
        store
            .count_proof_epochs(1, 0, Some(at(a, 5)), at(b, 7), &[(b, counts(2, 2))])
            .await
            .unwrap()
    );
    assert!(
        store
            .count_proof_epochs(2, 1, None, at(b, 2), &[(b, counts(2, 1))])
            .await
            .unwrap()
    );
    assert_eq!(store.storage_proof_rate(a).await.unwrap(), Some(6_000));
    assert_eq!(store.storage_proof_rate(b).await.unwrap(), Some(7_500));

    // A node claiming every epoch proven in its heartbeat report changes nothing.
    let claim = StorageReport {
        url: Some("http://node9:7000".into()),
        quota_bytes: 1 << 30,
        stored_bytes: 0,
        replicas: Vec::new(),
        draining: false,
        proofs: vec![ReplicaProofs {
            deal: 1,
            replica: 0,
            proven_epochs: 1_000,
            missed_epochs: 0,
            ..Default::default()
        }],
    };
    store.save_storage_report(a, &claim, 50).await.unwrap();
    store.record_heartbeat(a, 60).await.unwrap();
    assert_eq!(
        store
            .reputation(a, 60)
            .await
            .unwrap()
            .storage_proof_rate_bps,
        Some(6_000)
    );
    assert_eq!(
        store.reputations(60).await.unwrap()[&a].storage_proof_rate_bps,
        Some(6_000)
    );

    // Restarted: the counts and the cursors are whole.
    store.close().await;
    let store = Store::connect(&url).await.unwrap();
    assert_eq!(store.storage_proof_counts(a).await.unwrap(), counts(5, 3));
    assert_eq!(store.storage_proof_counts(b).await.unwrap(), counts(4, 3));
    assert_eq!(store.proof_cursor(1, 0).await.unwrap(), Some(at(b, 7)));
    assert_eq!(store.proof_cursor(2, 1).await.unwrap(), Some(at(b, 2)));
    let rates = store.storage_proof_rates().await.unwrap();
    assert_eq!((rates[&a], rates[&b]), (6_000, 7_500));
    store.close().await;
}

macro_rules! suite {
    ($make_url:expr) => {{
        suite!(@run $make_url, nodes_round_trip, heartbeats_build_reputation_that_survives_restart,
            counters_before_first_heartbeat_do_not_start_the_clock, concurrent_heartbeats_are_all_counted,
            leases_vms_and_usage, nonces_are_single_use_and_expire, one_nonce_races_to_one_session,
            agent_commands_queue_and_ack, vm_transitions_are_compare_and_set, templates_round_trip, lifecycle_queries,
            storage_reports_and_repair_jobs, storage_proof_counts_from_the_chain)
    }};
    (@run $make_url:expr, $($check:ident),+) => {{
        $(
            eprintln!("store check: {}", stringify!($check));
            $check($make_url.await).await;
        )+
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_suite_on_sqlite() {
    let mut dirs = Vec::new();
    suite!(async {
        let (url, dir) = support::sqlite_database();
        dirs.push(dir);
        url
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_suite_on_postgres() {
    suite!(support::postgres_database());
}

#[tokio::test]
async fn unsupported_urls_are_refused() {
    let err = Store::connect("mysql://localhost/x").await.unwrap_err();
    assert!(matches!(err, StoreError::UnsupportedUrl(_)), "{err}");
}

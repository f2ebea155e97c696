//! The GraphQL API over an index of the real contracts (deployed by the SDK's test system and
//! driven by their users), on SQLite and on PostgreSQL: entity states, every `where` suffix checked
//! against the same predicate applied to the full list, ordering, paging limits, keyset paging,
//! `_meta`, errors; and the HTTP server (GraphiQL, POST, WebSocket subscriptions, /healthz,
//! /metrics).

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use alloy::primitives::U256;
use alloy::providers::Provider;
use async_graphql::dynamic::Schema;
use common::system::{ADMIN, AUTHOR, OPERATOR_A, OPERATOR_B, System, TENANT_A};
use common::{Kind, TestDb, follower};
use decloud_indexer::graphql::{ApiState, schema};
use decloud_indexer::{ContractKind, ENTITIES, IndexerHandler, Metrics};
use decloud_sdk::bindings::{LeaseEscrow, NodeRegistry, OperatorStaking, TemplateMarket};
use decloud_sdk::testing::{SendOk as _, increase_time, latest_timestamp};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, Row};

struct Fixture {
    chain: System,
    t: TestDb,
    schema: Schema,
    state: ApiState,
}

/// Besides two rounds of calls: a node paused, a template deprecated, leases claimed, closed and
/// terminated, an unstake request withdrawn after the unbonding period.
async fn lifecycle(chain: &System) {
    use ContractKind as K;
    NodeRegistry::new(chain.address(K::NodeRegistry), chain.provider(OPERATOR_B))
        .pause(chain.node_b)
        .send_ok()
        .await;
    TemplateMarket::new(chain.address(K::TemplateMarket), chain.provider(AUTHOR))
        .deprecate(U256::from(2))
        .send_ok()
        .await;
    let admin = chain.provider(ADMIN);
    increase_time(&admin, 3_600).await.unwrap();
    let escrow = chain.address(K::LeaseEscrow);
    LeaseEscrow::new(escrow, chain.provider(OPERATOR_A))
        .claim(vec![U256::from(1), U256::from(3)])
        .send_ok()
        .await;
    LeaseEscrow::new(escrow, chain.provider(TENANT_A))
        .closeLease(U256::from(1))
        .send_ok()
        .await;
    let now = latest_timestamp(&admin).await.unwrap();
    LeaseEscrow::new(escrow, &admin)
        .terminateLease(U256::from(2), now - 60)
        .send_ok()
        .await;
    let staking = OperatorStaking::new(
        chain.address(K::OperatorStaking),
        chain.provider(OPERATOR_A),
    );
    let period = staking.unbondingPeriod().call().await.unwrap();
    increase_time(&admin, period + 1).await.unwrap();
    staking.withdraw(U256::ZERO).send_ok().await;
}

async fn fixture(kind: Kind) -> Fixture {
    let chain = System::start().await;
    chain.rounds(1, 2).await;
    lifecycle(&chain).await;
    let t = TestDb::new(kind).await;
    follower(&chain, &t.db, "indexer")
        .sync_to_head()
        .await
        .unwrap();
    let handler = IndexerHandler::new(chain.decoder(), t.db.backend);
    let state = ApiState {
        db: t.db.clone(),
        cursor: "indexer".into(),
        metrics: Arc::new(Metrics::default()),
        notices: handler.notices(),
    };
    let schema = schema(state.clone()).unwrap();
    Fixture {
        chain,
        t,
        schema,
        state,
    }
}

async fn data(schema: &Schema, query: &str) -> Value {
    let response = schema.execute(query).await;
    assert!(response.errors.is_empty(), "{query}: {:?}", response.errors);
    response.data.into_json().unwrap()
}

async fn error(schema: &Schema, query: &str) -> String {
    let response = schema.execute(query).await;
    assert!(!response.errors.is_empty(), "{query} should fail");
    response.errors[0].message.clone()
}

fn ids(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap().to_owned())
        .collect()
}

fn set<const N: usize>(items: [&str; N]) -> BTreeSet<String> {
    items.into_iter().map(str::to_owned).collect()
}

/// The states the lifecycle left behind.
async fn expected_entities(f: &Fixture) {
    let s = &f.schema;
    let d = data(
        s,
        &format!(
            r#"{{ node(id: "{}") {{ status }} template(id: "2") {{ deprecated }}
                 l1: lease(id: "1") {{ status endedAt failedAt claimCount }}
                 l2: lease(id: "2") {{ status failedAt }}
                 unstakeRequest(id: "{:#x}-0") {{ withdrawn withdrawnBlock }} }}"#,
            f.chain.node_b,
            f.chain.account(OPERATOR_A)
        ),
    )
    .await;
    assert_eq!(d["node"]["status"], json!("Paused"));
    assert_eq!(d["template"]["deprecated"], json!(true));
    assert_eq!(d["l1"]["status"], json!("Closed"));
    assert!(d["l1"]["endedAt"].is_string());
    assert!(d["l1"]["failedAt"].is_null());
    assert_eq!(d["l1"]["claimCount"], json!(1));
    assert_eq!(d["l2"]["status"], json!("Terminated"));
    assert!(d["l2"]["failedAt"].is_string());
    assert_eq!(d["unstakeRequest"]["withdrawn"], json!(true));
    assert!(d["unstakeRequest"]["withdrawnBlock"].is_string());
}

/// Every entity's list query returns every row, and its single query returns the listed item. The
/// StorageMarket entities need real proofs and are covered the same way by `tests/storage.rs`.
async fn every_entity_list_and_single(f: &Fixture) {
    for def in ENTITIES
        .into_iter()
        .filter(|d| !decloud_indexer::schema::STORAGE_TABLES.contains(&d.table))
    {
        let count: i64 = sqlx::query(AssertSqlSafe(format!("SELECT COUNT(*) FROM {}", def.table)))
            .fetch_one(&f.t.db.pool)
            .await
            .unwrap()
            .get(0);
        assert!(count > 0, "{} has rows", def.table);
        let fields: Vec<&str> = def.columns.iter().map(|c| c.field).collect();
        let d = data(
            &f.schema,
            &format!("{{ {}(first: 1000) {{ {} }} }}", def.list, fields.join(" ")),
        )
        .await;
        let list = d[def.list].as_array().unwrap();
        assert_eq!(list.len() as i64, count, "{}", def.list);
        let first = &list[0];
        let id = first["id"].as_str().unwrap();
        let d = data(
            &f.schema,
            &format!(
                r#"{{ {}(id: "{id}") {{ {} }} }}"#,
                def.single,
                fields.join(" ")
            ),
        )
        .await;
        assert_eq!(&d[def.single], first, "{}", def.single);
    }
    let d = data(&f.schema, r#"{ node(id: "0xdoesnotexist") { id } }"#).await;
    assert_eq!(d["node"], Value::Null);
}

type Predicate = Box<dyn Fn(&Value) -> bool>;

fn num(v: &Value) -> U256 {
    v.as_str().unwrap().parse().unwrap()
}

/// Each filter returns exactly the rows of the full list that satisfy the same predicate in Rust,
/// and each case selects some rows but not all, so a filter that is ignored or always false fails.
async fn check_cases(s: &Schema, list: &str, fields: &str, cases: Vec<(String, Predicate)>) {
    let all = data(s, &format!("{{ {list}(first: 1000) {{ id {fields} }} }}")).await;
    let rows = all[list].as_array().unwrap().clone();
    for (w, predicate) in cases {
        let expected: BTreeSet<String> = rows
            .iter()
            .filter(|r| predicate(r))
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect();
        assert!(
            !expected.is_empty() && expected.len() < rows.len(),
            "{list}(where: {{{w}}}) must select some rows but not all: {expected:?}"
        );
        let d = data(s, &format!("{{ {list}(where: {{{w}}}) {{ id }} }}")).await;
        assert_eq!(ids(&d[list]), expected, "{list}(where: {{{w}}})");
    }
}

async fn where_suffixes(f: &Fixture) {
    let s = &f.schema;
    let operator_a = format!("{:#x}", f.chain.account(OPERATOR_A));
    let node_a = f.chain.node_a.to_string();
    let cpu = |v: &Value| num(&v["cpuPerHour"]);
    let region = |v: &Value| v["region"].as_str().unwrap().to_owned();
    let status = |v: &Value| v["status"].as_str().unwrap().to_owned();
    let a = operator_a.clone();
    let prefix = node_a[..12].to_owned();
    let p = prefix.clone();
    let cases: Vec<(String, Predicate)> = vec![
        (
            r#"region: "eu-west""#.into(),
            Box::new(move |v| region(v) == "eu-west"),
        ),
        (
            r#"region_not: "eu-west""#.into(),
            Box::new(move |v| region(v) != "eu-west"),
        ),
        (
            r#"cpuPerHour_gt: "6002""#.into(),
            Box::new(move |v| cpu(v) > U256::from(6002)),
        ),
        (
            r#"cpuPerHour_gte: "6002""#.into(),
            Box::new(move |v| cpu(v) >= U256::from(6002)),
        ),
        (
            r#"cpuPerHour_lt: "6002""#.into(),
            Box::new(move |v| cpu(v) < U256::from(6002)),
        ),
        (
            r#"cpuPerHour_lte: "6002""#.into(),
            Box::new(move |v| cpu(v) <= U256::from(6002)),
        ),
        (
            r#"status_in: ["Paused", "Retired"]"#.into(),
            Box::new(move |v| ["Paused", "Retired"].contains(&status(v).as_str())),
        ),
        (
            r#"status_not_in: ["Active"]"#.into(),
            Box::new(move |v| status(v) != "Active"),
        ),
        (
            r#"region_contains: "gion""#.into(),
            Box::new(move |v| region(v).contains("gion")),
        ),
        (
            r#"region_starts_with: "moved""#.into(),
            Box::new(move |v| region(v).starts_with("moved")),
        ),
        (
            r#"vcpus_gte: 6, status: "Active""#.into(),
            Box::new(move |v| v["vcpus"].as_i64().unwrap() >= 6 && status(v) == "Active"),
        ),
        // Bytes compare case-insensitively (stored lowercase); addresses as filters.
        (
            format!(
                r#"operator: "{}""#,
                operator_a.to_uppercase().replacen("0X", "0x", 1)
            ),
            Box::new(move |v| v["operator"] == json!(a)),
        ),
        (
            format!(r#"id_starts_with: "{prefix}""#),
            Box::new(move |v| v["id"].as_str().unwrap().starts_with(&p)),
        ),
    ];
    check_cases(s, "nodes", "region cpuPerHour status vcpus operator", cases).await;
    let d = data(s, r#"{ nodes(where: {status_in: []}) { id } }"#).await;
    assert!(ids(&d["nodes"]).is_empty());

    // 256-bit amounts compare as numbers, not as text: as text, "9" sorts above every refund.
    let refund = |v: &Value| num(&v["refund"]);
    let cases: Vec<(String, Predicate)> = vec![
        (
            r#"refund_gt: "9""#.into(),
            Box::new(move |v| refund(v) > U256::from(9)),
        ),
        (
            r#"refund_lt: "9""#.into(),
            Box::new(move |v| refund(v) < U256::from(9)),
        ),
        (
            r#"refund_gte: "1", funded_lte: "100000000""#.into(),
            Box::new(move |v| {
                refund(v) >= U256::from(1) && num(&v["funded"]) <= U256::from(100_000_000)
            }),
        ),
        (
            r#"failedAt: null"#.into(),
            Box::new(|v| v["failedAt"].is_null()),
        ),
    ];
    check_cases(s, "leases", "refund funded failedAt", cases).await;
    let d = data(s, r#"{ anchors(where: {batchId_in: ["0", "2"]}) { id } }"#).await;
    assert_eq!(ids(&d["anchors"]), set(["0", "2"]));
    let d = data(
        s,
        r#"{ anchors(where: {batchId_not_in: ["0", "2"]}) { id } }"#,
    )
    .await;
    assert_eq!(ids(&d["anchors"]), set(["1"]));
    let d = data(s, r#"{ templates(where: {deprecated: true}) { id } }"#).await;
    assert_eq!(ids(&d["templates"]), set(["2"]));
    let d = data(s, r#"{ templates(where: {deprecated_not: true}) { id } }"#).await;
    assert_eq!(ids(&d["templates"]), set(["1", "3"]));
    let d = data(
        s,
        r#"{ events(where: {name_in: ["LeaseClosed", "LeaseTerminated"]}) { name } }"#,
    )
    .await;
    assert_eq!(d["events"].as_array().unwrap().len(), 2);
}

async fn ordering_and_paging(f: &Fixture) {
    let s = &f.schema;
    let all = data(s, "{ nodes { cpuPerHour } }").await;
    let mut prices: Vec<U256> = all["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| num(&v["cpuPerHour"]))
        .collect();
    prices.sort_by(|a, b| b.cmp(a));
    let d = data(
        s,
        "{ nodes(orderBy: cpuPerHour, orderDirection: desc) { cpuPerHour } }",
    )
    .await;
    let ordered: Vec<U256> = d["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| num(&v["cpuPerHour"]))
        .collect();
    assert_eq!(ordered, prices);
    let d = data(s, "{ anchors(first: 1, skip: 1, orderBy: batchId) { id } }").await;
    assert_eq!(d["anchors"], json!([{"id": "1"}]));
    // Keyset paging through every event, two at a time, in block order.
    let total: i64 = sqlx::query("SELECT COUNT(*) FROM events")
        .fetch_one(&f.t.db.pool)
        .await
        .unwrap()
        .get(0);
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let cursor = if after.is_empty() {
            String::new()
        } else {
            format!(r#", after: "{after}""#)
        };
        let d = data(
            s,
            &format!("{{ events(first: 2, orderBy: blockNumber{cursor}) {{ id blockNumber }} }}"),
        )
        .await;
        let page = d["events"].as_array().unwrap().clone();
        if page.is_empty() {
            break;
        }
        after = page.last().unwrap()["id"].as_str().unwrap().to_owned();
        seen.extend(page);
    }
    assert_eq!(seen.len() as i64, total);
    let blocks: Vec<u64> = seen
        .iter()
        .map(|e| e["blockNumber"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(blocks.windows(2).all(|w| w[0] <= w[1]));
    let unique: BTreeSet<&str> = seen.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(unique.len(), seen.len());
    let d = data(
        s,
        r#"{ anchors(orderBy: batchId, orderDirection: desc, after: "1") { id } }"#,
    )
    .await;
    assert_eq!(d["anchors"], json!([{"id": "0"}]));
}

async fn meta_and_errors(f: &Fixture) {
    let s = &f.schema;
    let head = f.chain.reader.get_block_number().await.unwrap();
    let d = data(
        s,
        "{ _meta { block { number hash timestamp } hasIndexingErrors } }",
    )
    .await;
    assert_eq!(d["_meta"]["block"]["number"], json!(head.to_string()));
    assert!(
        d["_meta"]["block"]["hash"]
            .as_str()
            .unwrap()
            .starts_with("0x")
    );
    assert_eq!(d["_meta"]["hasIndexingErrors"], json!(false));

    assert!(
        error(s, "{ nodes(first: 1001) { id } }")
            .await
            .contains("first")
    );
    assert!(
        error(s, "{ nodes(first: -1) { id } }")
            .await
            .contains("first")
    );
    assert!(
        error(s, "{ nodes(skip: 5001) { id } }")
            .await
            .contains("skip")
    );
    assert!(
        error(s, r#"{ nodes(after: "nope") { id } }"#)
            .await
            .contains("cursor")
    );
    error(s, r#"{ leases(where: {refund_gt: "12abc"}) { id } }"#).await;
    error(s, r#"{ leases(where: {refund_gt: "-5"}) { id } }"#).await;
    error(s, r#"{ nodes(where: {nope: 1}) { id } }"#).await;
    error(s, "{ nodes { nonexistent } }").await;
    error(s, "{ nodes(orderBy: nope) { id } }").await;
    error(s, "{ nodes { id ").await;
    // Depth limit: introspection nests deeper than the data types do.
    let deep = "{ __schema { types { fields { type { ofType { ofType { ofType { ofType { ofType \
                { ofType { ofType { name } } } } } } } } } } } }";
    assert!(
        error(s, deep)
            .await
            .to_lowercase()
            .contains("nested too deep")
    );
    let mut many = String::from("{ ");
    for i in 0..600 {
        many.push_str(&format!("a{i}: _meta {{ hasIndexingErrors }} "));
    }
    many.push('}');
    assert!(error(s, &many).await.to_lowercase().contains("complex"));
}

async fn api_suite(kind: Kind) {
    let f = fixture(kind).await;
    expected_entities(&f).await;
    every_entity_list_and_single(&f).await;
    where_suffixes(&f).await;
    ordering_and_paging(&f).await;
    meta_and_errors(&f).await;
    drop(f.state);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_graphql() {
    api_suite(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_graphql() {
    api_suite(Kind::Postgres).await;
}

/// The HTTP server end to end: GraphiQL, POST queries, bad requests answered without a 5xx,
/// /healthz, /metrics, and a WebSocket subscription receiving events as the follower commits them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_server_and_subscriptions() {
    use alloy::transports::http::reqwest;
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

    let chain = System::start().await;
    let t = TestDb::new(Kind::Sqlite).await;
    let mut f = follower(&chain, &t.db, "indexer");
    let metrics = f.metrics().clone();
    let state = ApiState {
        db: t.db.clone(),
        cursor: "indexer".into(),
        metrics,
        notices: f.handler().notices(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = decloud_indexer::app(state).unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");

    let page = http.get(format!("{base}/graphql")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.text()
            .await
            .unwrap()
            .to_lowercase()
            .contains("graphiql")
    );
    for body in [
        json!({"query": "{ nodes { id"}),
        json!({"query": "{ nodes(first: 5000) { id } }"}),
    ] {
        let r = http
            .post(format!("{base}/graphql"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().as_u16() < 500);
        let v: Value = r.json().await.unwrap();
        assert!(v["errors"].is_array());
    }
    let r = http
        .post(format!("{base}/graphql"))
        .header("content-type", "application/json")
        .body("not json")
        .send()
        .await
        .unwrap();
    assert!(
        r.status().as_u16() < 500,
        "malformed body got {}",
        r.status()
    );

    // Subscribe, then index: the subscriber sees the committed events.
    let mut request = format!("ws://{addr}/graphql/ws")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    ws.send(Message::text(
        json!({"type": "connection_init"}).to_string(),
    ))
    .await
    .unwrap();
    let ack = ws.next().await.unwrap().unwrap();
    assert!(ack.to_text().unwrap().contains("connection_ack"));
    ws.send(Message::text(
        json!({"id": "1", "type": "subscribe",
               "payload": {"query": "subscription { events(contract: \"AttestationAnchor\") { name contract args } }"}})
        .to_string(),
    ))
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    chain.rounds(1, 3).await;
    f.sync_to_head().await.unwrap();
    // The setup's anchor and one per round.
    let mut anchored = 0;
    while anchored < 4 {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
            .await
            .expect("subscription delivers")
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
        assert_eq!(v["type"], json!("next"), "{v}");
        assert_eq!(
            v["payload"]["data"]["events"]["name"],
            json!("BatchAnchored")
        );
        anchored += 1;
    }

    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let head = chain.reader.get_block_number().await.unwrap();
    assert!(
        metrics.contains(&format!("decloud_indexer_indexed_block {head}")),
        "{metrics}"
    );
    assert!(metrics.contains("decloud_indexer_events_total "));
    assert!(metrics.contains("decloud_indexer_reorgs_total 0"));
    assert!(metrics.contains("decloud_indexer_rpc_errors_total 0"));
    let _ = ContractKind::ALL;
}

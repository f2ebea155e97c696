//! The GraphQL API over an index of the fixture scenario, on SQLite and on PostgreSQL: expected
//! entities, every `where` suffix, ordering, paging limits, keyset paging, `_meta`, errors; and
//! the HTTP server (GraphiQL, POST, WebSocket subscriptions, /healthz, /metrics).

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use alloy::providers::Provider;
use async_graphql::dynamic::Schema;
use common::{Chain, Kind, TestDb, follower, node_id, user};
use decloud_indexer::graphql::{ApiState, schema};
use decloud_indexer::{ContractKind, ENTITIES, IndexerHandler, Metrics};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, Row};

struct Fixture {
    chain: Chain,
    t: TestDb,
    schema: Schema,
    state: ApiState,
}

async fn fixture(kind: Kind) -> Fixture {
    let chain = Chain::start().await;
    chain.scenario(1).await;
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

fn set<const N: usize>(items: [String; N]) -> BTreeSet<String> {
    items.into_iter().collect()
}

fn addr(n: u64) -> String {
    format!("{:#x}", user(n))
}

async fn expected_entities(f: &Fixture) {
    let s = &f.schema;
    let n10 = node_id(10).to_string();
    let n11 = node_id(11).to_string();
    let n12 = node_id(12).to_string();
    let d = data(
        s,
        &format!(
            r#"{{ node(id: "{n10}") {{ id operator region vcpus cpuPerHour memoryGiBPerHour priceChanges status }}
                 n11: node(id: "{n11}") {{ region vcpus endpoint nodeKey status }}
                 n12: node(id: "{n12}") {{ status cpuPerHour }} }}"#
        ),
    )
    .await;
    assert_eq!(
        d["node"],
        json!({"id": n10, "operator": addr(100), "region": "eu-west-0", "vcpus": 4,
               "cpuPerHour": "5010", "memoryGiBPerHour": "2010", "priceChanges": 2, "status": "Active"})
    );
    assert_eq!(
        d["n11"],
        json!({"region": "us-east-1", "vcpus": 16, "endpoint": "https://moved.example",
               "nodeKey": addr(300), "status": "Active"})
    );
    assert_eq!(d["n12"], json!({"status": "Paused", "cpuPerHour": "5003"}));

    let d = data(
        s,
        &format!(
            r#"{{ nodePrices(where: {{node: "{n10}"}}, orderBy: blockNumber) {{ cpuPerHour requestedCpuPerHour }}
                 stake(id: "{op}") {{ activeStake unbonding totalStaked totalWithdrawn requestCount }}
                 unstakeRequests {{ id requestId amount withdrawn withdrawnBlock }}
                 account(id: "{tenant}") {{ balance totalDeposited totalWithdrawn }} }}"#,
            op = addr(100),
            tenant = addr(1)
        ),
    )
    .await;
    assert_eq!(
        d["nodePrices"],
        json!([{"cpuPerHour": "5001", "requestedCpuPerHour": "5000"},
               {"cpuPerHour": "5010", "requestedCpuPerHour": "5007"}])
    );
    assert_eq!(
        d["stake"],
        json!({"activeStake": "601", "unbonding": "0", "totalStaked": "1001",
               "totalWithdrawn": "400", "requestCount": 1})
    );
    assert_eq!(
        d["unstakeRequests"][0]["id"],
        json!(format!("{}-0", addr(100)))
    );
    assert_eq!(d["unstakeRequests"][0]["withdrawn"], json!(true));
    assert!(d["unstakeRequests"][0]["withdrawnBlock"].is_string());
    assert_eq!(
        d["account"],
        json!({"balance": "123457", "totalDeposited": "10000001", "totalWithdrawn": "1000"})
    );

    let d = data(
        s,
        r#"{ l11: lease(id: "11") { tenant node funded ratePerHour feeBps quality bandwidth operatorPaid
                platformFeePaid settled refund status claimCount endedAt failedAt templateId }
             l12: lease(id: "12") { status failedAt settled refund }
             claims { lease operatorAmount platformFee }
             t1: template(id: "1") { cid price purchaseCount revenue authorEarnings deprecated }
             t2: template(id: "2") { deprecated price }
             purchases(orderBy: purchaseId) { id template buyer price authorShare platformShare }
             anchors(orderBy: batchId) { id batchId count firstSequence uri } }"#,
    )
    .await;
    let l11 = &d["l11"];
    assert_eq!(l11["tenant"], json!(addr(1)));
    assert_eq!(l11["node"], json!(n10));
    assert_eq!(l11["funded"], json!("1500000"));
    assert_eq!(l11["ratePerHour"], json!("30001"));
    assert_eq!(
        (
            l11["feeBps"].clone(),
            l11["quality"].clone(),
            l11["bandwidth"].clone()
        ),
        (json!(500), json!(1), json!(2))
    );
    assert_eq!(l11["operatorPaid"], json!("57000"));
    assert_eq!(l11["platformFeePaid"], json!("3000"));
    assert_eq!(l11["settled"], json!("90000"));
    assert_eq!(l11["refund"], json!("1410000"));
    assert_eq!(l11["status"], json!("Closed"));
    assert_eq!(l11["claimCount"], json!(1));
    assert!(l11["endedAt"].is_string());
    assert_eq!(l11["failedAt"], Value::Null);
    assert_eq!(l11["templateId"], json!("1"));
    assert_eq!(
        d["l12"],
        json!({"status": "Terminated", "failedAt": "1700000100", "settled": "10000", "refund": "990000"})
    );
    assert_eq!(
        d["claims"],
        json!([{"lease": "11", "operatorAmount": "57000", "platformFee": "3000"}])
    );
    assert_eq!(
        d["t1"],
        json!({"cid": "bafytemplate2", "price": "2000000", "purchaseCount": "2", "revenue": "4000000",
               "authorEarnings": "3400000", "deprecated": false})
    );
    assert_eq!(d["t2"], json!({"deprecated": true, "price": "0"}));
    assert_eq!(
        d["purchases"],
        json!([
            {"id": "11", "template": "1", "buyer": addr(1), "price": "2000000", "authorShare": "1700000", "platformShare": "300000"},
            {"id": "12", "template": "1", "buyer": addr(1), "price": "2000000", "authorShare": "1700000", "platformShare": "300000"}
        ])
    );
    assert_eq!(
        d["anchors"],
        json!([
            {"id": "100", "batchId": "100", "count": "8", "firstSequence": "800", "uri": "ipfs://batch"},
            {"id": "101", "batchId": "101", "count": "8", "firstSequence": "808", "uri": "ipfs://batch"},
            {"id": "102", "batchId": "102", "count": "8", "firstSequence": "816", "uri": "ipfs://batch"}
        ])
    );
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

async fn where_suffixes(f: &Fixture) {
    let s = &f.schema;
    let n10 = node_id(10).to_string();
    let n11 = node_id(11).to_string();
    let n12 = node_id(12).to_string();
    let q = |w: &str| format!("{{ nodes(where: {{{w}}}) {{ id }} }}");
    let cases: Vec<(&str, BTreeSet<String>)> = vec![
        (r#"region: "eu-west-0""#, set([n10.clone()])),
        (
            r#"region_not: "eu-west-0""#,
            set([n11.clone(), n12.clone()]),
        ),
        (r#"cpuPerHour_gt: "5002""#, set([n10.clone(), n12.clone()])),
        (r#"cpuPerHour_gte: "5003""#, set([n10.clone(), n12.clone()])),
        (r#"cpuPerHour_lt: "5003""#, set([n11.clone()])),
        (r#"cpuPerHour_lte: "5003""#, set([n11.clone(), n12.clone()])),
        (
            r#"status_in: ["Active", "Retired"]"#,
            set([n10.clone(), n11.clone()]),
        ),
        (r#"status_not_in: ["Active"]"#, set([n12.clone()])),
        (
            r#"region_contains: "west""#,
            set([n10.clone(), n12.clone()]),
        ),
        (r#"region_starts_with: "us-""#, set([n11.clone()])),
        (r#"vcpus_gte: 6, status: "Active""#, set([n11.clone()])),
        (r#"status_in: []"#, BTreeSet::new()),
    ];
    for (w, expected) in cases {
        let d = data(s, &q(w)).await;
        assert_eq!(ids(&d["nodes"]), expected, "where {w}");
    }
    // Bytes compare case-insensitively (stored lowercase); addresses as filters.
    let upper = addr(101).to_uppercase().replacen("0X", "0x", 1);
    let d = data(s, &q(&format!(r#"operator: "{upper}""#))).await;
    assert_eq!(ids(&d["nodes"]), set([n11.clone()]));
    let d = data(s, &q(&format!(r#"id_starts_with: "{}""#, &n12[..12]))).await;
    assert_eq!(ids(&d["nodes"]), set([n12.clone()]));
    // 256-bit amounts compare as numbers, not as text.
    let d = data(s, r#"{ leases(where: {refund_gt: "999999"}) { id } }"#).await;
    assert_eq!(ids(&d["leases"]), set(["11".into()]));
    let d = data(
        s,
        r#"{ leases(where: {refund_lt: "1000000", refund_gte: "990000"}) { id } }"#,
    )
    .await;
    assert_eq!(ids(&d["leases"]), set(["12".into()]));
    let d = data(
        s,
        r#"{ anchors(where: {batchId_in: ["100", "102"]}) { id } }"#,
    )
    .await;
    assert_eq!(ids(&d["anchors"]), set(["100".into(), "102".into()]));
    let d = data(
        s,
        r#"{ anchors(where: {batchId_not_in: ["100", "102"]}) { id } }"#,
    )
    .await;
    assert_eq!(ids(&d["anchors"]), set(["101".into()]));
    let d = data(s, r#"{ templates(where: {deprecated: true}) { id } }"#).await;
    assert_eq!(ids(&d["templates"]), set(["2".into()]));
    let d = data(s, r#"{ templates(where: {deprecated_not: true}) { id } }"#).await;
    assert_eq!(ids(&d["templates"]), set(["1".into()]));
    let d = data(s, r#"{ leases(where: {failedAt: null}) { id } }"#).await;
    assert_eq!(ids(&d["leases"]), set(["11".into()]));
    let d = data(
        s,
        r#"{ events(where: {name_in: ["LeaseClosed", "LeaseTerminated"]}) { name } }"#,
    )
    .await;
    assert_eq!(d["events"].as_array().unwrap().len(), 2);
}

async fn ordering_and_paging(f: &Fixture) {
    let s = &f.schema;
    let d = data(
        s,
        "{ nodes(orderBy: cpuPerHour, orderDirection: desc) { cpuPerHour } }",
    )
    .await;
    assert_eq!(
        d["nodes"],
        json!([{"cpuPerHour": "5010"}, {"cpuPerHour": "5003"}, {"cpuPerHour": "5002"}])
    );
    let d = data(s, "{ anchors(first: 1, skip: 1, orderBy: batchId) { id } }").await;
    assert_eq!(d["anchors"], json!([{"id": "101"}]));
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
        r#"{ anchors(orderBy: batchId, orderDirection: desc, after: "101") { id } }"#,
    )
    .await;
    assert_eq!(d["anchors"], json!([{"id": "100"}]));
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

    let chain = Chain::start().await;
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
    chain.scenario(1).await;
    f.sync_to_head().await.unwrap();
    let mut anchored = 0;
    while anchored < 3 {
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

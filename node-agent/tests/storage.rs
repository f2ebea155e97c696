//! The storage role on the real contracts: an agent with a `[storage]` section serves its
//! replicas of StorageMarket deals on anvil over its HTTP chunk API, to the deal's owner and the
//! repairer it names, and refuses every bad request with a clear error and nothing changed.

mod common;

use std::{process::Command, time::SystemTime};

use alloy::{
    primitives::{Address, B256, U256},
    providers::{DynProvider, Provider, ext::AnvilApi},
    signers::local::PrivateKeySigner,
};
use decloud_node_agent::{ConfigLayer, Identity, RunningAgent, StorageLayer, sha256};
use decloud_sdk::{
    agent_protocol,
    bindings::{MockUSDC, NodeRegistry, StorageMarket, node_registry::INodeRegistry},
    storage::{
        ErrorBody, HEADER_EXPIRES, HEADER_SHA256, HEADER_SIGNATURE, NodeClient, ReplicaManifest,
        StorageClientError, StorageMethod, StorageRequest, UploadStats,
    },
    testing::{SendOk as _, TestSystem},
};
use reqwest::StatusCode;

const OWNER: usize = 5;
const STRANGER: usize = 6;
const REPAIRER: usize = 7;
const CHUNK: usize = 16 << 10;
/// 48 segments of 1 KiB: three chunks per replica.
const SEGMENTS: u64 = 48;
const QUOTA: u64 = 64 << 10;

/// Registers node `machine` of operator account `who` with key `key`; its id.
async fn register(system: &TestSystem, who: usize, machine: &str, key: Address) -> B256 {
    let p = system.provider(who);
    let registry = NodeRegistry::new(system.deployment.contracts.node_registry.address, &p);
    let machine = agent_protocol::machine_id(machine);
    registry
        .register(
            machine,
            key,
            "eu-west".into(),
            INodeRegistry::Capabilities {
                vcpus: 8,
                memoryGiB: 32,
                diskGiB: 2000,
                gpus: 0,
                bandwidthMbps: 1000,
                architecture: 0,
                flags: 0,
            },
            "wss://node".into(),
            "bafy".into(),
            INodeRegistry::Prices {
                cpuPerHour: 0,
                memoryGiBPerHour: 0,
                storageGiBPerHour: 0,
                gpuPerHour: 0,
            },
        )
        .send_ok()
        .await;
    registry
        .computeNodeId(machine, system.address(who))
        .call()
        .await
        .unwrap()
}

/// Opens a deal of `epochs` epochs by the owner with a replica on each node; its id.
async fn open_deal(system: &TestSystem, nodes: &[B256], epochs: u32, salt: u64) -> u64 {
    let owner = system.provider(OWNER);
    let market_address = system.deployment.contracts.storage_market.address;
    MockUSDC::new(system.deployment.usdc, &owner)
        .approve(market_address, U256::MAX)
        .send_ok()
        .await;
    let market = StorageMarket::new(market_address, &owner);
    let roots: Vec<U256> = (0..nodes.len() as u64)
        .map(|i| U256::from(1000 * salt + i + 1))
        .collect();
    market
        .createDeal(nodes.to_vec(), roots, SEGMENTS, 1_000, epochs)
        .send_ok()
        .await;
    market.dealCount().call().await.unwrap().to::<u64>()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

struct Client {
    http: reqwest::Client,
    base: String,
    chain_id: u64,
    market: Address,
    node: B256,
}

impl Client {
    fn chunk_url(&self, deal: u64, replica: u32, index: u32) -> String {
        format!(
            "{}/v1/storage/deals/{deal}/replicas/{replica}/chunks/{index}",
            self.base
        )
    }

    fn request(
        &self,
        method: StorageMethod,
        deal: u64,
        replica: u32,
        chunk: Option<u32>,
        sha256: Option<B256>,
    ) -> StorageRequest {
        StorageRequest {
            method,
            chain_id: self.chain_id,
            market: self.market,
            node: self.node,
            deal,
            replica,
            chunk,
            sha256,
            expires: now() + 60,
        }
    }

    fn signed(
        &self,
        builder: reqwest::RequestBuilder,
        request: &StorageRequest,
        signer: &PrivateKeySigner,
    ) -> reqwest::RequestBuilder {
        let signature = request.sign(signer).unwrap();
        builder
            .header(HEADER_EXPIRES, request.expires.to_string())
            .header(
                HEADER_SIGNATURE,
                format!("0x{}", hex::encode(signature.as_bytes())),
            )
    }

    /// Puts `body` as chunk `index`, signing the hash of `signed_data`.
    async fn put(
        &self,
        signer: &PrivateKeySigner,
        (deal, replica, index): (u64, u32, u32),
        signed_data: &[u8],
        body: Vec<u8>,
    ) -> reqwest::Response {
        let hash = sha256(signed_data);
        let request = self.request(StorageMethod::Put, deal, replica, Some(index), Some(hash));
        self.signed(
            self.http.put(self.chunk_url(deal, replica, index)),
            &request,
            signer,
        )
        .header(HEADER_SHA256, hash.to_string())
        .body(body)
        .send()
        .await
        .unwrap()
    }

    async fn get(
        &self,
        signer: &PrivateKeySigner,
        (deal, replica, index): (u64, u32, u32),
    ) -> reqwest::Response {
        let request = self.request(StorageMethod::Get, deal, replica, Some(index), None);
        self.signed(
            self.http.get(self.chunk_url(deal, replica, index)),
            &request,
            signer,
        )
        .send()
        .await
        .unwrap()
    }

    async fn manifest(
        &self,
        signer: &PrivateKeySigner,
        deal: u64,
        replica: u32,
    ) -> ReplicaManifest {
        let request = self.request(StorageMethod::List, deal, replica, None, None);
        let response = self
            .signed(
                self.http.get(format!(
                    "{}/v1/storage/deals/{deal}/replicas/{replica}",
                    self.base
                )),
                &request,
                signer,
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }
}

impl Client {
    async fn delete(
        &self,
        signer: &PrivateKeySigner,
        deal: u64,
        replica: u32,
    ) -> reqwest::Response {
        let request = self.request(StorageMethod::Delete, deal, replica, None, None);
        self.signed(
            self.http.delete(format!(
                "{}/v1/storage/deals/{deal}/replicas/{replica}",
                self.base
            )),
            &request,
            signer,
        )
        .send()
        .await
        .unwrap()
    }
}

/// The status and error text of a refused request.
async fn refused(response: reqwest::Response) -> (StatusCode, String) {
    let status = response.status();
    let body: ErrorBody = response.json().await.unwrap();
    (status, body.error)
}

fn chunk(fill: u8) -> Vec<u8> {
    (0..CHUNK).map(|i| fill.wrapping_add(i as u8)).collect()
}

async fn mine(provider: &DynProvider, blocks: u64) {
    provider.anvil_mine(Some(blocks), None).await.unwrap();
}

#[tokio::test]
async fn the_deal_owner_stores_and_reads_its_replica_and_bad_requests_change_nothing() {
    let system = TestSystem::start().await.unwrap();
    let dir = common::data_dir();
    let machine = "storage-agent-a";
    let mut config = common::test_driver_config(dir.path(), machine);
    // The agent's node belongs to operator account 3.
    config.operator = Some(system.address(3));
    let market_address = system.deployment.contracts.storage_market.address;
    let storage = StorageLayer {
        listen: Some("127.0.0.1:0".into()),
        quota_bytes: Some(QUOTA),
        dir: None,
        rpc_url: Some(system.rpc_url().to_string()),
        storage_market: Some(market_address),
        public_url: Some("http://storage-a.example.org:7700".into()),
        proving_keys: None,
        drain: None,
    };
    config.storage = Some(storage.clone().resolve(&config.data_dir).unwrap());
    let (identity, _) = Identity::load_or_create(&config).unwrap();
    let node = register(&system, 3, machine, identity.address()).await;
    assert_eq!(node, identity.node_id);
    let other = register(&system, 4, "storage-agent-b", system.address(4)).await;

    let deal = open_deal(&system, &[node, other], 100, 1).await;
    let running = RunningAgent::start_with(config.clone(), identity, common::resources())
        .await
        .unwrap();
    let client = Client {
        http: reqwest::Client::new(),
        base: format!("http://{}", running.storage_address().unwrap()),
        chain_id: system.provider(0).get_chain_id().await.unwrap(),
        market: market_address,
        node,
    };
    let owner = system.signer(OWNER);
    let stranger = system.signer(STRANGER);

    // The owner writes chunk 0; a resumed upload writes it again and changes nothing.
    let first = chunk(1);
    let r = client
        .put(&owner, (deal, 0, 0), &first, first.clone())
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = client
        .put(&owner, (deal, 0, 0), &first, first.clone())
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = client.get(&owner, (deal, 0, 0)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()[HEADER_SHA256].to_str().unwrap(),
        sha256(&first).to_string()
    );
    assert_eq!(r.bytes().await.unwrap().to_vec(), first);

    // A truncated upload: the body is shorter than the chunk whose hash the owner signed.
    let second = chunk(2);
    let (status, error) = refused(
        client
            .put(&owner, (deal, 0, 1), &second, second[..CHUNK / 2].to_vec())
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error.contains("truncated"), "{error}");
    // Signed by someone else than the owner: refused, on reads too.
    let (status, error) = refused(
        client
            .put(&stranger, (deal, 0, 1), &second, second.clone())
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(error.contains("neither deal"), "{error}");
    let (status, _) = refused(client.get(&stranger, (deal, 0, 0)).await).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // A replica placed on another node, a deal that does not exist.
    let (status, error) = refused(
        client
            .put(&owner, (deal, 1, 0), &second, second.clone())
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(error.contains("not on this node"), "{error}");
    let (status, error) = refused(
        client
            .put(&owner, (deal + 40, 0, 0), &second, second.clone())
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(error.contains("no deal"), "{error}");
    // An expired signature, and no signature at all.
    let mut expired = client.request(StorageMethod::Get, deal, 0, Some(0), None);
    expired.expires = now() - 1;
    let r = client
        .signed(
            client.http.get(client.chunk_url(deal, 0, 0)),
            &expired,
            &owner,
        )
        .send()
        .await
        .unwrap();
    let (status, error) = refused(r).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(error.contains("expired"), "{error}");
    let r = client
        .http
        .get(client.chunk_url(deal, 0, 0))
        .send()
        .await
        .unwrap();
    assert_eq!(refused(r).await.0, StatusCode::UNAUTHORIZED);
    // Nothing of the refused writes was stored.
    let manifest = client.manifest(&owner, deal, 0).await;
    assert_eq!(manifest.chunks.len(), 1);
    assert_eq!(manifest.chunks[0].sha256, sha256(&first));

    // The replica fills what its deal paid for (48 segments of 1 KiB), and no more.
    for (index, fill) in [(1, 2), (2, 3)] {
        let data = chunk(fill);
        let r = client
            .put(&owner, (deal, 0, index), &data, data.clone())
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let extra = vec![9u8; 1];
    let (status, error) = refused(
        client
            .put(&owner, (deal, 0, 3), &extra, extra.clone())
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(error.contains("paid for"), "{error}");

    // A second deal fills the quota (64 KiB: 48 used, one more 16 KiB chunk fits).
    let deal2 = open_deal(&system, &[node], 100, 2).await;
    let data = chunk(4);
    assert_eq!(
        client
            .put(&owner, (deal2, 0, 0), &data, data.clone())
            .await
            .status(),
        StatusCode::CREATED
    );
    let data = chunk(5);
    let (status, error) =
        refused(client.put(&owner, (deal2, 0, 1), &data, data.clone()).await).await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE);
    assert!(error.contains("quota"), "{error}");

    // Heartbeats report the store.
    let heartbeat = running.agent().heartbeat(1).await.unwrap();
    let report = heartbeat.storage.expect("a storage node reports its store");
    assert_eq!(
        report.url.as_deref(),
        Some("http://storage-a.example.org:7700/")
    );
    assert_eq!(report.quota_bytes, QUOTA);
    assert_eq!(report.stored_bytes, QUOTA);
    let replicas: Vec<_> = report
        .replicas
        .iter()
        .map(|r| (r.deal, r.replica, r.chunks, r.bytes))
        .collect();
    assert_eq!(
        replicas,
        vec![(deal, 0, 3, 3 * CHUNK as u64), (deal2, 0, 1, CHUNK as u64)]
    );

    // A chunk damaged on the node's disk is not served; the error says so.
    let store = running.agent().chunk_store().unwrap().clone();
    let path = store.chunk_path(&sha256(&first));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[100] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let (status, error) = refused(client.get(&owner, (deal, 0, 0)).await).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(error.contains("corrupt"), "{error}");
    bytes[100] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(
        client.get(&owner, (deal, 0, 0)).await.status(),
        StatusCode::OK
    );

    // The owner drops the second deal's replica: its bytes are freed.
    let request = client.request(StorageMethod::Delete, deal2, 0, None, None);
    let r = client
        .signed(
            client.http.delete(format!(
                "{}/v1/storage/deals/{deal2}/replicas/0",
                client.base
            )),
            &request,
            &owner,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(store.report().stored_bytes, 3 * CHUNK as u64);
    assert!(client.manifest(&owner, deal2, 0).await.chunks.is_empty());

    // A deal whose epochs are over (its funds spent or refunded) takes no more data.
    let short = open_deal(&system, &[node], 1, 3).await;
    let epoch_blocks = StorageMarket::new(market_address, system.provider(0))
        .epochBlocks()
        .call()
        .await
        .unwrap();
    mine(&system.provider(0), epoch_blocks + 1).await;
    let data = chunk(6);
    let (status, error) =
        refused(client.put(&owner, (short, 0, 0), &data, data.clone()).await).await;
    assert_eq!(status, StatusCode::GONE);
    assert!(error.contains("ended"), "{error}");
    assert_eq!(store.report().stored_bytes, 3 * CHUNK as u64);

    running.stop().await;

    // `chunks list` reads the store of the stopped agent from its configuration.
    let config_file = dir.path().join("agent.toml");
    let layer = ConfigLayer {
        data_dir: Some(config.data_dir.clone()),
        operator: Some(system.address(3)),
        machine_id: Some(machine.into()),
        storage: Some(storage),
        ..Default::default()
    };
    std::fs::write(&config_file, toml::to_string(&layer).unwrap()).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_decloud-node-agent"))
        .arg("--config")
        .arg(&config_file)
        .args(["chunks", "list"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().skip(1).collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert_eq!(
        lines[0],
        format!("{deal}\t0\t0\t{CHUNK}\t{}", sha256(&first))
    );
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("replicas: 1, bytes stored: 49152 of a 65536 byte quota"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn the_sdk_client_resumes_an_interrupted_upload_and_checks_what_it_reads() {
    let system = TestSystem::start().await.unwrap();
    let dir = common::data_dir();
    let machine = "storage-agent-c";
    let mut config = common::test_driver_config(dir.path(), machine);
    config.operator = Some(system.address(3));
    let market_address = system.deployment.contracts.storage_market.address;
    config.storage = Some(
        StorageLayer {
            listen: Some("127.0.0.1:0".into()),
            quota_bytes: Some(QUOTA),
            dir: None,
            rpc_url: Some(system.rpc_url().to_string()),
            storage_market: Some(market_address),
            public_url: None,
            proving_keys: None,
            drain: None,
        }
        .resolve(&config.data_dir)
        .unwrap(),
    );
    let (identity, _) = Identity::load_or_create(&config).unwrap();
    let node = register(&system, 3, machine, identity.address()).await;
    let deal = open_deal(&system, &[node], 100, 1).await;
    let running = RunningAgent::start_with(config, identity, common::resources())
        .await
        .unwrap();
    let url: url::Url = format!("http://{}", running.storage_address().unwrap())
        .parse()
        .unwrap();
    let chain_id = system.provider(0).get_chain_id().await.unwrap();
    let client = NodeClient::new(
        url.clone(),
        chain_id,
        market_address,
        node,
        system.signer(OWNER),
    );
    let chunks: Vec<Vec<u8>> = (0..3).map(|i| chunk(10 + i)).collect();

    // The upload breaks off after the first chunk; the next one sends only the other two.
    assert!(
        client
            .put_chunk(deal, 0, 0, chunks[0].clone())
            .await
            .unwrap()
    );
    let mut progressed = 0;
    let stats = client
        .upload_replica(
            deal,
            0,
            3,
            |i| chunks[i as usize].clone(),
            |b| progressed += b,
        )
        .await
        .unwrap();
    assert_eq!(
        stats,
        UploadStats {
            sent_chunks: 2,
            sent_bytes: 2 * CHUNK as u64,
            skipped_chunks: 1
        }
    );
    assert_eq!(progressed, 3 * CHUNK as u64);
    let manifest = client.manifest(deal, 0).await.unwrap();
    assert_eq!(
        manifest.chunks.iter().map(|c| c.sha256).collect::<Vec<_>>(),
        chunks.iter().map(|c| sha256(c)).collect::<Vec<_>>()
    );
    for (i, data) in chunks.iter().enumerate() {
        assert_eq!(
            &client
                .get_chunk(deal, 0, i as u32, sha256(data))
                .await
                .unwrap(),
            data
        );
    }
    // A chunk that is not the one expected is an error, not data.
    let e = client
        .get_chunk(deal, 0, 1, sha256(&chunks[0]))
        .await
        .unwrap_err();
    assert!(
        matches!(e, StorageClientError::WrongChunk { index: 1, .. }),
        "{e}"
    );
    // The node's refusals arrive as its words; a stranger's key is refused.
    let stranger = NodeClient::new(url, chain_id, market_address, node, system.signer(STRANGER));
    let e = stranger.manifest(deal, 0).await.unwrap_err();
    match e {
        StorageClientError::Refused { status, error, .. } => {
            assert_eq!(status, StatusCode::FORBIDDEN);
            assert!(error.contains("owner"), "{error}");
        }
        other => panic!("expected a refusal, got {other}"),
    }
    // Deleting frees the replica; a second delete is harmless.
    client.delete_replica(deal, 0).await.unwrap();
    client.delete_replica(deal, 0).await.unwrap();
    assert!(client.manifest(deal, 0).await.unwrap().chunks.is_empty());
    assert_eq!(
        running.agent().chunk_store().unwrap().report().stored_bytes,
        0
    );
    running.stop().await;
}

#[tokio::test]
async fn the_repairer_reads_and_writes_and_deletes_follow_the_chain() {
    let system = TestSystem::start().await.unwrap();
    let dir = common::data_dir();
    let machine = "storage-agent-r";
    let mut config = common::test_driver_config(dir.path(), machine);
    config.operator = Some(system.address(3));
    let market_address = system.deployment.contracts.storage_market.address;
    config.storage = Some(
        StorageLayer {
            listen: Some("127.0.0.1:0".into()),
            quota_bytes: Some(QUOTA),
            dir: None,
            rpc_url: Some(system.rpc_url().to_string()),
            storage_market: Some(market_address),
            public_url: None,
            proving_keys: None,
            drain: None,
        }
        .resolve(&config.data_dir)
        .unwrap(),
    );
    let (identity, _) = Identity::load_or_create(&config).unwrap();
    let node = register(&system, 3, machine, identity.address()).await;
    let other = register(&system, 4, "storage-agent-s", system.address(4)).await;
    let spare = register(&system, 8, "storage-agent-t", system.address(8)).await;
    let deal = open_deal(&system, &[node, other], 100, 1).await;
    let running = RunningAgent::start_with(config, identity, common::resources())
        .await
        .unwrap();
    let client = Client {
        http: reqwest::Client::new(),
        base: format!("http://{}", running.storage_address().unwrap()),
        chain_id: system.provider(0).get_chain_id().await.unwrap(),
        market: market_address,
        node,
    };
    let owner = system.signer(OWNER);
    let repairer = system.signer(REPAIRER);
    let stranger = system.signer(STRANGER);
    let as_owner = StorageMarket::new(market_address, system.provider(OWNER));
    let data = chunk(20);
    assert_eq!(
        client
            .put(&owner, (deal, 0, 0), &data, data.clone())
            .await
            .status(),
        StatusCode::CREATED
    );

    // Before the owner names it, the repairer is a stranger; named, it is let in at once.
    let (status, error) = refused(client.get(&repairer, (deal, 0, 0)).await).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(error.contains("neither deal"), "{error}");
    as_owner
        .setRepairer(U256::from(deal), system.address(REPAIRER))
        .send_ok()
        .await;
    let r = client.get(&repairer, (deal, 0, 0)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().to_vec(), data);
    let more = chunk(21);
    assert_eq!(
        client
            .put(&repairer, (deal, 0, 1), &more, more.clone())
            .await
            .status(),
        StatusCode::CREATED
    );
    assert_eq!(client.manifest(&repairer, deal, 0).await.chunks.len(), 2);
    // Neither the repairer nor a stranger deletes a replica the deal still places here.
    for signer in [&repairer, &stranger] {
        let (status, error) = refused(client.delete(signer, deal, 0).await).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(error.contains("only the deal's owner"), "{error}");
    }
    assert_eq!(client.manifest(&owner, deal, 0).await.chunks.len(), 2);

    // The owner clears the repairer, seconds after its last request: refused at once.
    as_owner
        .setRepairer(U256::from(deal), Address::ZERO)
        .send_ok()
        .await;
    let (status, _) = refused(
        client
            .put(&repairer, (deal, 0, 2), &more, more.clone())
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // The replica moves to another node: the repairer (named again) no longer reads it here,
    // and anyone may free its bytes.
    as_owner
        .replaceReplica(U256::from(deal), U256::ZERO, spare, U256::from(77))
        .send_ok()
        .await;
    as_owner
        .setRepairer(U256::from(deal), system.address(REPAIRER))
        .send_ok()
        .await;
    let (status, error) = refused(client.get(&repairer, (deal, 0, 0)).await).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(error.contains("not on this node"), "{error}");
    let store = running.agent().chunk_store().unwrap().clone();
    assert_eq!(store.report().stored_bytes, 2 * CHUNK as u64);
    assert_eq!(
        client.delete(&stranger, deal, 0).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(store.report().stored_bytes, 0);

    // A settled deal's replica may be deleted by anyone too; before settlement only by its owner.
    let short = open_deal(&system, &[node], 1, 2).await;
    assert_eq!(
        client
            .put(&owner, (short, 0, 0), &data, data.clone())
            .await
            .status(),
        StatusCode::CREATED
    );
    let epoch_blocks = StorageMarket::new(market_address, system.provider(0))
        .epochBlocks()
        .call()
        .await
        .unwrap();
    mine(&system.provider(0), epoch_blocks + 1).await;
    let (status, _) = refused(client.delete(&stranger, short, 0).await).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    StorageMarket::new(market_address, system.provider(0))
        .settle(U256::from(short))
        .send_ok()
        .await;
    assert_eq!(
        client.delete(&stranger, short, 0).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(store.report().stored_bytes, 0);
    running.stop().await;
}

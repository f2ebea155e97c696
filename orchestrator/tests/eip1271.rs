//! Sign-in with a contract wallet (EIP-1271) on a real anvil chain: the orchestrator asks the
//! wallet's `isValidSignature` through JSON-RPC.

mod support;

use alloy::{
    network::TransactionBuilder,
    node_bindings::Anvil,
    primitives::{Address, Bytes},
    providers::{Provider, ProviderBuilder},
    rpc::types::TransactionRequest,
    signers::{Signer, local::PrivateKeySigner},
    sol_types::SolValue,
};
use axum::{
    body::Body,
    http::{Request, StatusCode},
};
use decloud_orchestrator::{
    AppState, Config, Store, app,
    clock::now,
    config::{ChainRpc, SiweConfig},
};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use tower::ServiceExt;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A minimal EIP-1271 contract wallet, compiled from its fixture.
fn wallet_bytecode() -> Vec<u8> {
    decloud_sdk::testing::compile_fixture(
        "orchestrator/tests/fixtures/ERC1271Wallet.sol",
        "ERC1271Wallet",
    )
    .to_vec()
}

fn message(address: Address, nonce: &str) -> String {
    let at = |t: i64| {
        OffsetDateTime::from_unix_timestamp(t)
            .unwrap()
            .format(&Rfc3339)
            .unwrap()
    };
    format!(
        "app.decloud.test wants you to sign in with your Ethereum account:\n{}\n\nSign in to DeCloud.\n\n\
         URI: https://app.decloud.test\nVersion: 1\nChain ID: 31337\nNonce: {nonce}\nIssued At: {}\n\
         Expiration Time: {}",
        address.to_checksum(None),
        at(now()),
        at(now() + 600)
    )
}

async fn post(router: &axum::Router, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let req = match body {
        Some(b) => Request::post(path)
            .header("content-type", "application/json")
            .body(Body::from(b.to_string())),
        None => Request::post(path).body(Body::empty()),
    };
    let res = router.clone().oneshot(req.unwrap()).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn router_for(rpc_url: &str) -> (axum::Router, tempfile::TempDir) {
    let (url, dir) = support::sqlite_database();
    let store = Store::connect(&url).await.unwrap();
    let config = Config {
        siwe: SiweConfig {
            domains: vec!["app.decloud.test".into()],
            uris: vec!["https://app.decloud.test".into()],
            chain_ids: vec![31337],
            rpc: vec![ChainRpc {
                chain_id: 31337,
                url: rpc_url.into(),
            }],
            ..SiweConfig::default()
        },
        ..Config::default()
    };
    (app(AppState::new(store, config).unwrap()), dir)
}

async fn try_sign_in(
    router: &axum::Router,
    address: Address,
    by: &PrivateKeySigner,
) -> (StatusCode, Value) {
    let (_, nonce) = post(router, "/api/v1/auth/nonce", None).await;
    let msg = message(address, nonce["nonce"].as_str().unwrap());
    let sig = by.sign_message(msg.as_bytes()).await.unwrap();
    let body = json!({"message": msg, "signature": format!("0x{}", hex::encode(sig.as_bytes()))});
    post(router, "/api/v1/auth/verify", Some(body)).await
}

#[tokio::test]
async fn contract_wallets_sign_in_through_is_valid_signature() {
    let anvil = Anvil::at(root().join("contracts/node_modules/.bin/anvil")).spawn();
    let deployer: PrivateKeySigner = anvil.keys()[0].clone().into();
    let provider = ProviderBuilder::new()
        .wallet(deployer)
        .connect_http(anvil.endpoint_url());
    let owner = PrivateKeySigner::random();
    let stranger = PrivateKeySigner::random();
    let mut code = wallet_bytecode();
    code.extend(owner.address().abi_encode());
    let tx = TransactionRequest::default().with_deploy_code(Bytes::from(code));
    let receipt = provider
        .send_transaction(tx)
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    let wallet = receipt.contract_address.expect("wallet deployed");

    let (router, _dir) = router_for(&anvil.endpoint()).await;
    // The owner's signature signs the wallet in, through the contract.
    let (status, body) = try_sign_in(&router, wallet, &owner).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["address"], format!("{wallet:#x}"));
    assert_eq!(body["contract_wallet"], true);
    // A stranger's signature is refused by the contract.
    let (status, body) = try_sign_in(&router, wallet, &stranger).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("signature_mismatch")),
        "{body}"
    );
    // An address without code and a signature by someone else: no contract to ask, refused.
    let (status, body) = try_sign_in(&router, Address::repeat_byte(0x42), &owner).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("signature_mismatch")),
        "{body}"
    );
    // EOAs still sign in directly, without the chain.
    let (status, body) = try_sign_in(&router, owner.address(), &owner).await;
    assert_eq!(
        (status, body["contract_wallet"].as_bool()),
        (StatusCode::OK, Some(false)),
        "{body}"
    );

    // With the chain unreachable, a contract-wallet sign-in fails as a gateway error whose
    // message reveals nothing, and the nonce stays unused.
    let endpoint = anvil.endpoint();
    drop(anvil);
    let (router, _dir) = router_for(&endpoint).await;
    let (status, body) = try_sign_in(&router, wallet, &owner).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["error"]["code"], "chain_unavailable");
    assert_eq!(body["error"]["message"], "internal server error");
}

//! A VM's serial console end to end: the orchestrator's router on a real socket with its SQLite
//! store, a real node agent connected over its outbound link, and a real guest (the busybox test
//! guest under QEMU through the system libvirtd, with a shell on its serial port). A tenant's
//! WebSocket types into the shell and reads the answer; other tenants, unknown VMs and callers
//! without a session are refused before the upgrade in the API's error shape; closing the socket
//! ends the session on the agent.

mod console_node;

use console_node::{ConsoleNode, WAIT, eventually};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::{net::SocketAddr, time::Instant};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async,
    tungstenite::{self, Message, client::IntoClientRequest, http::HeaderValue},
};

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

// A VM id no other test uses: its libvirt domain (`decloud-<vm id>`) lives on the shared
// libvirtd, where tests running at the same time must not collide.
const VM: &str = "vm-7101";

/// Opens the console WebSocket; `Err` carries the HTTP refusal as (status, JSON body).
async fn open(
    addr: SocketAddr,
    vm: &str,
    token: Option<&str>,
    query_token: bool,
) -> Result<Ws, (u16, Value)> {
    let query = match (token, query_token) {
        (Some(t), true) => format!("?access_token={t}"),
        _ => String::new(),
    };
    let mut request = format!("ws://{addr}/api/v1/vms/{vm}/console{query}")
        .into_client_request()
        .unwrap();
    if let (Some(t), false) = (token, query_token) {
        request.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
        );
    }
    match connect_async(request).await {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(response)) => {
            let body = response.body().clone().unwrap_or_default();
            Err((
                response.status().as_u16(),
                serde_json::from_slice(&body).unwrap_or(Value::Null),
            ))
        }
        Err(e) => panic!("console connection failed: {e}"),
    }
}

/// Reads until the output contains `needle`; panics if the server closes first.
async fn read_until(ws: &mut Ws, needle: &str) -> String {
    let mut text = String::new();
    let deadline = Instant::now() + WAIT;
    while !text.contains(needle) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Binary(data)))) => text.push_str(&String::from_utf8_lossy(&data)),
            Ok(Some(Ok(Message::Close(frame)))) => {
                panic!("closed ({frame:?}) before {needle:?}; output:\n{text}")
            }
            Ok(Some(Ok(_))) => {}
            Ok(other) => panic!("connection ended ({other:?}) before {needle:?}; output:\n{text}"),
            Err(_) => panic!("{needle:?} did not come; output:\n{text}"),
        }
    }
    text
}

/// The close reason the server sends.
async fn close_reason(ws: &mut Ws) -> String {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a close frame")
        {
            Some(Ok(Message::Close(Some(frame)))) => return frame.reason.to_string(),
            Some(Ok(Message::Close(None))) | None | Some(Err(_)) => return String::new(),
            Some(Ok(_)) => {}
        }
    }
}

fn assert_refused(result: Result<Ws, (u16, Value)>, status: u16, code: &str) -> String {
    let Err((got, body)) = result else {
        panic!("the console opened; expected {status} {code}");
    };
    assert_eq!(
        (got, body["error"]["code"].as_str()),
        (status, Some(code)),
        "{body}"
    );
    body["error"]["message"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenant_types_into_its_vms_console_and_no_one_else_can() {
    let mut node = ConsoleNode::start(VM).await;
    let (addr, agent) = (node.addr, node.agent.clone());
    let (alice_token, bob_token) = (node.alice_token.clone(), node.bob_token.clone());

    // Before the node's agent is connected, the console is unreachable, and says so.
    let message = assert_refused(
        open(addr, VM, Some(&alice_token), false).await,
        409,
        "node_unreachable",
    );
    assert!(message.contains("no agent connected"), "{message}");

    node.boot().await;
    node.connect().await;

    // Refusals come before the upgrade, in the API's error shape.
    assert_refused(open(addr, VM, None, false).await, 401, "missing_session");
    assert_refused(
        open(addr, VM, Some("forged"), false).await,
        401,
        "invalid_session",
    );
    let message = assert_refused(
        open(addr, VM, Some(&bob_token), false).await,
        403,
        "forbidden",
    );
    assert!(message.contains("belongs to another address"), "{message}");
    assert_refused(
        open(addr, "vm-999", Some(&alice_token), false).await,
        404,
        "not_found",
    );
    assert_refused(
        open(addr, "vm-unknown", Some(&alice_token), false).await,
        400,
        "invalid_vm_id",
    );
    assert!(
        agent.consoles().attached().is_empty(),
        "no refused request reached the agent"
    );

    // Alice types into the guest's shell and reads its answer (the typed line echoes as
    // `hello-$((6*7))`, so `hello-42` is the shell's result).
    let mut first = open(addr, VM, Some(&alice_token), false).await.unwrap();
    first
        .send(Message::binary(b"echo hello-$((6*7))\r".to_vec()))
        .await
        .unwrap();
    read_until(&mut first, "hello-42").await;
    assert_eq!(agent.consoles().attached().len(), 1);

    // A browser passes the token as a query parameter; its session replaces the first, which
    // is closed with the reason.
    let mut second = open(addr, VM, Some(&alice_token), true).await.unwrap();
    let reason = close_reason(&mut first).await;
    assert!(reason.contains("replaced"), "{reason}");
    second
        .send(Message::text("echo hello-$((7*8))\r"))
        .await
        .unwrap();
    read_until(&mut second, "hello-56").await;

    // Closing the socket ends the session on the agent.
    second.close(None).await.unwrap();
    eventually("the agent to end the session", async || {
        agent.consoles().attached().is_empty() && node.state.agents().consoles().sessions() == 0
    })
    .await;

    // The link carried heartbeats all along.
    assert!(
        node.store.liveness(node.node_id).await.unwrap().is_some(),
        "heartbeats were booked"
    );
    node.shutdown().await;
}

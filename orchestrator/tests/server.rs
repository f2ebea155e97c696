//! The real binary over a real socket: it serves, answers with request ids, and stops cleanly on
//! SIGTERM with its data intact.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

fn get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

#[test]
fn binary_serves_and_shuts_down_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_decloud-orchestrator"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env(
            "DECLOUD_ORCHESTRATOR_DATABASE_URL",
            format!("sqlite:{}", dir.path().join("o.db").display()),
        )
        .env("DECLOUD_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let health = loop {
        if let Some(r) = get(port, "/api/v1/health") {
            break r;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "server did not come up"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(
        health.to_ascii_lowercase().contains("x-request-id:"),
        "{health}"
    );
    // A URI too long for the HTTP parser still gets the API's error shape.
    let long = format!("/api/v1/{}", "a".repeat(70_000));
    let refused = get(port, &long).unwrap();
    assert!(refused.starts_with("HTTP/1.1 414"), "{refused}");
    let body = refused.split("\r\n\r\n").nth(1).unwrap_or_default();
    let body: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {refused}"));
    assert_eq!(body["error"]["code"], "uri_too_long", "{refused}");
    // A long URI the parser takes reaches the router and its JSON 404.
    let routed = get(port, &format!("/api/v1/{}", "a".repeat(10_000))).unwrap();
    assert!(routed.starts_with("HTTP/1.1 404"), "{routed}");
    assert!(routed.contains("\"not_found\""), "{routed}");
    let metrics = get(port, "/metrics").unwrap();
    assert!(
        metrics.contains(
            "decloud_http_requests_total{method=\"GET\",route=\"/api/v1/health\",status=\"200\"} 1"
        ),
        "{metrics}"
    );

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "server did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}");
    let mut logs = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    assert!(
        logs.contains("shutting down") && logs.contains("stopped"),
        "{logs}"
    );
    assert!(
        get(port, "/api/v1/health").is_none(),
        "still listening after shutdown"
    );
    assert!(dir.path().join("o.db").exists());
}

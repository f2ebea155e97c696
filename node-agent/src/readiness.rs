//! Readiness probes, one per service of a VM: cloud-init finished (its final message on the
//! serial console), a TCP port accepting connections, an HTTP(S) GET answering the expected
//! status, and a command run in the guest by its QEMU guest agent exiting with 0.

use std::{
    path::Path,
    sync::OnceLock,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use decloud_sdk::agent_protocol::{ProbeResult, Readiness, ReadinessProbe};
use tokio::{net::TcpStream, time::timeout};

use crate::guest_exec::ExecOutcome;

/// Time limit of one network probe, and of one guest command.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Whether a console log shows cloud-init's final message
/// (`Cloud-init v. 23.1.1 finished at …`).
pub fn cloud_init_finished(console: &str) -> bool {
    console.lines().any(|line| {
        line.find("Cloud-init v. ")
            .is_some_and(|at| line[at..].contains(" finished at "))
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Runs every probe of a VM. `running` is whether the domain runs; `addresses` are the
/// guest's known IPv4 addresses; `console_log` is its serial console file; `exec` runs a
/// command in the guest (through its guest agent) for [`ReadinessProbe::Exec`].
pub async fn check<E, Fut>(
    probes: &[ReadinessProbe],
    running: bool,
    addresses: &[String],
    console_log: &Path,
    exec: E,
) -> Readiness
where
    E: Fn(Vec<String>) -> Fut,
    Fut: Future<Output = Result<ExecOutcome, String>>,
{
    if !running {
        let now = unix_now();
        return Readiness {
            ready: false,
            probes: probes
                .iter()
                .map(|p| failed(p, "vm is not running".into(), now))
                .collect(),
        };
    }
    let mut results = Vec::with_capacity(probes.len());
    for probe in probes {
        let outcome = match probe {
            ReadinessProbe::CloudInit => {
                // The log may not exist yet right after start.
                let console = tokio::fs::read(console_log).await.unwrap_or_default();
                if cloud_init_finished(&String::from_utf8_lossy(&console)) {
                    Ok(())
                } else {
                    Err("cloud-init has not finished".into())
                }
            }
            ReadinessProbe::Tcp { port } => {
                first_ok(addresses, |host| tcp_probe(host, *port)).await
            }
            ReadinessProbe::Http {
                port,
                path,
                expect_status,
                tls,
            } => {
                first_ok(addresses, |host| {
                    http_probe(host, *port, path, *expect_status, *tls)
                })
                .await
            }
            ReadinessProbe::Exec { command } => match exec(command.clone()).await {
                Ok(outcome) if outcome.succeeded() => Ok(()),
                Ok(outcome) => Err(outcome.failure()),
                Err(e) => Err(e),
            },
        };
        let now = unix_now();
        results.push(match outcome {
            Ok(()) => passed(probe, now),
            Err(detail) => failed(probe, detail, now),
        });
    }
    Readiness {
        ready: results.iter().all(|r| r.ok),
        probes: results,
    }
}

async fn first_ok<'a, F, Fut>(addresses: &'a [String], run: F) -> Result<(), String>
where
    F: Fn(&'a str) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    if addresses.is_empty() {
        return Err("no guest address known yet".into());
    }
    let mut last = String::new();
    for address in addresses {
        match run(address).await {
            Ok(()) => return Ok(()),
            Err(e) => last = format!("{address}: {e}"),
        }
    }
    Err(last)
}

fn passed(probe: &ReadinessProbe, now: u64) -> ProbeResult {
    ProbeResult {
        probe: probe.clone(),
        ok: true,
        detail: None,
        checked_at: Some(now),
    }
}

fn failed(probe: &ReadinessProbe, detail: String, now: u64) -> ProbeResult {
    ProbeResult {
        probe: probe.clone(),
        ok: false,
        detail: Some(detail),
        checked_at: Some(now),
    }
}

/// Succeeds when `host:port` accepts a TCP connection within [`PROBE_TIMEOUT`].
pub async fn tcp_probe(host: &str, port: u16) -> Result<(), String> {
    match timeout(PROBE_TIMEOUT, TcpStream::connect((host, port))).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("connect timed out".into()),
    }
}

/// The client of every HTTP probe: no redirects followed (the status the service answers is
/// what counts), no proxy (guests are on the node's own network), certificates not verified
/// (a guest's certificate is its own, usually self-signed), and no connection kept between
/// checks (each check connects afresh, as a tenant would).
fn http_client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .pool_max_idle_per_host(0)
            .timeout(PROBE_TIMEOUT)
            .tls_danger_accept_invalid_certs(true)
            .tls_danger_accept_invalid_hostnames(true)
            .user_agent("decloud-node-agent")
            .build()
            .expect("the probe client's settings are valid")
    })
}

/// Succeeds when `GET path` on `host:port` (HTTPS when `tls`) answers with `expect_status`,
/// or with any 2xx or 3xx status when none is expected.
pub async fn http_probe(
    host: &str,
    port: u16,
    path: &str,
    expect_status: Option<u16>,
    tls: bool,
) -> Result<(), String> {
    let scheme = if tls { "https" } else { "http" };
    let url = format!("{scheme}://{host}:{port}{path}");
    let response = http_client().get(&url).send().await.map_err(|e| {
        // reqwest's own message is only "error sending request"; the cause says what failed.
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            text = format!("{text}: {cause}");
            source = cause.source();
        }
        text
    })?;
    let status = response.status().as_u16();
    match expect_status {
        Some(expected) if status == expected => Ok(()),
        Some(expected) => Err(format!("HTTP status {status}, expected {expected}")),
        None if (200..400).contains(&status) => Ok(()),
        None => Err(format!("HTTP status {status}, expected 2xx or 3xx")),
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::HashMap,
        process::{Child, Command, Stdio},
    };

    use super::*;
    use base64::Engine as _;
    use serde_json::{Value, json};
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    /// A real HTTP server on loopback answering every request with `status`.
    async fn http_server(status: &'static str) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = socket.read(&mut buf).await;
                let _ = socket
                    .write_all(
                        format!(
                            "HTTP/1.1 {status}\r\nWWW-Authenticate: Basic realm=\"vm\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        )
                        .as_bytes(),
                    )
                    .await;
            }
        });
        port
    }

    /// OpenSSL's own TLS server (`openssl s_server -www`, which answers `200 ok`) on
    /// loopback with a fresh self-signed certificate, as a guest's HTTPS service would have.
    struct TlsServer {
        child: Child,
        port: u16,
        _dir: tempfile::TempDir,
    }

    impl Drop for TlsServer {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    async fn tls_server() -> TlsServer {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let made = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args([
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=guest",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(made.success());
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let child = Command::new("openssl")
            .args(["s_server", "-quiet", "-www", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = TlsServer {
            child,
            port,
            _dir: dir,
        };
        for _ in 0..200 {
            if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("openssl s_server did not listen on {port}");
    }

    /// The guest-agent side of `guest-exec` and `guest-exec-status`, run on this host:
    /// commands are real processes, answered in the agent's JSON. It carries the protocol
    /// where no guest exists (there is no guest agent in CI's guests).
    #[derive(Default)]
    struct HostGuestAgent {
        children: HashMap<i64, Child>,
    }

    impl HostGuestAgent {
        fn handle(&mut self, command: &str) -> Result<String, String> {
            let command: Value = serde_json::from_str(command).map_err(|e| e.to_string())?;
            let args = &command["arguments"];
            let reply = match command["execute"].as_str() {
                Some("guest-exec") => {
                    let argv: Vec<&str> = args["arg"]
                        .as_array()
                        .map(|a| a.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    match Command::new(args["path"].as_str().unwrap_or_default())
                        .args(argv)
                        .stdin(Stdio::null())
                        .stdout(Stdio::piped())
                        .stderr(Stdio::piped())
                        .spawn()
                    {
                        Ok(child) => {
                            let pid = i64::from(child.id());
                            self.children.insert(pid, child);
                            json!({ "return": { "pid": pid } })
                        }
                        Err(e) => json!({ "error": { "class": "GenericError",
                            "desc": format!("Guest-exec: failed to execute: {e}") } }),
                    }
                }
                Some("guest-exec-status") => {
                    let pid = args["pid"].as_i64().unwrap_or_default();
                    let child = self.children.get_mut(&pid).ok_or("unknown pid")?;
                    match child.try_wait().map_err(|e| e.to_string())? {
                        None => json!({ "return": { "exited": false } }),
                        Some(status) => {
                            let child = self.children.remove(&pid).unwrap();
                            let output = child.wait_with_output().map_err(|e| e.to_string())?;
                            let b64 =
                                |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
                            json!({ "return": { "exited": true, "exitcode": status.code(),
                                "out-data": b64(&output.stdout), "err-data": b64(&output.stderr) } })
                        }
                    }
                }
                _ => json!({ "error": { "class": "CommandNotFound", "desc": "unknown command" } }),
            };
            Ok(reply.to_string())
        }
    }

    async fn host_exec(command: Vec<String>) -> Result<ExecOutcome, String> {
        tokio::task::spawn_blocking(move || {
            let mut agent = HostGuestAgent::default();
            crate::guest_exec::run(&mut |c| agent.handle(c), &command, PROBE_TIMEOUT)
        })
        .await
        .unwrap()
    }

    fn strings(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    fn detail(readiness: &Readiness, index: usize) -> &str {
        readiness.probes[index]
            .detail
            .as_deref()
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn probes_check_real_sockets_servers_commands_and_the_console() {
        let ok = http_server("200 OK").await;
        let login = http_server("401 Unauthorized").await;
        let broken = http_server("503 Service Unavailable").await;
        let tls = tls_server().await;
        let closed = {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            listener.local_addr().unwrap().port()
        };
        let dir = tempfile::tempdir().unwrap();
        let console = dir.path().join("console.log");
        std::fs::write(
            &console,
            "boot\r\n[   9.1] cloud-init[600]: Cloud-init v. 22.4.2 finished at Sat, 21 Nov 2026 05:00:00 +0000. Datasource DataSourceNoCloud.  Up 9.10 seconds\r\n",
        )
        .unwrap();
        let here = vec!["127.0.0.1".to_owned()];
        let http = |port, path: &str, expect_status, tls| ReadinessProbe::Http {
            port,
            path: path.into(),
            expect_status,
            tls,
        };
        let probes = vec![
            ReadinessProbe::CloudInit,
            ReadinessProbe::Tcp { port: ok },
            http(ok, "/health", None, false),
            // A service behind a login is ready when it asks for credentials.
            http(login, "/", Some(401), false),
            // A guest's own self-signed certificate is accepted.
            http(tls.port, "/", Some(200), true),
            ReadinessProbe::Exec {
                command: strings(&["/bin/sh", "-c", "test -f \"$0\"", "/etc/hostname"]),
            },
        ];
        let before = unix_now();
        let readiness = check(&probes, true, &here, &console, host_exec).await;
        assert!(readiness.ready, "{readiness:?}");
        assert_eq!(readiness.probes.len(), probes.len());
        for result in &readiness.probes {
            assert!(result.checked_at.unwrap() >= before, "{result:?}");
        }

        let bad = vec![
            ReadinessProbe::Tcp { port: closed },
            http(broken, "/", None, false),
            http(login, "/", None, false),
            http(login, "/", Some(200), false),
            http(tls.port, "/", Some(401), true),
            http(tls.port, "/", Some(200), false),
            http(login, "/", Some(401), true),
            ReadinessProbe::Exec {
                command: strings(&["/bin/sh", "-c", "echo not yet >&2; exit 3"]),
            },
            ReadinessProbe::Exec {
                command: strings(&["/nonexistent/program"]),
            },
        ];
        let readiness = check(&bad, true, &here, &console, host_exec).await;
        assert!(!readiness.ready);
        assert!(readiness.probes.iter().all(|p| !p.ok), "{readiness:?}");
        assert!(detail(&readiness, 1).ends_with("HTTP status 503, expected 2xx or 3xx"));
        assert!(detail(&readiness, 2).ends_with("HTTP status 401, expected 2xx or 3xx"));
        assert!(detail(&readiness, 3).ends_with("HTTP status 401, expected 200"));
        assert!(detail(&readiness, 4).ends_with("HTTP status 200, expected 401"));
        assert_eq!(detail(&readiness, 7), "exit code 3: not yet");
        assert!(
            detail(&readiness, 8).starts_with("guest agent: Guest-exec: failed to execute"),
            "{}",
            detail(&readiness, 8)
        );

        let readiness = check(
            &probes,
            true,
            &[],
            &dir.path().join("missing.log"),
            host_exec,
        )
        .await;
        assert!(!readiness.ready);
        assert_eq!(detail(&readiness, 0), "cloud-init has not finished");
        assert_eq!(detail(&readiness, 1), "no guest address known yet");
        let stopped = check(&probes, false, &here, &console, host_exec).await;
        assert!(!stopped.ready);
        assert!(
            stopped
                .probes
                .iter()
                .all(|p| p.detail.as_deref() == Some("vm is not running"))
        );
        assert!(check(&[], true, &here, &console, host_exec).await.ready);
    }

    #[test]
    fn cloud_init_marker_needs_the_final_message() {
        assert!(!cloud_init_finished(
            "Cloud-init v. 22.4.2 running 'modules:final'"
        ));
        assert!(cloud_init_finished("Cloud-init v. 22.4.2 finished at Sat"));
    }
}

//! Readiness probes: cloud-init finished (its final message on the serial console), a TCP
//! port accepting connections, an HTTP GET answering 2xx/3xx.

use std::{path::Path, time::Duration};

use decloud_sdk::agent_protocol::{ProbeResult, Readiness, ReadinessProbe};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::timeout,
};

/// Time limit of one network probe.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Whether a console log shows cloud-init's final message
/// (`Cloud-init v. 23.1.1 finished at …`).
pub fn cloud_init_finished(console: &str) -> bool {
    console.lines().any(|line| {
        line.find("Cloud-init v. ")
            .is_some_and(|at| line[at..].contains(" finished at "))
    })
}

/// Runs every probe of a VM. `running` is whether the domain runs; `addresses` are the
/// guest's known IPv4 addresses; `console_log` is its serial console file.
pub async fn check(
    probes: &[ReadinessProbe],
    running: bool,
    addresses: &[String],
    console_log: &Path,
) -> Readiness {
    if !running {
        return Readiness {
            ready: false,
            probes: probes
                .iter()
                .map(|p| failed(p, "vm is not running".into()))
                .collect(),
        };
    }
    let mut results = Vec::with_capacity(probes.len());
    for probe in probes {
        let result = match probe {
            ReadinessProbe::CloudInit => {
                // The log may not exist yet right after start.
                let console = tokio::fs::read(console_log).await.unwrap_or_default();
                if cloud_init_finished(&String::from_utf8_lossy(&console)) {
                    passed(probe)
                } else {
                    failed(probe, "cloud-init has not finished".into())
                }
            }
            ReadinessProbe::Tcp { port } => {
                first_ok(probe, addresses, |host| tcp_probe(host, *port)).await
            }
            ReadinessProbe::Http { port, path } => {
                first_ok(probe, addresses, |host| http_probe(host, *port, path)).await
            }
        };
        results.push(result);
    }
    Readiness {
        ready: results.iter().all(|r| r.ok),
        probes: results,
    }
}

async fn first_ok<'a, F, Fut>(
    probe: &ReadinessProbe,
    addresses: &'a [String],
    run: F,
) -> ProbeResult
where
    F: Fn(&'a str) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    if addresses.is_empty() {
        return failed(probe, "no guest address known yet".into());
    }
    let mut last = String::new();
    for address in addresses {
        match run(address).await {
            Ok(()) => return passed(probe),
            Err(e) => last = format!("{address}: {e}"),
        }
    }
    failed(probe, last)
}

fn passed(probe: &ReadinessProbe) -> ProbeResult {
    ProbeResult {
        probe: probe.clone(),
        ok: true,
        detail: None,
    }
}

fn failed(probe: &ReadinessProbe, detail: String) -> ProbeResult {
    ProbeResult {
        probe: probe.clone(),
        ok: false,
        detail: Some(detail),
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

/// Succeeds when `GET path` on `host:port` answers with a 2xx or 3xx status.
pub async fn http_probe(host: &str, port: u16, path: &str) -> Result<(), String> {
    let exchange = async {
        let mut stream = TcpStream::connect((host, port))
            .await
            .map_err(|e| e.to_string())?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: decloud-node-agent\r\nConnection: close\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        // The status line fits in the first bytes; the body does not matter.
        let mut head = vec![0u8; 256];
        let mut filled = 0;
        while filled < head.len() && !head[..filled].contains(&b'\n') {
            let n = stream
                .read(&mut head[filled..])
                .await
                .map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        let head = String::from_utf8_lossy(&head[..filled]);
        let status_line = head.lines().next().unwrap_or_default();
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("not an HTTP response: {status_line:?}"))?;
        if (200..400).contains(&status) {
            Ok(())
        } else {
            Err(format!("HTTP status {status}"))
        }
    };
    timeout(PROBE_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| Err("request timed out".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn http_server(status: &'static str) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = socket.read(&mut buf).await;
                let _ = socket
                    .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        port
    }

    #[tokio::test]
    async fn probes_check_real_sockets_and_the_console() {
        let ok = http_server("200 OK").await;
        let broken = http_server("503 Service Unavailable").await;
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
        let probes = vec![
            ReadinessProbe::CloudInit,
            ReadinessProbe::Tcp { port: ok },
            ReadinessProbe::Http {
                port: ok,
                path: "/health".into(),
            },
        ];
        let readiness = check(&probes, true, &here, &console).await;
        assert!(readiness.ready, "{readiness:?}");

        let bad = vec![
            ReadinessProbe::Tcp { port: closed },
            ReadinessProbe::Http {
                port: broken,
                path: "/".into(),
            },
        ];
        let readiness = check(&bad, true, &here, &console).await;
        assert!(!readiness.ready);
        assert!(readiness.probes.iter().all(|p| !p.ok));
        assert!(
            readiness.probes[1]
                .detail
                .as_deref()
                .unwrap()
                .contains("503")
        );

        let readiness = check(&probes, true, &[], &dir.path().join("missing.log")).await;
        assert!(!readiness.ready);
        assert_eq!(
            readiness.probes[1].detail.as_deref(),
            Some("no guest address known yet")
        );
        assert!(!check(&[], false, &here, &console).await.ready);
        assert!(check(&[], true, &here, &console).await.ready);
    }

    #[test]
    fn cloud_init_marker_needs_the_final_message() {
        assert!(!cloud_init_finished(
            "Cloud-init v. 22.4.2 running 'modules:final'"
        ));
        assert!(cloud_init_finished("Cloud-init v. 22.4.2 finished at Sat"));
    }
}

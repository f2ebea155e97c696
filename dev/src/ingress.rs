//! The local network's HTTPS ingress: a Caddy of its own (admin API on a free loopback port,
//! HTTPS on `--ingress-port`, storage and local CA in a temp directory), which the node agent
//! drives and whose domain the orchestrator names VMs' HTTP ports under. Without `caddy` on
//! `PATH` the network runs without names, and says so.

use std::{
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use decloud_sdk::{
    Error,
    dev::{BoxFuture, DevContext, DevIngress, DevService},
};

/// The domain names live under: `*.localhost` resolves to this machine in browsers and curl.
pub(crate) const DEV_DOMAIN: &str = "apps.decloud.localhost";

/// Caddy for the local network.
#[derive(Debug)]
pub(crate) struct IngressService {
    ip: IpAddr,
    https_port: u16,
    child: Option<Child>,
    dir: Option<PathBuf>,
}

impl IngressService {
    /// HTTPS on `ip:https_port` (0 picks a free port).
    pub(crate) fn new(ip: IpAddr, https_port: u16) -> Self {
        Self {
            ip,
            https_port,
            child: None,
            dir: None,
        }
    }
}

fn free_port(ip: IpAddr) -> Result<u16, Error> {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::Tool(format!("ingress: no free port on {ip}: {e}")))
}

impl DevService for IngressService {
    fn name(&self) -> &'static str {
        "ingress"
    }

    fn start<'a>(&'a mut self, ctx: &'a mut DevContext) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let tool = |e: &dyn std::fmt::Display| Error::Tool(format!("ingress: {e}"));
            if Command::new("caddy")
                .arg("version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_err()
            {
                ctx.warnings.push(
                    "No caddy on PATH: VMs' HTTP ports get no HTTPS names (scripts/setup installs caddy).".into(),
                );
                return Ok(());
            }
            let dir =
                std::env::temp_dir().join(format!("decloud-dev-caddy-{}", std::process::id()));
            std::fs::create_dir_all(&dir).map_err(|e| tool(&e))?;
            self.dir = Some(dir.clone());
            let loopback = IpAddr::from([127, 0, 0, 1]);
            let admin = SocketAddr::new(loopback, free_port(loopback)?);
            let port = match self.https_port {
                0 => free_port(self.ip)?,
                port => port,
            };
            let storage = dir.join("storage");
            let config = format!(
                r#"{{"admin":{{"listen":"{admin}"}},"storage":{{"module":"file_system","root":"{}"}},"apps":{{"pki":{{"certificate_authorities":{{"local":{{"install_trust":false}}}}}}}}}}"#,
                storage.display()
            );
            let config_path = dir.join("caddy.json");
            std::fs::write(&config_path, config).map_err(|e| tool(&e))?;
            let log = std::fs::File::create(dir.join("caddy.log")).map_err(|e| tool(&e))?;
            let child = Command::new("caddy")
                .arg("run")
                .arg("--config")
                .arg(&config_path)
                .env("HOME", &dir)
                .env("XDG_DATA_HOME", dir.join("data"))
                .env("XDG_CONFIG_HOME", dir.join("config"))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(|e| tool(&format!("cannot start caddy: {e}")))?;
            self.child = Some(child);
            let deadline = Instant::now() + Duration::from_secs(20);
            while TcpStream::connect(admin).is_err() {
                if Instant::now() > deadline {
                    return Err(tool(&format!(
                        "caddy's admin API did not answer on {admin}; its log: {}",
                        dir.join("caddy.log").display()
                    )));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let listen = SocketAddr::new(self.ip, port);
            tracing::info!(target: "decloud::dev", %admin, %listen, domain = DEV_DOMAIN, "ingress (caddy) is running");
            ctx.ingress = Some(DevIngress {
                admin: admin.to_string(),
                listen: listen.to_string(),
                domain: DEV_DOMAIN.into(),
            });
            ctx.endpoints.push((
                "ingress (HTTPS names)".into(),
                format!("https://<name>.{DEV_DOMAIN}:{port}/"),
            ));
            // The orchestrator's DNS server for the domain stays off: *.localhost needs none.
            ctx.endpoints.push((
                "ingress DNS".into(),
                "off: *.localhost resolves to this machine without it".into(),
            ));
            ctx.endpoints.push((
                "ingress CA (Caddy's)".into(),
                storage
                    .join("pki/authorities/local/root.crt")
                    .display()
                    .to_string(),
            ));
            Ok(())
        })
    }

    fn stop(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            if let Some(dir) = self.dir.take() {
                let _ = std::fs::remove_dir_all(dir);
            }
        })
    }
}

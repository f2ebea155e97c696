//! A real Caddy process for a test: its admin API and HTTPS listener on free loopback ports,
//! its own storage (so its local CA is its own) and its own config directories; killed and
//! removed when dropped.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

/// A running Caddy.
pub struct Caddy {
    child: Child,
    dir: tempfile::TempDir,
    /// `127.0.0.1:port` of the admin API.
    pub admin: String,
    /// Port the node's HTTPS server is told to listen on.
    pub https_port: u16,
}

/// A loopback port nothing listens on right now, below the kernel's ephemeral range (so no
/// outgoing connection of a parallel test can be holding it when Caddy binds it later).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id()
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
    for _ in 0..1000 {
        let n = seed.wrapping_add(NEXT.fetch_add(7919, Ordering::Relaxed));
        let port = 20000 + (n % 12000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between 20000 and 32000");
}

impl Caddy {
    /// Starts Caddy and waits until its admin API answers.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("decloud-caddy-test-")
            .tempdir()
            .unwrap();
        let admin = format!("127.0.0.1:{}", free_port());
        let https_port = free_port();
        let child = Self::spawn(dir.path(), &admin);
        let caddy = Self {
            child,
            dir,
            admin,
            https_port,
        };
        caddy.wait_for_admin();
        caddy
    }

    /// Kills Caddy and starts it again with its initial configuration only (as a Caddy
    /// restarted without `--resume` would be), on the same ports and storage.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(self.dir.path(), &self.admin);
        self.wait_for_admin();
    }

    fn spawn(dir: &std::path::Path, admin: &str) -> Child {
        let config = json!({
            "admin": { "listen": admin },
            "storage": { "module": "file_system", "root": dir.join("storage") },
            // The test's CA stays out of the host's trust store.
            "apps": { "pki": { "certificate_authorities": { "local": { "install_trust": false } } } },
        });
        let config_path = dir.join("caddy.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("caddy.log"))
            .unwrap();
        Command::new("caddy")
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .env("HOME", dir)
            .env("XDG_DATA_HOME", dir.join("data"))
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("ingress tests need caddy (scripts/setup installs it): {e}"))
    }

    fn wait_for_admin(&self) {
        let caddy = self;
        let deadline = Instant::now() + Duration::from_secs(20);
        while caddy.try_config().is_none() {
            assert!(
                Instant::now() < deadline,
                "caddy's admin API did not answer; log:\n{}",
                caddy.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn try_config(&self) -> Option<Value> {
        let output = Command::new("curl")
            .args(["-sf", &format!("http://{}/config/", self.admin)])
            .output()
            .ok()?;
        output
            .status
            .success()
            .then(|| serde_json::from_slice(&output.stdout).ok())
            .flatten()
    }

    /// Caddy's whole configuration, read through its admin API.
    pub fn config(&self) -> Value {
        self.try_config().expect("caddy's admin API answers")
    }

    /// Sends `body` with `method` to the admin API `path`; panics unless Caddy accepts it.
    pub fn admin_request(&self, method: &str, path: &str, body: Option<&Value>) {
        let mut command = Command::new("curl");
        command.args([
            "-sS",
            "-f",
            "-X",
            method,
            &format!("http://{}{path}", self.admin),
        ]);
        if let Some(body) = body {
            command.args([
                "-H",
                "Content-Type: application/json",
                "-d",
                &body.to_string(),
            ]);
        }
        let output = command.output().unwrap();
        assert!(
            output.status.success(),
            "{method} {path}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The root certificate of Caddy's local CA (exists once it issued a certificate).
    pub fn root_certificate(&self) -> PathBuf {
        self.dir
            .path()
            .join("storage/pki/authorities/local/root.crt")
    }

    /// Caddy's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("caddy.log")).unwrap_or_default()
    }

    /// The ingress section of an agent's config file for this Caddy.
    pub fn ingress_toml(&self) -> String {
        format!(
            "[ingress]\nadmin = \"{}\"\nlisten = \"127.0.0.1:{}\"\ntls = \"internal\"\n",
            self.admin, self.https_port
        )
    }

    /// `GET https://host/path` through Caddy's HTTPS port with curl, trusting only Caddy's
    /// local CA: (HTTP status, body), or curl's error.
    pub fn https_get(&self, host: &str, path: &str) -> Result<(u16, String), String> {
        let output = Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "10",
                "--resolve",
                &format!("{host}:{}:127.0.0.1", self.https_port),
                "--cacert",
            ])
            .arg(self.root_certificate())
            .args([
                "-w",
                "\n%{http_code}",
                &format!("https://{host}:{}{path}", self.https_port),
            ])
            .output()
            .map_err(|e| e.to_string())?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).into_owned());
        }
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let (body, status) = text.rsplit_once('\n').ok_or("no status")?;
        Ok((
            status.trim().parse().map_err(|_| "bad status")?,
            body.to_owned(),
        ))
    }
}

impl Drop for Caddy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

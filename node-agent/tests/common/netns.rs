//! Network namespace helpers for tests that build their own topology (relays, NAT routers,
//! clients): running commands inside a namespace, and a Caddy living in one. Shared with the
//! orchestrator's relay test (included there by path), so it depends on nothing else here.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// Runs `program` with `args`: its stdout, or an error naming the command and its stderr.
pub fn sh(program: &str, args: &[&str]) -> Result<String, String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// [`sh`], panicking on failure.
pub fn must(program: &str, args: &[&str]) -> String {
    sh(program, args).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `args` inside the namespace `ns`.
pub fn in_ns(ns: &str, args: &[&str]) -> Result<String, String> {
    let mut all = vec!["netns", "exec", ns];
    all.extend(args);
    sh("ip", &all)
}

/// Caddy inside a namespace, its admin API on the namespace's loopback and its own storage
/// (so its local CA is its own); killed when dropped.
pub struct NsCaddy {
    child: Child,
    dir: tempfile::TempDir,
}

impl NsCaddy {
    /// The admin API's address inside the namespace.
    pub const ADMIN: &'static str = "127.0.0.1:2019";

    /// Starts Caddy in `namespace` and waits for its admin API.
    pub fn start(namespace: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("decloud-relay-caddy-")
            .tempdir()
            .unwrap();
        let config = serde_json::json!({
            "admin": { "listen": Self::ADMIN },
            "storage": { "module": "file_system", "root": dir.path().join("storage") },
            "apps": { "pki": { "certificate_authorities": { "local": { "install_trust": false } } } },
        });
        let config_path = dir.path().join("caddy.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let log = std::fs::File::create(dir.path().join("caddy.log")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", namespace, "caddy", "run", "--config"])
            .arg(&config_path)
            .env("HOME", dir.path())
            .env("XDG_DATA_HOME", dir.path().join("data"))
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("relay tests need caddy (scripts/setup installs it)");
        let caddy = Self { child, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while in_ns(
            namespace,
            &["curl", "-sf", &format!("http://{}/config/", Self::ADMIN)],
        )
        .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "caddy did not start: {}",
                caddy.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        caddy
    }

    /// The root certificate of Caddy's local CA (made when it first issues one).
    pub fn root_certificate(&self) -> PathBuf {
        self.dir
            .path()
            .join("storage/pki/authorities/local/root.crt")
    }

    /// What Caddy logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("caddy.log")).unwrap_or_default()
    }
}

impl Drop for NsCaddy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

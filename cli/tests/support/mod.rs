//! Running the real `decloud` binary against a [`TestSystem`]: a deployments directory holding
//! the system's record, a private configuration directory, one anvil account per role.
#![allow(dead_code, unreachable_pub)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use alloy::primitives::hex;
use decloud_sdk::testing::TestSystem;
use serde_json::Value;

/// Variables of the caller's environment that would change what the binary does.
const ENV_TO_CLEAR: &[&str] = &[
    "DECLOUD_PRIVATE_KEY",
    "DECLOUD_KEYSTORE",
    "DECLOUD_KEYSTORE_PASSWORD",
    "DECLOUD_NETWORK",
    "DECLOUD_RPC_URL",
    "DECLOUD_ORCHESTRATOR",
    "DECLOUD_DEPLOYMENTS_DIR",
    "DECLOUD_CONFIG",
];

/// A system under test plus the files the CLI needs.
pub struct Cli {
    /// anvil with everything deployed.
    pub system: TestSystem,
    /// networks.toml and 31337.json.
    pub deployments: tempfile::TempDir,
    /// XDG_CONFIG_HOME of every invocation.
    pub config_home: tempfile::TempDir,
    /// The orchestrator URL passed to every invocation, when set.
    pub orchestrator: Option<String>,
}

/// What one invocation did.
#[derive(Debug)]
pub struct Run {
    /// Exit code.
    pub code: Option<i32>,
    /// stdout.
    pub stdout: String,
    /// stderr.
    pub stderr: String,
}

impl Run {
    /// Asserts success and parses stdout as one JSON document.
    pub fn json(&self) -> Value {
        assert_eq!(self.code, Some(0), "failed: {self:#?}");
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {self:#?}"))
    }

    /// Asserts failure and returns stderr.
    pub fn failure(&self) -> &str {
        assert_ne!(self.code, Some(0), "unexpectedly succeeded: {self:#?}");
        assert!(self.code.is_some(), "killed: {self:#?}");
        &self.stderr
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Self {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Cli {
    /// Starts anvil with the system deployed and writes its deployment record.
    pub async fn start() -> Self {
        let system = TestSystem::start().await.expect("the test system starts");
        let deployments = tempfile::tempdir().unwrap();
        let networks = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deployments/networks.toml");
        std::fs::copy(networks, deployments.path().join("networks.toml")).unwrap();
        system.deployment.save(deployments.path()).unwrap();
        Self {
            system,
            deployments,
            config_home: tempfile::tempdir().unwrap(),
            orchestrator: None,
        }
    }

    /// The command `decloud ARGS` as anvil account `account`, stdin not a terminal.
    pub fn command(&self, account: usize, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_decloud"));
        cmd.args(args)
            .arg("--network")
            .arg("anvil")
            .arg("--rpc-url")
            .arg(self.system.rpc_url().as_str())
            .arg("--deployments-dir")
            .arg(self.deployments.path())
            .env("XDG_CONFIG_HOME", self.config_home.path())
            .env("DECLOUD_LOG", "warn")
            .stdin(Stdio::null());
        if let Some(url) = &self.orchestrator {
            cmd.arg("--orchestrator").arg(url);
        }
        for var in ENV_TO_CLEAR {
            cmd.env_remove(var);
        }
        let key = hex::encode_prefixed(self.system.signer(account).to_bytes());
        cmd.env("DECLOUD_PRIVATE_KEY", key);
        cmd
    }

    /// Runs `decloud ARGS` as `account` and waits for it.
    pub fn run(&self, account: usize, args: &[&str]) -> Run {
        self.command(account, args).output().unwrap().into()
    }

    /// Runs `decloud ARGS --yes --json` as `account`; it must succeed with one JSON document.
    pub fn ok(&self, account: usize, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["--yes", "--json"]);
        self.run(account, &all).json()
    }

    /// Runs `decloud ARGS` as `account` on a pseudo-terminal (util-linux `script`), typing
    /// `input`; stdout holds everything the terminal showed.
    pub fn on_terminal(&self, account: usize, args: &[&str], input: &str) -> Run {
        use std::io::Write as _;
        let inner = self.command(account, args);
        let quote =
            |s: &std::ffi::OsStr| format!("'{}'", s.to_string_lossy().replace('\'', "'\\''"));
        let line = std::iter::once(quote(inner.get_program()))
            .chain(inner.get_args().map(quote))
            .collect::<Vec<_>>()
            .join(" ");
        let mut cmd = Command::new("script");
        cmd.args(["-q", "-e", "-c", &line, "/dev/null"]);
        for (key, value) in inner.get_envs() {
            match value {
                Some(value) => cmd.env(key, value),
                None => cmd.env_remove(key),
            };
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("script (util-linux) runs");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap().into()
    }

    /// The directory the sessions file lives in.
    pub fn decloud_config_dir(&self) -> PathBuf {
        self.config_home.path().join("decloud")
    }
}

/// The exact micro-USDC of a money field of a JSON report.
pub fn micro(value: &Value) -> u64 {
    value["micro_usdc"]
        .as_str()
        .unwrap_or_else(|| panic!("not a money field: {value}"))
        .parse()
        .unwrap()
}

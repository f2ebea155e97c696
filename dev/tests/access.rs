//! A tenant reaches and logs into the VM they rent, end to end and on real parts: `decloud-dev`
//! with its node agent on QEMU guests (libvirt's system connection, the agent's NAT network,
//! iptables forwards), and the `decloud` CLI as the tenant. The tenant opens a lease with an SSH
//! key; the test logs in with OpenSSH through the forwarded port at the node's public address,
//! then with the password the tenant's wallet unseals; stop, start and reboot; closing the lease
//! deletes the VM and its forwarding rules.
//!
//! CI runs it on the busybox test guest (dropbear serves its SSH, set up from the same user-data
//! cloud-init would read); `scripts/test --long` runs it on the Debian 12 guest image
//! (`scripts/guest-image`), which boots under software emulation in minutes.
//!
//! Needs root (libvirt's system connection, iptables), libvirtd running, and `decloud` built
//! beside `decloud-dev` (`cargo test --workspace` builds both).

use std::{
    io::{BufRead as _, BufReader},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

/// The disk each lease asks for: the shadowsocks seed template's minimum. The node registers
/// the free space of its disk as its capacity, so the CLI's default of 10 GiB would fail with
/// `InsufficientCapacity` on a host whose disk is nearly full, while the guests need far less.
const LEASE_DISK_GIB: &str = "5";

/// The guest a run boots.
struct Guest {
    /// A directory in the layout of `scripts/guest-image` (image.toml naming disk, kernel,
    /// initramfs and command line).
    image_dir: PathBuf,
    /// How long a boot may take until SSH answers.
    boot: Duration,
    /// The node agent's `--agent-shutdown-timeout` for this guest.
    shutdown_timeout_secs: u64,
    /// Which of anvil's accounts operates the node. The node id comes from the machine id and
    /// the operator, and forwarding rules carry it: each guest's test has a node of its own, so
    /// they can run at once beside another `decloud dev` (whose operator is account 1).
    operator_account: usize,
    _temp: Option<tempfile::TempDir>,
}

impl Guest {
    /// The busybox test guest: the host's kernel, an initramfs with busybox and dropbear, and an
    /// empty disk.
    fn busybox() -> Self {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path();
        let kernel = decloud_node_agent::test_guest::find_kernel().unwrap();
        let release = decloud_node_agent::test_guest::kernel_release(&kernel).unwrap();
        let initrd = dir.join("initrd.img");
        decloud_node_agent::test_guest::build_initramfs(&release, &initrd).unwrap();
        let disk = dir.join("disk.qcow2");
        decloud_node_agent::create_blank_qcow2(&disk, 64).unwrap();
        std::fs::write(
            dir.join("image.toml"),
            format!(
                "[images.busybox]\nbase = \"{}\"\nkernel = \"{}\"\ninitrd = \"{}\"\ncmdline = \"{}\"\n",
                disk.display(),
                kernel.display(),
                initrd.display(),
                decloud_node_agent::test_guest::CMDLINE,
            ),
        )
        .unwrap();
        // The agent's QEMU (run by libvirtd as its own user) must read them.
        let _ = Command::new("chmod").args(["-R", "a+rX"]).arg(dir).status();
        Self {
            image_dir: dir.to_path_buf(),
            boot: Duration::from_secs(240),
            // It ignores the ACPI power button: every stop waits the whole timeout.
            shutdown_timeout_secs: 5,
            operator_account: 3,
            _temp: Some(temp),
        }
    }

    /// The Debian 12 image: `$DECLOUD_GUEST_IMAGE` (set by `scripts/test --long`), else built
    /// (or reused from the cache) by `scripts/guest-image`.
    fn debian() -> Self {
        let image_dir = match std::env::var_os("DECLOUD_GUEST_IMAGE") {
            Some(dir) => PathBuf::from(dir),
            None => {
                let script = repo_root().join("scripts/guest-image");
                let out = Command::new(&script)
                    .stderr(Stdio::inherit())
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{} failed", script.display());
                PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
            }
        };
        Self {
            image_dir,
            // cloud-init's first boot under TCG on a busy 2-core machine.
            boot: Duration::from_secs(900),
            // What `decloud dev` gives a real OS: time to shut down cleanly under emulation.
            shutdown_timeout_secs: 60,
            operator_account: 4,
            _temp: None,
        }
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `decloud-dev` running, stopped (SIGTERM, which deletes its VMs) when dropped.
struct Dev {
    child: Child,
    rpc_url: String,
    orchestrator_url: String,
    deployments: tempfile::TempDir,
    node_id: String,
    tenant_key: String,
    /// Anvil's account 1: publishes a template (it neither rents nor operates here).
    author_key: String,
    log: PathBuf,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = self.child.kill();
    }
}

fn start_dev(guest: &Guest, logs: &Path) -> Dev {
    let deployments = tempfile::tempdir().unwrap();
    let (chain, orchestrator) = (free_port(), free_port());
    let log = logs.join("decloud-dev.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_decloud-dev"))
        .args(["--accounts", "5", "--no-indexer"])
        .args([
            "--agent-operator-account",
            &guest.operator_account.to_string(),
        ])
        .args(["--port", &chain.to_string()])
        .args(["--orchestrator-port", &orchestrator.to_string()])
        .arg("--deployments-dir")
        .arg(deployments.path())
        .args(["--agent-libvirt-uri", "qemu:///system"])
        .args([
            "--agent-shutdown-timeout",
            &guest.shutdown_timeout_secs.to_string(),
        ])
        .arg("--agent-image")
        .arg(&guest.image_dir)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let done = line.starts_with("Press Ctrl-C");
            lines.push(line);
            if done {
                break;
            }
        }
        lines
    });
    let started = Instant::now();
    while !reader.is_finished() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "decloud dev exited early with {status}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        if started.elapsed() > Duration::from_secs(300) {
            let _ = child.kill();
            panic!("decloud dev did not come up; its log: {}", log.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let summary = reader.join().unwrap().join("\n");
    let node_id = summary
        .lines()
        .find_map(|l| l.trim().strip_prefix("node id"))
        .unwrap_or_else(|| panic!("no node id in {summary}"))
        .trim()
        .to_owned();
    // "  (2) 0xADDRESS 0xKEY": anvil's account 2 rents (another one operates the node).
    let tenant_key = summary
        .lines()
        .find_map(|l| l.trim().strip_prefix("(2) "))
        .and_then(|rest| rest.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("no account 2 in {summary}"))
        .to_owned();
    let author_key = summary
        .lines()
        .find_map(|l| l.trim().strip_prefix("(1) "))
        .and_then(|rest| rest.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("no account 1 in {summary}"))
        .to_owned();
    Dev {
        child,
        rpc_url: format!("http://127.0.0.1:{chain}"),
        orchestrator_url: format!("http://127.0.0.1:{orchestrator}"),
        deployments,
        node_id,
        tenant_key,
        author_key,
        log,
    }
}

/// A user's `decloud` (the tenant's, or the template author's), with a config home of its own.
struct Tenant<'a> {
    dev: &'a Dev,
    private_key: &'a str,
    config_home: tempfile::TempDir,
}

impl Tenant<'_> {
    fn run(&self, args: &[&str]) -> Output {
        let decloud = Path::new(env!("CARGO_BIN_EXE_decloud-dev")).with_file_name("decloud");
        assert!(
            decloud.exists(),
            "{} is missing: build it with `cargo build -p decloud-cli`",
            decloud.display()
        );
        Command::new(decloud)
            .args(args)
            .args(["--network", "anvil", "--rpc-url", &self.dev.rpc_url])
            .arg("--deployments-dir")
            .arg(self.dev.deployments.path())
            .args(["--orchestrator", &self.dev.orchestrator_url])
            .env("XDG_CONFIG_HOME", self.config_home.path())
            .env("DECLOUD_PRIVATE_KEY", self.private_key)
            .env("DECLOUD_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `decloud ARGS --yes --json`, which must succeed.
    fn ok(&self, args: &[&str]) -> Value {
        let out = self.run(&[args, &["--yes", "--json"]].concat());
        assert!(
            out.status.success(),
            "decloud {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "decloud {args:?} printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Polls `decloud vm show` until `done` accepts it (the VM appears once the orchestrator has
    /// seen the lease's opening on chain).
    fn wait_for_vm(
        &self,
        vm: &str,
        what: &str,
        bound: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + bound;
        loop {
            let out = self.run(&["vm", "show", vm, "--json"]);
            let shown: Value = if out.status.success() {
                serde_json::from_slice(&out.stdout).unwrap()
            } else {
                Value::String(String::from_utf8_lossy(&out.stderr).into_owned())
            };
            if done(&shown) {
                return shown;
            }
            assert_ne!(
                shown["state"],
                "failed",
                "vm {vm} failed instead of becoming {what}: {shown}; see {}",
                self.dev.log.display()
            );
            assert!(
                Instant::now() < deadline,
                "vm {vm} never became {what}: {shown}; see {}",
                self.dev.log.display()
            );
            std::thread::sleep(Duration::from_secs(2));
        }
    }
}

/// How the test logs in.
enum Login<'a> {
    Key(&'a Path),
    Password(&'a Path),
}

/// Runs `command` on the guest over SSH; `None` when the login or the command fails.
fn ssh(address: &str, port: u16, user: &str, login: &Login<'_>, command: &str) -> Option<String> {
    ssh_attempt(address, port, user, login, command).ok()
}

/// [`ssh`], with what ssh printed when it fails.
fn ssh_attempt(
    address: &str,
    port: u16,
    user: &str,
    login: &Login<'_>,
    command: &str,
) -> Result<String, String> {
    let mut cmd = Command::new("ssh");
    cmd.args([
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
    ])
    .args(["-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR"])
    .args(["-p", &port.to_string()])
    .stdin(Stdio::null());
    match login {
        Login::Key(key) => {
            cmd.args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i"])
                .arg(key);
        }
        Login::Password(askpass) => {
            // OpenSSH asks SSH_ASKPASS for the password when forced to: no terminal needed.
            cmd.args(["-o", "PubkeyAuthentication=no"])
                .args([
                    "-o",
                    "PreferredAuthentications=password,keyboard-interactive",
                ])
                .env("SSH_ASKPASS", askpass)
                .env("SSH_ASKPASS_REQUIRE", "force")
                .env("DISPLAY", ":0");
        }
    }
    let out = cmd
        .arg(format!("{user}@{address}"))
        .arg(command)
        .output()
        .map_err(|e| format!("cannot run ssh: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Retries [`ssh`] until it answers (the guest boots, or comes back after a stop or reboot);
/// past `bound`, fails with ssh's last error and what `diagnose` gathers.
fn ssh_until(
    address: &str,
    port: u16,
    user: &str,
    login: &Login<'_>,
    command: &str,
    bound: Duration,
    diagnose: &dyn Fn() -> String,
) -> String {
    let deadline = Instant::now() + bound;
    loop {
        let error = match ssh_attempt(address, port, user, login, command) {
            Ok(out) => return out,
            Err(error) => error,
        };
        assert!(
            Instant::now() < deadline,
            "ssh -p {port} {user}@{address} {command:?} never succeeded; the last attempt: {error}\n{}",
            diagnose()
        );
        std::thread::sleep(Duration::from_secs(3));
    }
}

/// What a failed login needs explained: the host's forwarding rules and addresses, the agent's
/// network, the guest's serial console and the end of `decloud dev`'s log.
fn diagnostics(dev: &Dev, vm: &str) -> String {
    let run = |program: &str, args: &[&str]| -> String {
        match Command::new(program).args(args).output() {
            Ok(out) => format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => format!("cannot run {program}: {e}"),
        }
    };
    let rules: String = iptables_rules()
        .lines()
        .filter(|l| l.contains("DECLOUD"))
        .map(|l| format!("{l}\n"))
        .collect();
    // The agent of `decloud dev` keeps each VM's serial console under its temporary data
    // directory; the newest such file of this VM id is this run's.
    let console = std::fs::read_dir(std::env::temp_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("decloud-dev-agent-")
        })
        .map(|e| e.path().join("data/vms").join(vm).join("console.log"))
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .max()
        .map(|(_, p)| std::fs::read_to_string(&p).unwrap_or_default())
        .unwrap_or_else(|| "(no console log found)".into());
    let log = std::fs::read_to_string(&dev.log).unwrap_or_default();
    let log_tail: Vec<&str> = log.lines().rev().take(80).collect();
    format!(
        "--- forwarding rules\n{rules}--- addresses\n{}--- network\n{}--- {vm}'s console\n{}\n--- the end of decloud dev's log\n{}",
        run("ip", &["-br", "addr"]),
        run(
            "virsh",
            &["-c", "qemu:///system", "net-dumpxml", "decloud-dev"]
        ),
        console
            .lines()
            .rev()
            .take(60)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n"),
        log_tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
    )
}

fn iptables_rules() -> String {
    let out = Command::new("iptables-save").output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The tenant's whole journey on one VM; `and_then` continues on the same `decloud dev` with
/// the tenant and their SSH key.
fn tenant_reaches_and_logs_into_the_vm(guest: &Guest, and_then: impl FnOnce(&Tenant<'_>, &Path)) {
    let temp = tempfile::tempdir().unwrap();
    let key = temp.path().join("id_ed25519");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "tenant@test", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(made.success());
    let public_key = key.with_extension("pub");

    let dev = start_dev(guest, temp.path());
    let tenant = Tenant {
        dev: &dev,
        private_key: &dev.tenant_key,
        config_home: tempfile::tempdir().unwrap(),
    };
    tenant.ok(&["login"]);
    tenant.ok(&["deposit", "20"]);
    let opened = tenant.ok(&[
        "lease",
        "open",
        "--node",
        &dev.node_id,
        "--funding",
        "5",
        "--storage",
        LEASE_DISK_GIB,
        "--ssh-key",
        public_key.to_str().unwrap(),
        "--port",
        "80/tcp",
    ]);
    let opened_at = Instant::now();
    let lease = opened["lease"].as_str().unwrap().to_owned();
    let vm = format!("vm-{lease}");

    // Running, with port 22 forwarded at the node's public address.
    let shown = tenant.wait_for_vm(&vm, "running with port 22 forwarded", guest.boot, |v| {
        v["state"] == "running"
            && v["access"]["forwards"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f["guest"] == 22))
    });
    let access = &shown["access"];
    let address = access["public_address"]
        .as_str()
        .unwrap_or_else(|| panic!("the node reported no public address: {shown}"))
        .to_owned();
    let public = |guest_port: u16| -> u16 {
        let forward = access["forwards"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["guest"] == guest_port)
            .unwrap_or_else(|| panic!("guest port {guest_port} is not forwarded: {shown}"));
        u16::try_from(forward["public"].as_u64().unwrap()).unwrap()
    };
    let ssh_port = public(22);
    assert_ne!(public(80), ssh_port, "{shown}");
    let user = access["login_user"].as_str().unwrap().to_owned();
    assert!(
        access["ssh_command"]
            .as_str()
            .is_some_and(|c| c.contains(&format!("-p {ssh_port}")) && c.contains(&address)),
        "{shown}"
    );

    // In with the key the lease was opened with, through the kernel's forward.
    let with_key = Login::Key(&key);
    let answer = ssh_until(
        &address,
        ssh_port,
        &user,
        &with_key,
        "echo in-as-$(id -un)",
        guest.boot,
        &|| diagnostics(&dev, &vm),
    );
    assert_eq!(answer, format!("in-as-{user}"));
    // Reported for scripts/bench-ssh-ready (BENCHMARKS.md), never asserted.
    println!(
        "bench: lease opened -> ssh reachable: {:.1} s",
        opened_at.elapsed().as_secs_f64()
    );

    // In with the password only the tenant's wallet can unseal.
    let credentials = tenant.ok(&["vm", "credentials", &vm]);
    assert_eq!(credentials["user"], user.as_str(), "{credentials}");
    let password = credentials["password"].as_str().unwrap();
    assert!(!password.is_empty());
    let askpass = temp.path().join("askpass");
    std::fs::write(&askpass, format!("#!/bin/sh\necho '{password}'\n")).unwrap();
    let _ = Command::new("chmod").arg("700").arg(&askpass).status();
    let with_password = Login::Password(&askpass);
    assert_eq!(
        ssh(
            &address,
            ssh_port,
            &user,
            &with_password,
            "echo by-password"
        )
        .as_deref(),
        Some("by-password")
    );
    // A wrong password is refused (the login above was not open to anyone).
    let wrong = temp.path().join("wrong");
    std::fs::write(&wrong, "#!/bin/sh\necho not-the-password\n").unwrap();
    let _ = Command::new("chmod").arg("700").arg(&wrong).status();
    assert_eq!(
        ssh(&address, ssh_port, &user, &Login::Password(&wrong), "true"),
        None
    );

    // Stop: the VM goes down and SSH with it; start: back, same forward.
    tenant.ok(&["vm", "stop", &vm]);
    tenant.wait_for_vm(&vm, "stopped", Duration::from_secs(180), |v| {
        v["state"] == "stopped"
    });
    assert_eq!(ssh(&address, ssh_port, &user, &with_key, "true"), None);
    tenant.ok(&["vm", "start", &vm]);
    tenant.wait_for_vm(&vm, "running again", Duration::from_secs(180), |v| {
        v["state"] == "running"
    });
    let diagnose = || diagnostics(&dev, &vm);
    ssh_until(
        &address, ssh_port, &user, &with_key, "true", guest.boot, &diagnose,
    );

    // Reboot: a new boot (its boot id changes), reachable again.
    let boot_id = "cat /proc/sys/kernel/random/boot_id";
    let before = ssh_until(
        &address, ssh_port, &user, &with_key, boot_id, guest.boot, &diagnose,
    );
    tenant.ok(&["vm", "reboot", &vm]);
    let deadline = Instant::now() + guest.boot;
    loop {
        match ssh(&address, ssh_port, &user, &with_key, boot_id) {
            Some(after) if after != before => break,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "the VM never came back from its reboot"
        );
        std::thread::sleep(Duration::from_secs(3));
    }

    // Closing the lease deletes the VM and its forwarding rules (this node's: their comment
    // starts with the first 8 bytes of its id; other agents on the machine have rules too).
    let node_tag = dev.node_id.trim_start_matches("0x")[..16].to_owned();
    let tag = format!("decloud:{node_tag}:{vm}:");
    assert!(iptables_rules().contains(&tag));
    tenant.ok(&["lease", "close", &lease]);
    tenant.wait_for_vm(&vm, "terminated", Duration::from_secs(180), |v| {
        v["state"] == "terminated"
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    while iptables_rules().contains(&tag) {
        assert!(
            Instant::now() < deadline,
            "{vm}'s forwarding rules outlived it"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    assert_eq!(ssh(&address, ssh_port, &user, &with_key, "true"), None);
    and_then(&tenant, &key);
}

/// A template another account published on TemplateMarket (its bundle stored through the
/// orchestrator's drafts, so the orchestrator fetches it by its on-chain CID) deploys on the
/// node: its VM runs, its ports are forwarded, and the tenant logs in with their key.
fn a_template_another_account_published_runs(tenant: &Tenant<'_>, key: &Path, guest: &Guest) {
    let dev = tenant.dev;
    let author = Tenant {
        dev,
        private_key: &dev.author_key,
        config_home: tempfile::tempdir().unwrap(),
    };
    // A bundle no catalog holds: the shadowsocks seed under a name and slug of its own.
    let bundle = tempfile::tempdir().unwrap();
    let seed = repo_root().join("templates/seed/shadowsocks");
    let manifest = std::fs::read_to_string(seed.join("template.toml"))
        .unwrap()
        .replace("slug = \"shadowsocks\"", "slug = \"access-relay\"")
        .replace("name = \"Shadowsocks\"", "name = \"Access relay\"");
    assert!(manifest.contains("access-relay"), "{manifest}");
    std::fs::write(bundle.path().join("template.toml"), manifest).unwrap();
    std::fs::copy(seed.join("user-data"), bundle.path().join("user-data")).unwrap();
    let dir = bundle.path().to_str().unwrap();
    author.ok(&["login"]);
    let draft = author.ok(&["template", "draft", dir]);
    let published = author.ok(&["template", "publish", dir, "--price", "0"]);
    assert_eq!(published["cid"], draft["cid"], "{published} {draft}");
    let template = published["template"].as_str().unwrap().to_owned();

    let opened = tenant.ok(&[
        "lease",
        "open",
        "--node",
        &dev.node_id,
        "--template",
        &template,
        "--funding",
        "5",
        "--storage",
        LEASE_DISK_GIB,
        "--ssh-key",
        key.with_extension("pub").to_str().unwrap(),
    ]);
    let lease = opened["lease"].as_str().unwrap().to_owned();
    let vm = format!("vm-{lease}");
    // The template's port (8388, TCP and UDP) is forwarded beside SSH.
    let shown = tenant.wait_for_vm(&vm, "running with its template's ports", guest.boot, |v| {
        v["state"] == "running"
            && v["access"]["forwards"].as_array().is_some_and(|f| {
                [22, 8388]
                    .iter()
                    .all(|port| f.iter().any(|f| f["guest"] == *port))
            })
    });
    let access = &shown["access"];
    let address = access["public_address"].as_str().unwrap();
    let ssh_port = access["forwards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["guest"] == 22)
        .and_then(|f| f["public"].as_u64())
        .map(|p| u16::try_from(p).unwrap())
        .unwrap();
    let user = access["login_user"].as_str().unwrap();
    let answer = ssh_until(
        address,
        ssh_port,
        user,
        &Login::Key(key),
        "echo in-the-template-vm",
        guest.boot,
        &|| diagnostics(tenant.dev, &vm),
    );
    assert_eq!(answer, "in-the-template-vm");
    tenant.ok(&["lease", "close", &lease]);
}

#[test]
fn tenant_reaches_and_logs_into_a_busybox_guest() {
    let guest = Guest::busybox();
    tenant_reaches_and_logs_into_the_vm(&guest, |tenant, key| {
        a_template_another_account_published_runs(tenant, key, &guest)
    });
}

#[test]
#[ignore = "boots the Debian image under software emulation (minutes): scripts/test --long"]
fn long_tenant_reaches_and_logs_into_a_debian_guest() {
    tenant_reaches_and_logs_into_the_vm(&Guest::debian(), |_, _| {});
}

//! WireGuard in user space: a `wireguard-go` process per interface, configured with `wg` and
//! `ip`. Works where the kernel has no WireGuard module; needs `/dev/net/tun`.

use std::{
    io::Write,
    net::Ipv4Addr,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use decloud_sdk::relay::TunnelKey;

use crate::error::{Error, Result};

/// Directory where `wireguard-go` puts each interface's control socket.
const SOCKET_DIR: &str = "/var/run/wireguard";

/// Runs `program` with `args` (and `stdin`); its stdout.
pub(crate) fn run_tool(
    tool: &'static str,
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Tool {
            tool,
            message: format!("cannot run {program} ({e}); install {tool}"),
        })?;
    if let Some(input) = stdin
        && let Some(mut pipe) = child.stdin.take()
    {
        pipe.write_all(input.as_bytes()).map_err(|e| Error::Tool {
            tool,
            message: format!("{program}: {e}"),
        })?;
    }
    let output = child.wait_with_output().map_err(|e| Error::Tool {
        tool,
        message: format!("{program}: {e}"),
    })?;
    if !output.status.success() {
        return Err(Error::Tool {
            tool,
            message: format!(
                "{program} {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn ip(args: &[&str]) -> Result<String> {
    run_tool("iproute2", "ip", args, None)
}

fn wg(args: &[&str]) -> Result<String> {
    run_tool("wireguard-tools", "wg", args, None)
}

/// A WireGuard key pair whose private half lives in a file of mode 0600 (never logged).
#[derive(Debug, Clone)]
pub struct TunnelKeys {
    /// The private key's file.
    pub private_key_file: PathBuf,
    /// The public key.
    pub public: TunnelKey,
}

impl TunnelKeys {
    /// Loads the key pair in `path`, or makes one there (with `wg genkey`).
    pub fn load_or_create(path: &Path) -> Result<Self> {
        if !path.exists() {
            let private = wg(&["genkey"])?;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| Error::io("creating", path, e))?;
            file.write_all(private.as_bytes())
                .map_err(|e| Error::io("writing", path, e))?;
        }
        let private = std::fs::read_to_string(path).map_err(|e| Error::io("reading", path, e))?;
        let public = run_tool("wireguard-tools", "wg", &["pubkey"], Some(&private))?;
        let public = public.trim().parse().map_err(|_| Error::Tool {
            tool: "wireguard-tools",
            message: format!("wg pubkey gave no key for {}", path.display()),
        })?;
        Ok(Self {
            private_key_file: path.to_owned(),
            public,
        })
    }
}

/// A peer as `wg show <interface> dump` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer's public key.
    pub key: TunnelKey,
    /// Its allowed IPs, as `wg` prints them.
    pub allowed_ips: String,
    /// Unix seconds of the last handshake; 0 when none.
    pub latest_handshake: u64,
    /// Bytes received from the peer.
    pub rx_bytes: u64,
    /// Bytes sent to the peer.
    pub tx_bytes: u64,
}

/// A user-space WireGuard interface; brought down (process ended, device gone) when dropped.
#[derive(Debug)]
pub struct WgInterface {
    name: String,
    child: Child,
}

impl WgInterface {
    /// Brings up interface `name` with the private key in `keys`, listening on `listen_port`
    /// (any free port when absent), with `address`/`prefix` on it.
    pub fn up(
        name: &str,
        keys: &TunnelKeys,
        listen_port: Option<u16>,
        address: Ipv4Addr,
        prefix: u8,
    ) -> Result<Self> {
        if name.is_empty() || name.len() > 15 {
            return Err(Error::Config(format!(
                "interface name {name:?} must have 1 to 15 characters"
            )));
        }
        // A leftover of a process that died without cleaning up.
        let _ = ip(&["link", "del", name]);
        let socket = Path::new(SOCKET_DIR).join(format!("{name}.sock"));
        let _ = std::fs::remove_file(&socket);
        let child = Command::new("wireguard-go")
            .arg("-f")
            .arg(name)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Error::Tool {
                tool: "wireguard-go",
                message: format!("cannot run wireguard-go ({e}); install wireguard-go"),
            })?;
        let mut this = Self {
            name: name.to_owned(),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            if let Ok(Some(status)) = this.child.try_wait() {
                return Err(Error::Tool {
                    tool: "wireguard-go",
                    message: format!(
                        "wireguard-go {name} exited with {status} (is /dev/net/tun there?)"
                    ),
                });
            }
            if Instant::now() > deadline {
                return Err(Error::Tool {
                    tool: "wireguard-go",
                    message: format!("interface {name} did not come up"),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let key_file = keys.private_key_file.to_string_lossy().into_owned();
        let mut args = vec!["set", name, "private-key", key_file.as_str()];
        let port;
        if let Some(listen_port) = listen_port {
            port = listen_port.to_string();
            args.extend(["listen-port", port.as_str()]);
        }
        wg(&args)?;
        ip(&[
            "address",
            "add",
            &format!("{address}/{prefix}"),
            "dev",
            name,
        ])?;
        ip(&["link", "set", name, "up"])?;
        this.child.try_wait().ok();
        Ok(this)
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Adds or replaces a peer: its key, the addresses it may send from and receive
    /// (`allowed`), and, for the dialling side, its endpoint and a keepalive (which also
    /// holds the NAT mapping open).
    pub fn set_peer(
        &self,
        key: &TunnelKey,
        allowed: &str,
        endpoint: Option<&str>,
        keepalive_secs: Option<u16>,
    ) -> Result<()> {
        let key = key.to_string();
        let mut args = vec!["set", self.name.as_str(), "peer", key.as_str()];
        args.extend(["allowed-ips", allowed]);
        if let Some(endpoint) = endpoint {
            args.extend(["endpoint", endpoint]);
        }
        let keepalive;
        if let Some(secs) = keepalive_secs {
            keepalive = secs.to_string();
            args.extend(["persistent-keepalive", keepalive.as_str()]);
        }
        wg(&args).map(drop)
    }

    /// Removes a peer (nothing when it is not there).
    pub fn remove_peer(&self, key: &TunnelKey) -> Result<()> {
        wg(&["set", &self.name, "peer", &key.to_string(), "remove"]).map(drop)
    }

    /// Adds a route to `destination` through the interface.
    pub fn route(&self, destination: &str) -> Result<()> {
        ip(&["route", "replace", destination, "dev", &self.name]).map(drop)
    }

    /// The interface's peers.
    pub fn peers(&self) -> Result<Vec<PeerStatus>> {
        let dump = wg(&["show", &self.name, "dump"])?;
        // The first line is the interface itself.
        Ok(dump
            .lines()
            .skip(1)
            .filter_map(|line| {
                let f: Vec<&str> = line.split('\t').collect();
                Some(PeerStatus {
                    key: f.first()?.parse().ok()?,
                    allowed_ips: (*f.get(3)?).to_owned(),
                    latest_handshake: f.get(4)?.parse().ok()?,
                    rx_bytes: f.get(5)?.parse().ok()?,
                    tx_bytes: f.get(6)?.parse().ok()?,
                })
            })
            .collect())
    }
}

impl Drop for WgInterface {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = ip(&["link", "del", &self.name]);
        let _ = std::fs::remove_file(Path::new(SOCKET_DIR).join(format!("{}.sock", self.name)));
    }
}

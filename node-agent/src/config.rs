//! Configuration: defaults, then a TOML file, then `DECLOUD_AGENT_*` environment variables,
//! then command-line flags, merged by the resolver every DeCloud binary shares
//! ([`decloud_runtime::config`]) in [`Config::resolve`] and nowhere else.

use std::{
    collections::BTreeMap,
    fmt,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    str::FromStr,
};

use alloy::primitives::Address;
use decloud_runtime::config::{EnvVar, Layers};
use serde::{Deserialize, Serialize};

use crate::{
    error::{Error, Result},
    ingress::IngressConfig,
    storage::{StorageConfig, StorageLayer},
};

/// Default libvirt connection.
pub const DEFAULT_LIBVIRT_URI: &str = "qemu:///system";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/decloud-node-agent";
/// Default libvirt NAT network the agent creates and attaches guests to.
pub const DEFAULT_NETWORK_NAME: &str = "decloud";
/// Default subnet of the NAT network when the agent creates it.
pub const DEFAULT_NETWORK_SUBNET: &str = "192.168.123.0/24";
/// Default range of public ports forwarded to guests.
pub const DEFAULT_PUBLIC_PORT_RANGE: &str = "40000-65535";

/// An inclusive range of public ports, written `first-last` (e.g. `40000-65535`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// First port of the range.
    pub first: u16,
    /// Last port of the range (inclusive).
    pub last: u16,
}

impl PortRange {
    /// Every port of the range, lowest first.
    pub fn ports(self) -> std::ops::RangeInclusive<u16> {
        self.first..=self.last
    }

    /// Number of ports in the range.
    pub fn len(self) -> usize {
        usize::from(self.last - self.first) + 1
    }

    /// Never true: a parsed range holds at least one port.
    pub fn is_empty(self) -> bool {
        false
    }
}

impl FromStr for PortRange {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::Config(format!(
                "public port range {s:?} {why}; write it as first-last, e.g. {DEFAULT_PUBLIC_PORT_RANGE}"
            ))
        };
        let (first, last) = s.split_once('-').ok_or_else(|| bad("has no '-'"))?;
        let port = |p: &str| {
            p.trim()
                .parse::<u16>()
                .map_err(|_| bad("holds a value that is not a port number"))
        };
        let (first, last) = (port(first)?, port(last)?);
        if first == 0 {
            return Err(bad("starts at port 0, which cannot be forwarded"));
        }
        if first > last {
            return Err(bad(
                "is inverted (its first port is above its last) and so empty",
            ));
        }
        Ok(Self { first, last })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// An IPv4 subnet written `address/prefix` with the host bits zero, e.g. `192.168.123.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Subnet {
    /// Network address.
    pub network: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
}

impl Ipv4Subnet {
    /// Smallest prefix accepted: a /16 already holds 65,534 guests.
    pub const MIN_PREFIX: u8 = 16;
    /// Largest prefix accepted: a /28 leaves room for the gateway and a few guests.
    pub const MAX_PREFIX: u8 = 28;

    /// Netmask of the prefix.
    pub fn netmask(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::MAX << (32 - u32::from(self.prefix)))
    }

    /// The `n`-th address of the subnet (0 is the network address).
    pub fn nth(self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + n)
    }

    /// Number of addresses, network and broadcast included.
    pub fn size(self) -> u32 {
        1 << (32 - u32::from(self.prefix))
    }

    /// Whether `ip` lies in the subnet.
    pub fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & u32::from(self.netmask()) == u32::from(self.network)
    }
}

impl FromStr for Ipv4Subnet {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: String| {
            Error::Config(format!(
                "network subnet {s:?} {why}; write it as address/prefix, e.g. {DEFAULT_NETWORK_SUBNET}"
            ))
        };
        let (address, prefix) = s
            .split_once('/')
            .ok_or_else(|| bad("has no '/prefix'".into()))?;
        let network: Ipv4Addr = address
            .parse()
            .map_err(|_| bad("does not start with an IPv4 address".into()))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| bad("has a prefix that is not a number".into()))?;
        if !(Self::MIN_PREFIX..=Self::MAX_PREFIX).contains(&prefix) {
            return Err(bad(format!(
                "needs a prefix from /{} to /{}",
                Self::MIN_PREFIX,
                Self::MAX_PREFIX
            )));
        }
        let subnet = Self { network, prefix };
        if u32::from(network) & !u32::from(subnet.netmask()) != 0 {
            return Err(bad("has host bits set (give the network address)".into()));
        }
        Ok(subnet)
    }
}

impl fmt::Display for Ipv4Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Kind of libvirt domain to create.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DomainType {
    /// Hardware virtualisation (production).
    Kvm,
    /// QEMU software emulation (tests, hosts without KVM).
    Qemu,
}

impl DomainType {
    /// The value of `<domain type=…>`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Qemu => "qemu",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        match s {
            "kvm" => Ok(Self::Kvm),
            "qemu" => Ok(Self::Qemu),
            other => Err(Error::Config(format!(
                "domain type must be kvm or qemu, not {other:?}"
            ))),
        }
    }
}

/// Where a VM's NIC is plugged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum NetworkConfig {
    /// A libvirt virtual network (NAT with DHCP); libvirt enforces `<bandwidth>` with tc.
    /// The agent creates it (with `network_subnet`) when it is missing, gives every guest a
    /// fixed DHCP reservation in it, and forwards public ports to guests with iptables.
    Network {
        /// Network name, e.g. `decloud`.
        name: String,
    },
    /// An existing host bridge; libvirt enforces `<bandwidth>` with tc. Guests get their
    /// addresses from the bridge's own network, so the agent forwards no ports.
    Bridge {
        /// Bridge device, e.g. `br0`.
        name: String,
    },
    /// QEMU user-mode networking: needs no host setup. libvirt keeps the `<bandwidth>`
    /// element but cannot enforce it, and the agent forwards no ports: use it for tests and
    /// development only.
    User,
}

/// Who enforces a VM's bandwidth tier on `network` and `bridge` NICs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BandwidthShaping {
    /// The agent, with tc: HTB on the VM's tap device, and on an IFB device its ingress is
    /// redirected to. Needs only HTB, ingress, u32, mirred and IFB in the host kernel.
    Agent,
    /// libvirt, from the domain's `<bandwidth>` element. Its tc setup also needs the `sfq`
    /// qdisc and the `police` action, which minimal host kernels may lack (the domain then
    /// fails to start).
    Libvirt,
}

impl BandwidthShaping {
    fn parse(s: &str) -> Result<Self> {
        match s {
            "agent" => Ok(Self::Agent),
            "libvirt" => Ok(Self::Libvirt),
            other => Err(Error::Config(format!(
                "bandwidth shaping must be agent or libvirt, not {other:?}"
            ))),
        }
    }
}

/// A base image VMs can be created from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageConfig {
    /// qcow2 base disk; each VM gets a copy-on-write overlay on it.
    pub base: PathBuf,
    /// Kernel for direct boot; the disk's boot loader is used when absent.
    #[serde(default)]
    pub kernel: Option<PathBuf>,
    /// Initramfs for direct boot.
    #[serde(default)]
    pub initrd: Option<PathBuf>,
    /// Kernel command line for direct boot.
    #[serde(default)]
    pub cmdline: Option<String>,
}

impl ImageConfig {
    /// Reads the image a `scripts/guest-image` build left in `dir`: its `image.toml` holds the
    /// `[images.NAME]` section of an agent configuration. Returns the name and the image.
    pub fn from_guest_image_dir(dir: &Path) -> Result<(String, Self)> {
        #[derive(Deserialize)]
        struct ImageFile {
            images: BTreeMap<String, ImageConfig>,
        }
        let path = dir.join("image.toml");
        let text = std::fs::read_to_string(&path).map_err(|e| {
            Error::Config(format!(
                "{} is not a guest image built by scripts/guest-image: {e}",
                dir.display()
            ))
        })?;
        let file: ImageFile =
            toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        let mut images = file.images.into_iter();
        match (images.next(), images.next()) {
            (Some(image), None) => Ok(image),
            _ => Err(Error::Config(format!(
                "{} must describe exactly one image",
                path.display()
            ))),
        }
    }
}

/// One layer of settings; later layers override earlier ones field by field.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigLayer {
    /// Data directory (database, node key, VM disks).
    pub data_dir: Option<PathBuf>,
    /// libvirt connection URI.
    pub libvirt_uri: Option<String>,
    /// `kvm` or `qemu`.
    pub domain_type: Option<DomainType>,
    /// WebSocket URL of the orchestrator; without it the agent runs VMs it already has but
    /// takes no new work.
    pub orchestrator_url: Option<String>,
    /// Operator address the node is registered under.
    pub operator: Option<Address>,
    /// Machine id text; `/etc/machine-id` when absent.
    pub machine_id: Option<String>,
    /// Seconds a guest gets to shut down before it is forced off.
    pub shutdown_timeout_secs: Option<u64>,
    /// Memory kept for the host and never given to VMs, in MiB.
    pub reserved_memory_mib: Option<u64>,
    /// NIC attachment.
    pub network: Option<NetworkConfig>,
    /// Subnet of the NAT network when the agent has to create it, e.g. `192.168.123.0/24`.
    pub network_subnet: Option<String>,
    /// Public ports forwarded to guests, `first-last` (default 40000-65535).
    pub public_port_range: Option<String>,
    /// Address (IP or DNS name) at which tenants reach this node's forwarded ports.
    pub public_address: Option<String>,
    /// `agent` (default) or `libvirt`.
    pub bandwidth_shaping: Option<BandwidthShaping>,
    /// `text` or `json` logs.
    pub log_format: Option<String>,
    /// HTTPS ingress through Caddy (file only); without it VMs' HTTP ports are not served.
    pub ingress: Option<IngressConfig>,
    /// The relay role (file only): on when the section is present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<crate::relay::RelayConfig>,
    /// The node cannot accept inbound connections (behind NAT or CGNAT): its heartbeats carry
    /// its tunnel key binding so the orchestrator can assign it a relay.
    pub behind_nat: Option<bool>,
    /// Images by name (file only).
    #[serde(default)]
    pub images: BTreeMap<String, ImageConfig>,
    /// The storage role: on when the section is present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageLayer>,
}

/// The agent's environment variables and the keys they set.
const ENV: &[EnvVar] = &[
    EnvVar::string("DECLOUD_AGENT_DATA_DIR", "data_dir"),
    EnvVar::string("DECLOUD_AGENT_LIBVIRT_URI", "libvirt_uri"),
    EnvVar::with("DECLOUD_AGENT_DOMAIN_TYPE", "domain_type", |v| {
        DomainType::parse(v)
            .map(|t| t.as_str().into())
            .map_err(|_| "expected kvm or qemu".into())
    }),
    EnvVar::string("DECLOUD_AGENT_ORCHESTRATOR_URL", "orchestrator_url"),
    EnvVar::with("DECLOUD_AGENT_OPERATOR", "operator", |v| {
        parse_address(v)
            .map(|a| a.to_string().into())
            .map_err(|_| "expected a 0x… address".into())
    }),
    EnvVar::string("DECLOUD_AGENT_MACHINE_ID", "machine_id"),
    EnvVar::unsigned(
        "DECLOUD_AGENT_SHUTDOWN_TIMEOUT_SECS",
        "shutdown_timeout_secs",
    ),
    EnvVar::string("DECLOUD_AGENT_LOG_FORMAT", "log_format"),
    EnvVar::string("DECLOUD_AGENT_NETWORK_SUBNET", "network_subnet"),
    EnvVar::string("DECLOUD_AGENT_PUBLIC_PORT_RANGE", "public_port_range"),
    EnvVar::string("DECLOUD_AGENT_PUBLIC_ADDRESS", "public_address"),
    EnvVar::with(
        "DECLOUD_AGENT_BANDWIDTH_SHAPING",
        "bandwidth_shaping",
        |v| {
            BandwidthShaping::parse(v)
                .map(|_| v.to_owned().into())
                .map_err(|_| "expected agent or libvirt".into())
        },
    ),
];

fn config_error(e: decloud_runtime::config::ConfigError) -> Error {
    Error::Config(e.to_string())
}

impl ConfigLayer {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<Self> {
        Layers::new()
            .file(path)
            .and_then(Layers::extract)
            .map_err(config_error)
    }

    /// Reads `DECLOUD_AGENT_*` variables through `var` (so tests need not touch the process
    /// environment); an empty variable counts as unset.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        Layers::new()
            .env(ENV, |name| var(name).filter(|v| !v.is_empty()))
            .and_then(Layers::extract)
            .map_err(config_error)
    }
}

/// Parses a `0x…` address.
pub fn parse_address(s: &str) -> Result<Address> {
    s.parse()
        .map_err(|_| Error::Config(format!("{s:?} is not an address")))
}

/// The agent's resolved configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Data directory.
    pub data_dir: PathBuf,
    /// libvirt URI.
    pub libvirt_uri: String,
    /// Domain type.
    pub domain_type: DomainType,
    /// Orchestrator WebSocket URL.
    pub orchestrator_url: Option<String>,
    /// Operator address.
    pub operator: Option<Address>,
    /// Machine id override.
    pub machine_id: Option<String>,
    /// Graceful shutdown timeout.
    pub shutdown_timeout_secs: u64,
    /// Host memory reserve.
    pub reserved_memory_mib: u64,
    /// NIC attachment.
    pub network: NetworkConfig,
    /// Subnet the agent gives the NAT network when it creates it.
    pub network_subnet: Ipv4Subnet,
    /// Public ports forwarded to guests.
    pub public_port_range: PortRange,
    /// Address tenants reach forwarded ports at, reported in heartbeats.
    pub public_address: Option<String>,
    /// Who enforces bandwidth tiers.
    pub bandwidth_shaping: BandwidthShaping,
    /// Whether logs are JSON.
    pub json_logs: bool,
    /// HTTPS ingress through Caddy.
    pub ingress: Option<IngressConfig>,
    /// The relay role, when on.
    pub relay: Option<crate::relay::RelayConfig>,
    /// Declared unable to accept inbound connections.
    pub behind_nat: bool,
    /// Images by name.
    pub images: BTreeMap<String, ImageConfig>,
    /// The storage role, when on.
    pub storage: Option<StorageConfig>,
}

impl Config {
    /// Resolves defaults → file → environment → flags.
    pub fn resolve(
        file: Option<ConfigLayer>,
        env: ConfigLayer,
        flags: ConfigLayer,
    ) -> Result<Self> {
        let merged: ConfigLayer = Layers::new()
            .layer(&file.unwrap_or_default())
            .and_then(|layers| layers.layer(&env))
            .and_then(|layers| layers.layer(&flags))
            .and_then(Layers::extract)
            .map_err(config_error)?;
        let json_logs = match merged.log_format.as_deref() {
            None | Some("text") => false,
            Some("json") => true,
            Some(other) => {
                return Err(Error::Config(format!(
                    "log format must be text or json, not {other:?}"
                )));
            }
        };
        if let Some(url) = &merged.orchestrator_url
            && !url.starts_with("ws://")
            && !url.starts_with("wss://")
        {
            return Err(Error::Config(format!(
                "orchestrator url {url:?} must be a ws:// or wss:// URL"
            )));
        }
        for (name, image) in &merged.images {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(Error::Config(format!("bad image name {name:?}")));
            }
            if image.initrd.is_some() && image.kernel.is_none() {
                return Err(Error::Config(format!(
                    "image {name}: initrd without kernel"
                )));
            }
        }
        let network_subnet = merged
            .network_subnet
            .as_deref()
            .unwrap_or(DEFAULT_NETWORK_SUBNET)
            .parse()?;
        let public_port_range = merged
            .public_port_range
            .as_deref()
            .unwrap_or(DEFAULT_PUBLIC_PORT_RANGE)
            .parse()?;
        let public_address = merged.public_address.map(|a| a.trim().to_owned());
        if let Some(address) = &public_address
            && (address.is_empty() || address.chars().any(|c| c.is_whitespace() || c == '/'))
        {
            return Err(Error::Config(format!(
                "public address {address:?} must be an IP address or a DNS name"
            )));
        }
        if let Some(ingress) = &merged.ingress {
            ingress.validate()?;
        }
        if let Some(relay) = &merged.relay {
            relay.validate()?;
        }
        let data_dir: PathBuf = merged.data_dir.unwrap_or_else(|| DEFAULT_DATA_DIR.into());
        let storage = merged
            .storage
            .map(|s| s.resolve(&data_dir))
            .transpose()
            .map_err(Error::Config)?;
        Ok(Self {
            data_dir,
            libvirt_uri: merged
                .libvirt_uri
                .unwrap_or_else(|| DEFAULT_LIBVIRT_URI.into()),
            domain_type: merged.domain_type.unwrap_or(DomainType::Kvm),
            orchestrator_url: merged.orchestrator_url,
            operator: merged.operator,
            machine_id: merged.machine_id,
            shutdown_timeout_secs: merged.shutdown_timeout_secs.unwrap_or(60),
            reserved_memory_mib: merged.reserved_memory_mib.unwrap_or(1024),
            network: merged.network.unwrap_or(NetworkConfig::Network {
                name: DEFAULT_NETWORK_NAME.into(),
            }),
            network_subnet,
            public_port_range,
            public_address,
            bandwidth_shaping: merged.bandwidth_shaping.unwrap_or(BandwidthShaping::Agent),
            json_logs,
            ingress: merged.ingress,
            relay: merged.relay,
            behind_nat: merged.behind_nat.unwrap_or(false),
            images: merged.images,
            storage,
        })
    }

    /// Operator address, required to derive the node id.
    pub fn operator(&self) -> Result<Address> {
        self.operator.ok_or_else(|| {
            Error::Config(
                "operator address missing: set `operator` in the config file, \
                 DECLOUD_AGENT_OPERATOR or --operator"
                    .into(),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_is_defaults_file_env_flags() {
        let file: ConfigLayer = toml::from_str(
            r#"
            data_dir = "/file"
            libvirt_uri = "test:///default"
            domain_type = "qemu"
            shutdown_timeout_secs = 5
            network = { type = "bridge", name = "br0" }
            [images.debian]
            base = "/img/debian.qcow2"
            "#,
        )
        .unwrap();
        let env = ConfigLayer::from_env(|k| match k {
            "DECLOUD_AGENT_DATA_DIR" => Some("/env".into()),
            "DECLOUD_AGENT_LIBVIRT_URI" => Some("qemu:///session".into()),
            "DECLOUD_AGENT_OPERATOR" => Some("0x1111111111111111111111111111111111111111".into()),
            _ => None,
        })
        .unwrap();
        let flags = ConfigLayer {
            data_dir: Some("/flag".into()),
            ..Default::default()
        };
        let config = Config::resolve(Some(file), env, flags).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/flag"));
        assert_eq!(config.libvirt_uri, "qemu:///session");
        assert_eq!(config.domain_type, DomainType::Qemu);
        assert_eq!(config.shutdown_timeout_secs, 5);
        assert_eq!(config.network, NetworkConfig::Bridge { name: "br0".into() });
        assert_eq!(config.operator().unwrap(), Address::repeat_byte(0x11));
        assert_eq!(
            config.images["debian"].base,
            PathBuf::from("/img/debian.qcow2")
        );

        let defaults =
            Config::resolve(None, ConfigLayer::default(), ConfigLayer::default()).unwrap();
        assert_eq!(defaults.libvirt_uri, DEFAULT_LIBVIRT_URI);
        assert_eq!(defaults.domain_type, DomainType::Kvm);
        assert_eq!(defaults.reserved_memory_mib, 1024);
        assert!(defaults.operator().is_err());
    }

    #[test]
    fn guest_image_directory_is_read_from_its_image_toml() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("image.toml"),
            "[images.debian-12]\nbase = \"/i/disk.qcow2\"\nkernel = \"/i/vmlinuz\"\n\
             initrd = \"/i/initrd.img\"\ncmdline = \"root=/dev/vda console=ttyS0\"\n",
        )
        .unwrap();
        let (name, image) = ImageConfig::from_guest_image_dir(dir.path()).unwrap();
        assert_eq!(name, "debian-12");
        assert_eq!(image.base, PathBuf::from("/i/disk.qcow2"));
        assert_eq!(image.kernel, Some(PathBuf::from("/i/vmlinuz")));
        assert_eq!(image.initrd, Some(PathBuf::from("/i/initrd.img")));
        assert_eq!(
            image.cmdline.as_deref(),
            Some("root=/dev/vda console=ttyS0")
        );

        // Not a build: a clear error naming the directory.
        let empty = tempfile::tempdir().unwrap();
        let e = ImageConfig::from_guest_image_dir(empty.path()).unwrap_err();
        assert!(e.to_string().contains("not a guest image"), "{e}");
        // Two images in one build is not something the script writes.
        std::fs::write(
            empty.path().join("image.toml"),
            "[images.a]\nbase = \"/a\"\n[images.b]\nbase = \"/b\"\n",
        )
        .unwrap();
        let e = ImageConfig::from_guest_image_dir(empty.path()).unwrap_err();
        assert!(e.to_string().contains("exactly one image"), "{e}");
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(
            ConfigLayer::from_env(|k| (k == "DECLOUD_AGENT_DOMAIN_TYPE").then(|| "xen".into()))
                .is_err()
        );
        assert!(
            ConfigLayer::from_env(|k| (k == "DECLOUD_AGENT_OPERATOR").then(|| "0x12".into()))
                .is_err()
        );
        assert!(toml::from_str::<ConfigLayer>("unknown_key = 1").is_err());
        let layer = ConfigLayer {
            log_format: Some("xml".into()),
            ..Default::default()
        };
        assert!(Config::resolve(None, layer, ConfigLayer::default()).is_err());
        let layer = ConfigLayer {
            orchestrator_url: Some("http://orchestrator".into()),
            ..Default::default()
        };
        assert!(Config::resolve(None, layer, ConfigLayer::default()).is_err());
    }

    #[test]
    fn forwarding_keys_resolve_and_default() {
        let defaults =
            Config::resolve(None, ConfigLayer::default(), ConfigLayer::default()).unwrap();
        assert_eq!(
            defaults.network,
            NetworkConfig::Network {
                name: DEFAULT_NETWORK_NAME.into()
            }
        );
        assert_eq!(defaults.network_subnet.to_string(), DEFAULT_NETWORK_SUBNET);
        assert_eq!(
            defaults.public_port_range,
            PortRange {
                first: 40000,
                last: 65535
            }
        );
        assert_eq!(defaults.public_port_range.len(), 25536);
        assert_eq!(defaults.public_address, None);

        let env = ConfigLayer::from_env(|k| match k {
            "DECLOUD_AGENT_PUBLIC_ADDRESS" => Some("node.example.org".into()),
            "DECLOUD_AGENT_PUBLIC_PORT_RANGE" => Some("50000-50000".into()),
            "DECLOUD_AGENT_NETWORK_SUBNET" => Some("10.77.0.0/16".into()),
            _ => None,
        })
        .unwrap();
        let config = Config::resolve(None, env, ConfigLayer::default()).unwrap();
        assert_eq!(config.public_address.as_deref(), Some("node.example.org"));
        assert_eq!(config.public_port_range.ports().count(), 1);
        assert_eq!(config.network_subnet.netmask().to_string(), "255.255.0.0");
    }

    #[test]
    fn bad_forwarding_values_are_refused_with_what_is_wrong() {
        let resolve = |layer: ConfigLayer| {
            Config::resolve(None, layer, ConfigLayer::default())
                .unwrap_err()
                .to_string()
        };
        for (range, why) in [
            ("50000-40000", "inverted"),
            ("0-10", "port 0"),
            ("40000", "no '-'"),
            ("40000-70000", "not a port number"),
            ("", "no '-'"),
        ] {
            let error = resolve(ConfigLayer {
                public_port_range: Some(range.into()),
                ..Default::default()
            });
            assert!(error.contains(why), "{range:?}: {error}");
        }
        for (subnet, why) in [
            ("192.168.123.1/24", "host bits"),
            ("192.168.123.0/8", "prefix"),
            ("192.168.123.0/30", "prefix"),
            ("192.168.123.0", "no '/prefix'"),
            ("fd00::/64", "IPv4"),
        ] {
            let error = resolve(ConfigLayer {
                network_subnet: Some(subnet.into()),
                ..Default::default()
            });
            assert!(error.contains(why), "{subnet:?}: {error}");
        }
        for address in ["", "two words", "http://x/"] {
            let error = resolve(ConfigLayer {
                public_address: Some(address.into()),
                ..Default::default()
            });
            assert!(error.contains("public address"), "{address:?}: {error}");
        }
    }
}

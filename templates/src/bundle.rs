//! The bundle: a manifest plus cloud-init user-data, on disk and as content.
//!
//! On disk a bundle is a directory with two files:
//!
//! ```text
//! <slug>/template.toml   the manifest (see [`Manifest`])
//! <slug>/user-data       cloud-init user-data (`#cloud-config` YAML or a `#!` script)
//! ```
//!
//! Published, it is ONE content-addressed object: a compact JSON document
//! `{"format":"decloud-template/1","manifest":{…},"user_data":"…"}` with fields in a
//! fixed order. One object means one CID to register on-chain, one pin and one `cat`
//! to fetch it, and no directory DAG to build; [`Bundle::from_content`] accepts only the
//! exact bytes [`Bundle::to_content`] produces, so a bundle has exactly one CID.

use std::path::Path;

use decloud_content::{AddOptions, Cid, cid_of};
use serde::{Deserialize, Serialize};

use crate::TemplateError;

/// The manifest file name inside a bundle directory.
pub const MANIFEST_FILE: &str = "template.toml";
/// The user-data file name inside a bundle directory.
pub const USER_DATA_FILE: &str = "user-data";
/// The `format` tag of published bundles.
pub const CONTENT_FORMAT: &str = "decloud-template/1";
/// CID options bundles are published with (`ipfs add --cid-version=1`).
pub const BUNDLE_CID_OPTIONS: AddOptions = AddOptions::KUBO_CID_V1;

/// What a template is for, as shown in the marketplace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    /// Machine learning and generative AI.
    Ai,
    /// Databases.
    Database,
    /// Developer tools and IDEs.
    Development,
    /// Privacy tools: isolated browsers, VPNs, proxies.
    Privacy,
    /// Networking services.
    Networking,
    /// Web servers and applications.
    Web,
    /// Anything else.
    Other,
}

/// The smallest VM a template runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinSpecs {
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Memory in GiB.
    pub memory_gib: u32,
    /// Root disk in GiB.
    pub disk_gib: u32,
    /// GPUs passed through to the VM.
    #[serde(default)]
    pub gpus: u32,
}

/// The protocol an exposed port speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Raw TCP.
    Tcp,
    /// Raw UDP.
    Udp,
    /// HTTP over TCP.
    Http,
    /// HTTPS over TCP.
    Https,
}

impl Protocol {
    /// The transport a port of this protocol occupies: two ports clash only on the same
    /// transport.
    pub fn transport(self) -> Transport {
        match self {
            Self::Udp => Transport::Udp,
            Self::Tcp | Self::Http | Self::Https => Transport::Tcp,
        }
    }
}

/// A transport-layer protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// A port the VM serves on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Port {
    /// Port number; kept wider than `u16` so an out-of-range number is reported by
    /// validation instead of failing to parse without a location.
    pub port: u32,
    /// Protocol spoken on it.
    pub protocol: Protocol,
    /// What it is, for the user.
    #[serde(default)]
    pub description: String,
}

/// How the platform knows a deployed VM is ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Readiness {
    /// cloud-init reported it finished (`cloud-init status` is `done`).
    CloudInit,
    /// A TCP connection to the port succeeds.
    Tcp {
        /// Port to connect to.
        port: u32,
    },
    /// An HTTP GET answers the expected status.
    Http {
        /// Port to connect to.
        port: u32,
        /// Path to request, starting with `/`.
        path: String,
        /// Status code that means ready.
        expect_status: u16,
        /// Use TLS; the certificate is the VM's own (often self-signed), so the
        /// checker does not verify it against public roots.
        #[serde(default)]
        tls: bool,
    },
    /// A command run in the guest by its QEMU guest agent (`guest-exec`) exits with 0: for
    /// services that listen only inside the guest. The guest needs `qemu-guest-agent`.
    Exec {
        /// Absolute path of the program in the guest, then its arguments.
        command: Vec<String>,
    },
}

/// Most words an exec readiness check may have.
pub const MAX_EXEC_WORDS: usize = 32;
/// Longest word of an exec readiness check, in bytes.
pub const MAX_EXEC_WORD_BYTES: usize = 1024;

/// Everything about a template except its user-data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Display name.
    pub name: String,
    /// Stable identifier: lowercase letters, digits and single hyphens.
    pub slug: String,
    /// Marketplace category.
    pub category: Category,
    /// What the template gives the user.
    pub description: String,
    /// Search tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Minimum VM size.
    pub min_specs: MinSpecs,
    /// Ports the template serves on.
    #[serde(default)]
    pub ports: Vec<Port>,
    /// Checks that together mean the VM is ready.
    #[serde(default)]
    pub readiness: Vec<Readiness>,
}

/// A template: manifest and cloud-init user-data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// The manifest.
    pub manifest: Manifest,
    /// cloud-init user-data with `${DECLOUD_*}` variables not yet substituted.
    pub user_data: String,
}

/// The published form; field order is the byte order of the content.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Published {
    format: String,
    manifest: Manifest,
    user_data: String,
}

/// Largest published bundle accepted: user-data is bounded far below this.
pub const MAX_CONTENT_SIZE: usize = 1 << 20;

impl Bundle {
    /// Loads a bundle from a directory holding `template.toml` and `user-data`.
    /// Parsing only: call [`crate::validate`] before trusting it.
    pub fn load_dir(dir: impl AsRef<Path>) -> Result<Self, TemplateError> {
        let dir = dir.as_ref();
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| TemplateError::Read {
                path: path.display().to_string(),
                source,
            })
        };
        let manifest_text = read(MANIFEST_FILE)?;
        let manifest: Manifest =
            toml::from_str(&manifest_text).map_err(|e| TemplateError::Manifest {
                path: dir.join(MANIFEST_FILE).display().to_string(),
                message: e.to_string(),
            })?;
        let user_data = read(USER_DATA_FILE)?;
        Ok(Self {
            manifest,
            user_data,
        })
    }

    /// Writes the bundle as a directory (the inverse of [`Bundle::load_dir`]).
    pub fn write_dir(&self, dir: impl AsRef<Path>) -> Result<(), TemplateError> {
        let dir = dir.as_ref();
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|source| TemplateError::Write {
                path: path.display().to_string(),
                source,
            })
        };
        std::fs::create_dir_all(dir).map_err(|source| TemplateError::Write {
            path: dir.display().to_string(),
            source,
        })?;
        let manifest = toml::to_string(&self.manifest).map_err(|e| TemplateError::Manifest {
            path: dir.join(MANIFEST_FILE).display().to_string(),
            message: e.to_string(),
        })?;
        write(MANIFEST_FILE, &manifest)?;
        write(USER_DATA_FILE, &self.user_data)
    }

    /// The published bytes of this bundle.
    pub fn to_content(&self) -> Vec<u8> {
        let published = Published {
            format: CONTENT_FORMAT.to_owned(),
            manifest: self.manifest.clone(),
            user_data: self.user_data.clone(),
        };
        serde_json::to_vec(&published).expect("a bundle always serializes to JSON")
    }

    /// Parses published bytes; only the canonical encoding is accepted, so equal
    /// bundles always have equal CIDs.
    pub fn from_content(bytes: &[u8]) -> Result<Self, TemplateError> {
        if bytes.len() > MAX_CONTENT_SIZE {
            return Err(TemplateError::Content(format!(
                "{} bytes exceeds the {MAX_CONTENT_SIZE}-byte bundle limit",
                bytes.len()
            )));
        }
        let published: Published =
            serde_json::from_slice(bytes).map_err(|e| TemplateError::Content(e.to_string()))?;
        if published.format != CONTENT_FORMAT {
            return Err(TemplateError::Content(format!(
                "unknown format {:?}, expected {CONTENT_FORMAT:?}",
                published.format
            )));
        }
        let bundle = Self {
            manifest: published.manifest,
            user_data: published.user_data,
        };
        if bundle.to_content() != bytes {
            return Err(TemplateError::Content(
                "not the canonical encoding (field order, spacing or escapes differ)".into(),
            ));
        }
        Ok(bundle)
    }

    /// The CID the published bundle has (CIDv1, as `ipfs add --cid-version=1`).
    pub fn cid(&self) -> Cid {
        cid_of(&self.to_content(), BUNDLE_CID_OPTIONS)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> Bundle {
        Bundle {
            manifest: Manifest {
                name: "Sample".into(),
                slug: "sample".into(),
                category: Category::Other,
                description: "A sample.".into(),
                tags: vec!["a".into()],
                min_specs: MinSpecs {
                    vcpus: 1,
                    memory_gib: 1,
                    disk_gib: 10,
                    gpus: 0,
                },
                ports: vec![Port {
                    port: 80,
                    protocol: Protocol::Http,
                    description: String::new(),
                }],
                readiness: vec![
                    Readiness::CloudInit,
                    Readiness::Http {
                        port: 80,
                        path: "/".into(),
                        expect_status: 200,
                        tls: false,
                    },
                ],
            },
            user_data: "#cloud-config\nhostname: ${DECLOUD_HOSTNAME}\n".into(),
        }
    }

    #[test]
    fn content_round_trips_and_is_canonical() {
        let bundle = sample();
        let bytes = bundle.to_content();
        assert!(bytes.starts_with(br#"{"format":"decloud-template/1","manifest":{"name""#));
        assert_eq!(Bundle::from_content(&bytes).unwrap(), bundle);
        let pretty = serde_json::to_vec_pretty(
            &serde_json::from_slice::<serde_json::Value>(&bytes).unwrap(),
        )
        .unwrap();
        assert!(matches!(
            Bundle::from_content(&pretty),
            Err(TemplateError::Content(_))
        ));
    }

    #[test]
    fn unknown_format_and_fields_are_refused() {
        let text = String::from_utf8(sample().to_content()).unwrap();
        let other = text.replace("decloud-template/1", "decloud-template/2");
        assert!(Bundle::from_content(other.as_bytes()).is_err());
        let extra = text.replacen("{\"format\"", "{\"x\":1,\"format\"", 1);
        assert!(Bundle::from_content(extra.as_bytes()).is_err());
    }

    #[test]
    fn cid_changes_with_any_field() {
        let a = sample();
        let mut b = sample();
        b.manifest.tags.push("b".into());
        assert_ne!(a.cid(), b.cid());
        assert_eq!(a.cid(), sample().cid());
        assert!(a.cid().to_string().starts_with("bafkrei"));
    }

    #[test]
    fn directory_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        sample().write_dir(dir.path()).unwrap();
        assert_eq!(Bundle::load_dir(dir.path()).unwrap(), sample());
    }

    #[test]
    fn manifest_typos_are_load_errors() {
        let dir = tempfile::tempdir().unwrap();
        sample().write_dir(dir.path()).unwrap();
        let path = dir.path().join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("memory_gib", "memory_gb")).unwrap();
        assert!(matches!(
            Bundle::load_dir(dir.path()),
            Err(TemplateError::Manifest { .. })
        ));
    }
}

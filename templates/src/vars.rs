//! The closed set of `${DECLOUD_*}` variables and their deploy-time values.
//!
//! | variable | value |
//! |---|---|
//! | `${DECLOUD_VM_ID}` | the VM's id: letters, digits, `-`, `_`, at most 64 |
//! | `${DECLOUD_HOSTNAME}` | RFC 1123 host name, lowercase, at most 253 |
//! | `${DECLOUD_PASSWORD}` | 24 characters from `[A-Za-z0-9]` drawn from the OS CSPRNG (about 143 bits), or a supplied one of 16–128 characters from `[A-Za-z0-9._~+=@%^,-]` |
//! | `${DECLOUD_LEASE_ID}` | the on-chain lease id, decimal or `0x` hex |
//! | `${DECLOUD_NODE_ID}` | the node id, `0x` + 64 hex digits |
//! | `${DECLOUD_TENANT}` | the tenant's address, `0x` + 40 hex digits |
//! | `${DECLOUD_SSH_KEY}` | one OpenSSH public key line (optional; a template using it needs one) |
//!
//! Every value is checked against its format when set. The formats exclude quotes,
//! backslashes, `$`, backticks, newlines and `#`, so a value cannot end a quoted shell
//! word or start a comment in the scripts the user-data runs; the YAML layer is
//! handled separately by [`crate::render`].

use std::fmt;

use crate::VarError;

/// A variable of the closed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variable {
    /// `DECLOUD_VM_ID`.
    VmId,
    /// `DECLOUD_HOSTNAME`.
    Hostname,
    /// `DECLOUD_PASSWORD`.
    Password,
    /// `DECLOUD_LEASE_ID`.
    LeaseId,
    /// `DECLOUD_NODE_ID`.
    NodeId,
    /// `DECLOUD_TENANT`.
    Tenant,
    /// `DECLOUD_SSH_KEY`.
    SshKey,
}

impl Variable {
    /// Every variable, in documentation order.
    pub const ALL: [Self; 7] = [
        Self::VmId,
        Self::Hostname,
        Self::Password,
        Self::LeaseId,
        Self::NodeId,
        Self::Tenant,
        Self::SshKey,
    ];

    /// The name written inside `${…}`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::VmId => "DECLOUD_VM_ID",
            Self::Hostname => "DECLOUD_HOSTNAME",
            Self::Password => "DECLOUD_PASSWORD",
            Self::LeaseId => "DECLOUD_LEASE_ID",
            Self::NodeId => "DECLOUD_NODE_ID",
            Self::Tenant => "DECLOUD_TENANT",
            Self::SshKey => "DECLOUD_SSH_KEY",
        }
    }

    /// The variable with this name, if it is in the set.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.name() == name)
    }
}

impl fmt::Display for Variable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Length of generated passwords.
pub const GENERATED_PASSWORD_LEN: usize = 24;
const PASSWORD_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const PASSWORD_EXTRA: &str = "._~+=@%^,-";

/// Draws a password of [`GENERATED_PASSWORD_LEN`] characters uniformly from
/// `[A-Za-z0-9]` using the operating system's CSPRNG.
pub fn generate_password() -> Result<String, VarError> {
    let mut out = String::with_capacity(GENERATED_PASSWORD_LEN);
    // Rejection sampling: 62 * 4 = 248, so bytes 248..=255 are redrawn and every
    // character is equally likely.
    let limit = (256 / PASSWORD_ALPHABET.len() * PASSWORD_ALPHABET.len()) as u8;
    let mut buf = [0u8; 64];
    while out.len() < GENERATED_PASSWORD_LEN {
        getrandom::fill(&mut buf).map_err(|e| VarError::Random(e.to_string()))?;
        for &b in &buf {
            if b < limit && out.len() < GENERATED_PASSWORD_LEN {
                out.push(PASSWORD_ALPHABET[(b as usize) % PASSWORD_ALPHABET.len()] as char);
            }
        }
    }
    Ok(out)
}

fn invalid(variable: Variable, reason: impl Into<String>) -> VarError {
    VarError::Invalid {
        variable: variable.name(),
        reason: reason.into(),
    }
}

fn check_vm_id(v: &str) -> Result<(), VarError> {
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then_some(())
        .ok_or_else(|| invalid(Variable::VmId, "1-64 letters, digits, '-' or '_'"))
}

fn check_hostname(v: &str) -> Result<(), VarError> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    (v.len() <= 253 && v.split('.').all(label_ok))
        .then_some(())
        .ok_or_else(|| {
            invalid(
                Variable::Hostname,
                "lowercase RFC 1123 name: labels of 1-63 [a-z0-9-], no leading or trailing '-'",
            )
        })
}

fn check_password(v: &str) -> Result<(), VarError> {
    let ok = (16..=128).contains(&v.len())
        && v.bytes()
            .all(|b| PASSWORD_ALPHABET.contains(&b) || PASSWORD_EXTRA.as_bytes().contains(&b));
    ok.then_some(()).ok_or_else(|| {
        invalid(
            Variable::Password,
            format!("16-128 characters from [A-Za-z0-9{PASSWORD_EXTRA}]"),
        )
    })
}

fn is_hex(v: &str) -> bool {
    v.bytes().all(|b| b.is_ascii_hexdigit())
}

fn check_lease_id(v: &str) -> Result<(), VarError> {
    let ok = match v.strip_prefix("0x") {
        Some(hex) => (1..=64).contains(&hex.len()) && is_hex(hex),
        None => (1..=78).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_digit()),
    };
    ok.then_some(())
        .ok_or_else(|| invalid(Variable::LeaseId, "decimal, or 0x and 1-64 hex digits"))
}

fn check_hex_exact(variable: Variable, v: &str, digits: usize) -> Result<(), VarError> {
    let ok = v
        .strip_prefix("0x")
        .is_some_and(|hex| hex.len() == digits && is_hex(hex));
    ok.then_some(())
        .ok_or_else(|| invalid(variable, format!("0x and {digits} hex digits")))
}

const SSH_KEY_TYPES: [&str; 7] = [
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

fn check_ssh_key(v: &str) -> Result<(), VarError> {
    let mut parts = v.split(' ');
    let kind = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default();
    let comment = parts.next();
    let body_ok = (16..=16_384).contains(&body.len())
        && body.trim_end_matches('=').len() + 3 >= body.len()
        && body
            .trim_end_matches('=')
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    let comment_ok = comment.is_none_or(|c| {
        (1..=100).contains(&c.len())
            && c.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"@._+-".contains(&b))
    });
    let ok = SSH_KEY_TYPES.contains(&kind) && body_ok && comment_ok && parts.next().is_none();
    ok.then_some(()).ok_or_else(|| {
        invalid(
            Variable::SshKey,
            "one OpenSSH public key: type, base64 key, optional comment of [A-Za-z0-9@._+-]",
        )
    })
}

/// Deploy-time values for every variable; each is validated when set.
#[derive(Clone, PartialEq, Eq)]
pub struct Vars {
    vm_id: String,
    hostname: String,
    password: String,
    lease_id: String,
    node_id: String,
    tenant: String,
    ssh_key: Option<String>,
}

impl fmt::Debug for Vars {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vars")
            .field("vm_id", &self.vm_id)
            .field("hostname", &self.hostname)
            .field("password", &"<redacted>")
            .field("lease_id", &self.lease_id)
            .field("node_id", &self.node_id)
            .field("tenant", &self.tenant)
            .field("ssh_key", &self.ssh_key)
            .finish()
    }
}

impl Vars {
    /// Values for a deployment, with a freshly generated password and no SSH key.
    pub fn new(
        vm_id: &str,
        hostname: &str,
        lease_id: &str,
        node_id: &str,
        tenant: &str,
    ) -> Result<Self, VarError> {
        check_vm_id(vm_id)?;
        check_hostname(hostname)?;
        check_lease_id(lease_id)?;
        check_hex_exact(Variable::NodeId, node_id, 64)?;
        check_hex_exact(Variable::Tenant, tenant, 40)?;
        Ok(Self {
            vm_id: vm_id.to_owned(),
            hostname: hostname.to_owned(),
            password: generate_password()?,
            lease_id: lease_id.to_owned(),
            node_id: node_id.to_ascii_lowercase(),
            tenant: tenant.to_owned(),
            ssh_key: None,
        })
    }

    /// Uses a supplied password instead of the generated one.
    pub fn with_password(mut self, password: &str) -> Result<Self, VarError> {
        check_password(password)?;
        self.password = password.to_owned();
        Ok(self)
    }

    /// Sets the tenant's SSH public key.
    pub fn with_ssh_key(mut self, key: &str) -> Result<Self, VarError> {
        let key = key.trim();
        check_ssh_key(key)?;
        self.ssh_key = Some(key.to_owned());
        Ok(self)
    }

    /// The password the VM is configured with, to hand to the tenant once.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The value of `variable`, if it has one.
    pub fn get(&self, variable: Variable) -> Option<&str> {
        match variable {
            Variable::VmId => Some(&self.vm_id),
            Variable::Hostname => Some(&self.hostname),
            Variable::Password => Some(&self.password),
            Variable::LeaseId => Some(&self.lease_id),
            Variable::NodeId => Some(&self.node_id),
            Variable::Tenant => Some(&self.tenant),
            Variable::SshKey => self.ssh_key.as_deref(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const NODE: &str =
        "0x1111111111111111111111111111111111111111111111111111111111111111";
    pub(crate) const TENANT: &str = "0x2222222222222222222222222222222222222222";

    pub(crate) fn sample() -> Vars {
        Vars::new("vm-1", "web-1", "42", NODE, TENANT).unwrap()
    }

    #[test]
    fn generated_passwords_are_long_distinct_and_alphanumeric() {
        let a = generate_password().unwrap();
        let b = generate_password().unwrap();
        assert_eq!(a.len(), GENERATED_PASSWORD_LEN);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
        check_password(&a).unwrap();
    }

    #[test]
    fn generated_passwords_use_the_whole_alphabet() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            seen.extend(generate_password().unwrap().bytes());
        }
        assert_eq!(seen.len(), PASSWORD_ALPHABET.len());
    }

    #[test]
    fn values_are_checked() {
        assert!(Vars::new("vm 1", "web", "1", NODE, TENANT).is_err());
        assert!(Vars::new("vm", "Web", "1", NODE, TENANT).is_err());
        assert!(Vars::new("vm", "-web", "1", NODE, TENANT).is_err());
        assert!(Vars::new("vm", "web", "1x", NODE, TENANT).is_err());
        assert!(Vars::new("vm", "web", "0x1f", NODE, TENANT).is_ok());
        assert!(Vars::new("vm", "web", "1", &NODE[..65], TENANT).is_err());
        assert!(Vars::new("vm", "web", "1", NODE, "0x22").is_err());
        let vars = sample();
        assert!(vars.clone().with_password("short").is_err());
        assert!(vars.clone().with_password("has space in it 123").is_err());
        assert!(vars.clone().with_password("quote'quote'quote'1").is_err());
        assert!(vars.clone().with_password("Good.password-2024").is_ok());
    }

    #[test]
    fn ssh_keys_are_checked() {
        let key =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB0Qf3s2Yt0wLz1nS8mJb4Ue1s0pXl1s user@laptop";
        assert!(sample().with_ssh_key(key).is_ok());
        assert!(
            sample()
                .with_ssh_key("ssh-dss AAAAB3NzaC1kc3MAAACBAP9 x")
                .is_err()
        );
        assert!(
            sample()
                .with_ssh_key(&format!("{key}\nssh-rsa AAAA"))
                .is_err()
        );
        assert!(sample().with_ssh_key(&format!("{key} #comment")).is_err());
    }

    #[test]
    fn debug_hides_the_password() {
        let vars = sample();
        assert!(!format!("{vars:?}").contains(vars.password()));
    }

    #[test]
    fn names_round_trip() {
        for v in Variable::ALL {
            assert_eq!(Variable::from_name(v.name()), Some(v));
        }
        assert_eq!(Variable::from_name("DECLOUD_OTHER"), None);
    }
}

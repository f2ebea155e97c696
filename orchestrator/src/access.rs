//! How a tenant gets into a VM: the login user cloud-init creates with the tenant's SSH keys and
//! a generated password, the ports forwarded to the guest, and what nodes report about them.
//!
//! Generated passwords leave this process in two forms only: sealed to the tenant's key (stored,
//! served by the API) and inside the user-data sent to the node. The create command waits in the
//! database until its node acknowledges it, so its user-data is stored sealed to a key that lives
//! only in this process's memory ([`seal_for_node`]) and is opened just before it is sent
//! ([`open_for_node`]). The database therefore never holds a password in clear; the price is
//! that a create command not yet acknowledged when the orchestrator restarts cannot be opened any
//! more: it is put together again with new passwords ([`crate::lifecycle::reseal_create`]). Each
//! version's sealed passwords stay on record, by the digest of its user-data, until the node's
//! acknowledgement names the user-data it created the VM from (an earlier version, when it had
//! run the command before the restart), and that version becomes the tenant's
//! ([`Store::settle_vm_setup`]).

use crate::store::{Store, StoreError};
use decloud_sdk::NodeId;
use decloud_sdk::agent_protocol::{CommandAction, Heartbeat, PortProtocol, PortSpec};
use decloud_sdk::credentials::{CredentialsError, SealingKey};
use serde_yaml::{Mapping, Value};
use std::sync::LazyLock;

/// The user cloud-init creates on every VM for its tenant.
pub const LOGIN_USER: &str = "decloud";

/// Every VM forwards SSH, so a VM without a template is reachable too.
pub const SSH_PORT: PortSpec = PortSpec {
    guest: 22,
    protocol: PortProtocol::Tcp,
};

/// Log directives the orchestrator pins whatever filter is asked for: the WebSocket library
/// logs whole frames at `trace`, and a create command's frame carries the VM's user-data with
/// its password.
pub const LOG_PINNED: &[&str] = &["tungstenite=debug"];

/// Marks user-data sealed by [`seal_for_node`] inside a stored create command.
const NODE_SEALED_PREFIX: &str = "decloud-sealed-for-node:";

/// The key create commands are sealed to while they wait for delivery; see the module docs.
static IN_FLIGHT_KEY: LazyLock<SealingKey> = LazyLock::new(SealingKey::generate);

/// Why user-data could not be put together.
#[derive(Debug, thiserror::Error)]
pub enum UserDataError {
    /// The template's user-data is not YAML that can take a login user.
    #[error("the template's cloud-config cannot take the login user: {0}")]
    Template(String),
}

/// The ports a VM is created with: SSH first, then the template's and the tenant's, each
/// (port, protocol) once.
pub fn vm_ports(template: &[PortSpec], tenant: &[PortSpec]) -> Vec<PortSpec> {
    let mut ports = vec![SSH_PORT];
    for p in template.iter().chain(tenant) {
        if !ports.contains(p) {
            ports.push(*p);
        }
    }
    ports
}

/// The login user's cloud-config entry: the tenant's SSH keys, and the password when one was
/// generated (else password login stays locked).
fn login_user(ssh_keys: &[String], password: Option<&str>) -> Value {
    let mut user = Mapping::new();
    user.insert("name".into(), LOGIN_USER.into());
    user.insert("gecos".into(), "DeCloud tenant".into());
    user.insert("shell".into(), "/bin/bash".into());
    user.insert("sudo".into(), "ALL=(ALL) NOPASSWD:ALL".into());
    user.insert("lock_passwd".into(), password.is_none().into());
    if let Some(password) = password {
        user.insert("plain_text_passwd".into(), password.into());
    }
    user.insert(
        "ssh_authorized_keys".into(),
        Value::Sequence(ssh_keys.iter().map(|k| k.as_str().into()).collect()),
    );
    Value::Mapping(user)
}

/// The VM's user-data: the template's (or the workload's) with the login user added.
///
/// A `#cloud-config` document (or none) gets the user appended to its `users` list (after
/// `default`, which keeps the image's own user, when the template did not list users itself) and
/// `ssh_pwauth` on when a password was generated and the template did not decide; anything else
/// (a `#!` script, a MIME archive) is wrapped in a MIME multi-part archive beside a cloud-config
/// part with the user, which cloud-init runs both of.
pub fn user_data(
    base: &str,
    ssh_keys: &[String],
    password: Option<&str>,
) -> Result<String, UserDataError> {
    let user = login_user(ssh_keys, password);
    let is_cloud_config = base.trim().is_empty()
        || base
            .lines()
            .next()
            .is_some_and(|l| l.trim_end() == "#cloud-config");
    if is_cloud_config {
        let mut doc = match serde_yaml::from_str::<Value>(base)
            .map_err(|e| UserDataError::Template(e.to_string()))?
        {
            Value::Null => Mapping::new(),
            Value::Mapping(m) => m,
            _ => {
                return Err(UserDataError::Template(
                    "the document is not a mapping".into(),
                ));
            }
        };
        match doc.get_mut("users") {
            None => {
                doc.insert(
                    "users".into(),
                    Value::Sequence(vec!["default".into(), user]),
                );
            }
            Some(Value::Sequence(users)) => users.push(user),
            Some(_) => return Err(UserDataError::Template("`users` is not a list".into())),
        }
        if password.is_some() && !doc.contains_key("ssh_pwauth") {
            doc.insert("ssh_pwauth".into(), true.into());
        }
        let yaml = serde_yaml::to_string(&Value::Mapping(doc))
            .map_err(|e| UserDataError::Template(e.to_string()))?;
        return Ok(format!("#cloud-config\n{yaml}"));
    }
    let mut ours = Mapping::new();
    ours.insert(
        "users".into(),
        Value::Sequence(vec!["default".into(), user]),
    );
    if password.is_some() {
        ours.insert("ssh_pwauth".into(), true.into());
    }
    let ours = serde_yaml::to_string(&Value::Mapping(ours))
        .map_err(|e| UserDataError::Template(e.to_string()))?;
    let content_type = if base.starts_with("#!") {
        "text/x-shellscript"
    } else if base.starts_with("Content-Type: multipart") {
        "multipart/mixed"
    } else {
        "text/plain"
    };
    // A boundary that occurs in neither part.
    let mut boundary = String::from("decloud-user-data");
    while base.contains(&boundary) || ours.contains(&boundary) {
        boundary.push('-');
    }
    Ok(format!(
        "Content-Type: multipart/mixed; boundary=\"{boundary}\"\nMIME-Version: 1.0\n\n\
         --{boundary}\nContent-Type: text/cloud-config; charset=\"utf-8\"\n\n#cloud-config\n{ours}\n\
         --{boundary}\nContent-Type: {content_type}; charset=\"utf-8\"\n\n{base}\n\
         --{boundary}--\n"
    ))
}

/// Seals a create command's user-data so it can wait in the database; see the module docs.
pub fn seal_for_node(vm_id: &str, user_data: &str) -> Result<String, CredentialsError> {
    let sealed = decloud_sdk::credentials::seal_bytes(
        &IN_FLIGHT_KEY.public_hex(),
        vm_id.as_bytes(),
        user_data.as_bytes(),
    )?;
    Ok(format!("{NODE_SEALED_PREFIX}{sealed}"))
}

/// Opens what [`seal_for_node`] sealed in a command about to be sent; other commands pass
/// unchanged. Fails for a command sealed by an earlier run of the orchestrator.
pub fn open_for_node(action: CommandAction) -> Result<CommandAction, CredentialsError> {
    let CommandAction::CreateVm { mut spec } = action else {
        return Ok(action);
    };
    if let Some(sealed) = spec.user_data.strip_prefix(NODE_SEALED_PREFIX) {
        let clear = IN_FLIGHT_KEY.open_bytes(sealed, spec.id.as_bytes())?;
        spec.user_data = String::from_utf8(clear).map_err(|_| CredentialsError::MalformedBlob)?;
    }
    Ok(CommandAction::CreateVm { spec })
}

/// Books what a heartbeat says about reaching the node and its VMs.
pub async fn record_heartbeat(
    store: &Store,
    node_id: NodeId,
    heartbeat: &Heartbeat,
    now: i64,
) -> Result<(), StoreError> {
    store
        .record_node_address(
            node_id,
            heartbeat.public_address.as_deref(),
            heartbeat.ingress,
            now,
        )
        .await?;
    for (vm_id, vm) in crate::agent::reported_vms(&heartbeat.vms) {
        store
            .record_vm_reported(node_id, vm_id, &vm.addresses, &vm.forwards, now)
            .await?;
    }
    Ok(())
}

/// `ssh -p <port> <user>@<address>` when the VM's port 22/tcp is forwarded.
pub fn ssh_command(access: &crate::store::VmAccess) -> Option<String> {
    let address = access.public_address.as_deref()?;
    let forward = access
        .forwards
        .iter()
        .find(|f| f.guest == SSH_PORT.guest && f.protocol == SSH_PORT.protocol)?;
    let user = access.login_user.as_deref().unwrap_or(LOGIN_USER);
    // An IPv6 literal is bracketed only in URLs; ssh takes it bare.
    Some(format!("ssh -p {} {user}@{address}", forward.public))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIERmbRxmpvQ4hxusWzab9mGUW2vGk+MoKYYUAqvQsETX alice@laptop";

    fn parse(text: &str) -> Value {
        serde_yaml::from_str(text.strip_prefix("#cloud-config\n").unwrap()).unwrap()
    }

    #[test]
    fn a_vm_without_template_gets_the_login_user_with_keys_and_password() {
        let text = user_data("", &[KEY.to_string()], Some("pw-1234567890abcdef")).unwrap();
        let doc = parse(&text);
        assert_eq!(doc["users"][0], Value::from("default"));
        assert_eq!(doc["users"][1]["name"], Value::from(LOGIN_USER));
        assert_eq!(doc["users"][1]["ssh_authorized_keys"][0], Value::from(KEY));
        assert_eq!(
            doc["users"][1]["plain_text_passwd"],
            Value::from("pw-1234567890abcdef")
        );
        assert_eq!(doc["users"][1]["lock_passwd"], Value::from(false));
        assert_eq!(doc["ssh_pwauth"], Value::from(true));
    }

    #[test]
    fn without_a_password_login_by_password_stays_locked() {
        let doc = parse(&user_data("", &[KEY.to_string()], None).unwrap());
        assert_eq!(doc["users"][1]["lock_passwd"], Value::from(true));
        assert!(doc.get("ssh_pwauth").is_none());
        assert!(doc["users"][1].get("plain_text_passwd").is_none());
    }

    #[test]
    fn a_template_cloud_config_keeps_its_keys_and_users() {
        let template =
            "#cloud-config\npackages: [nginx]\nusers:\n  - name: app\nssh_pwauth: false\n";
        let doc = parse(&user_data(template, &[KEY.to_string()], Some("x")).unwrap());
        assert_eq!(doc["packages"][0], Value::from("nginx"));
        assert_eq!(doc["users"][0]["name"], Value::from("app"));
        assert_eq!(doc["users"][1]["name"], Value::from(LOGIN_USER));
        assert_eq!(
            doc["ssh_pwauth"],
            Value::from(false),
            "the template decides"
        );
        assert!(user_data("#cloud-config\nusers: nobody\n", &[], None).is_err());
    }

    #[test]
    fn a_script_goes_beside_the_cloud_config_in_a_mime_archive() {
        let text = user_data("#!/bin/sh\necho hi\n", &[KEY.to_string()], None).unwrap();
        assert!(text.starts_with("Content-Type: multipart/mixed;"));
        assert!(text.contains("Content-Type: text/x-shellscript"));
        assert!(text.contains("#!/bin/sh\necho hi\n"));
        assert!(text.contains(KEY));
    }

    #[test]
    fn ports_start_with_ssh_and_hold_each_port_once() {
        let web = PortSpec {
            guest: 80,
            protocol: PortProtocol::Tcp,
        };
        assert_eq!(vm_ports(&[web, SSH_PORT], &[web]), vec![SSH_PORT, web]);
    }

    #[test]
    fn sealed_user_data_opens_only_for_its_vm() {
        let sealed = seal_for_node("vm-1", "#cloud-config\nsecret: x\n").unwrap();
        assert!(!sealed.contains("secret"));
        let spec = |id: &str| decloud_sdk::agent_protocol::VmSpec {
            id: id.into(),
            image: "i".into(),
            vcpus: 1,
            memory_mib: 512,
            disk_gib: 1,
            quality: decloud_sdk::types::QualityTier::Standard,
            bandwidth: decloud_sdk::types::BandwidthTier::Basic,
            gpus: 0,
            hostname: None,
            user_data: sealed.clone(),
            ports: Vec::new(),
            readiness: Vec::new(),
            ingress: Vec::new(),
        };
        let opened = open_for_node(CommandAction::CreateVm { spec: spec("vm-1") }).unwrap();
        let CommandAction::CreateVm { spec: opened } = opened else {
            unreachable!()
        };
        assert_eq!(opened.user_data, "#cloud-config\nsecret: x\n");
        assert!(open_for_node(CommandAction::CreateVm { spec: spec("vm-2") }).is_err());
    }
}

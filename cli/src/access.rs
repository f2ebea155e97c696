//! Getting into VMs: the profile the orchestrator sets new VMs up with (`decloud profile …`),
//! what `decloud lease open` saves there before it opens a lease, the sealed password
//! (`decloud vm credentials`), and stop, start and reboot (`decloud vm stop|start|reboot`).

use std::path::PathBuf;

use alloy::{signers::local::PrivateKeySigner, transports::http::reqwest};
use clap::{Args, Subcommand};
use serde_json::json;

use decloud_sdk::{
    VmId,
    agent_protocol::PortSpec,
    api::{Profile, ProfileUpdate, SealedCredentials, VmDetail, check_ports, parse_port_request},
    credentials::{SealingKey, parse_ssh_key},
};

use crate::context::{CliError, GlobalArgs, Report, Settings};
use crate::tenant::{StoredSession, call_api_as, current_session, endpoint};

/// `decloud profile …`: what every VM you open from now on is set up with.
#[derive(Debug, Subcommand)]
pub(crate) enum ProfileCommand {
    /// Show the profile.
    Show(ProfileArgs),
    /// SSH public keys installed for the VM's login user.
    #[command(subcommand)]
    SshKey(SshKeyCommand),
    /// Derive the key your VMs' passwords are sealed to from your wallet (one signature, no
    /// transaction) and register its public half. Without it no password is generated.
    SealingKey(ProfileArgs),
}

/// `decloud profile ssh-key …`.
#[derive(Debug, Subcommand)]
pub(crate) enum SshKeyCommand {
    /// Add the public key in FILE (e.g. ~/.ssh/id_ed25519.pub).
    Add(SshKeyFileArgs),
    /// List the keys.
    List(ProfileArgs),
    /// Remove a key, given as its file, its whole line, or its comment.
    Remove(SshKeyRemoveArgs),
}

/// Only the global options.
#[derive(Debug, Args)]
pub(crate) struct ProfileArgs {
    #[command(flatten)]
    pub(crate) global: GlobalArgs,
}

/// A public key file.
#[derive(Debug, Args)]
pub(crate) struct SshKeyFileArgs {
    /// Public key file.
    file: PathBuf,
    #[command(flatten)]
    global: GlobalArgs,
}

/// The key to remove.
#[derive(Debug, Args)]
pub(crate) struct SshKeyRemoveArgs {
    /// A public key file, a whole key line, or a key's comment.
    key: String,
    #[command(flatten)]
    global: GlobalArgs,
}

/// A VM.
#[derive(Debug, Args)]
pub(crate) struct VmIdArgs {
    /// VM id (`vm-<lease id>`); a malformed one is refused before anything is sent.
    pub(crate) vm: VmId,
    #[command(flatten)]
    pub(crate) global: GlobalArgs,
}

/// Runs a `decloud profile` command.
pub(crate) async fn run_profile(command: ProfileCommand) -> Result<(), CliError> {
    match command {
        ProfileCommand::Show(args) => {
            let (settings, session) = signed_in(&args.global)?;
            print_profile(&get_profile(&settings, &session).await?, args.global.json);
            Ok(())
        }
        ProfileCommand::SshKey(SshKeyCommand::List(args)) => {
            let (settings, session) = signed_in(&args.global)?;
            let profile = get_profile(&settings, &session).await?;
            if args.global.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&profile.ssh_keys).expect("JSON")
                );
            } else {
                println!("{} ssh key(s)", profile.ssh_keys.len());
                profile.ssh_keys.iter().for_each(|k| println!("  {k}"));
            }
            Ok(())
        }
        ProfileCommand::SshKey(SshKeyCommand::Add(args)) => {
            let (settings, session) = signed_in(&args.global)?;
            let key = read_ssh_key(&args.file)?;
            let mut keys = get_profile(&settings, &session).await?.ssh_keys;
            if !keys.contains(&key) {
                keys.push(key);
            }
            let profile = put_profile(
                &settings,
                &session,
                &ProfileUpdate {
                    ssh_keys: Some(keys),
                    ..ProfileUpdate::default()
                },
            )
            .await?;
            print_profile(&profile, args.global.json);
            Ok(())
        }
        ProfileCommand::SshKey(SshKeyCommand::Remove(args)) => {
            let (settings, session) = signed_in(&args.global)?;
            let wanted = match std::fs::read_to_string(&args.key) {
                Ok(text) => parse_ssh_key(&text).map_err(|e| CliError::Invalid(e.to_string()))?,
                Err(_) => args.key.trim().to_string(),
            };
            let keys = get_profile(&settings, &session).await?.ssh_keys;
            let kept: Vec<String> = keys
                .iter()
                .filter(|k| {
                    let same_key = k.split(' ').take(2).eq(wanted.split(' ').take(2));
                    let comment = k.splitn(3, ' ').nth(2);
                    !(same_key || comment == Some(wanted.as_str()))
                })
                .cloned()
                .collect();
            if kept.len() == keys.len() {
                return Err(CliError::Invalid(format!(
                    "no ssh key in the profile matches {:?}",
                    args.key
                )));
            }
            let profile = put_profile(
                &settings,
                &session,
                &ProfileUpdate {
                    ssh_keys: Some(kept),
                    ..ProfileUpdate::default()
                },
            )
            .await?;
            print_profile(&profile, args.global.json);
            Ok(())
        }
        ProfileCommand::SealingKey(args) => {
            let (settings, session) = signed_in(&args.global)?;
            let key = sealing_key(&settings, &session).await?;
            let profile = put_profile(
                &settings,
                &session,
                &ProfileUpdate {
                    sealing_key: Some(key.public_hex()),
                    ..ProfileUpdate::default()
                },
            )
            .await?;
            print_profile(&profile, args.global.json);
            Ok(())
        }
    }
}

fn signed_in(global: &GlobalArgs) -> Result<(Settings, StoredSession), CliError> {
    let settings = Settings::from_process(global)?;
    let session = current_session(&settings)?;
    Ok((settings, session))
}

async fn get_profile(settings: &Settings, session: &StoredSession) -> Result<Profile, CliError> {
    call_api_as(
        reqwest::Client::new()
            .get(endpoint(settings, "/profile"))
            .bearer_auth(&session.token),
        "profile",
    )
    .await
}

async fn put_profile(
    settings: &Settings,
    session: &StoredSession,
    update: &ProfileUpdate,
) -> Result<Profile, CliError> {
    call_api_as(
        reqwest::Client::new()
            .put(endpoint(settings, "/profile"))
            .bearer_auth(&session.token)
            .json(update),
        "profile",
    )
    .await
}

fn print_profile(profile: &Profile, json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(profile).expect("JSON"));
        return;
    }
    println!("ssh keys: {}", profile.ssh_keys.len());
    profile.ssh_keys.iter().for_each(|k| println!("  {k}"));
    println!(
        "sealing key: {}",
        profile
            .sealing_key
            .as_deref()
            .unwrap_or("none (no password is generated for new VMs)")
    );
    if !profile.ports.is_empty() {
        let ports: Vec<String> = profile
            .ports
            .iter()
            .map(|p| format!("{}/{}", p.guest, p.protocol))
            .collect();
        println!("ports for new VMs: {}", ports.join(" "));
    }
}

fn read_ssh_key(file: &std::path::Path) -> Result<String, CliError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| CliError::Invalid(format!("cannot read {}: {e}", file.display())))?;
    parse_ssh_key(&text).map_err(|e| CliError::Invalid(format!("{}: {e}", file.display())))
}

/// The wallet that signed in, for deriving the sealing key. Another wallet would derive a key
/// its owner cannot reproduce with the session's address.
fn wallet(settings: &Settings, session: &StoredSession) -> Result<PrivateKeySigner, CliError> {
    let signer = decloud_sdk::wallet::load_signer(settings.keystore.as_deref())?;
    if !session
        .address
        .eq_ignore_ascii_case(&format!("{:#x}", signer.address()))
    {
        return Err(CliError::Invalid(format!(
            "the wallet ({:#x}) is not the one signed in ({}): run `decloud login` with it",
            signer.address(),
            session.address
        )));
    }
    Ok(signer)
}

async fn sealing_key(settings: &Settings, session: &StoredSession) -> Result<SealingKey, CliError> {
    let signer = wallet(settings, session)?;
    SealingKey::derive(&signer, session.chain_id)
        .await
        .map_err(|e| CliError::Invalid(e.to_string()))
}

/// What `decloud lease open` saves in the profile before it sends the lease transaction, so the
/// VM the chain event creates has it: the SSH keys of `ssh_key_files` (added), the ports
/// (replacing the profile's, so the VM gets exactly what this command asked for), and the
/// sealing key when the profile has none (one signature). Everything is checked before anything
/// is sent. Without a session nothing can be saved: asking for keys or ports is then an error,
/// and otherwise a note says the VM gets neither keys nor a password.
pub(crate) async fn prepare_lease(
    global: &GlobalArgs,
    ssh_key_files: &[PathBuf],
    port_requests: &[String],
) -> Result<(), CliError> {
    let keys = ssh_key_files
        .iter()
        .map(|f| read_ssh_key(f))
        .collect::<Result<Vec<_>, _>>()?;
    let mut ports: Vec<PortSpec> = Vec::new();
    for request in port_requests {
        ports.extend(parse_port_request(request).map_err(CliError::Invalid)?);
    }
    check_ports(&ports).map_err(CliError::Invalid)?;
    let settings = Settings::from_process(global)?;
    let session = match current_session(&settings) {
        Ok(session) => session,
        Err(e) if keys.is_empty() && ports.is_empty() => {
            eprintln!("note: {e}; the VM gets no SSH key and no password (sign in to set them up)");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let profile = get_profile(&settings, &session).await?;
    let mut update = ProfileUpdate::default();
    if profile.sealing_key.is_none() {
        eprintln!("deriving the key your VM's password is sealed to (your wallet signs a message)");
        update.sealing_key = Some(sealing_key(&settings, &session).await?.public_hex());
    }
    let mut all_keys = profile.ssh_keys.clone();
    for key in keys {
        if !all_keys.contains(&key) {
            all_keys.push(key);
        }
    }
    if all_keys != profile.ssh_keys {
        update.ssh_keys = Some(all_keys);
    }
    if ports != profile.ports {
        update.ports = Some(ports);
    }
    if update != ProfileUpdate::default() {
        put_profile(&settings, &session, &update).await?;
    }
    Ok(())
}

fn vm_path(vm: VmId, tail: &str) -> String {
    // A parsed VM id is `vm-` and digits: nothing in it needs escaping in a path.
    format!("/vms/{vm}{tail}")
}

/// `decloud vm credentials`: fetches the sealed password, derives the key with the wallet and
/// opens it.
pub(crate) async fn vm_credentials(args: VmIdArgs) -> Result<(), CliError> {
    let (settings, session) = signed_in(&args.global)?;
    let sealed: SealedCredentials = call_api_as(
        reqwest::Client::new()
            .get(endpoint(&settings, &vm_path(args.vm, "/credentials")))
            .bearer_auth(&session.token),
        "credentials",
    )
    .await?;
    let key = sealing_key(&settings, &session).await?;
    if key.public_hex() != sealed.sealing_key {
        return Err(CliError::Invalid(format!(
            "these credentials were sealed to {}, and this wallet on chain {} derives {}",
            sealed.sealing_key,
            session.chain_id,
            key.public_hex()
        )));
    }
    let credentials = key
        .open(&sealed.sealed, &sealed.vm_id)
        .map_err(|e| CliError::Invalid(e.to_string()))?;
    if args.global.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "vm": sealed.vm_id,
                "user": credentials.user,
                "password": credentials.password,
                "template_password": credentials.template_password,
            }))
            .expect("JSON")
        );
    } else {
        println!("user: {}", credentials.user);
        println!("password: {}", credentials.password);
        if let Some(p) = &credentials.template_password {
            println!("template password: {p}");
        }
    }
    Ok(())
}

/// `decloud vm stop|start|reboot`.
pub(crate) async fn vm_control(args: VmIdArgs, verb: &'static str) -> Result<(), CliError> {
    let (settings, session) = signed_in(&args.global)?;
    let vm: VmDetail = call_api_as(
        reqwest::Client::new()
            .post(endpoint(&settings, &vm_path(args.vm, &format!("/{verb}"))))
            .bearer_auth(&session.token),
        "VM",
    )
    .await?;
    Report::new(
        match verb {
            "stop" => "vm stop",
            "start" => "vm start",
            _ => "vm reboot",
        },
        vec![("vm", json!(vm.vm.vm_id)), ("state", json!(vm.vm.state))],
    )
    .print(args.global.json);
    Ok(())
}

/// Whether a VM's services are ready, one line per check, for `decloud vm show`.
pub(crate) fn print_readiness(vm: &VmDetail, now: u64) {
    let readiness = &vm.readiness;
    match readiness.ready {
        None => println!("  readiness: not reported by the node yet"),
        Some(true) => println!("  readiness: ready"),
        Some(false) => println!("  readiness: not ready"),
    }
    for service in &readiness.services {
        let state = match service.state {
            decloud_sdk::api::ServiceState::Ready => "ready",
            decloud_sdk::api::ServiceState::NotReady => "not ready",
        };
        let checked = match service.checked_at {
            Some(at) => format!("checked {}s ago", now.saturating_sub(at)),
            None => "not checked yet".to_owned(),
        };
        match &service.detail {
            Some(detail) => println!("    {state:<9} {}  ({checked}): {detail}", service.check),
            None => println!("    {state:<9} {}  ({checked})", service.check),
        }
    }
}

/// How to reach a VM, for `decloud vm show`.
pub(crate) fn print_access(vm: &VmDetail) {
    let access = &vm.access;
    match (&access.public_address, &access.relay) {
        (Some(address), Some(relay)) => println!(
            "  address {address} (relay {}: the node accepts no inbound connections)",
            relay.relay_node_id
        ),
        (Some(address), None) => println!("  address {address}"),
        (None, _) => println!("  address: not reported by the node yet"),
    }
    for f in &access.forwards {
        println!("  port {}/{} -> guest {}", f.public, f.protocol, f.guest);
    }
    if access.forwards.is_empty() && !access.ports.is_empty() {
        let ports: Vec<String> = access
            .ports
            .iter()
            .map(|p| format!("{}/{}", p.guest, p.protocol))
            .collect();
        println!("  ports {} (not forwarded yet)", ports.join(" "));
    }
    for u in &access.urls {
        println!("  {} -> guest {}/http", u.url, u.guest);
    }
    if !access.addresses.is_empty() {
        println!("  guest addresses {}", access.addresses.join(" "));
    }
    if let Some(user) = &access.login_user {
        println!("  login user {user}");
    }
    if let Some(ssh) = &access.ssh_command {
        println!("  {ssh}");
    }
    if access.has_credentials {
        println!("  password: decloud vm credentials {}", vm.vm.vm_id);
    }
    if let Some(t) = &access.relay_traffic {
        println!(
            "  relayed traffic {} bytes in, {} bytes out",
            t.bytes_in, t.bytes_out
        );
    }
}

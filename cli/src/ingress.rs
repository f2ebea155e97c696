//! HTTPS names of a VM's HTTP ports (`decloud vm expose|unexpose`): the port is served at
//! `https://<name>.<ingress domain>` by its node's ingress.

use alloy::transports::http::reqwest;
use clap::Args;
use serde_json::json;

use decloud_sdk::{
    VmId,
    api::{ExposeRequest, VmDetail, check_ingress_name},
};

use crate::context::{CliError, GlobalArgs, Report, Settings};
use crate::tenant::{call_api_as, current_session, endpoint};

/// `decloud vm expose`.
#[derive(Debug, Args)]
pub(crate) struct VmExposeArgs {
    /// VM id (`vm-<lease id>`).
    vm: VmId,
    /// Guest port that speaks HTTP.
    #[arg(long)]
    port: u16,
    /// The name (one lowercase DNS label, unique on the orchestrator); without it the port keeps
    /// its name or gets one derived from the VM and port (`vm-7-8080`).
    #[arg(long)]
    name: Option<String>,
    #[command(flatten)]
    global: GlobalArgs,
}

/// `decloud vm unexpose`.
#[derive(Debug, Args)]
pub(crate) struct VmUnexposeArgs {
    /// VM id (`vm-<lease id>`).
    vm: VmId,
    /// Guest port whose name goes.
    #[arg(long)]
    port: u16,
    #[command(flatten)]
    global: GlobalArgs,
}

fn path(vm: VmId, port: u16) -> String {
    // A parsed VM id is `vm-` and digits: nothing in it needs escaping in a path.
    format!("/vms/{vm}/ingress/{port}")
}

fn report(action: &'static str, vm: &VmDetail, port: u16, json: bool) {
    let url = vm.access.urls.iter().find(|u| u.guest == port);
    Report::new(
        action,
        vec![
            ("vm", json!(vm.vm.vm_id)),
            ("port", json!(port)),
            ("url", json!(url.map(|u| u.url.clone()))),
            (
                "urls",
                json!(vm.access.urls.iter().map(|u| &u.url).collect::<Vec<_>>()),
            ),
        ],
    )
    .print(json);
}

/// Names a port of one of your VMs; a bad name is refused before anything is sent.
pub(crate) async fn expose(args: VmExposeArgs) -> Result<(), CliError> {
    if args.port == 0 {
        return Err(CliError::Invalid(
            "port 0 is not a port: use 1 to 65535".into(),
        ));
    }
    if let Some(name) = &args.name {
        check_ingress_name(name).map_err(CliError::Invalid)?;
    }
    let settings = Settings::from_process(&args.global)?;
    let session = current_session(&settings)?;
    let vm: VmDetail = call_api_as(
        reqwest::Client::new()
            .put(endpoint(&settings, &path(args.vm, args.port)))
            .bearer_auth(&session.token)
            .json(&ExposeRequest { name: args.name }),
        "VM",
    )
    .await?;
    report("vm expose", &vm, args.port, args.global.json);
    Ok(())
}

/// Removes the name of a port of one of your VMs.
pub(crate) async fn unexpose(args: VmUnexposeArgs) -> Result<(), CliError> {
    let settings = Settings::from_process(&args.global)?;
    let session = current_session(&settings)?;
    let vm: VmDetail = call_api_as(
        reqwest::Client::new()
            .delete(endpoint(&settings, &path(args.vm, args.port)))
            .bearer_auth(&session.token),
        "VM",
    )
    .await?;
    report("vm unexpose", &vm, args.port, args.global.json);
    Ok(())
}

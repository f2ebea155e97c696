//! HTTPS names of a VM's HTTP ports (`decloud vm expose|unexpose`): the port is served at
//! `https://<name>.<ingress domain>` by its node's ingress.

use alloy::transports::http::reqwest;
use clap::Args;
use serde_json::json;

use decloud_sdk::{
    VmId,
    api::{ExposeRequest, IngressNameFree, IngressUrl, VmDetail, check_ingress_name},
};

use crate::context::{CliError, GlobalArgs, Report, Settings};
use crate::tenant::{StoredSession, call_api_as, current_session, endpoint};

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

/// A port to name when a lease opens (`decloud lease open --expose PORT=NAME`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ExposeAtOpen {
    /// Guest port that speaks HTTP.
    pub(crate) port: u16,
    /// The name it gets.
    pub(crate) name: String,
}

/// Parses `PORT=NAME` (`8080=myapp`), checking the name as the orchestrator will.
pub(crate) fn parse_expose(text: &str) -> Result<ExposeAtOpen, String> {
    let (port, name) = text
        .split_once('=')
        .ok_or_else(|| format!("--expose {text:?}: write PORT=NAME, e.g. 8080=myapp"))?;
    let port = match port.parse::<u16>() {
        Ok(0) | Err(_) => {
            return Err(format!(
                "--expose {text:?}: {port:?} is not a port: use 1 to 65535"
            ));
        }
        Ok(port) => port,
    };
    check_ingress_name(name).map_err(|e| format!("--expose {text:?}: {e}"))?;
    Ok(ExposeAtOpen {
        port,
        name: name.to_string(),
    })
}

/// Checks the names asked for at lease open before anything is paid: each port and name once,
/// and each name free on the orchestrator now (which reserves nothing: a name taken in the
/// meantime is reported after the lease opens).
pub(crate) async fn check_before_open(
    settings: &Settings,
    exposes: &[ExposeAtOpen],
) -> Result<(), CliError> {
    for (i, e) in exposes.iter().enumerate() {
        if exposes[..i].iter().any(|o| o.port == e.port) {
            return Err(CliError::Invalid(format!(
                "--expose names port {} twice; nothing was sent",
                e.port
            )));
        }
        if exposes[..i].iter().any(|o| o.name == e.name) {
            return Err(CliError::Invalid(format!(
                "--expose gives the name {:?} twice; nothing was sent",
                e.name
            )));
        }
    }
    let http = reqwest::Client::new();
    for e in exposes {
        // A checked name is one DNS label: nothing in it needs escaping in a path.
        let free: Result<IngressNameFree, _> = call_api_as(
            http.get(endpoint(settings, &format!("/ingress/names/{}", e.name))),
            "name check",
        )
        .await;
        if let Err(err) = free {
            return Err(CliError::Invalid(format!(
                "--expose {}={}: {err}; nothing was sent",
                e.port, e.name
            )));
        }
    }
    Ok(())
}

/// Gives the names asked for at lease open to lease `lease`'s VM (the orchestrator reads the
/// lease from the chain when it has not followed it yet). Returns the VM's URLs, or an error
/// that says the lease is open and which name was not given.
pub(crate) async fn name_after_open(
    settings: &Settings,
    session: &StoredSession,
    lease: &str,
    exposes: &[ExposeAtOpen],
) -> Result<Vec<IngressUrl>, CliError> {
    let http = reqwest::Client::new();
    let mut urls = Vec::new();
    for e in exposes {
        // The lease id is the decimal the LeaseOpened event carried.
        let answer: Result<Vec<IngressUrl>, _> = call_api_as(
            http.put(endpoint(
                settings,
                &format!("/leases/{lease}/ingress/{}", e.port),
            ))
            .bearer_auth(&session.token)
            .json(&ExposeRequest {
                name: Some(e.name.clone()),
            }),
            "names",
        )
        .await;
        match answer {
            Ok(now) => urls = now,
            Err(err) => {
                return Err(CliError::Api(format!(
                    "lease {lease} is open, but port {} was not given the name {:?}: {err}. \
                     Name it later with `decloud vm expose vm-{lease} --port {} --name NAME`",
                    e.port, e.name, e.port
                )));
            }
        }
    }
    Ok(urls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expose_at_open_is_port_equals_name() {
        assert_eq!(
            parse_expose("8080=myapp"),
            Ok(ExposeAtOpen {
                port: 8080,
                name: "myapp".into()
            })
        );
        for (bad, says) in [
            ("8080", "PORT=NAME"),
            ("0=web", "not a port"),
            ("70000=web", "not a port"),
            ("8080=My_App", "lowercase"),
            ("8080=www", "reserved"),
            ("8080=", "1 to 63"),
        ] {
            let e = parse_expose(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}

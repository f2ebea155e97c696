//! Interactive serial consoles of the node's VMs, for the orchestrator link.
//!
//! Each domain's first serial port is a unix socket QEMU listens on ([`CONSOLE_SOCKET`] in the
//! VM's directory) with a log file beside it, so the readiness probes keep reading the log
//! while a tenant types on the socket. A session ([`Consoles::open`]) connects to that socket
//! and copies bytes both ways: the guest's output into the link's queue as
//! [`AgentMessage::ConsoleOutput`] frames, the tenant's input from
//! [`Consoles::input`] to the guest.
//!
//! One session per VM: opening a second one replaces the first (QEMU serves one client at a
//! time, and the newer client is the tenant who is at the keyboard now). Every session ends
//! with exactly one [`AgentMessage::ConsoleClosed`] that says why. Nothing here ever waits on
//! the orchestrator: output goes to the link with `try_send`, and a session whose output the
//! link cannot take is dropped, so a slow or vanished tenant never holds up heartbeats,
//! commands or another VM's console.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use decloud_sdk::agent_protocol::{AgentMessage, CONSOLE_CHUNK_BYTES, VmState};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::UnixStream,
    sync::{mpsc, oneshot},
};
use tracing::{debug, info, warn};

use crate::{agent::Agent, error::Error};

/// File name of a VM's console socket inside its directory (beside `console.log`).
pub const CONSOLE_SOCKET: &str = "console.sock";

/// Input chunks waiting for the guest, per session; more means the guest stopped reading and
/// the session is dropped rather than buffering without bound.
const INPUT_QUEUE: usize = 64;

/// How long a session's final `console_closed` frame may wait for room in the link's queue.
const CLOSE_FRAME_WAIT: Duration = Duration::from_secs(5);

/// Why a session ends, as the tenant reads it.
const REPLACED: &str = "replaced by a newer console session for this vm";
const CLOSED_BY_SERVER: &str = "closed by the orchestrator";
const LINK_LOST: &str = "the node agent's link to the orchestrator went down";
const INPUT_BACKLOG: &str = "the vm is not reading console input; session dropped";

/// The console sessions of one agent. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Consoles {
    attached: Arc<Mutex<HashMap<String, Attached>>>,
}

/// A session attached to a VM (the map's key).
#[derive(Debug)]
struct Attached {
    session: String,
    input: mpsc::Sender<Vec<u8>>,
    stop: oneshot::Sender<&'static str>,
}

impl Consoles {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Attached>> {
        self.attached.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens session `session` on the console of `vm_id`; the guest's output and the session's
    /// end go to `out`. Returns at once: the session is registered before this returns (so
    /// input sent right after the open is kept), and connects in the background. A refused
    /// open (unknown or stopped VM, no console socket) ends with a `console_closed` that says
    /// why.
    pub fn open(
        &self,
        agent: Agent,
        session: String,
        vm_id: String,
        out: mpsc::Sender<AgentMessage>,
    ) {
        let (input_tx, input_rx) = mpsc::channel(INPUT_QUEUE);
        let (stop_tx, stop_rx) = oneshot::channel();
        let replaced = self.lock().insert(
            vm_id.clone(),
            Attached {
                session: session.clone(),
                input: input_tx,
                stop: stop_tx,
            },
        );
        if let Some(old) = replaced {
            info!(target: "agent::console", vm = %vm_id, old = %old.session, new = %session, "console session replaced");
            let _ = old.stop.send(REPLACED);
        }
        let consoles = self.clone();
        tokio::spawn(async move {
            let reason = serve(&agent, &vm_id, &out, input_rx, stop_rx, &session).await;
            consoles.forget(&vm_id, &session);
            info!(target: "agent::console", vm = %vm_id, %session, %reason, "console session ended");
            let closed = AgentMessage::ConsoleClosed { session, reason };
            // The link may be gone (nobody to tell) or busy; either way this task must end.
            let _ = tokio::time::timeout(CLOSE_FRAME_WAIT, out.send(closed)).await;
        });
    }

    /// Hands the tenant's bytes to the session's guest. Input for a session that is not
    /// attached (it just ended) is dropped; a session whose guest does not keep up is ended.
    pub fn input(&self, session: &str, data: Vec<u8>) {
        let mut attached = self.lock();
        let Some(vm_id) = attached
            .iter()
            .find(|(_, a)| a.session == session)
            .map(|(vm, _)| vm.clone())
        else {
            debug!(target: "agent::console", %session, "input for a session that is not attached");
            return;
        };
        let full = matches!(
            attached[&vm_id].input.try_send(data),
            Err(mpsc::error::TrySendError::Full(_))
        );
        if full && let Some(entry) = attached.remove(&vm_id) {
            let _ = entry.stop.send(INPUT_BACKLOG);
        }
    }

    /// Ends a session at the orchestrator's request.
    pub fn close(&self, session: &str) {
        let mut attached = self.lock();
        let vm_id = attached
            .iter()
            .find(|(_, a)| a.session == session)
            .map(|(vm, _)| vm.clone());
        if let Some(entry) = vm_id.and_then(|vm| attached.remove(&vm)) {
            let _ = entry.stop.send(CLOSED_BY_SERVER);
        }
    }

    /// Ends every session (the link they report to went down).
    pub fn close_all(&self) {
        for (_, entry) in self.lock().drain() {
            let _ = entry.stop.send(LINK_LOST);
        }
    }

    /// The attached sessions as (VM id, session id), sorted by VM.
    pub fn attached(&self) -> Vec<(String, String)> {
        let mut list: Vec<_> = self
            .lock()
            .iter()
            .map(|(vm, a)| (vm.clone(), a.session.clone()))
            .collect();
        list.sort();
        list
    }

    /// Removes the entry of `vm_id` if it still belongs to `session` (a newer session may have
    /// taken its place already).
    fn forget(&self, vm_id: &str, session: &str) {
        let mut attached = self.lock();
        if attached.get(vm_id).is_some_and(|a| a.session == session) {
            attached.remove(vm_id);
        }
    }
}

/// Path of a VM's console socket.
pub fn socket_path(agent: &Agent, vm_id: &str) -> PathBuf {
    agent.vm_dir(vm_id).join(CONSOLE_SOCKET)
}

/// Connects and copies until the session ends; returns why it ended.
async fn serve(
    agent: &Agent,
    vm_id: &str,
    out: &mpsc::Sender<AgentMessage>,
    mut input: mpsc::Receiver<Vec<u8>>,
    mut stop: oneshot::Receiver<&'static str>,
    session: &str,
) -> String {
    let mut socket = tokio::select! {
        connected = connect(agent, vm_id) => match connected {
            Ok(socket) => socket,
            Err(reason) => return reason,
        },
        reason = &mut stop => return reason.unwrap_or(CLOSED_BY_SERVER).to_owned(),
    };
    info!(target: "agent::console", vm = %vm_id, %session, "console session attached");
    let mut buf = vec![0u8; CONSOLE_CHUNK_BYTES];
    loop {
        tokio::select! {
            read = socket.read(&mut buf) => match read {
                Ok(0) => return "the vm's console closed (the vm stopped)".into(),
                Ok(n) => {
                    let frame = AgentMessage::ConsoleOutput {
                        session: session.to_owned(),
                        data: buf[..n].to_vec().into(),
                    };
                    match out.try_send(frame) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            warn!(target: "agent::console", vm = %vm_id, %session, "link queue full, dropping the console session");
                            return "the link to the orchestrator could not keep up with the console's output; session dropped".into();
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => return LINK_LOST.into(),
                    }
                }
                Err(e) => return format!("reading the vm's console failed: {e}"),
            },
            data = input.recv() => match data {
                Some(data) => {
                    if let Err(e) = socket.write_all(&data).await {
                        return format!("writing to the vm's console failed: {e}");
                    }
                }
                // The entry (and its sender) is gone only together with a stop reason.
                None => return (&mut stop).await.unwrap_or(CLOSED_BY_SERVER).to_owned(),
            },
            reason = &mut stop => return reason.unwrap_or(CLOSED_BY_SERVER).to_owned(),
        }
    }
}

/// Checks that the VM runs here and connects to its console socket.
async fn connect(agent: &Agent, vm_id: &str) -> Result<UnixStream, String> {
    let report = match agent.report(vm_id).await {
        Ok(report) => report,
        Err(Error::UnknownVm(_)) => return Err(format!("no vm {vm_id} on this node")),
        Err(e) => return Err(format!("cannot look up vm {vm_id}: {e}")),
    };
    if report.state != VmState::Running {
        return Err(format!(
            "vm {vm_id} is {}; its console is available while it runs",
            report.state
        ));
    }
    let path = socket_path(agent, vm_id);
    if !path.exists() {
        // Domains defined before consoles existed write their serial port to a file only.
        return Err(format!(
            "vm {vm_id} has no console socket (its domain predates interactive consoles)"
        ));
    }
    UnixStream::connect(&path)
        .await
        .map_err(|e| format!("cannot reach the console of vm {vm_id}: {e}"))
}

//! Commands run inside a guest by its QEMU guest agent (`qemu-ga`), for readiness checks.
//!
//! The guest agent speaks JSON commands over the VM's `org.qemu.guest_agent.0` virtio
//! channel; libvirt owns that channel and relays one command at a time
//! (`virDomainQemuAgentCommand`, see [`crate::Hypervisor::guest_agent_command`]). Running a
//! program takes two of them:
//!
//! ```text
//! {"execute":"guest-exec","arguments":{"path":"/bin/sh","arg":["-c","…"],"capture-output":true}}
//!   -> {"return":{"pid":1234}}
//! {"execute":"guest-exec-status","arguments":{"pid":1234}}
//!   -> {"return":{"exited":false}}                       (asked again until it exits)
//!   -> {"return":{"exited":true,"exitcode":0,"out-data":"<base64>","err-data":"<base64>"}}
//! ```
//!
//! [`run`] holds that exchange and takes the transport as a function, so the same code runs
//! over libvirt on a node and over any other carrier of the protocol.

use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// How a guest command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    /// Exit code; `None` when a signal ended it.
    pub exit_code: Option<i64>,
    /// Signal that ended it, if one did.
    pub signal: Option<i64>,
    /// What it printed on stdout (lossy UTF-8).
    pub stdout: String,
    /// What it printed on stderr (lossy UTF-8).
    pub stderr: String,
}

impl ExecOutcome {
    /// Whether the command exited with 0.
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0)
    }

    /// Why it did not succeed, for tenants: exit code or signal, and the first line of its
    /// error output (or of its output when stderr is empty).
    pub fn failure(&self) -> String {
        let how = match (self.exit_code, self.signal) {
            (_, Some(signal)) => format!("killed by signal {signal}"),
            (Some(code), None) => format!("exit code {code}"),
            (None, None) => "ended without an exit code".to_owned(),
        };
        let said = [&self.stderr, &self.stdout]
            .into_iter()
            .find_map(|text| text.lines().map(str::trim).find(|l| !l.is_empty()));
        match said {
            Some(line) => format!("{how}: {line}"),
            None => how,
        }
    }
}

/// Pause between two `guest-exec-status` questions.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Runs `command` (an absolute program path and its arguments) in the guest through
/// `send`, which delivers one guest-agent command (JSON text) and returns the agent's reply
/// (JSON text). Gives up after `timeout`; the guest process is then left to finish on its own.
pub fn run(
    send: &mut dyn FnMut(&str) -> Result<String, String>,
    command: &[String],
    timeout: Duration,
) -> Result<ExecOutcome, String> {
    let (path, args) = command
        .split_first()
        .ok_or_else(|| "empty command".to_owned())?;
    let started = json!({
        "execute": "guest-exec",
        "arguments": { "path": path, "arg": args, "capture-output": true },
    });
    let reply = answer(&send(&started.to_string())?)?;
    let pid = reply["pid"]
        .as_i64()
        .ok_or_else(|| format!("guest-exec answered without a pid: {reply}"))?;
    let deadline = Instant::now() + timeout;
    let status = json!({ "execute": "guest-exec-status", "arguments": { "pid": pid } }).to_string();
    loop {
        let reply = answer(&send(&status)?)?;
        if reply["exited"].as_bool() == Some(true) {
            return Ok(ExecOutcome {
                exit_code: reply["exitcode"].as_i64(),
                signal: reply["signal"].as_i64(),
                stdout: decoded(&reply["out-data"])?,
                stderr: decoded(&reply["err-data"])?,
            });
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "still running after {} s (pid {pid} in the guest)",
                timeout.as_secs()
            ));
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// The `return` member of a reply, or the agent's error as text.
fn answer(reply: &str) -> Result<Value, String> {
    let value: Value =
        serde_json::from_str(reply).map_err(|e| format!("unreadable guest agent reply: {e}"))?;
    if let Some(error) = value.get("error") {
        let text = error["desc"].as_str().unwrap_or("unknown error");
        return Err(format!("guest agent: {text}"));
    }
    value
        .get("return")
        .cloned()
        .ok_or_else(|| format!("guest agent reply without a result: {reply}"))
}

fn decoded(data: &Value) -> Result<String, String> {
    let Some(text) = data.as_str() else {
        return Ok(String::new());
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("guest agent output is not base64: {e}"))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_explain_failures() {
        let outcome = |exit_code, signal, stderr: &str| ExecOutcome {
            exit_code,
            signal,
            stdout: "out\n".into(),
            stderr: stderr.into(),
        };
        assert!(outcome(Some(0), None, "").succeeded());
        assert_eq!(
            outcome(Some(3), None, "\n  no such file\nmore").failure(),
            "exit code 3: no such file"
        );
        assert_eq!(outcome(Some(1), None, "").failure(), "exit code 1: out");
        assert_eq!(
            outcome(None, Some(9), "").failure(),
            "killed by signal 9: out"
        );
    }

    #[test]
    fn agent_errors_and_bad_replies_are_reported() {
        let mut refuses = |_: &str| -> Result<String, String> {
            Ok(r#"{"error":{"class":"GenericError","desc":"Guest-exec is disabled"}}"#.into())
        };
        assert_eq!(
            run(&mut refuses, &["/bin/true".into()], Duration::ZERO).unwrap_err(),
            "guest agent: Guest-exec is disabled"
        );
        let mut garbage = |_: &str| -> Result<String, String> { Ok("not json".into()) };
        assert!(
            run(&mut garbage, &["/bin/true".into()], Duration::ZERO)
                .unwrap_err()
                .starts_with("unreadable guest agent reply")
        );
        let mut unused = |_: &str| -> Result<String, String> { unreachable!() };
        assert_eq!(
            run(&mut unused, &[], Duration::ZERO).unwrap_err(),
            "empty command"
        );
    }
}

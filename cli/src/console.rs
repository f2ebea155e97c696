//! `decloud vm console <vm>`: attaches the terminal to a VM's serial console over the
//! orchestrator's console WebSocket (`/api/v1/vms/{id}/console`).
//!
//! On a terminal, stdin goes into raw mode (every key, Ctrl-C included, goes to the guest) and
//! `Ctrl-]` detaches; the terminal's mode is restored on every way out (detach, the server
//! ending the session, an error, SIGTERM or SIGHUP, a panic). When stdin is not a terminal
//! (a pipe, a test), its bytes are sent as they come; at its end the console stays attached
//! until the guest has been quiet for [`PIPE_QUIET`], so the answer to the last line is
//! printed, then detaches.

use std::{io::Write as _, time::Duration};

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{
    self, Message, client::IntoClientRequest as _, http::HeaderValue,
};

use crate::{
    context::{CliError, GlobalArgs, Settings},
    tenant::{current_session, endpoint},
};
use decloud_sdk::{VmId, api::ErrorBody};

/// The detach key: `Ctrl-]`, as telnet and `virsh console` use.
pub(crate) const DETACH: u8 = 0x1d;
/// After piped input ends, how long the guest must stay silent before detaching.
pub(crate) const PIPE_QUIET: Duration = Duration::from_secs(1);

/// `decloud vm console`.
#[derive(Debug, clap::Args)]
pub(crate) struct VmConsoleArgs {
    /// VM id (`vm-<lease id>`); a malformed one is refused before anything is sent.
    pub(crate) vm: VmId,
    #[command(flatten)]
    pub(crate) global: GlobalArgs,
}

/// Runs `decloud vm console`.
pub(crate) async fn run(args: VmConsoleArgs) -> Result<(), CliError> {
    let settings = Settings::from_process(&args.global)?;
    let session = current_session(&settings)?;
    // A parsed VM id is `vm-` and digits: nothing in it needs escaping in a path.
    let url = websocket_url(&endpoint(&settings, &format!("/vms/{}/console", args.vm)))?;
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| CliError::Invalid(format!("console address {url}: {e}")))?;
    let bearer = HeaderValue::from_str(&format!("Bearer {}", session.token))
        .map_err(|_| CliError::Invalid("the stored session token is not a valid header".into()))?;
    request.headers_mut().insert("authorization", bearer);
    // No Nagle: keystrokes are tiny writes that must leave at once.
    let (socket, _) = tokio_tungstenite::connect_async_with_config(request, None, true)
        .await
        .map_err(refusal)?;

    let terminal = stdin_is_terminal();
    if terminal {
        eprintln!(
            "Connected to the console of {}. Detach with Ctrl-] (press Enter first if the prompt does not show).",
            args.vm
        );
    }
    // Restores the terminal when dropped: on every return below and on a panic's unwinding.
    let raw = if terminal {
        Some(RawMode::enter()?)
    } else {
        None
    };
    let ended = attach(socket, terminal).await;
    drop(raw);
    match ended? {
        End::Detached => {
            if terminal {
                eprintln!("\nDetached from the console of {}.", args.vm);
            }
            Ok(())
        }
        End::Closed(reason) => Err(CliError::Api(format!("console closed: {reason}"))),
    }
}

/// How a session ended.
#[derive(Debug)]
enum End {
    /// The user detached (the detach key, end of piped input, a signal).
    Detached,
    /// The server ended it, with its reason.
    Closed(String),
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Copies stdin to the socket and the socket to stdout until the session ends.
async fn attach(mut socket: Socket, terminal: bool) -> Result<End, CliError> {
    let mut input = read_stdin();
    let mut signals = Signals::new()?;
    let mut stdout = std::io::stdout();
    let mut input_done = false;
    let detach = loop {
        // After piped input ended, a quiet guest means the answer is complete.
        let quiet = async {
            if input_done {
                tokio::time::sleep(PIPE_QUIET).await
            } else {
                std::future::pending().await
            }
        };
        tokio::select! {
            chunk = input.recv(), if !input_done => match chunk {
                Some(mut bytes) => {
                    let mut detach = false;
                    if terminal && let Some(at) = bytes.iter().position(|b| *b == DETACH) {
                        bytes.truncate(at);
                        detach = true;
                    }
                    if !bytes.is_empty() {
                        socket.send(Message::binary(bytes)).await.map_err(lost)?;
                    }
                    if detach {
                        break true;
                    }
                }
                None => input_done = true,
            },
            frame = socket.next() => match frame {
                Some(Ok(Message::Binary(data))) => write_out(&mut stdout, &data)?,
                Some(Ok(Message::Text(text))) => write_out(&mut stdout, text.as_bytes())?,
                Some(Ok(Message::Close(frame))) => {
                    let reason = frame
                        .map(|f| f.reason.to_string())
                        .filter(|r| !r.is_empty())
                        .unwrap_or_else(|| "the server closed the session".into());
                    return Ok(End::Closed(reason));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(lost(e)),
                None => return Ok(End::Closed("the connection ended".into())),
            },
            () = quiet => break true,
            () = signals.next() => break true,
        }
    };
    debug_assert!(detach);
    // Closing the socket ends the session on the node.
    let _ = socket.close(None).await;
    Ok(End::Detached)
}

fn write_out(stdout: &mut std::io::Stdout, data: &[u8]) -> Result<(), CliError> {
    stdout
        .write_all(data)
        .and_then(|()| stdout.flush())
        .map_err(|e| CliError::Api(format!("writing the console output failed: {e}")))
}

fn lost(e: tungstenite::Error) -> CliError {
    CliError::Api(format!("console connection lost: {e}"))
}

/// The orchestrator's refusal in its words: the API's error shape, or what came instead.
fn refusal(e: tungstenite::Error) -> CliError {
    match e {
        tungstenite::Error::Http(response) => {
            let status = response.status();
            let body = response.body().as_deref().unwrap_or_default();
            match serde_json::from_slice::<ErrorBody>(body) {
                Ok(e) => CliError::Api(format!("{status} {}: {}", e.error.code, e.error.message)),
                Err(_) => CliError::Api(format!(
                    "{status}: {}",
                    String::from_utf8_lossy(body).trim()
                )),
            }
        }
        other => CliError::Api(format!("cannot open the console: {other}")),
    }
}

/// `http(s)://…` as `ws(s)://…`.
fn websocket_url(http: &str) -> Result<url::Url, CliError> {
    let mut url: url::Url = http
        .parse()
        .map_err(|e| CliError::Invalid(format!("orchestrator address {http}: {e}")))?;
    let scheme = match url.scheme() {
        "http" => "ws",
        "https" => "wss",
        other => {
            return Err(CliError::Invalid(format!(
                "orchestrator address {http}: scheme {other} is not http or https"
            )));
        }
    };
    url.set_scheme(scheme)
        .map_err(|()| CliError::Invalid(format!("cannot use {http} as a WebSocket address")))?;
    Ok(url)
}

/// Reads stdin on its own thread (a blocking read must not hold up the async runtime, nor its
/// shutdown); the channel ends at end of input.
fn read_stdin() -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 4096];
        loop {
            match std::io::Read::read(&mut stdin, &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

fn stdin_is_terminal() -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(libc::STDIN_FILENO) == 1 }
}

/// The terminal in raw mode; the saved mode comes back when this is dropped.
struct RawMode {
    saved: libc::termios,
}

impl RawMode {
    fn enter() -> Result<Self, CliError> {
        let fail = |what: &str| {
            CliError::Invalid(format!(
                "cannot {what} the terminal: {}",
                std::io::Error::last_os_error()
            ))
        };
        // SAFETY: termios is plain data; tcgetattr fills it for a terminal descriptor.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut saved) } != 0 {
            return Err(fail("read the mode of"));
        }
        let mut raw = saved;
        // SAFETY: cfmakeraw edits the struct it is given.
        unsafe { libc::cfmakeraw(&mut raw) };
        if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &raw) } != 0 {
            return Err(fail("switch to raw mode"));
        }
        Ok(Self { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restores the mode read in `enter` on the same descriptor.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.saved) };
    }
}

/// SIGINT (in pipe mode; a raw terminal sends Ctrl-C to the guest instead), SIGTERM and SIGHUP
/// detach cleanly, so the terminal is restored and the session closed.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Self, CliError> {
        use tokio::signal::unix::{SignalKind, signal};
        let listen = |kind| {
            signal(kind).map_err(|e| CliError::Invalid(format!("cannot listen for signals: {e}")))
        };
        Ok(Self {
            interrupt: listen(SignalKind::interrupt())?,
            terminate: listen(SignalKind::terminate())?,
            hangup: listen(SignalKind::hangup())?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
            _ = self.hangup.recv() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_addresses_follow_the_orchestrators_scheme() {
        assert_eq!(
            websocket_url("http://127.0.0.1:8080/api/v1/vms/vm-1/console")
                .unwrap()
                .as_str(),
            "ws://127.0.0.1:8080/api/v1/vms/vm-1/console"
        );
        assert_eq!(
            websocket_url("https://o.example/api/v1/vms/a/console")
                .unwrap()
                .scheme(),
            "wss"
        );
        assert!(websocket_url("ftp://o.example/x").is_err());
    }
}

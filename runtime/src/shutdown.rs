//! The shutdown signal every long-running binary stops on.

use std::future::Future;

/// Registers SIGINT and SIGTERM handlers now and returns a future that completes when either
/// arrives. Registering before the program starts its work means a signal during startup
/// already stops it gracefully instead of killing it with the default action. The error is the
/// operating system refusing a handler.
#[cfg(unix)]
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        let name = tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        tracing::info!(target: "decloud::shutdown", signal = name, "shutting down");
    })
}

/// Completes on Ctrl-C (the only stop request other platforms share).
#[cfg(not(unix))]
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!(target: "decloud::shutdown", signal = "Ctrl-C", "shutting down");
    })
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn completes_on_sigterm_to_this_process() {
        let signal = shutdown_signal().unwrap();
        // The handler is registered, so SIGTERM no longer kills the test process: it ends the
        // future instead.
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        signal.await;
    }
}

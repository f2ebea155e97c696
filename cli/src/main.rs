//! `decloud`: DeCloud's command-line interface (deploy the contracts, run the local network).

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    // Rust ignores SIGPIPE, so printing into a closed pipe (`decloud vm list | head -1`) fails
    // every later write and `println!` panics. Like every other command-line tool, `decloud`
    // should just end quietly when its reader goes away: restore the default action.
    // SAFETY: called first thing in main, before any thread exists; SIG_DFL is a valid action.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    decloud_cli::run(decloud_cli::Cli::parse())
}

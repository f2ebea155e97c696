//! `decloud`: DeCloud's command-line interface (deploy the contracts, run the local network).

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    decloud_cli::run(decloud_cli::Cli::parse())
}

//! `decloud`: DeCloud's command-line interface (deploy the contracts, run the local network).

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    decloud_sdk::run(decloud_sdk::Cli::parse())
}

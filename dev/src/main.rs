//! `decloud-dev`: the local network (see the library documentation).

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    decloud_dev::run(decloud_dev::Cli::parse())
}

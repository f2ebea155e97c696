//! `decloud-node-agent`: see the library documentation.

fn main() -> std::process::ExitCode {
    decloud_node_agent::main()
}

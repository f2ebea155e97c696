//! `decloud-orchestrator`: the orchestrator server.

fn main() {}

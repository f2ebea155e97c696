//! DeCloud SDK: the vocabulary shared by DeCloud's services and clients.

pub mod agent_protocol;

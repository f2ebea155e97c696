-- Commands for node agents: queued here first, delivered over the agent's connection, resent
-- until acknowledged. The id is the idempotency key the agent deduplicates on.
CREATE TABLE agent_commands (
    command_id TEXT PRIMARY KEY,
    node_id TEXT NOT NULL,
    action TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    attempts BIGINT NOT NULL,
    last_sent_at BIGINT,
    acked_at BIGINT,
    outcome TEXT
);
CREATE INDEX agent_commands_node ON agent_commands (node_id, acked_at);

-- Each storage node's proof record as the orchestrator counts it from StorageMarket itself (never
-- from the node's own report): replica-epochs the node was due to prove (closed epochs of the
-- replicas it held, the epoch a replica arrived counting only when proven) and those of them the
-- market recorded proven (what its EpochProven events announce).
CREATE TABLE storage_proof_counts (
    node_id TEXT NOT NULL PRIMARY KEY,
    due_epochs BIGINT NOT NULL,
    proven_epochs BIGINT NOT NULL
);

-- How far each replica of the watched deals is counted: `node_id` held it when it was last
-- counted, `next_epoch` is the first epoch not counted yet. Moving a cursor and adding to the
-- counts happen in one transaction, so a restart neither loses nor counts an epoch twice.
CREATE TABLE storage_proof_cursors (
    deal_id BIGINT NOT NULL,
    replica BIGINT NOT NULL,
    node_id TEXT NOT NULL,
    next_epoch BIGINT NOT NULL,
    PRIMARY KEY (deal_id, replica)
);

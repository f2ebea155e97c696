-- StorageMarket's repair events: a deal's repairer and early end, a replica's moves between nodes.

ALTER TABLE deals ADD COLUMN repairer TEXT;
ALTER TABLE deals ADD COLUMN ended_block BIGINT;
ALTER TABLE deal_replicas ADD COLUMN moves BIGINT NOT NULL DEFAULT 0;
CREATE TABLE replica_moves (
    id TEXT PRIMARY KEY,
    deal TEXT NOT NULL,
    replica BIGINT NOT NULL,
    old_node TEXT NOT NULL,
    new_node TEXT NOT NULL,
    new_root TEXT NOT NULL,
    payee TEXT NOT NULL,
    block_number BIGINT NOT NULL,
    tx_hash TEXT NOT NULL
);

CREATE INDEX replica_moves_deal ON replica_moves (deal, replica);
CREATE INDEX replica_moves_old_node ON replica_moves (old_node);

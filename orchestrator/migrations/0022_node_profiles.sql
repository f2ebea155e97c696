-- What a node's on-chain metadataCid named when it was last read: the description (the tags go to
-- nodes.tags, where the marketplace filters on them), or why the profile was ignored. A node whose
-- metadataCid differs from `cid` here is read again.
CREATE TABLE node_profiles (
    node_id TEXT PRIMARY KEY,
    cid TEXT NOT NULL,
    description TEXT NOT NULL,
    error TEXT,
    fetched_at BIGINT NOT NULL
);

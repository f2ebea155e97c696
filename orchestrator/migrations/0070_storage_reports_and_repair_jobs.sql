-- The latest storage report of each node in the storage role, as its heartbeats carry it: where
-- its chunk API is, its quota and stored bytes, whether it drains, and its proof record (epochs
-- proven and missed over every replica it reports). `report` is the whole report as JSON.
CREATE TABLE storage_node_reports (
    node_id TEXT NOT NULL PRIMARY KEY,
    url TEXT,
    quota_bytes BIGINT NOT NULL,
    stored_bytes BIGINT NOT NULL,
    draining BIGINT NOT NULL,
    proven_epochs BIGINT NOT NULL,
    missed_epochs BIGINT NOT NULL,
    report TEXT NOT NULL,
    reported_at BIGINT NOT NULL
);

-- Repair jobs of storage replicas: a replica of a deal that failed on `from_node` (why: `reason`)
-- rebuilt on `to_node` (chosen before the first move, kept so a crash resumes on the same node).
-- `state`: open (to do, next try at `next_attempt_at`), done, or closed (nothing left to do: the
-- deal ended, the replica moved by someone else, or the node recovered). At most one open job
-- per replica.
CREATE TABLE storage_repair_jobs (
    job_id BIGINT NOT NULL PRIMARY KEY,
    deal_id BIGINT NOT NULL,
    replica BIGINT NOT NULL,
    from_node TEXT NOT NULL,
    reason TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    to_node TEXT,
    error TEXT,
    opened_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX storage_repair_jobs_open ON storage_repair_jobs (deal_id, replica)
    WHERE state = 'open';
CREATE INDEX storage_repair_jobs_deal ON storage_repair_jobs (deal_id, job_id);

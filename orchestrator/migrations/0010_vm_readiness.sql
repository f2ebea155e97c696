-- Each VM's readiness as its node last reported it in a heartbeat: whether it is ready, the
-- result of each service check (JSON array of {probe, ok, detail, checked_at}), and when the
-- report arrived (server clock).
CREATE TABLE vm_readiness (
    vm_id TEXT PRIMARY KEY,
    ready BIGINT NOT NULL,
    services TEXT NOT NULL,
    reported_at BIGINT NOT NULL
);

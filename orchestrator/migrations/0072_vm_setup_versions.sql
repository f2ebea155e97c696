-- Every version of a VM's setup that went into a create command not yet acknowledged: the
-- SHA-256 of its user-data, its guest ports (JSON) and the tenant-sealed passwords in it (none
-- when the tenant has no sealing key). The user-data itself waits only sealed to a key in the
-- orchestrator's memory, so a restart before the acknowledgement puts it together again with new
-- passwords; a node that had run the earlier version answers with that version's digest, and its
-- row here is what the tenant gets back. A 24-character random password inside the hashed
-- user-data keeps the digest from revealing it. Rows go when the create is acknowledged.
CREATE TABLE vm_setup_versions (
    vm_id TEXT NOT NULL,
    user_data_sha256 TEXT NOT NULL,
    ports TEXT NOT NULL,
    sealing_key TEXT,
    sealed TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (vm_id, user_data_sha256)
);

-- HTTPS names of VMs' HTTP ports: https://<name>.<ingress domain>. One name per (VM, guest
-- port); a name is unique across the orchestrator, which this table's constraint enforces for
-- every replica sharing the database. `chosen` is 1 when the tenant picked the name (else it was
-- derived from the VM and port). Rows go when their VM is terminated.
CREATE TABLE vm_ingress (
    vm_id TEXT NOT NULL,
    guest_port BIGINT NOT NULL,
    name TEXT NOT NULL,
    chosen BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (vm_id, guest_port),
    CONSTRAINT vm_ingress_name_unique UNIQUE (name)
);

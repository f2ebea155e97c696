-- How tenants reach and log into their VMs. Kept in tables of their own so the VM and node
-- tables stay as they are.

-- What every VM created for a tenant is set up with: SSH public keys (JSON array of
-- authorized_keys lines), the X25519 key generated passwords are sealed to, and guest ports
-- (JSON array of {guest, protocol}) to forward beside port 22/tcp and the template's.
CREATE TABLE tenant_profiles (
    tenant TEXT PRIMARY KEY,
    ssh_keys TEXT NOT NULL,
    sealing_key TEXT,
    ports TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- A VM's generated passwords, sealed to its tenant's key (HPKE): never stored in clear.
CREATE TABLE vm_credentials (
    vm_id TEXT PRIMARY KEY,
    sealing_key TEXT NOT NULL,
    sealed TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- What a VM was created to expose (login user, JSON guest ports), what its node last
-- reported (JSON guest addresses and forwards), and whether its tenant stopped it (1: the
-- lifecycle then never restarts it on its own after a top-up).
CREATE TABLE vm_access (
    vm_id TEXT PRIMARY KEY,
    login_user TEXT,
    ports TEXT NOT NULL,
    addresses TEXT NOT NULL,
    forwards TEXT NOT NULL,
    held_by_tenant BIGINT NOT NULL DEFAULT 0,
    updated_at BIGINT NOT NULL
);

-- The address at which a node's forwarded ports answer, as its agent last reported it.
CREATE TABLE node_addresses (
    node_id TEXT PRIMARY KEY,
    public_address TEXT,
    updated_at BIGINT NOT NULL
);

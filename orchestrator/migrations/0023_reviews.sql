-- Reviews tenants signed (EIP-712) and the orchestrator accepted after checking on-chain that the
-- signer is the lease's tenant: one per lease and subject ('node' or 'template'). `target` is the
-- node id or the on-chain template id; the signature and its domain (chain id, escrow) are kept so
-- that anyone can verify a review offline.
CREATE TABLE reviews (
    lease_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    target TEXT NOT NULL,
    reviewer TEXT NOT NULL,
    rating BIGINT NOT NULL,
    text TEXT NOT NULL,
    chain_id BIGINT NOT NULL,
    escrow TEXT NOT NULL,
    signature TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (lease_id, subject)
);
CREATE INDEX reviews_target ON reviews (subject, target);

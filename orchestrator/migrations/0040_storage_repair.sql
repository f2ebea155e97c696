-- Repair secrets that storage deal owners handed to this orchestrator, one per deal. `sealed` is
-- the secret encrypted with ChaCha20-Poly1305 under a key derived from the orchestrator's repair
-- key (hex of nonce || ciphertext || tag, the deal and market bound as associated data): the
-- database alone never reveals a secret. `owner` is the deal's owner who registered it.
CREATE TABLE storage_repair_secrets (
    deal_id BIGINT NOT NULL PRIMARY KEY,
    owner TEXT NOT NULL,
    sealed TEXT NOT NULL,
    registered_at BIGINT NOT NULL
);

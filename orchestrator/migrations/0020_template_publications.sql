-- Every template published on TemplateMarket, by on-chain id, with what fetching its bundle by its
-- content id came to: 'pending' (not fetched yet, or the content store could not be reached;
-- retried), 'fetched' (validated and in the catalog) or 'refused' (the bytes do not match the
-- content id, are not a bundle, or fail validation; `reason` says which, and a lease on it fails
-- its VM with that reason).
CREATE TABLE template_publications (
    template_id TEXT PRIMARY KEY,
    cid TEXT NOT NULL,
    price BIGINT NOT NULL,
    fetch_state TEXT NOT NULL,
    reason TEXT
);

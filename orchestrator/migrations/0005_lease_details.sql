-- What a lease event carries beyond resources: the bandwidth tier and the template deployed.
ALTER TABLE leases ADD COLUMN bandwidth BIGINT;
ALTER TABLE leases ADD COLUMN template_id TEXT;

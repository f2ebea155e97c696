-- Enough of a lease's accrual to know when its funds run out: the total funded, the start of the
-- current accrual segment and what accrued before it (see ILeaseEscrow).
ALTER TABLE leases ADD COLUMN funded BIGINT;
ALTER TABLE leases ADD COLUMN accrual_start BIGINT;
ALTER TABLE leases ADD COLUMN accrued_before BIGINT;

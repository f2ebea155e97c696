-- Whether a node runs an ingress (its agent's [ingress]: a Caddy serving its VMs' HTTP ports
-- by name), as its agent last reported it: 1 yes, 0 no, NULL not reported (agents older than
-- the report, taken to run one). A VM on a node that runs none gets its HTTP ports forwarded
-- directly instead of names.
ALTER TABLE node_addresses ADD COLUMN ingress BIGINT;

-- Relays for nodes that accept no inbound connections.

-- The node's on-chain capability flags (NodeRegistry Capabilities.flags; bit 8 = relays).
ALTER TABLE nodes ADD COLUMN flags BIGINT NOT NULL DEFAULT 0;

-- Which relay each relayed node is assigned to, and what was published for it there: the
-- relay's node id and public address (where tenants reach the node's VMs), the node's tunnel address inside the relay's subnet, and the last
-- publication (JSON of decloud_sdk::relay::RelayedNode, relay ports included) so the relay ports
-- stay the same while the node keeps the relay, also across restarts.
CREATE TABLE relay_assignments (
    node_id TEXT PRIMARY KEY,
    relay_node_id TEXT NOT NULL,
    relay_address TEXT NOT NULL,
    tunnel_address TEXT NOT NULL,
    published TEXT NOT NULL,
    assigned_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Bytes relays carried per VM. `total_*` is cumulative; `last_*` is the relay's counter as
-- last reported, so a counter that restarts (a relay restarted or published the node again)
-- adds its new value instead of going backwards.
CREATE TABLE relay_traffic (
    relay_node_id TEXT NOT NULL,
    node_id TEXT NOT NULL,
    vm_id TEXT NOT NULL,
    total_in BIGINT NOT NULL,
    total_out BIGINT NOT NULL,
    last_in BIGINT NOT NULL,
    last_out BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (relay_node_id, vm_id)
);

-- VM lifecycle: why a VM failed, and which VM a command acts on (so an acknowledgement can move
-- the VM's state).
ALTER TABLE vms ADD COLUMN failure TEXT;
ALTER TABLE agent_commands ADD COLUMN vm_id TEXT;

//! SLA terminations: a node silent (no heartbeat, its agent's link gone) for longer than the
//! configured window has its leases terminated on-chain by the orchestrator as LeaseEscrow's
//! arbiter, dated back to the node's last heartbeat, so its tenants pay nothing for the time
//! after the node went silent.
//!
//! Exactly once per lease, across restarts: before sending, the lease's status is read from the
//! chain, and a lease that already ended there is never sent again (the contract would refuse
//! it anyway). Each termination is attested (`lease.sla_terminated`) and the lease's VM is
//! terminated with the reason, which its tenant reads in `GET /api/v1/vms/{id}`.

use crate::{
    agent::AgentHub,
    lifecycle::{self, VmState},
    store::{SilentLease, Store, StoreError},
};
use alloy::{
    eips::BlockNumberOrTag,
    primitives::Address,
    providers::{DynProvider, Provider},
};
use decloud_sdk::{VmId, bindings::LeaseEscrow, tx, types::LeaseStatus};

/// Errors of an SLA pass.
#[derive(Debug, thiserror::Error)]
pub enum SlaError {
    /// The chain could not be read or the transaction failed.
    #[error("chain: {0}")]
    Chain(#[from] decloud_sdk::Error),
    /// The RPC endpoint failed.
    #[error("rpc: {0}")]
    Rpc(#[from] alloy::transports::TransportError),
    /// The latest block could not be read.
    #[error("the chain has no latest block")]
    NoLatestBlock,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The lifecycle refused to move the VM.
    #[error(transparent)]
    Lifecycle(#[from] lifecycle::LifecycleError),
}

/// How the reason a VM was ended for its node's silence begins.
pub const NODE_SILENT: &str = "node silent";

/// The orchestrator as LeaseEscrow's arbiter.
#[derive(Clone, Debug)]
pub struct Arbiter {
    escrow: LeaseEscrow::LeaseEscrowInstance<DynProvider>,
    /// How long a node may be silent before its leases are terminated, seconds.
    pub window_secs: i64,
}

impl Arbiter {
    /// Terminates through the LeaseEscrow at `escrow`, sending with `provider` (whose signer
    /// must hold ARBITER_ROLE).
    pub fn new(escrow: Address, provider: DynProvider, window_secs: i64) -> Self {
        Self {
            escrow: LeaseEscrow::new(escrow, provider),
            window_secs,
        }
    }

    /// Whether `account` holds LeaseEscrow's ARBITER_ROLE, so that its terminations can succeed.
    pub async fn holds_the_role(&self, account: Address) -> Result<bool, SlaError> {
        let role = tx::read("LeaseEscrow", self.escrow.ARBITER_ROLE()).await?;
        Ok(tx::read("LeaseEscrow", self.escrow.hasRole(role, account)).await?)
    }
}

/// The failure time to send for a node last heard at `last_heartbeat`: that heartbeat, kept
/// within what the contract accepts at chain time `chain_now` (not after it, and not before
/// `termination_window` ago; `margin` seconds are left for the transaction to be mined).
pub fn failed_at(last_heartbeat: i64, chain_now: u64, termination_window: u64, margin: u64) -> u64 {
    let heartbeat = u64::try_from(last_heartbeat).unwrap_or(0);
    // Out of range, the nearest time the contract accepts is taken: the tenant then pays a little
    // longer than the silence, and the termination still goes through.
    let earliest = chain_now.saturating_sub(termination_window.saturating_sub(margin));
    heartbeat.min(chain_now).max(earliest)
}

/// One SLA pass at `now`: terminates on-chain the active leases of nodes silent for longer than
/// the window and ends their VMs with the reason. Nodes are judged only from `not_before` on
/// (after a start, agents are still reconnecting). Returns how many leases were terminated.
pub async fn pass(
    store: &Store,
    agents: &AgentHub,
    arbiter: &Arbiter,
    now: i64,
    not_before: i64,
) -> Result<usize, SlaError> {
    if now < not_before {
        return Ok(0);
    }
    let silent: Vec<SilentLease> = store
        .leases_on_silent_nodes(now.saturating_sub(arbiter.window_secs))
        .await?
        .into_iter()
        // A node whose agent is connected and reporting is not silent, whatever the record says.
        .filter(|l| agents.report(l.node_id).is_none())
        .collect();
    if silent.is_empty() {
        return Ok(0);
    }
    let window = tx::read("LeaseEscrow", arbiter.escrow.terminationWindow()).await?;
    let mut terminated = 0;
    for lease in silent {
        let id = lease.lease_id.as_u256();
        let on_chain = tx::read("LeaseEscrow", arbiter.escrow.getLease(id)).await?;
        let status = LeaseStatus::try_from(on_chain.status).unwrap_or(LeaseStatus::None);
        let ended_at = match status {
            LeaseStatus::Active => {
                let chain_now = arbiter
                    .escrow
                    .provider()
                    .get_block_by_number(BlockNumberOrTag::Latest)
                    .await?
                    .ok_or(SlaError::NoLatestBlock)?
                    .header
                    .timestamp;
                let failed = failed_at(lease.last_heartbeat, chain_now, window, window.min(60) / 2);
                let receipt =
                    tx::send("LeaseEscrow", arbiter.escrow.terminateLease(id, failed)).await?;
                tracing::warn!(target: "orchestrator::sla", lease_id = %lease.lease_id, node_id = %lease.node_id,
                    last_heartbeat = lease.last_heartbeat, failed_at = failed, tx = %receipt.transaction_hash,
                    "node silent past the window: lease terminated on-chain");
                store
                    .attest(
                        &format!("lease:{}", lease.lease_id),
                        "lease.sla_terminated",
                        &serde_json::json!({
                            "lease_id": lease.lease_id,
                            "node_id": lease.node_id,
                            "last_heartbeat": lease.last_heartbeat,
                            "window_secs": arbiter.window_secs,
                            "failed_at": failed,
                            "tx_hash": receipt.transaction_hash,
                        }),
                        now,
                    )
                    .await?;
                terminated += 1;
                let after = tx::read("LeaseEscrow", arbiter.escrow.getLease(id)).await?;
                after.endedAt
            }
            // Terminated by an earlier pass (this process or one before a restart) whose VM
            // was not ended yet.
            LeaseStatus::Terminated => on_chain.endedAt,
            // The tenant closed it: the ordinary close path removes the VM.
            LeaseStatus::Closed | LeaseStatus::None => continue,
        };
        let reason = format!(
            "{NODE_SILENT}: node {} sent its last heartbeat at {} (unix) and was silent for more than {} s; \
             the lease was terminated on-chain as of {ended_at}, so nothing is charged after it",
            lease.node_id, lease.last_heartbeat, arbiter.window_secs
        );
        end_vm(store, VmId::for_lease(lease.lease_id), &reason).await?;
    }
    Ok(terminated)
}

/// Moves a VM whose node is gone to Terminated with `reason`, through the lifecycle's edges,
/// without asking the node for anything (if it comes back, reconciliation deletes the VM).
async fn end_vm(store: &Store, vm_id: VmId, reason: &str) -> Result<(), SlaError> {
    let Some(vm) = store.vm(vm_id).await? else {
        return Ok(());
    };
    let path: &[VmState] = match vm.state {
        VmState::Terminated => &[],
        VmState::Pending | VmState::Stopping | VmState::Failed => &[VmState::Terminated],
        VmState::Provisioning | VmState::Running => &[VmState::Failed, VmState::Terminated],
        VmState::Stopped => &[VmState::Stopping, VmState::Terminated],
    };
    for to in path {
        lifecycle::transition(store, vm_id, *to, Some(reason), None).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::failed_at;

    #[test]
    fn failure_is_the_last_heartbeat_when_the_contract_allows_it() {
        assert_eq!(failed_at(1_000, 2_000, 7_200, 30), 1_000);
    }

    #[test]
    fn failure_never_lies_ahead_of_the_chain() {
        assert_eq!(failed_at(2_500, 2_000, 7_200, 30), 2_000);
    }

    #[test]
    fn failure_reaches_back_no_further_than_the_contract_window() {
        // Silent since 1 000, but the contract accepts 10 000 - 7 200 + margin at the earliest.
        assert_eq!(failed_at(1_000, 10_000, 7_200, 30), 10_000 - 7_200 + 30);
    }

    #[test]
    fn a_negative_heartbeat_is_clamped_to_the_window() {
        assert_eq!(failed_at(-5, 10_000, 7_200, 30), 2_830);
    }
}

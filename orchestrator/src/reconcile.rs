//! Reconciliation: what should run (the leases active on chain, each on its node) against what
//! each node says it runs (the VMs of its agent's latest heartbeat, held by the
//! [`AgentHub`]), compared every time a node reports, so a VM converges whatever was lost on
//! the way — a command, an acknowledgement, the orchestrator's process or its whole database.
//!
//! For each VM the orchestrator knows on a reporting node:
//! - Pending, lease active: placed ([`lifecycle::provision`]): adopted when the node already
//!   has it, created otherwise. A node without a live session has no report, so its VMs wait
//!   (they are never failed for it).
//! - Provisioning: the node reports it running (or failed): so is the VM.
//! - Running: the node reports it failed (its domain vanished behind the agent's back): the VM
//!   is failed with the node's reason, which the tenant sees. The node no longer has it at all
//!   (its agent lost its records): failed as lost, then created again while the lease is active.
//! - Stopping: the node no longer has it: a deletion is complete (a paused VM that vanished is
//!   failed); the node still has it and no command is under way: the deletion is sent again.
//! - Terminated but still on the node (a lease closed while the orchestrator was away and
//!   rebuilt from an empty database): the node is told to delete it.
//!
//! Only a heartbeat that arrived after the VM's last change and after the last
//! acknowledgement about it counts as proof of absence: a heartbeat built before a command
//! finished may arrive after its acknowledgement. VMs a node reports that the orchestrator has
//! no record of are left alone: with a rebuilt database the chain follower may not have read
//! their lease yet.

use crate::{
    agent::{AgentHub, NodeReport},
    clock::now,
    lifecycle::{self, LifecycleError, VmState, Workload, transition},
    store::{Store, VmRecord},
};
use decloud_sdk::{
    NodeId,
    agent_protocol::{CommandAction, VmState as AgentVmState},
    types::LeaseStatus,
};

/// Reconciles every node that reported since the last call; returns how many VMs were acted on.
/// A node whose pass fails is looked at again on its next heartbeat.
pub async fn pass(store: &Store, agents: &AgentHub, workload: &Workload) -> usize {
    let mut acted = 0;
    for node_id in agents.take_reported() {
        match reconcile_node(store, agents, node_id, workload).await {
            Ok(n) => acted += n,
            Err(e) => {
                tracing::warn!(target: "orchestrator::reconcile", %node_id, error = %e, "reconciling the node failed; retried on its next report")
            }
        }
    }
    acted
}

/// Compares one node's latest report with the VMs placed on it and acts on every difference.
pub async fn reconcile_node(
    store: &Store,
    agents: &AgentHub,
    node_id: NodeId,
    workload: &Workload,
) -> Result<usize, LifecycleError> {
    let Some(report) = agents.report(node_id) else {
        return Ok(0);
    };
    let mut acted = 0;
    for vm in store.vms_on_node(node_id).await? {
        match reconcile_vm(store, agents, &vm, &report, workload).await {
            Ok(true) => acted += 1,
            Ok(false) => {}
            // Another writer (an acknowledgement) moved the VM first; the next report looks again.
            Err(LifecycleError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(acted)
}

async fn reconcile_vm(
    store: &Store,
    agents: &AgentHub,
    vm: &VmRecord,
    report: &NodeReport,
    workload: &Workload,
) -> Result<bool, LifecycleError> {
    let vm_id = vm.vm_id;
    let lease = store.lease(vm.lease_id).await?;
    let status = lease.map(|l| l.status);
    let active = status == Some(LeaseStatus::Active);
    let reported = report.vm(vm_id);
    let commands = store.commands_of_vm(vm_id).await?;
    let under_way = commands.iter().any(|c| c.acked_at.is_none());
    let deleting = commands.iter().any(|c| c.command_id.starts_with("delete-"));
    let last_change = commands
        .iter()
        .filter_map(|c| c.acked_at)
        .fold(vm.updated_at, i64::max);
    // Absence (or a state that contradicts a command) proves something only in a heartbeat
    // that arrived after the last change.
    let fresh = report.received_at > last_change;
    let failure = |r: &decloud_sdk::agent_protocol::VmReport| {
        r.error
            .clone()
            .unwrap_or_else(|| "failed on the node".to_string())
    };
    match vm.state {
        VmState::Pending if active => {
            lifecycle::provision(store, agents, vm_id, workload).await?;
            Ok(true)
        }
        VmState::Provisioning => match reported.map(|r| r.state) {
            Some(AgentVmState::Running) => {
                transition(store, vm_id, VmState::Running, None, None).await?;
                Ok(true)
            }
            Some(AgentVmState::Failed) if fresh => {
                let reason = failure(reported.expect("reported"));
                transition(store, vm_id, VmState::Failed, Some(&reason), None).await?;
                Ok(true)
            }
            _ => Ok(false),
        },
        VmState::Running => match reported {
            Some(r) if r.state == AgentVmState::Failed => {
                let reason = failure(r);
                tracing::warn!(target: "orchestrator::reconcile", %vm_id, node_id = %vm.node_id, %reason, "the node reports the vm failed");
                transition(store, vm_id, VmState::Failed, Some(&reason), None).await?;
                Ok(true)
            }
            None if fresh => {
                // Recorded as a failure (the tenant sees what happened), then, the lease still
                // being active, created again on the node.
                let reason = format!(
                    "{}: node {} no longer has it",
                    lifecycle::LOST_BY_NODE,
                    vm.node_id
                );
                tracing::warn!(target: "orchestrator::reconcile", %vm_id, %reason, "vm missing from its node");
                transition(store, vm_id, VmState::Failed, Some(&reason), None).await?;
                if active {
                    lifecycle::provision(store, agents, vm_id, workload).await?;
                }
                Ok(true)
            }
            _ => Ok(false),
        },
        VmState::Stopping => {
            let removing = !active || deleting;
            match reported {
                None if fresh && removing => {
                    transition(store, vm_id, VmState::Terminated, None, None).await?;
                    if status == Some(LeaseStatus::Closed) {
                        store.record_vm_completed(vm.node_id, now()).await?;
                    }
                    Ok(true)
                }
                None if fresh => {
                    let reason = format!("node {} lost this paused vm", vm.node_id);
                    transition(store, vm_id, VmState::Failed, Some(&reason), None).await?;
                    Ok(true)
                }
                Some(r) if fresh && !under_way => {
                    if removing {
                        // The node refused or lost the deletion: ask again, under a new id.
                        delete_again(store, agents, vm, "retry").await?;
                    } else if r.state == AgentVmState::Stopped {
                        transition(store, vm_id, VmState::Stopped, None, None).await?;
                    } else {
                        return Ok(false);
                    }
                    Ok(true)
                }
                _ => Ok(false),
            }
        }
        // Lost by its node and not yet created again (the pass that failed it stopped short).
        VmState::Failed
            if active
                && reported.is_none()
                && vm
                    .failure
                    .as_deref()
                    .is_some_and(|f| f.starts_with(lifecycle::LOST_BY_NODE)) =>
        {
            lifecycle::provision(store, agents, vm_id, workload).await?;
            Ok(true)
        }
        VmState::Terminated if reported.is_some() && fresh && !under_way => {
            tracing::warn!(target: "orchestrator::reconcile", %vm_id, node_id = %vm.node_id, "the node still runs a vm whose lease ended: deleting it");
            delete_again(store, agents, vm, "orphan").await?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Queues a deletion of `vm` on its node, under a command id of its own (the first deletion's
/// id was acknowledged, and the agent never runs an id twice).
async fn delete_again(
    store: &Store,
    agents: &AgentHub,
    vm: &VmRecord,
    why: &str,
) -> Result<(), LifecycleError> {
    let t = now();
    let command_id = format!("delete-{}-{why}-{t}", vm.vm_id);
    let action = CommandAction::DeleteVm {
        vm_id: vm.vm_id.to_string(),
    };
    let json = serde_json::to_string(&action).expect("actions serialize");
    store
        .enqueue_vm_command(&command_id, vm.node_id, vm.vm_id, &json, t)
        .await?;
    agents.wake(vm.node_id);
    Ok(())
}

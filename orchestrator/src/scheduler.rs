//! Placement of a VM on a node: pure and deterministic, so every replica that sees the same
//! nodes makes the same decision, and a decision can be replayed in a test.
//!
//! CPU is measured in compute points: a node's benchmark gives its total points, and one vCPU of
//! the reference machine is [`POINTS_PER_VCPU`] points. A vCPU of a quality tier uses a share of
//! that inverse to the tier's overcommit (Dedicated 1:1, Standard 1.5:1, Balanced 2:1,
//! Burstable 4:1). Allocations are counted in compute units of 1/12 point, in which every tier's
//! share is a whole number, so capacity is never lost or overcommitted by rounding. Memory,
//! disk and GPUs are never overcommitted.

use serde::{Deserialize, Serialize};
use std::{cmp::Ordering, collections::BTreeMap};
use utoipa::ToSchema;

/// Compute points of one vCPU at 1:1: one logical CPU of the baseline speed, the unit the node
/// agent's benchmark reports in.
pub const POINTS_PER_VCPU: u64 = decloud_sdk::agent_protocol::POINTS_PER_BASELINE_CPU;
/// Compute units per compute point: 12 is divisible by every overcommit numerator (1, 3, 2, 4).
pub const UNITS_PER_POINT: u64 = 12;

pub use decloud_sdk::{
    api::{Placement, PlacementRequest as Request, PlacementScore, Prices, Usage},
    types::QualityTier,
};

/// Compute units of the tiers the SDK defines (with their overcommit ratios): the scheduler's
/// view of a quality tier.
pub trait TierShare {
    /// Compute units (1/12 point) that `vcpus` vCPUs of this tier hold on a node.
    fn units_for(self, vcpus: u64) -> u64;
}

impl TierShare for QualityTier {
    fn units_for(self, vcpus: u64) -> u64 {
        let (num, den) = self.overcommit();
        let (num, den) = (u64::from(num), u64::from(den));
        // Exact: UNITS_PER_POINT * POINTS_PER_VCPU is a multiple of every numerator.
        vcpus.saturating_mul(POINTS_PER_VCPU * UNITS_PER_POINT * den / num)
    }
}

/// What the scheduler knows about a node: totals, what is already allocated, and its state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Node id (0x-prefixed hex).
    pub node_id: String,
    /// Region the operator registered.
    pub region: String,
    /// Registered and not paused or retired.
    pub active: bool,
    /// Sent a heartbeat within the last two minutes.
    pub online: bool,
    /// Logical CPUs of the host: no single VM gets more.
    pub vcpus: u64,
    /// Total compute points from the node's benchmark.
    pub compute_points: u64,
    /// Memory offered, GiB.
    pub memory_gib: u64,
    /// Disk offered, GiB.
    pub disk_gib: u64,
    /// GPUs offered.
    pub gpus: u64,
    /// What the node's VMs already hold.
    pub used: Usage,
    /// Hourly prices.
    pub prices: Prices,
    /// 30-day uptime in basis points, if known.
    pub uptime_bps: Option<u32>,
}

impl Candidate {
    /// The node's total compute in units.
    pub fn total_units(&self) -> u64 {
        self.compute_points.saturating_mul(UNITS_PER_POINT)
    }
}

/// Why one node cannot take the VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Rejection {
    /// Paused, retired or unknown on-chain.
    NotActive,
    /// No heartbeat within two minutes.
    Offline,
    /// In another region.
    RegionMismatch {
        /// The node's region.
        region: String,
    },
    /// Costs more than the request allows.
    TooExpensive {
        /// The VM's price on this node.
        price_per_hour: u64,
    },
    /// The VM has more vCPUs than the host has logical CPUs.
    TooManyVcpus {
        /// Host logical CPUs.
        host_vcpus: u64,
    },
    /// Not enough free compute under the tier's overcommit.
    InsufficientCompute {
        /// Compute units (1/12 point) the VM needs.
        needed: u64,
        /// Compute units free.
        free: u64,
    },
    /// Not enough free memory.
    InsufficientMemory {
        /// GiB needed.
        needed: u64,
        /// GiB free.
        free: u64,
    },
    /// Not enough free disk.
    InsufficientDisk {
        /// GiB needed.
        needed: u64,
        /// GiB free.
        free: u64,
    },
    /// Not enough free GPUs.
    InsufficientGpus {
        /// GPUs needed.
        needed: u64,
        /// GPUs free.
        free: u64,
    },
}

impl Rejection {
    /// Short machine-readable name of the reason.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotActive => "not_active",
            Self::Offline => "offline",
            Self::RegionMismatch { .. } => "region_mismatch",
            Self::TooExpensive { .. } => "too_expensive",
            Self::TooManyVcpus { .. } => "too_many_vcpus",
            Self::InsufficientCompute { .. } => "insufficient_compute",
            Self::InsufficientMemory { .. } => "insufficient_memory",
            Self::InsufficientDisk { .. } => "insufficient_disk",
            Self::InsufficientGpus { .. } => "insufficient_gpus",
        }
    }
}

/// Why no node fits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NoFit {
    /// The request itself is unusable.
    #[error("invalid request: {message}")]
    InvalidRequest {
        /// What is wrong.
        message: String,
    },
    /// The requested node is not known.
    #[error("requested node {node_id} is not known")]
    UnknownNode {
        /// The requested node.
        node_id: String,
    },
    /// The requested node exists but cannot take the VM.
    #[error("requested node {node_id} cannot take the vm: {}", rejection.code())]
    RequestedNodeRejected {
        /// The requested node.
        node_id: String,
        /// The first check it failed.
        rejection: Rejection,
    },
    /// No node passed every check.
    #[error(
        "no node fits ({considered} considered{})",
        rejection_summary(rejections)
    )]
    NoCandidate {
        /// Nodes looked at.
        considered: usize,
        /// How many nodes failed on each reason (first failed check per node).
        rejections: BTreeMap<String, usize>,
    },
}

/// `: 2 offline, 1 too_many_vcpus` for the message of [`NoFit::NoCandidate`] (empty when no
/// node was considered).
fn rejection_summary(rejections: &BTreeMap<String, usize>) -> String {
    if rejections.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = rejections
        .iter()
        .map(|(code, n)| format!("{n} {code}"))
        .collect();
    format!(": {}", parts.join(", "))
}

/// The VM's hourly price on a node, micro-USDC. Saturates rather than wraps on absurd prices.
pub fn price_per_hour(prices: &Prices, request: &Request) -> u64 {
    prices
        .cpu_per_hour
        .saturating_mul(request.vcpus)
        .saturating_add(
            prices
                .memory_gib_per_hour
                .saturating_mul(request.memory_gib),
        )
        .saturating_add(prices.storage_gib_per_hour.saturating_mul(request.disk_gib))
        .saturating_add(prices.gpu_per_hour.saturating_mul(request.gpus))
}

/// The first check a node fails for a request, in a fixed order, or `None` if it fits.
pub fn check(node: &Candidate, request: &Request) -> Option<Rejection> {
    if !node.active {
        return Some(Rejection::NotActive);
    }
    if !node.online {
        return Some(Rejection::Offline);
    }
    if let Some(region) = &request.region
        && !region.eq_ignore_ascii_case(&node.region)
    {
        return Some(Rejection::RegionMismatch {
            region: node.region.clone(),
        });
    }
    let price = price_per_hour(&node.prices, request);
    if request.max_price_per_hour.is_some_and(|max| price > max) {
        return Some(Rejection::TooExpensive {
            price_per_hour: price,
        });
    }
    if request.vcpus > node.vcpus {
        return Some(Rejection::TooManyVcpus {
            host_vcpus: node.vcpus,
        });
    }
    let needed = request.tier.units_for(request.vcpus);
    let free = node.total_units().saturating_sub(node.used.compute_units);
    if needed > free {
        return Some(Rejection::InsufficientCompute { needed, free });
    }
    let free = node.memory_gib.saturating_sub(node.used.memory_gib);
    if request.memory_gib > free {
        return Some(Rejection::InsufficientMemory {
            needed: request.memory_gib,
            free,
        });
    }
    let free = node.disk_gib.saturating_sub(node.used.disk_gib);
    if request.disk_gib > free {
        return Some(Rejection::InsufficientDisk {
            needed: request.disk_gib,
            free,
        });
    }
    let free = node.gpus.saturating_sub(node.used.gpus);
    if request.gpus > free {
        return Some(Rejection::InsufficientGpus {
            needed: request.gpus,
            free,
        });
    }
    None
}

/// Order of preference between two fitting nodes: cheaper first, then higher uptime, then more
/// compute left free after placement (spreads load), then the smaller node id, so the result
/// never depends on the order the candidates came in.
fn preference(a: &Candidate, b: &Candidate, request: &Request) -> Ordering {
    let free_after = |n: &Candidate| {
        n.total_units()
            .saturating_sub(n.used.compute_units)
            .saturating_sub(request.tier.units_for(request.vcpus))
    };
    price_per_hour(&a.prices, request)
        .cmp(&price_per_hour(&b.prices, request))
        .then_with(|| b.uptime_bps.cmp(&a.uptime_bps))
        .then_with(|| free_after(b).cmp(&free_after(a)))
        .then_with(|| a.node_id.cmp(&b.node_id))
}

/// Chooses a node for `request` among `candidates`, or says why none fits.
pub fn schedule(candidates: &[Candidate], request: &Request) -> Result<Placement, NoFit> {
    if request.vcpus == 0 || request.memory_gib == 0 {
        return Err(NoFit::InvalidRequest {
            message: "vcpus and memory_gib must be at least 1".into(),
        });
    }
    let free_after = |n: &Candidate| {
        n.total_units()
            .saturating_sub(n.used.compute_units)
            .saturating_sub(request.tier.units_for(request.vcpus))
    };
    let placement = |node: &Candidate, fitting: usize| Placement {
        node_id: node.node_id.clone(),
        price_per_hour: price_per_hour(&node.prices, request),
        compute_units: request.tier.units_for(request.vcpus),
        why: PlacementScore {
            uptime_bps: node.uptime_bps,
            free_compute_units_after: free_after(node),
            considered: candidates.len() as u64,
            fitting: fitting as u64,
        },
    };
    if let Some(wanted) = &request.node_id {
        let Some(node) = candidates
            .iter()
            .find(|n| n.node_id.eq_ignore_ascii_case(wanted))
        else {
            return Err(NoFit::UnknownNode {
                node_id: wanted.clone(),
            });
        };
        return match check(node, request) {
            None => Ok(placement(node, 1)),
            Some(rejection) => Err(NoFit::RequestedNodeRejected {
                node_id: node.node_id.clone(),
                rejection,
            }),
        };
    }
    let mut rejections = BTreeMap::new();
    let mut best: Option<&Candidate> = None;
    let mut fitting = 0;
    for node in candidates {
        match check(node, request) {
            Some(rejection) => *rejections.entry(rejection.code().to_string()).or_insert(0) += 1,
            None => {
                fitting += 1;
                if best.is_none_or(|b| preference(node, b, request) == Ordering::Less) {
                    best = Some(node);
                }
            }
        }
    }
    best.map(|node| placement(node, fitting))
        .ok_or(NoFit::NoCandidate {
            considered: candidates.len(),
            rejections,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str) -> Candidate {
        Candidate {
            node_id: id.into(),
            region: "eu-west".into(),
            active: true,
            online: true,
            vcpus: 8,
            compute_points: 8 * POINTS_PER_VCPU,
            memory_gib: 32,
            disk_gib: 500,
            gpus: 0,
            used: Usage::default(),
            prices: Prices {
                cpu_per_hour: 10_000,
                memory_gib_per_hour: 2_000,
                storage_gib_per_hour: 100,
                gpu_per_hour: 0,
            },
            uptime_bps: Some(9_900),
        }
    }

    fn request(vcpus: u64, tier: QualityTier) -> Request {
        Request {
            vcpus,
            memory_gib: 1,
            disk_gib: 10,
            gpus: 0,
            tier,
            region: None,
            max_price_per_hour: None,
            node_id: None,
        }
    }

    #[test]
    fn tiers_overcommit_as_specified() {
        let point = UNITS_PER_POINT;
        let vcpu = POINTS_PER_VCPU * point;
        assert_eq!(QualityTier::Dedicated.units_for(2), 2 * vcpu);
        assert_eq!(QualityTier::Standard.units_for(3), 2 * vcpu);
        assert_eq!(QualityTier::Balanced.units_for(2), vcpu);
        assert_eq!(QualityTier::Burstable.units_for(4), vcpu);
        // Exact, no rounding: three Standard vCPUs hold exactly two reference vCPUs.
        assert_eq!(
            3 * QualityTier::Standard.units_for(1),
            QualityTier::Dedicated.units_for(2)
        );
    }

    #[test]
    fn a_node_takes_exactly_its_overcommitted_capacity() {
        // 8 vCPUs' points hold 8 Dedicated, 12 Standard, 16 Balanced or 32 Burstable vCPUs.
        for (tier, max_vcpus) in [
            (QualityTier::Dedicated, 8),
            (QualityTier::Standard, 12),
            (QualityTier::Balanced, 16),
            (QualityTier::Burstable, 32),
        ] {
            let mut n = node("0x01");
            let mut placed = 0;
            while schedule(std::slice::from_ref(&n), &request(1, tier)).is_ok() {
                n.used.compute_units += tier.units_for(1);
                placed += 1;
            }
            assert_eq!(placed, max_vcpus, "{tier:?}");
            assert_eq!(n.used.compute_units, n.total_units());
        }
    }

    #[test]
    fn memory_disk_and_gpus_are_never_overcommitted() {
        let mut n = node("0x01");
        n.used.memory_gib = 32;
        let err = schedule(&[n.clone()], &request(1, QualityTier::Burstable)).unwrap_err();
        assert!(
            matches!(err, NoFit::NoCandidate { ref rejections, .. } if rejections.get("insufficient_memory") == Some(&1))
        );
        n.used.memory_gib = 0;
        n.used.disk_gib = 495;
        assert!(schedule(&[n.clone()], &request(1, QualityTier::Burstable)).is_err());
        n.used.disk_gib = 0;
        let mut r = request(1, QualityTier::Burstable);
        r.gpus = 1;
        assert!(schedule(&[n.clone()], &r).is_err());
        n.gpus = 1;
        assert!(schedule(&[n], &r).is_ok());
    }

    #[test]
    fn cheapest_fitting_node_wins_and_ties_break_on_uptime_then_id() {
        let mut a = node("0x0a");
        let mut b = node("0x0b");
        let c = node("0x0c");
        b.prices.cpu_per_hour = 9_000;
        let r = request(2, QualityTier::Standard);
        assert_eq!(
            schedule(&[a.clone(), b.clone(), c.clone()], &r)
                .unwrap()
                .node_id,
            "0x0b"
        );
        b.prices.cpu_per_hour = 10_000;
        a.uptime_bps = Some(9_000);
        assert_eq!(
            schedule(&[a.clone(), b.clone(), c.clone()], &r)
                .unwrap()
                .node_id,
            "0x0b"
        );
        // Same everything: the smallest id, whatever the input order.
        assert_eq!(
            schedule(&[c.clone(), b.clone()], &r).unwrap().node_id,
            "0x0b"
        );
        assert_eq!(schedule(&[b, c], &r).unwrap().node_id, "0x0b");
    }

    #[test]
    fn a_placement_says_why_its_node_won() {
        let a = node("0x0a");
        let mut b = node("0x0b");
        let mut offline = node("0x0c");
        b.prices.cpu_per_hour = 9_000;
        b.uptime_bps = Some(9_500);
        offline.online = false;
        let r = request(2, QualityTier::Standard);
        let placed = schedule(&[a, b.clone(), offline], &r).unwrap();
        assert_eq!(placed.node_id, "0x0b");
        assert_eq!(placed.price_per_hour, price_per_hour(&b.prices, &r));
        assert_eq!(placed.why.uptime_bps, Some(9_500));
        assert_eq!(
            placed.why.free_compute_units_after,
            b.total_units() - QualityTier::Standard.units_for(2)
        );
        assert_eq!((placed.why.considered, placed.why.fitting), (3, 2));
    }

    #[test]
    fn requested_node_is_honoured_or_explained() {
        let mut a = node("0x0a");
        let mut b = node("0x0b");
        b.prices.cpu_per_hour = 1;
        let mut r = request(2, QualityTier::Dedicated);
        r.node_id = Some("0x0A".into());
        assert_eq!(
            schedule(&[a.clone(), b.clone()], &r).unwrap().node_id,
            "0x0a"
        );
        a.online = false;
        assert_eq!(
            schedule(&[a.clone(), b.clone()], &r).unwrap_err(),
            NoFit::RequestedNodeRejected {
                node_id: "0x0a".into(),
                rejection: Rejection::Offline
            }
        );
        r.node_id = Some("0xff".into());
        assert_eq!(
            schedule(&[a, b], &r).unwrap_err(),
            NoFit::UnknownNode {
                node_id: "0xff".into()
            }
        );
    }

    #[test]
    fn region_price_and_state_filters_explain_themselves() {
        let mut a = node("0x0a");
        a.region = "us-east".into();
        let mut b = node("0x0b");
        b.active = false;
        let c = node("0x0c");
        let mut r = request(9, QualityTier::Dedicated);
        r.region = Some("eu-west".into());
        let err = schedule(&[a, b, c.clone()], &r).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no node fits (3 considered: 1 not_active, 1 region_mismatch, 1 too_many_vcpus)",
            "the message says why each node was left out"
        );
        let NoFit::NoCandidate {
            considered,
            rejections,
        } = err
        else {
            panic!("{err:?}")
        };
        assert_eq!(considered, 3);
        assert_eq!(rejections.get("region_mismatch"), Some(&1));
        assert_eq!(rejections.get("not_active"), Some(&1));
        assert_eq!(rejections.get("too_many_vcpus"), Some(&1));
        let mut r = request(1, QualityTier::Dedicated);
        r.max_price_per_hour = Some(10_000);
        assert!(matches!(
            check(&c, &r),
            Some(Rejection::TooExpensive {
                price_per_hour: 13_000
            })
        ));
        r.max_price_per_hour = Some(13_000);
        assert_eq!(check(&c, &r), None);
    }

    #[test]
    fn empty_requests_are_refused() {
        assert!(matches!(
            schedule(&[node("0x01")], &request(0, QualityTier::Dedicated)),
            Err(NoFit::InvalidRequest { .. })
        ));
    }
}

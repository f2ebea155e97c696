//! Where a storage deal's replicas go: storage nodes that are registered and Active on-chain,
//! online, not draining, reachable (their agent reported a chunk API URL) and with room for a
//! replica, ranked by region, then storage proof rate, then free space, then storage price.
//!
//! The same choice serves a client opening a deal (`GET /storage/placement`) and the repair
//! watcher moving a failed replica ([`crate::repair_watch`]).

use crate::{
    clock::now,
    reputation,
    store::{NodeStatus, Store, StoreError, StoredStorageReport},
};
use decloud_sdk::{
    NodeId,
    api::{StoragePlacementNode, StoragePlacementRequest},
};
use std::collections::HashMap;

/// Most replicas a deal can have (StorageMarket's `MAX_REPLICAS`).
pub const MAX_REPLICAS: u32 = 16;

/// A placement request, checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlacementQuery {
    /// Replicas, each on a distinct node.
    pub replicas: u32,
    /// Bytes each replica takes.
    pub bytes: u64,
    /// Preferred region.
    pub region: Option<String>,
    /// Nodes left out.
    pub exclude: Vec<NodeId>,
}

/// Why a placement request is malformed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadPlacement {
    /// Zero replicas, or more than the market takes.
    #[error("replicas must be between 1 and {MAX_REPLICAS}")]
    Replicas,
    /// Zero bytes.
    #[error("bytes must be positive")]
    Bytes,
    /// An excluded node is not a node id.
    #[error("exclude must be comma-separated 0x-hex node ids; {0:?} is not one")]
    Exclude(String),
}

impl TryFrom<&StoragePlacementRequest> for PlacementQuery {
    type Error = BadPlacement;

    fn try_from(req: &StoragePlacementRequest) -> Result<Self, BadPlacement> {
        if req.replicas == 0 || req.replicas > MAX_REPLICAS {
            return Err(BadPlacement::Replicas);
        }
        if req.bytes == 0 {
            return Err(BadPlacement::Bytes);
        }
        let exclude = req
            .exclude
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<NodeId>()
                    .map_err(|_| BadPlacement::Exclude(s.to_string()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            replicas: req.replicas,
            bytes: req.bytes,
            region: req
                .region
                .as_deref()
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(str::to_string),
            exclude,
        })
    }
}

/// Why a placement could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlacementError {
    /// Fewer nodes than replicas can take the deal.
    #[error(
        "{wanted} replicas of {bytes} bytes need {wanted} distinct storage nodes; {usable} can take \
         one ({reasons})"
    )]
    NotEnough {
        /// Replicas asked for.
        wanted: u32,
        /// Bytes per replica.
        bytes: u64,
        /// Nodes that could take one.
        usable: usize,
        /// Why the others cannot, in words.
        reasons: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A storage node as placement sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageCandidate {
    /// The node's latest storage report.
    pub report: StoredStorageReport,
    /// Its region on-chain.
    pub region: String,
    /// Whether it is Active on-chain.
    pub active: bool,
    /// Whether it sent a heartbeat lately.
    pub online: bool,
    /// Its storage price per GiB-hour on-chain.
    pub storage_price: u64,
    /// Its storage proof rate counted from StorageMarket, basis points; `None` before any
    /// epoch was due.
    pub proof_rate_bps: Option<u32>,
}

/// Why a candidate cannot take a replica, if it cannot.
fn unfit(c: &StorageCandidate, q: &PlacementQuery) -> Option<&'static str> {
    if q.exclude.contains(&c.report.node_id) {
        Some("excluded")
    } else if !c.active {
        Some("not active on-chain")
    } else if !c.online {
        Some("offline")
    } else if c.report.draining {
        Some("draining")
    } else if c.report.url.is_none() {
        Some("no chunk API URL")
    } else if c.report.free_bytes() < q.bytes {
        Some("too little free space")
    } else {
        None
    }
}

fn percent(bps: u32) -> String {
    format!("{}.{:02}%", bps / 100, bps % 100)
}

/// The best `q.replicas` distinct candidates, best first, each with why it was chosen.
pub fn rank(
    candidates: &[StorageCandidate],
    q: &PlacementQuery,
) -> Result<Vec<StoragePlacementNode>, PlacementError> {
    let mut refused: HashMap<&'static str, usize> = HashMap::new();
    let mut fit: Vec<&StorageCandidate> = Vec::new();
    for c in candidates {
        match unfit(c, q) {
            Some(why) => *refused.entry(why).or_default() += 1,
            None => fit.push(c),
        }
    }
    let in_region = |c: &StorageCandidate| {
        q.region
            .as_deref()
            .is_some_and(|r| r.eq_ignore_ascii_case(&c.region))
    };
    // Region first (when asked), then the proof record (a node with none ranks after every node
    // with one), then room, then price; the node id keeps the order stable.
    fit.sort_by(|a, b| {
        in_region(b)
            .cmp(&in_region(a))
            .then_with(|| b.proof_rate_bps.cmp(&a.proof_rate_bps))
            .then_with(|| b.report.free_bytes().cmp(&a.report.free_bytes()))
            .then_with(|| a.storage_price.cmp(&b.storage_price))
            .then_with(|| a.report.node_id.cmp(&b.report.node_id))
    });
    if fit.len() < q.replicas as usize {
        let mut reasons: Vec<String> = refused
            .iter()
            .map(|(why, n)| format!("{n} {why}"))
            .collect();
        reasons.sort();
        if reasons.is_empty() {
            reasons.push("no other storage node has reported".into());
        }
        return Err(PlacementError::NotEnough {
            wanted: q.replicas,
            bytes: q.bytes,
            usable: fit.len(),
            reasons: reasons.join(", "),
        });
    }
    Ok(fit
        .into_iter()
        .take(q.replicas as usize)
        .map(|c| {
            let mut why = Vec::new();
            if in_region(c) {
                why.push(format!("in {} as asked", c.region));
            }
            why.push(match c.proof_rate_bps {
                Some(rate) => format!("storage proof rate {}", percent(rate)),
                None => "no storage proof record yet".into(),
            });
            why.push(format!("{} MiB free", c.report.free_bytes() >> 20));
            StoragePlacementNode {
                node_id: c.report.node_id.to_string(),
                url: c.report.url.clone().unwrap_or_default(),
                free_bytes: c.report.free_bytes(),
                region: c.region.clone(),
                proof_rate_bps: c.proof_rate_bps,
                reason: why.join("; "),
            }
        })
        .collect())
}

/// Every node that reported a storage role, with its on-chain record and liveness at `now`.
pub async fn candidates(store: &Store, now: i64) -> Result<Vec<StorageCandidate>, StoreError> {
    let reports = store.storage_reports().await?;
    let rates = store.storage_proof_rates().await?;
    let nodes: HashMap<NodeId, _> = store
        .nodes()
        .await?
        .into_iter()
        .map(|n| (n.node_id, n))
        .collect();
    let mut out = Vec::with_capacity(reports.len());
    for report in reports {
        // A report of a node the registry no longer knows places nothing.
        let Some(node) = nodes.get(&report.node_id) else {
            continue;
        };
        let last = store.liveness(report.node_id).await?;
        out.push(StorageCandidate {
            region: node.region.clone(),
            active: node.status == NodeStatus::Active,
            online: reputation::is_online(
                last.filter(|l| l.heartbeats > 0).map(|l| l.last_heartbeat),
                now,
            ),
            storage_price: node.prices.storage_gib_per_hour,
            proof_rate_bps: rates.get(&report.node_id).copied(),
            report,
        });
    }
    Ok(out)
}

/// The placement of `q` among the storage nodes the store knows, now.
pub async fn place(
    store: &Store,
    q: &PlacementQuery,
) -> Result<Vec<StoragePlacementNode>, PlacementError> {
    let candidates = candidates(store, now()).await?;
    rank(&candidates, q)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::B256;

    fn node(id: u8, region: &str, free_mib: u64, proven: u64, missed: u64) -> StorageCandidate {
        StorageCandidate {
            report: StoredStorageReport {
                node_id: B256::with_last_byte(id).into(),
                url: Some(format!("http://node{id}")),
                quota_bytes: 1 << 30,
                stored_bytes: (1 << 30) - (free_mib << 20),
                draining: false,
                proven_epochs: proven,
                missed_epochs: missed,
                reported_at: 0,
            },
            region: region.into(),
            active: true,
            online: true,
            storage_price: 0,
            proof_rate_bps: crate::reputation::storage_proof_rate_bps(proven, missed),
        }
    }

    fn ids(nodes: &[StoragePlacementNode]) -> Vec<u8> {
        nodes
            .iter()
            .map(|n| n.node_id.parse::<NodeId>().unwrap().as_b256()[31])
            .collect()
    }

    fn query(replicas: u32, mib: u64) -> PlacementQuery {
        PlacementQuery {
            replicas,
            bytes: mib << 20,
            ..Default::default()
        }
    }

    #[test]
    fn region_then_proof_rate_then_free_space() {
        let nodes = vec![
            node(1, "us-east", 500, 10, 0),
            node(2, "eu-west", 100, 9, 1),
            node(3, "eu-west", 900, 9, 1),
            node(4, "eu-west", 50, 0, 0),
            node(5, "us-east", 800, 10, 0),
        ];
        let q = PlacementQuery {
            region: Some("EU-WEST".into()),
            ..query(4, 10)
        };
        let placed = rank(&nodes, &q).unwrap();
        assert_eq!(ids(&placed), [3, 2, 4, 5]);
        assert!(placed[0].reason.contains("in eu-west as asked"));
        assert!(placed[0].reason.contains("90.00%"));
        assert_eq!(placed[0].proof_rate_bps, Some(9_000));
        assert!(placed[2].reason.contains("no storage proof record yet"));
        assert_eq!(placed[0].url, "http://node3");
        // Without a region: the proof record first.
        assert_eq!(ids(&rank(&nodes, &query(3, 10)).unwrap()), [5, 1, 3]);
    }

    #[test]
    fn nodes_that_cannot_take_a_replica_are_left_out_and_counted() {
        let mut offline = node(1, "eu", 500, 0, 0);
        offline.online = false;
        let mut draining = node(2, "eu", 500, 0, 0);
        draining.report.draining = true;
        let mut paused = node(3, "eu", 500, 0, 0);
        paused.active = false;
        let mut no_url = node(4, "eu", 500, 0, 0);
        no_url.report.url = None;
        let full = node(5, "eu", 5, 0, 0);
        let fine = node(6, "eu", 500, 0, 0);
        let excluded = node(7, "eu", 500, 0, 0);
        let nodes = vec![offline, draining, paused, no_url, full, fine, excluded];
        let q = PlacementQuery {
            exclude: vec![B256::with_last_byte(7).into()],
            ..query(1, 10)
        };
        assert_eq!(ids(&rank(&nodes, &q).unwrap()), [6]);
        let error = rank(&nodes, &PlacementQuery { replicas: 2, ..q }).unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("need 2 distinct storage nodes; 1 can take one"),
            "{text}"
        );
        for why in [
            "1 offline",
            "1 draining",
            "1 not active on-chain",
            "1 no chunk API URL",
            "1 too little free space",
            "1 excluded",
        ] {
            assert!(text.contains(why), "{why}: {text}");
        }
    }

    #[test]
    fn a_request_is_checked() {
        let req = |replicas, bytes, exclude: Option<&str>| StoragePlacementRequest {
            replicas,
            bytes,
            region: Some(" ".into()),
            exclude: exclude.map(str::to_string),
        };
        let q =
            PlacementQuery::try_from(&req(3, 10, Some(&format!(" {} ,", B256::repeat_byte(1)))))
                .unwrap();
        assert_eq!(q.exclude, vec![NodeId::from(B256::repeat_byte(1))]);
        assert_eq!(q.region, None);
        assert_eq!(
            PlacementQuery::try_from(&req(0, 10, None)),
            Err(BadPlacement::Replicas)
        );
        assert_eq!(
            PlacementQuery::try_from(&req(17, 10, None)),
            Err(BadPlacement::Replicas)
        );
        assert_eq!(
            PlacementQuery::try_from(&req(1, 0, None)),
            Err(BadPlacement::Bytes)
        );
        assert!(matches!(
            PlacementQuery::try_from(&req(1, 1, Some("0x12"))),
            Err(BadPlacement::Exclude(_))
        ));
    }
}

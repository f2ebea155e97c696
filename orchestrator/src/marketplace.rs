//! Marketplace views over nodes: search with filters and sorts, the featured list, and the
//! free capacity the scheduler would see. Pure functions over listings the store produced.

use crate::{
    scheduler::{Candidate, Usage},
    store::{NodeRecord, NodeStatus, Reputation},
};
pub use decloud_sdk::api::{NodeListing, NodeSearch, SortBy};

/// Uptime a node needs to be featured, basis points (strictly above).
pub const FEATURED_MIN_UPTIME_BPS: u32 = 9_500;
/// Storage proof rate a storage node needs to be featured, basis points (at least).
pub const FEATURED_MIN_STORAGE_PROOF_BPS: u32 = 9_500;
/// How many nodes are featured.
pub const FEATURED_COUNT: usize = 10;
/// Largest page of search results.
pub const MAX_PAGE: usize = 100;

/// A listing from a node, its reputation and what its VMs hold: the free resources are what
/// the node offers minus what is used (compute in units of 1/12 point).
pub fn listing(node: NodeRecord, reputation: Reputation, used: Usage) -> NodeListing {
    let free = Usage {
        compute_units: node
            .compute_points
            .saturating_mul(crate::scheduler::UNITS_PER_POINT)
            .saturating_sub(used.compute_units),
        memory_gib: node.memory_gib.saturating_sub(used.memory_gib),
        disk_gib: node.disk_gib.saturating_sub(used.disk_gib),
        gpus: node.gpus.saturating_sub(used.gpus),
    };
    NodeListing {
        node,
        reputation,
        used,
        free,
        // Read from the node's profile and its reviews by the API.
        description: String::new(),
        rating: Default::default(),
    }
}

/// What the scheduler needs to know about a listed node.
pub fn candidate(l: &NodeListing) -> Candidate {
    Candidate {
        node_id: l.node.node_id.to_string(),
        region: l.node.region.clone(),
        active: l.node.status == NodeStatus::Active,
        online: l.reputation.online,
        vcpus: l.node.vcpus,
        compute_points: l.node.compute_points,
        memory_gib: l.node.memory_gib,
        disk_gib: l.node.disk_gib,
        gpus: l.node.gpus,
        used: l.used,
        prices: l.node.prices,
        uptime_bps: l.reputation.uptime_bps,
    }
}

/// Whether a listing passes every filter of `q`. Only active nodes are listed.
pub fn matches(l: &NodeListing, q: &NodeSearch) -> bool {
    if l.node.status != NodeStatus::Active {
        return false;
    }
    if let Some(tags) = &q.tags {
        let wanted = tags
            .split(',')
            .map(|t| t.trim().to_lowercase())
            .filter(|t| !t.is_empty());
        if !wanted.into_iter().all(|t| l.node.tags.contains(&t)) {
            return false;
        }
    }
    if q.region
        .as_ref()
        .is_some_and(|r| !r.eq_ignore_ascii_case(&l.node.region))
    {
        return false;
    }
    if q.max_price.is_some_and(|m| l.node.prices.cpu_per_hour > m) {
        return false;
    }
    if q.min_uptime
        .is_some_and(|m| l.reputation.uptime_bps.is_none_or(|u| u < m))
    {
        return false;
    }
    if q.min_compute_points
        .is_some_and(|m| l.node.compute_points < m)
    {
        return false;
    }
    if q.gpu.is_some_and(|g| g != (l.node.gpus > 0)) {
        return false;
    }
    if q.online_only == Some(true) && !l.reputation.online {
        return false;
    }
    true
}

fn order(a: &NodeListing, b: &NodeListing, sort: SortBy) -> std::cmp::Ordering {
    let primary = match sort {
        SortBy::Uptime => b.reputation.uptime_bps.cmp(&a.reputation.uptime_bps),
        SortBy::Price => a.node.prices.cpu_per_hour.cmp(&b.node.prices.cpu_per_hour),
        SortBy::Capacity => b.node.compute_points.cmp(&a.node.compute_points),
    };
    primary.then_with(|| a.node.node_id.cmp(&b.node.node_id))
}

/// Errors of a search request.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SearchError {
    /// The page size is outside 1–100.
    #[error("limit must be between 1 and {MAX_PAGE}")]
    Limit,
    /// The uptime filter is above 10000 basis points.
    #[error("min_uptime is in basis points, at most 10000")]
    Uptime,
}

/// The page of listings `q` selects, sorted, with the total number of matches.
pub fn search(
    mut listings: Vec<NodeListing>,
    q: &NodeSearch,
) -> Result<(usize, Vec<NodeListing>), SearchError> {
    let limit = q.limit.unwrap_or(50);
    if limit == 0 || limit > MAX_PAGE {
        return Err(SearchError::Limit);
    }
    if q.min_uptime.is_some_and(|u| u > 10_000) {
        return Err(SearchError::Uptime);
    }
    listings.retain(|l| matches(l, q));
    let sort = q.sort.unwrap_or_default();
    listings.sort_by(|a, b| order(a, b, sort));
    let total = listings.len();
    let page = listings
        .into_iter()
        .skip(q.offset.unwrap_or(0))
        .take(limit)
        .collect();
    Ok((total, page))
}

/// The top ten active nodes above 95% uptime, best first.
pub fn featured(mut listings: Vec<NodeListing>) -> Vec<NodeListing> {
    listings.retain(|l| {
        l.node.status == NodeStatus::Active
            && l.reputation
                .uptime_bps
                .is_some_and(|u| u > FEATURED_MIN_UPTIME_BPS)
            // A storage node that fails its proofs is not one to recommend, however long it
            // stays online.
            && l.reputation
                .storage_proof_rate_bps
                .is_none_or(|r| r >= FEATURED_MIN_STORAGE_PROOF_BPS)
    });
    listings.sort_by(|a, b| order(a, b, SortBy::Uptime));
    listings.truncate(FEATURED_COUNT);
    listings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::Prices;

    fn listing(id: u8, uptime: Option<u32>, cpu_price: u64, points: u64) -> NodeListing {
        let node = NodeRecord {
            node_id: alloy::primitives::B256::with_last_byte(id).into(),
            operator: "0x01".into(),
            node_key: "0x02".into(),
            status: NodeStatus::Active,
            region: "eu-west".into(),
            endpoint: String::new(),
            metadata_cid: String::new(),
            tags: vec!["ssd".into()],
            vcpus: 8,
            memory_gib: 16,
            disk_gib: 100,
            gpus: 0,
            bandwidth_mbps: 100,
            compute_points: points,
            prices: Prices {
                cpu_per_hour: cpu_price,
                ..Prices::default()
            },
            registered_at: 0,
            updated_at: 0,
        };
        let reputation = Reputation {
            online: true,
            last_heartbeat: Some(0),
            uptime_bps: uptime,
            failed_by_day: Vec::new(),
            vms_hosted: 0,
            vms_completed: 0,
            storage_proof_rate_bps: None,
        };
        super::listing(node, reputation, Usage::default())
    }

    /// Short labels of the listed nodes: `0x` and the last byte of the id.
    fn ids(v: &[NodeListing]) -> Vec<String> {
        v.iter()
            .map(|l| format!("0x{:02x}", l.node.node_id.as_b256()[31]))
            .collect()
    }

    #[test]
    fn sorts_are_stable_and_break_ties_by_id() {
        let all = vec![
            listing(3, Some(9_000), 5, 100),
            listing(1, Some(9_900), 7, 300),
            listing(2, None, 5, 300),
        ];
        let q = |sort| NodeSearch {
            sort: Some(sort),
            ..NodeSearch::default()
        };
        assert_eq!(
            ids(&search(all.clone(), &q(SortBy::Uptime)).unwrap().1),
            ["0x01", "0x03", "0x02"]
        );
        assert_eq!(
            ids(&search(all.clone(), &q(SortBy::Price)).unwrap().1),
            ["0x02", "0x03", "0x01"]
        );
        assert_eq!(
            ids(&search(all, &q(SortBy::Capacity)).unwrap().1),
            ["0x01", "0x02", "0x03"]
        );
    }

    #[test]
    fn filters_combine() {
        let mut gpu = listing(4, Some(9_990), 9, 500);
        gpu.node.gpus = 1;
        gpu.node.tags.push("a100".into());
        let mut offline = listing(5, Some(9_990), 1, 500);
        offline.reputation.online = false;
        let mut paused = listing(6, Some(9_990), 1, 500);
        paused.node.status = NodeStatus::Paused;
        let all = vec![listing(1, Some(9_000), 5, 100), gpu, offline, paused];
        let run = |q: NodeSearch| ids(&search(all.clone(), &q).unwrap().1).join(",");
        assert_eq!(run(NodeSearch::default()), "0x04,0x05,0x01");
        assert_eq!(
            run(NodeSearch {
                gpu: Some(true),
                ..Default::default()
            }),
            "0x04"
        );
        assert_eq!(
            run(NodeSearch {
                tags: Some("SSD, a100".into()),
                ..Default::default()
            }),
            "0x04"
        );
        assert_eq!(
            run(NodeSearch {
                online_only: Some(true),
                ..Default::default()
            }),
            "0x04,0x01"
        );
        assert_eq!(
            run(NodeSearch {
                max_price: Some(5),
                ..Default::default()
            }),
            "0x05,0x01"
        );
        assert_eq!(
            run(NodeSearch {
                min_uptime: Some(9_500),
                ..Default::default()
            }),
            "0x04,0x05"
        );
        assert_eq!(
            run(NodeSearch {
                min_compute_points: Some(200),
                ..Default::default()
            }),
            "0x04,0x05"
        );
        assert_eq!(
            run(NodeSearch {
                region: Some("US-EAST".into()),
                ..Default::default()
            }),
            ""
        );
        assert_eq!(
            run(NodeSearch {
                limit: Some(1),
                offset: Some(1),
                ..Default::default()
            }),
            "0x05"
        );
        assert_eq!(
            search(
                all.clone(),
                &NodeSearch {
                    limit: Some(0),
                    ..Default::default()
                }
            ),
            Err(SearchError::Limit)
        );
        assert_eq!(
            search(
                all,
                &NodeSearch {
                    min_uptime: Some(10_001),
                    ..Default::default()
                }
            ),
            Err(SearchError::Uptime)
        );
    }

    #[test]
    fn featured_is_top_ten_strictly_above_95_percent() {
        let mut all: Vec<_> = (0..15)
            .map(|i| listing(i, Some(9_600 + i as u32), 1, 1))
            .collect();
        all.push(listing(100, Some(9_500), 1, 1));
        all.push(listing(101, None, 1, 1));
        let f = featured(all);
        assert_eq!(f.len(), 10);
        assert_eq!(ids(&f[..1]), ["0x0e"]);
        assert!(f.iter().all(|l| l.reputation.uptime_bps.unwrap() > 9_500));
    }

    #[test]
    fn a_storage_node_that_misses_proofs_is_not_featured() {
        let mut failing = listing(1, Some(9_900), 1, 1);
        failing.reputation.storage_proof_rate_bps = Some(9_000);
        let mut proving = listing(2, Some(9_800), 1, 1);
        proving.reputation.storage_proof_rate_bps = Some(10_000);
        let compute_only = listing(3, Some(9_700), 1, 1);
        let f = featured(vec![failing, proving, compute_only]);
        assert_eq!(ids(&f), ["0x02", "0x03"]);
    }
}

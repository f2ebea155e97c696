//! Reviews: a tenant's EIP-712 signed rating of the node of one of their leases, or of the
//! template it deployed. The signature names the signer; the chain says whether the signer is
//! the lease's tenant. An accepted review is stored (one per lease and subject) and attested.

use alloy::{
    primitives::Address,
    providers::{Provider, ProviderBuilder},
};
use decloud_sdk::{
    LeaseId, NodeId, TemplateId,
    api::ReviewView,
    bindings::LeaseEscrow,
    reviews::{ReviewError, ReviewSubject, SignedReview},
};

use crate::{
    config::ChainConfig,
    store::{Store, StoreError},
};

/// Why a review was not accepted; nothing was stored.
#[derive(Debug, thiserror::Error)]
pub enum ReviewRefusal {
    /// The review is malformed, or its signature does not hold.
    #[error(transparent)]
    Invalid(#[from] ReviewError),
    /// The review was signed for another chain or escrow than the one this orchestrator follows.
    #[error("the review is signed for {0}, not for this orchestrator's chain and escrow")]
    WrongDomain(String),
    /// The lease does not exist on-chain.
    #[error("lease {0} does not exist on-chain")]
    NoSuchLease(LeaseId),
    /// The signer is not the lease's tenant.
    #[error("{signer} is not the tenant of lease {lease_id}: only its tenant may review it")]
    NotTenant {
        /// Who signed.
        signer: Address,
        /// The lease.
        lease_id: LeaseId,
    },
    /// A template review of a lease that deployed no template.
    #[error("lease {0} deployed no template")]
    NoTemplate(LeaseId),
    /// The lease already has a review of this subject.
    #[error("lease {lease_id} already has a review of its {subject}")]
    Duplicate {
        /// The lease.
        lease_id: LeaseId,
        /// What it rates.
        subject: &'static str,
    },
    /// This orchestrator follows no chain, so it cannot check eligibility.
    #[error("this orchestrator follows no chain: it cannot check reviews")]
    NoChain,
    /// The chain could not be read.
    #[error("reading the chain failed: {0}")]
    Chain(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checks `review` (signature, domain, and on-chain eligibility of its signer), then stores and
/// attests it.
pub async fn accept(
    store: &Store,
    chain: Option<&ChainConfig>,
    review: SignedReview,
    now: i64,
) -> Result<ReviewView, ReviewRefusal> {
    let chain = chain.ok_or(ReviewRefusal::NoChain)?;
    let signer = review.verify()?;
    let escrow: Address = chain
        .lease_escrow
        .parse()
        .map_err(|e| ReviewRefusal::Chain(format!("lease_escrow: {e}")))?;
    let rpc = chain
        .rpc_url
        .parse()
        .map_err(|e| ReviewRefusal::Chain(format!("rpc_url: {e}")))?;
    let provider = ProviderBuilder::new().connect_http(rpc).erased();
    let chain_id = provider
        .get_chain_id()
        .await
        .map_err(|e| ReviewRefusal::Chain(e.to_string()))?;
    let signed_escrow: Option<Address> = review.escrow.parse().ok();
    if review.chain_id != chain_id || signed_escrow != Some(escrow) {
        return Err(ReviewRefusal::WrongDomain(format!(
            "chain {} and escrow {}",
            review.chain_id, review.escrow
        )));
    }
    let lease_id = review.lease_id;
    // The escrow reverts for a lease it never opened; any other failure is the chain's.
    let lease = match LeaseEscrow::new(escrow, &provider)
        .getLease(lease_id.as_u256())
        .call()
        .await
    {
        Ok(lease) => lease,
        Err(e) if e.as_revert_data().is_some() => {
            return Err(ReviewRefusal::NoSuchLease(lease_id));
        }
        Err(e) => return Err(ReviewRefusal::Chain(e.to_string())),
    };
    if lease.tenant != signer {
        return Err(ReviewRefusal::NotTenant { signer, lease_id });
    }
    let target = match review.subject {
        ReviewSubject::Node => NodeId::from(lease.nodeId).to_string(),
        ReviewSubject::Template if lease.templateId.is_zero() => {
            return Err(ReviewRefusal::NoTemplate(lease_id));
        }
        ReviewSubject::Template => TemplateId::from(lease.templateId).to_string(),
    };
    let view = ReviewView {
        review: SignedReview {
            reviewer: format!("{signer:#x}"),
            ..review
        },
        target,
        created_at: now,
    };
    if !store.insert_review(&view).await? {
        return Err(ReviewRefusal::Duplicate {
            lease_id,
            subject: view.review.subject.as_str(),
        });
    }
    let payload = serde_json::to_value(&view).expect("reviews serialize");
    store
        .attest(
            &format!(
                "review:{}:{}",
                view.review.lease_id,
                view.review.subject.as_str()
            ),
            "review.accepted",
            &payload,
            now,
        )
        .await?;
    tracing::info!(target: "orchestrator::reviews", lease_id = %view.review.lease_id, subject = view.review.subject.as_str(), target = %view.target, rating = view.review.rating, "review accepted");
    Ok(view)
}

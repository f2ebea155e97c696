//! Reviews of nodes and templates, signed by the tenant's wallet with EIP-712, so that anyone can
//! check offline who wrote a review and that it was not changed.
//!
//! The typed data (documented in `orchestrator/README.md`):
//!
//! - domain: name `"DeCloud Reviews"`, version `"1"`, the chain id, and the chain's LeaseEscrow
//!   as verifying contract (a review names a lease of that escrow);
//! - `Review(uint256 leaseId,uint8 subject,uint8 rating,string text)`: `subject` 0 rates the
//!   lease's node, 1 the template the lease deployed; `rating` is 1 to 5 stars; `text` at most
//!   [`MAX_TEXT`] bytes of UTF-8.
//!
//! A tenant leaves one review per lease and subject; the orchestrator checks on-chain that the
//! signer is the lease's tenant (and, for a template, that the lease deployed one).

use crate::LeaseId;
use alloy::{
    primitives::{Address, B256, U256},
    signers::{Signature, SignerSync, local::PrivateKeySigner},
    sol,
    sol_types::{Eip712Domain, SolStruct},
};
use serde::{Deserialize, Serialize};

/// EIP-712 domain name of reviews.
pub const DOMAIN_NAME: &str = "DeCloud Reviews";
/// EIP-712 domain version of reviews.
pub const DOMAIN_VERSION: &str = "1";
/// Longest review text, bytes of UTF-8.
pub const MAX_TEXT: usize = 2_000;

sol! {
    /// The signed EIP-712 struct of a review.
    #[derive(Debug, PartialEq, Eq)]
    struct Review {
        uint256 leaseId;
        uint8 subject;
        uint8 rating;
        string text;
    }
}

/// What a review rates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ReviewSubject {
    /// The lease's node.
    Node,
    /// The template the lease deployed.
    Template,
}

impl ReviewSubject {
    /// The `subject` field of the typed data.
    pub const fn code(self) -> u8 {
        match self {
            Self::Node => 0,
            Self::Template => 1,
        }
    }

    /// Its name, as in JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Node => "node",
            Self::Template => "template",
        }
    }
}

impl std::str::FromStr for ReviewSubject {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "node" => Ok(Self::Node),
            "template" => Ok(Self::Template),
            other => Err(format!("unknown review subject {other:?}")),
        }
    }
}

/// The EIP-712 domain of reviews of leases of the LeaseEscrow `escrow` on chain `chain_id`.
pub fn domain(chain_id: u64, escrow: Address) -> Eip712Domain {
    Eip712Domain::new(
        Some(DOMAIN_NAME.into()),
        Some(DOMAIN_VERSION.into()),
        Some(U256::from(chain_id)),
        Some(escrow),
        None,
    )
}

/// A review as its author signs it and anyone can verify it: the message, the domain it was
/// signed in, the signature and the address that signed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SignedReview {
    /// On-chain lease id.
    pub lease_id: LeaseId,
    /// What it rates.
    pub subject: ReviewSubject,
    /// Stars, 1 to 5.
    pub rating: u8,
    /// The text (may be empty).
    pub text: String,
    /// Chain id of the domain.
    pub chain_id: u64,
    /// The domain's verifying contract: the LeaseEscrow, 0x-prefixed hex.
    pub escrow: String,
    /// 65-byte signature (r ‖ s ‖ v), 0x-prefixed hex.
    pub signature: String,
    /// The address the signature recovers to, 0x-prefixed lowercase hex.
    pub reviewer: String,
}

/// Why a review is not well formed or its signature does not hold.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    /// The rating is not 1 to 5.
    #[error("rating must be 1 to 5 stars, not {0}")]
    Rating(u8),
    /// The text is longer than [`MAX_TEXT`].
    #[error("text is {0} bytes, longer than {MAX_TEXT}")]
    TextTooLong(usize),
    /// A field cannot be read as its type.
    #[error("invalid {field}: {reason}")]
    Field {
        /// Which field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The signature does not recover to the stated reviewer.
    #[error("signature is by {recovered}, not by the stated reviewer {stated}")]
    WrongSigner {
        /// Who signed.
        recovered: Address,
        /// Who the review says signed.
        stated: String,
    },
}

fn field(field: &'static str, reason: impl std::fmt::Display) -> ReviewError {
    ReviewError::Field {
        field,
        reason: reason.to_string(),
    }
}

impl SignedReview {
    /// The typed-data struct and domain of this review, after checking its fields.
    pub fn typed(&self) -> Result<(Review, Eip712Domain), ReviewError> {
        if !(1..=5).contains(&self.rating) {
            return Err(ReviewError::Rating(self.rating));
        }
        if self.text.len() > MAX_TEXT {
            return Err(ReviewError::TextTooLong(self.text.len()));
        }
        let escrow: Address = self.escrow.parse().map_err(|e| field("escrow", e))?;
        Ok((
            Review {
                leaseId: self.lease_id.as_u256(),
                subject: self.subject.code(),
                rating: self.rating,
                text: self.text.clone(),
            },
            domain(self.chain_id, escrow),
        ))
    }

    /// The EIP-712 hash the signature signs.
    pub fn signing_hash(&self) -> Result<B256, ReviewError> {
        let (review, domain) = self.typed()?;
        Ok(review.eip712_signing_hash(&domain))
    }

    /// The address that signed this review (whatever `reviewer` says).
    pub fn recover(&self) -> Result<Address, ReviewError> {
        let hash = self.signing_hash()?;
        let bytes = alloy::hex::decode(&self.signature).map_err(|e| field("signature", e))?;
        let signature = Signature::try_from(bytes.as_slice()).map_err(|e| field("signature", e))?;
        signature
            .recover_address_from_prehash(&hash)
            .map_err(|e| field("signature", e))
    }

    /// Checks the review offline: well formed, and signed by `reviewer`. Returns the signer.
    pub fn verify(&self) -> Result<Address, ReviewError> {
        let recovered = self.recover()?;
        if format!("{recovered:#x}") != self.reviewer.to_lowercase() {
            return Err(ReviewError::WrongSigner {
                recovered,
                stated: self.reviewer.clone(),
            });
        }
        Ok(recovered)
    }
}

/// What a review says before it is signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReviewDraft {
    /// On-chain lease id.
    pub lease_id: U256,
    /// What it rates.
    pub subject: ReviewSubject,
    /// Stars, 1 to 5.
    pub rating: u8,
    /// The text.
    pub text: String,
}

/// Signs `draft` with `key` for the LeaseEscrow `escrow` on chain `chain_id`.
pub fn sign(
    key: &PrivateKeySigner,
    chain_id: u64,
    escrow: Address,
    draft: &ReviewDraft,
) -> Result<SignedReview, ReviewError> {
    let mut review = SignedReview {
        lease_id: draft.lease_id.into(),
        subject: draft.subject,
        rating: draft.rating,
        text: draft.text.clone(),
        chain_id,
        escrow: format!("{escrow:#x}"),
        signature: String::new(),
        reviewer: format!("{:#x}", key.address()),
    };
    let hash = review.signing_hash()?;
    let signature = key
        .sign_hash_sync(&hash)
        .map_err(|e| field("signature", e))?;
    review.signature = alloy::hex::encode_prefixed(signature.as_bytes());
    Ok(review)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft() -> ReviewDraft {
        ReviewDraft {
            lease_id: U256::from(7),
            subject: ReviewSubject::Node,
            rating: 4,
            text: "Fast and always up.".into(),
        }
    }

    #[test]
    fn a_signed_review_verifies_and_any_change_breaks_it() {
        let key = PrivateKeySigner::random();
        let escrow = Address::repeat_byte(9);
        let review = sign(&key, 31_337, escrow, &draft()).unwrap();
        assert_eq!(review.verify().unwrap(), key.address());
        let json = serde_json::to_string(&review).unwrap();
        let back: SignedReview = serde_json::from_str(&json).unwrap();
        assert_eq!(back.verify().unwrap(), key.address());

        for changed in [
            SignedReview {
                rating: 5,
                ..review.clone()
            },
            SignedReview {
                text: "Slow.".into(),
                ..review.clone()
            },
            SignedReview {
                lease_id: LeaseId::from(8),
                ..review.clone()
            },
            SignedReview {
                subject: ReviewSubject::Template,
                ..review.clone()
            },
            SignedReview {
                chain_id: 1,
                ..review.clone()
            },
        ] {
            assert!(
                matches!(changed.verify(), Err(ReviewError::WrongSigner { .. })),
                "{changed:?}"
            );
        }
        let mut bad = review.clone();
        bad.rating = 0;
        assert_eq!(bad.verify(), Err(ReviewError::Rating(0)));
        let mut long = draft();
        long.text = "x".repeat(MAX_TEXT + 1);
        assert_eq!(
            sign(&key, 31_337, escrow, &long),
            Err(ReviewError::TextTooLong(MAX_TEXT + 1))
        );
    }
}

//! Reviews of nodes and templates, as signed by tenants, with their aggregates.

use super::{Store, StoreError, named, u};
use decloud_sdk::api::{RatingSummary, ReviewView};
use decloud_sdk::reviews::{ReviewSubject, SignedReview};
use sqlx::{Row, any::AnyRow};
use std::collections::BTreeMap;

fn review_from_row(row: &AnyRow) -> Result<ReviewView, StoreError> {
    let rating = u(row, "rating")?;
    Ok(ReviewView {
        review: SignedReview {
            lease_id: named(row, "lease_id")?,
            subject: named::<ReviewSubject>(row, "subject")?,
            rating: u8::try_from(rating).map_err(|_| StoreError::Corrupt {
                column: "rating",
                value: rating.to_string(),
            })?,
            text: row.try_get("text")?,
            chain_id: u(row, "chain_id")?,
            escrow: row.try_get("escrow")?,
            signature: row.try_get("signature")?,
            reviewer: row.try_get("reviewer")?,
        },
        target: row.try_get("target")?,
        created_at: row.try_get("created_at")?,
    })
}

impl Store {
    /// Records an accepted review; `false` when the lease already has a review of that subject
    /// (nothing changes then).
    pub async fn insert_review(&self, review: &ReviewView) -> Result<bool, StoreError> {
        let r = &review.review;
        let inserted = sqlx::query(
            "INSERT INTO reviews (lease_id, subject, target, reviewer, rating, text, chain_id, \
             escrow, signature, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (lease_id, subject) DO NOTHING",
        )
        .bind(r.lease_id.to_string())
        .bind(r.subject.as_str())
        .bind(review.target.clone())
        .bind(r.reviewer.to_lowercase())
        .bind(i64::from(r.rating))
        .bind(r.text.clone())
        .bind(super::i(r.chain_id))
        .bind(r.escrow.to_lowercase())
        .bind(r.signature.clone())
        .bind(review.created_at)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }

    /// The reviews of one node or template, newest first.
    pub async fn reviews_of(
        &self,
        subject: ReviewSubject,
        target: &str,
    ) -> Result<Vec<ReviewView>, StoreError> {
        sqlx::query(
            "SELECT * FROM reviews WHERE subject = $1 AND target = $2 \
             ORDER BY created_at DESC, lease_id",
        )
        .bind(subject.as_str())
        .bind(target.to_string())
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(review_from_row)
        .collect()
    }

    /// The rating aggregate of every reviewed node (or template), by target.
    pub async fn ratings(
        &self,
        subject: ReviewSubject,
    ) -> Result<BTreeMap<String, RatingSummary>, StoreError> {
        let rows = sqlx::query(
            "SELECT target, CAST(COUNT(*) AS BIGINT) AS n, CAST(SUM(rating) AS BIGINT) AS stars \
             FROM reviews \
             WHERE subject = $1 GROUP BY target",
        )
        .bind(subject.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("target")?,
                    RatingSummary::of(u(r, "n")?, u(r, "stars")?),
                ))
            })
            .collect()
    }
}

//! Repair secrets of storage deals, stored sealed (the store never sees one in clear).

use super::{Store, StoreError, i, u};
use sqlx::Row;

/// A deal's sealed repair secret as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedRepairSecret {
    /// The deal.
    pub deal_id: u64,
    /// The deal's owner who registered it, lowercase hex.
    pub owner: String,
    /// The sealed secret, hex.
    pub sealed: String,
    /// When it was registered, unix seconds.
    pub registered_at: i64,
}

impl Store {
    /// Records (or replaces) a deal's sealed repair secret.
    pub async fn save_repair_secret(&self, record: &SealedRepairSecret) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO storage_repair_secrets (deal_id, owner, sealed, registered_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (deal_id) DO UPDATE SET \
             owner = excluded.owner, sealed = excluded.sealed, \
             registered_at = excluded.registered_at",
        )
        .bind(i(record.deal_id))
        .bind(record.owner.to_lowercase())
        .bind(record.sealed.clone())
        .bind(record.registered_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A deal's sealed repair secret, if its owner registered one.
    pub async fn repair_secret(
        &self,
        deal_id: u64,
    ) -> Result<Option<SealedRepairSecret>, StoreError> {
        let row = sqlx::query(
            "SELECT deal_id, owner, sealed, registered_at FROM storage_repair_secrets \
             WHERE deal_id = $1",
        )
        .bind(i(deal_id))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(SealedRepairSecret {
                deal_id: u(&row, "deal_id")?,
                owner: row.try_get("owner")?,
                sealed: row.try_get("sealed")?,
                registered_at: row.try_get("registered_at")?,
            })
        })
        .transpose()
    }
}

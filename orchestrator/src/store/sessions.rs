//! Sign-in state: single-use nonces and the sessions they open.

use super::{NonceProblem, Store, StoreError, i, u};
use sqlx::Row;

/// A signed-in session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRecord {
    /// Address the session is bound to, lowercase hex.
    pub address: String,
    /// Chain id the sign-in message named.
    pub chain_id: u64,
    /// Expiry, unix seconds.
    pub expires_at: i64,
}

impl Store {
    /// Stores a freshly issued nonce valid until `expires_at`.
    pub async fn create_nonce(
        &self,
        nonce: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO siwe_nonces (nonce, created_at, expires_at, used_at) VALUES ($1, $2, $3, NULL)")
            .bind(nonce.to_string())
            .bind(now)
            .bind(expires_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Issue time of a nonce that is still usable at `now`, or why it is not.
    pub async fn usable_nonce(&self, nonce: &str, now: i64) -> Result<i64, StoreError> {
        let row =
            sqlx::query("SELECT created_at, expires_at, used_at FROM siwe_nonces WHERE nonce = $1")
                .bind(nonce.to_string())
                .fetch_optional(&self.pool)
                .await?
                .ok_or(StoreError::Nonce(NonceProblem::Unknown))?;
        let used: Option<i64> = row.try_get("used_at")?;
        let expires: i64 = row.try_get("expires_at")?;
        if used.is_some() {
            return Err(StoreError::Nonce(NonceProblem::Used));
        }
        if expires <= now {
            return Err(StoreError::Nonce(NonceProblem::Expired));
        }
        Ok(row.try_get("created_at")?)
    }

    /// Consumes a nonce and creates the session in one transaction: of two concurrent sign-ins
    /// with the same nonce exactly one gets a session.
    pub async fn consume_nonce_and_create_session(
        &self,
        nonce: &str,
        now: i64,
        token_hash: &str,
        session: &SessionRecord,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let consumed = sqlx::query(
            "UPDATE siwe_nonces SET used_at = $2 WHERE nonce = $1 AND used_at IS NULL AND expires_at > $2",
        )
        .bind(nonce.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if consumed.rows_affected() != 1 {
            drop(tx);
            // Say precisely why; usable_nonce reports the problem, or Used if it raced.
            self.usable_nonce(nonce, now).await?;
            return Err(StoreError::Nonce(NonceProblem::Used));
        }
        sqlx::query(
            "INSERT INTO sessions (token_hash, address, chain_id, created_at, expires_at, revoked_at) \
             VALUES ($1, $2, $3, $4, $5, NULL)",
        )
        .bind(token_hash.to_string())
        .bind(session.address.to_lowercase())
        .bind(i(session.chain_id))
        .bind(now)
        .bind(session.expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The live (not expired, not revoked) session with this token hash.
    pub async fn session(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT address, chain_id, expires_at FROM sessions \
             WHERE token_hash = $1 AND revoked_at IS NULL AND expires_at > $2",
        )
        .bind(token_hash.to_string())
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(SessionRecord {
                address: r.try_get("address")?,
                chain_id: u(&r, "chain_id")?,
                expires_at: r.try_get("expires_at")?,
            })
        })
        .transpose()
    }

    /// Revokes a session; returns whether a live session was revoked.
    pub async fn revoke_session(&self, token_hash: &str, now: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE sessions SET revoked_at = $2 WHERE token_hash = $1 AND revoked_at IS NULL",
        )
        .bind(token_hash.to_string())
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes nonces and sessions that can no longer be used; returns how many rows went.
    pub async fn prune_auth(&self, now: i64) -> Result<u64, StoreError> {
        let a =
            sqlx::query("DELETE FROM siwe_nonces WHERE expires_at <= $1 OR used_at IS NOT NULL")
                .bind(now)
                .execute(&self.pool)
                .await?;
        let b =
            sqlx::query("DELETE FROM sessions WHERE expires_at <= $1 OR revoked_at IS NOT NULL")
                .bind(now)
                .execute(&self.pool)
                .await?;
        Ok(a.rows_affected() + b.rows_affected())
    }
}

//! Entity writes with an undo log, inside the follower's transaction.
//!
//! A [`Changes`] buffer collects the entity rows a batch of logs creates or modifies, reading rows
//! it has not seen yet from the database, and writes them with multi-row upserts at the end. For
//! blocks that can still be reorganised it records each row's state before the block first
//! changed it, so [`rollback`] can restore the exact state at the common ancestor.

use std::collections::HashMap;

use alloy::primitives::U256;
use serde_json::Value as Json;
// Dynamic SQL here is assembled only from the schema's static identifiers and numbered placeholders;
// every value is bound, so `AssertSqlSafe` holds.
use sqlx::AssertSqlSafe;
use sqlx::{AnyConnection, Row, any::AnyRow};

use crate::db::Backend;
use crate::error::StoreError;
use crate::schema::{ColumnType, ENTITIES, EntityDef};

/// Width of a zero-padded `uint256` decimal: 2^256 has 78 digits.
pub const BIGINT_WIDTH: usize = 78;

/// A stored value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Val {
    /// SQL NULL.
    Null,
    /// An integer column.
    Int(i64),
    /// A text column.
    Text(String),
}

impl Val {
    /// A `uint256` in its stored form.
    pub(crate) fn big(v: U256) -> Self {
        Self::Text(pad(v))
    }

    /// A `u64` in its stored form (BIGINT; values above i64::MAX wrap, which no event field reaches
    /// in practice but which the conversion keeps lossless by reinterpretation).
    pub(crate) fn u64(v: u64) -> Self {
        Self::Int(v as i64)
    }

    /// Text.
    pub(crate) fn text(v: impl Into<String>) -> Self {
        Self::Text(v.into())
    }

    /// A boolean in its stored form.
    pub(crate) fn bool(v: bool) -> Self {
        Self::Int(i64::from(v))
    }

    fn to_json(&self) -> Json {
        match self {
            Self::Null => Json::Null,
            Self::Int(i) => Json::from(*i),
            Self::Text(s) => Json::from(s.as_str()),
        }
    }

    fn from_json(v: &Json) -> Self {
        match v {
            Json::Number(n) => Self::Int(n.as_i64().unwrap_or_default()),
            Json::String(s) => Self::Text(s.clone()),
            _ => Self::Null,
        }
    }
}

/// A `uint256` as zero-padded decimal text.
pub fn pad(v: U256) -> String {
    format!("{:0>width$}", v.to_string(), width = BIGINT_WIDTH)
}

/// The decimal value of a zero-padded `uint256` (leading zeros removed).
pub fn unpad(s: &str) -> &str {
    let t = s.trim_start_matches('0');
    if t.is_empty() { "0" } else { t }
}

/// One entity row: its definition and its values in column order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EntityRow {
    /// The entity type.
    pub def: &'static EntityDef,
    /// Values in the order of `def.columns`.
    pub vals: Vec<Val>,
}

impl EntityRow {
    /// A new row with every column set to a type-appropriate zero (NULL for nullable columns).
    pub(crate) fn new(def: &'static EntityDef, id: impl Into<String>) -> Self {
        let mut vals: Vec<Val> = def
            .columns
            .iter()
            .map(|c| match (c.nullable, c.ty) {
                (true, _) => Val::Null,
                (_, ColumnType::BigInt) => Val::big(U256::ZERO),
                (_, t) if t.is_integer() => Val::Int(0),
                _ => Val::Text(String::new()),
            })
            .collect();
        vals[0] = Val::Text(id.into());
        Self { def, vals }
    }

    /// The row's id.
    pub(crate) fn id(&self) -> &str {
        match &self.vals[0] {
            Val::Text(s) => s,
            _ => "",
        }
    }

    /// Sets a column by SQL name.
    pub(crate) fn set(&mut self, column: &str, v: Val) -> &mut Self {
        let i = self.def.index(column);
        self.vals[i] = v;
        self
    }

    /// A `uint256` column's value (zero when unset or unreadable).
    pub(crate) fn big(&self, column: &str) -> U256 {
        match &self.vals[self.def.index(column)] {
            Val::Text(s) => unpad(s).parse().unwrap_or_default(),
            _ => U256::ZERO,
        }
    }

    /// An integer column's value.
    pub(crate) fn int(&self, column: &str) -> i64 {
        match &self.vals[self.def.index(column)] {
            Val::Int(i) => *i,
            _ => 0,
        }
    }

    /// A text column's value.
    pub(crate) fn text(&self, column: &str) -> &str {
        match &self.vals[self.def.index(column)] {
            Val::Text(s) => s,
            _ => "",
        }
    }

    /// Adds to a `uint256` column (saturating: event amounts never overflow 2^256).
    pub(crate) fn add_big(&mut self, column: &str, amount: U256) -> &mut Self {
        let v = self.big(column).saturating_add(amount);
        self.set(column, Val::big(v))
    }

    /// Subtracts from a `uint256` column, stopping at zero.
    pub(crate) fn sub_big(&mut self, column: &str, amount: U256) -> &mut Self {
        let v = self.big(column).saturating_sub(amount);
        self.set(column, Val::big(v))
    }

    /// Adds to an integer column.
    pub(crate) fn add_int(&mut self, column: &str, amount: i64) -> &mut Self {
        let v = self.int(column).saturating_add(amount);
        self.set(column, Val::Int(v))
    }

    fn to_json(&self) -> String {
        Json::Array(self.vals.iter().map(Val::to_json).collect()).to_string()
    }

    fn from_json(def: &'static EntityDef, s: &str) -> Result<Self, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt {
            table: "undo_log",
            reason,
        };
        let v: Json = serde_json::from_str(s).map_err(|e| corrupt(e.to_string()))?;
        let items = v
            .as_array()
            .ok_or_else(|| corrupt("old row is not an array".into()))?;
        // Migrations only append columns: a row saved before one has fewer values, and the
        // appended columns take the values a new row starts with (what the migration gave the
        // rows it found).
        if items.is_empty() || items.len() > def.columns.len() {
            return Err(corrupt(format!(
                "old row of {} has {} values",
                def.table,
                items.len()
            )));
        }
        let mut row = Self::new(def, "");
        for (slot, item) in row.vals.iter_mut().zip(items) {
            *slot = Val::from_json(item);
        }
        Ok(row)
    }
}

/// Reads one column of a row by its type.
pub(crate) fn read_val(row: &AnyRow, i: usize, ty: ColumnType) -> Result<Val, sqlx::Error> {
    Ok(if ty.is_integer() {
        row.try_get::<Option<i64>, _>(i)?
            .map_or(Val::Null, Val::Int)
    } else {
        row.try_get::<Option<String>, _>(i)?
            .map_or(Val::Null, Val::Text)
    })
}

fn read_row(def: &'static EntityDef, row: &AnyRow) -> Result<EntityRow, sqlx::Error> {
    let vals = def
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| read_val(row, i, c.ty))
        .collect::<Result<_, _>>()?;
    Ok(EntityRow { def, vals })
}

type Key = (&'static str, String);

/// The entity changes of one batch, with their undo records. See the module docs.
#[derive(Debug)]
pub(crate) struct Changes {
    backend: Backend,
    final_block: u64,
    rows: HashMap<Key, EntityRow>,
    order: Vec<Key>,
    undo: Vec<(u64, &'static str, String, Option<String>)>,
    undone_in: HashMap<Key, u64>,
}

impl Changes {
    /// An empty buffer; changes in blocks at or below `final_block` get no undo records.
    pub(crate) fn new(backend: Backend, final_block: u64) -> Self {
        Self {
            backend,
            final_block,
            rows: HashMap::new(),
            order: Vec::new(),
            undo: Vec::new(),
            undone_in: HashMap::new(),
        }
    }

    /// An entity row as of the changes so far.
    pub(crate) async fn get(
        &mut self,
        conn: &mut AnyConnection,
        def: &'static EntityDef,
        id: &str,
    ) -> Result<Option<EntityRow>, StoreError> {
        let key = (def.table, id.to_owned());
        if let Some(row) = self.rows.get(&key) {
            return Ok(Some(row.clone()));
        }
        let sql = format!(
            "SELECT {} FROM {} WHERE id = {}",
            def.select_list(),
            def.table,
            self.backend.param(1)
        );
        let row = sqlx::query(AssertSqlSafe(sql.as_str()))
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
        Ok(row.map(|r| read_row(def, &r)).transpose()?)
    }

    /// Stores a row changed in `block`. `previous` is the row as [`Changes::get`] returned it
    /// (`None` for a new row); it becomes the undo record when this is the block's first change.
    pub(crate) fn put(&mut self, block: u64, previous: Option<&EntityRow>, row: EntityRow) {
        let key = (row.def.table, row.id().to_owned());
        if block > self.final_block && self.undone_in.get(&key) != Some(&block) {
            self.undone_in.insert(key.clone(), block);
            self.undo.push((
                block,
                row.def.table,
                key.1.clone(),
                previous.map(EntityRow::to_json),
            ));
        }
        if self.rows.insert(key.clone(), row).is_none() {
            self.order.push(key);
        }
    }

    /// Writes every changed row and the undo records.
    pub(crate) async fn flush(self, conn: &mut AnyConnection) -> Result<(), StoreError> {
        let mut by_table: HashMap<&'static str, Vec<&EntityRow>> = HashMap::new();
        for key in &self.order {
            let row = &self.rows[key];
            by_table.entry(row.def.table).or_default().push(row);
        }
        for def in ENTITIES {
            if let Some(rows) = by_table.get(def.table) {
                upsert(conn, self.backend, def, rows).await?;
            }
        }
        let p = |n| self.backend.param(n);
        let mut seq: HashMap<u64, i64> = HashMap::new();
        for chunk in self.undo.chunks(1000) {
            let mut sql = String::from(
                "INSERT INTO undo_log (block_number, seq, entity, entity_id, old_row) VALUES ",
            );
            for (i, _) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push(',');
                }
                let b = i * 5;
                sql.push_str(&format!(
                    "({}, {}, {}, {}, {})",
                    p(b + 1),
                    p(b + 2),
                    p(b + 3),
                    p(b + 4),
                    p(b + 5)
                ));
            }
            let mut q = sqlx::query(AssertSqlSafe(sql.as_str()));
            for (block, table, id, old) in chunk {
                let s = seq.entry(*block).or_default();
                *s += 1;
                q = q
                    .bind(*block as i64)
                    .bind(*s)
                    .bind(*table)
                    .bind(id.as_str())
                    .bind(old.clone());
            }
            q.execute(&mut *conn).await?;
        }
        Ok(())
    }
}

/// Multi-row `INSERT … ON CONFLICT (id) DO UPDATE`, in chunks under both backends' parameter limits.
async fn upsert(
    conn: &mut AnyConnection,
    backend: Backend,
    def: &'static EntityDef,
    rows: &[&EntityRow],
) -> Result<(), StoreError> {
    let ncols = def.columns.len();
    let per_chunk = (30_000 / ncols).max(1);
    let updates: Vec<String> = def.columns[1..]
        .iter()
        .map(|c| format!("{0} = excluded.{0}", c.column))
        .collect();
    for chunk in rows.chunks(per_chunk) {
        let mut sql = format!("INSERT INTO {} ({}) VALUES ", def.table, def.select_list());
        for (r, _) in chunk.iter().enumerate() {
            if r > 0 {
                sql.push(',');
            }
            sql.push('(');
            for c in 0..ncols {
                if c > 0 {
                    sql.push(',');
                }
                sql.push_str(&backend.param(r * ncols + c + 1));
            }
            sql.push(')');
        }
        sql.push_str(&format!(
            " ON CONFLICT (id) DO UPDATE SET {}",
            updates.join(", ")
        ));
        let mut q = sqlx::query(AssertSqlSafe(sql.as_str()));
        for row in chunk {
            for (v, c) in row.vals.iter().zip(def.columns) {
                q = match v {
                    Val::Int(i) => q.bind(*i),
                    Val::Text(s) => q.bind(s.as_str()),
                    Val::Null if c.ty.is_integer() => q.bind(None::<i64>),
                    Val::Null => q.bind(None::<String>),
                };
            }
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Restores every entity to its state at `ancestor` from the undo log, newest change first, and
/// deletes the raw events above it.
pub(crate) async fn rollback(
    conn: &mut AnyConnection,
    backend: Backend,
    ancestor: u64,
) -> Result<(), StoreError> {
    let p = |n| backend.param(n);
    let sql = format!(
        "SELECT entity, entity_id, old_row FROM undo_log WHERE block_number > {}
         ORDER BY block_number DESC, seq DESC",
        p(1)
    );
    let undo = sqlx::query(AssertSqlSafe(sql.as_str()))
        .bind(ancestor as i64)
        .fetch_all(&mut *conn)
        .await?;
    for record in undo {
        let table: String = record.try_get(0)?;
        let id: String = record.try_get(1)?;
        let old: Option<String> = record.try_get(2)?;
        let def = ENTITIES
            .into_iter()
            .find(|d| d.table == table)
            .ok_or_else(|| StoreError::Corrupt {
                table: "undo_log",
                reason: format!("unknown entity {table}"),
            })?;
        let delete = format!("DELETE FROM {} WHERE id = {}", def.table, p(1));
        sqlx::query(AssertSqlSafe(delete.as_str()))
            .bind(&id)
            .execute(&mut *conn)
            .await?;
        if let Some(old) = old {
            let row = EntityRow::from_json(def, &old)?;
            upsert(conn, backend, def, &[&row]).await?;
        }
    }
    for sql in [
        format!("DELETE FROM undo_log WHERE block_number > {}", p(1)),
        format!("DELETE FROM events WHERE block_number > {}", p(1)),
    ] {
        sqlx::query(AssertSqlSafe(sql.as_str()))
            .bind(ancestor as i64)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Drops undo records of blocks that can no longer be reorganised.
pub(crate) async fn prune_undo(
    conn: &mut AnyConnection,
    backend: Backend,
    final_block: u64,
) -> Result<(), StoreError> {
    let sql = format!(
        "DELETE FROM undo_log WHERE block_number <= {}",
        backend.param(1)
    );
    sqlx::query(AssertSqlSafe(sql.as_str()))
        .bind(final_block as i64)
        .execute(conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_undo_row_saved_before_columns_were_appended_reads_with_their_defaults() {
        use crate::schema::DEAL_REPLICAS;
        let mut row = EntityRow::new(&DEAL_REPLICAS, "1-0");
        row.set("node", Val::text("0xab")).add_int("moves", 2);
        let saved = row.to_json();
        assert_eq!(EntityRow::from_json(&DEAL_REPLICAS, &saved).unwrap(), row);
        // The same row as saved before `moves` was appended: it reads with moves = 0.
        let mut old: Vec<Json> = serde_json::from_str(&saved).unwrap();
        old.pop();
        let read = EntityRow::from_json(&DEAL_REPLICAS, &Json::Array(old).to_string()).unwrap();
        assert_eq!(read.text("node"), "0xab");
        assert_eq!(read.int("moves"), 0);
        assert_eq!(read.id(), "1-0");
        // More values than columns, or none, is corrupt.
        let mut long: Vec<Json> = serde_json::from_str(&saved).unwrap();
        long.push(Json::Null);
        assert!(EntityRow::from_json(&DEAL_REPLICAS, &Json::Array(long).to_string()).is_err());
        assert!(EntityRow::from_json(&DEAL_REPLICAS, "[]").is_err());
    }

    #[test]
    fn padding_orders_numerically() {
        let a = pad(U256::from(9));
        let b = pad(U256::from(10));
        let max = pad(U256::MAX);
        assert_eq!(max.len(), BIGINT_WIDTH);
        assert!(a < b && b < max);
        assert_eq!(unpad(&a), "9");
        assert_eq!(unpad(&pad(U256::ZERO)), "0");
    }
}

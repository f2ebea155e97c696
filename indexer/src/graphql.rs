//! The GraphQL API in The Graph's conventions, generated from the entity definitions.
//!
//! For every entity `X` (table `xs`): `x(id: ID!): X` and
//! `xs(where: X_filter, first: Int = 100, skip: Int = 0, orderBy: X_orderBy,
//! orderDirection: OrderDirection, after: ID): [X!]!`. Filters take a field's name for equality
//! and the suffixes `_not _gt _gte _lt _lte _in _not_in` (plus `_contains _starts_with` on text and
//! bytes); several filters are ANDed. `first` is at most 1000 and `skip` at most 5000; `after`
//! (the id of the last item seen) pages through any number of items by keyset, with no ceiling.
//! `_meta { block { number hash timestamp } hasIndexingErrors }` reports the indexed block, and the
//! subscription `events(name, contract)` streams newly committed events.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use alloy::primitives::U256;
use async_graphql::dynamic::{
    Enum, Field, FieldFuture, FieldValue, InputObject, InputValue, Object, ResolverContext, Scalar,
    Schema, SchemaError, Subscription, SubscriptionField, SubscriptionFieldFuture, TypeRef,
    ValueAccessor,
};
use async_graphql::indexmap::IndexMap;
use async_graphql::{Error, Name, Value};
use futures::StreamExt;
use sqlx::any::AnyRow;
// Dynamic SQL here is assembled only from the schema's static identifiers and numbered placeholders;
// every value from a query is bound, so `AssertSqlSafe` holds.
use sqlx::{AssertSqlSafe, Row};
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tracing::error;

use crate::db::{Backend, Database};
use crate::follower::load_cursor;
use crate::handler::EventNotice;
use crate::metrics::Metrics;
use crate::schema::{Column, ColumnType, ENTITIES, EVENTS, EntityDef};
use crate::store::{Val, pad, read_val, unpad};

/// Default page size.
pub const DEFAULT_FIRST: i64 = 100;
/// Largest page size.
pub const MAX_FIRST: i64 = 1000;
/// Largest offset; deeper pages use `after`.
pub const MAX_SKIP: i64 = 5000;
/// Largest query depth.
pub const MAX_DEPTH: usize = 10;
/// Largest query complexity (fields selected, counted once per field in the query text).
pub const MAX_COMPLEXITY: usize = 500;

/// What the resolvers need.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// The database.
    pub db: Database,
    /// The follower's cursor name, for `_meta`.
    pub cursor: String,
    /// The follower's metrics, for `_meta.hasIndexingErrors`.
    pub metrics: Arc<Metrics>,
    /// Committed events, for subscriptions.
    pub notices: broadcast::Sender<EventNotice>,
}

const SUFFIX_ORDER: [&str; 5] = ["_gt", "_gte", "_lt", "_lte", ""];

fn gql_type(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Id => TypeRef::ID,
        ColumnType::Text => TypeRef::STRING,
        ColumnType::Bytes => "Bytes",
        ColumnType::Int => TypeRef::INT,
        ColumnType::BigInt64 | ColumnType::BigInt => "BigInt",
        ColumnType::Bool => TypeRef::BOOLEAN,
    }
}

fn is_textual(ty: ColumnType) -> bool {
    matches!(ty, ColumnType::Id | ColumnType::Text | ColumnType::Bytes)
}

/// The suffixes a column accepts in `where`.
fn suffixes(ty: ColumnType) -> Vec<&'static str> {
    let mut s = vec!["", "_not", "_in", "_not_in"];
    if ty != ColumnType::Bool {
        s.extend(&SUFFIX_ORDER[..4]);
    }
    if is_textual(ty) {
        s.extend(["_contains", "_starts_with"]);
    }
    s
}

/// Builds the schema.
pub fn schema(state: ApiState) -> Result<Schema, SchemaError> {
    let mut query = Object::new("Query");
    let mut builder = Schema::build("Query", None, Some("Subscription"));
    builder = builder
        .register(
            Scalar::new("BigInt")
                .description("An unsigned integer of up to 256 bits, as a decimal string.")
                .validator(|v| match v {
                    Value::String(s) => !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()),
                    Value::Number(n) => n.as_u64().is_some(),
                    _ => false,
                }),
        )
        .register(
            Scalar::new("Bytes")
                .description("Bytes, addresses and hashes as 0x-prefixed hex.")
                .validator(|v| match v {
                    Value::String(s) => s.starts_with("0x"),
                    _ => false,
                }),
        )
        .register(Enum::new("OrderDirection").item("asc").item("desc"));

    for def in ENTITIES {
        let mut object = Object::new(def.type_name).description(def.description);
        for column in def.columns {
            let name = column.field;
            let ty = if column.nullable {
                TypeRef::named(gql_type(column.ty))
            } else {
                TypeRef::named_nn(gql_type(column.ty))
            };
            object = object.field(Field::new(name, ty, move |ctx| {
                FieldFuture::new(async move {
                    let Some(Value::Object(map)) = ctx.parent_value.as_value() else {
                        return Err(Error::new("internal error: entity is not an object"));
                    };
                    Ok(map
                        .get(name)
                        .cloned()
                        .filter(|v| *v != Value::Null)
                        .map(FieldValue::value))
                })
            }));
        }
        builder = builder.register(object);

        let mut filter = InputObject::new(format!("{}_filter", def.type_name));
        for column in def.columns {
            for suffix in suffixes(column.ty) {
                let base = gql_type(column.ty);
                let ty = if suffix.ends_with("_in") {
                    TypeRef::named_nn_list(base)
                } else if matches!(suffix, "_contains" | "_starts_with") {
                    TypeRef::named(TypeRef::STRING)
                } else {
                    TypeRef::named(base)
                };
                filter = filter.field(InputValue::new(format!("{}{suffix}", column.field), ty));
            }
        }
        builder = builder.register(filter);
        let mut order = Enum::new(format!("{}_orderBy", def.type_name));
        for column in def.columns {
            order = order.item(column.field);
        }
        builder = builder.register(order);

        let single_state = state.clone();
        query = query.field(
            Field::new(def.single, TypeRef::named(def.type_name), move |ctx| {
                let state = single_state.clone();
                FieldFuture::new(async move {
                    let id = ctx.args.try_get("id")?.string()?.to_owned();
                    Ok(fetch_one(&state, def, &id).await?.map(FieldValue::value))
                })
            })
            .argument(InputValue::new("id", TypeRef::named_nn(TypeRef::ID))),
        );
        let list_state = state.clone();
        query = query.field(
            Field::new(
                def.list,
                TypeRef::named_nn_list_nn(def.type_name),
                move |ctx| {
                    let state = list_state.clone();
                    FieldFuture::new(async move {
                        let rows = fetch_list(&state, def, &ctx).await?;
                        Ok(Some(FieldValue::list(
                            rows.into_iter().map(FieldValue::value),
                        )))
                    })
                },
            )
            .argument(InputValue::new(
                "where",
                TypeRef::named(format!("{}_filter", def.type_name)),
            ))
            .argument(
                InputValue::new("first", TypeRef::named(TypeRef::INT)).default_value(DEFAULT_FIRST),
            )
            .argument(InputValue::new("skip", TypeRef::named(TypeRef::INT)).default_value(0))
            .argument(InputValue::new(
                "orderBy",
                TypeRef::named(format!("{}_orderBy", def.type_name)),
            ))
            .argument(InputValue::new(
                "orderDirection",
                TypeRef::named("OrderDirection"),
            ))
            .argument(InputValue::new("after", TypeRef::named(TypeRef::ID))),
        );
    }

    builder = builder
        .register(
            Object::new("_Block_")
                .field(value_field("number", TypeRef::named_nn("BigInt")))
                .field(value_field("hash", TypeRef::named("Bytes")))
                .field(value_field("timestamp", TypeRef::named("BigInt"))),
        )
        .register(
            Object::new("_Meta_")
                .field(value_field("block", TypeRef::named_nn("_Block_")))
                .field(value_field(
                    "hasIndexingErrors",
                    TypeRef::named_nn(TypeRef::BOOLEAN),
                )),
        );
    let meta_state = state.clone();
    query = query.field(Field::new("_meta", TypeRef::named("_Meta_"), move |_| {
        let state = meta_state.clone();
        FieldFuture::new(async move { meta(&state).await.map(|v| v.map(FieldValue::value)) })
    }));

    let sub_state = state.clone();
    let subscription = Subscription::new("Subscription").field(
        SubscriptionField::new("events", TypeRef::named_nn(EVENTS.type_name), move |ctx| {
            let state = sub_state.clone();
            SubscriptionFieldFuture::new(async move {
                let name = ctx
                    .args
                    .get("name")
                    .map(|v| v.string().map(str::to_owned))
                    .transpose()?;
                let contract = ctx
                    .args
                    .get("contract")
                    .map(|v| v.string().map(str::to_owned))
                    .transpose()?;
                let stream =
                    BroadcastStream::new(state.notices.subscribe()).filter_map(move |notice| {
                        let keep = match &notice {
                            Ok(n) => {
                                name.as_ref().is_none_or(|x| *x == n.name)
                                    && contract.as_ref().is_none_or(|x| *x == n.contract)
                            }
                            Err(_) => false,
                        };
                        futures::future::ready(
                            notice.ok().filter(|_| keep).map(|n| Ok(notice_value(&n))),
                        )
                    });
                Ok(stream)
            })
        })
        .argument(InputValue::new("name", TypeRef::named(TypeRef::STRING)))
        .argument(InputValue::new("contract", TypeRef::named(TypeRef::STRING))),
    );

    builder
        .register(query)
        .register(subscription)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .finish()
}

fn value_field(name: &'static str, ty: TypeRef) -> Field {
    Field::new(name, ty, move |ctx| {
        FieldFuture::new(async move {
            let Some(Value::Object(map)) = ctx.parent_value.as_value() else {
                return Err(Error::new("internal error: not an object"));
            };
            Ok(map
                .get(name)
                .cloned()
                .filter(|v| *v != Value::Null)
                .map(FieldValue::value))
        })
    })
}

fn notice_value(n: &EventNotice) -> Value {
    let mut map = IndexMap::new();
    map.insert(Name::new("id"), Value::from(n.id.clone()));
    map.insert(
        Name::new("blockNumber"),
        Value::from(n.block_number.to_string()),
    );
    map.insert(Name::new("blockHash"), Value::from(n.block_hash.clone()));
    map.insert(
        Name::new("transactionHash"),
        Value::from(n.transaction_hash.clone()),
    );
    map.insert(Name::new("logIndex"), Value::from(n.log_index));
    map.insert(Name::new("address"), Value::from(n.address.clone()));
    map.insert(Name::new("contract"), Value::from(n.contract.clone()));
    map.insert(Name::new("name"), Value::from(n.name.clone()));
    map.insert(Name::new("args"), Value::from(n.args.clone()));
    Value::Object(map)
}

/// The generic message for a failure that is the server's, not the query's; the cause goes to the
/// log.
fn internal(e: impl std::fmt::Display) -> Error {
    error!(target: "indexer::graphql", error = %e, "query failed");
    Error::new("internal error while reading the store")
}

async fn meta(state: &ApiState) -> async_graphql::Result<Option<Value>> {
    let cursor = load_cursor(&state.db, &state.cursor)
        .await
        .map_err(internal)?;
    let mut block = IndexMap::new();
    block.insert(
        Name::new("number"),
        Value::from(cursor.map_or(0, |c| c.number).to_string()),
    );
    block.insert(
        Name::new("hash"),
        cursor.map_or(Value::Null, |c| Value::from(c.hash.to_string())),
    );
    block.insert(
        Name::new("timestamp"),
        cursor.map_or(Value::Null, |c| Value::from(c.timestamp.to_string())),
    );
    let mut meta = IndexMap::new();
    meta.insert(Name::new("block"), Value::Object(block));
    meta.insert(
        Name::new("hasIndexingErrors"),
        Value::from(state.metrics.indexing_error.load(Ordering::Relaxed)),
    );
    Ok(Some(Value::Object(meta)))
}

fn row_value(def: &EntityDef, row: &AnyRow) -> Result<Value, sqlx::Error> {
    let mut map = IndexMap::new();
    for (i, column) in def.columns.iter().enumerate() {
        let v = match (read_val(row, i, column.ty)?, column.ty) {
            (Val::Null, _) => Value::Null,
            (Val::Int(i), ColumnType::Bool) => Value::from(i != 0),
            (Val::Int(i), ColumnType::BigInt64) => Value::from((i as u64).to_string()),
            (Val::Int(i), _) => Value::from(i),
            (Val::Text(s), ColumnType::BigInt) => Value::from(unpad(&s).to_owned()),
            (Val::Text(s), _) => Value::from(s),
        };
        map.insert(Name::new(column.field), v);
    }
    Ok(Value::Object(map))
}

async fn fetch_one(
    state: &ApiState,
    def: &EntityDef,
    id: &str,
) -> async_graphql::Result<Option<Value>> {
    let sql = format!(
        "SELECT {} FROM {} WHERE id = {}",
        def.select_list(),
        def.table,
        state.db.backend.param(1)
    );
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&state.db.pool)
        .await
        .map_err(internal)?;
    row.map(|r| row_value(def, &r))
        .transpose()
        .map_err(internal)
}

/// A value bound to a query.
#[derive(Debug, Clone, PartialEq)]
enum Bind {
    Int(i64),
    Text(String),
}

/// Converts a filter or cursor value to the column's stored form, or explains why it does not fit.
fn to_bind(column: &Column, v: &Value) -> async_graphql::Result<Bind> {
    let bad = || {
        Error::new(format!(
            "invalid value {v} for {} ({})",
            column.field,
            gql_type(column.ty)
        ))
    };
    Ok(match column.ty {
        ColumnType::Bool => match v {
            Value::Boolean(b) => Bind::Int(i64::from(*b)),
            _ => return Err(bad()),
        },
        ColumnType::Int => match v {
            Value::Number(n) => Bind::Int(n.as_i64().ok_or_else(bad)?),
            _ => return Err(bad()),
        },
        ColumnType::BigInt64 => {
            let n: u64 = match v {
                Value::String(s) => s.parse().map_err(|_| bad())?,
                Value::Number(n) => n.as_u64().ok_or_else(bad)?,
                _ => return Err(bad()),
            };
            Bind::Int(n as i64)
        }
        ColumnType::BigInt => {
            let n: U256 = match v {
                Value::String(s) if s.bytes().all(|b| b.is_ascii_digit()) => {
                    s.parse().map_err(|_| bad())?
                }
                Value::Number(n) => U256::from(n.as_u64().ok_or_else(bad)?),
                _ => return Err(bad()),
            };
            Bind::Text(pad(n))
        }
        ColumnType::Bytes => match v {
            Value::String(s) => Bind::Text(s.to_lowercase()),
            _ => return Err(bad()),
        },
        ColumnType::Id | ColumnType::Text => match v {
            Value::String(s) => Bind::Text(s.clone()),
            _ => return Err(bad()),
        },
    })
}

/// A `WHERE` clause under construction with its bound values.
struct Sql {
    backend: Backend,
    clauses: Vec<String>,
    binds: Vec<Bind>,
}

impl Sql {
    fn param(&mut self, b: Bind) -> String {
        self.binds.push(b);
        self.backend.param(self.binds.len())
    }

    fn position(&self, column: &str, needle: &str) -> String {
        match self.backend {
            Backend::Sqlite => format!("instr({column}, {needle})"),
            Backend::Postgres => format!("strpos({column}, {needle})"),
        }
    }

    fn filter(
        &mut self,
        def: &EntityDef,
        key: &str,
        value: ValueAccessor<'_>,
    ) -> async_graphql::Result<()> {
        let (column, suffix) = def
            .columns
            .iter()
            .filter_map(|c| key.strip_prefix(c.field).map(|rest| (c, rest)))
            .find(|(c, rest)| suffixes(c.ty).contains(rest))
            .ok_or_else(|| Error::new(format!("unknown filter {key}")))?;
        let col = column.column;
        let v = value.as_value();
        if *v == Value::Null {
            let clause = match suffix {
                "" => format!("{col} IS NULL"),
                "_not" => format!("{col} IS NOT NULL"),
                _ => return Err(Error::new(format!("{key} cannot be null"))),
            };
            self.clauses.push(clause);
            return Ok(());
        }
        let clause = match suffix {
            "" | "_not" | "_gt" | "_gte" | "_lt" | "_lte" => {
                let op = match suffix {
                    "" => "=",
                    "_not" => "<>",
                    "_gt" => ">",
                    "_gte" => ">=",
                    "_lt" => "<",
                    _ => "<=",
                };
                let p = self.param(to_bind(column, v)?);
                format!("{col} {op} {p}")
            }
            "_in" | "_not_in" => {
                let Value::List(items) = v else {
                    return Err(Error::new(format!("{key} takes a list")));
                };
                if items.len() > MAX_FIRST as usize {
                    return Err(Error::new(format!(
                        "{key} takes at most {MAX_FIRST} values"
                    )));
                }
                if items.is_empty() {
                    // Nothing is in the empty set; everything is outside it.
                    (if suffix == "_in" { "1 = 0" } else { "1 = 1" }).to_owned()
                } else {
                    let mut ps = Vec::with_capacity(items.len());
                    for item in items {
                        let b = to_bind(column, item)?;
                        ps.push(self.param(b));
                    }
                    let not = if suffix == "_not_in" { "NOT " } else { "" };
                    format!("{col} {not}IN ({})", ps.join(", "))
                }
            }
            "_contains" | "_starts_with" => {
                let Value::String(s) = v else {
                    return Err(Error::new(format!("{key} takes a string")));
                };
                let s = if column.ty == ColumnType::Bytes {
                    s.to_lowercase()
                } else {
                    s.clone()
                };
                let p = self.param(Bind::Text(s));
                let pos = self.position(col, &p);
                if suffix == "_contains" {
                    format!("{pos} > 0")
                } else {
                    format!("{pos} = 1")
                }
            }
            _ => return Err(Error::new(format!("unknown filter {key}"))),
        };
        self.clauses.push(clause);
        Ok(())
    }
}

async fn fetch_list(
    state: &ApiState,
    def: &'static EntityDef,
    ctx: &ResolverContext<'_>,
) -> async_graphql::Result<Vec<Value>> {
    let first = ctx
        .args
        .get("first")
        .map(|v| v.i64())
        .transpose()?
        .unwrap_or(DEFAULT_FIRST);
    if !(0..=MAX_FIRST).contains(&first) {
        return Err(Error::new(format!(
            "first must be between 0 and {MAX_FIRST}"
        )));
    }
    let skip = ctx
        .args
        .get("skip")
        .map(|v| v.i64())
        .transpose()?
        .unwrap_or(0);
    if !(0..=MAX_SKIP).contains(&skip) {
        return Err(Error::new(format!(
            "skip must be between 0 and {MAX_SKIP}; page further with `after`"
        )));
    }
    let order_field = ctx
        .args
        .get("orderBy")
        .map(|v| v.enum_name().map(str::to_owned))
        .transpose()?
        .unwrap_or_else(|| "id".to_owned());
    let order_field = order_field.as_str();
    let order = def
        .by_field(order_field)
        .ok_or_else(|| Error::new(format!("unknown orderBy {order_field}")))?;
    let desc = ctx
        .args
        .get("orderDirection")
        .map(|v| v.enum_name().map(|d| d == "desc"))
        .transpose()?
        .unwrap_or(false);
    let dir = if desc { "DESC" } else { "ASC" };

    let mut sql = Sql {
        backend: state.db.backend,
        clauses: Vec::new(),
        binds: Vec::new(),
    };
    if let Some(filter) = ctx.args.get("where") {
        for (key, value) in filter.object()?.iter() {
            sql.filter(def, key.as_str(), value)?;
        }
    }
    if let Some(after) = ctx.args.get("after") {
        let after = after.string()?.to_owned();
        if order.nullable {
            return Err(Error::new(format!(
                "`after` needs a non-null orderBy, not {order_field}"
            )));
        }
        // Keyset paging: continue strictly after the cursor row in (orderBy, id) order.
        let lookup = format!(
            "SELECT {} FROM {} WHERE id = {}",
            order.column,
            def.table,
            state.db.backend.param(1)
        );
        let row = sqlx::query(AssertSqlSafe(lookup))
            .bind(after.as_str())
            .fetch_optional(&state.db.pool)
            .await
            .map_err(internal)?
            .ok_or_else(|| Error::new(format!("unknown cursor {after}")))?;
        let key = if order.ty.is_integer() {
            Bind::Int(row.try_get::<i64, _>(0).map_err(internal)?)
        } else {
            Bind::Text(row.try_get::<String, _>(0).map_err(internal)?)
        };
        let cmp = if desc { "<" } else { ">" };
        let col = order.column;
        let clause = if col == "id" {
            let p = sql.param(Bind::Text(after));
            format!("id {cmp} {p}")
        } else {
            let p1 = sql.param(key.clone());
            let p2 = sql.param(key);
            let p3 = sql.param(Bind::Text(after));
            format!("({col} {cmp} {p1} OR ({col} = {p2} AND id {cmp} {p3}))")
        };
        sql.clauses.push(clause);
    }
    let where_sql = if sql.clauses.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", sql.clauses.join(" AND "))
    };
    let order_sql = if order.column == "id" {
        format!("id {dir}")
    } else {
        format!("{} {dir}, id {dir}", order.column)
    };
    let text = format!(
        "SELECT {} FROM {}{where_sql} ORDER BY {order_sql} LIMIT {first} OFFSET {skip}",
        def.select_list(),
        def.table
    );
    let mut q = sqlx::query(AssertSqlSafe(text));
    for b in sql.binds {
        q = match b {
            Bind::Int(i) => q.bind(i),
            Bind::Text(s) => q.bind(s),
        };
    }
    let rows = q.fetch_all(&state.db.pool).await.map_err(internal)?;
    rows.iter()
        .map(|r| row_value(def, r))
        .collect::<Result<_, _>>()
        .map_err(internal)
}

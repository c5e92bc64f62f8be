//! Database access of the registry, over SQLite or PostgreSQL.
//!
//! The registry's domain code runs one set of SQL statements on either
//! backend through [`Db`]: parameters are [`Value`]s written `?1`, `?2`, …
//! (rewritten to `$1`, `$2`, … for PostgreSQL) and rows come back as
//! [`DbRow`]s. The statements keep to the SQL both engines share (`RETURNING`,
//! `ON CONFLICT DO NOTHING`); the schemas differ only in their DDL
//! ([`super::schema`]).

use rusqlite::types::{ToSqlOutput, ValueRef};
use thiserror::Error;

/// A parameter or column value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Real(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_owned())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}

impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Text(v.clone())
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// `[Value::from(a), Value::from(b), …]`.
macro_rules! values {
    ($($v:expr),* $(,)?) => { [$($crate::registry::db::Value::from($v)),*] };
}
pub(crate) use values;

/// Which engine holds the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// An error of the database engine, or a column that does not hold what the
/// registry stored in it.
#[derive(Debug, Error)]
pub enum DbError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[cfg(feature = "postgres")]
    #[error("{}", postgres_message(.0))]
    Postgres(#[from] postgres::Error),
    #[error("column {index} holds {found}, expected {expected}")]
    Column {
        index: usize,
        expected: &'static str,
        found: &'static str,
    },
    #[error("the query returned no row")]
    NoRow,
}

/// The server's message with its detail, or the client's error chain.
#[cfg(feature = "postgres")]
fn postgres_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            text
        }
    }
}

impl DbError {
    /// Whether another writer holds a lock the statement needed (retry later).
    pub fn is_busy(&self) -> bool {
        match self {
            DbError::Sqlite(e) => matches!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            ),
            #[cfg(feature = "postgres")]
            DbError::Postgres(e) => e.code().is_some_and(|c| {
                *c == postgres::error::SqlState::LOCK_NOT_AVAILABLE
                    || *c == postgres::error::SqlState::T_R_SERIALIZATION_FAILURE
                    || *c == postgres::error::SqlState::T_R_DEADLOCK_DETECTED
            }),
            _ => false,
        }
    }

    /// Whether the database server cannot be reached (connection refused,
    /// closed or shutting down): the registry is unavailable, not broken.
    pub fn is_unreachable(&self) -> bool {
        match self {
            #[cfg(feature = "postgres")]
            DbError::Postgres(e) => {
                let source = std::error::Error::source(e);
                e.is_closed()
                    // Refused or reset connections carry the I/O error; a
                    // connect timeout carries nothing.
                    || source.is_some_and(|s| s.is::<std::io::Error>())
                    || source.is_none() && e.as_db_error().is_none()
                    || e.code().is_some_and(|c| {
                        *c == postgres::error::SqlState::ADMIN_SHUTDOWN
                            || *c == postgres::error::SqlState::CRASH_SHUTDOWN
                            || *c == postgres::error::SqlState::CANNOT_CONNECT_NOW
                    })
            }
            _ => false,
        }
    }
}

/// One result row.
#[derive(Debug, Clone)]
pub(crate) struct DbRow(Vec<Value>);

impl DbRow {
    /// Column `index` converted to `T`.
    pub(crate) fn get<T: FromValue>(&self, index: usize) -> Result<T, DbError> {
        let value = self.0.get(index).unwrap_or(&Value::Null);
        T::from_value(value).ok_or(DbError::Column {
            index,
            expected: T::EXPECTED,
            found: match value {
                Value::Null => "NULL",
                Value::Int(_) => "an integer",
                Value::Real(_) => "a real",
                Value::Text(_) => "text",
            },
        })
    }
}

/// A Rust type a column converts to.
pub(crate) trait FromValue: Sized {
    const EXPECTED: &'static str;
    fn from_value(v: &Value) -> Option<Self>;
}

impl FromValue for i64 {
    const EXPECTED: &'static str = "an integer";
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
}

impl FromValue for f64 {
    const EXPECTED: &'static str = "a number";
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Real(r) => Some(*r),
            // An integer where a number is expected (an expression without
            // column affinity in SQLite): exact up to 2^53.
            #[allow(clippy::cast_precision_loss)]
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }
}

impl FromValue for String {
    const EXPECTED: &'static str = "text";
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Text(s) => Some(s.clone()),
            _ => None,
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    const EXPECTED: &'static str = T::EXPECTED;
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Null => Some(None),
            other => T::from_value(other).map(Some),
        }
    }
}

/// Statements on a connection or inside a transaction.
pub(crate) trait Db {
    /// Runs a statement; the number of rows it changed.
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, DbError>;
    /// Runs a query; all its rows.
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<DbRow>, DbError>;

    /// The first row of a query, if any.
    fn query_opt(&mut self, sql: &str, params: &[Value]) -> Result<Option<DbRow>, DbError> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    /// The first row of a query that must return one.
    fn query_one(&mut self, sql: &str, params: &[Value]) -> Result<DbRow, DbError> {
        self.query_opt(sql, params)?.ok_or(DbError::NoRow)
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Value::Real(r) => ToSqlOutput::Borrowed(ValueRef::Real(*r)),
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        })
    }
}

/// SQLite: a connection or a transaction (which derefs to one).
pub(crate) struct SqliteDb<'c>(pub(crate) &'c rusqlite::Connection);

impl Db for SqliteDb<'_> {
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, DbError> {
        let mut stmt = self.0.prepare_cached(sql)?;
        let n = stmt.execute(rusqlite::params_from_iter(params))?;
        Ok(u64::try_from(n).unwrap_or(u64::MAX))
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<DbRow>, DbError> {
        let mut stmt = self.0.prepare_cached(sql)?;
        let columns = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let mut values = Vec::with_capacity(columns);
            for index in 0..columns {
                values.push(match row.get_ref(index)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(i) => Value::Int(i),
                    ValueRef::Real(r) => Value::Real(r),
                    ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(_) => {
                        return Err(DbError::Column {
                            index,
                            expected: "text or a number",
                            found: "a blob",
                        });
                    }
                });
            }
            out.push(DbRow(values));
        }
        Ok(out)
    }
}

#[cfg(feature = "postgres")]
pub(crate) use pg::PgDb;

#[cfg(feature = "postgres")]
mod pg {
    use std::error::Error as StdError;

    use bytes::BytesMut;
    use postgres::GenericClient;
    use postgres::types::{IsNull, ToSql, Type, to_sql_checked};

    use super::{Db, DbError, DbRow, Value};

    impl ToSql for Value {
        fn to_sql(
            &self,
            ty: &Type,
            out: &mut BytesMut,
        ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
            match self {
                Value::Null => Ok(IsNull::Yes),
                Value::Int(i) if *ty == Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Value::Int(i) if *ty == Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Value::Int(i) if *ty == Type::INT8 => i.to_sql(ty, out),
                Value::Real(r) if *ty == Type::FLOAT8 => r.to_sql(ty, out),
                Value::Text(s)
                    if *ty == Type::TEXT || *ty == Type::VARCHAR || *ty == Type::BPCHAR =>
                {
                    s.as_str().to_sql(ty, out)
                }
                other => Err(format!("cannot store {other:?} in a column of type {ty}").into()),
            }
        }

        fn accepts(_: &Type) -> bool {
            true
        }

        to_sql_checked!();
    }

    /// `?N` placeholders as PostgreSQL's `$N` (the registry's statements
    /// hold no `?` in literals).
    fn dollar_placeholders(sql: &str) -> String {
        let mut out = String::with_capacity(sql.len());
        let mut chars = sql.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
                out.push('$');
            } else {
                out.push(c);
            }
        }
        out
    }

    fn column(row: &postgres::Row, index: usize) -> Result<Value, DbError> {
        let ty = row.columns()[index].type_().clone();
        let value = if ty == Type::INT8 {
            row.try_get::<_, Option<i64>>(index)?.map(Value::Int)
        } else if ty == Type::INT4 {
            row.try_get::<_, Option<i32>>(index)?
                .map(|i| Value::Int(i.into()))
        } else if ty == Type::INT2 {
            row.try_get::<_, Option<i16>>(index)?
                .map(|i| Value::Int(i.into()))
        } else if ty == Type::FLOAT8 {
            row.try_get::<_, Option<f64>>(index)?.map(Value::Real)
        } else if ty == Type::BOOL {
            row.try_get::<_, Option<bool>>(index)?
                .map(|b| Value::Int(b.into()))
        } else if ty == Type::TEXT || ty == Type::VARCHAR || ty == Type::BPCHAR {
            row.try_get::<_, Option<String>>(index)?.map(Value::Text)
        } else {
            return Err(DbError::Column {
                index,
                expected: "text or a number",
                found: "another PostgreSQL type",
            });
        };
        Ok(value.unwrap_or(Value::Null))
    }

    /// PostgreSQL: a client or a transaction.
    pub(crate) struct PgDb<'c, C: GenericClient>(pub(crate) &'c mut C);

    impl<C: GenericClient> Db for PgDb<'_, C> {
        fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, DbError> {
            let refs: Vec<&(dyn ToSql + Sync)> =
                params.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
            Ok(self.0.execute(dollar_placeholders(sql).as_str(), &refs)?)
        }

        fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<DbRow>, DbError> {
            let refs: Vec<&(dyn ToSql + Sync)> =
                params.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
            let rows = self.0.query(dollar_placeholders(sql).as_str(), &refs)?;
            rows.iter()
                .map(|row| {
                    (0..row.len())
                        .map(|i| column(row, i))
                        .collect::<Result<Vec<_>, _>>()
                        .map(DbRow)
                })
                .collect()
        }
    }

    #[cfg(test)]
    mod tests {
        use super::dollar_placeholders;

        #[test]
        fn placeholders_are_renumbered_in_dollar_form() {
            assert_eq!(
                dollar_placeholders("SELECT a FROM t WHERE b = ?1 AND c = ?12 OR d = ?"),
                "SELECT a FROM t WHERE b = $1 AND c = $12 OR d = ?"
            );
        }
    }
}

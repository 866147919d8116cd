//! The SQL values and statements the key store's rows are written as, the
//! same for SQLite (host-runner) and the Durable Object's storage.

use crate::wire::usage::TokenUsage;

/// One SQL value, as both hosts' drivers know it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SqlValue {
    /// `NULL`.
    Null,
    /// An integer.
    Integer(i64),
    /// Text.
    Text(String),
}

/// A row that does not map onto a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a stored {table} row is malformed: {why}")]
pub struct RowError {
    table: &'static str,
    why: String,
}

/// For a host whose storage errors are text (the Durable Object's).
impl From<RowError> for String {
    fn from(e: RowError) -> Self {
        e.to_string()
    }
}

pub(crate) fn int(v: u64) -> SqlValue {
    SqlValue::Integer(i64::try_from(v).unwrap_or(i64::MAX))
}

/// A token usage's four columns: prompt, output, cached, thinking.
pub(crate) fn token_values(t: &TokenUsage) -> [SqlValue; 4] {
    [int(t.prompt), int(t.output), int(t.cached), int(t.thinking)]
}

pub(crate) fn opt_int(v: Option<u64>) -> SqlValue {
    v.map_or(SqlValue::Null, int)
}

pub(crate) fn opt_text(v: Option<&str>) -> SqlValue {
    v.map_or(SqlValue::Null, |s| SqlValue::Text(s.to_owned()))
}

/// Reads the columns of one row in order.
pub(crate) struct Columns<'a> {
    pub(crate) table: &'static str,
    pub(crate) row: std::slice::Iter<'a, SqlValue>,
}

impl<'a> Columns<'a> {
    pub(crate) fn new(table: &'static str, row: &'a [SqlValue]) -> Self {
        Self { table, row: row.iter() }
    }

    pub(crate) fn err(&self, why: impl Into<String>) -> RowError {
        RowError { table: self.table, why: why.into() }
    }

    fn next(&mut self) -> Result<&'a SqlValue, RowError> {
        let table = self.table;
        self.row.next().ok_or(RowError { table, why: "too few columns".into() })
    }

    pub(crate) fn text(&mut self) -> Result<String, RowError> {
        match self.next()? {
            SqlValue::Text(s) => Ok(s.clone()),
            other => Err(self.err(format!("expected text, found {other:?}"))),
        }
    }

    pub(crate) fn opt_text(&mut self) -> Result<Option<String>, RowError> {
        match self.next()? {
            SqlValue::Null => Ok(None),
            SqlValue::Text(s) => Ok(Some(s.clone())),
            other => Err(self.err(format!("expected text, found {other:?}"))),
        }
    }

    pub(crate) fn opt_int(&mut self) -> Result<Option<u64>, RowError> {
        match self.next()? {
            SqlValue::Null => Ok(None),
            SqlValue::Integer(i) => Ok(Some(u64::try_from(*i).unwrap_or(0))),
            other => Err(self.err(format!("expected an integer, found {other:?}"))),
        }
    }

    /// The four columns of a token usage ([`token_values`]).
    pub(crate) fn tokens(&mut self) -> Result<TokenUsage, RowError> {
        Ok(TokenUsage { prompt: self.int()?, output: self.int()?, cached: self.int()?, thinking: self.int()? })
    }

    pub(crate) fn int(&mut self) -> Result<u64, RowError> {
        self.opt_int()?.ok_or_else(|| self.err("expected an integer, found NULL"))
    }
}

/// One statement with its bound values.
pub type Statement = (&'static str, Vec<SqlValue>);

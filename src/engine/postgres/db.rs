//! One PostgreSQL client with its prepared statements: every query of the engine goes through
//! [`Db`], which prepares each SQL text once per connection and reads columns without panicking
//! (a column of an unexpected type is an error naming it, never a crash).

use std::collections::HashMap;

use postgres::types::{FromSql, ToSql};
use postgres::{Client, Row, Statement};

use crate::error::{Error, Result};

pub(crate) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

pub(crate) struct Db {
    pub(crate) client: Client,
    statements: HashMap<String, Statement>,
}

impl Db {
    pub(crate) fn new(client: Client) -> Db {
        Db {
            client,
            statements: HashMap::new(),
        }
    }

    fn prepared(&mut self, sql: &str) -> Result<Statement> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql)?;
        self.statements.insert(sql.to_owned(), s.clone());
        Ok(s)
    }

    /// Run a statement without parameters or results (transaction control, `SET`).
    pub(crate) fn run(&mut self, sql: &str) -> Result<()> {
        self.client.batch_execute(sql)?;
        Ok(())
    }

    pub(crate) fn exec(&mut self, sql: &str, p: Params<'_>) -> Result<u64> {
        let s = self.prepared(sql)?;
        Ok(self.client.execute(&s, p)?)
    }

    pub(crate) fn rows(&mut self, sql: &str, p: Params<'_>) -> Result<Vec<Row>> {
        let s = self.prepared(sql)?;
        Ok(self.client.query(&s, p)?)
    }

    pub(crate) fn opt(&mut self, sql: &str, p: Params<'_>) -> Result<Option<Row>> {
        let s = self.prepared(sql)?;
        Ok(self.client.query_opt(&s, p)?)
    }

    /// The first column of the one row `sql` returns (an aggregate).
    pub(crate) fn value<T: for<'r> FromSql<'r>>(&mut self, sql: &str, p: Params<'_>) -> Result<T> {
        let s = self.prepared(sql)?;
        get(&self.client.query_one(&s, p)?, 0)
    }

    pub(crate) fn exists(&mut self, sql: &str, p: Params<'_>) -> Result<bool> {
        Ok(self.opt(sql, p)?.is_some())
    }
}

/// Column `i` of `row`, or an error naming the column and the type found.
pub(crate) fn get<T: for<'r> FromSql<'r>>(row: &Row, i: usize) -> Result<T> {
    row.try_get(i).map_err(|e| Error::Postgres {
        code: None,
        message: format!(
            "column {} has an unexpected type: {e}",
            row.columns().get(i).map_or("?", |c| c.name())
        ),
        source: None,
    })
}

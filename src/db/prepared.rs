//! [`Fixed`]: a statement of fixed text that diesel would otherwise
//! prepare anew on every execution.
//!
//! diesel 2.3 caches a prepared statement only when every part of the query
//! says it may. Some never do, whatever their text: every `UPDATE`
//! (`UpdateStatement::walk_ast` calls `unsafe_to_cache_prepared`, since a
//! changeset with `Option` fields may skip columns), every `INSERT` on
//! PostgreSQL (a value may render as `DEFAULT`), every `sql_query`. Each
//! execution of such a statement is parsed and planned again: on SQLite
//! ~35–60 k instructions (callgrind, `bench/callgrind.sh`), on PostgreSQL a
//! parse and a plan in the server instead of a bind. (Wrapping the DSL
//! query does not help: diesel asks the query by reference, through a
//! blanket impl that walks the inner query's AST again.)
//!
//! A [`Fixed`] is its SQL text, each `{}` standing for the next bind. It
//! never marks itself unsafe to cache, and has no static id, so diesel
//! caches it by its text and bind types (`StatementCacheKey::Sql`): a text
//! that varied would only be another entry, never a wrong statement. But
//! diesel's cache has no bound, so the text is a `&'static str`: one entry
//! per call site and connection, however many times it runs.

use diesel::backend::Backend;
use diesel::expression::{AsExpression, TypedExpressionType};
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::SqlType;
use diesel::{QueryResult, RunQueryDsl};

/// A statement of fixed text and its binds (see the module doc).
pub struct Fixed<'f, DB: Backend> {
    sql: &'static str,
    binds: Vec<Box<dyn QueryFragment<DB> + Send + 'f>>,
}

impl<'f, DB: Backend> Fixed<'f, DB> {
    /// The statement `sql`, whose every `{}` is a bind, in order.
    pub fn new(sql: &'static str) -> Self {
        Self {
            sql,
            binds: Vec::new(),
        }
    }

    /// Binds `value` as `ST` to the next `{}`.
    pub fn bind<ST, V>(mut self, value: V) -> Self
    where
        ST: SqlType + TypedExpressionType,
        V: AsExpression<ST>,
        V::Expression: QueryFragment<DB> + Send + 'f,
    {
        self.binds.push(Box::new(value.as_expression()));
        self
    }
}

// No static id: cached by the text it renders (and the bind types).
impl<DB: Backend> QueryId for Fixed<'_, DB> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<DB: Backend> Query for Fixed<'_, DB> {
    type SqlType = diesel::sql_types::Untyped;
}

impl<DB: Backend> QueryFragment<DB> for Fixed<'_, DB> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        let mut pieces = self.sql.split("{}");
        out.push_sql(pieces.next().unwrap_or_default());
        let mut binds = self.binds.iter();
        for piece in pieces {
            let bind = binds.next().ok_or_else(|| mismatch(self.sql))?;
            bind.walk_ast(out.reborrow())?;
            out.push_sql(piece);
        }
        match binds.next() {
            Some(_) => Err(mismatch(self.sql)),
            None => Ok(()),
        }
    }
}

fn mismatch(sql: &str) -> diesel::result::Error {
    diesel::result::Error::QueryBuilderError(
        format!("the binds do not match the {{}} of: {sql}").into(),
    )
}

impl<DB: Backend, Conn> RunQueryDsl<Conn> for Fixed<'_, DB> {}

#[cfg(test)]
mod tests {
    use diesel::connection::SimpleConnection;
    use diesel::prelude::*;
    use diesel::sql_types::{BigInt, Text};

    use super::Fixed;

    diesel::table! {
        counters (id) {
            id -> BigInt,
            n -> BigInt,
        }
    }

    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }

    const BUMP: &str = "UPDATE counters SET n = n + {} WHERE id = {}";

    macro_rules! values {
        ($conn:expr) => {{
            let rows: Vec<(i64, i64)> = counters::table.order(counters::id).load($conn).unwrap();
            rows.into_iter().map(|(_, n)| n).collect::<Vec<_>>()
        }};
    }

    /// On PostgreSQL, where a cached statement is a named prepared one that
    /// the session lists: a DSL `UPDATE` is never kept, a [`Fixed`] one is
    /// prepared once and reused with new binds, and does its work.
    #[test]
    fn a_fixed_update_is_prepared_once_and_reused_on_postgresql() {
        // The PostgreSQL run of the suite (README) names its database here.
        let url = std::env::var("RELAIS_TEST_DATABASE_URL").unwrap_or_default();
        if !url.starts_with("postgres") {
            eprintln!("skipped: RELAIS_TEST_DATABASE_URL names no PostgreSQL database");
            return;
        }
        let mut pg = PgConnection::establish(&url).expect("connect");
        pg.batch_execute(
            "CREATE TEMPORARY TABLE counters (id BIGINT PRIMARY KEY, n BIGINT NOT NULL); \
             INSERT INTO counters VALUES (1, 0), (2, 0)",
        )
        .unwrap();
        let updates = |pg: &mut PgConnection| {
            diesel::sql_query(
                "SELECT COUNT(*) AS n FROM pg_prepared_statements WHERE statement LIKE 'UPDATE%'",
            )
            .get_result::<Count>(pg)
            .unwrap()
            .n
        };
        for _ in 0..3 {
            diesel::update(counters::table.find(1))
                .set(counters::n.eq(counters::n + 1))
                .execute(&mut pg)
                .unwrap();
        }
        assert_eq!(updates(&mut pg), 0, "diesel keeps no DSL UPDATE");
        for (by, id) in [(1, 1), (10, 2), (100, 1)] {
            let changed = Fixed::new(BUMP)
                .bind::<BigInt, _>(by)
                .bind::<BigInt, _>(id)
                .execute(&mut pg)
                .unwrap();
            assert_eq!(changed, 1);
        }
        assert_eq!(updates(&mut pg), 1, "one statement, reused");
        assert_eq!(values!(&mut pg), vec![104, 10]);
    }

    /// On SQLite the same statement runs (SQLite lists no prepared
    /// statements; `bench/callgrind.sh` shows the prepare going), and binds
    /// that do not match the text are an error, never a statement.
    #[test]
    fn a_fixed_statement_runs_on_sqlite_and_refuses_mismatched_binds() {
        let mut lite = SqliteConnection::establish(":memory:").unwrap();
        lite.batch_execute(
            "CREATE TABLE counters (id BIGINT PRIMARY KEY, n BIGINT NOT NULL); \
             INSERT INTO counters VALUES (1, 0), (2, 0)",
        )
        .unwrap();
        for (by, id) in [(1, 1), (10, 2), (100, 1)] {
            Fixed::new(BUMP)
                .bind::<BigInt, _>(by)
                .bind::<BigInt, _>(id)
                .execute(&mut lite)
                .unwrap();
        }
        assert_eq!(values!(&mut lite), vec![101, 10]);
        let short = Fixed::new(BUMP).bind::<BigInt, _>(1).execute(&mut lite);
        assert!(short.is_err());
        let long = Fixed::new("UPDATE counters SET n = 0 WHERE id = {}")
            .bind::<BigInt, _>(1)
            .bind::<Text, _>("x")
            .execute(&mut lite);
        assert!(long.is_err());
        assert_eq!(values!(&mut lite), vec![101, 10], "nothing ran");
    }
}

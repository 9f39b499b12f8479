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
//!
//! A bind may also be named: `{p}` stands for the bind given as
//! [`Fixed::bind_as`]`("p", …)`, as often as the text repeats it, so a
//! statement that uses the patient's id five times binds it once.
//!
//! On the hottest reads even the lookup by text costs: diesel renders the
//! whole text and hashes it before every execution. [`Fixed::keyed`] gives
//! the statement a key type of its own ([`statement_key!`]) instead: diesel
//! finds it by that type without rendering anything. A key stands for one
//! text per backend, since a connection is one backend and caches its own
//! statements: the text may differ between backends (a table function over
//! a JSON array), never between two executions on one connection.

use std::marker::PhantomData;

use diesel::backend::Backend;
use diesel::expression::{AsExpression, TypedExpressionType};
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::SqlType;
use diesel::{QueryResult, RunQueryDsl};

/// How diesel finds a [`Fixed`] statement in its cache: [`ByText`], or a
/// key type declared with [`statement_key!`].
pub trait CacheKey: 'static {
    /// Whether the type itself is the key (else the rendered text is).
    const IS_TYPE: bool;
}

/// The statement is found by its rendered text (and bind types).
pub struct ByText;

impl CacheKey for ByText {
    const IS_TYPE: bool = false;
}

/// Declares a key type for one [`Fixed`] statement (see the module doc:
/// one text per backend, whoever runs it).
#[macro_export]
macro_rules! statement_key {
    ($(#[$meta:meta])* $vis:vis $name:ident) => {
        $(#[$meta])*
        $vis struct $name;
        impl $crate::db::CacheKey for $name {
            const IS_TYPE: bool = true;
        }
    };
}

type Bind<'f, DB> = Box<dyn QueryFragment<DB> + Send + 'f>;

/// A statement of fixed text and its binds (see the module doc).
pub struct Fixed<'f, DB: Backend, K: CacheKey = ByText> {
    sql: &'static str,
    /// In order, each with its name (`None`: the next `{}`).
    binds: Vec<(Option<&'static str>, Bind<'f, DB>)>,
    key: PhantomData<K>,
}

impl<'f, DB: Backend> Fixed<'f, DB> {
    /// The statement `sql`, whose every `{}` is the next positional bind
    /// and every `{name}` the bind of that name.
    pub fn new(sql: &'static str) -> Self {
        Self {
            sql,
            binds: Vec::new(),
            key: PhantomData,
        }
    }

    /// The same statement, found in diesel's cache by `K` (see the module
    /// doc: `K` must stand for this text on this backend, and for no other).
    pub fn keyed<K: CacheKey>(self) -> Fixed<'f, DB, K> {
        Fixed {
            sql: self.sql,
            binds: self.binds,
            key: PhantomData,
        }
    }
}

impl<'f, DB: Backend, K: CacheKey> Fixed<'f, DB, K> {
    /// Binds `value` as `ST` to the next `{}`.
    pub fn bind<ST, V>(mut self, value: V) -> Self
    where
        ST: SqlType + TypedExpressionType,
        V: AsExpression<ST>,
        V::Expression: QueryFragment<DB> + Send + 'f,
    {
        self.binds.push((None, Box::new(value.as_expression())));
        self
    }

    /// Binds `value` as `ST` to every `{name}` of the text.
    pub fn bind_as<ST, V>(mut self, name: &'static str, value: V) -> Self
    where
        ST: SqlType + TypedExpressionType,
        V: AsExpression<ST>,
        V::Expression: QueryFragment<DB> + Send + 'f,
    {
        self.binds
            .push((Some(name), Box::new(value.as_expression())));
        self
    }

    fn named(&self, name: &str) -> Option<&Bind<'f, DB>> {
        self.binds
            .iter()
            .find(|(n, _)| *n == Some(name))
            .map(|(_, bind)| bind)
    }
}

impl<DB: Backend, K: CacheKey> QueryId for Fixed<'_, DB, K> {
    type QueryId = K;
    const HAS_STATIC_QUERY_ID: bool = K::IS_TYPE;
}

impl<DB: Backend, K: CacheKey> Query for Fixed<'_, DB, K> {
    type SqlType = diesel::sql_types::Untyped;
}

impl<DB: Backend, K: CacheKey> QueryFragment<DB> for Fixed<'_, DB, K> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        let mut positional = self.binds.iter().filter(|(name, _)| name.is_none());
        let mut rest = self.sql;
        while let Some(open) = rest.find('{') {
            out.push_sql(&rest[..open]);
            let close = rest[open..]
                .find('}')
                .map(|at| open + at)
                .ok_or_else(|| mismatch(self.sql))?;
            let bind = match &rest[open + 1..close] {
                "" => positional.next().map(|(_, bind)| bind),
                name => self.named(name),
            };
            bind.ok_or_else(|| mismatch(self.sql))?
                .walk_ast(out.reborrow())?;
            rest = &rest[close + 1..];
        }
        out.push_sql(rest);
        match positional.next() {
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

impl<DB: Backend, K: CacheKey, Conn> RunQueryDsl<Conn> for Fixed<'_, DB, K> {}

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

    crate::statement_key!(SumKey);

    /// A named bind stands wherever the text names it, beside positional
    /// ones; a name the statement was not given is an error; a keyed
    /// statement runs as its text says.
    #[test]
    fn named_binds_repeat_and_an_unknown_name_is_refused() {
        let mut lite = SqliteConnection::establish(":memory:").unwrap();
        let sum: Count = Fixed::new("SELECT {a} + {} + {a} AS n")
            .bind_as::<BigInt, _>("a", 2)
            .bind::<BigInt, _>(3)
            .get_result(&mut lite)
            .unwrap();
        assert_eq!(sum.n, 7);
        for (a, b) in [(1, 10), (100, 1000)] {
            let keyed: Count = Fixed::new("SELECT {a} + {b} AS n")
                .keyed::<SumKey>()
                .bind_as::<BigInt, _>("b", b)
                .bind_as::<BigInt, _>("a", a)
                .get_result(&mut lite)
                .unwrap();
            assert_eq!(
                keyed.n,
                a + b,
                "the binds of this execution, not the first's"
            );
        }
        let unknown = Fixed::new("SELECT {a} AS n")
            .bind_as::<BigInt, _>("b", 1)
            .get_result::<Count>(&mut lite);
        assert!(unknown.is_err());
    }

    /// On PostgreSQL a keyed statement is one prepared statement, reused
    /// with the binds of each execution.
    #[test]
    fn a_keyed_statement_is_prepared_once_on_postgresql() {
        let url = std::env::var("RELAIS_TEST_DATABASE_URL").unwrap_or_default();
        if !url.starts_with("postgres") {
            eprintln!("skipped: RELAIS_TEST_DATABASE_URL names no PostgreSQL database");
            return;
        }
        let mut pg = PgConnection::establish(&url).expect("connect");
        for (a, b) in [(1, 10), (100, 1000), (5, 5)] {
            let keyed: Count =
                Fixed::new("SELECT CAST({a} AS BIGINT) + CAST({b} AS BIGINT) + {a} AS n")
                    .keyed::<SumKey>()
                    .bind_as::<BigInt, _>("a", a)
                    .bind_as::<BigInt, _>("b", b)
                    .get_result(&mut pg)
                    .unwrap();
            assert_eq!(keyed.n, 2 * a + b);
        }
        let prepared: Count = diesel::sql_query(
            "SELECT COUNT(*) AS n FROM pg_prepared_statements WHERE statement LIKE 'SELECT CAST(%'",
        )
        .get_result(&mut pg)
        .unwrap();
        assert_eq!(prepared.n, 1, "one statement, reused");
    }
}

//! The stored operations, one module per resource: row types, queries, state
//! transitions with their writes, the notifications they raise. The HTTP
//! handlers (`api`), the scheduler and `relais demo` call the same functions.

pub mod access;
pub mod access_request;
pub mod account;
pub mod analgesic_page;
pub mod byte_bound;
pub mod care_plan;
pub mod care_team;
pub mod clinical;
pub mod consultation;
pub mod dispensation;
pub mod fhir;
pub mod handover;
pub mod idempotency;
pub mod intervention;
pub mod messaging;
pub mod notification;
pub mod observation;
pub mod organization;
pub mod patient;
pub mod reminder;
pub mod thread_page;
pub mod user;

/// One trivial statement: whether the database answers (the readiness probe).
pub fn ping(conn: &mut crate::db::DbConnection) -> diesel::QueryResult<()> {
    use diesel::connection::SimpleConnection;
    conn.batch_execute("SELECT 1")
}

diesel::define_sql_function! {
    /// SQL `lower()`, on both backends.
    fn lower(x: diesel::sql_types::Text) -> diesel::sql_types::Text;
}

/// A `LIKE … ESCAPE '\'` pattern matching any text that contains `q`,
/// lowercased, its wildcards escaped.
fn contains_pattern(q: &str) -> String {
    let escaped = q
        .to_lowercase()
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

//! Organisations as stored.

use diesel::prelude::*;

use crate::db::DbConnection;
use crate::db::models::Organization;
use crate::db::schema::organizations;
use crate::domain::role::OrgKind;

/// Stores a new organisation.
pub fn create(conn: &mut DbConnection, org: &Organization) -> QueryResult<()> {
    diesel::insert_into(organizations::table)
        .values(org)
        .execute(conn)?;
    Ok(())
}

/// Up to `rows` organisations by id after `after`, of one kind or any.
pub fn page(
    conn: &mut DbConnection,
    kind: Option<OrgKind>,
    after: Option<&str>,
    rows: i64,
) -> QueryResult<Vec<Organization>> {
    let mut query = organizations::table
        .select(Organization::as_select())
        .order(organizations::id)
        .limit(rows)
        .into_boxed();
    if let Some(kind) = kind {
        query = query.filter(organizations::kind.eq(kind.as_str()));
    }
    if let Some(after) = after {
        query = query.filter(organizations::id.gt(after));
    }
    query.load(conn)
}

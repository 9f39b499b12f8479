//! Organisations as stored.

use diesel::prelude::*;

use crate::db::DbConnection;
use crate::db::models::Organization;
use crate::db::schema::organizations;

/// Stores a new organisation.
pub fn create(conn: &mut DbConnection, org: &Organization) -> QueryResult<()> {
    diesel::insert_into(organizations::table)
        .values(org)
        .execute(conn)?;
    Ok(())
}

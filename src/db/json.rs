//! Typed JSON columns: a row holds the value, the column holds its JSON
//! text. A stored text that does not parse as the type is an error when the
//! row is read, never a default.

use std::fmt;
use std::sync::OnceLock;

use diesel::backend::Backend;
use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types::Text;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A value stored as JSON text.
///
/// The text is made once, when the value is first written, and kept: diesel
/// binds a borrowed `str`, so the serialised form must outlive the call.
/// A value read from the database never needs it.
#[derive(AsExpression, FromSqlRow)]
#[diesel(sql_type = Text)]
pub struct Json<T> {
    value: T,
    text: OnceLock<String>,
}

impl<T> Json<T> {
    pub fn new(value: T) -> Self {
        Self {
            value,
            text: OnceLock::new(),
        }
    }

    pub fn get(&self) -> &T {
        &self.value
    }

    pub fn into_inner(self) -> T {
        self.value
    }
}

impl<T> std::ops::Deref for Json<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: Clone> Clone for Json<T> {
    fn clone(&self) -> Self {
        Self::new(self.value.clone())
    }
}

impl<T: fmt::Debug> fmt::Debug for Json<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt(f)
    }
}

impl<T: PartialEq> PartialEq for Json<T> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl<T, DB> ToSql<Text, DB> for Json<T>
where
    T: Serialize + fmt::Debug,
    DB: Backend,
    str: ToSql<Text, DB>,
{
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, DB>) -> serialize::Result {
        let text = match self.text.get() {
            Some(text) => text,
            None => {
                let made = serde_json::to_string(&self.value)?;
                // Another thread may have set it meanwhile: same text.
                self.text.get_or_init(|| made)
            }
        };
        text.as_str().to_sql(out)
    }
}

impl<T, DB> FromSql<Text, DB> for Json<T>
where
    T: DeserializeOwned,
    DB: Backend,
    String: FromSql<Text, DB>,
{
    fn from_sql(bytes: DB::RawValue<'_>) -> deserialize::Result<Self> {
        let text = String::from_sql(bytes)?;
        let value = serde_json::from_str(&text).map_err(|err| {
            format!(
                "a stored {} does not parse: {err}",
                std::any::type_name::<T>()
            )
        })?;
        Ok(Self::new(value))
    }
}

#[cfg(test)]
mod tests {
    use diesel::connection::SimpleConnection;
    use diesel::prelude::*;

    use super::Json;

    diesel::table! {
        docs (id) {
            id -> Integer,
            body -> Text,
        }
    }

    #[derive(Queryable, Insertable, Debug, PartialEq)]
    #[diesel(table_name = docs)]
    struct Doc {
        id: i32,
        body: Json<Vec<u8>>,
    }

    #[test]
    fn values_round_trip_and_a_text_that_does_not_parse_is_an_error() {
        let mut conn = SqliteConnection::establish(":memory:").unwrap();
        conn.batch_execute("CREATE TABLE docs (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
            .unwrap();
        let doc = Doc {
            id: 1,
            body: Json::new(vec![1, 2, 3]),
        };
        diesel::insert_into(docs::table)
            .values(&doc)
            .execute(&mut conn)
            .unwrap();
        let raw: String = docs::table
            .select(docs::body)
            .first::<String>(&mut conn)
            .unwrap();
        assert_eq!(raw, "[1,2,3]");
        assert_eq!(docs::table.first::<Doc>(&mut conn).unwrap(), doc);

        conn.batch_execute("INSERT INTO docs VALUES (2, '{\"not\": \"a list\"}')")
            .unwrap();
        let err = docs::table.find(2).first::<Doc>(&mut conn).unwrap_err();
        let err = format!("{err:?}");
        assert!(err.contains("does not parse"), "{err}");
    }
}

//! Column names of outbox tables, and which of their columns are declared JSON.
//!
//! With `binlog_row_metadata=FULL` every TABLE_MAP carries its table's column names, which is
//! always right, even across ALTER TABLE. Without them the names come from
//! `information_schema.COLUMNS`, which reflects the table *now*, not when the row was written;
//! that fallback is logged as a warning once per table. A table map without names after one
//! with names (the setting was lowered while running) is an error: silently switching to the
//! fallback could map columns wrongly.

use std::collections::{HashMap, HashSet};

use mysql_async::binlog::events::{OptionalMetadataField, TableMapEvent};
use mysql_async::prelude::Queryable;
use tracing::warn;

use super::Endpoint;
use crate::error::SourceError;

/// Column names from the table map's optional metadata, if the server sent them.
pub fn names_from_table_map(tme: &TableMapEvent<'_>) -> Option<Vec<String>> {
    for field in tme.iter_optional_meta() {
        if let Ok(OptionalMetadataField::ColumnName(names)) = field {
            let names: Vec<String> = names
                .iter_names()
                .filter_map(Result::ok)
                .map(|n| n.name().into_owned())
                .collect();
            if names.len() as u64 == tme.columns_count() {
                return Some(names);
            }
        }
    }
    None
}

/// Column names for outbox table maps: from the table map, else from `information_schema`.
pub struct ColumnNames {
    endpoint: Endpoint,
    warned: HashSet<String>,
    /// Tables whose table maps carried names.
    named: HashSet<String>,
    /// Names fixed by [`ColumnNames::preset`] (replays of files without names).
    presets: std::collections::HashMap<String, Vec<String>>,
}

impl ColumnNames {
    pub fn new(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            warned: HashSet::new(),
            named: HashSet::new(),
            presets: Default::default(),
        }
    }

    /// Fixes the names of `schema.table` as if a table map had carried them (for replaying
    /// binlog files written without names).
    pub fn preset(&mut self, qualified: &str, names: Vec<String>) {
        self.presets.insert(qualified.to_owned(), names);
    }

    /// The column names of the table a table map describes.
    pub async fn for_table_map(
        &mut self,
        tme: &TableMapEvent<'_>,
    ) -> Result<Vec<String>, SourceError> {
        let qualified = format!("{}.{}", tme.database_name(), tme.table_name());
        if let Some(names) = self.presets.get(&qualified) {
            return Ok(names.clone());
        }
        if let Some(names) = names_from_table_map(tme) {
            self.named.insert(qualified);
            return Ok(names);
        }
        if self.named.contains(&qualified) {
            return Err(SourceError::ColumnNamesLost { table: qualified });
        }
        self.fetch(&tme.database_name(), &tme.table_name(), tme.columns_count())
            .await
    }

    async fn fetch(
        &mut self,
        schema: &str,
        table: &str,
        expected: u64,
    ) -> Result<Vec<String>, SourceError> {
        let qualified = format!("{schema}.{table}");
        if self.warned.insert(qualified.clone()) {
            warn!(
                table = %qualified,
                "server sent no column names (binlog_row_metadata is not FULL); using information_schema, which is wrong for rows written before an ALTER TABLE"
            );
        }
        let mut conn = self.endpoint.connect().await?;
        let names = table_columns(&self.endpoint, &mut conn, schema, table).await?;
        self.endpoint.close(conn).await;
        if names.len() as u64 != expected {
            return Err(SourceError::ColumnCountMismatch {
                table: qualified,
                schema_columns: names.len(),
                binlog_columns: expected,
            });
        }
        Ok(names)
    }
}

/// The columns of `schema.table` in table order.
pub async fn table_columns(
    endpoint: &Endpoint,
    conn: &mut mysql_async::Conn,
    schema: &str,
    table: &str,
) -> Result<Vec<String>, SourceError> {
    const QUERY: &str = "SELECT COLUMN_NAME FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION";
    endpoint
        .run(
            "SELECT FROM information_schema.COLUMNS",
            conn.exec(QUERY, (schema, table)),
        )
        .await
}

/// Which columns of an outbox table are declared JSON on MariaDB. There JSON is LONGTEXT with
/// a `CHECK (json_valid(col))` constraint, which a producer can bypass (`SET
/// check_constraint_checks = 0`), so the connector validates such payloads itself. (MySQL's
/// JSON is binary in the binlog and always valid once decoded.) Looked up once per table id:
/// an ALTER TABLE gives the table a new one.
pub struct JsonColumns {
    endpoint: Endpoint,
    by_table_id: HashMap<u64, HashSet<String>>,
}

impl JsonColumns {
    pub fn new(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            by_table_id: HashMap::new(),
        }
    }

    /// Whether `column` of the table a table map describes is declared JSON.
    pub async fn is_json(
        &mut self,
        tme: &TableMapEvent<'_>,
        column: &str,
    ) -> Result<bool, SourceError> {
        if !self.by_table_id.contains_key(&tme.table_id()) {
            let mut conn = self.endpoint.connect().await?;
            let columns = json_checked_columns(
                &self.endpoint,
                &mut conn,
                &tme.database_name(),
                &tme.table_name(),
            )
            .await;
            self.endpoint.close(conn).await;
            self.by_table_id.insert(tme.table_id(), columns?);
        }
        Ok(self.by_table_id[&tme.table_id()].contains(&column.to_ascii_lowercase()))
    }
}

/// Lower-cased names of the columns of `schema.table` with a `json_valid` CHECK constraint.
async fn json_checked_columns(
    endpoint: &Endpoint,
    conn: &mut mysql_async::Conn,
    schema: &str,
    table: &str,
) -> Result<HashSet<String>, SourceError> {
    const QUERY: &str = "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS \
         WHERE CONSTRAINT_SCHEMA = ? AND TABLE_NAME = ?";
    let clauses: Vec<String> = endpoint
        .run(
            "SELECT FROM information_schema.CHECK_CONSTRAINTS",
            conn.exec(QUERY, (schema, table)),
        )
        .await?;
    Ok(clauses
        .iter()
        .filter_map(|c| json_valid_column(c))
        .map(|c| c.to_ascii_lowercase())
        .collect())
}

/// The column a CHECK clause of the form `json_valid(`col`)` validates, if it is one.
pub fn json_valid_column(clause: &str) -> Option<&str> {
    let clause = clause.trim();
    let (function, rest) = clause.split_at_checked("json_valid(".len())?;
    if !function.eq_ignore_ascii_case("json_valid(") {
        return None;
    }
    let column = rest.strip_suffix(')')?.trim();
    let column = column
        .strip_prefix('`')
        .and_then(|c| c.strip_suffix('`'))
        .unwrap_or(column);
    (!column.is_empty() && !column.contains(['`', '(', ')', ' ', ','])).then_some(column)
}

#[cfg(test)]
mod tests {
    use super::json_valid_column;

    #[test]
    fn json_valid_check_clauses_name_their_column() {
        assert_eq!(json_valid_column("json_valid(`payload`)"), Some("payload"));
        assert_eq!(json_valid_column(" JSON_VALID(payload) "), Some("payload"));
        assert_eq!(json_valid_column("json_valid(`a`) and `b` > 0"), None);
        assert_eq!(json_valid_column("json_valid(concat(`a`,`b`))"), None);
        assert_eq!(json_valid_column("`n` > 0"), None);
        assert_eq!(json_valid_column("json_valid()"), None);
        assert_eq!(json_valid_column("json_v"), None);
    }
}

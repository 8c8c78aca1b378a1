//! SQLite storage: one in-memory database per sandbox instance.
//!
//! Every column is `TEXT NOT NULL DEFAULT ''` because every Table API value is a string.
//! Identifiers come only from the static [`schema`](crate::schema); values are always bound
//! parameters.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, params_from_iter};

use crate::schema::{TABLES, TableDef};

/// One record: field name → string value. Every field of the table is present.
pub(crate) type Row = BTreeMap<&'static str, String>;

/// The database of one sandbox.
pub(crate) struct Store {
    conn: Connection,
    /// Snapshots of whole tables for reads that scan them ([`Store::all_shared`]); every
    /// write and every transaction end drops them all. A list request reads the incident and
    /// user tables whole, and under load (the load bench runs this sandbox on the same cores
    /// as the host it measures) re-reading them from SQLite was most of its CPU.
    snapshots: RefCell<HashMap<&'static str, Arc<Vec<Row>>>>,
}

fn quoted(name: &str) -> String {
    // Names are static schema identifiers ([a-z_]+); quoting keeps `group` (a keyword) usable.
    format!("\"{name}\"")
}

fn column_list(table: &TableDef) -> String {
    table.fields.iter().map(|f| quoted(f.name)).collect::<Vec<_>>().join(", ")
}

fn row_from(table: &'static TableDef, r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    let mut row = Row::new();
    for (i, field) in table.fields.iter().enumerate() {
        row.insert(field.name, r.get::<_, String>(i)?);
    }
    Ok(row)
}

impl Store {
    /// An empty in-memory database with every table created.
    pub(crate) fn open() -> rusqlite::Result<Self> {
        let conn = Connection::open_in_memory()?;
        for table in TABLES {
            let cols = table
                .fields
                .iter()
                .map(|f| {
                    if f.name == "sys_id" {
                        format!("{} TEXT NOT NULL PRIMARY KEY", quoted(f.name))
                    } else {
                        format!("{} TEXT NOT NULL DEFAULT ''", quoted(f.name))
                    }
                })
                .collect::<Vec<_>>()
                .join(", ");
            conn.execute_batch(&format!("CREATE TABLE {} ({cols});", quoted(table.name)))?;
        }
        Ok(Self { conn, snapshots: RefCell::default() })
    }

    /// Every row of `table` in insertion order (ServiceNow's order when no ORDERBY is given
    /// is unspecified; insertion order keeps the sandbox deterministic).
    pub(crate) fn all(&self, table: &'static TableDef) -> rusqlite::Result<Vec<Row>> {
        let sql = format!("SELECT {} FROM {} ORDER BY rowid", column_list(table), quoted(table.name));
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map([], |r| row_from(table, r))?;
        rows.collect()
    }

    /// [`Store::all`], shared: the same snapshot until the next write.
    pub(crate) fn all_shared(&self, table: &'static TableDef) -> rusqlite::Result<Arc<Vec<Row>>> {
        if let Some(rows) = self.snapshots.borrow().get(table.name) {
            return Ok(Arc::clone(rows));
        }
        let rows = Arc::new(self.all(table)?);
        self.snapshots.borrow_mut().insert(table.name, Arc::clone(&rows));
        Ok(rows)
    }

    fn invalidate(&self) {
        self.snapshots.borrow_mut().clear();
    }

    /// The row with `sys_id`, if any.
    pub(crate) fn get(&self, table: &'static TableDef, sys_id: &str) -> rusqlite::Result<Option<Row>> {
        let sql = format!("SELECT {} FROM {} WHERE \"sys_id\" = ?1", column_list(table), quoted(table.name));
        let mut stmt = self.conn.prepare_cached(&sql)?;
        stmt.query_row([sys_id], |r| row_from(table, r)).optional()
    }

    /// Inserts a row; fields missing from `row` get `''`.
    pub(crate) fn insert(&self, table: &'static TableDef, row: &Row) -> rusqlite::Result<()> {
        let placeholders = (1..=table.fields.len()).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ");
        let sql =
            format!("INSERT INTO {} ({}) VALUES ({placeholders})", quoted(table.name), column_list(table));
        let values = table.fields.iter().map(|f| row.get(f.name).map_or("", String::as_str));
        self.invalidate();
        self.conn.prepare_cached(&sql)?.execute(params_from_iter(values))?;
        Ok(())
    }

    /// Sets the given fields of one row. Field names must come from `table`'s schema.
    pub(crate) fn update(
        &self,
        table: &'static TableDef,
        sys_id: &str,
        changes: &[(&'static str, String)],
    ) -> rusqlite::Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        if let Some((bad, _)) = changes.iter().find(|(name, _)| table.field(name).is_none()) {
            return Err(rusqlite::Error::InvalidColumnName((*bad).to_owned()));
        }
        let sets = changes
            .iter()
            .enumerate()
            .map(|(i, (name, _))| format!("{} = ?{}", quoted(name), i + 2))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!("UPDATE {} SET {sets} WHERE \"sys_id\" = ?1", quoted(table.name));
        let values = std::iter::once(sys_id).chain(changes.iter().map(|(_, v)| v.as_str()));
        self.invalidate();
        self.conn.execute(&sql, params_from_iter(values))?;
        Ok(())
    }

    /// Deletes one row; whether it existed.
    pub(crate) fn delete(&self, table: &'static TableDef, sys_id: &str) -> rusqlite::Result<bool> {
        let sql = format!("DELETE FROM {} WHERE \"sys_id\" = ?1", quoted(table.name));
        self.invalidate();
        Ok(self.conn.execute(&sql, [sys_id])? > 0)
    }

    /// Runs `f` in one transaction (a record update and its audit rows commit together).
    pub(crate) fn in_transaction<T>(
        &mut self,
        f: impl FnOnce(&Store) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let result = match f(self) {
            Ok(v) => self.conn.execute_batch("COMMIT").map(|()| v),
            Err(e) => {
                // The original error matters more than a failed rollback.
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        };
        // A snapshot taken inside the transaction may hold rows that were rolled back.
        self.invalidate();
        result
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::schema::INCIDENT;

    fn incident(sys_id: &str, state: &str) -> Row {
        Row::from([("sys_id", sys_id.to_owned()), ("state", state.to_owned())])
    }

    fn states(rows: &[Row]) -> Vec<(String, String)> {
        rows.iter().map(|r| (r["sys_id"].clone(), r["state"].clone())).collect()
    }

    #[test]
    fn a_snapshot_is_shared_until_a_write_and_never_outlives_a_rollback() {
        let mut store = Store::open().unwrap();
        store.insert(&INCIDENT, &incident("a", "1")).unwrap();
        let first = store.all_shared(&INCIDENT).unwrap();
        assert!(Arc::ptr_eq(&first, &store.all_shared(&INCIDENT).unwrap()), "read twice, one snapshot");

        // Every kind of write is seen by the next read.
        store.insert(&INCIDENT, &incident("b", "1")).unwrap();
        assert_eq!(states(&store.all_shared(&INCIDENT).unwrap()).len(), 2);
        store.update(&INCIDENT, "a", &[("state", "2".to_owned())]).unwrap();
        assert_eq!(states(&store.all_shared(&INCIDENT).unwrap())[0], ("a".into(), "2".into()));
        assert!(store.delete(&INCIDENT, "b").unwrap());
        assert_eq!(states(&store.all_shared(&INCIDENT).unwrap()), [("a".into(), "2".into())]);

        // A snapshot taken inside a transaction that rolls back is not served afterwards.
        let failed: rusqlite::Result<()> = store.in_transaction(|s| {
            s.update(&INCIDENT, "a", &[("state", "3".to_owned())])?;
            assert_eq!(states(&s.all_shared(&INCIDENT)?)[0].1, "3");
            Err(rusqlite::Error::QueryReturnedNoRows)
        });
        assert!(failed.is_err());
        assert_eq!(states(&store.all_shared(&INCIDENT).unwrap()), [("a".into(), "2".into())]);
        assert_eq!(states(&store.all_shared(&INCIDENT).unwrap()), states(&store.all(&INCIDENT).unwrap()));
    }
}

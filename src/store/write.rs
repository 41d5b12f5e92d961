//! How dingsync writes JeecgBoot's tables: new ids (`new_id`, time-ordered, 32 hex
//! characters as JeecgBoot's), the `create_by` it signs with, and the writer marker — every
//! write is one transaction marked as dingsync's (a marker row on SQLite, a session setting
//! elsewhere), so the change-log triggers do not echo it (`write_marked`, `begin_marked` /
//! `commit_marked`). On PostgreSQL a multi-row insert of one row template goes as arrays
//! (`unnest`).

use crate::config::Backend;

use super::tx::Tx;
use super::{Store, StoreResult};

/// The `create_by` dingsync writes.
pub(super) const CREATED_BY: &str = "dingsync";

/// A new JeecgBoot-style id: 32 hex characters, as JeecgBoot's UUID ids have, but ordered
/// by time: the milliseconds and a per-process sequence (16 characters), then 64 random bits
/// (16). Ids made later sort later, so a batch's rows go to the end of each id index
/// instead of to random pages across it (at 100,000 users, random ids dirtied a page of
/// every index per row); the random half keeps ids of two processes made in the same
/// millisecond apart.
pub fn new_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    /// The last id's time and sequence, as `ms << 20 | sequence`.
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = u64::try_from(super::now_ms()).unwrap_or(0) << 20;
    // The next (ms, sequence) after the last one, never behind the clock: a million ids a
    // millisecond, then the next millisecond's.
    let next = |last: u64| (last + 1).max(now);
    let stamp = LAST
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
            Some(next(last))
        })
        .map_or(now, next);
    format!("{stamp:016x}{:016x}", rand::random::<u64>())
}

/// `?, ?, ...` for an `IN` list of `n`. A statement with such a list is not kept prepared
/// (`.persistent(false)`): its text differs with the list's length, and on PostgreSQL a
/// generic plan made while a table was small would go on scanning it as a pull fills it.
pub(crate) fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

impl Store {
    /// Statements that mark a transaction as dingsync's (SQLite only; see `schema`).
    fn writer_marks(&self) -> Option<(&'static str, &'static str)> {
        (self.backend() == Backend::Sqlite).then_some((
            "INSERT INTO dingsync_writer (marker) VALUES (1)",
            "DELETE FROM dingsync_writer",
        ))
    }

    fn begin_statement_for_writes(&self) -> &'static str {
        if self.backend() == Backend::Sqlite {
            "BEGIN IMMEDIATE"
        } else {
            "BEGIN"
        }
    }

    /// Runs simple statements (each `(sql, text binds)`) in one marked transaction.
    pub(super) async fn write_marked(
        &self,
        statements: Vec<(String, Vec<Option<String>>)>,
    ) -> StoreResult<()> {
        if let super::Pools::Postgres(pool) = &self.pools {
            // dingsync's PostgreSQL sessions carry the writer marker themselves.
            let mut tx = pool.begin().await?;
            for (sql, binds) in statements {
                if let Some((sql, columns)) = super::unnest::unnest_insert(&sql, &binds) {
                    let sql = self.sql(&sql);
                    // Not kept prepared: a batch's text carries its own literals (a time).
                    let mut query = sqlx::query(&sql).persistent(false);
                    for column in columns {
                        query = query.bind(column);
                    }
                    query.execute(&mut *tx).await?;
                } else {
                    let sql = self.sql(&sql);
                    let mut query = sqlx::query(&sql).persistent(binds.len() <= 64);
                    for bind in binds {
                        query = query.bind(bind);
                    }
                    query.execute(&mut *tx).await?;
                }
            }
            tx.commit().await?;
            return Ok(());
        }
        let marks = self.writer_marks();
        let begin = self.begin_statement_for_writes();
        let statements: Vec<(String, Vec<Option<String>>)> = statements
            .into_iter()
            .map(|(sql, binds)| (self.sql(&sql).into_owned(), binds))
            .collect();
        crate::store::on_pool!(self, |pool| {
            let mut tx = pool.begin_with(begin).await?;
            if let Some((mark, _)) = marks {
                sqlx::query(mark).execute(&mut *tx).await?;
            }
            for (sql, binds) in &statements {
                // A batch's multi-row statements differ in their row count: kept prepared,
                // each would hold a large compiled program in the connection's cache.
                let mut query = sqlx::query(sql).persistent(binds.len() <= 64);
                for bind in binds {
                    query = query.bind(bind.clone());
                }
                query.execute(&mut *tx).await?;
            }
            if let Some((_, unmark)) = marks {
                sqlx::query(unmark).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Opens a transaction for writes marked as dingsync's (SQLite's marker row; elsewhere
    /// the session carries the marker).
    pub(super) async fn begin_marked(&self) -> StoreResult<Tx> {
        let mut tx = self.begin_tx(self.begin_statement_for_writes()).await?;
        if let Some((mark, _)) = self.writer_marks() {
            tx.execute(mark, &[]).await?;
        }
        Ok(tx)
    }

    /// Takes the marker away (SQLite) and commits a transaction of [`Store::begin_marked`].
    pub(super) async fn commit_marked(&self, mut tx: Tx) -> StoreResult<()> {
        if let Some((_, unmark)) = self.writer_marks() {
            tx.execute(unmark, &[]).await?;
        }
        tx.commit().await
    }
}

#[cfg(test)]
mod tests {
    use super::new_id;

    #[test]
    fn ids_are_32_hex_characters_that_sort_as_made() {
        let ids: Vec<String> = (0..20_000).map(|_| new_id()).collect();
        let hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
        assert!(ids.iter().all(|id| id.len() == 32 && id.bytes().all(hex)));
        // Many in one millisecond: the sequence orders them.
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "ids sort in the order made"
        );
        // The time half: within a second of the clock.
        let ms = u64::from_str_radix(&ids[0][..16], 16).unwrap_or(0) >> 20;
        let now = u64::try_from(crate::store::now_ms()).unwrap_or(0);
        assert!(now.abs_diff(ms) < 1_000, "{ms} vs {now}");
    }
}

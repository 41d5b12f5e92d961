//! The change log's read side: `dingsync_change` rows (written by the triggers) turned
//! into coalesced jobs with the cursor advanced in one transaction (`changes_to_jobs`), the
//! cursor waiting at a fresh gap in ids and passed gaps watched in `dingsync_change_gap`
//! (`GapRules`); purging read rows.

use crate::config::TenantId;

use super::tx::{Arg, Tx};
use super::{now_ms, Store, StoreResult};

/// A `dingsync_change` row written by a trigger.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Change {
    /// Monotonic id.
    pub id: i64,
    /// The JeecgBoot table.
    pub table_name: String,
    /// The entity key (user id for membership tables).
    pub row_key: String,
    /// I, U or D.
    pub op: String,
    /// The row's tenant, where the table has one.
    pub tenant_id: Option<i64>,
    /// Epoch ms.
    pub changed_at: i64,
}

/// What one `changes_to_jobs` call did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChangeBatch {
    /// Change rows turned into jobs.
    pub consumed: usize,
    /// Rows after a fresh gap were left for a later call.
    pub held_back: bool,
}

/// How the change-log reader treats gaps in change ids (a transaction not committed yet, or
/// rolled back).
#[derive(Clone, Copy, Debug)]
pub struct GapRules {
    /// The cursor waits this long at a fresh gap, so rows are read in order.
    pub hold_ms: i64,
    /// A gap passed is watched this long for rows committed into it late.
    pub keep_ms: i64,
}

/// How many of `rows` (after the cursor `start`, in id order) the cursor moves over: it stops
/// at the first gap younger than `hold_ms`.
fn cursor_run(start: i64, rows: &[Change], now: i64, hold_ms: i64) -> usize {
    let mut cursor = start;
    for (n, change) in rows.iter().enumerate() {
        if change.id != cursor + 1 && now - change.changed_at < hold_ms {
            return n;
        }
        cursor = change.id;
    }
    rows.len()
}

/// A passed gap in change ids: `(lo, hi, since)`, ids `lo..=hi`, recorded at `since` (ms).
type Gap = (i64, i64, i64);

/// The known gaps to rewrite: `known` gaps (lo, hi, since) to delete (expired, or partly
/// filled by `late` rows), and the ranges to insert (what is left of those).
fn rewritten_gaps(known: &[Gap], late: &[Change], now: i64, keep_ms: i64) -> (Vec<i64>, Vec<Gap>) {
    let (mut deleted, mut added) = (Vec::new(), Vec::new());
    for &(lo, hi, since) in known {
        let filled: Vec<i64> = late
            .iter()
            .map(|c| c.id)
            .filter(|id| (lo..=hi).contains(id))
            .collect();
        let expired = now - since > keep_ms;
        if !expired && filled.is_empty() {
            continue;
        }
        deleted.push(lo);
        if expired {
            continue;
        }
        let mut from = lo;
        for id in filled {
            if id > from {
                added.push((from, id - 1, since));
            }
            from = id + 1;
        }
        if from <= hi {
            added.push((from, hi, since));
        }
    }
    (deleted, added)
}

/// The new gaps the cursor passes over in `passed` (which follow the cursor `start`),
/// recorded `now`.
fn passed_gaps(start: i64, passed: &[Change], now: i64) -> Vec<Gap> {
    let mut added = Vec::new();
    let mut cursor = start;
    for change in passed {
        if change.id > cursor + 1 {
            added.push((cursor + 1, change.id - 1, now));
        }
        cursor = change.id;
    }
    added
}

/// What [`Store::changes_to_jobs`] reads first.
struct ChangeRead {
    /// The cursor.
    start: i64,
    /// The gaps watched.
    known: Vec<Gap>,
    /// Rows committed into them late.
    late: Vec<Change>,
    /// Rows after the cursor.
    rows: Vec<Change>,
}

/// What turns a change row into jobs: the tenants served, the rule, the dead jobs (which a
/// change of their entity supersedes) and the time.
struct ChangeJobs<'a> {
    /// The tenants served.
    tenants: &'a [TenantId],
    /// The jobs a change asks for.
    job_for: JobFor,
    /// `(id, tenant, kind, key)` of the dead jobs.
    dead: &'a [(i64, i64, String, String)],
    /// The time of the call (ms).
    now: i64,
}

/// The change-log cursor's name in `dingsync_meta`.
const CURSOR: &str = "change_cursor";

/// A job to enqueue for a change row.
pub type JobFor = fn(&Change, &[TenantId]) -> Vec<(TenantId, &'static str, String)>;

impl Store {
    /// Change rows after `after`, oldest first, at most `limit`.
    pub async fn changes_after(&self, after: i64, limit: i64) -> StoreResult<Vec<Change>> {
        let sql = self.sql(
            "SELECT id, table_name, row_key, op, tenant_id, changed_at FROM dingsync_change WHERE id > ? ORDER BY id LIMIT ?",
        );
        Ok(crate::store::on_pool!(self, |pool| sqlx::query_as::<
            _,
            Change,
        >(&sql)
        .bind(after)
        .bind(limit)
        .fetch_all(pool)
        .await?))
    }

    /// Deletes change rows older than `before` (epoch ms) that the cursor has passed.
    pub async fn purge_changes(&self, before: i64, cursor: i64) -> StoreResult<u64> {
        let sql = self.sql("DELETE FROM dingsync_change WHERE changed_at < ? AND id <= ?");
        Ok(crate::store::on_pool!(self, |pool| sqlx::query(&sql)
            .bind(before)
            .bind(cursor)
            .execute(pool)
            .await?
            .rows_affected()))
    }

    /// The change-log cursor: the id of the last change turned into jobs.
    pub async fn change_cursor(&self) -> StoreResult<i64> {
        Ok(self
            .meta(CURSOR)
            .await?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// The highest change id (0 when empty).
    pub async fn last_change_id(&self) -> StoreResult<i64> {
        let sql = "SELECT COALESCE(MAX(id), 0) FROM dingsync_change";
        Ok(crate::store::on_pool!(self, |pool| sqlx::query_scalar(sql)
            .fetch_one(pool)
            .await?))
    }

    /// Turns change rows after the cursor into coalesced jobs and advances the cursor, in one
    /// transaction (a crash loses no change and enqueues nothing twice). Ids are assigned at
    /// insert but committed in any order on MariaDB and PostgreSQL, so the cursor stops before
    /// a gap younger than `gaps.hold_ms` (a transaction that may still commit). An older gap
    /// is passed but remembered (`dingsync_change_gap`) for `gaps.keep_ms`: a row that a long
    /// transaction commits into it later is still read, behind the cursor. A gap nothing
    /// fills is a rolled-back insert.
    pub async fn changes_to_jobs(
        &self,
        limit: i64,
        tenants: &[TenantId],
        job_for: JobFor,
        gaps: GapRules,
    ) -> StoreResult<ChangeBatch> {
        super::again_on_conflict(|| self.changes_to_jobs_once(limit, tenants, job_for, gaps)).await
    }

    /// One attempt of `changes_to_jobs`.
    async fn changes_to_jobs_once(
        &self,
        limit: i64,
        tenants: &[TenantId],
        job_for: JobFor,
        gaps: GapRules,
    ) -> StoreResult<ChangeBatch> {
        let now = now_ms();
        let mut tx = self.begin_tx(self.begin_statement()).await?;
        let read = self.read_changes(&mut tx, limit).await?;
        let ahead = cursor_run(read.start, &read.rows, now, gaps.hold_ms);
        let passed = &read.rows[..ahead];
        let (rewritten, mut added) = rewritten_gaps(&read.known, &read.late, now, gaps.keep_ms);
        added.extend(passed_gaps(read.start, passed, now));
        // Dead jobs are few: read once, matched here.
        let dead: Vec<(i64, i64, String, String)> = if read.rows.is_empty() && read.late.is_empty()
        {
            Vec::new()
        } else {
            tx.fetch_all(self.dead_jobs_sql(), &[]).await?
        };
        let jobs = ChangeJobs {
            tenants,
            job_for,
            dead: &dead,
            now,
        };
        for change in read.late.iter().chain(passed) {
            self.enqueue_change(&mut tx, &jobs, change).await?;
        }
        self.rewrite_gaps(&mut tx, rewritten, added).await?;
        if let Some(last) = passed.last() {
            self.save_cursor(&mut tx, last.id).await?;
        }
        tx.commit().await?;
        Ok(ChangeBatch {
            consumed: read.late.len() + ahead,
            held_back: ahead < read.rows.len(),
        })
    }

    /// The cursor, the known gaps, the rows committed into them late (none without gaps) and
    /// up to `limit` rows after the cursor, in `tx`.
    async fn read_changes(&self, tx: &mut Tx, limit: i64) -> StoreResult<ChangeRead> {
        let cursor_sql = self.sql("SELECT value FROM dingsync_meta WHERE name = ?");
        let rows_sql = self.sql("SELECT id, table_name, row_key, op, tenant_id, changed_at FROM dingsync_change WHERE id > ? ORDER BY id LIMIT ?");
        let gaps_sql = "SELECT lo, hi, since FROM dingsync_change_gap ORDER BY lo";
        let late_sql = self.sql("SELECT c.id, c.table_name, c.row_key, c.op, c.tenant_id, c.changed_at FROM dingsync_change c JOIN dingsync_change_gap g ON c.id BETWEEN g.lo AND g.hi ORDER BY c.id LIMIT ?");
        let cursor: Option<String> = tx
            .fetch_optional_scalar(&cursor_sql, &[Arg::Text(CURSOR)])
            .await?;
        let start: i64 = cursor.and_then(|c| c.parse().ok()).unwrap_or(0);
        let known: Vec<Gap> = tx.fetch_all(gaps_sql, &[]).await?;
        let late: Vec<Change> = if known.is_empty() {
            Vec::new()
        } else {
            tx.fetch_all(&late_sql, &[Arg::Int(limit)]).await?
        };
        let rows: Vec<Change> = tx
            .fetch_all(&rows_sql, &[Arg::Int(start), Arg::Int(limit)])
            .await?;
        Ok(ChangeRead {
            start,
            known,
            late,
            rows,
        })
    }

    /// Enqueues the jobs `change` asks for in `tx`; a dead job of an entity is superseded
    /// (deleted) first, as the row changed.
    async fn enqueue_change(
        &self,
        tx: &mut Tx,
        jobs: &ChangeJobs<'_>,
        change: &Change,
    ) -> StoreResult<()> {
        let enqueue = self.enqueue_sql();
        let delete_job = self.delete_job_sql();
        let now = jobs.now;
        for (tenant, kind, key) in (jobs.job_for)(change, jobs.tenants) {
            for (id, ..) in jobs
                .dead
                .iter()
                .filter(|(_, t, k, e)| *t == tenant && k == kind && *e == key)
            {
                tx.execute(&delete_job, &[Arg::Int(*id)]).await?;
            }
            let pending = super::queue::pending_key(tenant, kind, &key);
            // created_at: the commit (the change's time), for the latency metric.
            let args = [
                Arg::Int(tenant),
                Arg::Text(kind),
                Arg::Text(&key),
                Arg::Text(&pending),
                Arg::Int(now),
                Arg::Int(change.changed_at.min(now)),
                Arg::Int(now),
            ];
            tx.execute(&enqueue, &args).await?;
        }
        Ok(())
    }

    /// Deletes the gaps starting at `rewritten`, then inserts `added`, in `tx`.
    async fn rewrite_gaps(
        &self,
        tx: &mut Tx,
        rewritten: Vec<i64>,
        added: Vec<Gap>,
    ) -> StoreResult<()> {
        let gap_delete = self.sql("DELETE FROM dingsync_change_gap WHERE lo = ?");
        let gap_insert =
            self.sql("INSERT INTO dingsync_change_gap (lo, hi, since) VALUES (?, ?, ?)");
        for lo in rewritten {
            tx.execute(&gap_delete, &[Arg::Int(lo)]).await?;
        }
        for (lo, hi, since) in added {
            let args = [Arg::Int(lo), Arg::Int(hi), Arg::Int(since)];
            tx.execute(&gap_insert, &args).await?;
        }
        Ok(())
    }

    /// Moves the change-log cursor to `last` in `tx`.
    async fn save_cursor(&self, tx: &mut Tx, last: i64) -> StoreResult<()> {
        let save = self.sql(match self.backend() {
            crate::config::Backend::MySql => "INSERT INTO dingsync_meta (name, value) VALUES (?, ?) ON DUPLICATE KEY UPDATE value = VALUES(value)",
            _ => "INSERT INTO dingsync_meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        });
        let last = last.to_string();
        tx.execute(&save, &[Arg::Text(CURSOR), Arg::Text(&last)])
            .await?;
        Ok(())
    }
}

/// PostgreSQL's notifications of committed changes: LISTEN on the triggers' channel
/// ([`super::schema::NOTIFY_CHANNEL`]), on a connection of its own.
pub struct ChangeNotifications(sqlx::postgres::PgListener);

impl ChangeNotifications {
    /// Waits for the next notification: `Ok(true)`; `Ok(false)` when the connection was lost
    /// (the next call reconnects and listens again; notifications sent meanwhile are gone).
    pub async fn next(&mut self) -> Result<bool, sqlx::Error> {
        Ok(self.0.try_recv().await?.is_some())
    }
}

impl Store {
    /// Listens for notifications of committed changes: `None` where the database sends none
    /// (SQLite, MariaDB/MySQL). The error is sqlx's, as the listener reports it.
    pub async fn listen_for_changes(&self) -> Option<Result<ChangeNotifications, sqlx::Error>> {
        let super::Pools::Postgres(pool) = &self.pools else {
            return None;
        };
        let listen = async {
            let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
            listener.listen(super::schema::NOTIFY_CHANNEL).await?;
            Ok(ChangeNotifications(listener))
        };
        Some(listen.await)
    }
}

#[cfg(test)]
mod tests {
    use super::{cursor_run, passed_gaps, rewritten_gaps, Change};

    fn change(id: i64, changed_at: i64) -> Change {
        Change {
            id,
            table_name: "sys_user".into(),
            row_key: format!("u{id}"),
            op: "U".into(),
            tenant_id: None,
            changed_at,
        }
    }

    #[test]
    fn the_cursor_stops_at_a_fresh_gap_only() {
        let rows = [change(2, 0), change(4, 990), change(5, 0)];
        assert_eq!(cursor_run(1, &rows, 1_000, 100), 1, "4 is 10 ms old");
        assert_eq!(cursor_run(1, &rows, 2_000, 100), 3, "4 is old enough");
        assert_eq!(cursor_run(0, &[], 0, 100), 0);
    }

    #[test]
    fn gaps_are_recorded_split_by_late_rows_and_dropped_when_old() {
        let now = 10_000;
        // New gaps behind the rows the cursor passes: 2 and 4..=5.
        let (deleted, added) = rewritten_gaps(&[], &[], now, 500);
        assert!(deleted.is_empty() && added.is_empty());
        let added = passed_gaps(1, &[change(3, 0), change(6, 0)], now);
        assert_eq!(added, vec![(2, 2, now), (4, 5, now)]);
        // A late row splits its gap; a gap it fills whole goes; others stay.
        let known = [(2, 2, 9_900), (4, 9, 9_900), (20, 30, 9_900)];
        let (deleted, added) = rewritten_gaps(&known, &[change(2, 0), change(7, 0)], now, 500);
        assert_eq!(deleted, vec![2, 4]);
        assert_eq!(added, vec![(4, 6, 9_900), (8, 9, 9_900)]);
        assert!(passed_gaps(40, &[], now).is_empty());
        // Watched long enough: dropped (a rolled-back insert).
        let (deleted, added) = rewritten_gaps(&[(4, 9, 1_000)], &[], now, 500);
        assert_eq!((deleted, added), (vec![4], vec![]));
    }
}

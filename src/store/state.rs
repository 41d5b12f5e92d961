//! dingsync's bookkeeping besides the queue: the change log (read side), named leases,
//! snapshots of what was last synced, and one row per sync run.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::{Backend, TenantId};

use super::tx::{Arg, Tx};
use super::{ms, now_ms, Store, StoreResult};

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

/// A snapshot: what dingsync last synced for one entity.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Snapshot {
    /// Tenant.
    pub tenant_id: i64,
    /// `user` or `dept`.
    pub entity: String,
    /// JeecgBoot id.
    pub local_id: String,
    /// DingTalk userid or dept id.
    pub ding_id: String,
    /// Hash of the synced content (of `base`, from schema v5 on).
    pub content_hash: String,
    /// Epoch ms.
    pub synced_at: i64,
    /// The fields last agreed with DingTalk, as JSON (schema v5; none before).
    pub base: Option<String>,
}

/// Counts of one sync run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunCounts {
    /// Created.
    pub created: i64,
    /// Updated.
    pub updated: i64,
    /// Deleted.
    pub deleted: i64,
    /// Nothing to do.
    pub skipped: i64,
    /// Failed.
    pub failed: i64,
}

impl Store {
    /// Change rows after `after`, oldest first, at most `limit`.
    pub async fn changes_after(&self, after: i64, limit: i64) -> StoreResult<Vec<Change>> {
        let sql = self.sql(
            "SELECT id, table_name, row_key, op, tenant_id, changed_at FROM dingsync_change WHERE id > ? ORDER BY id LIMIT ?",
        );
        Ok(crate::on_pool!(self, |pool| sqlx::query_as::<_, Change>(
            &sql
        )
        .bind(after)
        .bind(limit)
        .fetch_all(pool)
        .await?))
    }

    /// Deletes change rows older than `before` (epoch ms) that the cursor has passed.
    pub async fn purge_changes(&self, before: i64, cursor: i64) -> StoreResult<u64> {
        let sql = self.sql("DELETE FROM dingsync_change WHERE changed_at < ? AND id <= ?");
        Ok(crate::on_pool!(self, |pool| sqlx::query(&sql)
            .bind(before)
            .bind(cursor)
            .execute(pool)
            .await?
            .rows_affected()))
    }

    /// Deletes leases that expired before `before` (epoch ms).
    pub async fn purge_leases(&self, before: i64) -> StoreResult<u64> {
        let sql = self.sql("DELETE FROM dingsync_lease WHERE expires_at < ?");
        Ok(crate::on_pool!(self, |pool| sqlx::query(&sql)
            .bind(before)
            .execute(pool)
            .await?
            .rows_affected()))
    }

    /// Takes or renews the lease `name` for `owner` for `ttl`; `true` when `owner` holds it.
    pub async fn acquire_lease(&self, name: &str, owner: &str, ttl: Duration) -> StoreResult<bool> {
        let insert = match self.backend() {
            Backend::MySql => "INSERT IGNORE INTO dingsync_lease (name, owner, expires_at) VALUES (?, ?, ?)",
            _ => "INSERT INTO dingsync_lease (name, owner, expires_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING",
        };
        let insert = self.sql(insert);
        let take = self.sql("UPDATE dingsync_lease SET owner = ?, expires_at = ? WHERE name = ? AND (owner = ? OR expires_at < ?)");
        let now = now_ms();
        let until = now + ms(ttl);
        let taken = crate::on_pool!(self, |pool| {
            let inserted = sqlx::query(&insert)
                .bind(name)
                .bind(owner)
                .bind(until)
                .execute(pool)
                .await?
                .rows_affected();
            inserted == 1
                || sqlx::query(&take)
                    .bind(owner)
                    .bind(until)
                    .bind(name)
                    .bind(owner)
                    .bind(now)
                    .execute(pool)
                    .await?
                    .rows_affected()
                    == 1
        });
        Ok(taken)
    }

    /// Gives the lease up, if `owner` holds it.
    pub async fn release_lease(&self, name: &str, owner: &str) -> StoreResult<bool> {
        let sql = self.sql("DELETE FROM dingsync_lease WHERE name = ? AND owner = ?");
        Ok(crate::on_pool!(self, |pool| sqlx::query(&sql)
            .bind(name)
            .bind(owner)
            .execute(pool)
            .await?
            .rows_affected())
            == 1)
    }

    /// Gives up every lease `owner` holds, its runs' included (at shutdown); returns how many.
    pub async fn release_leases_of(&self, owner: &str) -> StoreResult<u64> {
        // Its runs' leases too: their owners are `<owner>/<run>`.
        let sql = self.sql("DELETE FROM dingsync_lease WHERE owner = ? OR owner LIKE ?");
        Ok(crate::on_pool!(self, |pool| sqlx::query(&sql)
            .bind(owner)
            .bind(format!("{owner}/%"))
            .execute(pool)
            .await?
            .rows_affected()))
    }

    /// The holder of a lease that has not expired.
    pub async fn lease_holder(&self, name: &str) -> StoreResult<Option<String>> {
        let sql = self.sql("SELECT owner FROM dingsync_lease WHERE name = ? AND expires_at >= ?");
        Ok(crate::on_pool!(self, |pool| sqlx::query_scalar(&sql)
            .bind(name)
            .bind(now_ms())
            .fetch_optional(pool)
            .await?))
    }

    /// Records what was synced for one entity: its DingTalk id and base (JSON).
    pub async fn put_snapshot(
        &self,
        tenant_id: TenantId,
        entity: &str,
        local_id: &str,
        ding_id: &str,
        base: &str,
    ) -> StoreResult<()> {
        let sql = self.put_snapshot_sql();
        crate::on_pool!(self, |pool| sqlx::query(&sql)
            .bind(tenant_id)
            .bind(entity)
            .bind(local_id)
            .bind(ding_id)
            .bind(crate::sync::model::content_hash(&[base]))
            .bind(now_ms())
            .bind(base)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(())
    }

    /// The upsert of [`Store::put_snapshot`] (binds: tenant, entity, local id, DingTalk id,
    /// hash, time, base).
    pub(super) fn put_snapshot_sql(&self) -> String {
        let sql = format!(
            "{SNAPSHOT_INSERT} (?, ?, ?, ?, ?, ?, ?){}",
            self.snapshot_upsert()
        );
        self.sql(&sql).into_owned()
    }

    /// What an insert of snapshots does with an entity that has one: the dialect's upsert.
    pub(super) fn snapshot_upsert(&self) -> &'static str {
        match self.backend() {
            Backend::MySql => {
                " ON DUPLICATE KEY UPDATE ding_id = VALUES(ding_id), content_hash = VALUES(content_hash), \
                 synced_at = VALUES(synced_at), base = VALUES(base)"
            }
            _ => {
                " ON CONFLICT (tenant_id, entity, local_id) DO UPDATE SET ding_id = excluded.ding_id, \
                 content_hash = excluded.content_hash, synced_at = excluded.synced_at, base = excluded.base"
            }
        }
    }

    /// All snapshots of one tenant and entity kind.
    pub async fn snapshots(&self, tenant_id: TenantId, entity: &str) -> StoreResult<Vec<Snapshot>> {
        let sql = self.sql(
            "SELECT tenant_id, entity, local_id, ding_id, content_hash, synced_at, base FROM dingsync_snapshot WHERE tenant_id = ? AND entity = ?",
        );
        Ok(crate::on_pool!(self, |pool| sqlx::query_as::<_, Snapshot>(
            &sql
        )
        .bind(tenant_id)
        .bind(entity)
        .fetch_all(pool)
        .await?))
    }

    /// The snapshots of `local_ids` (one slice of a run's users).
    pub async fn snapshots_of(
        &self,
        tenant_id: TenantId,
        entity: &str,
        local_ids: &[&str],
    ) -> StoreResult<Vec<Snapshot>> {
        if local_ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT tenant_id, entity, local_id, ding_id, content_hash, synced_at, base FROM dingsync_snapshot WHERE tenant_id = ? AND entity = ? AND local_id IN ({})",
            super::jeecg::placeholders(local_ids.len())
        );
        let sql = self.sql(&sql);
        Ok(crate::on_pool!(self, |pool| {
            let mut query = sqlx::query_as::<_, Snapshot>(&sql)
                .persistent(false)
                .bind(tenant_id)
                .bind(entity);
            for id in local_ids {
                query = query.bind(*id);
            }
            query.fetch_all(pool).await?
        }))
    }

    /// The snapshots of one tenant and entity kind whose DingTalk id is among `ding_ids`
    /// (who claims these DingTalk users).
    pub async fn snapshots_to(
        &self,
        tenant_id: TenantId,
        entity: &str,
        ding_ids: &[&str],
    ) -> StoreResult<Vec<Snapshot>> {
        if ding_ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT tenant_id, entity, local_id, ding_id, content_hash, synced_at, base FROM dingsync_snapshot WHERE tenant_id = ? AND entity = ? AND ding_id IN ({})",
            super::jeecg::placeholders(ding_ids.len())
        );
        let sql = self.sql(&sql);
        Ok(crate::on_pool!(self, |pool| {
            let mut query = sqlx::query_as::<_, Snapshot>(&sql)
                .persistent(false)
                .bind(tenant_id)
                .bind(entity);
            for id in ding_ids {
                query = query.bind(*id);
            }
            query.fetch_all(pool).await?
        }))
    }

    /// `(sys_user.id, userid)` of the user links and snapshots of `tenant_id` (links of
    /// every tenant for 0) whose `sys_user` row is gone: users deleted for good.
    pub async fn gone_users(&self, tenant_id: TenantId) -> StoreResult<Vec<(String, String)>> {
        let links = format!(
            "SELECT a.sys_user_id, a.third_user_id FROM sys_third_account a WHERE a.third_type = ?{} AND a.sys_user_id IS NOT NULL AND a.third_user_id IS NOT NULL AND a.third_user_id <> '' AND NOT EXISTS (SELECT 1 FROM sys_user u WHERE u.id = a.sys_user_id)",
            if tenant_id != 0 { " AND a.tenant_id = ?" } else { "" }
        );
        let snapshots = "SELECT s.local_id, s.ding_id FROM dingsync_snapshot s WHERE s.tenant_id = ? AND s.entity = 'user' AND NOT EXISTS (SELECT 1 FROM sys_user u WHERE u.id = s.local_id)";
        let (links, snapshots) = (self.sql(&links), self.sql(snapshots));
        Ok(crate::on_pool!(self, |pool| {
            let mut query = sqlx::query_as::<_, (String, String)>(&links)
                .bind(crate::jeecg::THIRD_TYPE_DINGTALK);
            if tenant_id != 0 {
                query = query.bind(tenant_id);
            }
            let mut gone = query.fetch_all(pool).await?;
            gone.extend(
                sqlx::query_as::<_, (String, String)>(&snapshots)
                    .bind(tenant_id)
                    .fetch_all(pool)
                    .await?,
            );
            gone
        }))
    }

    /// One entity's snapshot.
    pub async fn snapshot_of(
        &self,
        tenant_id: TenantId,
        entity: &str,
        local_id: &str,
    ) -> StoreResult<Option<Snapshot>> {
        let sql = self.sql(
            "SELECT tenant_id, entity, local_id, ding_id, content_hash, synced_at, base FROM dingsync_snapshot WHERE tenant_id = ? AND entity = ? AND local_id = ?",
        );
        Ok(crate::on_pool!(self, |pool| sqlx::query_as::<_, Snapshot>(
            &sql
        )
        .bind(tenant_id)
        .bind(entity)
        .bind(local_id)
        .fetch_optional(pool)
        .await?))
    }

    /// Forgets one entity's snapshot.
    pub async fn delete_snapshot(
        &self,
        tenant_id: TenantId,
        entity: &str,
        local_id: &str,
    ) -> StoreResult<()> {
        self.delete_snapshots(tenant_id, entity, "local_id", local_id)
            .await
    }

    /// Forgets the snapshots of one DingTalk entity (deleted in DingTalk).
    pub async fn forget_ding_id(
        &self,
        tenant_id: TenantId,
        entity: &str,
        ding_id: &str,
    ) -> StoreResult<()> {
        self.delete_snapshots(tenant_id, entity, "ding_id", ding_id)
            .await
    }

    async fn delete_snapshots(
        &self,
        tenant_id: TenantId,
        entity: &str,
        column: &'static str,
        value: &str,
    ) -> StoreResult<()> {
        let text = format!(
            "DELETE FROM dingsync_snapshot WHERE tenant_id = ? AND entity = ? AND {column} = ?"
        );
        let sql = self.sql(&text);
        crate::on_pool!(self, |pool| sqlx::query(&sql)
            .bind(tenant_id)
            .bind(entity)
            .bind(value)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(())
    }

    /// Opens a `dingsync_run` row; returns its id.
    pub async fn start_run(&self, tenant_id: TenantId, kind: &str) -> StoreResult<i64> {
        let now = now_ms();
        let id = match &self.pools {
            super::Pools::MySql(pool) => {
                let sql = "INSERT INTO dingsync_run (tenant_id, kind, started_at) VALUES (?, ?, ?)";
                let done = sqlx::query(sql)
                    .bind(tenant_id)
                    .bind(kind)
                    .bind(now)
                    .execute(pool)
                    .await?;
                i64::try_from(done.last_insert_id()).unwrap_or(i64::MAX)
            }
            _ => {
                let sql = self.sql("INSERT INTO dingsync_run (tenant_id, kind, started_at) VALUES (?, ?, ?) RETURNING id");
                crate::on_pool!(self, |pool| sqlx::query_scalar(&sql)
                    .bind(tenant_id)
                    .bind(kind)
                    .bind(now)
                    .fetch_one(pool)
                    .await?)
            }
        };
        Ok(id)
    }

    /// Closes a run row with its counts, API calls by route and error.
    pub async fn finish_run(
        &self,
        id: i64,
        counts: &RunCounts,
        calls: &BTreeMap<&str, u64>,
        error: Option<&str>,
    ) -> StoreResult<()> {
        let sql = self.sql(
            "UPDATE dingsync_run SET finished_at = ?, created = ?, updated = ?, deleted = ?, skipped = ?, failed = ?, \
             api_calls = ?, error = ? WHERE id = ?",
        );
        let calls = serde_json::to_string(calls).unwrap_or_default();
        crate::on_pool!(self, |pool| sqlx::query(&sql)
            .bind(now_ms())
            .bind(counts.created)
            .bind(counts.updated)
            .bind(counts.deleted)
            .bind(counts.skipped)
            .bind(counts.failed)
            .bind(&calls)
            .bind(error)
            .bind(id)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(())
    }
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

/// The head of an insert of snapshots; rows follow (tenant, entity, local id, DingTalk id,
/// hash, time, base).
pub(super) const SNAPSHOT_INSERT: &str = "INSERT INTO dingsync_snapshot (tenant_id, entity, local_id, ding_id, content_hash, synced_at, base) VALUES";

/// A job to enqueue for a change row.
pub type JobFor = fn(&Change, &[TenantId]) -> Vec<(TenantId, &'static str, String)>;

impl Store {
    /// The change-log cursor: the id of the last change turned into jobs.
    pub async fn change_cursor(&self) -> StoreResult<i64> {
        Ok(self
            .meta(CURSOR)
            .await?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// `(tenant, kind, finished_at)` of each tenant's last run of each kind that finished
    /// without a failure or an error.
    pub async fn last_successes(&self) -> StoreResult<Vec<(TenantId, String, i64)>> {
        let sql = "SELECT tenant_id, kind, MAX(finished_at) FROM dingsync_run \
                   WHERE finished_at IS NOT NULL AND failed = 0 AND error IS NULL GROUP BY tenant_id, kind";
        let rows: Vec<(TenantId, String, Option<i64>)> =
            crate::on_pool!(self, |pool| sqlx::query_as(sql).fetch_all(pool).await?);
        Ok(rows
            .into_iter()
            .filter_map(|(tenant, kind, at)| Some((tenant, kind, at?)))
            .collect())
    }

    /// The highest change id (0 when empty).
    pub async fn last_change_id(&self) -> StoreResult<i64> {
        let sql = "SELECT COALESCE(MAX(id), 0) FROM dingsync_change";
        Ok(crate::on_pool!(self, |pool| sqlx::query_scalar(sql)
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

    /// Whether `user_id` belongs to `tenant` (tenant 0 owns everyone).
    pub async fn user_in_tenant(&self, user_id: &str, tenant: TenantId) -> StoreResult<bool> {
        if tenant == 0 {
            return Ok(true);
        }
        let sql = format!(
            "SELECT COUNT(*) FROM sys_user_tenant WHERE user_id = ? AND {} = ? AND status = '1'",
            self.int("tenant_id")
        );
        let sql = self.sql(&sql);
        let count: i64 = crate::on_pool!(self, |pool| sqlx::query_scalar(&sql)
            .bind(user_id)
            .bind(tenant)
            .fetch_one(pool)
            .await?);
        Ok(count > 0)
    }

    /// The latest finished run of each kind for `tenant`: (kind, finished_at, created,
    /// updated, deleted, failed, error).
    pub async fn last_runs(&self, tenant: TenantId) -> StoreResult<Vec<RunRow>> {
        let sql = self.sql(
            "SELECT r.kind, r.finished_at, r.created, r.updated, r.deleted, r.failed, r.error FROM dingsync_run r \
             WHERE r.tenant_id = ? AND r.id = (SELECT MAX(x.id) FROM dingsync_run x WHERE x.tenant_id = r.tenant_id AND x.kind = r.kind AND x.finished_at IS NOT NULL) ORDER BY r.kind",
        );
        Ok(crate::on_pool!(self, |pool| sqlx::query_as::<_, RunRow>(
            &sql
        )
        .bind(tenant)
        .fetch_all(pool)
        .await?))
    }
}

/// A finished run, for `dingsync status`.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct RunRow {
    /// push / pull / reconcile.
    pub kind: String,
    /// Epoch ms.
    pub finished_at: Option<i64>,
    /// Created.
    pub created: i64,
    /// Updated.
    pub updated: i64,
    /// Deleted.
    pub deleted: i64,
    /// Failed.
    pub failed: i64,
    /// Error of the run, if any.
    pub error: Option<String>,
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

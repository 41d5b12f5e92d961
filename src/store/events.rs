//! DingTalk's Stream events as the database keeps them: each event's id once per tenant
//! (DingTalk redelivers events, sometimes after a correct ack), written in the same
//! transaction as the pull jobs the event asks for, so an event acked `SUCCESS` is never
//! lost and never applied twice; and each tenant's connection state, for `dingsync status`.

use crate::config::{Backend, TenantId};

use super::queue::pending_key;
use super::{now_ms, Store, StoreResult};

/// The longest event id kept (DingTalk's are 32 hex digits).
const EVENT_ID_MAX: usize = 128;

/// What became of an event handed to [`Store::record_event`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// Stored, with its jobs.
    New,
    /// Seen before: nothing enqueued.
    Duplicate,
}

/// A tenant's Stream connection as its owner last wrote it.
#[derive(Clone, Debug, sqlx::FromRow, serde::Serialize)]
pub struct StreamState {
    /// The tenant.
    pub tenant_id: i64,
    /// The instance holding the connection.
    pub instance: String,
    /// Its counters and state (JSON).
    pub state: String,
    /// When it was written, ms since the epoch.
    pub updated_at: i64,
}

impl Store {
    /// Records event `event_id` of `tenant` and enqueues `jobs` (kind, key) in one
    /// transaction; an event seen before enqueues nothing. A dead job of the same entity is
    /// superseded, as a change of a local row supersedes a push job's.
    pub async fn record_event(
        &self,
        tenant: TenantId,
        event_id: &str,
        event_type: &str,
        jobs: &[(&str, String)],
    ) -> StoreResult<Recorded> {
        let insert = self.sql(match self.backend() {
            Backend::MySql => "INSERT IGNORE INTO dingsync_event (tenant_id, event_id, event_type, received_at) VALUES (?, ?, ?, ?)",
            _ => "INSERT INTO dingsync_event (tenant_id, event_id, event_type, received_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
        });
        let dead = self.sql("SELECT id FROM dingsync_job WHERE state = 'dead' AND tenant_id = ? AND kind = ? AND entity_key = ?");
        let delete = self.delete_job_sql();
        let enqueue = self.enqueue_sql();
        let begin = self.begin_statement();
        let event_id: String = event_id.chars().take(EVENT_ID_MAX).collect();
        let event_type: String = event_type.chars().take(64).collect();
        let now = now_ms();
        crate::store::on_pool!(self, |pool| {
            let mut tx = pool.begin_with(begin).await?;
            let inserted = sqlx::query(&insert)
                .bind(tenant)
                .bind(&event_id)
                .bind(&event_type)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if inserted == 0 {
                tx.commit().await?;
                return Ok(Recorded::Duplicate);
            }
            for (kind, key) in jobs {
                let ids: Vec<i64> = sqlx::query_scalar(&dead)
                    .bind(tenant)
                    .bind(*kind)
                    .bind(key)
                    .fetch_all(&mut *tx)
                    .await?;
                for id in ids {
                    sqlx::query(&delete).bind(id).execute(&mut *tx).await?;
                }
                sqlx::query(&enqueue)
                    .bind(tenant)
                    .bind(*kind)
                    .bind(key)
                    .bind(pending_key(tenant, kind, key))
                    .bind(now)
                    .bind(now)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(Recorded::New)
        })
    }

    /// Forgets event ids received before `before` (ms): DingTalk redelivers within hours, not
    /// days.
    pub async fn purge_events(&self, before: i64) -> StoreResult<u64> {
        let sql = self.sql("DELETE FROM dingsync_event WHERE received_at < ?");
        Ok(crate::store::on_pool!(self, |pool| sqlx::query(&sql)
            .bind(before)
            .execute(pool)
            .await?
            .rows_affected()))
    }

    /// Writes `tenant`'s connection state as `instance` sees it.
    pub async fn put_stream_state(
        &self,
        tenant: TenantId,
        instance: &str,
        state: &str,
    ) -> StoreResult<()> {
        let sql = self.sql(match self.backend() {
            Backend::MySql => "INSERT INTO dingsync_stream (tenant_id, instance, state, updated_at) VALUES (?, ?, ?, ?) \
                               ON DUPLICATE KEY UPDATE instance = VALUES(instance), state = VALUES(state), updated_at = VALUES(updated_at)",
            _ => "INSERT INTO dingsync_stream (tenant_id, instance, state, updated_at) VALUES (?, ?, ?, ?) \
                  ON CONFLICT (tenant_id) DO UPDATE SET instance = excluded.instance, state = excluded.state, updated_at = excluded.updated_at",
        });
        crate::store::on_pool!(self, |pool| sqlx::query(&sql)
            .bind(tenant)
            .bind(instance)
            .bind(state)
            .bind(now_ms())
            .execute(pool)
            .await?
            .rows_affected());
        Ok(())
    }

    /// `tenant`'s connection state, as its owner last wrote it.
    pub async fn stream_state(&self, tenant: TenantId) -> StoreResult<Option<StreamState>> {
        let sql = self.sql(
            "SELECT tenant_id, instance, state, updated_at FROM dingsync_stream WHERE tenant_id = ?",
        );
        Ok(crate::store::on_pool!(self, |pool| sqlx::query_as(&sql)
            .bind(tenant)
            .fetch_optional(pool)
            .await?))
    }

    /// When `tenant`'s job (kind, key) is due, if one is pending or running (a running one
    /// was due when it was claimed).
    pub async fn job_due(
        &self,
        tenant: TenantId,
        kind: &str,
        key: &str,
    ) -> StoreResult<Option<i64>> {
        let sql = self.sql("SELECT MIN(run_at) FROM dingsync_job WHERE tenant_id = ? AND kind = ? AND entity_key = ? AND state IN ('pending', 'running')");
        Ok(crate::store::on_pool!(self, |pool| sqlx::query_scalar::<
            _,
            Option<i64>,
        >(&sql)
        .bind(tenant)
        .bind(kind)
        .bind(key)
        .fetch_one(pool)
        .await?))
    }
}

//! Rows of the message side: JeecgBoot's `sys_announcement` (read, and its `dt_task_id`
//! set), dingsync's `dingsync_delivery` (one row per chunk sent, recorded before the send and
//! completed after) and `dingsync_outbox` (messages queued by other programs).

use serde::Serialize;

use crate::config::{Backend, TenantId};

use super::{now_ms, Store, StoreResult};

/// A `sys_announcement` row (the fields a delivery needs).
#[derive(Clone, Debug, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct Announcement {
    /// id.
    pub id: String,
    /// `titile` (sic).
    pub title: Option<String>,
    /// `msg_content`.
    pub content: Option<String>,
    /// `msg_abstract`.
    pub summary: Option<String>,
    /// `msg_type`: ALL or USER.
    pub msg_type: Option<String>,
    /// `user_ids`: sys_user ids, comma-separated (with a trailing comma).
    pub user_ids: Option<String>,
    /// `send_status`: 0 draft, 1 published, 2 revoked.
    pub send_status: Option<String>,
    /// `del_flag`.
    pub del_flag: Option<String>,
    /// `dt_task_id`.
    pub dt_task_id: Option<String>,
    /// `tenant_id`.
    pub tenant_id: i64,
    /// `send_time`, as the database renders it (JeecgBoot's wall-clock time).
    pub send_time: Option<String>,
    /// `create_time`, likewise.
    pub create_time: Option<String>,
}

/// A `dingsync_delivery` row: one chunk of one message.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct Delivery {
    /// Id.
    pub id: i64,
    /// `announcement` or `outbox`.
    pub source: String,
    /// The announcement or outbox id.
    pub source_id: String,
    /// Chunk number.
    pub chunk: i64,
    /// The recipients of the chunk (JSON).
    pub recipients: Option<String>,
    /// sending / sent / recalled / recall_expired / cancelled.
    pub state: String,
    /// DingTalk's task id.
    pub task_id: Option<i64>,
    /// Epoch ms.
    pub sent_at: Option<i64>,
    /// Send result counts (JSON).
    pub result: Option<String>,
}

/// A `dingsync_outbox` row.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct OutboxRow {
    /// Id.
    pub id: i64,
    /// Tenant.
    pub tenant_id: i64,
    /// DingTalk userids, comma-separated.
    pub to_userids: Option<String>,
    /// JeecgBoot usernames, comma-separated.
    pub to_usernames: Option<String>,
    /// DingTalk department ids, comma-separated.
    pub to_dept_ids: Option<String>,
    /// 1: everyone.
    pub to_all: i64,
    /// The message as DingTalk's JSON (`{"msgtype": ..., ...}`).
    pub message: String,
    /// pending / sent / failed.
    pub status: String,
}

const DELIVERY_COLUMNS: &str =
    "id, source, source_id, chunk, recipients, state, task_id, sent_at, result";

impl Store {
    /// One announcement.
    pub async fn load_announcement(&self, id: &str) -> StoreResult<Option<Announcement>> {
        // JeecgBoot writes its DATETIMEs as wall-clock times without a zone; they are read
        // as text and placed in a zone by the caller (the database session's own clock is
        // UTC under sqlx, so it cannot tell the age).
        let sql = format!(
            "SELECT id, titile AS title, {content} AS content, {summary} AS summary, msg_type, {users} AS user_ids, send_status, del_flag, dt_task_id, \
             {tenant} AS tenant_id, {send} AS send_time, {create} AS create_time FROM sys_announcement WHERE id = ?",
            content = self.text("msg_content"),
            summary = self.text("msg_abstract"),
            users = self.text("user_ids"),
            tenant = self.int("COALESCE(tenant_id, 0)"),
            send = self.text("send_time"),
            create = self.text("create_time"),
        );
        let sql = self.sql(&sql);
        Ok(crate::store::on_pool!(self, |pool| sqlx::query_as::<
            _,
            Announcement,
        >(&sql)
        .bind(id)
        .fetch_optional(pool)
        .await?))
    }

    /// The delivery rows of one message of `tenant`, by chunk.
    pub async fn deliveries(
        &self,
        tenant: TenantId,
        source: &str,
        source_id: &str,
    ) -> StoreResult<Vec<Delivery>> {
        let text = format!("SELECT {DELIVERY_COLUMNS} FROM dingsync_delivery WHERE tenant_id = ? AND source = ? AND source_id = ? ORDER BY chunk");
        let sql = self.sql(&text);
        Ok(crate::store::on_pool!(self, |pool| sqlx::query_as::<
            _,
            Delivery,
        >(&sql)
        .bind(tenant)
        .bind(source)
        .bind(source_id)
        .fetch_all(pool)
        .await?))
    }

    /// Records a chunk as about to be sent (state `sending`), unless it is recorded already.
    pub async fn delivery_begin(
        &self,
        tenant: TenantId,
        source: &str,
        source_id: &str,
        chunk: i64,
        recipients: &str,
    ) -> StoreResult<()> {
        let sql = match self.backend() {
            Backend::MySql => "INSERT IGNORE INTO dingsync_delivery (tenant_id, source, source_id, chunk, recipients, state, created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'sending', ?, ?)",
            _ => "INSERT INTO dingsync_delivery (tenant_id, source, source_id, chunk, recipients, state, created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'sending', ?, ?) ON CONFLICT (tenant_id, source, source_id, chunk) DO NOTHING",
        };
        let sql = self.sql(sql);
        let now = now_ms();
        crate::store::on_pool!(self, |pool| sqlx::query(&sql)
            .bind(tenant)
            .bind(source)
            .bind(source_id)
            .bind(chunk)
            .bind(recipients)
            .bind(now)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(())
    }

    /// Records a chunk as sent with DingTalk's task id.
    pub async fn delivery_sent(&self, id: i64, task_id: i64) -> StoreResult<()> {
        let sql = self.sql("UPDATE dingsync_delivery SET state = 'sent', task_id = ?, sent_at = ?, updated_at = ? WHERE id = ?");
        let now = now_ms();
        crate::store::on_pool!(self, |pool| sqlx::query(&sql)
            .bind(task_id)
            .bind(now)
            .bind(now)
            .bind(id)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(())
    }

    /// Sets a chunk's state (recalled, recall_expired, cancelled) and, for a recall, its time.
    pub async fn delivery_state(&self, id: i64, state: &str) -> StoreResult<()> {
        let sql = self.sql("UPDATE dingsync_delivery SET state = ?, recalled_at = CASE WHEN ? = 'recalled' THEN ? ELSE recalled_at END, updated_at = ? WHERE id = ?");
        let now = now_ms();
        crate::store::on_pool!(self, |pool| sqlx::query(&sql)
            .bind(state)
            .bind(state)
            .bind(now)
            .bind(now)
            .bind(id)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(())
    }

    /// Stores a chunk's send result (JSON counts).
    pub async fn delivery_result(&self, id: i64, result: &str) -> StoreResult<()> {
        let sql = self.sql("UPDATE dingsync_delivery SET result = ?, updated_at = ? WHERE id = ?");
        crate::store::on_pool!(self, |pool| sqlx::query(&sql)
            .bind(result)
            .bind(now_ms())
            .bind(id)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(())
    }

    /// One outbox row.
    pub async fn load_outbox(&self, id: i64) -> StoreResult<Option<OutboxRow>> {
        let text = format!(
            "SELECT id, tenant_id, to_userids, to_usernames, to_dept_ids, {to_all} AS to_all, message, status FROM dingsync_outbox WHERE id = ?",
            to_all = self.int("to_all")
        );
        let sql = self.sql(&text);
        Ok(crate::store::on_pool!(self, |pool| {
            sqlx::query_as::<_, OutboxRow>(&sql)
                .bind(id)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// Writes an outbox row's outcome back.
    pub async fn outbox_finish(
        &self,
        id: i64,
        status: &str,
        task_ids: &str,
        error: Option<&str>,
    ) -> StoreResult<()> {
        let sql = self.sql("UPDATE dingsync_outbox SET status = ?, task_ids = ?, error = ?, updated_at = ? WHERE id = ?");
        crate::store::on_pool!(self, |pool| sqlx::query(&sql)
            .bind(status)
            .bind(task_ids)
            .bind(error)
            .bind(now_ms())
            .bind(id)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(())
    }
}

impl Store {
    /// Sets `sys_announcement.dt_task_id`.
    pub async fn set_announcement_task(
        &self,
        announcement_id: &str,
        task_id: i64,
    ) -> StoreResult<()> {
        let sql = "UPDATE sys_announcement SET dt_task_id = ? WHERE id = ?".to_string();
        self.write_marked(vec![(
            sql,
            vec![Some(task_id.to_string()), Some(announcement_id.to_string())],
        )])
        .await
    }
}

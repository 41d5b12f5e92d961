//! Messages: system announcements (系统通告) and outbox rows delivered to DingTalk as work
//! notifications, in chunks of at most 100 recipients, each chunk a `dingsync_delivery` row
//! recorded before the send and completed after; revoked announcements recalled; send
//! results collected. A job reads the current rows, so it can run again safely: what was
//! sent is not sent again (a crash between a send and its record re-sends that one chunk at
//! most once, and DingTalk drops identical content to the same user on the same day).

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;

use crate::dingtalk::api::{MAX_SEND_DEPTS, MAX_SEND_USERIDS};
use crate::dingtalk::types::{Message, Recipients};
use crate::dingtalk::{DingTalkError, ErrorKind};
use crate::job::{JobCtx, JobOutcome};
use crate::store::messages::{Announcement, Delivery, OutboxRow};
use crate::store::{now_ms, StoreError};
use crate::sync::model::Summary;

/// Delivery sources.
pub const SOURCE_ANNOUNCEMENT: &str = "announcement";
/// An outbox row.
pub const SOURCE_OUTBOX: &str = "outbox";
/// DingTalk recalls only within 24 hours of the send.
const RECALL_WINDOW_MS: i64 = 24 * 3600 * 1000;
/// How long to wait for DingTalk to finish a send before asking for its result.
const RESULT_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
enum MsgError {
    #[error("{0}")]
    DingTalk(#[from] DingTalkError),
    #[error("{0}")]
    Store(#[from] StoreError),
}

fn outcome(result: Result<JobOutcome, MsgError>) -> JobOutcome {
    result.unwrap_or_else(|error| {
        let permanent = match &error {
            MsgError::DingTalk(e) => !e.is_retryable(),
            MsgError::Store(e) => !e.is_retryable(),
        };
        JobOutcome::Failed {
            permanent,
            reason: error.to_string(),
        }
    })
}

/// The card JeecgBoot sends for an announcement: the title, markdown "### title" and the
/// abstract (the content when the abstract is JSON, "空" when there is neither), one button
/// "详情" to `<base>/sys/annountCement/show/<id>`; cut to DingTalk's 2048 bytes.
pub fn announcement_message(announcement: &Announcement, base_url: &url::Url) -> Message {
    let title = announcement.title.clone().unwrap_or_default();
    let summary = announcement.summary.clone().unwrap_or_default();
    let is_json = serde_json::from_str::<serde_json::Value>(&summary)
        .is_ok_and(|v| v.is_object() || v.is_array());
    let body = match (summary.trim().is_empty(), is_json) {
        (false, false) => summary,
        (_, true) => announcement
            .content
            .clone()
            .filter(|c| !c.trim().is_empty())
            .unwrap_or_else(|| "空".into()),
        (true, false) => "空".into(),
    };
    let url = format!(
        "{}/sys/annountCement/show/{}",
        base_url.as_str().trim_end_matches('/'),
        announcement.id
    );
    let title: String = title.chars().take(64).collect();
    let mut markdown = format!("### {title}\n{body}");
    loop {
        let message = Message::action_card(&title, &markdown, "详情", &url);
        if message.encoded_len() <= crate::dingtalk::api::MAX_MESSAGE_BYTES || markdown.is_empty() {
            return message;
        }
        let keep = markdown.chars().count() * 9 / 10;
        markdown = markdown.chars().take(keep).collect::<String>() + "…";
        if keep < 8 {
            markdown.clear();
        }
    }
}

/// Recipients in chunks DingTalk accepts: everyone, or ≤ 100 userids / ≤ 20 departments a send.
pub fn chunks(to_all: bool, userids: &[String], dept_ids: &[i64]) -> Vec<Recipients> {
    if to_all {
        return vec![Recipients {
            to_all: true,
            ..Recipients::default()
        }];
    }
    let mut out: Vec<Recipients> = userids
        .chunks(MAX_SEND_USERIDS)
        .map(|c| Recipients {
            userids: c.to_vec(),
            ..Recipients::default()
        })
        .collect();
    out.extend(dept_ids.chunks(MAX_SEND_DEPTS).map(|c| Recipients {
        dept_ids: c.to_vec(),
        ..Recipients::default()
    }));
    out
}

fn recipients_json(to: &Recipients) -> String {
    json!({ "to_all": to.to_all, "userids": to.userids, "dept_ids": to.dept_ids }).to_string()
}

/// Sends the chunks not sent yet; returns the task ids of all sent chunks, in order.
/// For an announcement, each chunk first checks it is still published (a revoke during the
/// send stops it: `None`).
async fn send_chunks(
    ctx: &JobCtx<'_>,
    source: &str,
    source_id: &str,
    message: &Message,
    chunks: &[Recipients],
) -> Result<Option<Vec<i64>>, MsgError> {
    let store = ctx.store;
    for (index, to) in chunks.iter().enumerate() {
        let chunk = i64::try_from(index).unwrap_or(i64::MAX);
        let recorded = store.deliveries(ctx.tenant.id, source, source_id).await?;
        if recorded
            .iter()
            .any(|d| d.chunk == chunk && d.state != "sending")
        {
            continue;
        }
        if source == SOURCE_ANNOUNCEMENT
            && !store
                .load_announcement(source_id)
                .await?
                .as_ref()
                .is_some_and(is_live)
        {
            return Ok(None);
        }
        store
            .delivery_begin(
                ctx.tenant.id,
                source,
                source_id,
                chunk,
                &recipients_json(to),
            )
            .await?;
        let Some(row) = store
            .deliveries(ctx.tenant.id, source, source_id)
            .await?
            .into_iter()
            .find(|d| d.chunk == chunk)
        else {
            continue;
        };
        let task_id = ctx.client.send(to, message).await?;
        store.delivery_sent(row.id, task_id).await?;
        tracing::info!(
            event = "announce.sent",
            tenant = ctx.tenant.id,
            source,
            id = source_id,
            chunk,
            task_id,
            recipients = to.userids.len(),
            to_all = to.to_all,
            "message chunk sent"
        );
    }
    let rows = store.deliveries(ctx.tenant.id, source, source_id).await?;
    Ok(Some(rows.iter().filter_map(|d| d.task_id).collect()))
}

/// Collects send results of chunks of ≤ 100 named recipients; `true` while some are not ready.
async fn collect_results(ctx: &JobCtx<'_>, rows: &[Delivery]) -> Result<bool, MsgError> {
    let mut waiting = false;
    for row in rows
        .iter()
        .filter(|d| d.state == "sent" && d.result.is_none())
    {
        let Some(task_id) = row.task_id else { continue };
        let named = row
            .recipients
            .as_deref()
            .and_then(|r| serde_json::from_str::<serde_json::Value>(r).ok());
        let countable = named.as_ref().is_some_and(|r| {
            r["to_all"] == false && r["dept_ids"].as_array().is_some_and(Vec::is_empty)
        });
        if !countable || now_ms() - row.sent_at.unwrap_or(0) > RECALL_WINDOW_MS {
            continue;
        }
        let progress = ctx.client.send_progress(task_id).await?;
        if progress.status != 2 {
            waiting = true;
            continue;
        }
        let result = ctx.client.send_result(task_id).await?;
        let counts = json!({
            "read": result.read_user_id_list.len(), "unread": result.unread_user_id_list.len(),
            "invalid": result.invalid_user_id_list.len(), "forbidden": result.forbidden_user_id_list.len(),
            "failed": result.failed_user_id_list.len(),
            "forbidden_codes": result.forbidden_list.iter().map(|f| f.code).collect::<Vec<_>>(),
        });
        ctx.store
            .delivery_result(row.id, &counts.to_string())
            .await?;
        tracing::info!(
            event = "announce.result",
            tenant = ctx.tenant.id,
            task_id,
            read = result.read_user_id_list.len(),
            unread = result.unread_user_id_list.len(),
            invalid = result.invalid_user_id_list.len(),
            forbidden = result.forbidden_user_id_list.len(),
            failed = result.failed_user_id_list.len(),
            "send result recorded"
        );
    }
    Ok(waiting)
}

/// Recalls every sent chunk; a chunk older than 24 h cannot be (DingTalk's rule): that is
/// recorded and logged, not retried. Chunks whose send was never confirmed are cancelled.
async fn recall_all(
    ctx: &JobCtx<'_>,
    source: &str,
    source_id: &str,
) -> Result<JobOutcome, MsgError> {
    let store = ctx.store;
    for row in store.deliveries(ctx.tenant.id, source, source_id).await? {
        match row.state.as_str() {
            "sending" => store.delivery_state(row.id, "cancelled").await?,
            "sent" => {
                let Some(task_id) = row.task_id else { continue };
                // Past 24 h DingTalk cannot recall (and says so with a parameter error).
                let refused = now_ms() - row.sent_at.unwrap_or(0) > RECALL_WINDOW_MS
                    || match ctx.client.recall(task_id).await {
                        Ok(()) => false,
                        Err(error) if error.kind == ErrorKind::Validation => true,
                        Err(error) => return Err(error.into()),
                    };
                if refused {
                    store.delivery_state(row.id, "recall_expired").await?;
                    tracing::warn!(
                        event = "announce.recall_expired",
                        tenant = ctx.tenant.id,
                        source,
                        id = source_id,
                        task_id,
                        "sent more than 24 h ago: DingTalk cannot recall it"
                    );
                } else {
                    store.delivery_state(row.id, "recalled").await?;
                    tracing::info!(
                        event = "announce.recalled",
                        tenant = ctx.tenant.id,
                        source,
                        id = source_id,
                        task_id,
                        "message recalled"
                    );
                }
            }
            _ => {}
        }
    }
    Ok(JobOutcome::Done(Summary::default()))
}

/// Who sends a tenant's announcements to DingTalk (and recalls them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sender {
    /// dingsync's announcement jobs.
    Dingsync,
    /// JeecgBoot itself: its DingTalk integration is on for the tenant, and it sends on
    /// publish (`sendActionCardMessage`) and recalls on revoke.
    Jeecgboot,
    /// Nobody (`announcement.mode = "never"`).
    Nobody,
}

impl Sender {
    /// The rule, in one place: `announcement.mode`, and in `auto` whether JeecgBoot's own
    /// integration is on for the tenant (`AppConfigRow::integration_on`: its DingTalk row of
    /// `sys_third_app_config` enabled with real credentials), wherever the tenant's own
    /// credentials come from.
    pub fn of(mode: crate::config::AnnouncementMode, jeecgboot_on: bool) -> Self {
        use crate::config::AnnouncementMode;
        match mode {
            AnnouncementMode::Never => Self::Nobody,
            AnnouncementMode::Always => Self::Dingsync,
            AnnouncementMode::Auto if jeecgboot_on => Self::Jeecgboot,
            AnnouncementMode::Auto => Self::Dingsync,
        }
    }

    /// Who sends, in words, for `check-config` and `status`: `jeecgboot_on` is whether
    /// JeecgBoot's own integration is on (it sends whatever dingsync does), `push_on` the
    /// tenant's `push.enabled` (off: dingsync sends nothing).
    pub fn describe(self, jeecgboot_on: bool, push_on: bool) -> &'static str {
        match (self, jeecgboot_on, push_on) {
            (Self::Jeecgboot, ..) => {
                "JeecgBoot (its sys_third_app_config row for DingTalk is enabled)"
            }
            (Self::Dingsync, true, true) => {
                "dingsync and JeecgBoot: every notice arrives twice (announcement.mode = \"always\")"
            }
            (Self::Dingsync, false, true) => "dingsync",
            (_, true, _) => "JeecgBoot (dingsync sends none)",
            (Self::Dingsync, false, false) => "nobody (push.enabled = false)",
            (Self::Nobody, false, _) => "nobody (announcement.mode = \"never\")",
        }
    }
}

/// Who sends each tenant's announcements, read from `sys_third_app_config` now, with
/// whether JeecgBoot's integration is on for it: `(tenant, sender, jeecgboot_on)`. Only
/// `auto` reads the table; a database without it (JeecgBoot before 3.4 keeps its DingTalk
/// settings in its yml) has no row, so dingsync sends.
pub async fn senders(
    config: &crate::config::Config,
    store: &crate::store::Store,
    tenants: &[crate::config::TenantId],
) -> Result<Vec<(crate::config::TenantId, Sender, bool)>, StoreError> {
    let rows = match store.app_configs().await {
        Ok(rows) => rows,
        Err(error) if error.is_retryable() => return Err(error),
        Err(error) => {
            tracing::debug!(event = "announce.senders_unknown", error = %error, "sys_third_app_config cannot be read; no JeecgBoot integration assumed");
            Vec::new()
        }
    };
    Ok(tenants
        .iter()
        .map(|tenant| {
            // Several rows for one tenant (the table has no unique key): any one on counts.
            let on = rows
                .iter()
                .any(|r| r.tenant_id == *tenant && r.integration_on());
            (*tenant, Sender::of(config.announcement.mode, on), on)
        })
        .collect())
}

/// Logged at start and on each reload: the tenants whose announcements JeecgBoot sends
/// (`announce.left_to_jeecgboot`), and a `config.warning` for each tenant that both send to
/// (`always` beside an enabled JeecgBoot integration: every notice arrives twice).
pub async fn log_senders(
    config: &crate::config::Config,
    store: &crate::store::Store,
    tenants: &[crate::config::TenantId],
) {
    let senders = match senders(config, store, tenants).await {
        Ok(senders) => senders,
        Err(error) => {
            tracing::warn!(event = "announce.senders_unknown", error = %error, "cannot read sys_third_app_config; each announcement job reads it again");
            return;
        }
    };
    let left: Vec<_> = senders
        .iter()
        .filter(|(_, s, _)| *s == Sender::Jeecgboot)
        .map(|(t, ..)| *t)
        .collect();
    if !left.is_empty() {
        tracing::info!(event = "announce.left_to_jeecgboot", tenants = ?left, "JeecgBoot's own DingTalk integration is on for these tenants: JeecgBoot sends and recalls their announcements, dingsync does not (announcement.mode = \"auto\")");
    }
    for (tenant, sender, on) in senders {
        let push_on = config
            .tenants
            .iter()
            .find(|t| t.id == tenant)
            .is_none_or(|t| t.push.enabled);
        if on && push_on && sender == Sender::Dingsync {
            tracing::warn!(
                event = "config.warning",
                tenant,
                detail = "announcement.mode = \"always\" while JeecgBoot's own DingTalk integration is on for this tenant (sys_third_app_config status = 1): JeecgBoot sends every published announcement too, so each notice arrives twice; use \"auto\", or switch JeecgBoot's row off",
                "configuration warning"
            );
        }
    }
}

/// The announcement job: publish (send_status 1) sends, revoke (2) recalls.
pub async fn announce_job(ctx: &JobCtx<'_>, id: &str) -> JobOutcome {
    outcome(announce(ctx, id).await)
}

fn is_live(announcement: &Announcement) -> bool {
    announcement.send_status.as_deref() == Some("1")
        && announcement.del_flag.as_deref() != Some("1")
}

/// How long ago an announcement was sent: its `send_time` (else `create_time`), a
/// wall-clock time JeecgBoot wrote without a zone, read in `zone` (`daemon.timezone`, the
/// zone JeecgBoot's server runs in). `None` when both are NULL (or unreadable): the age is
/// unknown. A time in the future is age zero.
pub fn announcement_age(
    announcement: &Announcement,
    zone: chrono_tz::Tz,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<Duration> {
    use chrono::TimeZone;
    let text = [&announcement.send_time, &announcement.create_time]
        .into_iter()
        .flatten()
        .map(|t| t.trim())
        .find(|t| !t.is_empty())?;
    let naive = ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d"]
        .iter()
        .find_map(|format| {
            chrono::NaiveDateTime::parse_from_str(text, format)
                .ok()
                .or_else(|| {
                    chrono::NaiveDate::parse_from_str(text, format)
                        .ok()
                        .and_then(|d| d.and_hms_opt(0, 0, 0))
                })
        })?;
    let sent = zone.from_local_datetime(&naive).earliest()?;
    Some(
        (now - sent.with_timezone(&chrono::Utc))
            .to_std()
            .unwrap_or_default(),
    )
}

/// Whether a row of tenant `row` belongs to the job's tenant (tenant 0, alone, owns all).
fn owns(tenant: crate::config::TenantId, row: crate::config::TenantId) -> bool {
    tenant == 0 || tenant == row
}

/// The delivery chunk that marks an announcement dingsync decided not to send, so that the
/// decision is logged once however often its job runs (real chunks count from 0).
const SKIP_MARK: i64 = -1;

/// Logs (once per announcement) why it is not sent, and records that it was said.
async fn skip(
    ctx: &JobCtx<'_>,
    id: &str,
    event: &'static str,
    reason: &str,
) -> Result<JobOutcome, MsgError> {
    let store = ctx.store;
    let said = store
        .deliveries(ctx.tenant.id, SOURCE_ANNOUNCEMENT, id)
        .await?
        .iter()
        .any(|d| d.chunk == SKIP_MARK);
    if !said {
        match event {
            "announce.skipped_stale" => tracing::warn!(
                event = "announce.skipped_stale",
                tenant = ctx.tenant.id,
                id,
                reason,
                "announcement too old to send; not sent"
            ),
            _ => tracing::warn!(
                event = "announce.skipped",
                tenant = ctx.tenant.id,
                id,
                reason,
                "announcement not sent"
            ),
        }
        store
            .delivery_begin(ctx.tenant.id, SOURCE_ANNOUNCEMENT, id, SKIP_MARK, "{}")
            .await?;
        if let Some(row) = store
            .deliveries(ctx.tenant.id, SOURCE_ANNOUNCEMENT, id)
            .await?
            .into_iter()
            .find(|d| d.chunk == SKIP_MARK)
        {
            store.delivery_state(row.id, "skipped").await?;
        }
    }
    Ok(JobOutcome::Done(Summary::default()))
}

async fn announce(ctx: &JobCtx<'_>, id: &str) -> Result<JobOutcome, MsgError> {
    let store = ctx.store;
    let Some(announcement) = store.load_announcement(id).await? else {
        return Ok(JobOutcome::Done(Summary::default()));
    };
    let off = crate::sync::run::switched_off(ctx.tenant, crate::sync::model::Direction::Push);
    if !owns(ctx.tenant.id, announcement.tenant_id) || off.is_some() {
        return Ok(JobOutcome::Done(Summary::default()));
    }
    // A revoke recalls what dingsync sent, whoever sends announcements now (it touches only
    // dingsync's own deliveries; JeecgBoot recalls its own).
    if announcement.send_status.as_deref() == Some("2") {
        return recall_all(ctx, SOURCE_ANNOUNCEMENT, id).await;
    }
    if !is_live(&announcement) {
        return Ok(JobOutcome::Done(Summary::default()));
    }
    let deliveries = store
        .deliveries(ctx.tenant.id, SOURCE_ANNOUNCEMENT, id)
        .await?;
    let started = deliveries.iter().any(|d| d.chunk >= 0);
    // JeecgBoot sends (and recalls) this tenant's announcements itself, or nobody does: read
    // when the announcement is first handled.
    if !started && left_to_its_sender(ctx, &announcement, id).await? {
        return Ok(JobOutcome::Done(Summary::default()));
    }
    // Too old to send (a restored backup, an imported table), unless its sending began.
    if let Some(reason) = too_old(ctx, &announcement).filter(|_| !started) {
        return skip(ctx, id, "announce.skipped_stale", &reason).await;
    }
    let userids = match audience(ctx, &announcement, id).await? {
        Audience::All => None,
        Audience::Users(userids) => Some(userids),
        Audience::Skip(reason) => return skip(ctx, id, "announce.skipped", &reason).await,
    };
    deliver_announcement(ctx, &announcement, id, userids.as_deref()).await
}

/// Whether another sender has this announcement: JeecgBoot (its `sys_third_app_config` row
/// on), nobody (`announcement.mode = never`), or JeecgBoot already did (its task id in
/// `dt_task_id`, none of dingsync's): then it is never sent by dingsync, whatever the row
/// says now.
async fn left_to_its_sender(
    ctx: &JobCtx<'_>,
    announcement: &Announcement,
    id: &str,
) -> Result<bool, MsgError> {
    let sender = senders(ctx.config, ctx.store, &[ctx.tenant.id])
        .await?
        .first()
        .map_or(Sender::Dingsync, |(_, sender, _)| *sender);
    let sent_by_jeecgboot = announcement
        .dt_task_id
        .as_deref()
        .is_some_and(|t| !t.trim().is_empty());
    let theirs = sender != Sender::Dingsync || sent_by_jeecgboot;
    if theirs {
        tracing::debug!(event = "announce.not_ours", tenant = ctx.tenant.id, id, sender = ?sender, sent_by_jeecgboot, "announcement left to its sender");
    }
    Ok(theirs)
}

/// Why the announcement is too old to send (`announcement.max_age`), if it is.
fn too_old(ctx: &JobCtx<'_>, announcement: &Announcement) -> Option<String> {
    let max_age = ctx.config.announcement.max_age;
    let age = announcement_age(announcement, ctx.config.daemon.timezone, chrono::Utc::now())?;
    (age > max_age).then(|| {
        format!(
            "sent {} ago, more than announcement.max_age = {}",
            humantime::format_duration(Duration::from_secs(age.as_secs())),
            humantime::format_duration(max_age)
        )
    })
}

/// The tenant's DingTalk userids by local user id (its link rows).
async fn linked_userids(ctx: &JobCtx<'_>) -> Result<HashMap<String, String>, MsgError> {
    let links = ctx.store.links(ctx.tenant.id).await?;
    Ok(links.into_iter().map(|l| (l.user_id, l.userid)).collect())
}

/// Who an announcement goes to.
enum Audience {
    /// Everyone (`msg_type` ALL).
    All,
    /// These DingTalk userids (`msg_type` USER: its linked `user_ids`).
    Users(Vec<String>),
    /// Nobody, for this reason.
    Skip(String),
}

/// The announcement's audience; recipients without a DingTalk link are left out (warned).
async fn audience(
    ctx: &JobCtx<'_>,
    announcement: &Announcement,
    id: &str,
) -> Result<Audience, MsgError> {
    match announcement.msg_type.as_deref().map(str::trim) {
        Some("ALL") => return Ok(Audience::All),
        Some("USER") => {}
        other => {
            return Ok(Audience::Skip(format!(
                "msg_type is {other:?}; only ALL (everyone) and USER (its user_ids) are sent"
            )))
        }
    }
    let links = linked_userids(ctx).await?;
    let (mut userids, mut unlinked) = (Vec::new(), Vec::new());
    for user in split(announcement.user_ids.as_deref()) {
        match links.get(&user) {
            Some(userid) if !userids.contains(userid) => userids.push(userid.clone()),
            Some(_) => {}
            None => unlinked.push(user),
        }
    }
    if !unlinked.is_empty() {
        let users = ctx.store.load_users(0).await?;
        let names: Vec<String> = unlinked
            .iter()
            .map(|id| {
                users
                    .iter()
                    .find(|u| &u.id == id)
                    .map_or(id.clone(), |u| u.username.clone())
            })
            .collect();
        tracing::warn!(event = "announce.unlinked_recipients", tenant = ctx.tenant.id, id, count = names.len(), users = %names.join(","), "recipients without a DingTalk link are not sent to; the others are");
    }
    if userids.is_empty() {
        return Ok(Audience::Skip(
            "none of its user_ids is linked to DingTalk".into(),
        ));
    }
    Ok(Audience::Users(userids))
}

/// Sends the announcement to `userids` (everyone when `None`) in chunks, records JeecgBoot's
/// task id, and collects DingTalk's results.
async fn deliver_announcement(
    ctx: &JobCtx<'_>,
    announcement: &Announcement,
    id: &str,
    userids: Option<&[String]>,
) -> Result<JobOutcome, MsgError> {
    let store = ctx.store;
    let message = announcement_message(announcement, &ctx.config.announcement.base_url);
    let chunks = chunks(userids.is_none(), userids.unwrap_or_default(), &[]);
    let Some(tasks) = send_chunks(ctx, SOURCE_ANNOUNCEMENT, id, &message, &chunks).await? else {
        // Revoked while sending: the next run recalls what went out.
        return Ok(JobOutcome::Poll {
            delay: Duration::ZERO,
            reason: "revoked while sending".into(),
        });
    };
    if let (Some(first), true) = (
        tasks.first(),
        announcement.dt_task_id.as_deref().is_none_or(str::is_empty),
    ) {
        store.set_announcement_task(id, *first).await?;
    }
    let deliveries = store
        .deliveries(ctx.tenant.id, SOURCE_ANNOUNCEMENT, id)
        .await?;
    if collect_results(ctx, &deliveries).await? {
        return Ok(JobOutcome::Poll {
            delay: RESULT_WAIT,
            reason: "waiting for DingTalk to finish the send".into(),
        });
    }
    Ok(JobOutcome::Done(Summary::default()))
}

fn split(list: Option<&str>) -> Vec<String> {
    list.unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The outbox job: delivers a `dingsync_outbox` row and writes its outcome back on the row.
pub async fn outbox_job(ctx: &JobCtx<'_>, id: &str) -> JobOutcome {
    outcome(outbox(ctx, id).await)
}

async fn outbox(ctx: &JobCtx<'_>, id: &str) -> Result<JobOutcome, MsgError> {
    let store = ctx.store;
    let Some(row) = (match id.parse::<i64>() {
        Ok(n) => store.load_outbox(n).await?,
        Err(_) => None,
    }) else {
        return Ok(JobOutcome::Done(Summary::default()));
    };
    if row.status != "pending" || !owns(ctx.tenant.id, row.tenant_id) {
        return Ok(JobOutcome::Done(Summary::default()));
    }
    let checked = refused(&ctx.config.outbox, &row).map_or_else(|| outbox_message(&row), Err);
    let message = match checked {
        Ok(message) => message,
        Err(reason) => return fail_row(ctx, row.id, &reason.to_string()).await,
    };
    let (userids, unlinked) = outbox_userids(ctx, &row).await?;
    let Ok(dept_ids) = split(row.to_dept_ids.as_deref())
        .iter()
        .map(|d| d.parse())
        .collect::<Result<Vec<i64>, _>>()
    else {
        let reason = "to_dept_ids must be DingTalk department ids (numbers)";
        return fail_row(ctx, row.id, reason).await;
    };
    let chunks = chunks(row.to_all == 1, &userids, &dept_ids);
    if chunks.is_empty() {
        let reason = format!("no recipient (unlinked usernames: {})", unlinked.join(","));
        return fail_row(ctx, row.id, &reason).await;
    }
    let source_id = row.id.to_string();
    let Some(tasks) = send_chunks(ctx, SOURCE_OUTBOX, &source_id, &message, &chunks).await? else {
        return Ok(JobOutcome::Done(Summary::default()));
    };
    let note = (!unlinked.is_empty()).then(|| {
        format!(
            "not linked to DingTalk, not sent to: {}",
            unlinked.join(",")
        )
    });
    let tasks: Vec<String> = tasks.iter().map(ToString::to_string).collect();
    store
        .outbox_finish(row.id, "sent", &tasks.join(","), note.as_deref())
        .await?;
    Ok(JobOutcome::Done(Summary::default()))
}

/// Why the outbox's guards refuse `row`: switched off, to everyone without
/// `outbox.allow_to_all`, more than `outbox.max_recipients` named.
fn refused(guard: &crate::config::OutboxConfig, row: &OutboxRow) -> Option<OutboxRefusal> {
    if !guard.enabled {
        return Some(OutboxRefusal::SwitchedOff);
    }
    if row.to_all == 1 && !guard.allow_to_all {
        return Some(OutboxRefusal::ToAll);
    }
    let named = [&row.to_userids, &row.to_usernames, &row.to_dept_ids]
        .iter()
        .map(|list| split(list.as_deref()).len())
        .sum::<usize>();
    (named > guard.max_recipients.get() as usize).then_some(OutboxRefusal::TooManyRecipients {
        named,
        max: guard.max_recipients.get(),
    })
}

/// Why an outbox row is failed without a call (its `error` column says it).
#[derive(Debug, thiserror::Error)]
enum OutboxRefusal {
    /// `[outbox] enabled = false`.
    #[error("the outbox is switched off (outbox.enabled = false)")]
    SwitchedOff,
    /// `to_all` without `[outbox] allow_to_all`.
    #[error("to_all is refused: a message to everyone needs outbox.allow_to_all = true")]
    ToAll,
    /// More recipients named than `[outbox] max_recipients`.
    #[error("{named} recipients, more than outbox.max_recipients = {max}")]
    TooManyRecipients {
        /// Userids, usernames and department ids named.
        named: usize,
        /// The limit.
        max: u32,
    },
    /// `message` is not JSON.
    #[error("message is not a DingTalk message: {0}")]
    NotJson(String),
    /// `message` is JSON but not a work notice.
    #[error("message is not a DingTalk message: {0}")]
    NotAMessage(crate::dingtalk::types::MessageShapeError),
    /// The message, encoded, is larger than DingTalk takes (bytes).
    #[error("message is {0} bytes; DingTalk allows 2048")]
    TooLarge(usize),
}

/// The row's message, if DingTalk would take it.
fn outbox_message(row: &OutboxRow) -> Result<Message, OutboxRefusal> {
    let value: serde_json::Value = serde_json::from_str(&row.message)
        .map_err(|error| OutboxRefusal::NotJson(error.to_string()))?;
    let message = Message::from_json(value).map_err(OutboxRefusal::NotAMessage)?;
    if message.encoded_len() > crate::dingtalk::api::MAX_MESSAGE_BYTES {
        return Err(OutboxRefusal::TooLarge(message.encoded_len()));
    }
    Ok(message)
}

/// The row's DingTalk userids, its usernames resolved through their links; and the
/// usernames without a link.
async fn outbox_userids(
    ctx: &JobCtx<'_>,
    row: &OutboxRow,
) -> Result<(Vec<String>, Vec<String>), MsgError> {
    let mut userids = split(row.to_userids.as_deref());
    let usernames = split(row.to_usernames.as_deref());
    let mut unlinked = Vec::new();
    if usernames.is_empty() {
        return Ok((userids, unlinked));
    }
    let users = ctx.store.load_users(0).await?;
    let links = linked_userids(ctx).await?;
    for name in usernames {
        match users
            .iter()
            .find(|u| u.username == name)
            .and_then(|u| links.get(&u.id))
        {
            Some(userid) => userids.push(userid.clone()),
            None => unlinked.push(name),
        }
    }
    Ok((userids, unlinked))
}

async fn fail_row(ctx: &JobCtx<'_>, id: i64, error: &str) -> Result<JobOutcome, MsgError> {
    tracing::warn!(
        event = "outbox.failed",
        tenant = ctx.tenant.id,
        id,
        error,
        "outbox row cannot be delivered"
    );
    ctx.store
        .outbox_finish(id, "failed", "", Some(error))
        .await?;
    Ok(JobOutcome::Done(Summary::default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn announcement(summary: &str, content: &str) -> Announcement {
        Announcement {
            id: "a1".into(),
            title: Some("放假通知".into()),
            summary: Some(summary.into()),
            content: Some(content.into()),
            ..Announcement::default()
        }
    }

    #[test]
    fn the_card_follows_jeecgboot() {
        let base = url::Url::parse("https://oa.example.com/jeecg-boot/").unwrap();
        let card = announcement_message(&announcement("国庆放假七天", "<p>正文</p>"), &base);
        let body = &card.as_json()["action_card"];
        assert_eq!(body["markdown"], "### 放假通知\n国庆放假七天");
        assert_eq!(body["single_title"], "详情");
        assert_eq!(
            body["single_url"],
            "https://oa.example.com/jeecg-boot/sys/annountCement/show/a1"
        );
        let json = announcement_message(&announcement("{\"k\":1}", "正文"), &base);
        assert_eq!(
            json.as_json()["action_card"]["markdown"],
            "### 放假通知\n正文"
        );
        assert_eq!(
            announcement_message(&announcement("", ""), &base).as_json()["action_card"]["markdown"],
            "### 放假通知\n空"
        );
        let long = announcement_message(&announcement(&"长".repeat(3000), ""), &base);
        assert!(long.encoded_len() <= 2048);
    }

    #[test]
    fn an_announcements_age_is_read_in_the_configured_zone() {
        use chrono::TimeZone;
        let at = |send: Option<&str>, create: Option<&str>| Announcement {
            send_time: send.map(str::to_string),
            create_time: create.map(str::to_string),
            ..Announcement::default()
        };
        // 2026-12-02 10:00 in Beijing is 02:00 UTC.
        let now = chrono::Utc.with_ymd_and_hms(2026, 12, 2, 2, 0, 0).unwrap();
        let shanghai = chrono_tz::Asia::Shanghai;
        let hours =
            |a: &Announcement, zone| announcement_age(a, zone, now).map(|d| d.as_secs() / 3600);
        assert_eq!(
            hours(&at(Some("2026-12-02 09:00:00"), None), shanghai),
            Some(1)
        );
        // Read as UTC, the same wall-clock time would look 8 hours younger: in the future.
        assert_eq!(
            hours(&at(Some("2026-12-02 09:00:00"), None), chrono_tz::UTC),
            Some(0)
        );
        assert_eq!(
            hours(&at(Some("2026-12-01 02:30:00.5"), None), shanghai),
            Some(31)
        );
        assert_eq!(
            hours(&at(None, Some("2025-10-28T10:00:00")), shanghai),
            Some(400 * 24)
        );
        assert_eq!(hours(&at(None, None), shanghai), None, "unknown: sent");
        assert_eq!(hours(&at(Some("not a time"), None), shanghai), None);
    }

    #[test]
    fn chunks_respect_dingtalks_limits() {
        let ids: Vec<String> = (0..250).map(|n| format!("u{n}")).collect();
        let chunked = chunks(false, &ids, &(1..=25).collect::<Vec<_>>());
        let sizes: Vec<(usize, usize)> = chunked
            .iter()
            .map(|c| (c.userids.len(), c.dept_ids.len()))
            .collect();
        assert_eq!(sizes, vec![(100, 0), (100, 0), (50, 0), (0, 20), (0, 5)]);
        assert_eq!(chunks(true, &ids, &[]).len(), 1);
    }
}

//! JeecgBoot's rows, read and written as JeecgBoot would: users with memberships and position
//! names (three queries, never one per user), the department tree, `sys_third_account`
//! links, `sys_depart.ding_identifier`, new departments with a unique `org_code`, new users
//! with a salt and JeecgBoot's password hash, `sys_announcement.dt_task_id`, and DingTalk apps
//! from `sys_third_app_config`. Every write is one transaction marked as dingsync's, so the
//! change-log triggers do not echo it.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, PoisonError};

use crate::config::{Backend, TenantId};
use crate::jeecg::{
    orgcode, password, AppConfigRow, Link, LocalDept, LocalUser, NewDept, NewUser, UserUpdate,
    THIRD_TYPE_DINGTALK,
};
use crate::secret::Secret;

use super::state::Snapshot;
use super::tx::{Arg, Tx};
use super::{Store, StoreError, StoreResult};

/// A tenant's departments (posts and deleted ones included) and their snapshots, as one read
/// found them ([`Store::dept_rows`]).
#[derive(Debug, Default)]
pub struct DeptRows {
    /// The departments, by `org_code`.
    pub depts: Vec<LocalDept>,
    /// Their snapshots (with their sync bases).
    pub snapshots: Vec<Snapshot>,
    /// An index over `depts`: what a job needs of the tree, found without walking it.
    pub index: crate::jeecg::DeptIndex,
}

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

/// A snapshot to write: an entity's DingTalk id and its sync base (JSON).
#[derive(Clone, Debug)]
pub struct SnapshotWrite {
    /// Tenant.
    pub tenant: TenantId,
    /// `user` or `dept`.
    pub entity: &'static str,
    /// JeecgBoot id.
    pub local_id: String,
    /// DingTalk userid or department id.
    pub ding_id: String,
    /// The base, as JSON.
    pub base: String,
}

/// What [`Store::save_link`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkSaved {
    /// The tenant's link row is written.
    Written,
    /// Another tenant's row holds this DingTalk userid (JeecgBoot's unique key allows one):
    /// nothing was written; the link lives in dingsync's snapshot.
    HeldBy(TenantId),
}

/// A row of four nullable text columns around one integer.
type TextRow = (Option<String>, Option<String>, Option<String>, i64);

/// A `sys_user` row as [`Store::users_where`] reads it: id, username, realname, phone,
/// telephone, work_no, email, status, del_flag.
type UserRow = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
    i64,
);

/// Which users [`Store::users_where`] reads.
#[derive(Clone, Copy)]
enum Users<'a> {
    /// Every user of the tenant.
    All,
    /// One user by id (any tenant).
    One(&'a str),
    /// A slice in id order: after this id, at most this many.
    After(Option<&'a str>, usize),
    /// Those whose column holds one of the values.
    Matching(&'a [(&'static str, Vec<&'a str>)]),
}

/// The head of an INSERT of `sys_user` rows as JeecgBoot writes them (active, not deleted,
/// an ordinary user), each row [`USER_ROW`] with [`user_values`].
pub(super) const USER_INSERT: &str =
    "INSERT INTO sys_user (id, username, realname, password, salt, email, phone, status, \
     del_flag, work_no, telephone, create_by, create_time, user_identity, sort) VALUES";
/// One row of [`USER_INSERT`].
pub(super) const USER_ROW: &str =
    "(?, ?, ?, ?, ?, ?, ?, 1, 0, ?, ?, ?, CURRENT_TIMESTAMP, 1, 1000)";

/// The bound values of one [`USER_ROW`].
pub(super) fn user_values(
    id: &str,
    user: &NewUser,
    hash: String,
    salt: String,
) -> Vec<Option<String>> {
    vec![
        Some(id.to_string()),
        Some(user.username.clone()),
        Some(user.realname.clone()),
        Some(hash),
        Some(salt),
        user.email.clone(),
        user.phone.clone(),
        user.work_no.clone(),
        user.telephone.clone(),
        Some(CREATED_BY.into()),
    ]
}

/// `?, ?, ...` for an `IN` list of `n`. A statement with such a list is not kept prepared
/// (`.persistent(false)`): its text differs with the list's length, and on PostgreSQL a
/// generic plan made while a table was small would go on scanning it as a pull fills it.
pub(crate) fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// The join that keeps the users `u` of `tenant` (active members; every user for 0).
fn member_join(tenant: TenantId) -> String {
    if tenant == 0 {
        String::new()
    } else {
        format!(" JOIN sys_user_tenant t ON t.user_id = u.id AND t.tenant_id = {tenant} AND t.status = '1'")
    }
}

/// [`Store::claimer_ids`]'s statements with their binds: link rows, user snapshots, users
/// by username or phone. Three, not one `UNION`: MariaDB refuses a `UNION` of columns whose
/// collations differ (JeecgBoot's tables and ours may).
fn claimer_statements<'a>(
    tenant: TenantId,
    userids: &[&'a str],
    phones: &[&'a str],
) -> Vec<(String, Vec<&'a str>)> {
    let mut statements = Vec::new();
    if !userids.is_empty() {
        let list = placeholders(userids.len());
        let link_tenant = if tenant == 0 {
            String::new()
        } else {
            format!(" AND tenant_id = {tenant}")
        };
        statements.push(format!(
            "SELECT sys_user_id FROM sys_third_account WHERE third_type = '{THIRD_TYPE_DINGTALK}' \
             AND third_user_id IN ({list}){link_tenant} AND sys_user_id IS NOT NULL"
        ));
        statements.push(format!(
            "SELECT local_id FROM dingsync_snapshot WHERE tenant_id = {tenant} AND entity = '{}' \
             AND ding_id IN ({list})",
            crate::sync::model::entity::USER
        ));
    }
    let mut statements: Vec<_> = statements
        .into_iter()
        .map(|sql| (sql, userids.to_vec()))
        .collect();
    // One indexed lookup per column, as in `users_where`.
    let (mut parts, mut binds) = (Vec::new(), Vec::new());
    for (column, values) in [("username", userids), ("phone", phones)] {
        if !values.is_empty() {
            parts.push(format!(
                "SELECT u.id FROM sys_user u{} WHERE u.{column} IN ({})",
                member_join(tenant),
                placeholders(values.len())
            ));
            binds.extend_from_slice(values);
        }
    }
    if !parts.is_empty() {
        statements.push((parts.join(" UNION "), binds));
    }
    statements
}
/// An integer then three nullable text columns.
/// `(tenant_id, agent_id, client_id, client_secret, status)` of `sys_third_app_config`.
type AppConfigTuple = (i64, Option<String>, Option<String>, Option<String>, i64);

fn blank_to_none(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

impl Store {
    /// Statements that mark a transaction as dingsync's (SQLite only; see `schema`).
    fn writer_marks(&self) -> Option<(&'static str, &'static str)> {
        (self.backend() == Backend::Sqlite).then_some((
            "INSERT INTO dingsync_writer (marker) VALUES (1)",
            "DELETE FROM dingsync_writer",
        ))
    }

    /// Every department of `tenant` (all of them for tenant 0), posts and deleted ones
    /// included; callers filter with `is_post` / `is_deleted`.
    pub async fn load_departments(&self, tenant: TenantId) -> StoreResult<Vec<LocalDept>> {
        self.departments(tenant, &[]).await
    }

    /// `tenant`'s departments and their snapshots. Kept in memory between calls while the
    /// department tree's version (bumped by triggers on every write to `sys_depart` or to a
    /// department's snapshot, by anyone) stays the same: a job reads one indexed row instead
    /// of the whole tree. The version is read before the rows, so rows newer than it are
    /// simply read again next time.
    pub async fn dept_rows(&self, tenant: TenantId) -> StoreResult<Arc<DeptRows>> {
        let sql = "SELECT version FROM dingsync_version WHERE name = 'depts'";
        let version: Option<i64> = crate::on_pool!(self, |pool| sqlx::query_scalar(sql)
            .fetch_optional(pool)
            .await?);
        let cached = |version: i64| {
            let trees = self.trees.lock().unwrap_or_else(PoisonError::into_inner);
            trees
                .get(&tenant)
                .filter(|(at, _)| *at == version)
                .map(|(_, rows)| Arc::clone(rows))
        };
        if let Some(rows) = version.and_then(cached) {
            return Ok(rows);
        }
        let depts = self.load_departments(tenant).await?;
        let rows = Arc::new(DeptRows {
            index: crate::jeecg::DeptIndex::new(&depts),
            depts,
            snapshots: self
                .snapshots(tenant, crate::sync::model::entity::DEPT)
                .await?,
        });
        if let Some(version) = version {
            self.trees
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(tenant, (version, Arc::clone(&rows)));
        }
        Ok(rows)
    }

    /// The departments of `tenant` (any for tenant 0) among `ids`: what one user's job
    /// needs, without reading the whole table.
    pub async fn departments_by_id(
        &self,
        tenant: TenantId,
        ids: &[String],
    ) -> StoreResult<Vec<LocalDept>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.departments(tenant, ids).await
    }

    /// `load_departments`, restricted to `ids` unless empty.
    async fn departments(&self, tenant: TenantId, ids: &[String]) -> StoreResult<Vec<LocalDept>> {
        let mut conditions = Vec::new();
        if tenant != 0 {
            conditions.push("tenant_id = ?".to_string());
        }
        if !ids.is_empty() {
            conditions.push(format!("id IN ({})", vec!["?"; ids.len()].join(", ")));
        }
        let filter = if conditions.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conditions.join(" AND "))
        };
        let sql = format!(
            "SELECT id, parent_id, depart_name, {order}, {category}, org_code, del_flag, ding_identifier, {tenant_col} \
             FROM sys_depart{filter} ORDER BY org_code",
            order = self.int("COALESCE(depart_order, 0)"),
            category = self.text("org_category"),
            tenant_col = self.int("COALESCE(tenant_id, 0)"),
        );
        let sql = self.sql(&sql);
        type Row = (
            String,
            Option<String>,
            String,
            i64,
            String,
            String,
            Option<String>,
            Option<String>,
            i64,
        );
        let rows: Vec<Row> = crate::on_pool!(self, |pool| {
            let mut query = sqlx::query_as::<_, Row>(&sql);
            if tenant != 0 {
                query = query.bind(tenant);
            }
            for id in ids {
                query = query.bind(id);
            }
            query.fetch_all(pool).await?
        });
        Ok(rows
            .into_iter()
            .map(
                |(id, parent, name, order, category, code, del_flag, ding, tenant_id)| LocalDept {
                    id,
                    parent_id: blank_to_none(parent),
                    name,
                    order,
                    org_category: category,
                    org_code: code,
                    del_flag: del_flag.unwrap_or_default(),
                    ding_identifier: ding.and_then(|d| d.trim().parse().ok()),
                    tenant_id,
                },
            )
            .collect())
    }

    /// Every user of `tenant` (tenant 0: all; tenant T: those `sys_user_tenant` ties to T with
    /// status 1), with department ids and position names.
    pub async fn load_users(&self, tenant: TenantId) -> StoreResult<Vec<LocalUser>> {
        self.users_where(tenant, Users::All).await
    }

    /// One user by `sys_user.id`, if it exists.
    pub async fn load_user(&self, id: &str) -> StoreResult<Option<LocalUser>> {
        Ok(self
            .users_where(0, Users::One(id))
            .await?
            .into_iter()
            .next())
    }

    /// Up to `limit` users of `tenant` whose `sys_user.id` sorts after `after` (from the
    /// first when `None`), in id order: a run reads its users a slice at a time.
    pub async fn user_slice(
        &self,
        tenant: TenantId,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<LocalUser>> {
        self.users_where(tenant, Users::After(after, limit)).await
    }

    /// The users of `tenant` whose column holds one of the values given for it (`columns`:
    /// `("phone", [...])`, ...): the local users a slice of DingTalk users can match or clash
    /// with. Columns are named by the caller, never by input.
    pub async fn users_matching(
        &self,
        tenant: TenantId,
        columns: &[(&'static str, Vec<&str>)],
    ) -> StoreResult<Vec<LocalUser>> {
        self.users_where(tenant, Users::Matching(columns)).await
    }

    async fn users_where(&self, tenant: TenantId, which: Users<'_>) -> StoreResult<Vec<LocalUser>> {
        let mut binds: Vec<&str> = Vec::new();
        let Some(users_sql) = self.users_sql(tenant, which, &mut binds) else {
            return Ok(Vec::new());
        };
        let users_sql = self.sql(&users_sql);
        let rows: Vec<UserRow> = crate::on_pool!(self, |pool| {
            let mut query = sqlx::query_as::<_, UserRow>(&users_sql).persistent(false);
            for bind in &binds {
                query = query.bind(*bind);
            }
            query.fetch_all(pool).await?
        });
        // Memberships and positions of exactly these users (of every user for `All`).
        let ids: Vec<&str> = match which {
            Users::All => Vec::new(),
            _ if rows.is_empty() => return Ok(Vec::new()),
            _ => rows.iter().map(|r| r.0.as_str()).collect(),
        };
        let (mut departs, mut titles) = self.memberships_of(&ids).await?;
        Ok(rows
            .into_iter()
            .map(
                |(id, username, realname, phone, telephone, work_no, email, status, del_flag)| {
                    LocalUser {
                        depart_ids: departs.remove(&id).unwrap_or_default(),
                        positions: titles.remove(&id).unwrap_or_default(),
                        id,
                        username: username.unwrap_or_default(),
                        realname: realname.unwrap_or_default(),
                        phone: blank_to_none(phone),
                        telephone: blank_to_none(telephone),
                        work_no: blank_to_none(work_no),
                        email: blank_to_none(email),
                        status,
                        del_flag,
                    }
                },
            )
            .collect())
    }

    /// The statement that reads `which` users of `tenant`, its binds pushed on `binds`;
    /// `None` when it would match nobody.
    fn users_sql<'a>(
        &self,
        tenant: TenantId,
        which: Users<'a>,
        binds: &mut Vec<&'a str>,
    ) -> Option<String> {
        // The tenant is a number: written into the statement, so that each part of a UNION
        // can name it.
        let head = format!(
            "SELECT u.id, u.username, u.realname, u.phone, u.telephone, u.work_no, u.email, {status}, {del} FROM sys_user u{join}",
            status = self.int("u.status"),
            del = self.int("COALESCE(u.del_flag, 0)"),
            join = member_join(tenant),
        );
        Some(match which {
            Users::All => format!("{head} ORDER BY u.username"),
            Users::One(id) => {
                binds.push(id);
                format!("{head} WHERE u.id = ?")
            }
            Users::After(Some(after), limit) => {
                binds.push(after);
                format!("{head} WHERE u.id > ? ORDER BY u.id LIMIT {limit}")
            }
            Users::After(None, limit) => format!("{head} ORDER BY u.id LIMIT {limit}"),
            Users::Matching(columns) => {
                // One indexed lookup per column, joined by UNION: PostgreSQL plans
                // `a IN (...) OR b IN (...)` over a thousand values, or a join with their
                // UNION, as a scan of the whole table (24 ms at 100,000 users, 4 ms this way).
                let parts: Vec<String> = columns
                    .iter()
                    .filter(|(_, values)| !values.is_empty())
                    .map(|(column, values)| {
                        binds.extend(values.iter().copied());
                        format!(
                            "{head} WHERE u.{column} IN ({})",
                            placeholders(values.len())
                        )
                    })
                    .collect();
                if parts.is_empty() {
                    return None;
                }
                format!("{} ORDER BY 1", parts.join(" UNION "))
            }
        })
    }

    /// The departments and position names of the users `ids` (of every user when empty),
    /// by user id.
    async fn memberships_of(
        &self,
        ids: &[&str],
    ) -> StoreResult<(BTreeMap<String, Vec<String>>, BTreeMap<String, Vec<String>>)> {
        let filter = |column: &str| {
            if ids.is_empty() {
                String::new()
            } else {
                format!(" WHERE {column} IN ({})", placeholders(ids.len()))
            }
        };
        let members_sql = self
            .sql(&format!(
                "SELECT user_id, dep_id FROM sys_user_depart{} ORDER BY user_id, dep_id",
                filter("user_id")
            ))
            .into_owned();
        let positions_sql = self
            .sql(&format!(
                "SELECT up.user_id, p.name FROM sys_user_position up JOIN sys_position p ON p.id = up.position_id{} ORDER BY up.user_id, p.name",
                filter("up.user_id")
            ))
            .into_owned();
        let (members, positions) = crate::on_pool!(self, |pool| {
            let mut members = sqlx::query_as::<_, (Option<String>, Option<String>)>(&members_sql)
                .persistent(false);
            let mut positions =
                sqlx::query_as::<_, (Option<String>, Option<String>)>(&positions_sql)
                    .persistent(false);
            for id in ids {
                members = members.bind(*id);
                positions = positions.bind(*id);
            }
            (
                members.fetch_all(pool).await?,
                positions.fetch_all(pool).await?,
            )
        });
        let mut departs: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (user, dept) in members {
            if let (Some(user), Some(dept)) = (user, dept) {
                departs.entry(user).or_default().push(dept);
            }
        }
        let mut titles: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (user, name) in positions {
            if let (Some(user), Some(name)) = (user, blank_to_none(name)) {
                titles.entry(user).or_default().push(name);
            }
        }
        Ok((departs, titles))
    }

    /// DingTalk links of `tenant` (all tenants for 0).
    pub async fn links(&self, tenant: TenantId) -> StoreResult<Vec<Link>> {
        self.links_where(tenant, &[]).await
    }

    /// The DingTalk link of one user in `tenant` (any tenant for 0).
    pub async fn link_of(&self, tenant: TenantId, user_id: &str) -> StoreResult<Option<Link>> {
        Ok(self
            .links_where(tenant, &[user_id])
            .await?
            .into_iter()
            .next())
    }

    /// The DingTalk links of `user_ids` in `tenant` (any tenant for 0).
    pub async fn links_of(&self, tenant: TenantId, user_ids: &[&str]) -> StoreResult<Vec<Link>> {
        if user_ids.is_empty() {
            return Ok(Vec::new());
        }
        self.links_where(tenant, user_ids).await
    }

    /// The DingTalk links of the DingTalk users `userids` in `tenant` (any tenant for 0).
    pub async fn links_to(&self, tenant: TenantId, userids: &[&str]) -> StoreResult<Vec<Link>> {
        if userids.is_empty() {
            return Ok(Vec::new());
        }
        self.links_by("third_user_id", tenant, userids).await
    }

    /// The local ids that may claim the DingTalk users `userids` (with `phones`, their
    /// mobiles in both forms) in `tenant`, each once: linked to them by a link row (of the
    /// tenant; of any for 0) or a user snapshot, or a user of the tenant whose phone is one
    /// of `phones` or whose username is one of `userids`. Ids only: a push's slice already
    /// holds nearly all of them, and reads only the others' rows.
    pub async fn claimer_ids(
        &self,
        tenant: TenantId,
        userids: &[&str],
        phones: &[&str],
    ) -> StoreResult<Vec<String>> {
        let mut ids: Vec<String> = Vec::new();
        for (sql, binds) in claimer_statements(tenant, userids, phones) {
            let sql = self.sql(&sql);
            let found: Vec<String> = crate::on_pool!(self, |pool| {
                let mut query = sqlx::query_scalar(&sql).persistent(false);
                for bind in &binds {
                    query = query.bind(*bind);
                }
                query.fetch_all(pool).await?
            });
            ids.extend(found);
        }
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    /// Links of `tenant` (all for 0), of `user_ids` only unless empty (on our index).
    async fn links_where(&self, tenant: TenantId, user_ids: &[&str]) -> StoreResult<Vec<Link>> {
        self.links_by("sys_user_id", tenant, user_ids).await
    }

    /// Links of `tenant` (all for 0) whose `column` is one of `values` (all when empty).
    async fn links_by(
        &self,
        column: &'static str,
        tenant: TenantId,
        user_ids: &[&str],
    ) -> StoreResult<Vec<Link>> {
        let mut filter = String::new();
        if !user_ids.is_empty() {
            filter.push_str(&format!(
                " AND {column} IN ({})",
                placeholders(user_ids.len())
            ));
        }
        if tenant != 0 {
            filter.push_str(" AND tenant_id = ?");
        }
        let sql = format!(
            "SELECT sys_user_id, third_user_id, third_user_uuid, {t} FROM sys_third_account WHERE third_type = ?{filter} ORDER BY sys_user_id, id",
            t = self.int("COALESCE(tenant_id, 0)")
        );
        let sql = self.sql(&sql);
        let rows: Vec<TextRow> = crate::on_pool!(self, |pool| {
            let mut query = sqlx::query_as(&sql)
                .persistent(false)
                .bind(THIRD_TYPE_DINGTALK);
            for user_id in user_ids {
                query = query.bind(*user_id);
            }
            if tenant != 0 {
                query = query.bind(tenant);
            }
            query.fetch_all(pool).await?
        });
        Ok(rows
            .into_iter()
            .filter_map(|(user, userid, unionid, tenant_id)| {
                Some(Link {
                    user_id: user?,
                    userid: blank_to_none(userid)?,
                    unionid: blank_to_none(unionid),
                    tenant_id,
                })
            })
            .collect())
    }

    /// Records that `link.user_id` is `link.userid` in DingTalk (JeecgBoot's "已同步钉钉"), in
    /// `link.tenant_id`: the tenant's row for that DingTalk userid, else the tenant's row of
    /// that user, is updated — never blanking a column JeecgBoot filled (`third_user_uuid`,
    /// `realname`, `avatar`) and never another tenant's row; else a row is inserted. JeecgBoot's
    /// unique key `(third_type, third_user_id)` allows one row per userid across tenants: when
    /// another tenant's row holds it, nothing is written and [`LinkSaved::HeldBy`] says whose.
    pub async fn save_link(&self, link: &Link, realname: &str) -> StoreResult<LinkSaved> {
        self.save_link_and_base(link, realname, None).await
    }

    /// [`Store::save_link`] and, in the same transaction, the user's snapshot with its base:
    /// the sync base is written with the link it belongs to, or not at all.
    pub async fn save_link_and_base(
        &self,
        link: &Link,
        realname: &str,
        snapshot: Option<&SnapshotWrite>,
    ) -> StoreResult<LinkSaved> {
        let mut tx = self.begin_marked().await?;
        let (row, other) = self.link_row_of(&mut tx, link).await?;
        let saved = match (row, other) {
            // Another tenant's row holds the userid: moving ours onto it would break the
            // unique key, and that row is not ours to change.
            (_, Some(tenant)) => LinkSaved::HeldBy(tenant),
            (Some(id), None) => {
                self.update_link_row(&mut tx, link, realname, &id).await?;
                LinkSaved::Written
            }
            (None, None) => {
                self.insert_link_row(&mut tx, link, realname).await?;
                LinkSaved::Written
            }
        };
        if let Some(snapshot) = snapshot {
            self.put_snapshot_in(&mut tx, snapshot).await?;
        }
        self.commit_marked(tx).await?;
        Ok(saved)
    }

    /// The tenant's row for `link`'s DingTalk userid, else the tenant's row of its user; and
    /// the tenant of another tenant's row holding the userid, if one does. Each lookup on an
    /// index (an OR of them would scan the table).
    async fn link_row_of(
        &self,
        tx: &mut Tx,
        link: &Link,
    ) -> StoreResult<(Option<String>, Option<i64>)> {
        let by_userid = format!(
            "SELECT id, {} FROM sys_third_account WHERE third_type = ? AND third_user_id = ?",
            self.int("COALESCE(tenant_id, 0)")
        );
        let by_userid = self.sql(&by_userid);
        let by_user = self.sql(
            "SELECT id FROM sys_third_account WHERE sys_user_id = ? AND third_type = ? AND COALESCE(tenant_id, 0) = ?",
        );
        let holders: Vec<(String, i64)> = tx
            .fetch_all(
                &by_userid,
                &[Arg::Text(THIRD_TYPE_DINGTALK), Arg::Text(&link.userid)],
            )
            .await?;
        // Tenant 0 stands alone and owns every row, whatever its tenant_id says.
        let ours = |tenant: i64| link.tenant_id == 0 || tenant == link.tenant_id;
        let mut row = holders
            .iter()
            .find(|(_, tenant)| ours(*tenant))
            .map(|(id, _)| id.clone());
        if row.is_none() {
            let args = [
                Arg::Text(&link.user_id),
                Arg::Text(THIRD_TYPE_DINGTALK),
                Arg::Int(link.tenant_id),
            ];
            row = tx.fetch_optional_scalar(&by_user, &args).await?;
        }
        let other = holders
            .iter()
            .find(|(_, tenant)| !ours(*tenant))
            .map(|(_, tenant)| *tenant);
        Ok((row, other))
    }

    /// Moves the link row `id` onto `link`, never blanking a column JeecgBoot filled.
    async fn update_link_row(
        &self,
        tx: &mut Tx,
        link: &Link,
        realname: &str,
        id: &str,
    ) -> StoreResult<()> {
        let update = self.sql(
            "UPDATE sys_third_account SET sys_user_id = ?, third_user_id = ?, \
             third_user_uuid = COALESCE(NULLIF(?, ''), third_user_uuid), realname = COALESCE(NULLIF(?, ''), realname), \
             update_by = ?, update_time = CURRENT_TIMESTAMP WHERE id = ?",
        );
        let args = [
            Arg::Text(&link.user_id),
            Arg::Text(&link.userid),
            Arg::Text(link.unionid.as_deref().unwrap_or_default()),
            Arg::Text(realname),
            Arg::Text(CREATED_BY),
            Arg::Text(id),
        ];
        tx.execute(&update, &args).await?;
        Ok(())
    }

    /// Inserts a link row for `link`.
    async fn insert_link_row(&self, tx: &mut Tx, link: &Link, realname: &str) -> StoreResult<()> {
        let insert = self.sql(
            "INSERT INTO sys_third_account (id, sys_user_id, status, del_flag, realname, tenant_id, third_user_uuid, third_user_id, \
             create_by, create_time, third_type) VALUES (?, ?, 1, 0, ?, ?, ?, ?, ?, CURRENT_TIMESTAMP, ?)",
        );
        let id = new_id();
        let args = [
            Arg::Text(&id),
            Arg::Text(&link.user_id),
            Arg::Text(realname),
            Arg::Int(link.tenant_id),
            Arg::OptText(link.unionid.as_deref()),
            Arg::Text(&link.userid),
            Arg::Text(CREATED_BY),
            Arg::Text(THIRD_TYPE_DINGTALK),
        ];
        tx.execute(&insert, &args).await?;
        Ok(())
    }

    /// Writes `snapshot` (with its base) in `tx`.
    async fn put_snapshot_in(&self, tx: &mut Tx, snapshot: &SnapshotWrite) -> StoreResult<()> {
        let hash = crate::sync::model::content_hash(&[&snapshot.base]);
        let args = [
            Arg::Int(snapshot.tenant),
            Arg::Text(snapshot.entity),
            Arg::Text(&snapshot.local_id),
            Arg::Text(&snapshot.ding_id),
            Arg::Text(&hash),
            Arg::Int(super::now_ms()),
            Arg::Text(&snapshot.base),
        ];
        tx.execute(&self.put_snapshot_sql(), &args).await?;
        Ok(())
    }

    /// Opens a transaction for writes marked as dingsync's (SQLite's marker row; elsewhere
    /// the session carries the marker).
    async fn begin_marked(&self) -> StoreResult<Tx> {
        let mut tx = self.begin_tx(self.begin_statement_for_writes()).await?;
        if let Some((mark, _)) = self.writer_marks() {
            tx.execute(mark, &[]).await?;
        }
        Ok(tx)
    }

    /// Takes the marker away (SQLite) and commits a transaction of [`Store::begin_marked`].
    async fn commit_marked(&self, mut tx: Tx) -> StoreResult<()> {
        if let Some((_, unmark)) = self.writer_marks() {
            tx.execute(unmark, &[]).await?;
        }
        tx.commit().await
    }

    /// Records where a local department is in DingTalk — `sys_depart.ding_identifier` and its
    /// snapshot with the base — in one transaction.
    pub async fn link_dept(&self, snapshot: &SnapshotWrite) -> StoreResult<()> {
        let set = self.sql("UPDATE sys_depart SET ding_identifier = ? WHERE id = ?");
        let put_snapshot = self.put_snapshot_sql();
        let marks = self.writer_marks();
        let begin = self.begin_statement_for_writes();
        crate::on_pool!(self, |pool| {
            let mut tx = pool.begin_with(begin).await?;
            if let Some((mark, _)) = marks {
                sqlx::query(mark).execute(&mut *tx).await?;
            }
            sqlx::query(&set)
                .bind(&snapshot.ding_id)
                .bind(&snapshot.local_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(&put_snapshot)
                .bind(snapshot.tenant)
                .bind(snapshot.entity)
                .bind(&snapshot.local_id)
                .bind(&snapshot.ding_id)
                .bind(crate::sync::model::content_hash(&[&snapshot.base]))
                .bind(super::now_ms())
                .bind(&snapshot.base)
                .execute(&mut *tx)
                .await?;
            if let Some((_, unmark)) = marks {
                sqlx::query(unmark).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
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
        crate::on_pool!(self, |pool| {
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

    /// The ids of the users `sys_user_depart` places in department `dept_id`.
    pub async fn members_of(&self, dept_id: &str) -> StoreResult<Vec<String>> {
        let sql = self
            .sql("SELECT user_id FROM sys_user_depart WHERE dep_id = ? AND user_id IS NOT NULL");
        Ok(crate::on_pool!(self, |pool| sqlx::query_scalar(&sql)
            .bind(dept_id)
            .fetch_all(pool)
            .await?))
    }

    /// The local department of `tenant` (any for 0) linked to DingTalk department `ding_id`
    /// by its `ding_identifier` or its snapshot, if one is.
    pub async fn dept_holder(&self, tenant: TenantId, ding_id: i64) -> StoreResult<Option<String>> {
        let by_row = format!(
            "SELECT id FROM sys_depart WHERE ding_identifier = ?{}",
            if tenant != 0 {
                " AND tenant_id = ?"
            } else {
                ""
            }
        );
        let by_row = self.sql(&by_row);
        let ding = ding_id.to_string();
        let row: Option<String> = crate::on_pool!(self, |pool| {
            let mut query = sqlx::query_scalar::<_, String>(&by_row).bind(&ding);
            if tenant != 0 {
                query = query.bind(tenant);
            }
            query.fetch_optional(pool).await?
        });
        if row.is_some() {
            return Ok(row);
        }
        Ok(self
            .snapshots_to(tenant, crate::sync::model::entity::DEPT, &[ding.as_str()])
            .await?
            .into_iter()
            .next()
            .map(|s| s.local_id))
    }

    /// Sets or clears `sys_depart.ding_identifier`.
    pub async fn set_ding_identifier(
        &self,
        dept_id: &str,
        ding_id: Option<i64>,
    ) -> StoreResult<()> {
        let sql = "UPDATE sys_depart SET ding_identifier = ? WHERE id = ?".to_string();
        self.write_marked(vec![(
            sql,
            vec![ding_id.map(|d| d.to_string()), Some(dept_id.to_string())],
        )])
        .await
    }

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

    /// The next free org_code for a child of `parent` (None: top level), `except` (a
    /// department being moved) not counted. Only the codes one level below the parent's are
    /// read: a candidate can clash with nothing else, and reading the whole table per new
    /// department made a 5,000-department pull quadratic.
    async fn next_org_code(
        &self,
        parent: Option<&LocalDept>,
        except: Option<&str>,
    ) -> StoreResult<String> {
        let prefix = parent.map_or("", |p| p.org_code.as_str());
        let sql = self.sql(
            "SELECT id, org_code FROM sys_depart WHERE org_code LIKE ? AND LENGTH(org_code) = ?",
        );
        let pattern = format!("{prefix}%");
        let length = i64::try_from(prefix.len() + orgcode::LEVEL_LEN).unwrap_or(i64::MAX);
        let rows: Vec<(String, Option<String>)> = crate::on_pool!(self, |pool| {
            sqlx::query_as(&sql)
                .bind(&pattern)
                .bind(length)
                .fetch_all(pool)
                .await?
        });
        let taken: HashSet<&str> = rows.iter().filter_map(|(_, c)| c.as_deref()).collect();
        let siblings: Vec<&str> = rows
            .iter()
            .filter(|(id, _)| Some(id.as_str()) != except)
            .filter_map(|(_, c)| c.as_deref())
            .collect();
        orgcode::next_code(prefix, &siblings, |code| taken.contains(code))
            .ok_or_else(|| StoreError::OrgCodesExhausted(prefix.to_string()))
    }

    /// Inserts a department (from a pull) with the next free org_code; returns the row.
    pub async fn insert_department(&self, new: &NewDept) -> StoreResult<LocalDept> {
        let parents = match new.parent_id.as_deref() {
            Some(id) => self.departments_by_id(0, &[id.to_string()]).await?,
            None => Vec::new(),
        };
        let parent = parents.first();
        let code = self.next_org_code(parent, None).await?;
        let dept = LocalDept {
            id: new_id(),
            parent_id: parent.map(|p| p.id.clone()),
            name: new.name.clone(),
            order: new.order,
            org_category: if parent.is_some() { "2" } else { "1" }.to_string(),
            org_code: code,
            del_flag: "0".into(),
            ding_identifier: Some(new.ding_identifier),
            tenant_id: new.tenant_id,
        };
        match self.insert_department_row(&dept, parent).await? {
            Some(id) => Ok(self
                .departments_by_id(0, std::slice::from_ref(&id))
                .await?
                .into_iter()
                .next()
                .unwrap_or(dept)),
            None => Ok(dept),
        }
    }

    /// Inserts `dept` under `parent` (no longer a leaf) in one marked transaction, unless a
    /// live department already holds its DingTalk id: then that one's id. Another run or job
    /// may be creating the same DingTalk department: the version row is locked first (the
    /// triggers bump it anyway), so the check and the insert of two creators do not
    /// interleave; the second finds the first's row and takes it.
    async fn insert_department_row(
        &self,
        dept: &LocalDept,
        parent: Option<&LocalDept>,
    ) -> StoreResult<Option<String>> {
        let lock = "UPDATE dingsync_version SET version = version + 1 WHERE name = 'depts'";
        let existing = self.sql(
            "SELECT id FROM sys_depart WHERE ding_identifier = ? AND COALESCE(del_flag, '0') <> '1'",
        );
        let leaf = self.sql("UPDATE sys_depart SET iz_leaf = 0 WHERE id = ?");
        let ding = dept.ding_identifier.unwrap_or_default().to_string();
        let mut tx = self.begin_marked().await?;
        tx.execute(lock, &[]).await?;
        let found: Option<String> = tx
            .fetch_optional_scalar(&existing, &[Arg::Text(&ding)])
            .await?;
        if found.is_none() {
            self.insert_dept_in(&mut tx, dept, &ding).await?;
            if let Some(parent) = parent {
                tx.execute(&leaf, &[Arg::Text(&parent.id)]).await?;
            }
        }
        self.commit_marked(tx).await?;
        Ok(found)
    }

    /// The `sys_depart` insert of `dept` (DingTalk id `ding`) in `tx`.
    async fn insert_dept_in(&self, tx: &mut Tx, dept: &LocalDept, ding: &str) -> StoreResult<()> {
        let level = (dept.org_code.len() / orgcode::LEVEL_LEN).to_string();
        let sql = format!(
            "INSERT INTO sys_depart (id, parent_id, depart_name, depart_order, org_category, org_type, org_code, status, del_flag, \
             ding_identifier, create_by, create_time, tenant_id, iz_leaf) VALUES (?, ?, ?, {order}, ?, ?, ?, '1', '0', ?, ?, CURRENT_TIMESTAMP, {tenant}, 1)",
            order = dept.order,
            tenant = dept.tenant_id,
        );
        let args = [
            Arg::OptText(Some(&dept.id)),
            Arg::OptText(Some(dept.parent_id.as_deref().unwrap_or_default())),
            Arg::OptText(Some(&dept.name)),
            Arg::OptText(Some(&dept.org_category)),
            Arg::OptText(Some(&level)),
            Arg::OptText(Some(&dept.org_code)),
            Arg::OptText(Some(ding)),
            Arg::OptText(Some(CREATED_BY)),
        ];
        tx.execute(&self.sql(&sql), &args).await?;
        Ok(())
    }

    /// Renames / moves / reorders a department; a move gives it and its whole subtree new
    /// org_codes under the new parent.
    pub async fn update_department(
        &self,
        id: &str,
        name: &str,
        parent_id: Option<&str>,
        order: i64,
    ) -> StoreResult<()> {
        let all = self.load_departments(0).await?;
        let Some(current) = all.iter().find(|d| d.id == id) else {
            return Ok(());
        };
        let mut statements = vec![(
            format!("UPDATE sys_depart SET depart_name = ?, parent_id = ?, depart_order = {order}, update_by = ?, update_time = CURRENT_TIMESTAMP WHERE id = ?"),
            vec![Some(name.to_string()), Some(parent_id.unwrap_or_default().to_string()), Some(CREATED_BY.into()), Some(id.to_string())],
        )];
        if current.parent_id.as_deref() != parent_id {
            let parent = parent_id.and_then(|p| all.iter().find(|d| d.id == p));
            let new_code = self.next_org_code(parent, Some(id)).await?;
            let old_code = current.org_code.clone();
            for dept in all.iter().filter(|d| d.org_code.starts_with(&old_code)) {
                if let Some(code) = orgcode::rebase(&dept.org_code, &old_code, &new_code) {
                    statements.push((
                        "UPDATE sys_depart SET org_code = ? WHERE id = ?".into(),
                        vec![Some(code), Some(dept.id.clone())],
                    ));
                }
            }
        }
        self.write_marked(statements).await
    }

    /// Which of JeecgBoot's unique keys (username, phone, email, work_no) `user` would break.
    pub async fn user_clash(&self, user: &NewUser) -> StoreResult<Option<StoreError>> {
        let checks: [(&'static str, Option<&String>); 4] = [
            ("username", Some(&user.username)),
            ("phone", user.phone.as_ref()),
            ("email", user.email.as_ref()),
            ("work_no", user.work_no.as_ref()),
        ];
        let present: Vec<(&'static str, &String)> = checks
            .into_iter()
            .filter_map(|(column, value)| Some((column, value.filter(|v| !v.is_empty())?)))
            .collect();
        if present.is_empty() {
            return Ok(None);
        }
        // One statement for all four unique keys (each side of the OR is indexed).
        let text = format!(
            "SELECT username, phone, email, work_no FROM sys_user WHERE {} LIMIT 4",
            present
                .iter()
                .map(|(column, _)| format!("{column} = ?"))
                .collect::<Vec<_>>()
                .join(" OR ")
        );
        let sql = self.sql(&text);
        type Row = (
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let rows: Vec<Row> = crate::on_pool!(self, |pool| {
            let mut query = sqlx::query_as::<_, Row>(&sql);
            for (_, value) in &present {
                query = query.bind(*value);
            }
            query.fetch_all(pool).await?
        });
        for (column, value) in present {
            let held = rows.iter().any(|(username, phone, email, work_no)| {
                let held = match column {
                    "username" => username,
                    "phone" => phone,
                    "email" => email,
                    _ => work_no,
                };
                held.as_deref() == Some(value.as_str())
            });
            if held {
                return Ok(Some(StoreError::UniqueClash {
                    table: "sys_user",
                    column,
                    value: value.clone(),
                }));
            }
        }
        Ok(None)
    }

    /// Inserts a user (from a pull): salt and JeecgBoot's hash of `password`, memberships, and
    /// the tenant tie; one transaction. A unique-key clash is reported before anything is
    /// written.
    pub async fn insert_user(
        &self,
        user: &NewUser,
        password_plain: &Secret,
    ) -> StoreResult<String> {
        if let Some(clash) = self.user_clash(user).await? {
            return Err(clash);
        }
        let id = new_id();
        let salt = password::new_salt();
        let hash = password::hash(&user.username, password_plain.expose(), &salt);
        let mut statements = vec![(
            format!("{USER_INSERT} {USER_ROW}"),
            user_values(&id, user, hash, salt),
        )];
        for dept in &user.depart_ids {
            statements.push((
                "INSERT INTO sys_user_depart (ID, user_id, dep_id) VALUES (?, ?, ?)".into(),
                vec![Some(new_id()), Some(id.clone()), Some(dept.clone())],
            ));
        }
        if user.tenant_id != 0 {
            statements.push((
                format!("INSERT INTO sys_user_tenant (id, user_id, tenant_id, status, create_by, create_time) VALUES (?, ?, {}, '1', ?, CURRENT_TIMESTAMP)", user.tenant_id),
                vec![Some(new_id()), Some(id.clone()), Some(CREATED_BY.into())],
            ));
        }
        self.write_marked(statements).await?;
        Ok(id)
    }

    /// Updates a user's fields from DingTalk (never the password) and adds memberships, in
    /// one transaction; a unique-key clash with another user is reported first.
    pub async fn update_user_fields(
        &self,
        id: &str,
        fields: &UserUpdate,
        add_depts: &[String],
        remove_depts: &[String],
    ) -> StoreResult<()> {
        let checks: [(&'static str, Option<&String>); 3] = [
            ("phone", fields.phone.as_ref()),
            ("email", fields.email.as_ref()),
            ("work_no", fields.work_no.as_ref()),
        ];
        for (column, value) in checks {
            let Some(value) = value else { continue };
            let text = format!("SELECT COUNT(*) FROM sys_user WHERE {column} = ? AND id <> ?");
            let sql = self.sql(&text);
            let count: i64 = crate::on_pool!(self, |pool| sqlx::query_scalar(&sql)
                .bind(value)
                .bind(id)
                .fetch_one(pool)
                .await?);
            if count > 0 {
                return Err(StoreError::UniqueClash {
                    table: "sys_user",
                    column,
                    value: value.clone(),
                });
            }
        }
        let statements = user_update_statements(id, fields, add_depts, remove_depts);
        if statements.is_empty() {
            return Ok(());
        }
        self.write_marked(statements).await
    }

    /// The stored (hash, salt) of a user, for checks.
    pub async fn password_of(&self, username: &str) -> StoreResult<Option<(String, String)>> {
        let sql = self.sql("SELECT password, salt FROM sys_user WHERE username = ?");
        let row: Option<(Option<String>, Option<String>)> =
            crate::on_pool!(self, |pool| sqlx::query_as(&sql)
                .bind(username)
                .fetch_optional(pool)
                .await?);
        Ok(row.and_then(|(hash, salt)| Some((hash?, salt?))))
    }

    /// The DingTalk rows of `sys_third_app_config`, whatever their `status` (which says
    /// whether JeecgBoot's own integration is on: `enabled`).
    pub async fn app_configs(&self) -> StoreResult<Vec<AppConfigRow>> {
        let sql = format!(
            "SELECT {tenant}, agent_id, client_id, client_secret, {status} FROM sys_third_app_config WHERE third_type = ? ORDER BY tenant_id, id",
            tenant = self.int("tenant_id"),
            status = self.int("COALESCE(status, 1)"),
        );
        let sql = self.sql(&sql);
        let rows: Vec<AppConfigTuple> = crate::on_pool!(self, |pool| sqlx::query_as(&sql)
            .bind(THIRD_TYPE_DINGTALK)
            .fetch_all(pool)
            .await?);
        Ok(rows
            .into_iter()
            .map(|(tenant_id, agent, client, secret, status)| AppConfigRow {
                tenant_id,
                agent_id: agent.unwrap_or_default(),
                client_id: client.unwrap_or_default(),
                client_secret: Secret::new(secret.unwrap_or_default()),
                enabled: status == 1,
            })
            .collect())
    }
}

/// The statements that set `fields` of user `id` (each column given) and add and remove its
/// memberships: [`Store::update_user_fields`] and a pull's batch of updates.
pub(super) fn user_update_statements(
    id: &str,
    fields: &UserUpdate,
    add_depts: &[String],
    remove_depts: &[String],
) -> Vec<(String, Vec<Option<String>>)> {
    let mut statements = Vec::new();
    let columns = [
        ("realname", &fields.realname),
        ("phone", &fields.phone),
        ("email", &fields.email),
        ("telephone", &fields.telephone),
        ("work_no", &fields.work_no),
    ];
    for (column, value) in columns {
        if let Some(value) = value {
            statements.push((format!("UPDATE sys_user SET {column} = ?, update_by = ?, update_time = CURRENT_TIMESTAMP WHERE id = ?"), vec![Some(value.clone()), Some(CREATED_BY.into()), Some(id.to_string())]));
        }
    }
    for dept in add_depts {
        statements.push((
                "INSERT INTO sys_user_depart (ID, user_id, dep_id) SELECT ?, ?, ? FROM sys_user WHERE id = ? AND NOT EXISTS (SELECT 1 FROM sys_user_depart WHERE user_id = ? AND dep_id = ?)".into(),
                vec![Some(new_id()), Some(id.to_string()), Some(dept.clone()), Some(id.to_string()), Some(id.to_string()), Some(dept.clone())],
            ));
    }
    for dept in remove_depts {
        statements.push((
            "DELETE FROM sys_user_depart WHERE user_id = ? AND dep_id = ?".into(),
            vec![Some(id.to_string()), Some(dept.clone())],
        ));
    }
    statements
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

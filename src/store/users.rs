//! JeecgBoot's users as dingsync reads them: with memberships and position names (three
//! queries, never one per user), whole, by id, a slice at a time or by key values; whether a
//! user is a tenant's; and the local users that may claim DingTalk users (`claimer_ids`).

use std::collections::BTreeMap;

use crate::config::TenantId;
use crate::jeecg::{LocalUser, THIRD_TYPE_DINGTALK};

use super::write::placeholders;
use super::{blank_to_none, Store, StoreResult};

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

impl Store {
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
        let rows: Vec<UserRow> = crate::store::on_pool!(self, |pool| {
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
        let (members, positions) = crate::store::on_pool!(self, |pool| {
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
            let found: Vec<String> = crate::store::on_pool!(self, |pool| {
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
        let count: i64 = crate::store::on_pool!(self, |pool| sqlx::query_scalar(&sql)
            .bind(user_id)
            .bind(tenant)
            .fetch_one(pool)
            .await?);
        Ok(count > 0)
    }
}

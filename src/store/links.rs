//! JeecgBoot's `sys_third_account` rows of DingTalk (links): read by tenant, user or
//! DingTalk userid (each on an index), and written one at a time with the user's snapshot
//! and base in the same transaction (`save_link_and_base`); JeecgBoot's unique key allows one
//! row per userid across tenants (`LinkSaved::HeldBy`). The batched writes are in `link_batch`
//! (a push's) and `update_batch` (a pull's).

use crate::config::TenantId;
use crate::jeecg::{Link, THIRD_TYPE_DINGTALK};

use super::snapshots::SnapshotWrite;
use super::tx::{Arg, Tx};
use super::write::{new_id, placeholders, CREATED_BY};
use super::{blank_to_none, Store, StoreResult};

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

impl Store {
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
        let rows: Vec<TextRow> = crate::store::on_pool!(self, |pool| {
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
}

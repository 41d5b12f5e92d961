//! A push's records in batches: many links with their sync bases
//! ([`Store::save_links_and_bases`]) and departments' links ([`Store::link_depts`]) in one
//! marked transaction of multi-row statements, the rows holding each userid or owned by each
//! user looked up in one query per key; a batch the single-row path must decide (a userid or
//! a user twice, several tenants, one row two writes would look at) goes row by row.

use std::collections::{HashMap, HashSet};

use crate::config::TenantId;
use crate::jeecg::{Link, THIRD_TYPE_DINGTALK};

use super::batch::{chunked, Rows, IN_LIST};
use super::links::LinkSaved;
use super::snapshots::{SnapshotWrite, SNAPSHOT_INSERT};
use super::write::{new_id, placeholders, CREATED_BY};
use super::{Store, StoreResult};

/// One link and its sync base, written after the DingTalk call (or the local update) that
/// made them true: see [`Store::save_links_and_bases`].
#[derive(Clone, Debug)]
pub struct LinkWrite {
    /// The link.
    pub link: Link,
    /// `realname` for a new link row.
    pub realname: String,
    /// The user's snapshot with its base.
    pub snapshot: SnapshotWrite,
}

/// A `sys_third_account` row as the batched link writes look at it: id, `sys_user_id`,
/// `third_user_id`, tenant.
type LinkRow = (String, Option<String>, Option<String>, i64);

/// Where one link write of a batch goes.
enum Target {
    /// Nowhere: another tenant's row holds the userid.
    Held(TenantId),
    /// Into this existing row.
    Row(String),
    /// Into a new row.
    New,
}

/// Where `write` goes in its batch: the statement updating its `Target::Row` pushed onto
/// `statements`, or its new row onto `inserts`; what it will have done.
fn place_link(
    statements: &mut Vec<(String, Vec<Option<String>>)>,
    inserts: &mut Rows,
    tenant: TenantId,
    write: &LinkWrite,
    target: Target,
) -> LinkSaved {
    let link = &write.link;
    match target {
        Target::Held(other) => LinkSaved::HeldBy(other),
        Target::Row(row) => {
            let update = "UPDATE sys_third_account SET sys_user_id = ?, third_user_id = ?, \
                 third_user_uuid = COALESCE(NULLIF(?, ''), third_user_uuid), realname = COALESCE(NULLIF(?, ''), realname), \
                 update_by = ?, update_time = CURRENT_TIMESTAMP WHERE id = ?";
            statements.push((
                update.to_string(),
                vec![
                    Some(link.user_id.clone()),
                    Some(link.userid.clone()),
                    Some(link.unionid.clone().unwrap_or_default()),
                    Some(write.realname.clone()),
                    Some(CREATED_BY.into()),
                    Some(row),
                ],
            ));
            LinkSaved::Written
        }
        Target::New => {
            inserts.0.push(format!(
                "(?, ?, 1, 0, ?, {tenant}, ?, ?, ?, CURRENT_TIMESTAMP, '{THIRD_TYPE_DINGTALK}')"
            ));
            inserts.1.extend([
                Some(new_id()),
                Some(link.user_id.clone()),
                Some(write.realname.clone()),
                link.unionid.clone().filter(|u| !u.is_empty()),
                Some(link.userid.clone()),
                Some(CREATED_BY.into()),
            ]);
            LinkSaved::Written
        }
    }
}

impl Store {
    /// [`Store::save_link_and_base`] for many users of one tenant in one marked transaction:
    /// the rows that already hold each userid, or belong to each user, looked up in one query
    /// per key; new link rows and every snapshot written by multi-row statements, the rare
    /// existing row updated in place. The answer for each write, in order. A batch naming a
    /// userid or a user twice, of several tenants, or with two writes looking at one row, is
    /// written row by row (the single-row path decides between them), each with its own
    /// answer. `Err` only when the batch's transaction failed: nothing of it was written, and
    /// the caller goes row by row.
    pub async fn save_links_and_bases(
        &self,
        writes: &[LinkWrite],
    ) -> StoreResult<Vec<StoreResult<LinkSaved>>> {
        let refs: Vec<&LinkWrite> = writes.iter().collect();
        let mut statements = Vec::new();
        let Some(answers) = self.link_statements(&mut statements, &refs).await? else {
            let mut answers = Vec::with_capacity(writes.len());
            for write in writes {
                answers.push(
                    self.save_link_and_base(&write.link, &write.realname, Some(&write.snapshot))
                        .await,
                );
            }
            return Ok(answers);
        };
        self.write_marked(statements).await?;
        Ok(answers.into_iter().map(Ok).collect())
    }

    /// Pushes the statements of `writes` (see [`Store::save_links_and_bases`]); what each
    /// will have done, or `None` when they cannot go in one batch (a userid or a user twice,
    /// several tenants, one row two writes would look at).
    pub(super) async fn link_statements(
        &self,
        statements: &mut Vec<(String, Vec<Option<String>>)>,
        writes: &[&LinkWrite],
    ) -> StoreResult<Option<Vec<LinkSaved>>> {
        let Some(first) = writes.first() else {
            return Ok(Some(Vec::new()));
        };
        let tenant = first.link.tenant_id;
        let userids: Vec<&str> = writes.iter().map(|w| w.link.userid.as_str()).collect();
        let user_ids: Vec<&str> = writes.iter().map(|w| w.link.user_id.as_str()).collect();
        if !self.one_batch(tenant, writes, &userids, &user_ids) {
            return Ok(None);
        }
        let holders = self.link_rows("third_user_id", &userids).await?;
        let owned = self.link_rows("sys_user_id", &user_ids).await?;
        let Some(targets) = self.link_targets(tenant, writes, &holders, &owned) else {
            return Ok(None);
        };
        let mut inserts = Rows::default();
        let answers = writes
            .iter()
            .zip(targets)
            .map(|(write, target)| place_link(statements, &mut inserts, tenant, write, target))
            .collect();
        chunked(
            statements,
            "INSERT INTO sys_third_account (id, sys_user_id, status, del_flag, realname, tenant_id, third_user_uuid, \
             third_user_id, create_by, create_time, third_type) VALUES",
            inserts.0,
            inserts.1,
        );
        let snapshots: Vec<&SnapshotWrite> = writes.iter().map(|w| &w.snapshot).collect();
        self.snapshot_statements(statements, &snapshots);
        Ok(Some(answers))
    }

    /// Whether `writes` (their `userids` and `user_ids`) can go in one batch: no userid (as
    /// the database compares them: two that differ only in case are one on MySQL) or user
    /// twice, and all of `tenant`.
    fn one_batch(
        &self,
        tenant: TenantId,
        writes: &[&LinkWrite],
        userids: &[&str],
        user_ids: &[&str],
    ) -> bool {
        let keys: HashSet<String> = userids.iter().map(|u| self.unique_key(u)).collect();
        let distinct =
            |values: &[&str]| values.iter().collect::<HashSet<_>>().len() == values.len();
        keys.len() == userids.len()
            && distinct(user_ids)
            && writes.iter().all(|w| w.link.tenant_id == tenant)
    }

    /// Where each of `writes` goes, judged as [`Store::save_link_and_base`] judges one: from
    /// the rows holding its userid (`holders`, compared as the database compares them) and
    /// the rows of its user in its tenant (`owned`). `None` when two writes would look at one
    /// row: the single-row path, deciding one after the other, may then choose differently.
    fn link_targets(
        &self,
        tenant: TenantId,
        writes: &[&LinkWrite],
        holders: &[LinkRow],
        owned: &[LinkRow],
    ) -> Option<Vec<Target>> {
        let mut holding: HashMap<String, Vec<&LinkRow>> = HashMap::new();
        for row in holders {
            if let Some(userid) = &row.2 {
                holding
                    .entry(self.unique_key(userid))
                    .or_default()
                    .push(row);
            }
        }
        let mut of_user: HashMap<&str, Vec<&LinkRow>> = HashMap::new();
        for row in owned {
            if let Some(user) = &row.1 {
                of_user.entry(user.as_str()).or_default().push(row);
            }
        }
        // Tenant 0 stands alone and owns every row, whatever its tenant_id says.
        let ours = |row_tenant: i64| tenant == 0 || row_tenant == tenant;
        let mut seen: HashSet<&str> = HashSet::new();
        let mut targets = Vec::with_capacity(writes.len());
        for write in writes {
            let link = &write.link;
            let held = holding
                .get(&self.unique_key(&link.userid))
                .map_or(&[][..], Vec::as_slice);
            let mine: Vec<&LinkRow> = of_user
                .get(link.user_id.as_str())
                .map_or(&[][..], Vec::as_slice)
                .iter()
                .copied()
                .filter(|r| r.3 == link.tenant_id)
                .collect();
            let rows: HashSet<&str> = held.iter().chain(&mine).map(|r| r.0.as_str()).collect();
            if rows.into_iter().any(|id| !seen.insert(id)) {
                return None;
            }
            let other = held.iter().find(|r| !ours(r.3));
            let row = held.iter().find(|r| ours(r.3)).or_else(|| mine.first());
            targets.push(match (row, other) {
                (_, Some(other)) => Target::Held(other.3),
                (Some(row), None) => Target::Row(row.0.clone()),
                (None, None) => Target::New,
            });
        }
        Some(targets)
    }

    /// Records where local departments are in DingTalk — each `sys_depart.ding_identifier`
    /// and snapshot with its base — in one marked transaction (see [`Store::link_dept`]).
    pub async fn link_depts(&self, snapshots: &[SnapshotWrite]) -> StoreResult<()> {
        let mut statements: Vec<(String, Vec<Option<String>>)> = snapshots
            .iter()
            .map(|s| {
                (
                    "UPDATE sys_depart SET ding_identifier = ? WHERE id = ?".to_string(),
                    vec![Some(s.ding_id.clone()), Some(s.local_id.clone())],
                )
            })
            .collect();
        let snapshots: Vec<&SnapshotWrite> = snapshots.iter().collect();
        self.snapshot_statements(&mut statements, &snapshots);
        self.write_marked(statements).await
    }

    /// The `sys_third_account` rows of DingTalk whose `column` is one of `values`.
    async fn link_rows(&self, column: &str, values: &[&str]) -> StoreResult<Vec<LinkRow>> {
        let mut found = Vec::new();
        for part in values.chunks(IN_LIST) {
            let text = format!(
                "SELECT id, sys_user_id, third_user_id, {} FROM sys_third_account WHERE third_type = '{THIRD_TYPE_DINGTALK}' AND {column} IN ({})",
                self.int("COALESCE(tenant_id, 0)"),
                placeholders(part.len())
            );
            let sql = self.sql(&text);
            let rows: Vec<LinkRow> = crate::store::on_pool!(self, |pool| {
                let mut query = sqlx::query_as(&sql).persistent(false);
                for value in part {
                    query = query.bind(*value);
                }
                query.fetch_all(pool).await?
            });
            found.extend(rows);
        }
        Ok(found)
    }

    /// Pushes the multi-row upserts of `snapshots` (the last write of an entity wins: one
    /// statement may not change a row twice).
    pub(super) fn snapshot_statements(
        &self,
        statements: &mut Vec<(String, Vec<Option<String>>)>,
        snapshots: &[&SnapshotWrite],
    ) {
        let now = super::now_ms();
        let mut last: std::collections::HashMap<(TenantId, &str, &str), usize> =
            std::collections::HashMap::new();
        for (index, s) in snapshots.iter().enumerate() {
            last.insert((s.tenant, s.entity, s.local_id.as_str()), index);
        }
        let mut rows: (Vec<String>, Vec<Option<String>>) = (Vec::new(), Vec::new());
        for (index, s) in snapshots.iter().enumerate() {
            if last.get(&(s.tenant, s.entity, s.local_id.as_str())) != Some(&index) {
                continue;
            }
            // `entity` is one of the crate's constants, never input.
            rows.0
                .push(format!("({}, '{}', ?, ?, ?, {now}, ?)", s.tenant, s.entity));
            rows.1.extend([
                Some(s.local_id.clone()),
                Some(s.ding_id.clone()),
                Some(crate::sync::model::content_hash(&[&s.base])),
                Some(s.base.clone()),
            ]);
        }
        let first = statements.len();
        chunked(statements, SNAPSHOT_INSERT, rows.0, rows.1);
        for (sql, _) in &mut statements[first..] {
            sql.push_str(self.snapshot_upsert());
        }
    }
}

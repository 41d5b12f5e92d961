//! JeecgBoot's departments (`sys_depart`): the tree of a tenant (read again only when
//! `dingsync_version.depts` moved: `dept_rows`), departments by id, members, the local
//! department linked to a DingTalk one (`ding_identifier` or snapshot), new departments with
//! a unique `org_code` (locked against a second creator), moves that recode a subtree, and a
//! department's link with its snapshot in one transaction.

use std::collections::HashSet;
use std::sync::{Arc, PoisonError};

use crate::config::TenantId;
use crate::jeecg::{orgcode, LocalDept, NewDept};

use super::snapshots::{Snapshot, SnapshotWrite};
use super::tx::{Arg, Tx};
use super::write::{new_id, CREATED_BY};
use super::{blank_to_none, Store, StoreError, StoreResult};

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

impl Store {
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
        let version: Option<i64> = crate::store::on_pool!(self, |pool| sqlx::query_scalar(sql)
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
        let rows: Vec<Row> = crate::store::on_pool!(self, |pool| {
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

    /// The ids of the users `sys_user_depart` places in department `dept_id`.
    pub async fn members_of(&self, dept_id: &str) -> StoreResult<Vec<String>> {
        let sql = self
            .sql("SELECT user_id FROM sys_user_depart WHERE dep_id = ? AND user_id IS NOT NULL");
        Ok(crate::store::on_pool!(self, |pool| sqlx::query_scalar(
            &sql
        )
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
        let row: Option<String> = crate::store::on_pool!(self, |pool| {
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

    /// Records where a local department is in DingTalk — `sys_depart.ding_identifier` and its
    /// snapshot with the base — in one transaction.
    pub async fn link_dept(&self, snapshot: &SnapshotWrite) -> StoreResult<()> {
        let set = self.sql("UPDATE sys_depart SET ding_identifier = ? WHERE id = ?");
        let mut tx = self.begin_marked().await?;
        let args = [Arg::Text(&snapshot.ding_id), Arg::Text(&snapshot.local_id)];
        tx.execute(&set, &args).await?;
        self.put_snapshot_in(&mut tx, snapshot).await?;
        self.commit_marked(tx).await
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
        let rows: Vec<(String, Option<String>)> = crate::store::on_pool!(self, |pool| {
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
}

//! A pull's updates of local users in batches ([`Store::update_linked_users`]): columns,
//! memberships and links or bases in one marked transaction, the unique values they set
//! checked against other users in one query per column; a clash answers for its user alone.

use std::collections::HashSet;

use crate::jeecg::UserUpdate;

use super::batch::IN_LIST;
use super::link_batch::LinkWrite;
use super::links::LinkSaved;
use super::snapshots::SnapshotWrite;
use super::user_writes::user_update_statements;
use super::write::placeholders;
use super::{Store, StoreError, StoreResult};

/// One local user a pull changes: its fields and memberships, then its link with its base,
/// or its base alone.
#[derive(Clone, Debug)]
pub struct UserChange {
    /// `sys_user.id`.
    pub id: String,
    /// The columns to set.
    pub fields: UserUpdate,
    /// Departments (local ids) to add it to.
    pub add_depts: Vec<String>,
    /// Departments (local ids) to take it out of.
    pub remove_depts: Vec<String>,
    /// What records the change.
    pub record: ChangeRecord,
}

/// What records a [`UserChange`].
#[derive(Clone, Debug)]
pub enum ChangeRecord {
    /// The link, with the snapshot.
    Link(LinkWrite),
    /// The snapshot alone (the link row is there).
    Base(SnapshotWrite),
}

/// The columns a pull may set that JeecgBoot keeps unique.
const UPDATED_UNIQUE: [&str; 3] = ["phone", "email", "work_no"];

fn updated_value<'a>(change: &'a UserChange, column: &str) -> Option<&'a str> {
    match column {
        "phone" => change.fields.phone.as_deref(),
        "email" => change.fields.email.as_deref(),
        _ => change.fields.work_no.as_deref(),
    }
}

impl Store {
    /// A pull's updates of local users in one marked transaction: the values they set on a
    /// unique column checked against the other users in one query per column; then each
    /// user's statements ([`Store::update_user_fields`]) and its link
    /// ([`Store::save_links_and_bases`]) or base. A user setting a value another user holds
    /// (or an earlier user of the batch sets) is answered with the clash alone and not
    /// written. `None` when the links cannot go in one batch; `Err` when the transaction
    /// failed (nothing written): the caller then goes one by one.
    pub async fn update_linked_users(
        &self,
        changes: &[UserChange],
    ) -> StoreResult<Option<Vec<StoreResult<LinkSaved>>>> {
        let clashes = self.update_clashes(changes).await?;
        let taken: Vec<&UserChange> = changes
            .iter()
            .zip(&clashes)
            .filter(|(_, clash)| clash.is_none())
            .map(|(change, _)| change)
            .collect();
        let mut statements = Vec::new();
        for c in &taken {
            statements.extend(user_update_statements(
                &c.id,
                &c.fields,
                &c.add_depts,
                &c.remove_depts,
            ));
        }
        let links: Vec<&LinkWrite> = taken
            .iter()
            .filter_map(|c| match &c.record {
                ChangeRecord::Link(link) => Some(link),
                ChangeRecord::Base(_) => None,
            })
            .collect();
        let Some(saved) = self.link_statements(&mut statements, &links).await? else {
            return Ok(None);
        };
        let bases: Vec<&SnapshotWrite> = taken
            .iter()
            .filter_map(|c| match &c.record {
                ChangeRecord::Base(base) => Some(base),
                ChangeRecord::Link(_) => None,
            })
            .collect();
        self.snapshot_statements(&mut statements, &bases);
        if !statements.is_empty() {
            self.write_marked(statements).await?;
        }
        let mut saved = saved.into_iter();
        Ok(Some(
            changes
                .iter()
                .zip(clashes)
                .map(|(change, clash)| match (clash, &change.record) {
                    (Some(clash), _) => Err(clash),
                    (None, ChangeRecord::Link(_)) => Ok(saved.next().unwrap_or(LinkSaved::Written)),
                    (None, ChangeRecord::Base(_)) => Ok(LinkSaved::Written),
                })
                .collect(),
        ))
    }

    /// For each of `changes`, the first unique value it sets that another user holds (or an
    /// earlier change of the batch sets), checked in one query per column.
    async fn update_clashes(&self, changes: &[UserChange]) -> StoreResult<Vec<Option<StoreError>>> {
        let mut clashes: Vec<Option<StoreError>> = changes.iter().map(|_| None).collect();
        for column in UPDATED_UNIQUE {
            let values: Vec<&str> = changes
                .iter()
                .filter_map(|c| updated_value(c, column))
                .collect();
            let held = self.holders(column, &values).await?;
            let mut set_here = HashSet::new();
            for (change, clash) in changes.iter().zip(clashes.iter_mut()) {
                let Some(value) = updated_value(change, column).filter(|_| clash.is_none()) else {
                    continue;
                };
                let key = self.unique_key(value);
                let other = held
                    .get(&key)
                    .is_some_and(|ids| ids.iter().any(|id| *id != change.id));
                if other || !set_here.insert(key) {
                    *clash = Some(StoreError::UniqueClash {
                        table: "sys_user",
                        column,
                        value: value.to_string(),
                    });
                }
            }
        }
        Ok(clashes)
    }

    /// The users holding each of `values` in `column` of `sys_user`: (value as
    /// [`Store::unique_key`], id).
    async fn holders(
        &self,
        column: &str,
        values: &[&str],
    ) -> StoreResult<std::collections::HashMap<String, Vec<String>>> {
        let mut found: std::collections::HashMap<String, Vec<String>> =
            std::collections::HashMap::new();
        for part in values.chunks(IN_LIST) {
            let text = format!(
                "SELECT {column}, id FROM sys_user WHERE {column} IN ({})",
                placeholders(part.len())
            );
            let sql = self.sql(&text);
            let rows: Vec<(Option<String>, String)> = crate::store::on_pool!(self, |pool| {
                let mut query = sqlx::query_as(&sql).persistent(false);
                for value in part {
                    query = query.bind(*value);
                }
                query.fetch_all(pool).await?
            });
            for (value, id) in rows {
                if let Some(value) = value {
                    found.entry(self.unique_key(&value)).or_default().push(id);
                }
            }
        }
        Ok(found)
    }
}

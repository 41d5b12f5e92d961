//! A pull's local writes in batches: the users of a slice inserted with their memberships,
//! tenant rows, link rows and snapshots in one marked transaction of multi-row statements,
//! their unique keys checked in one query per key. A user the batch cannot take (a value
//! another user holds, a DingTalk userid another link row holds) is answered for alone, so
//! one bad row never costs the others; a batch that fails as a whole is retried row by row
//! by the caller.

use std::collections::HashSet;

use crate::config::TenantId;
use crate::jeecg::{password, NewUser, THIRD_TYPE_DINGTALK};
use crate::secret::Secret;

use super::jeecg::{new_id, placeholders, user_values, CREATED_BY, USER_INSERT, USER_ROW};
use super::{Store, StoreError, StoreResult};

/// Bound values per multi-row statement (well under every dialect's limit: SQLite 32,766,
/// MySQL and PostgreSQL 65,535): few, large statements, each a round trip.
const MAX_BINDS: usize = 8_000;
/// Values per `IN (...)` of the unique-key checks.
const IN_LIST: usize = 500;
/// Users that share one salt (and so one run of the hash's rounds): a few, so that a leaked
/// table costs an attacker one derivation per guess per small group, not per batch, once
/// users change their passwords (JeecgBoot's own password change keeps the salt).
const SALT_GROUP: usize = 16;

/// One user a pull creates, with its link to DingTalk and its sync base.
#[derive(Clone, Debug)]
pub struct NewLinkedUser {
    /// The row.
    pub user: NewUser,
    /// Its DingTalk userid.
    pub userid: String,
    /// Its DingTalk unionid.
    pub unionid: Option<String>,
    /// The sync base (JSON).
    pub base: String,
}

/// What became of one user of a batch.
#[derive(Debug)]
pub enum Inserted {
    /// In, with this `sys_user.id`.
    Id(String),
    /// Refused: a unique key another user holds (or an earlier user of the batch).
    Clash(StoreError),
    /// Not taken by the batch: its DingTalk userid is already in a link row, which the
    /// single-row path decides about.
    Alone,
}

/// The columns of `sys_user` JeecgBoot keeps unique.
const UNIQUE: [&str; 4] = ["username", "phone", "email", "work_no"];

fn unique_value<'a>(user: &'a NewUser, column: &str) -> Option<&'a str> {
    match column {
        "username" => Some(user.username.as_str()),
        "phone" => user.phone.as_deref(),
        "email" => user.email.as_deref(),
        _ => user.work_no.as_deref(),
    }
    .filter(|v| !v.is_empty())
}

impl Store {
    /// A unique-key value as the database compares it: MySQL/MariaDB's default collations
    /// ignore case and trailing spaces, SQLite's and PostgreSQL's do not.
    fn unique_key(&self, value: &str) -> String {
        if self.backend() == crate::config::Backend::MySql {
            value.trim_end().to_lowercase()
        } else {
            value.to_string()
        }
    }

    /// Values of `column` among `values` that some row of `table` already has, as
    /// [`Store::unique_key`]s (`extra`: a further condition).
    async fn present(
        &self,
        table: &str,
        column: &str,
        extra: &str,
        values: &[&str],
    ) -> StoreResult<HashSet<String>> {
        let mut found = HashSet::new();
        for part in values.chunks(IN_LIST) {
            let text = format!(
                "SELECT {column} FROM {table} WHERE {extra}{column} IN ({})",
                placeholders(part.len())
            );
            let sql = self.sql(&text);
            // Planned afresh each time: a plan cached while the table was small (PostgreSQL's
            // generic plan of a prepared statement) would go on scanning it as it grows.
            let rows: Vec<Option<String>> = crate::on_pool!(self, |pool| {
                let mut query = sqlx::query_scalar(&sql).persistent(false);
                for value in part {
                    query = query.bind(*value);
                }
                query.fetch_all(pool).await?
            });
            found.extend(rows.into_iter().flatten().map(|v| self.unique_key(&v)));
        }
        Ok(found)
    }

    /// Inserts `users` of `tenant` (see the module documentation); the answer for each, in
    /// order. `Err` only when the batch's transaction failed: nothing of it was written.
    pub async fn insert_linked_users(
        &self,
        tenant: TenantId,
        users: &[NewLinkedUser],
        password_plain: &Secret,
    ) -> StoreResult<Vec<Inserted>> {
        let mut taken: Vec<HashSet<String>> = Vec::new();
        for column in UNIQUE {
            let values: Vec<&str> = users
                .iter()
                .filter_map(|u| unique_value(&u.user, column))
                .collect();
            taken.push(self.present("sys_user", column, "", &values).await?);
        }
        let userids: Vec<&str> = users.iter().map(|u| u.userid.as_str()).collect();
        let held = self
            .present(
                "sys_third_account",
                "third_user_id",
                &format!("third_type = '{THIRD_TYPE_DINGTALK}' AND "),
                &userids,
            )
            .await?;
        // The link rows' other unique key: (third_user_uuid, third_type, tenant_id).
        let unionids: Vec<&str> = users
            .iter()
            .filter_map(|u| u.unionid.as_deref())
            .filter(|u| !u.is_empty())
            .collect();
        let held_unionids = self
            .present(
                "sys_third_account",
                "third_user_uuid",
                &format!(
                    "third_type = '{THIRD_TYPE_DINGTALK}' AND {} = {tenant} AND ",
                    self.int("COALESCE(tenant_id, 0)")
                ),
                &unionids,
            )
            .await?;
        let mut answers = Vec::with_capacity(users.len());
        let mut rows: Vec<(&NewLinkedUser, String)> = Vec::new();
        for linked in users {
            let unionid_held = linked
                .unionid
                .as_deref()
                .is_some_and(|u| !u.is_empty() && held_unionids.contains(&self.unique_key(u)));
            if held.contains(&self.unique_key(&linked.userid)) || unionid_held {
                answers.push(Inserted::Alone);
                continue;
            }
            let clash = UNIQUE.iter().zip(&taken).find_map(|(column, taken)| {
                let value = unique_value(&linked.user, column)?;
                taken
                    .contains(&self.unique_key(value))
                    .then(|| StoreError::UniqueClash {
                        table: "sys_user",
                        column,
                        value: value.to_string(),
                    })
            });
            if let Some(clash) = clash {
                answers.push(Inserted::Clash(clash));
                continue;
            }
            for (column, taken) in UNIQUE.iter().zip(taken.iter_mut()) {
                if let Some(value) = unique_value(&linked.user, column) {
                    taken.insert(self.unique_key(value));
                }
            }
            let id = new_id();
            answers.push(Inserted::Id(id.clone()));
            rows.push((linked, id));
        }
        if !rows.is_empty() {
            self.write_marked(self.batch_statements(tenant, &rows, password_plain))
                .await?;
        }
        Ok(answers)
    }

    /// The multi-row statements of a batch (ids chosen, unique keys checked).
    fn batch_statements(
        &self,
        tenant: TenantId,
        rows: &[(&NewLinkedUser, String)],
        password_plain: &Secret,
    ) -> Vec<(String, Vec<Option<String>>)> {
        // A few users created together with one initial password share a salt, so the
        // rounds of the hash run once per group (SALT_GROUP).
        let hashed: Vec<(String, String)> = rows
            .chunks(SALT_GROUP)
            .flat_map(|group| {
                let salt = password::new_salt();
                let derived = password::Derived::new(password_plain.expose(), &salt);
                group
                    .iter()
                    .map(|(linked, _)| (derived.hash(&linked.user.username), salt.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut hashes = hashed.into_iter();
        let now = super::now_ms();
        let mut users: (Vec<String>, Vec<Option<String>>) = (Vec::new(), Vec::new());
        let mut members: (Vec<String>, Vec<Option<String>>) = (Vec::new(), Vec::new());
        let mut tenants: (Vec<String>, Vec<Option<String>>) = (Vec::new(), Vec::new());
        let mut links: (Vec<String>, Vec<Option<String>>) = (Vec::new(), Vec::new());
        let mut snapshots: (Vec<String>, Vec<Option<String>>) = (Vec::new(), Vec::new());
        for (linked, id) in rows {
            let user = &linked.user;
            let (hash, salt) = hashes.next().unwrap_or_default();
            users.0.push(USER_ROW.into());
            users.1.extend(user_values(id, user, hash, salt));
            let mut depts: Vec<&String> = user.depart_ids.iter().collect();
            depts.sort();
            depts.dedup();
            for dept in depts {
                members.0.push("(?, ?, ?)".into());
                members
                    .1
                    .extend([Some(new_id()), Some(id.clone()), Some(dept.clone())]);
            }
            if tenant != 0 {
                tenants
                    .0
                    .push(format!("(?, ?, {tenant}, '1', ?, CURRENT_TIMESTAMP)"));
                tenants
                    .1
                    .extend([Some(new_id()), Some(id.clone()), Some(CREATED_BY.into())]);
            }
            links.0.push(format!(
                "(?, ?, 1, 0, ?, {tenant}, ?, ?, ?, CURRENT_TIMESTAMP, '{THIRD_TYPE_DINGTALK}')"
            ));
            links.1.extend([
                Some(new_id()),
                Some(id.clone()),
                Some(user.realname.clone()),
                linked.unionid.clone(),
                Some(linked.userid.clone()),
                Some(CREATED_BY.into()),
            ]);
            snapshots
                .0
                .push(format!("({tenant}, 'user', ?, ?, ?, {now}, ?)"));
            snapshots.1.extend([
                Some(id.clone()),
                Some(linked.userid.clone()),
                Some(crate::sync::model::content_hash(&[&linked.base])),
                Some(linked.base.clone()),
            ]);
        }
        let mut statements = Vec::new();
        for (head, (tuples, binds)) in [
            (USER_INSERT, users),
            ("INSERT INTO sys_user_depart (ID, user_id, dep_id) VALUES", members),
            (
                "INSERT INTO sys_user_tenant (id, user_id, tenant_id, status, create_by, create_time) VALUES",
                tenants,
            ),
            (
                "INSERT INTO sys_third_account (id, sys_user_id, status, del_flag, realname, tenant_id, third_user_uuid, \
                 third_user_id, create_by, create_time, third_type) VALUES",
                links,
            ),
            (
                "INSERT INTO dingsync_snapshot (tenant_id, entity, local_id, ding_id, content_hash, synced_at, base) VALUES",
                snapshots,
            ),
        ] {
            chunked(&mut statements, head, tuples, binds);
        }
        statements
    }
}

/// Pushes `INSERT … VALUES` statements of `tuples` (each with the same number of the
/// `binds`, in order), as few as [`MAX_BINDS`] allows.
fn chunked(
    statements: &mut Vec<(String, Vec<Option<String>>)>,
    head: &str,
    tuples: Vec<String>,
    binds: Vec<Option<String>>,
) {
    if tuples.is_empty() {
        return;
    }
    let per_row = binds.len() / tuples.len();
    let rows_per_statement = (MAX_BINDS / per_row.max(1)).max(1);
    let mut binds = binds.into_iter();
    for part in tuples.chunks(rows_per_statement) {
        let values: Vec<Option<String>> = binds.by_ref().take(part.len() * per_row).collect();
        statements.push((format!("{head} {}", part.join(", ")), values));
    }
}

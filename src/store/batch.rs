//! A pull's local writes in batches: the users of a slice inserted with their memberships,
//! tenant rows, link rows and snapshots in one marked transaction of multi-row statements,
//! their unique keys checked in one query per key. A user the batch cannot take (a value
//! another user holds, a DingTalk userid another link row holds) is answered for alone, so
//! one bad row never costs the others; a batch that fails as a whole is retried row by row
//! by the caller. A push's records in batches are in `link_batch`, a pull's updated users in
//! `update_batch` (their types re-exported here, the one path callers import them by).

use std::collections::HashSet;

use crate::config::TenantId;
use crate::jeecg::{password, NewUser, THIRD_TYPE_DINGTALK};
use crate::secret::Secret;

use super::snapshots::SNAPSHOT_INSERT;
use super::user_writes::{user_values, USER_INSERT, USER_ROW};
use super::write::{new_id, placeholders, CREATED_BY};
use super::{Store, StoreError, StoreResult};

pub use super::link_batch::LinkWrite;
pub use super::update_batch::{ChangeRecord, UserChange};

/// Bound values per multi-row statement (well under every dialect's limit: SQLite 32,766,
/// MySQL and PostgreSQL 65,535): few, large statements, each a round trip.
const MAX_BINDS: usize = 8_000;

/// Values per `IN (...)` of the unique-key checks.
pub(super) const IN_LIST: usize = 500;

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
    pub(super) fn unique_key(&self, value: &str) -> String {
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
            let rows: Vec<Option<String>> = crate::store::on_pool!(self, |pool| {
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
        let mut taken = self.taken_keys(users).await?;
        let held = self.held_links(tenant, users).await?;
        let mut answers = Vec::with_capacity(users.len());
        let mut rows: Vec<(&NewLinkedUser, String)> = Vec::new();
        for linked in users {
            let answer = self.admit(linked, &held, &mut taken);
            if let Inserted::Id(id) = &answer {
                rows.push((linked, id.clone()));
            }
            answers.push(answer);
        }
        if !rows.is_empty() {
            self.write_marked(self.batch_statements(tenant, &rows, password_plain))
                .await?;
        }
        Ok(answers)
    }

    /// The values of each of [`UNIQUE`]'s columns among `users` that other users hold.
    async fn taken_keys(&self, users: &[NewLinkedUser]) -> StoreResult<Vec<HashSet<String>>> {
        let mut taken: Vec<HashSet<String>> = Vec::new();
        for column in UNIQUE {
            let values: Vec<&str> = users
                .iter()
                .filter_map(|u| unique_value(&u.user, column))
                .collect();
            taken.push(self.present("sys_user", column, "", &values).await?);
        }
        Ok(taken)
    }

    /// The DingTalk userids of `users` that link rows hold, and (the link rows' other unique
    /// key: `(third_user_uuid, third_type, tenant_id)`) the unionids the tenant's rows hold.
    async fn held_links(
        &self,
        tenant: TenantId,
        users: &[NewLinkedUser],
    ) -> StoreResult<(HashSet<String>, HashSet<String>)> {
        let userids: Vec<&str> = users.iter().map(|u| u.userid.as_str()).collect();
        let held = self
            .present(
                "sys_third_account",
                "third_user_id",
                &format!("third_type = '{THIRD_TYPE_DINGTALK}' AND "),
                &userids,
            )
            .await?;
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
        Ok((held, held_unionids))
    }

    /// What becomes of `linked` in its batch: left alone when a link row holds its userid
    /// or unionid (`held`), a clash when a unique value of it is `taken`, else a new id (and
    /// its values taken from now on).
    fn admit(
        &self,
        linked: &NewLinkedUser,
        (held, held_unionids): &(HashSet<String>, HashSet<String>),
        taken: &mut [HashSet<String>],
    ) -> Inserted {
        let unionid_held = linked
            .unionid
            .as_deref()
            .is_some_and(|u| !u.is_empty() && held_unionids.contains(&self.unique_key(u)));
        if held.contains(&self.unique_key(&linked.userid)) || unionid_held {
            return Inserted::Alone;
        }
        let clash = UNIQUE.iter().zip(taken.iter()).find_map(|(column, taken)| {
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
            return Inserted::Clash(clash);
        }
        for (column, taken) in UNIQUE.iter().zip(taken.iter_mut()) {
            if let Some(value) = unique_value(&linked.user, column) {
                taken.insert(self.unique_key(value));
            }
        }
        Inserted::Id(new_id())
    }

    /// The multi-row statements of a batch (ids chosen, unique keys checked).
    fn batch_statements(
        &self,
        tenant: TenantId,
        rows: &[(&NewLinkedUser, String)],
        password_plain: &Secret,
    ) -> Vec<(String, Vec<Option<String>>)> {
        let mut hashes = hashed_passwords(rows, password_plain).into_iter();
        let now = super::now_ms();
        let mut batch = BatchRows::default();
        for (linked, id) in rows {
            let (hash, salt) = hashes.next().unwrap_or_default();
            batch.push_user(tenant, linked, id, hash, salt);
            batch.push_link(tenant, linked, id, now);
        }
        let mut statements = Vec::new();
        for (head, (tuples, binds)) in [
            (USER_INSERT, batch.users),
            ("INSERT INTO sys_user_depart (ID, user_id, dep_id) VALUES", batch.members),
            (
                "INSERT INTO sys_user_tenant (id, user_id, tenant_id, status, create_by, create_time) VALUES",
                batch.tenants,
            ),
            (
                "INSERT INTO sys_third_account (id, sys_user_id, status, del_flag, realname, tenant_id, third_user_uuid, \
                 third_user_id, create_by, create_time, third_type) VALUES",
                batch.links,
            ),
            (SNAPSHOT_INSERT, batch.snapshots),
        ] {
            chunked(&mut statements, head, tuples, binds);
        }
        statements
    }
}

/// `(hash, salt)` of each of `rows`' initial password, in order. A few users created
/// together with one initial password share a salt, so the rounds of the hash run once per
/// group ([`SALT_GROUP`]).
fn hashed_passwords(
    rows: &[(&NewLinkedUser, String)],
    password_plain: &Secret,
) -> Vec<(String, String)> {
    rows.chunks(SALT_GROUP)
        .flat_map(|group| {
            let salt = password::new_salt();
            let derived = password::Derived::new(password_plain.expose(), &salt);
            group
                .iter()
                .map(|(linked, _)| (derived.hash(&linked.user.username), salt.clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The tuples of one multi-row `INSERT … VALUES` and their bound values, in order.
pub(super) type Rows = (Vec<String>, Vec<Option<String>>);

/// The rows of a batch of new users, one [`Rows`] per table.
#[derive(Default)]
struct BatchRows {
    /// `sys_user`.
    users: Rows,
    /// `sys_user_depart`.
    members: Rows,
    /// `sys_user_tenant`.
    tenants: Rows,
    /// `sys_third_account`.
    links: Rows,
    /// `dingsync_snapshot`.
    snapshots: Rows,
}

impl BatchRows {
    /// The user `id`'s `sys_user` row, its memberships and (tenant not 0) its tenant row.
    fn push_user(
        &mut self,
        tenant: TenantId,
        linked: &NewLinkedUser,
        id: &str,
        hash: String,
        salt: String,
    ) {
        let user = &linked.user;
        self.users.0.push(USER_ROW.into());
        self.users.1.extend(user_values(id, user, hash, salt));
        let mut depts: Vec<&String> = user.depart_ids.iter().collect();
        depts.sort();
        depts.dedup();
        for dept in depts {
            self.members.0.push("(?, ?, ?)".into());
            self.members
                .1
                .extend([Some(new_id()), Some(id.to_string()), Some(dept.clone())]);
        }
        if tenant != 0 {
            self.tenants
                .0
                .push(format!("(?, ?, {tenant}, '1', ?, CURRENT_TIMESTAMP)"));
            self.tenants.1.extend([
                Some(new_id()),
                Some(id.to_string()),
                Some(CREATED_BY.into()),
            ]);
        }
    }

    /// The user `id`'s link row and its snapshot (with its base, synced `now`).
    fn push_link(&mut self, tenant: TenantId, linked: &NewLinkedUser, id: &str, now: i64) {
        self.links.0.push(format!(
            "(?, ?, 1, 0, ?, {tenant}, ?, ?, ?, CURRENT_TIMESTAMP, '{THIRD_TYPE_DINGTALK}')"
        ));
        self.links.1.extend([
            Some(new_id()),
            Some(id.to_string()),
            Some(linked.user.realname.clone()),
            linked.unionid.clone(),
            Some(linked.userid.clone()),
            Some(CREATED_BY.into()),
        ]);
        self.snapshots
            .0
            .push(format!("({tenant}, 'user', ?, ?, ?, {now}, ?)"));
        self.snapshots.1.extend([
            Some(id.to_string()),
            Some(linked.userid.clone()),
            Some(crate::sync::model::content_hash(&[&linked.base])),
            Some(linked.base.clone()),
        ]);
    }
}

/// The tables a pull fills.
const PULLED_TABLES: [&str; 6] = [
    "sys_user",
    "sys_user_depart",
    "sys_user_tenant",
    "sys_third_account",
    "sys_depart",
    "dingsync_snapshot",
];

impl Store {
    /// Refreshes PostgreSQL's planner statistics of the tables a pull fills (`ANALYZE`), as a
    /// pull into an empty database grows them: planned from the statistics of the empty
    /// tables, the lookups of each slice (links by userid, sync bases by DingTalk id) read
    /// every row so far, 33 ms a query at 100,000 users. Only the tables this role owns (the
    /// server skips the others with a warning), and none another session holds locked (a
    /// `VACUUM`, an index being built): skipped rather than waited for. Elsewhere nothing to
    /// do: InnoDB recounts a table once a tenth of it changed, SQLite plans from its indexes.
    pub async fn refresh_statistics(&self) -> StoreResult<()> {
        let super::Pools::Postgres(pool) = &self.pools else {
            return Ok(());
        };
        let owned: Vec<String> = sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_class c WHERE c.relkind = 'r' AND c.relname = ANY($1) \
             AND pg_table_is_visible(c.oid) AND pg_has_role(c.relowner, 'USAGE')",
        )
        .bind(PULLED_TABLES.as_slice())
        .fetch_all(pool)
        .await?;
        let tables: Vec<&str> = PULLED_TABLES
            .into_iter()
            .filter(|t| owned.iter().any(|o| o == t))
            .collect();
        if !tables.is_empty() {
            sqlx::query(&format!("ANALYZE (SKIP_LOCKED) {}", tables.join(", ")))
                .persistent(false)
                .execute(pool)
                .await?;
        }
        Ok(())
    }
}

/// Pushes `INSERT … VALUES` statements of `tuples` (each with the same number of the
/// `binds`, in order), as few as [`MAX_BINDS`] allows.
pub(super) fn chunked(
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

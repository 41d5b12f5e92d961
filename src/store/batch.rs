//! A pull's local writes in batches: the users of a slice inserted with their memberships,
//! tenant rows, link rows and snapshots in one marked transaction of multi-row statements,
//! their unique keys checked in one query per key. A user the batch cannot take (a value
//! another user holds, a DingTalk userid another link row holds) is answered for alone, so
//! one bad row never costs the others; a batch that fails as a whole is retried row by row
//! by the caller.

use std::collections::{HashMap, HashSet};

use crate::config::TenantId;
use crate::jeecg::{password, Link, NewUser, UserUpdate, THIRD_TYPE_DINGTALK};
use crate::secret::Secret;

use super::links::LinkSaved;
use super::snapshots::{SnapshotWrite, SNAPSHOT_INSERT};
use super::user_writes::{user_update_statements, user_values, USER_INSERT, USER_ROW};
use super::write::{new_id, placeholders, CREATED_BY};
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
type Rows = (Vec<String>, Vec<Option<String>>);

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
    async fn link_statements(
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
    fn snapshot_statements(
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

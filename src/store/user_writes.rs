//! JeecgBoot's users as dingsync writes them: new rows with a salt and JeecgBoot's password
//! hash after a unique-key check (`user_clash`, `insert_user`), column and membership
//! updates (`update_user_fields`, whose statements the batched pull shares), and the stored
//! password of a user (for tests and tools).

use crate::jeecg::{password, NewUser, UserUpdate};
use crate::secret::Secret;

use super::write::{new_id, CREATED_BY};
use super::{Store, StoreError, StoreResult};

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

impl Store {
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
        let rows: Vec<Row> = crate::store::on_pool!(self, |pool| {
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
            let count: i64 = crate::store::on_pool!(self, |pool| sqlx::query_scalar(&sql)
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
            crate::store::on_pool!(self, |pool| sqlx::query_as(&sql)
                .bind(username)
                .fetch_optional(pool)
                .await?);
        Ok(row.and_then(|(hash, salt)| Some((hash?, salt?))))
    }
}

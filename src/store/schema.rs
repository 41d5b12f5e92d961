//! dingsync's own tables and the change-log triggers on JeecgBoot's tables, per dialect:
//! `init` (versioned, forward migrations, idempotent) and `uninstall` (drops only what
//! `init` made).
//!
//! Echo suppression (writes made by dingsync itself are not logged as local changes) is a
//! session marker the triggers respect: MariaDB/MySQL `@dingsync_writer`, PostgreSQL the
//! `dingsync.writer` setting, both set on every connection of dingsync's pool; SQLite has no
//! session state a trigger can see, so dingsync's writing transactions hold a row in
//! `dingsync_writer` (SQLite lets one writer in at a time, so no other write sees it).

use crate::config::Backend;

use super::{Store, StoreError, StoreResult};

/// The schema version this build creates.
pub const SCHEMA_VERSION: i64 = 6;
/// PostgreSQL NOTIFY channel raised by the change-log triggers.
pub const NOTIFY_CHANNEL: &str = "dingsync_change";

/// JeecgBoot tables whose changes are logged: (table, key column, tenant column, the schema
/// version that added its triggers).
pub const LOGGED_TABLES: &[(&str, &str, Option<&str>, i64)] = &[
    ("sys_user", "id", None, 1),
    ("sys_depart", "id", Some("tenant_id"), 1),
    ("sys_user_depart", "user_id", None, 1),
    ("sys_user_position", "user_id", None, 1),
    ("sys_announcement", "id", Some("tenant_id"), 1),
    // A user joining a tenant (JeecgBoot's "invite to tenant") touches only this table.
    ("sys_user_tenant", "user_id", Some("tenant_id"), 4),
];

/// The change-log triggers that schema `version` adds.
fn triggers_of_version(backend: Backend, version: i64) -> Vec<String> {
    LOGGED_TABLES
        .iter()
        .filter(|(_, _, _, since)| *since == version)
        .flat_map(|(table, key, tenant, _)| triggers(backend, table, key, *tenant))
        .collect()
}

/// dingsync's own tables, in creation order.
pub const OWN_TABLES: &[&str] = &[
    "dingsync_meta",
    "dingsync_change",
    "dingsync_job",
    "dingsync_snapshot",
    "dingsync_delivery",
    "dingsync_outbox",
    "dingsync_run",
    "dingsync_lease",
    "dingsync_writer",
    "dingsync_change_gap",
    "dingsync_event",
    "dingsync_stream",
    "dingsync_version",
];

fn autoinc(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
        Backend::MySql => "BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY",
        Backend::Postgres => "BIGSERIAL PRIMARY KEY",
    }
}

/// `CREATE TABLE` statements of version 1.
fn own_tables(backend: Backend) -> Vec<String> {
    let engine = if backend == Backend::MySql {
        " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
    } else {
        ""
    };
    let mut statements: Vec<String> = table_bodies(autoinc(backend))
        .iter()
        .map(|body| format!("CREATE TABLE IF NOT EXISTS {body}{engine}"))
        .collect();
    let index = |name: &str, on: &str| match backend {
        Backend::MySql => format!("CREATE INDEX {name} ON {on}"),
        _ => format!("CREATE INDEX IF NOT EXISTS {name} ON {on}"),
    };
    statements.push(index("dingsync_job_due", "dingsync_job (state, run_at)"));
    statements.push(index(
        "dingsync_change_time",
        "dingsync_change (changed_at)",
    ));
    statements
}

/// dingsync's tables as first created (`id`: the dialect's auto-increment key); migrations
/// add to them.
fn table_bodies(id: &str) -> [String; 9] {
    [
        "dingsync_meta (name VARCHAR(64) NOT NULL PRIMARY KEY, value VARCHAR(255) NOT NULL)".to_string(),
        format!(
            "dingsync_change (id {id}, table_name VARCHAR(64) NOT NULL, row_key VARCHAR(64) NOT NULL, \
             op CHAR(1) NOT NULL, tenant_id BIGINT NULL, changed_at BIGINT NOT NULL)"
        ),
        format!(
            "dingsync_job (id {id}, tenant_id BIGINT NOT NULL, kind VARCHAR(32) NOT NULL, \
             entity_key VARCHAR(64) NOT NULL, pending_key VARCHAR(191) NULL, state VARCHAR(16) NOT NULL, \
             attempts BIGINT NOT NULL DEFAULT 0, run_at BIGINT NOT NULL, lease_owner VARCHAR(64) NULL, \
             lease_until BIGINT NULL, last_error TEXT NULL, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL, \
             UNIQUE (pending_key))"
        ),
        "dingsync_snapshot (tenant_id BIGINT NOT NULL, entity VARCHAR(16) NOT NULL, local_id VARCHAR(64) NOT NULL, \
         ding_id VARCHAR(64) NOT NULL, content_hash VARCHAR(64) NOT NULL, synced_at BIGINT NOT NULL, \
         PRIMARY KEY (tenant_id, entity, local_id))"
            .to_string(),
        format!(
            "dingsync_delivery (id {id}, tenant_id BIGINT NOT NULL, source VARCHAR(16) NOT NULL, \
             source_id VARCHAR(64) NOT NULL, chunk BIGINT NOT NULL, recipients TEXT NULL, state VARCHAR(16) NOT NULL, \
             task_id BIGINT NULL, sent_at BIGINT NULL, recalled_at BIGINT NULL, result TEXT NULL, error TEXT NULL, \
             created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL, UNIQUE (source, source_id, chunk))"
        ),
        format!(
            "dingsync_outbox (id {id}, tenant_id BIGINT NOT NULL DEFAULT 0, to_userids TEXT NULL, \
             to_usernames TEXT NULL, to_dept_ids TEXT NULL, to_all SMALLINT NOT NULL DEFAULT 0, message TEXT NOT NULL, \
             status VARCHAR(16) NOT NULL DEFAULT 'pending', task_ids TEXT NULL, error TEXT NULL, \
             created_at BIGINT NULL, updated_at BIGINT NULL)"
        ),
        format!(
            "dingsync_run (id {id}, tenant_id BIGINT NOT NULL, kind VARCHAR(32) NOT NULL, started_at BIGINT NOT NULL, \
             finished_at BIGINT NULL, created BIGINT NOT NULL DEFAULT 0, updated BIGINT NOT NULL DEFAULT 0, \
             deleted BIGINT NOT NULL DEFAULT 0, skipped BIGINT NOT NULL DEFAULT 0, failed BIGINT NOT NULL DEFAULT 0, \
             api_calls TEXT NULL, error TEXT NULL)"
        ),
        "dingsync_lease (name VARCHAR(128) NOT NULL PRIMARY KEY, owner VARCHAR(64) NOT NULL, expires_at BIGINT NOT NULL)"
            .to_string(),
        "dingsync_writer (marker BIGINT NOT NULL PRIMARY KEY)".to_string(),
    ]
}

fn now_expr(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
        Backend::MySql => "CAST(ROUND(UNIX_TIMESTAMP(NOW(3)) * 1000) AS SIGNED)",
        Backend::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
    }
}

const OPS: [(&str, &str, &str); 3] = [
    ("INSERT", "ai", "I"),
    ("UPDATE", "au", "U"),
    ("DELETE", "ad", "D"),
];

/// Trigger statements for one logged table.
fn triggers(backend: Backend, table: &str, key: &str, tenant: Option<&str>) -> Vec<String> {
    let now = now_expr(backend);
    match backend {
        Backend::Postgres => {
            let tenant = tenant.map_or("NULL".to_string(), |c| format!("r.{c}"));
            vec![
                format!(
                    "CREATE OR REPLACE FUNCTION dingsync_log_{table}() RETURNS trigger AS $body$ \
                     DECLARE r RECORD; change_id BIGINT; \
                     BEGIN \
                       IF current_setting('dingsync.writer', true) = 'on' THEN RETURN NULL; END IF; \
                       IF TG_OP = 'DELETE' THEN r := OLD; ELSE r := NEW; END IF; \
                       INSERT INTO dingsync_change (table_name, row_key, op, tenant_id, changed_at) \
                       VALUES ('{table}', r.{key}, left(TG_OP, 1), {tenant}, {now}) RETURNING id INTO change_id; \
                       PERFORM pg_notify('{NOTIFY_CHANNEL}', change_id::text); \
                       RETURN NULL; \
                     END $body$ LANGUAGE plpgsql"
                ),
                format!("DROP TRIGGER IF EXISTS dingsync_change_trg ON {table}"),
                format!(
                    "CREATE TRIGGER dingsync_change_trg AFTER INSERT OR UPDATE OR DELETE ON {table} \
                     FOR EACH ROW EXECUTE FUNCTION dingsync_log_{table}()"
                ),
            ]
        }
        Backend::MySql => OPS
            .iter()
            .flat_map(|(event, suffix, op)| {
                let row = if *op == "D" { "OLD" } else { "NEW" };
                let tenant = tenant.map_or("NULL".to_string(), |c| format!("{row}.{c}"));
                [
                    format!("DROP TRIGGER IF EXISTS dingsync_{table}_{suffix}"),
                    format!(
                        "CREATE TRIGGER dingsync_{table}_{suffix} AFTER {event} ON {table} FOR EACH ROW \
                         BEGIN IF @dingsync_writer IS NULL THEN \
                         INSERT INTO dingsync_change (table_name, row_key, op, tenant_id, changed_at) \
                         VALUES ('{table}', {row}.{key}, '{op}', {tenant}, {now}); END IF; END"
                    ),
                ]
            })
            .collect(),
        Backend::Sqlite => OPS
            .iter()
            .map(|(event, suffix, op)| {
                let row = if *op == "D" { "OLD" } else { "NEW" };
                let tenant = tenant.map_or("NULL".to_string(), |c| format!("{row}.{c}"));
                format!(
                    "CREATE TRIGGER IF NOT EXISTS dingsync_{table}_{suffix} AFTER {event} ON {table} \
                     WHEN NOT EXISTS (SELECT 1 FROM dingsync_writer) BEGIN \
                     INSERT INTO dingsync_change (table_name, row_key, op, tenant_id, changed_at) \
                     VALUES ('{table}', {row}.{key}, '{op}', {tenant}, {now}); END"
                )
            })
            .collect(),
    }
}

/// The outbox trigger (version 2): a row inserted into `dingsync_outbox` by another program
/// is logged like a JeecgBoot change, so the daemon wakes and delivers it.
fn outbox_trigger(backend: Backend) -> Vec<String> {
    let now = now_expr(backend);
    let insert = format!(
        "INSERT INTO dingsync_change (table_name, row_key, op, tenant_id, changed_at) VALUES ('dingsync_outbox', {}, 'I', NEW.tenant_id, {now})",
        match backend {
            Backend::MySql => "CAST(NEW.id AS CHAR)",
            _ => "CAST(NEW.id AS TEXT)",
        }
    );
    match backend {
        Backend::Sqlite => vec![format!("CREATE TRIGGER IF NOT EXISTS dingsync_outbox_ai AFTER INSERT ON dingsync_outbox BEGIN {insert}; END")],
        Backend::MySql => vec![
            "DROP TRIGGER IF EXISTS dingsync_outbox_ai".to_string(),
            format!("CREATE TRIGGER dingsync_outbox_ai AFTER INSERT ON dingsync_outbox FOR EACH ROW BEGIN {insert}; END"),
        ],
        Backend::Postgres => vec![
            format!(
                "CREATE OR REPLACE FUNCTION dingsync_log_outbox() RETURNS trigger AS $body$ DECLARE change_id BIGINT; BEGIN \
                 {insert} RETURNING id INTO change_id; PERFORM pg_notify('{NOTIFY_CHANNEL}', change_id::text); RETURN NULL; END $body$ LANGUAGE plpgsql"
            ),
            "DROP TRIGGER IF EXISTS dingsync_outbox_trg ON dingsync_outbox".to_string(),
            "CREATE TRIGGER dingsync_outbox_trg AFTER INSERT ON dingsync_outbox FOR EACH ROW EXECUTE FUNCTION dingsync_log_outbox()".to_string(),
        ],
    }
}

/// Every statement of migration `version`.
fn migration(backend: Backend, version: i64) -> Vec<String> {
    match version {
        1 => {
            let mut statements = own_tables(backend);
            statements.extend(triggers_of_version(backend, 1));
            statements
        }
        2 => migration_2(backend),
        3 => migration_3(backend),
        4 => migration_4(backend),
        5 => migration_5(backend),
        6 => migration_6(backend),
        _ => Vec::new(),
    }
}

/// Version 2: the outbox trigger, and an index for claims, which skip entities with a
/// running job: find those fast.
fn migration_2(backend: Backend) -> Vec<String> {
    let mut statements = outbox_trigger(backend);
    statements.push(match backend {
        Backend::MySql => "CREATE INDEX dingsync_job_entity ON dingsync_job (entity_key, kind, tenant_id, state)".to_string(),
        _ => "CREATE INDEX IF NOT EXISTS dingsync_job_entity ON dingsync_job (entity_key, kind, tenant_id, state)".to_string(),
    });
    statements
}

/// Version 3: JeecgBoot's sys_third_account has no index on sys_user_id, so every "link of
/// this user" lookup (dingsync's, and JeecgBoot's own getOneBySysUserId) scans the table:
/// quadratic over a bulk push or pull. An index of ours fixes it; uninstall drops it.
fn migration_3(backend: Backend) -> Vec<String> {
    vec![format!(
        "CREATE INDEX {if_not_exists}{LINK_INDEX} ON sys_third_account (sys_user_id)",
        if_not_exists = if backend == Backend::MySql {
            ""
        } else {
            "IF NOT EXISTS "
        }
    )]
}

/// Version 4: gaps in change ids the reader passed, watched for rows a long transaction
/// commits into them later (see `Store::changes_to_jobs`); tenant membership logged.
fn migration_4(backend: Backend) -> Vec<String> {
    let mut statements = vec![format!(
        "CREATE TABLE IF NOT EXISTS dingsync_change_gap (lo BIGINT NOT NULL PRIMARY KEY, \
         hi BIGINT NOT NULL, since BIGINT NOT NULL){}",
        if backend == Backend::MySql {
            " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
        } else {
            ""
        }
    )];
    statements.extend(triggers_of_version(backend, 4));
    statements
}

/// Version 6: DingTalk's Stream events, each one's id once (DingTalk redelivers, sometimes
/// after a correct ack), each tenant's connection state for `status`, and the department
/// tree's version.
fn migration_6(backend: Backend) -> Vec<String> {
    let engine = if backend == Backend::MySql {
        " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
    } else {
        ""
    };
    let mut statements = vec![
        format!(
            "CREATE TABLE IF NOT EXISTS dingsync_event (tenant_id BIGINT NOT NULL, event_id VARCHAR(128) NOT NULL, \
             event_type VARCHAR(64) NOT NULL, received_at BIGINT NOT NULL, PRIMARY KEY (tenant_id, event_id)){engine}"
        ),
        // The purge finds old ids by an index, not by scanning (no gap locks taken
        // across the table on MariaDB).
        if backend == Backend::MySql {
            "CREATE INDEX dingsync_event_received ON dingsync_event (received_at)".to_string()
        } else {
            "CREATE INDEX IF NOT EXISTS dingsync_event_received ON dingsync_event (received_at)".to_string()
        },
        format!(
            "CREATE TABLE IF NOT EXISTS dingsync_stream (tenant_id BIGINT NOT NULL PRIMARY KEY, instance VARCHAR(128) NOT NULL, \
             state TEXT NOT NULL, updated_at BIGINT NOT NULL){engine}"
        ),
    ];
    statements.extend(version_triggers(backend, engine));
    statements
}

/// The department tree's version (schema 6): every write to `sys_depart` and to a
/// department's snapshot — by anyone, dingsync included — bumps `dingsync_version.depts`, so
/// that a tree read into memory is known to be current with one indexed read.
fn version_triggers(backend: Backend, engine: &str) -> Vec<String> {
    let bump = "UPDATE dingsync_version SET version = version + 1 WHERE name = 'depts'";
    let mut statements = vec![
        format!(
            "CREATE TABLE IF NOT EXISTS dingsync_version (name VARCHAR(32) NOT NULL PRIMARY KEY, version BIGINT NOT NULL){engine}"
        ),
        match backend {
            Backend::MySql => "INSERT IGNORE INTO dingsync_version (name, version) VALUES ('depts', 0)".to_string(),
            _ => "INSERT INTO dingsync_version (name, version) VALUES ('depts', 0) ON CONFLICT DO NOTHING".to_string(),
        },
    ];
    // (event, suffix, the row a snapshot trigger looks at)
    let events = [
        ("INSERT", "ai", "NEW"),
        ("UPDATE", "au", "NEW"),
        ("DELETE", "ad", "OLD"),
    ];
    match backend {
        Backend::Postgres => statements.extend([
            format!("CREATE OR REPLACE FUNCTION dingsync_bump_depts() RETURNS trigger AS $body$ BEGIN {bump}; RETURN NULL; END $body$ LANGUAGE plpgsql"),
            "DROP TRIGGER IF EXISTS dingsync_version_trg ON sys_depart".to_string(),
            "CREATE TRIGGER dingsync_version_trg AFTER INSERT OR UPDATE OR DELETE ON sys_depart FOR EACH STATEMENT EXECUTE FUNCTION dingsync_bump_depts()".to_string(),
            "DROP TRIGGER IF EXISTS dingsync_version_new ON dingsync_snapshot".to_string(),
            "CREATE TRIGGER dingsync_version_new AFTER INSERT OR UPDATE ON dingsync_snapshot FOR EACH ROW WHEN (NEW.entity = 'dept') EXECUTE FUNCTION dingsync_bump_depts()".to_string(),
            "DROP TRIGGER IF EXISTS dingsync_version_old ON dingsync_snapshot".to_string(),
            "CREATE TRIGGER dingsync_version_old AFTER DELETE ON dingsync_snapshot FOR EACH ROW WHEN (OLD.entity = 'dept') EXECUTE FUNCTION dingsync_bump_depts()".to_string(),
        ]),
        Backend::MySql => {
            for (event, suffix, row) in events {
                statements.push(format!("DROP TRIGGER IF EXISTS dingsync_ver_sys_depart_{suffix}"));
                statements.push(format!(
                    "CREATE TRIGGER dingsync_ver_sys_depart_{suffix} AFTER {event} ON sys_depart FOR EACH ROW {bump}"
                ));
                statements.push(format!("DROP TRIGGER IF EXISTS dingsync_ver_snapshot_{suffix}"));
                statements.push(format!(
                    "CREATE TRIGGER dingsync_ver_snapshot_{suffix} AFTER {event} ON dingsync_snapshot FOR EACH ROW \
                     BEGIN IF {row}.entity = 'dept' THEN {bump}; END IF; END"
                ));
            }
        }
        Backend::Sqlite => {
            for (event, suffix, row) in events {
                statements.push(format!(
                    "CREATE TRIGGER IF NOT EXISTS dingsync_ver_sys_depart_{suffix} AFTER {event} ON sys_depart BEGIN {bump}; END"
                ));
                statements.push(format!(
                    "CREATE TRIGGER IF NOT EXISTS dingsync_ver_snapshot_{suffix} AFTER {event} ON dingsync_snapshot \
                     WHEN {row}.entity = 'dept' BEGIN {bump}; END"
                ));
            }
        }
    }
    statements
}

/// Version 5: jobs count their waits (nothing waits forever); snapshots keep the sync base
/// and are found by their DingTalk id (who claims a DingTalk user, in every tenant); a
/// delivery's unique key carries its tenant.
fn migration_5(backend: Backend) -> Vec<String> {
    let index = if backend == Backend::MySql {
        "CREATE INDEX dingsync_snapshot_ding ON dingsync_snapshot (tenant_id, entity, ding_id)"
    } else {
        "CREATE INDEX IF NOT EXISTS dingsync_snapshot_ding ON dingsync_snapshot (tenant_id, entity, ding_id)"
    };
    let mut statements = vec![
        "ALTER TABLE dingsync_job ADD COLUMN waits BIGINT NOT NULL DEFAULT 0".to_string(),
        // The sync base: the fields last agreed with DingTalk (JSON); none until the entity
        // is next synced, which then takes what DingTalk holds.
        "ALTER TABLE dingsync_snapshot ADD COLUMN base TEXT NULL".to_string(),
        index.to_string(),
    ];
    statements.extend(match backend {
        Backend::MySql => vec![
            "ALTER TABLE dingsync_delivery DROP INDEX source, ADD UNIQUE KEY dingsync_delivery_chunk (tenant_id, source, source_id, chunk)".to_string(),
        ],
        Backend::Postgres => vec![
            "ALTER TABLE dingsync_delivery DROP CONSTRAINT IF EXISTS dingsync_delivery_source_source_id_chunk_key".to_string(),
            "ALTER TABLE dingsync_delivery ADD CONSTRAINT dingsync_delivery_chunk UNIQUE (tenant_id, source, source_id, chunk)".to_string(),
        ],
        // SQLite cannot drop a table's constraint: the table is rebuilt.
        Backend::Sqlite => vec![
            format!(
                "CREATE TABLE dingsync_delivery_v5 (id {}, tenant_id BIGINT NOT NULL, source VARCHAR(16) NOT NULL, \
                 source_id VARCHAR(64) NOT NULL, chunk BIGINT NOT NULL, recipients TEXT NULL, state VARCHAR(16) NOT NULL, \
                 task_id BIGINT NULL, sent_at BIGINT NULL, recalled_at BIGINT NULL, result TEXT NULL, error TEXT NULL, \
                 created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL, UNIQUE (tenant_id, source, source_id, chunk))",
                autoinc(backend)
            ),
            "INSERT INTO dingsync_delivery_v5 (id, tenant_id, source, source_id, chunk, recipients, state, task_id, sent_at, \
             recalled_at, result, error, created_at, updated_at) SELECT id, tenant_id, source, source_id, chunk, recipients, \
             state, task_id, sent_at, recalled_at, result, error, created_at, updated_at FROM dingsync_delivery".to_string(),
            "DROP TABLE dingsync_delivery".to_string(),
            "ALTER TABLE dingsync_delivery_v5 RENAME TO dingsync_delivery".to_string(),
        ],
    });
    statements
}

/// dingsync's index on JeecgBoot's `sys_third_account (sys_user_id)` (schema version 3).
pub const LINK_INDEX: &str = "dingsync_sta_user";

/// What `init` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitReport {
    /// Schema version before (0: none).
    pub from_version: i64,
    /// Schema version after.
    pub to_version: i64,
    /// JeecgBoot tables created (`--with-jeecg-schema`).
    pub jeecg_tables_created: usize,
}

impl Store {
    /// Whether `table` exists.
    pub async fn table_exists(&self, table: &str) -> StoreResult<bool> {
        let sql = match self.backend() {
            Backend::Sqlite => "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?",
            Backend::MySql => "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = ?",
            Backend::Postgres => "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = ?",
        };
        let sql = self.sql(sql);
        let count: i64 = crate::store::on_pool!(self, |pool| sqlx::query_scalar(&sql)
            .bind(table)
            .fetch_one(pool)
            .await?);
        Ok(count > 0)
    }

    /// The installed schema version (0 when dingsync's tables are absent).
    pub async fn schema_version(&self) -> StoreResult<i64> {
        if !self.table_exists("dingsync_meta").await? {
            return Ok(0);
        }
        let sql = "SELECT value FROM dingsync_meta WHERE name = 'schema_version'";
        let value: Option<String> = crate::store::on_pool!(self, |pool| sqlx::query_scalar(sql)
            .fetch_optional(pool)
            .await?);
        Ok(value.and_then(|v| v.parse().ok()).unwrap_or(0))
    }

    /// Creates dingsync's tables and triggers, migrating forward from the installed version;
    /// with `with_jeecg_schema`, first creates JeecgBoot's tables that are missing.
    pub async fn init(&self, with_jeecg_schema: bool) -> StoreResult<InitReport> {
        self.init_to(with_jeecg_schema, SCHEMA_VERSION).await
    }

    /// [`Store::init`], stopping at schema `target` (upgrade tests build older schemas).
    #[doc(hidden)]
    pub async fn init_to(&self, with_jeecg_schema: bool, target: i64) -> StoreResult<InitReport> {
        let jeecg_tables_created = if with_jeecg_schema {
            self.create_jeecg_tables().await?
        } else {
            0
        };
        for (table, _, _, _) in LOGGED_TABLES {
            if !self.table_exists(table).await? {
                return Err(StoreError::MissingTable((*table).to_string()));
            }
        }
        let from_version = self.schema_version().await?;
        if from_version > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                found: from_version,
                supported: SCHEMA_VERSION,
            });
        }
        let target = target.min(SCHEMA_VERSION);
        for version in from_version + 1..=target {
            self.migrate(version).await?;
        }
        Ok(InitReport {
            from_version,
            to_version: target.max(from_version),
            jeecg_tables_created,
        })
    }

    /// Runs migration `version` and records it. On SQLite and PostgreSQL, whose DDL is
    /// transactional, it is one transaction (a crash leaves the version before); MySQL
    /// commits each DDL statement, so there a statement that already took effect is
    /// tolerated when the migration runs again.
    async fn migrate(&self, version: i64) -> StoreResult<()> {
        let statements = migration(self.backend(), version);
        let record = self.sql(match self.backend() {
            Backend::MySql => "INSERT INTO dingsync_meta (name, value) VALUES ('schema_version', ?) ON DUPLICATE KEY UPDATE value = VALUES(value)",
            _ => "INSERT INTO dingsync_meta (name, value) VALUES ('schema_version', ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        }).into_owned();
        match &self.pools {
            super::Pools::MySql(_) => {
                for statement in &statements {
                    self.execute_ddl(statement).await?;
                }
                self.set_meta("schema_version", &version.to_string()).await
            }
            _ => {
                crate::store::on_pool!(self, |pool| {
                    let mut tx = pool.begin().await?;
                    for statement in &statements {
                        sqlx::raw_sql(statement).execute(&mut *tx).await?;
                    }
                    sqlx::query(&record)
                        .bind(version.to_string())
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                });
                Ok(())
            }
        }
    }

    /// Runs DDL on MySQL, tolerating what an interrupted migration already did: an index
    /// that exists (no IF NOT EXISTS there), a column that exists, a unique key dropped.
    async fn execute_ddl(&self, statement: &str) -> StoreResult<()> {
        match self.execute(statement).await {
            Ok(_) => Ok(()),
            Err(StoreError::Database(error)) => {
                // 1061 duplicate key name, 1060 duplicate column, 1091 cannot drop (gone).
                let code = error
                    .as_database_error()
                    .and_then(|e| e.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>())
                    .map(|e| e.number());
                if matches!(code, Some(1060 | 1061 | 1091)) {
                    Ok(())
                } else {
                    Err(StoreError::Database(error))
                }
            }
            Err(error) => Err(error),
        }
    }

    /// Writes a `dingsync_meta` value.
    pub async fn set_meta(&self, name: &str, value: &str) -> StoreResult<()> {
        let sql = match self.backend() {
            Backend::MySql => "INSERT INTO dingsync_meta (name, value) VALUES (?, ?) ON DUPLICATE KEY UPDATE value = VALUES(value)",
            _ => "INSERT INTO dingsync_meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        };
        let sql = self.sql(sql);
        crate::store::on_pool!(self, |pool| sqlx::query(&sql)
            .bind(name)
            .bind(value)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(())
    }

    /// Reads a `dingsync_meta` value.
    pub async fn meta(&self, name: &str) -> StoreResult<Option<String>> {
        let sql = self.sql("SELECT value FROM dingsync_meta WHERE name = ?");
        Ok(crate::store::on_pool!(self, |pool| sqlx::query_scalar(
            &sql
        )
        .bind(name)
        .fetch_optional(pool)
        .await?))
    }

    /// Names of dingsync's triggers present in the database.
    pub async fn trigger_names(&self) -> StoreResult<Vec<String>> {
        let sql = match self.backend() {
            Backend::Sqlite => "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'dingsync%' ORDER BY name",
            Backend::MySql => "SELECT trigger_name FROM information_schema.triggers WHERE trigger_schema = DATABASE() AND trigger_name LIKE 'dingsync%' ORDER BY trigger_name",
            Backend::Postgres => "SELECT event_object_table || '.' || trigger_name || '.' || event_manipulation FROM information_schema.triggers WHERE trigger_name LIKE 'dingsync%' ORDER BY 1",
        };
        Ok(crate::store::on_pool!(self, |pool| {
            sqlx::query_scalar::<_, String>(sql).fetch_all(pool).await?
        }))
    }

    /// Drops dingsync's triggers, trigger functions and tables. JeecgBoot's rows are not
    /// touched.
    pub async fn uninstall(&self) -> StoreResult<()> {
        self.drop_change_triggers().await?;
        self.drop_version_triggers().await?;
        self.drop_link_index().await?;
        for table in OWN_TABLES.iter().rev() {
            self.execute(&format!("DROP TABLE IF EXISTS {table}"))
                .await?;
        }
        Ok(())
    }

    /// The change-log triggers (and PostgreSQL's functions) on JeecgBoot's tables.
    async fn drop_change_triggers(&self) -> StoreResult<()> {
        for (table, _, _, _) in LOGGED_TABLES {
            let exists = self.table_exists(table).await?;
            let statements = match self.backend() {
                Backend::Postgres if exists => vec![
                    format!("DROP TRIGGER IF EXISTS dingsync_change_trg ON {table}"),
                    format!("DROP FUNCTION IF EXISTS dingsync_log_{table}()"),
                ],
                Backend::Postgres => {
                    vec![format!("DROP FUNCTION IF EXISTS dingsync_log_{table}()")]
                }
                _ => OPS
                    .iter()
                    .map(|(_, suffix, _)| {
                        format!("DROP TRIGGER IF EXISTS dingsync_{table}_{suffix}")
                    })
                    .collect(),
            };
            for statement in statements {
                self.execute(&statement).await?;
            }
        }
        Ok(())
    }

    /// The department tree's version triggers (those on `dingsync_snapshot` go with it).
    async fn drop_version_triggers(&self) -> StoreResult<()> {
        let sys_depart = self.table_exists("sys_depart").await?;
        let statements = match self.backend() {
            Backend::Postgres => {
                let mut drop = Vec::new();
                if sys_depart {
                    drop.push(
                        "DROP TRIGGER IF EXISTS dingsync_version_trg ON sys_depart".to_string(),
                    );
                }
                if self.table_exists("dingsync_snapshot").await? {
                    drop.push(
                        "DROP TRIGGER IF EXISTS dingsync_version_new ON dingsync_snapshot"
                            .to_string(),
                    );
                    drop.push(
                        "DROP TRIGGER IF EXISTS dingsync_version_old ON dingsync_snapshot"
                            .to_string(),
                    );
                }
                drop.push("DROP FUNCTION IF EXISTS dingsync_bump_depts()".to_string());
                drop
            }
            _ => OPS
                .iter()
                .map(|(_, suffix, _)| {
                    format!("DROP TRIGGER IF EXISTS dingsync_ver_sys_depart_{suffix}")
                })
                .collect(),
        };
        for statement in statements {
            self.execute(&statement).await?;
        }
        Ok(())
    }

    /// dingsync's index on `sys_third_account`.
    async fn drop_link_index(&self) -> StoreResult<()> {
        if !self.table_exists("sys_third_account").await? {
            return Ok(());
        }
        let drop = match self.backend() {
            Backend::MySql => {
                let sql = "SELECT COUNT(*) FROM information_schema.statistics WHERE table_schema = DATABASE() AND table_name = 'sys_third_account' AND index_name = ?";
                let sql = self.sql(sql);
                let count: i64 = crate::store::on_pool!(self, |pool| sqlx::query_scalar(&sql)
                    .bind(LINK_INDEX)
                    .fetch_one(pool)
                    .await?);
                (count > 0).then(|| format!("DROP INDEX {LINK_INDEX} ON sys_third_account"))
            }
            _ => Some(format!("DROP INDEX IF EXISTS {LINK_INDEX}")),
        };
        if let Some(statement) = drop {
            self.execute(&statement).await?;
        }
        Ok(())
    }
}

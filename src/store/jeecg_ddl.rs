//! JeecgBoot's tables, written from the facts of its MySQL schema (v3.8.2 plus the Flyway
//! upgrades to v3.9.2): same names, columns and unique keys, and the non-unique indexes that
//! dingsync's reads go through (tenant members, memberships, children of a department).
//! `dingsync init --with-jeecg-schema` creates the missing ones, for SQLite and PostgreSQL
//! installations and for test databases; a real JeecgBoot database already has them.

use crate::config::Backend;

use super::{Store, StoreResult};

/// Column types, rendered per dialect.
#[derive(Clone, Copy)]
enum Ty {
    /// VARCHAR(n).
    V(u16),
    /// TEXT.
    Text,
    /// INT.
    Int,
    /// TINYINT (flags).
    Tiny,
    /// DATETIME / TIMESTAMP.
    DateTime,
    /// DATE.
    Date,
}

use Ty::{Date, DateTime, Int, Text, Tiny, V};

struct Table {
    name: &'static str,
    columns: &'static [(&'static str, Ty)],
    primary: &'static str,
    unique: &'static [&'static [&'static str]],
    /// Non-unique indexes (name, columns): the ones JeecgBoot has that dingsync's reads use.
    indexes: &'static [(&'static str, &'static [&'static str])],
    defaults: &'static [(&'static str, &'static str)],
}

const AUDIT: [(&str, Ty); 4] = [
    ("create_by", V(32)),
    ("create_time", DateTime),
    ("update_by", V(32)),
    ("update_time", DateTime),
];

const TABLES: &[Table] = &[
    Table {
        name: "sys_user",
        columns: &[
            ("id", V(32)),
            ("username", V(100)),
            ("realname", V(100)),
            ("password", V(255)),
            ("salt", V(45)),
            ("avatar", V(255)),
            ("birthday", Date),
            ("sex", Tiny),
            ("email", V(45)),
            ("phone", V(45)),
            ("org_code", V(64)),
            ("status", Tiny),
            ("del_flag", Tiny),
            ("third_id", V(100)),
            ("third_type", V(100)),
            ("activiti_sync", Tiny),
            ("work_no", V(100)),
            ("telephone", V(45)),
            AUDIT[0],
            AUDIT[1],
            AUDIT[2],
            AUDIT[3],
            ("user_identity", Tiny),
            ("depart_ids", V(1000)),
            ("client_id", V(64)),
            ("login_tenant_id", Int),
            ("bpm_status", V(2)),
            ("sign_enable", Tiny),
            ("sign", V(500)),
            ("main_dep_post_id", V(32)),
            ("position_type", V(32)),
            ("last_pwd_update_time", DateTime),
            ("sort", Int),
            ("iz_hide_contact", V(1)),
        ],
        primary: "id",
        unique: &[&["work_no"], &["username"], &["phone"], &["email"]],
        indexes: &[
            ("idx_su_status", &["status"]),
            ("idx_su_del_flag", &["del_flag"]),
            ("idx_su_del_username", &["username", "del_flag"]),
        ],
        defaults: &[],
    },
    Table {
        name: "sys_depart",
        columns: &[
            ("id", V(32)),
            ("parent_id", V(32)),
            ("depart_name", V(100)),
            ("depart_name_en", V(500)),
            ("depart_name_abbr", V(500)),
            ("depart_order", Int),
            ("description", V(500)),
            ("org_category", V(10)),
            ("org_type", V(10)),
            ("org_code", V(64)),
            ("mobile", V(32)),
            ("fax", V(32)),
            ("address", V(100)),
            ("memo", V(500)),
            ("status", V(1)),
            ("del_flag", V(1)),
            ("qywx_identifier", V(100)),
            ("ding_identifier", V(100)),
            AUDIT[0],
            AUDIT[1],
            AUDIT[2],
            AUDIT[3],
            ("tenant_id", Int),
            ("iz_leaf", Tiny),
            ("position_id", V(32)),
            ("dep_post_parent_id", V(32)),
        ],
        primary: "id",
        unique: &[&["org_code"]],
        indexes: &[
            ("idx_sd_parent_id", &["parent_id"]),
            ("idx_sd_depart_order", &["depart_order"]),
        ],
        defaults: &[
            ("depart_order", "0"),
            ("org_category", "'1'"),
            ("tenant_id", "0"),
            ("iz_leaf", "0"),
        ],
    },
    Table {
        name: "sys_user_depart",
        columns: &[("ID", V(32)), ("user_id", V(32)), ("dep_id", V(32))],
        primary: "ID",
        unique: &[&["user_id", "dep_id"]],
        indexes: &[
            ("idx_sud_user_id", &["user_id"]),
            ("idx_sud_dep_id", &["dep_id"]),
        ],
        defaults: &[],
    },
    Table {
        name: "sys_third_account",
        columns: &[
            ("id", V(32)),
            ("sys_user_id", V(32)),
            ("avatar", V(255)),
            ("status", Tiny),
            ("del_flag", Tiny),
            ("realname", V(100)),
            ("tenant_id", Int),
            ("third_user_uuid", V(100)),
            ("third_user_id", V(100)),
            AUDIT[0],
            AUDIT[1],
            AUDIT[2],
            AUDIT[3],
            ("third_type", V(50)),
        ],
        primary: "id",
        unique: &[
            &["third_type", "third_user_id"],
            &["third_user_id", "third_type", "tenant_id"],
            &["third_user_uuid", "third_type", "tenant_id"],
        ],
        indexes: &[(
            "idx_sta_sys_user_id_third_type",
            &["sys_user_id", "third_type"],
        )],
        defaults: &[("tenant_id", "0")],
    },
    Table {
        name: "sys_third_app_config",
        columns: &[
            ("id", V(32)),
            ("tenant_id", Int),
            ("agent_id", V(20)),
            ("client_id", V(50)),
            ("client_secret", V(100)),
            ("corp_id", V(100)),
            ("third_type", V(20)),
            ("status", Int),
            ("create_time", DateTime),
            ("update_time", DateTime),
        ],
        primary: "id",
        unique: &[],
        indexes: &[
            ("idx_stac_tenant_id", &["tenant_id"]),
            ("idx_stac_third_type", &["third_type"]),
        ],
        defaults: &[("tenant_id", "0"), ("status", "1")],
    },
    Table {
        name: "sys_announcement",
        columns: &[
            ("id", V(32)),
            ("titile", V(100)),
            ("msg_content", Text),
            ("start_time", DateTime),
            ("end_time", DateTime),
            ("sender", V(100)),
            ("priority", V(255)),
            ("msg_category", V(10)),
            ("msg_type", V(10)),
            ("send_status", V(10)),
            ("send_time", DateTime),
            ("cancel_time", DateTime),
            ("del_flag", V(1)),
            ("bus_type", V(20)),
            ("bus_id", V(50)),
            ("open_type", V(20)),
            ("open_page", V(255)),
            AUDIT[0],
            AUDIT[1],
            AUDIT[2],
            AUDIT[3],
            ("user_ids", Text),
            ("msg_abstract", Text),
            ("dt_task_id", V(100)),
            ("tenant_id", Int),
            ("files", Text),
            ("visits_num", Int),
            ("iz_top", Int),
            ("iz_approval", V(10)),
            ("bpm_status", V(10)),
            ("msg_classify", V(255)),
            ("notice_type", V(10)),
        ],
        primary: "id",
        unique: &[],
        indexes: &[
            ("idx_sanno_send_status", &["send_status"]),
            ("idx_sanno_del_flag", &["del_flag"]),
            ("idx_sanno_tenant_id", &["tenant_id"]),
        ],
        defaults: &[("msg_category", "'2'"), ("tenant_id", "0"), ("iz_top", "0")],
    },
    Table {
        name: "sys_announcement_send",
        columns: &[
            ("id", V(32)),
            ("annt_id", V(32)),
            ("user_id", V(32)),
            ("read_flag", Int),
            ("read_time", DateTime),
            AUDIT[0],
            AUDIT[1],
            AUDIT[2],
            AUDIT[3],
            ("star_flag", V(10)),
        ],
        primary: "id",
        unique: &[],
        indexes: &[
            ("idx_sacm_annt_id", &["annt_id"]),
            ("idx_sacm_user_id", &["user_id"]),
        ],
        defaults: &[],
    },
    Table {
        name: "sys_position",
        columns: &[
            ("id", V(32)),
            ("code", V(100)),
            ("name", V(100)),
            ("post_level", Int),
            ("company_id", V(255)),
            ("create_by", V(50)),
            ("create_time", DateTime),
            ("update_by", V(50)),
            ("update_time", DateTime),
            ("sys_org_code", V(50)),
            ("tenant_id", Int),
        ],
        primary: "id",
        unique: &[&["code"]],
        indexes: &[],
        defaults: &[("tenant_id", "0")],
    },
    Table {
        name: "sys_user_position",
        columns: &[
            ("id", V(32)),
            ("user_id", V(32)),
            ("position_id", V(32)),
            ("create_by", V(50)),
            ("create_time", DateTime),
            ("update_by", V(50)),
            ("update_time", DateTime),
        ],
        primary: "id",
        unique: &[],
        indexes: &[
            ("idx_sup_user_id", &["user_id"]),
            ("idx_sup_position_id", &["position_id"]),
        ],
        defaults: &[],
    },
    Table {
        name: "sys_tenant",
        columns: &[
            ("id", Int),
            ("name", V(100)),
            ("create_time", DateTime),
            ("create_by", V(100)),
            ("begin_date", DateTime),
            ("end_date", DateTime),
            ("status", Int),
            ("trade", V(10)),
            ("company_size", V(10)),
            ("company_address", V(100)),
            ("company_logo", V(200)),
            ("house_number", V(10)),
            ("work_place", V(100)),
            ("secondary_domain", V(50)),
            ("login_bkgd_img", V(200)),
            ("position", V(10)),
            ("department", V(10)),
            ("del_flag", Tiny),
            ("update_by", V(32)),
            ("update_time", DateTime),
            ("apply_status", Int),
        ],
        primary: "id",
        unique: &[],
        indexes: &[],
        defaults: &[("del_flag", "0")],
    },
    Table {
        name: "sys_user_tenant",
        columns: &[
            ("id", V(32)),
            ("user_id", V(32)),
            ("tenant_id", Int),
            ("status", V(1)),
            AUDIT[0],
            AUDIT[1],
            AUDIT[2],
            AUDIT[3],
        ],
        primary: "id",
        unique: &[],
        indexes: &[
            ("idx_sut_user_id", &["user_id"]),
            ("idx_sut_tenant_id", &["tenant_id"]),
            ("idx_sut_userid_status", &["user_id", "status"]),
        ],
        defaults: &[],
    },
];

/// JeecgBoot's tables that `--with-jeecg-schema` creates.
pub fn table_names() -> Vec<&'static str> {
    TABLES.iter().map(|t| t.name).collect()
}

fn render_type(backend: Backend, ty: Ty) -> String {
    match (backend, ty) {
        (Backend::Sqlite, V(_) | Text | DateTime | Date) => "TEXT".into(),
        (Backend::Sqlite, Int | Tiny) => "INTEGER".into(),
        (_, V(n)) => format!("VARCHAR({n})"),
        (_, Text) => "TEXT".into(),
        (_, Int) => "INT".into(),
        (Backend::MySql, Tiny) => "TINYINT(1)".into(),
        (Backend::Postgres, Tiny) => "SMALLINT".into(),
        (Backend::MySql, DateTime) => "DATETIME".into(),
        (Backend::Postgres, DateTime) => "TIMESTAMP".into(),
        (_, Date) => "DATE".into(),
    }
}

fn create_statement(backend: Backend, table: &Table) -> String {
    let mut parts: Vec<String> = table
        .columns
        .iter()
        .map(|(column, ty)| {
            let not_null = if *column == table.primary {
                " NOT NULL"
            } else {
                ""
            };
            let default = table
                .defaults
                .iter()
                .find(|(c, _)| c == column)
                .map_or(String::new(), |(_, d)| format!(" DEFAULT {d}"));
            format!("{column} {}{not_null}{default}", render_type(backend, *ty))
        })
        .collect();
    parts.push(format!("PRIMARY KEY ({})", table.primary));
    for unique in table.unique {
        parts.push(format!("UNIQUE ({})", unique.join(", ")));
    }
    let suffix = if backend == Backend::MySql {
        " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
    } else {
        ""
    };
    format!(
        "CREATE TABLE IF NOT EXISTS {} ({}){suffix}",
        table.name,
        parts.join(", ")
    )
}

impl Store {
    /// Creates the JeecgBoot tables that are missing; returns how many it created.
    pub async fn create_jeecg_tables(&self) -> StoreResult<usize> {
        let mut created = 0;
        for table in TABLES {
            if !self.table_exists(table.name).await? {
                self.execute(&create_statement(self.backend(), table))
                    .await?;
                for (name, columns) in table.indexes {
                    self.execute(&format!(
                        "CREATE INDEX {name} ON {} ({})",
                        table.name,
                        columns.join(", ")
                    ))
                    .await?;
                }
                created += 1;
            }
        }
        Ok(created)
    }
}

//! JeecgBoot rows as dingsync sees them.

use crate::config::TenantId;

/// JeecgBoot's `third_type` for DingTalk links and app configs.
pub const THIRD_TYPE_DINGTALK: &str = "dingtalk";
/// `sys_depart.org_category` of a post (岗位), never pushed.
pub const ORG_CATEGORY_POST: &str = "3";

/// A `sys_user` row with its memberships and position names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalUser {
    /// `id`.
    pub id: String,
    /// `username` (the DingTalk userid on create).
    pub username: String,
    /// `realname` -> name.
    pub realname: String,
    /// `phone` -> mobile.
    pub phone: Option<String>,
    /// `telephone`.
    pub telephone: Option<String>,
    /// `work_no` -> job_number.
    pub work_no: Option<String>,
    /// `email`.
    pub email: Option<String>,
    /// `status`: 1 normal, 2 frozen (3 resigned in newer versions).
    pub status: Option<i64>,
    /// `del_flag`: 1 = logically deleted.
    pub del_flag: i64,
    /// Department ids from `sys_user_depart`.
    pub depart_ids: Vec<String>,
    /// Position names from `sys_user_position` -> `sys_position.name`.
    pub positions: Vec<String>,
}

impl LocalUser {
    /// Logically deleted users are not pushed.
    pub fn is_deleted(&self) -> bool {
        self.del_flag == 1
    }
}

/// A `sys_depart` row.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalDept {
    /// `id` (DingTalk `source_identifier`).
    pub id: String,
    /// `parent_id`; `None` for a top-level department (JeecgBoot writes NULL or '').
    pub parent_id: Option<String>,
    /// `depart_name`.
    pub name: String,
    /// `depart_order`.
    pub order: i64,
    /// `org_category`: 1 company, 2 department, 3 post, 4 subsidiary.
    pub org_category: String,
    /// `org_code`.
    pub org_code: String,
    /// `del_flag`.
    pub del_flag: String,
    /// `ding_identifier`: the DingTalk dept id.
    pub ding_identifier: Option<i64>,
    /// `tenant_id`.
    pub tenant_id: TenantId,
}

impl LocalDept {
    /// Posts are not departments in DingTalk.
    pub fn is_post(&self) -> bool {
        self.org_category == ORG_CATEGORY_POST
    }

    /// Logically deleted.
    pub fn is_deleted(&self) -> bool {
        self.del_flag == "1"
    }
}

/// A `sys_third_account` row with `third_type = 'dingtalk'`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// `sys_user_id`.
    pub user_id: String,
    /// `third_user_id`: the DingTalk userid.
    pub userid: String,
    /// `third_user_uuid`: the unionid.
    pub unionid: Option<String>,
    /// `tenant_id`.
    pub tenant_id: TenantId,
}

/// A user to insert (from a pull).
#[derive(Clone, Debug, Default)]
pub struct NewUser {
    /// `username` (= DingTalk userid).
    pub username: String,
    /// `realname`.
    pub realname: String,
    /// `phone`.
    pub phone: Option<String>,
    /// `email`.
    pub email: Option<String>,
    /// `telephone`.
    pub telephone: Option<String>,
    /// `work_no`.
    pub work_no: Option<String>,
    /// Departments (`sys_depart.id`).
    pub depart_ids: Vec<String>,
    /// Tenant (ties the user with `sys_user_tenant` when not 0).
    pub tenant_id: TenantId,
}

/// A department to insert (from a pull).
#[derive(Clone, Debug, Default)]
pub struct NewDept {
    /// `depart_name`.
    pub name: String,
    /// Parent `sys_depart.id`; `None` for top level.
    pub parent_id: Option<String>,
    /// `depart_order`.
    pub order: i64,
    /// The DingTalk dept id (`ding_identifier`).
    pub ding_identifier: i64,
    /// `tenant_id`.
    pub tenant_id: TenantId,
}

/// A DingTalk app from `sys_third_app_config` (JeecgBoot 3.4+).
#[derive(Clone, Debug)]
pub struct AppConfigRow {
    /// `tenant_id`.
    pub tenant_id: TenantId,
    /// `agent_id` (text in JeecgBoot).
    pub agent_id: String,
    /// `client_id`.
    pub client_id: String,
    /// `client_secret`.
    pub client_secret: crate::secret::Secret,
    /// `status` is 1 or NULL: JeecgBoot's own DingTalk integration is on (it sends
    /// announcements itself on publish).
    pub enabled: bool,
}

impl AppConfigRow {
    /// Whether its credentials are a placeholder (`'1'` or empty; a fresh JeecgBoot database
    /// ships one for tenant 0), not an app's.
    pub fn is_placeholder(&self) -> bool {
        [&self.agent_id, &self.client_id, self.client_secret.expose()]
            .iter()
            .any(|v| matches!(v.trim(), "" | "1"))
    }

    /// Whether JeecgBoot's own DingTalk integration is on with this row: enabled, with real
    /// credentials (it then sends announcements itself on publish).
    pub fn integration_on(&self) -> bool {
        self.enabled && !self.is_placeholder()
    }
}

/// Fields of a local user that a pull changes (`None`: unchanged).
#[derive(Clone, Debug, Default)]
pub struct UserUpdate {
    /// `realname`.
    pub realname: Option<String>,
    /// `phone`.
    pub phone: Option<String>,
    /// `email`.
    pub email: Option<String>,
    /// `telephone`.
    pub telephone: Option<String>,
    /// `work_no`.
    pub work_no: Option<String>,
}

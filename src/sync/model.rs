//! The sync engine's data: views of both sides, operations, and what a run did.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::config::TenantId;
use crate::jeecg::{Link, LocalDept, LocalUser};
use crate::store::snapshots::Snapshot;

use super::remote_users::RemoteUsers;

pub use super::contact::{mask_email, mask_mobile, mask_value, mobile_key, same_mobile};
pub use super::plan::merge::FieldMerge;

/// A user's fields as last agreed with DingTalk: the base of the three-way merge. Written
/// after every push or pull of the user (schema v5); none for users synced before.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct UserBase {
    /// name (realname).
    pub name: String,
    /// mobile (phone).
    pub mobile: String,
    /// telephone.
    pub telephone: String,
    /// email.
    pub email: String,
    /// job_number (work_no).
    pub job_number: String,
    /// title (position names).
    pub title: String,
    /// DingTalk departments, sorted.
    pub depts: Vec<i64>,
    /// A local mobile DingTalk cannot take (40022), already reported: reported once per
    /// change, not on every run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mobile_refused: Option<String>,
    /// The tenant whose `sys_third_account` row holds this DingTalk userid (JeecgBoot keeps
    /// one per userid), so this tenant's link lives in the snapshot: reported once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_held_by: Option<i64>,
}

/// A department's fields as last agreed with DingTalk.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct DeptBase {
    /// name.
    pub name: String,
    /// DingTalk parent id (1: top level).
    pub parent: i64,
    /// order.
    pub order: i64,
}

/// DingTalk department ids as a base keeps them: sorted, each once.
pub fn sorted(mut ids: Vec<i64>) -> Vec<i64> {
    ids.sort_unstable();
    ids.dedup();
    ids
}

impl UserBase {
    /// What DingTalk holds for `person`: the base of a link made without one (a first link,
    /// or one synced before schema v5).
    pub fn of(person: &crate::dingtalk::types::DtUser) -> Self {
        Self {
            name: person.name.clone(),
            mobile: person.mobile.clone(),
            telephone: person.telephone.clone(),
            email: person.email.clone(),
            job_number: person.job_number.clone(),
            title: person.title.clone(),
            depts: sorted(person.dept_id_list.clone()),
            mobile_refused: None,
            link_held_by: None,
        }
    }
}

impl Snapshot {
    /// The user base it holds, if any (written from schema v5 on).
    pub fn user_base(&self) -> Option<UserBase> {
        serde_json::from_str(self.base.as_deref()?).ok()
    }

    /// The department base it holds, if any.
    pub fn dept_base(&self) -> Option<DeptBase> {
        serde_json::from_str(self.base.as_deref()?).ok()
    }
}

/// DingTalk's root department.
pub const ROOT_DEPT: i64 = 1;

/// Entity names used in snapshots and reports.
pub mod entity {
    /// A user.
    pub const USER: &str = "user";
    /// A department.
    pub const DEPT: &str = "dept";
}

/// Which way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Local -> DingTalk.
    Push,
    /// DingTalk -> local.
    Pull,
}

/// What.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Users only.
    Users,
    /// Departments only.
    Departments,
    /// Both.
    All,
}

impl Scope {
    /// Includes users.
    pub fn users(self) -> bool {
        matches!(self, Self::Users | Self::All)
    }

    /// Includes departments.
    pub fn departments(self) -> bool {
        matches!(self, Self::Departments | Self::All)
    }
}

/// A DingTalk department from the tree walk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteDept {
    /// Id.
    pub dept_id: i64,
    /// Name.
    pub name: String,
    /// Parent id (1 for top level).
    pub parent_id: i64,
    /// `source_identifier`, fetched only where a pull needs it.
    pub source_identifier: Option<String>,
}

/// DingTalk's side: the whole organisation (a full run), or the part a job read.
#[derive(Clone, Debug, Default)]
pub struct RemoteView {
    /// Every department but the root (a job: those it read).
    pub depts: Vec<RemoteDept>,
    /// Every user, once (multi-department members are listed in each department), packed
    /// (a job: those it read).
    pub users: RemoteUsers,
    /// Only part of DingTalk was read (a job): a department that was not read is taken to
    /// exist where a local link says it does.
    pub partial: bool,
    /// Departments a job looked up that DingTalk does not have.
    pub absent: std::collections::HashSet<i64>,
}

impl RemoteView {
    /// What a job reads: nothing yet.
    pub fn partial() -> Self {
        Self {
            partial: true,
            ..Self::default()
        }
    }
}

/// The local side of one tenant.
#[derive(Clone, Debug, Default)]
pub struct LocalView {
    /// The tenant.
    pub tenant: TenantId,
    /// Departments (posts and deleted ones included; the plans filter).
    pub depts: Vec<LocalDept>,
    /// Users (logically deleted ones included).
    pub users: Vec<LocalUser>,
    /// Ids of every `sys_user` row (for hard-delete detection).
    pub all_user_ids: Vec<String>,
    /// DingTalk links.
    pub links: Vec<Link>,
    /// Department snapshots by local id.
    pub dept_snapshots: HashMap<String, Snapshot>,
    /// User snapshots by local id.
    pub user_snapshots: HashMap<String, Snapshot>,
    /// Live local users beyond `users` that could claim the DingTalk users `users` match
    /// (by link, mobile or username), with their links and snapshots in `links` and
    /// `user_snapshots`: a slice or a job judges identity against them.
    pub claimers: Vec<LocalUser>,
    /// Departments whose job is dead (DingTalk refused them), with the job's last error.
    pub dead_depts: HashMap<String, String>,
}

/// A department in a push plan: already in DingTalk, or created earlier in the same plan.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeptRef {
    /// A DingTalk dept id.
    Ding(i64),
    /// A local department created by this plan (its DingTalk id is known once created).
    Local(String),
}

/// A department in a pull plan: an existing local one, or one created by the same plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LocalRef {
    /// Top level (DingTalk root).
    Top,
    /// An existing `sys_depart.id`.
    Local(String),
    /// The local department this plan creates for that DingTalk id.
    Created(i64),
}

/// Fields of a DingTalk user that a push sets.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct UserFields {
    /// name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// telephone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub telephone: Option<String>,
    /// job_number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_number: Option<String>,
    /// title.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// email.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// dept_id_list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub depts: Option<Vec<DeptRef>>,
}

impl UserFields {
    /// Nothing to change.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Local user fields that a pull sets.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LocalUserFields {
    /// realname.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub realname: Option<String>,
    /// phone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// email.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// telephone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub telephone: Option<String>,
    /// work_no.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub work_no: Option<String>,
    /// Departments to add the user to.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub add_depts: Vec<LocalRef>,
    /// Departments (`sys_depart.id`) to take the user out of (DingTalk moved them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remove_depts: Vec<String>,
}

impl LocalUserFields {
    /// Nothing to change.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// One step of a plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Create a DingTalk department.
    CreateDept {
        /// `sys_depart.id` (sent as `source_identifier`).
        local_id: String,
        /// Name.
        name: String,
        /// Parent.
        parent: DeptRef,
        /// Order.
        order: i64,
    },
    /// Update a DingTalk department (only the fields given).
    UpdateDept {
        /// `sys_depart.id`.
        local_id: String,
        /// DingTalk id.
        dept_id: i64,
        /// New name.
        name: Option<String>,
        /// New parent.
        parent: Option<DeptRef>,
        /// New order.
        order: Option<i64>,
        /// Write `source_identifier` (adopting a department found by name).
        source_identifier: Option<String>,
        /// The base recorded once it is done (a parent created in this run is filled in).
        base: DeptBase,
        /// Which side changed what (shown by `plan`).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        merge: Vec<FieldMerge>,
    },
    /// Record a local department's DingTalk id and base (no DingTalk call).
    LinkDept {
        /// `sys_depart.id`.
        local_id: String,
        /// DingTalk id.
        dept_id: i64,
        /// The base recorded.
        base: DeptBase,
    },
    /// Take a user out of departments about to be deleted (other memberships kept).
    MoveMembersOut {
        /// The DingTalk user.
        userid: String,
        /// Departments left (root 1 when none is).
        keep: Vec<i64>,
    },
    /// Delete a DingTalk department (deepest first, members already moved).
    DeleteDept {
        /// DingTalk id.
        dept_id: i64,
        /// Its name, for reports.
        name: String,
    },
    /// Create a DingTalk user (userid = username).
    CreateUser {
        /// `sys_user.id`.
        local_id: String,
        /// userid.
        userid: String,
        /// mobile.
        mobile: String,
        /// Everything else.
        fields: UserFields,
        /// The base recorded once created (its departments as created).
        base: UserBase,
    },
    /// Update a DingTalk user (only the fields JeecgBoot changed, or wins); its link and
    /// base are recorded by the [`Op::LinkUser`] that follows.
    UpdateUser {
        /// `sys_user.id`.
        local_id: String,
        /// userid.
        userid: String,
        /// Changed fields.
        fields: UserFields,
        /// Which side changed what (shown by `plan`).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        merge: Vec<FieldMerge>,
    },
    /// Record the link and base of a matched user (no DingTalk call).
    LinkUser {
        /// `sys_user.id`.
        local_id: String,
        /// userid.
        userid: String,
        /// unionid.
        unionid: Option<String>,
        /// realname, for the link row.
        realname: String,
        /// The base recorded.
        base: UserBase,
    },
    /// Delete a DingTalk user whose local row was deleted for good.
    DeleteUser {
        /// `sys_user.id` (gone).
        local_id: String,
        /// userid.
        userid: String,
    },
    /// Create a local department from DingTalk.
    CreateLocalDept {
        /// DingTalk id.
        dept_id: i64,
        /// Name.
        name: String,
        /// Parent.
        parent: LocalRef,
        /// The DingTalk parent id (1: top level).
        parent_dept_id: i64,
    },
    /// Update a local department from DingTalk (a move recodes its subtree).
    UpdateLocalDept {
        /// `sys_depart.id`.
        local_id: String,
        /// DingTalk id.
        dept_id: i64,
        /// Name.
        name: String,
        /// Parent.
        parent: LocalRef,
        /// The DingTalk parent id (1: top level).
        parent_dept_id: i64,
        /// The local order, kept.
        order: i64,
        /// The base recorded once written.
        base: DeptBase,
        /// Which side changed what (shown by `plan`).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        merge: Vec<FieldMerge>,
    },
    /// Create a local user from DingTalk (password: `pull.new_user_password`).
    CreateLocalUser {
        /// The DingTalk user.
        userid: String,
        /// unionid.
        unionid: Option<String>,
        /// Fields.
        fields: LocalUserFields,
        /// The base recorded once created.
        base: UserBase,
    },
    /// Update a local user from DingTalk (never the password), and record its link and base.
    UpdateLocalUser {
        /// `sys_user.id`.
        local_id: String,
        /// The DingTalk user.
        userid: String,
        /// unionid.
        unionid: Option<String>,
        /// Changed fields.
        fields: LocalUserFields,
        /// Write the link row too.
        link: bool,
        /// The base recorded once written.
        base: UserBase,
        /// Which side changed what (shown by `plan`).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        merge: Vec<FieldMerge>,
    },
    /// Which side changed what, for an entity this plan sends nothing for (the other
    /// direction will, or a conflict is resolved the other way): shown by `plan`.
    Merge {
        /// `user` or `dept`.
        entity: String,
        /// Its key.
        key: String,
        /// The fields that differ.
        fields: Vec<FieldMerge>,
    },
    /// Nothing can be done for this entity; said why.
    Fail {
        /// `user` or `dept`.
        entity: String,
        /// Its key.
        key: String,
        /// Why.
        reason: String,
    },
    /// Done except for something DingTalk cannot do; reported, not retried.
    Warn {
        /// `user` or `dept`.
        entity: String,
        /// Its key.
        key: String,
        /// What.
        reason: String,
    },
}

impl Op {
    /// Whether this operation calls a DingTalk write API.
    pub fn writes_dingtalk(&self) -> bool {
        matches!(
            self,
            Op::CreateDept { .. }
                | Op::UpdateDept { .. }
                | Op::MoveMembersOut { .. }
                | Op::DeleteDept { .. }
                | Op::CreateUser { .. }
                | Op::UpdateUser { .. }
                | Op::DeleteUser { .. }
        )
    }
}

/// What a run did; the same counts go into `dingsync_run`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Entities created.
    pub created: i64,
    /// Entities updated (links and moves included).
    pub updated: i64,
    /// Entities deleted.
    pub deleted: i64,
    /// Entities with nothing to do, or only a warning.
    pub skipped: i64,
    /// Entities that failed, with reasons.
    pub failed: i64,
    /// `(entity, key, reason)` of each failure.
    pub failures: Vec<(String, String, String)>,
    /// `(entity, key, reason)` of each warning.
    pub warnings: Vec<(String, String, String)>,
    /// DingTalk HTTP requests by route.
    pub api_calls: BTreeMap<String, u64>,
    /// Some failure may succeed when tried again (throttling, transport, database busy).
    pub retryable: bool,
    /// Where a run's time went, ms per phase (`dingtalk_read`, `local_read`, `plan`, `total`).
    pub phases: BTreeMap<String, u64>,
}

/// A content hash for snapshots (MD5 hex of the parts joined).
pub fn content_hash(parts: &[&str]) -> String {
    use md5::{Digest, Md5};
    let mut hasher = Md5::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0x1f]);
    }
    hex::encode(hasher.finalize())
}

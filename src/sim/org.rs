//! One simulated organisation's address book: departments and users with DingTalk's
//! documented rules, each broken rule answered with its errcode (API.md §2, §3, §5).
//! Pure state: no HTTP, no clock, no tokens.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::params::{Params, INVALID_PARAM};
use super::ApiFail;

/// The root department's id.
pub const ROOT_DEPT: i64 = 1;
const MAX_USER_DEPTS: usize = 100;
const PARAM_ERROR: i64 = 400002;

/// A department.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dept {
    /// DingTalk's id.
    pub dept_id: i64,
    /// Name, unique among siblings.
    pub name: String,
    /// Parent id (the root's parent is 0).
    pub parent_id: i64,
    /// Position among siblings, smaller first.
    pub order: i64,
    /// The developer's own key.
    pub source_identifier: Option<String>,
    /// Department group chat.
    pub create_dept_group: bool,
    /// Hidden from the address book.
    pub hide_dept: bool,
}

/// A user.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Org-unique, immutable id.
    pub userid: String,
    /// Cross-org id.
    pub unionid: String,
    /// Display name.
    pub name: String,
    /// Mobile, unique, not updatable.
    pub mobile: String,
    /// Extension, unique when set.
    pub telephone: String,
    /// Employee number (not unique).
    pub job_number: String,
    /// Position title.
    pub title: String,
    /// Email, unique when set.
    pub email: String,
    /// Enterprise mailbox.
    pub org_email: String,
    /// Office.
    pub work_place: String,
    /// Notes.
    pub remark: String,
    /// Departments, in the order given.
    pub dept_id_list: Vec<i64>,
    /// Has activated DingTalk.
    pub active: bool,
    /// Hides the mobile on the profile.
    pub hide_mobile: bool,
    /// Creation sequence, for list order.
    pub seq: u64,
}

/// Text fields of a user with their DingTalk length limits (chars).
const USER_TEXT_FIELDS: &[(&str, usize)] = &[
    ("telephone", 50),
    ("job_number", 50),
    ("title", 200),
    ("email", 50),
    ("org_email", 100),
    ("work_place", 100),
    ("remark", 2000),
];

/// An organisation's address book.
#[derive(Clone, Debug, Serialize)]
pub struct Org {
    /// Departments by id.
    pub depts: BTreeMap<i64, Dept>,
    /// Users by userid (changed only through `put_user` / `remove_user`, which keep the
    /// index).
    pub users: BTreeMap<String, User>,
    next_dept_id: i64,
    next_user_seq: u64,
    /// The app lacks the mobile permission (企业员工手机号信息): user reads carry no
    /// `mobile` (API.md §2.3: "only returned if the app holds the permission").
    pub hide_mobiles: bool,
    #[serde(skip)]
    index: UserIndex,
}

/// Lookups that would otherwise scan every user on each call (at 100,000 users the
/// simulator's scans took more CPU than the client it serves, on a shared machine).
#[derive(Clone, Debug, Default)]
struct UserIndex {
    /// `(field, value)` -> userid, for the unique fields mobile, email and telephone.
    unique: HashMap<(&'static str, String), String>,
    /// Department -> `(seq, userid)` of its direct members, in creation order.
    members: HashMap<i64, BTreeSet<(u64, String)>>,
}

/// The unique fields of a user.
const UNIQUE: [&str; 3] = ["mobile", "email", "telephone"];

fn unique_value<'a>(user: &'a User, field: &str) -> &'a str {
    match field {
        "mobile" => &user.mobile,
        "email" => &user.email,
        _ => &user.telephone,
    }
}

/// The index key of a unique field: a mainland mobile is one number whether written
/// `138...` or `+86-138...` (the form for organisations outside mainland China, API.md §2.1).
fn index_key(field: &'static str, value: &str) -> (&'static str, String) {
    let value = match field {
        "mobile" => value
            .strip_prefix("+86-")
            .filter(|rest| rest.len() == 11 && rest.starts_with('1'))
            .unwrap_or(value),
        _ => value,
    };
    (field, value.to_string())
}

impl Default for Org {
    fn default() -> Self {
        let root = Dept {
            dept_id: ROOT_DEPT,
            name: "Company".into(),
            parent_id: 0,
            order: 0,
            source_identifier: None,
            create_dept_group: false,
            hide_dept: false,
        };
        Self {
            depts: BTreeMap::from([(ROOT_DEPT, root)]),
            users: BTreeMap::new(),
            next_dept_id: 100_000_000,
            next_user_seq: 1,
            hide_mobiles: false,
            index: UserIndex::default(),
        }
    }
}

fn chars(text: &str) -> usize {
    text.chars().count()
}

impl Org {
    /// Stores `user` (new or changed), keeping the index.
    fn put_user(&mut self, user: User) {
        self.remove_user(&user.userid);
        for field in UNIQUE {
            let value = unique_value(&user, field);
            if !value.is_empty() {
                self.index
                    .unique
                    .insert(index_key(field, value), user.userid.clone());
            }
        }
        for dept in &user.dept_id_list {
            self.index
                .members
                .entry(*dept)
                .or_default()
                .insert((user.seq, user.userid.clone()));
        }
        self.users.insert(user.userid.clone(), user);
    }

    /// Removes `userid`, keeping the index.
    fn remove_user(&mut self, userid: &str) {
        let Some(user) = self.users.remove(userid) else {
            return;
        };
        for field in UNIQUE {
            self.index
                .unique
                .remove(&index_key(field, unique_value(&user, field)));
        }
        for dept in &user.dept_id_list {
            if let Some(members) = self.index.members.get_mut(dept) {
                members.remove(&(user.seq, user.userid.clone()));
            }
        }
    }

    // ---------- departments ----------

    fn dept(&self, id: i64) -> Result<&Dept, ApiFail> {
        self.depts
            .get(&id)
            .ok_or_else(|| ApiFail::new(60003, "部门不存在"))
    }

    fn check_dept_name(&self, name: &str, parent: i64, except: Option<i64>) -> Result<(), ApiFail> {
        if name.trim().is_empty() || chars(name) > 64 {
            return Err(ApiFail::new(60001, "部门名称无效(1-64个字符)"));
        }
        if name.contains(['-', '，', ',']) {
            return Err(ApiFail::new(60009, "部门名称含有非法字符"));
        }
        let clash = self
            .depts
            .values()
            .any(|d| d.parent_id == parent && d.name == name && Some(d.dept_id) != except);
        if clash {
            return Err(ApiFail::new(60021, "父部门下该部门名称已存在"));
        }
        Ok(())
    }

    /// `topapi/v2/department/create`.
    pub fn dept_create(&mut self, p: &Params) -> Result<Value, ApiFail> {
        let name = p.required_str("name")?;
        let parent = p.required_i64("parent_id")?;
        if !self.depts.contains_key(&parent) {
            return Err(ApiFail::new(60004, "父部门不存在"));
        }
        self.check_dept_name(&name, parent, None)?;
        let id = self.next_dept_id;
        self.next_dept_id += 1;
        let dept = Dept {
            dept_id: id,
            name,
            parent_id: parent,
            order: p.i64("order")?.unwrap_or(id),
            source_identifier: p.str("source_identifier").filter(|s| !s.is_empty()),
            create_dept_group: p.bool("create_dept_group")?.unwrap_or(false),
            hide_dept: p.bool("hide_dept")?.unwrap_or(false),
        };
        self.depts.insert(id, dept);
        Ok(json!({ "result": { "dept_id": id } }))
    }

    fn is_descendant(&self, candidate: i64, ancestor: i64) -> bool {
        let mut current = Some(candidate);
        while let Some(id) = current {
            if id == ancestor {
                return true;
            }
            current = self.depts.get(&id).map(|d| d.parent_id).filter(|p| *p != 0);
        }
        false
    }

    /// `topapi/v2/department/update`.
    pub fn dept_update(&mut self, p: &Params) -> Result<Value, ApiFail> {
        let id = p.required_i64("dept_id")?;
        if id == ROOT_DEPT {
            return Err(ApiFail::new(60018, "根部门不能更新"));
        }
        let current = self.dept(id)?.clone();
        let parent = p.i64("parent_id")?.unwrap_or(current.parent_id);
        if parent != current.parent_id {
            if !self.depts.contains_key(&parent) {
                return Err(ApiFail::new(60004, "父部门不存在"));
            }
            if self.is_descendant(parent, id) {
                return Err(ApiFail::new(60010, "部门层级形成环路"));
            }
        }
        let name = p.str("name").unwrap_or_else(|| current.name.clone());
        if name != current.name || parent != current.parent_id {
            self.check_dept_name(&name, parent, Some(id))?;
        }
        let order = match p.i64("order")? {
            Some(order) if order < 0 => return Err(ApiFail::new(40011, "order不合法")),
            other => other,
        };
        let dept = self
            .depts
            .get_mut(&id)
            .ok_or_else(|| ApiFail::new(60003, "部门不存在"))?;
        dept.name = name;
        dept.parent_id = parent;
        dept.order = order.unwrap_or(dept.order);
        if let Some(source) = p.str("source_identifier") {
            dept.source_identifier = Some(source).filter(|s| !s.is_empty());
        }
        if let Some(hide) = p.bool("hide_dept")? {
            dept.hide_dept = hide;
        }
        Ok(json!({}))
    }

    /// `topapi/v2/department/delete`. API.md §8 #7: the delete page only forbids members in
    /// the department or its sub-departments, the global table's 60006 forbids any
    /// sub-department; the simulator takes the stricter 60006.
    pub fn dept_delete(&mut self, p: &Params) -> Result<Value, ApiFail> {
        let id = p.required_i64("dept_id")?;
        if id == ROOT_DEPT {
            return Err(ApiFail::new(60007, "根部门不能删除"));
        }
        self.dept(id)?;
        if self.depts.values().any(|d| d.parent_id == id) {
            return Err(ApiFail::new(60006, "部门下存在子部门, 不能删除"));
        }
        if self.index.members.get(&id).is_some_and(|m| !m.is_empty()) {
            return Err(ApiFail::new(60005, "部门下存在员工, 不能删除"));
        }
        self.depts.remove(&id);
        Ok(json!({}))
    }

    fn member_count(&self, id: i64, recursive: bool) -> usize {
        self.users
            .values()
            .filter(|u| {
                u.dept_id_list
                    .iter()
                    .any(|d| *d == id || (recursive && self.is_descendant(*d, id)))
            })
            .count()
    }

    /// `topapi/v2/department/get`.
    pub fn dept_get(&self, p: &Params) -> Result<Value, ApiFail> {
        let id = p.required_i64("dept_id")?;
        if id <= 0 {
            return Err(ApiFail::new(40009, "不合法的部门id"));
        }
        let d = self.dept(id)?;
        Ok(json!({ "result": {
            "dept_id": d.dept_id, "name": d.name, "parent_id": d.parent_id, "order": d.order,
            "source_identifier": d.source_identifier.clone().unwrap_or_default(),
            "create_dept_group": d.create_dept_group, "auto_add_user": false, "hide_dept": d.hide_dept,
            "dept_manager_userid_list": [], "outer_dept": false,
            "member_count": self.member_count(id, true), "owning_member_count": self.member_count(id, false),
        }}))
    }

    fn children(&self, id: i64) -> Vec<&Dept> {
        let mut children: Vec<&Dept> = self
            .depts
            .values()
            .filter(|d| d.parent_id == id && d.dept_id != ROOT_DEPT)
            .collect();
        children.sort_by_key(|d| (d.order, d.dept_id));
        children
    }

    /// `topapi/v2/department/listsub`: next level only, without `source_identifier`/`order`.
    /// API.md §8 #13: the default for a missing `dept_id` is undocumented; the simulator
    /// takes the root, and dingsync's client always sends it.
    pub fn dept_listsub(&self, p: &Params) -> Result<Value, ApiFail> {
        let id = p.i64("dept_id")?.unwrap_or(ROOT_DEPT);
        self.dept(id)?;
        let list: Vec<Value> = self
            .children(id)
            .into_iter()
            .map(|d| {
                json!({ "dept_id": d.dept_id, "name": d.name, "parent_id": d.parent_id,
                             "create_dept_group": d.create_dept_group, "auto_add_user": false })
            })
            .collect();
        Ok(json!({ "result": list }))
    }

    /// `topapi/v2/department/listsubid`.
    pub fn dept_listsubid(&self, p: &Params) -> Result<Value, ApiFail> {
        let id = p.required_i64("dept_id")?;
        self.dept(id)?;
        let ids: Vec<i64> = self.children(id).into_iter().map(|d| d.dept_id).collect();
        Ok(json!({ "result": { "dept_id_list": ids } }))
    }

    // ---------- users ----------

    fn user(&self, userid: &str) -> Result<&User, ApiFail> {
        self.users
            .get(userid)
            .ok_or_else(|| ApiFail::new(60121, "找不到该用户"))
    }

    fn unique_clash(&self, field: &'static str, value: &str, except: &str) -> bool {
        !value.is_empty()
            && self
                .index
                .unique
                .get(&index_key(field, value))
                .is_some_and(|holder| holder != except)
    }

    fn check_depts(&self, ids: &[i64]) -> Result<(), ApiFail> {
        if ids.is_empty() {
            return Err(ApiFail::new(INVALID_PARAM, "缺少参数 dept_id_list"));
        }
        if ids.len() > MAX_USER_DEPTS {
            return Err(ApiFail::new(INVALID_PARAM, "dept_id_list 超过100个"));
        }
        if ids.iter().any(|id| !self.depts.contains_key(id)) {
            return Err(ApiFail::new(60003, "部门不存在"));
        }
        Ok(())
    }

    /// Applies the optional text fields of `p` to `user`, checking limits and uniqueness.
    fn apply_user_fields(&self, user: &mut User, p: &Params) -> Result<(), ApiFail> {
        if let Some(name) = p.str("name") {
            if name.trim().is_empty() || chars(&name) > 80 {
                return Err(ApiFail::new(60112, "用户名称不合法"));
            }
            user.name = name;
        }
        for (field, limit) in USER_TEXT_FIELDS {
            let Some(value) = p.str(field) else { continue };
            if chars(&value) > *limit {
                return Err(ApiFail::new(
                    PARAM_ERROR,
                    format!("{field} 超过长度限制 {limit}"),
                ));
            }
            match *field {
                "email" if !value.is_empty() && !value.contains('@') => {
                    return Err(ApiFail::new(60105, "邮箱不合法"))
                }
                "email" if self.unique_clash("email", &value, &user.userid) => {
                    return Err(ApiFail::new(60106, "邮箱已存在"))
                }
                "telephone" if self.unique_clash("telephone", &value, &user.userid) => {
                    return Err(ApiFail::new(40100, "分机号已经存在"))
                }
                _ => {}
            }
            set_text_field(user, field, value);
        }
        if let Some(hide) = p.bool("hide_mobile")? {
            user.hide_mobile = hide;
        }
        if let Some(ids) = p.id_list("dept_id_list")? {
            self.check_depts(&ids)?;
            user.dept_id_list = ids;
        }
        Ok(())
    }

    /// `topapi/v2/user/create`.
    pub fn user_create(&mut self, p: &Params) -> Result<Value, ApiFail> {
        let name = p.required_str("name")?;
        let mobile = p.required_str("mobile")?;
        if !valid_mobile(&mobile) {
            return Err(ApiFail::new(60103, "手机号码不合法"));
        }
        let ids = p.id_list("dept_id_list")?.unwrap_or_default();
        self.check_depts(&ids)?;
        let userid = match p.str("userid").filter(|s| !s.is_empty()) {
            Some(id) if chars(&id) > 64 => {
                return Err(ApiFail::new(PARAM_ERROR, "userid 超过64个字符"))
            }
            Some(id) if self.users.contains_key(&id) => {
                return Err(ApiFail::new(60102, "UserID在公司中已存在"))
            }
            Some(id) => id,
            None => self.generated_userid(),
        };
        if self.unique_clash("mobile", &mobile, &userid) {
            return Err(ApiFail::new(60104, "手机号码在公司中已存在"));
        }
        let mut user = User {
            userid: userid.clone(),
            unionid: format!(
                "union{:016x}",
                self.next_user_seq.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ),
            name,
            mobile,
            seq: self.next_user_seq,
            ..User::default()
        };
        self.apply_user_fields(&mut user, p)?;
        self.next_user_seq += 1;
        let unionid = user.unionid.clone();
        self.put_user(user);
        Ok(json!({ "result": { "userid": userid, "unionId": unionid } }))
    }

    fn generated_userid(&self) -> String {
        let mut n = self.next_user_seq;
        loop {
            let id = format!("{:014}", 10_000_000_000_000u64 + n);
            if !self.users.contains_key(&id) {
                return id;
            }
            n += 1;
        }
    }

    /// `topapi/v2/user/update`.
    pub fn user_update(&mut self, p: &Params) -> Result<Value, ApiFail> {
        let userid = p.required_str("userid")?;
        let mut user = self.user(&userid)?.clone();
        if let Some(mobile) = p.str("mobile") {
            if mobile != user.mobile {
                return Err(ApiFail::new(40022, "企业中的手机号码和登录钉钉的手机号码不一致,暂时不支持修改用户信息,可以删除后重新添加"));
            }
        }
        self.apply_user_fields(&mut user, p)?;
        self.put_user(user);
        Ok(json!({}))
    }

    /// `topapi/v2/user/get`.
    pub fn user_get(&self, p: &Params) -> Result<Value, ApiFail> {
        let userid = p.required_str("userid")?;
        Ok(json!({ "result": self.user_json(self.user(&userid)?) }))
    }

    /// `topapi/v2/user/delete`.
    pub fn user_delete(&mut self, p: &Params) -> Result<Value, ApiFail> {
        let userid = p.required_str("userid")?;
        self.user(&userid)?;
        self.remove_user(&userid);
        Ok(json!({}))
    }

    /// A user as the app may read it.
    fn user_json(&self, u: &User) -> Value {
        let mut value = user_json(u);
        if self.hide_mobiles {
            if let Some(map) = value.as_object_mut() {
                map.remove("mobile");
            }
        }
        value
    }

    fn direct_members(&self, dept: i64) -> Vec<&User> {
        self.index
            .members
            .get(&dept)
            .into_iter()
            .flatten()
            .filter_map(|(_, userid)| self.users.get(userid))
            .collect()
    }

    /// `topapi/v2/user/list`: direct members, paged by cursor. API.md §8 #11: the page size
    /// is undocumented; the simulator enforces the SDK's 1..=100.
    pub fn user_list(&self, p: &Params) -> Result<Value, ApiFail> {
        let dept = p.required_i64("dept_id")?;
        let cursor = p.required_i64("cursor")?;
        let size = p.required_i64("size")?;
        if !(0..=100_000).contains(&cursor) || !(1..=100).contains(&size) {
            return Err(ApiFail::new(INVALID_PARAM, "cursor 或 size 不合法"));
        }
        self.dept(dept)?;
        let members = self.direct_members(dept);
        let start = usize::try_from(cursor)
            .unwrap_or(usize::MAX)
            .min(members.len());
        let end = (start + usize::try_from(size).unwrap_or(100)).min(members.len());
        let list: Vec<Value> = members[start..end]
            .iter()
            .map(|u| {
                let mut value = self.user_json(u);
                value["dept_order"] = json!(0);
                value["leader"] = json!(false);
                value
            })
            .collect();
        let has_more = end < members.len();
        let mut result = json!({ "has_more": has_more, "list": list });
        if has_more {
            result["next_cursor"] = json!(end);
        }
        Ok(json!({ "result": result }))
    }

    /// `topapi/user/listid`.
    pub fn user_listid(&self, p: &Params) -> Result<Value, ApiFail> {
        let dept = p.required_i64("dept_id")?;
        self.dept(dept)?;
        let ids: Vec<&str> = self
            .direct_members(dept)
            .into_iter()
            .map(|u| u.userid.as_str())
            .collect();
        Ok(json!({ "result": { "userid_list": ids } }))
    }

    /// `topapi/v2/user/getbymobile`.
    pub fn user_getbymobile(&self, p: &Params) -> Result<Value, ApiFail> {
        let mobile = p.required_str("mobile")?;
        if chars(&mobile) > 15 || !valid_mobile(&mobile) {
            return Err(ApiFail::new(40104, "无效的手机号"));
        }
        let user = self
            .index
            .unique
            .get(&index_key("mobile", &mobile))
            .and_then(|userid| self.users.get(userid))
            .ok_or_else(|| ApiFail::new(60121, "找不到该用户"))?;
        Ok(json!({ "result": { "userid": user.userid } }))
    }

    /// `topapi/user/count`.
    pub fn user_count(&self, p: &Params) -> Result<Value, ApiFail> {
        let only_active = p
            .bool("only_active")?
            .ok_or_else(|| ApiFail::new(INVALID_PARAM, "缺少参数 only_active"))?;
        let count = self
            .users
            .values()
            .filter(|u| !only_active || u.active)
            .count();
        Ok(json!({ "result": { "count": count } }))
    }

    /// Userids of every member of `dept` and its sub-departments.
    pub fn members_recursive(&self, dept: i64) -> Vec<String> {
        self.users
            .values()
            .filter(|u| u.dept_id_list.iter().any(|d| self.is_descendant(*d, dept)))
            .map(|u| u.userid.clone())
            .collect()
    }
}

fn set_text_field(user: &mut User, field: &str, value: String) {
    match field {
        "telephone" => user.telephone = value,
        "job_number" => user.job_number = value,
        "title" => user.title = value,
        "email" => user.email = value,
        "org_email" => user.org_email = value,
        "work_place" => user.work_place = value,
        _ => user.remark = value,
    }
}

/// Mainland numbers are 11 digits starting with 1; others `+CC-NUMBER`.
fn valid_mobile(mobile: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    match mobile.strip_prefix('+') {
        Some(rest) => rest.split_once('-').is_some_and(|(cc, number)| {
            digits(cc) && cc.len() <= 4 && digits(number) && number.len() >= 5
        }),
        None => mobile.len() == 11 && mobile.starts_with('1') && digits(mobile),
    }
}

fn user_json(u: &User) -> Value {
    let mut value = json!({
        "userid": u.userid, "unionid": u.unionid, "name": u.name, "mobile": u.mobile,
        "hide_mobile": u.hide_mobile, "dept_id_list": u.dept_id_list, "active": u.active,
        "admin": false, "boss": false, "senior": false, "real_authed": false,
        "state_code": "86",
    });
    // Optional text fields are only returned when non-empty (API.md §2.3).
    for (field, _) in USER_TEXT_FIELDS {
        let text = match *field {
            "telephone" => &u.telephone,
            "job_number" => &u.job_number,
            "title" => &u.title,
            "email" => &u.email,
            "org_email" => &u.org_email,
            "work_place" => &u.work_place,
            _ => &u.remark,
        };
        if !text.is_empty() {
            value[*field] = json!(text);
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::sim::{SimOptions, Simulator};

    #[test]
    fn the_index_follows_creates_updates_and_deletes() {
        let sim = Simulator::new(SimOptions::default());
        sim.add_app("k", "s", 1);
        let call = |path: &str, body: serde_json::Value| sim.admin_call("k", path, body);
        let dept = call(
            "topapi/v2/department/create",
            json!({"name": "D", "parent_id": 1}),
        )
        .unwrap()["result"]["dept_id"]
            .as_i64()
            .unwrap();
        let create = |userid: &str, mobile: &str, email: &str| {
            call(
                "topapi/v2/user/create",
                json!({"userid": userid, "name": userid, "mobile": mobile, "email": email, "dept_id_list": dept.to_string()}),
            )
        };
        create("a", "13800000001", "a@x.cn").unwrap();
        create("b", "13800000002", "b@x.cn").unwrap();
        let errcode = |r: Result<serde_json::Value, crate::sim::ApiFail>| r.unwrap_err().errcode;
        assert_eq!(errcode(create("c", "13800000001", "")), 60104);
        // One number, however it is written.
        assert_eq!(errcode(create("c", "+86-13800000001", "")), 60104);
        let found = call(
            "topapi/v2/user/getbymobile",
            json!({"mobile": "+86-13800000001"}),
        )
        .unwrap();
        assert_eq!(found["result"]["userid"], "a");
        assert_eq!(errcode(create("c", "13800000003", "b@x.cn")), 60106);
        // An email given up is free again; the new one is taken.
        call(
            "topapi/v2/user/update",
            json!({"userid": "b", "email": "b2@x.cn"}),
        )
        .unwrap();
        create("c", "13800000003", "b@x.cn").unwrap();
        assert_eq!(errcode(create("d", "13800000004", "b2@x.cn")), 60106);
        // A deleted user's mobile is free; members are listed in creation order.
        call("topapi/v2/user/delete", json!({"userid": "a"})).unwrap();
        let by_mobile = call(
            "topapi/v2/user/getbymobile",
            json!({"mobile": "13800000001"}),
        );
        assert_eq!(errcode(by_mobile), 60121);
        create("a2", "13800000001", "").unwrap();
        let page = call(
            "topapi/v2/user/list",
            json!({"dept_id": dept, "cursor": 0, "size": 10}),
        )
        .unwrap();
        let listed: Vec<&str> = page["result"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["userid"].as_str().unwrap())
            .collect();
        assert_eq!(listed, vec!["b", "c", "a2"]);
        // A department with members cannot be deleted; without them it can.
        assert_eq!(
            errcode(call(
                "topapi/v2/department/delete",
                json!({"dept_id": dept})
            )),
            60005
        );
        for userid in ["b", "c", "a2"] {
            call("topapi/v2/user/delete", json!({"userid": userid})).unwrap();
        }
        call("topapi/v2/department/delete", json!({"dept_id": dept})).unwrap();
    }
}

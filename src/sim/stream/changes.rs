//! Which Stream event a successful address-book write produces (STREAM.md §8): one event per
//! create, update or delete, with DingTalk's payload. Failed calls and reads produce none.
//! `user_modify_org`'s diff holds only the fields DingTalk reports (name, email, telephone,
//! jobNumber, workPlace, remark): mobile and department membership never appear in it.

use serde_json::{json, Map, Value};

use super::super::org::{Org, User};
use super::super::params::Params;

/// The user an update is about to change, for the diff; `None` for every other call.
pub(in crate::sim) fn user_before(org: &Org, path: &str, params: &Params) -> Option<User> {
    if path != "topapi/v2/user/update" {
        return None;
    }
    org.users.get(&params.str("userid")?).cloned()
}

/// A call the organisation answered successfully: its path, parameters and answer.
pub(in crate::sim) struct Call<'a> {
    /// The topapi path (`topapi/v2/user/create`, ...).
    pub path: &'a str,
    /// The parameters it was called with.
    pub params: &'a Params,
    /// What the organisation answered.
    pub answer: &'a Value,
}

/// The event type and payload of a successful call, if it changed the address book.
pub(in crate::sim) fn event_of(
    call: &Call<'_>,
    before: Option<&User>,
    org: &Org,
    now_ms: i64,
) -> Option<(&'static str, Value)> {
    let Call {
        path,
        params,
        answer,
    } = *call;
    let stamp = now_ms.to_string();
    let users =
        |event, userid: &str| Some((event, json!({ "timeStamp": stamp, "userId": [userid] })));
    let depts = |event, dept_id: i64| Some((event, json!({ "deptId": [dept_id] })));
    match path {
        "topapi/v2/user/create" => users("user_add_org", answer["result"]["userid"].as_str()?),
        "topapi/v2/user/delete" => users("user_leave_org", &params.str("userid")?),
        "topapi/v2/user/update" => {
            let before = before?;
            let after = org.users.get(&before.userid)?;
            let mut data = json!({ "timeStamp": stamp, "userId": [after.userid] });
            data["diffInfo"] = diff(before, after);
            Some(("user_modify_org", data))
        }
        "topapi/v2/department/create" => {
            depts("org_dept_create", answer["result"]["dept_id"].as_i64()?)
        }
        "topapi/v2/department/update" => depts("org_dept_modify", params.i64("dept_id").ok()??),
        "topapi/v2/department/delete" => depts("org_dept_remove", params.i64("dept_id").ok()??),
        _ => None,
    }
}

/// The fields DingTalk puts in `diffInfo`, by their event names.
fn reported_fields(user: &User) -> [(&'static str, &str); 6] {
    [
        ("name", &user.name),
        ("email", &user.email),
        ("telephone", &user.telephone),
        ("jobNumber", &user.job_number),
        ("workPlace", &user.work_place),
        ("remark", &user.remark),
    ]
}

/// `{userid, prev, curr}` with the reported fields that changed.
fn diff(before: &User, after: &User) -> Value {
    let mut prev = Map::new();
    let mut curr = Map::new();
    for ((name, old), (_, new)) in reported_fields(before)
        .into_iter()
        .zip(reported_fields(after))
    {
        if old != new {
            prev.insert(name.to_string(), json!(old));
            curr.insert(name.to_string(), json!(new));
        }
    }
    json!({ "userid": after.userid, "prev": prev, "curr": curr })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_diff_names_only_reported_fields_that_changed() {
        let before = User {
            userid: "u1".into(),
            name: "Old".into(),
            mobile: "13800000001".into(),
            title: "T".into(),
            job_number: "7".into(),
            dept_id_list: vec![1],
            ..User::default()
        };
        let after = User {
            name: "New".into(),
            title: "T2".into(),
            work_place: "Hangzhou".into(),
            dept_id_list: vec![1, 2],
            ..before.clone()
        };
        assert_eq!(
            diff(&before, &after),
            json!({"userid": "u1", "prev": {"name": "Old", "workPlace": ""},
                "curr": {"name": "New", "workPlace": "Hangzhou"}})
        );
    }
}

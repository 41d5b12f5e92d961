//! Address-book events of an internal app (STREAM.md §8, API.md §7.2) reduced to what the
//! sync needs: which users or departments to re-read. The payloads carry no state worth
//! trusting (mobile and membership are not in `user_modify_org`'s diff), so only ids are
//! kept. camelCase and the legacy callback's PascalCase are both read; ids may be arrays or
//! single values, department ids numbers or numeric strings.

use serde_json::Value;

use super::StreamEvent;

/// Which part of the address book an event says has changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddressBookChange {
    /// `user_add_org`, `user_modify_org`, `user_leave_org`, `user_active_org`.
    Users {
        /// The event type.
        event: String,
        /// The users, without repeats, in the order given (may be empty when the payload
        /// named none: re-read broadly then).
        userids: Vec<String>,
    },
    /// `org_dept_create`, `org_dept_modify`, `org_dept_remove`.
    Depts {
        /// The event type.
        event: String,
        /// The departments, without repeats, in the order given (may be empty).
        dept_ids: Vec<i64>,
    },
}

/// What `event` changed, when it is an address-book event of an internal app; `None` for
/// anything else (ISV `user_dept_change`, approvals, unknown types), never an error.
pub fn address_book_change(event: &StreamEvent) -> Option<AddressBookChange> {
    let data = &event.data;
    match event.event_type.as_str() {
        "user_add_org" | "user_modify_org" | "user_leave_org" | "user_active_org" => {
            let mut userids = Vec::new();
            push_userids(&mut userids, field(data, "userId", "UserId"));
            if let Some(diff) = field(data, "diffInfo", "DiffInfo") {
                for key in ["userid", "userId", "UserId"] {
                    push_userids(&mut userids, diff.get(key));
                }
            }
            Some(AddressBookChange::Users {
                event: event.event_type.clone(),
                userids,
            })
        }
        "org_dept_create" | "org_dept_modify" | "org_dept_remove" => {
            let mut dept_ids = Vec::new();
            push_dept_ids(&mut dept_ids, field(data, "deptId", "DeptId"));
            Some(AddressBookChange::Depts {
                event: event.event_type.clone(),
                dept_ids,
            })
        }
        _ => None,
    }
}

fn field<'a>(data: &'a Value, camel: &str, pascal: &str) -> Option<&'a Value> {
    data.get(camel).or_else(|| data.get(pascal))
}

/// Either one value or each element of an array.
fn each(value: Option<&Value>) -> impl Iterator<Item = &Value> {
    let (list, single) = match value {
        Some(Value::Array(list)) => (list.as_slice(), None),
        Some(other) => ([].as_slice(), Some(other)),
        None => ([].as_slice(), None),
    };
    list.iter().chain(single)
}

fn push_userids(userids: &mut Vec<String>, value: Option<&Value>) {
    for item in each(value) {
        let userid = match item {
            Value::String(text) => text.trim().to_string(),
            Value::Number(number) => number.to_string(),
            _ => continue,
        };
        if !userid.is_empty() && !userids.contains(&userid) {
            userids.push(userid);
        }
    }
}

fn push_dept_ids(dept_ids: &mut Vec<i64>, value: Option<&Value>) {
    for item in each(value) {
        let ids: Vec<i64> = match item {
            Value::Number(number) => number.as_i64().into_iter().collect(),
            // A numeric string, or several joined by commas.
            Value::String(text) => text
                .split(',')
                .filter_map(|part| part.trim().parse().ok())
                .collect(),
            _ => continue,
        };
        for id in ids {
            if !dept_ids.contains(&id) {
                dept_ids.push(id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(event_type: &str, data: Value) -> StreamEvent {
        StreamEvent {
            message_id: "m".into(),
            event_id: "e".into(),
            event_type: event_type.into(),
            topic: "*".into(),
            born_ms: None,
            corp_id: None,
            data,
        }
    }

    fn users(event_type: &str, data: Value) -> Vec<String> {
        match address_book_change(&event(event_type, data)) {
            Some(AddressBookChange::Users { userids, .. }) => userids,
            other => panic!("not a user change: {other:?}"),
        }
    }

    fn depts(event_type: &str, data: Value) -> Vec<i64> {
        match address_book_change(&event(event_type, data)) {
            Some(AddressBookChange::Depts { dept_ids, .. }) => dept_ids,
            other => panic!("not a department change: {other:?}"),
        }
    }

    #[test]
    fn user_payloads_in_every_spelling() {
        let cases = [
            (
                "user_add_org",
                json!({"timeStamp": "1", "userId": ["u1", "u2"]}),
                vec!["u1", "u2"],
            ),
            (
                "user_leave_org",
                json!({"EventType": "user_leave_org", "UserId": ["u3"], "CorpId": "c"}),
                vec!["u3"],
            ),
            ("user_active_org", json!({"userId": "u4"}), vec!["u4"]),
            ("user_add_org", json!({"UserId": 12345}), vec!["12345"]),
            (
                "user_modify_org",
                json!({"userId": ["u5"], "diffInfo": {"userid": "u5", "prev": {"name": "a"}, "curr": {"name": "b"}}}),
                vec!["u5"],
            ),
            (
                "user_modify_org",
                json!({"diffInfo": {"userid": "u6", "prev": {}, "curr": {}}}),
                vec!["u6"],
            ),
            ("user_add_org", json!({}), vec![]),
        ];
        for (event_type, data, expected) in cases {
            assert_eq!(users(event_type, data.clone()), expected, "{data}");
        }
    }

    #[test]
    fn department_payloads_in_every_spelling() {
        let cases = [
            (
                "org_dept_create",
                json!({"deptId": [101, 102]}),
                vec![101, 102],
            ),
            (
                "org_dept_modify",
                json!({"timeStamp": "1", "DeptId": ["103", " 104 "]}),
                vec![103, 104],
            ),
            ("org_dept_remove", json!({"deptId": 105}), vec![105]),
            (
                "org_dept_remove",
                json!({"deptId": "106,107"}),
                vec![106, 107],
            ),
            (
                "org_dept_create",
                json!({"deptId": [108, "108", "x"]}),
                vec![108],
            ),
        ];
        for (event_type, data, expected) in cases {
            assert_eq!(depts(event_type, data.clone()), expected, "{data}");
        }
    }

    #[test]
    fn other_events_are_not_address_book_changes() {
        for event_type in [
            "user_dept_change",
            "user_role_change",
            "bpms_task_change",
            "",
        ] {
            let change = address_book_change(&event(event_type, json!({"userId": ["u"]})));
            assert_eq!(change, None, "{event_type}");
        }
    }
}

//! The endpoints: one method per DingTalk call dingsync makes, with the field limits of
//! API.md checked before sending (a refused request costs no call).

use serde_json::{json, Value};

use super::types::{
    parse, DeptBrief, DeptCreate, DeptUpdate, DtDept, DtUser, Message, Recipients, SendProgress,
    SendResult, UserCreate, UserPage, UserUpdate,
};
use super::{DingTalkClient, DingTalkError, ErrorKind, Repeat};

/// Largest page `v2/user/list` serves.
pub const USER_PAGE_SIZE: i64 = 100;
/// Most userids in one send.
pub const MAX_SEND_USERIDS: usize = 100;
/// Most department ids in one send.
pub const MAX_SEND_DEPTS: usize = 20;
/// Largest message body in bytes.
pub const MAX_MESSAGE_BYTES: usize = 2048;
const MAX_USER_DEPTS: usize = 100;

fn invalid(route: &'static str, message: String) -> DingTalkError {
    DingTalkError::new(ErrorKind::Validation, route, message)
}

fn check_len(
    route: &'static str,
    field: &str,
    value: Option<&str>,
    max: usize,
) -> Result<(), DingTalkError> {
    match value {
        Some(text) if text.chars().count() > max => Err(invalid(
            route,
            format!("{field} is longer than {max} characters"),
        )),
        _ => Ok(()),
    }
}

fn check_dept_name(route: &'static str, name: &str) -> Result<(), DingTalkError> {
    let length = name.chars().count();
    if length == 0 || length > 64 {
        return Err(invalid(
            route,
            format!("department name must be 1 to 64 characters, got {length}"),
        ));
    }
    if name.contains(['-', ',', '，']) {
        return Err(invalid(
            route,
            "department name must not contain '-', ',' or '，'".to_string(),
        ));
    }
    Ok(())
}

fn check_user_fields(
    route: &'static str,
    fields: [(&str, Option<&str>, usize); 5],
) -> Result<(), DingTalkError> {
    fields
        .into_iter()
        .try_for_each(|(field, value, max)| check_len(route, field, value, max))
}

fn field<'a>(value: &'a Value, key: &str) -> &'a Value {
    value.get(key).unwrap_or(&Value::Null)
}

impl DingTalkClient {
    /// Calls a read `route` and parses its `result` (or another top-level `key`) into `T`.
    async fn read<T: serde::de::DeserializeOwned>(
        &self,
        route: &'static str,
        body: Value,
        key: &str,
    ) -> Result<T, DingTalkError> {
        let answer = self.call(route, &body, Repeat::Safe).await?;
        parse(route, field(&answer, key).clone())
    }

    /// `v2/user/create`; returns the userid.
    pub async fn user_create(&self, user: &UserCreate) -> Result<String, DingTalkError> {
        const ROUTE: &str = "topapi/v2/user/create";
        if user.name.trim().is_empty() || user.mobile.trim().is_empty() {
            return Err(invalid(ROUTE, "name and mobile are required".to_string()));
        }
        check_len(ROUTE, "userid", Some(&user.userid), 64)?;
        check_user_fields(
            ROUTE,
            [
                ("name", Some(&user.name), 80),
                ("telephone", user.telephone.as_deref(), 50),
                ("job_number", user.job_number.as_deref(), 50),
                ("title", user.title.as_deref(), 200),
                ("email", user.email.as_deref(), 50),
            ],
        )?;
        if user.dept_id_list.is_empty() || user.dept_id_list.len() > MAX_USER_DEPTS {
            return Err(invalid(
                ROUTE,
                format!("dept_id_list must hold 1 to {MAX_USER_DEPTS} departments"),
            ));
        }
        let answer = self.call(ROUTE, user, Repeat::Safe).await?;
        let userid = field(field(&answer, "result"), "userid")
            .as_str()
            .unwrap_or(&user.userid);
        Ok(userid.to_string())
    }

    /// `v2/user/update`.
    pub async fn user_update(&self, user: &UserUpdate) -> Result<(), DingTalkError> {
        const ROUTE: &str = "topapi/v2/user/update";
        check_user_fields(
            ROUTE,
            [
                ("name", user.name.as_deref(), 80),
                ("telephone", user.telephone.as_deref(), 50),
                ("job_number", user.job_number.as_deref(), 50),
                ("title", user.title.as_deref(), 200),
                ("email", user.email.as_deref(), 50),
            ],
        )?;
        if user
            .dept_id_list
            .as_ref()
            .is_some_and(|l| l.is_empty() || l.len() > MAX_USER_DEPTS)
        {
            return Err(invalid(
                ROUTE,
                format!("dept_id_list must hold 1 to {MAX_USER_DEPTS} departments"),
            ));
        }
        self.call(ROUTE, user, Repeat::Safe).await.map(drop)
    }

    /// `v2/user/get`.
    pub async fn user_get(&self, userid: &str) -> Result<DtUser, DingTalkError> {
        self.read("topapi/v2/user/get", json!({ "userid": userid }), "result")
            .await
    }

    /// `v2/user/delete`.
    pub async fn user_delete(&self, userid: &str) -> Result<(), DingTalkError> {
        self.call(
            "topapi/v2/user/delete",
            &json!({ "userid": userid }),
            Repeat::Safe,
        )
        .await
        .map(drop)
    }

    /// One page of `v2/user/list` (direct members of `dept_id`).
    pub async fn user_list(
        &self,
        dept_id: i64,
        cursor: i64,
        size: i64,
    ) -> Result<UserPage, DingTalkError> {
        let size = size.clamp(1, USER_PAGE_SIZE);
        let body = json!({ "dept_id": dept_id, "cursor": cursor, "size": size });
        self.read("topapi/v2/user/list", body, "result").await
    }

    /// Every direct member of `dept_id`, 100 a page.
    pub async fn user_list_all(&self, dept_id: i64) -> Result<Vec<DtUser>, DingTalkError> {
        let mut users = Vec::new();
        let mut cursor = 0;
        loop {
            let page = self.user_list(dept_id, cursor, USER_PAGE_SIZE).await?;
            users.extend(page.list);
            match page
                .next_cursor
                .filter(|next| page.has_more && *next > cursor)
            {
                Some(next) => cursor = next,
                None => return Ok(users),
            }
        }
    }

    /// `user/listid`.
    pub async fn user_listid(&self, dept_id: i64) -> Result<Vec<String>, DingTalkError> {
        let answer = self
            .call(
                "topapi/user/listid",
                &json!({ "dept_id": dept_id }),
                Repeat::Safe,
            )
            .await?;
        let list = field(field(&answer, "result"), "userid_list");
        Ok(list
            .as_array()
            .map(|l| {
                l.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// `v2/user/getbymobile`; `None` when no in-service user has that mobile.
    pub async fn user_by_mobile(&self, mobile: &str) -> Result<Option<String>, DingTalkError> {
        match self
            .call(
                "topapi/v2/user/getbymobile",
                &json!({ "mobile": mobile }),
                Repeat::Safe,
            )
            .await
        {
            Ok(answer) => Ok(field(field(&answer, "result"), "userid")
                .as_str()
                .map(str::to_string)),
            // A mobile DingTalk finds malformed (40104) has no user either; creating one with
            // it then fails with the telling errcode (60103).
            Err(error) if error.kind == ErrorKind::UserNotFound || error.errcode == Some(40104) => {
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    /// `user/count`.
    pub async fn user_count(&self, only_active: bool) -> Result<u64, DingTalkError> {
        let answer = self
            .call(
                "topapi/user/count",
                &json!({ "only_active": only_active }),
                Repeat::Safe,
            )
            .await?;
        let count = field(field(&answer, "result"), "count");
        Ok(count
            .as_u64()
            .or_else(|| count.as_str().and_then(|s| s.parse().ok()))
            .unwrap_or(0))
    }

    /// `v2/department/create`; returns the new dept_id.
    pub async fn dept_create(&self, dept: &DeptCreate) -> Result<i64, DingTalkError> {
        const ROUTE: &str = "topapi/v2/department/create";
        check_dept_name(ROUTE, &dept.name)?;
        let answer = self.call(ROUTE, dept, Repeat::Safe).await?;
        let id = field(field(&answer, "result"), "dept_id");
        id.as_i64()
            .or_else(|| id.as_str().and_then(|s| s.parse().ok()))
            .ok_or_else(|| DingTalkError::new(ErrorKind::NotJson, ROUTE, "answer has no dept_id"))
    }

    /// `v2/department/update`.
    pub async fn dept_update(&self, dept: &DeptUpdate) -> Result<(), DingTalkError> {
        const ROUTE: &str = "topapi/v2/department/update";
        if let Some(name) = &dept.name {
            check_dept_name(ROUTE, name)?;
        }
        self.call(ROUTE, dept, Repeat::Safe).await.map(drop)
    }

    /// `v2/department/delete`.
    pub async fn dept_delete(&self, dept_id: i64) -> Result<(), DingTalkError> {
        self.call(
            "topapi/v2/department/delete",
            &json!({ "dept_id": dept_id }),
            Repeat::Safe,
        )
        .await
        .map(drop)
    }

    /// `v2/department/get`.
    pub async fn dept_get(&self, dept_id: i64) -> Result<DtDept, DingTalkError> {
        self.read(
            "topapi/v2/department/get",
            json!({ "dept_id": dept_id }),
            "result",
        )
        .await
    }

    /// `v2/department/listsub`: the next level below `dept_id`.
    pub async fn dept_listsub(&self, dept_id: i64) -> Result<Vec<DeptBrief>, DingTalkError> {
        self.read(
            "topapi/v2/department/listsub",
            json!({ "dept_id": dept_id }),
            "result",
        )
        .await
    }

    /// `v2/department/listsubid`: ids of the next level below `dept_id`.
    pub async fn dept_listsubid(&self, dept_id: i64) -> Result<Vec<i64>, DingTalkError> {
        const ROUTE: &str = "topapi/v2/department/listsubid";
        let answer = self
            .call(ROUTE, &json!({ "dept_id": dept_id }), Repeat::Safe)
            .await?;
        #[serde_with::serde_as]
        #[derive(serde::Deserialize)]
        struct Ids {
            #[serde_as(as = "super::types::Ids")]
            #[serde(default)]
            dept_id_list: Vec<i64>,
        }
        parse::<Ids>(ROUTE, field(&answer, "result").clone()).map(|ids| ids.dept_id_list)
    }

    /// `asyncsend_v2`; returns the task_id. Checked first: at most 100 userids and 20
    /// departments, a body of at most 2048 bytes, and some recipient.
    pub async fn send(&self, to: &Recipients, message: &Message) -> Result<i64, DingTalkError> {
        const ROUTE: &str = "topapi/message/corpconversation/asyncsend_v2";
        if to.userids.len() > MAX_SEND_USERIDS || to.dept_ids.len() > MAX_SEND_DEPTS {
            return Err(invalid(
                ROUTE,
                format!(
                    "at most {MAX_SEND_USERIDS} userids and {MAX_SEND_DEPTS} departments per send"
                ),
            ));
        }
        if !to.to_all && to.userids.is_empty() && to.dept_ids.is_empty() {
            return Err(invalid(ROUTE, "no recipients".to_string()));
        }
        if message.encoded_len() > MAX_MESSAGE_BYTES {
            return Err(invalid(
                ROUTE,
                format!(
                    "message is {} bytes, DingTalk allows {MAX_MESSAGE_BYTES}",
                    message.encoded_len()
                ),
            ));
        }
        let mut body = json!({ "agent_id": self.agent_id(), "msg": message });
        if to.to_all {
            body["to_all_user"] = json!(true);
        }
        if !to.userids.is_empty() {
            body["userid_list"] = json!(to.userids.join(","));
        }
        if !to.dept_ids.is_empty() {
            let ids: Vec<String> = to.dept_ids.iter().map(ToString::to_string).collect();
            body["dept_id_list"] = json!(ids.join(","));
        }
        let answer = self.call(ROUTE, &body, Repeat::OnlyIfUnsent).await?;
        let task = field(&answer, "task_id");
        task.as_i64()
            .or_else(|| task.as_str().and_then(|s| s.parse().ok()))
            .ok_or_else(|| DingTalkError::new(ErrorKind::NotJson, ROUTE, "answer has no task_id"))
    }

    /// `recall`.
    pub async fn recall(&self, task_id: i64) -> Result<(), DingTalkError> {
        let body = json!({ "agent_id": self.agent_id(), "msg_task_id": task_id });
        self.call(
            "topapi/message/corpconversation/recall",
            &body,
            Repeat::Safe,
        )
        .await
        .map(drop)
    }

    /// `getsendprogress`.
    pub async fn send_progress(&self, task_id: i64) -> Result<SendProgress, DingTalkError> {
        let body = json!({ "agent_id": self.agent_id(), "task_id": task_id });
        self.read(
            "topapi/message/corpconversation/getsendprogress",
            body,
            "progress",
        )
        .await
    }

    /// `getsendresult` (only for sends of at most 100 recipients, within 24 h).
    pub async fn send_result(&self, task_id: i64) -> Result<SendResult, DingTalkError> {
        let body = json!({ "agent_id": self.agent_id(), "task_id": task_id });
        self.read(
            "topapi/message/corpconversation/getsendresult",
            body,
            "send_result",
        )
        .await
    }
}

//! Typed requests and answers of the DingTalk endpoints dingsync uses. Answers are parsed
//! leniently (numbers and booleans may arrive as strings, API.md §0); requests are strict:
//! lists are sent as comma-separated strings, optional fields are omitted, and field limits
//! are checked before anything is sent.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use serde_with::formats::CommaSeparator;
use serde_with::{serde_as, DisplayFromStr, PickFirst, Same, StringWithSeparator};

use super::{DingTalkError, ErrorKind};

/// A list of ids as a JSON array (of numbers or numeric strings) or as one comma-separated
/// string, the form DingTalk takes them in.
pub(super) type Ids = PickFirst<(
    Vec<PickFirst<(Same, DisplayFromStr)>>,
    StringWithSeparator<CommaSeparator, i64>,
)>;
/// A list of userids, as an array or one comma-separated string.
type Names = PickFirst<(Vec<Same>, StringWithSeparator<CommaSeparator, String>)>;

/// Parses an answer into `T`. A field that is `null` counts as absent, so that its default
/// applies (DingTalk omits empty fields; other implementations may send `null`).
pub fn parse<T: DeserializeOwned>(route: &'static str, value: Value) -> Result<T, DingTalkError> {
    serde_json::from_value(without_nulls(value)).map_err(|error| {
        DingTalkError::new(
            ErrorKind::NotJson,
            route,
            format!("unexpected answer shape: {error}"),
        )
    })
}

fn without_nulls(value: Value) -> Value {
    match value {
        Value::Object(fields) => Value::Object(
            fields
                .into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(without_nulls).collect()),
        other => other,
    }
}

/// `gettoken`.
#[serde_as]
#[derive(Debug, Deserialize)]
pub struct TokenAnswer {
    /// The token.
    pub access_token: String,
    /// Lifetime in seconds.
    #[serde_as(as = "PickFirst<(_, DisplayFromStr)>")]
    pub expires_in: u64,
}

/// A user as DingTalk returns it (`v2/user/get`, `v2/user/list`).
#[serde_as]
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct DtUser {
    /// userid.
    pub userid: String,
    /// unionid.
    #[serde(default)]
    pub unionid: String,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Mobile (only with the mobile permission).
    #[serde(default)]
    pub mobile: String,
    /// Extension.
    #[serde(default)]
    pub telephone: String,
    /// Employee number.
    #[serde(default)]
    pub job_number: String,
    /// Title.
    #[serde(default)]
    pub title: String,
    /// Email.
    #[serde(default)]
    pub email: String,
    /// Departments.
    #[serde_as(as = "Ids")]
    #[serde(default)]
    pub dept_id_list: Vec<i64>,
    /// Activated.
    #[serde_as(as = "PickFirst<(_, DisplayFromStr)>")]
    #[serde(default)]
    pub active: bool,
}

/// One page of `v2/user/list`.
#[serde_as]
#[derive(Debug, Deserialize)]
pub struct UserPage {
    /// More pages follow.
    #[serde_as(as = "PickFirst<(_, DisplayFromStr)>")]
    #[serde(default)]
    pub has_more: bool,
    /// Cursor of the next page.
    #[serde_as(as = "Option<PickFirst<(_, DisplayFromStr)>>")]
    #[serde(default)]
    pub next_cursor: Option<i64>,
    /// The users.
    #[serde(default)]
    pub list: Vec<DtUser>,
}

/// A department from `v2/department/get`.
#[serde_as]
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct DtDept {
    /// Id.
    #[serde_as(as = "PickFirst<(_, DisplayFromStr)>")]
    pub dept_id: i64,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Parent (absent for the root).
    #[serde_as(as = "Option<PickFirst<(_, DisplayFromStr)>>")]
    #[serde(default)]
    pub parent_id: Option<i64>,
    /// Order among siblings.
    #[serde_as(as = "Option<PickFirst<(_, DisplayFromStr)>>")]
    #[serde(default)]
    pub order: Option<i64>,
    /// The developer's key (dingsync: `sys_depart.id`).
    #[serde(default)]
    pub source_identifier: Option<String>,
}

/// A department from `v2/department/listsub` (no `source_identifier`, no `order`).
#[serde_as]
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct DeptBrief {
    /// Id.
    #[serde_as(as = "PickFirst<(_, DisplayFromStr)>")]
    pub dept_id: i64,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Parent.
    #[serde_as(as = "Option<PickFirst<(_, DisplayFromStr)>>")]
    #[serde(default)]
    pub parent_id: Option<i64>,
}

fn comma_list<S: Serializer, T: ToString>(items: &[T], serializer: S) -> Result<S::Ok, S::Error> {
    let text: Vec<String> = items.iter().map(ToString::to_string).collect();
    serializer.serialize_str(&text.join(","))
}

fn opt_comma_list<S: Serializer, T: ToString>(
    items: &Option<Vec<T>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match items {
        Some(items) => comma_list(items, serializer),
        None => serializer.serialize_none(),
    }
}

/// `v2/user/create`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct UserCreate {
    /// userid (dingsync: the JeecgBoot username).
    pub userid: String,
    /// Name (required, ≤ 80).
    pub name: String,
    /// Mobile (required, unique).
    pub mobile: String,
    /// Extension (≤ 50, unique).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub telephone: Option<String>,
    /// Employee number (≤ 50).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_number: Option<String>,
    /// Title (≤ 200).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Email (≤ 50, unique).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Departments (1..=100).
    #[serde(serialize_with = "comma_list")]
    pub dept_id_list: Vec<i64>,
}

/// `v2/user/update`: only the fields that are `Some` change.
#[derive(Clone, Debug, Default, Serialize)]
pub struct UserUpdate {
    /// Whom.
    pub userid: String,
    /// Name (≤ 80).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Extension (≤ 50, unique).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub telephone: Option<String>,
    /// Employee number (≤ 50).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_number: Option<String>,
    /// Title (≤ 200).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Email (≤ 50, unique).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Departments (1..=100), replacing the current ones.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "opt_comma_list"
    )]
    pub dept_id_list: Option<Vec<i64>>,
}

/// `v2/department/create`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DeptCreate {
    /// Name (1..=64, no `-` `,` `，`).
    pub name: String,
    /// Parent (root = 1).
    pub parent_id: i64,
    /// Order among siblings, smaller first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<i64>,
    /// The developer's key (dingsync: `sys_depart.id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_identifier: Option<String>,
}

/// `v2/department/update`: only the fields that are `Some` change.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DeptUpdate {
    /// Which.
    pub dept_id: i64,
    /// New name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// New parent (a move).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<i64>,
    /// New order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<i64>,
    /// New developer key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_identifier: Option<String>,
}

/// Who receives a work notification.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recipients {
    /// userids (≤ 100 per call).
    pub userids: Vec<String>,
    /// Department ids, sub-departments included (≤ 20 per call).
    pub dept_ids: Vec<i64>,
    /// Everyone.
    pub to_all: bool,
}

/// A work-notification message: `{"msgtype": T, T: {...}}`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Message(Value);

/// The message types DingTalk accepts for work notifications (of those dingsync sends).
pub const MESSAGE_TYPES: &[&str] = &["text", "markdown", "link", "oa", "action_card"];

/// Why a JSON value is not a work notice DingTalk takes.
#[derive(Debug, thiserror::Error)]
pub enum MessageShapeError {
    /// `msgtype` is missing or not one of [`MESSAGE_TYPES`].
    #[error("msgtype must be one of {}", MESSAGE_TYPES.join(", "))]
    UnknownType,
    /// The object named by `msgtype` is missing.
    #[error("the message needs a `{0}` object")]
    NoBody(String),
}

impl Message {
    /// A text message.
    pub fn text(content: &str) -> Self {
        Self(serde_json::json!({ "msgtype": "text", "text": { "content": content } }))
    }

    /// A markdown message.
    pub fn markdown(title: &str, text: &str) -> Self {
        Self(
            serde_json::json!({ "msgtype": "markdown", "markdown": { "title": title, "text": text } }),
        )
    }

    /// An action card with one button.
    pub fn action_card(title: &str, markdown: &str, button: &str, url: &str) -> Self {
        Self(
            serde_json::json!({ "msgtype": "action_card", "action_card": {
            "title": title, "markdown": markdown, "single_title": button, "single_url": url } }),
        )
    }

    /// A message from its JSON form; checks the type and the body's presence.
    pub fn from_json(value: Value) -> Result<Self, MessageShapeError> {
        let msgtype = value
            .get("msgtype")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !MESSAGE_TYPES.contains(&msgtype) {
            return Err(MessageShapeError::UnknownType);
        }
        if !value.get(msgtype).is_some_and(Value::is_object) {
            return Err(MessageShapeError::NoBody(msgtype.to_string()));
        }
        Ok(Self(value))
    }

    /// The JSON form.
    pub fn as_json(&self) -> &Value {
        &self.0
    }

    /// Size as sent, in bytes (DingTalk allows 2048).
    pub fn encoded_len(&self) -> usize {
        self.0.to_string().len()
    }
}

/// `getsendprogress`.
#[serde_as]
#[derive(Clone, Debug, Deserialize)]
pub struct SendProgress {
    /// 0..=100.
    #[serde_as(as = "PickFirst<(_, DisplayFromStr)>")]
    #[serde(default)]
    pub progress_in_percent: i64,
    /// 0 not started, 1 processing, 2 done.
    #[serde_as(as = "PickFirst<(_, DisplayFromStr)>")]
    #[serde(default)]
    pub status: i64,
}

/// `getsendresult`.
#[serde_as]
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SendResult {
    /// Unknown userids.
    #[serde_as(as = "Names")]
    #[serde(default)]
    pub invalid_user_id_list: Vec<String>,
    /// Dropped by flow control (duplicate content, daily cap).
    #[serde_as(as = "Names")]
    #[serde(default)]
    pub forbidden_user_id_list: Vec<String>,
    /// Delivery failed.
    #[serde_as(as = "Names")]
    #[serde(default)]
    pub failed_user_id_list: Vec<String>,
    /// Read.
    #[serde_as(as = "Names")]
    #[serde(default)]
    pub read_user_id_list: Vec<String>,
    /// Unread.
    #[serde_as(as = "Names")]
    #[serde(default)]
    pub unread_user_id_list: Vec<String>,
    /// Unknown department ids.
    #[serde_as(as = "Ids")]
    #[serde(default)]
    pub invalid_dept_id_list: Vec<i64>,
    /// Why users were blocked.
    #[serde(default)]
    pub forbidden_list: Vec<ForbiddenEntry>,
}

/// One `forbidden_list` entry.
#[serde_as]
#[derive(Clone, Debug, Deserialize)]
pub struct ForbiddenEntry {
    /// Flow-control code (143105 daily cap, 143106 duplicate content, ...).
    #[serde_as(as = "PickFirst<(_, DisplayFromStr)>")]
    pub code: i64,
    /// The user.
    #[serde(default)]
    pub userid: String,
}

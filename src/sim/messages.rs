//! Work notifications (API.md §4): send with its limits and message-type rules, the
//! same-content-same-day rule, the per-user daily cap, recall within 24 h, progress and
//! results. Time comes in as simulated seconds; no HTTP here.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::org::Org;
use super::params::{Params, INVALID_PARAM};
use super::ApiFail;

const MAX_MESSAGE_BYTES: usize = 2048;
// API.md §8 #1/#2: the doc says 100 userids and 20 departments per call, the legacy SDK
// 5000 and 500. The simulator takes the stricter doc limits.
const MAX_USERIDS: usize = 100;
const MAX_DEPT_IDS: usize = 20;
// API.md §8 #10: older doc versions limited `to_all_user` sends to 3 a day; the current page
// does not. The simulator takes the stricter reading: a 4th to-all send in one day is
// accepted but delivered to nobody (every recipient forbidden with the daily-cap code).
const TO_ALL_PER_DAY: u32 = 3;
const DAILY_CAP_PER_USER: u32 = 500;
const RECALL_WINDOW_SECS: i64 = 24 * 3600;
const RESULT_MAX_RECIPIENTS: usize = 100;
const SECS_PER_DAY: i64 = 24 * 3600;
const DUPLICATE_CONTENT: i64 = 143_106;
const DAILY_CAP: i64 = 143_105;

/// One accepted send.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Task {
    /// DingTalk's task id.
    pub task_id: i64,
    /// Simulated send time (seconds).
    pub sent_at: i64,
    /// The message as sent.
    pub msg: Value,
    /// Requested userids (after to_all_user/dept expansion: everyone addressed).
    pub addressed: usize,
    /// Delivered to (unread until the admin API marks them read).
    pub delivered: Vec<String>,
    /// Read.
    pub read: Vec<String>,
    /// Unknown userids.
    pub invalid_users: Vec<String>,
    /// Unknown dept ids.
    pub invalid_depts: Vec<i64>,
    /// Dropped by flow control: (userid, code).
    pub forbidden: Vec<(String, i64)>,
    /// Recalled.
    pub recalled: bool,
}

/// An app's notifications.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Notifications {
    /// Tasks by id.
    pub tasks: BTreeMap<i64, Task>,
    next_task_id: i64,
    /// (userid, day) -> count, and (userid, day, content hash) seen.
    #[serde(skip)]
    per_user_day: HashMap<(String, i64), u32>,
    #[serde(skip)]
    seen_content: HashMap<(String, i64, u64), ()>,
    #[serde(skip)]
    to_all_per_day: HashMap<i64, u32>,
}

fn required<'a>(
    body: &'a Map<String, Value>,
    field: &str,
    msgtype: &str,
) -> Result<&'a Value, ApiFail> {
    match body.get(field) {
        Some(value) if !value.is_null() && value.as_str() != Some("") => Ok(value),
        _ => Err(ApiFail::new(
            INVALID_PARAM,
            format!("msg.{msgtype}.{field} 缺失"),
        )),
    }
}

fn max_len(body: &Map<String, Value>, field: &str, limit: usize) -> Result<(), ApiFail> {
    let length = body
        .get(field)
        .and_then(Value::as_str)
        .map_or(0, |s| s.chars().count());
    if length > limit {
        return Err(ApiFail::new(34016, format!("{field} 超过长度限制 {limit}")));
    }
    Ok(())
}

/// Checks a `msg` object against the message-type rules (API.md §4.1).
pub fn validate_msg(msg: &Map<String, Value>) -> Result<(), ApiFail> {
    let msgtype = msg
        .get("msgtype")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let body = msg
        .get(msgtype)
        .and_then(Value::as_object)
        .ok_or_else(|| ApiFail::new(40008, "消息类型不合法或消息体缺失"))?;
    match msgtype {
        "text" => {
            required(body, "content", msgtype)?;
            max_len(body, "content", 5000)
        }
        "markdown" => {
            required(body, "title", msgtype)?;
            required(body, "text", msgtype)?;
            max_len(body, "title", 64)?;
            max_len(body, "text", 5000)
        }
        "link" => {
            for field in ["messageUrl", "picUrl", "title", "text"] {
                required(body, field, msgtype)?;
            }
            max_len(body, "title", 100)
        }
        "oa" => {
            required(body, "message_url", msgtype)?;
            let head = required(body, "head", msgtype)?;
            let bgcolor = head
                .get("bgcolor")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if bgcolor.len() != 8 || !bgcolor.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(ApiFail::new(
                    INVALID_PARAM,
                    "msg.oa.head.bgcolor 须为8位十六进制",
                ));
            }
            required(body, "body", msgtype).map(|_| ())
        }
        "action_card" => validate_action_card(body),
        _ => Err(ApiFail::new(40008, "消息类型不合法")),
    }
}

fn validate_action_card(body: &Map<String, Value>) -> Result<(), ApiFail> {
    required(body, "markdown", "action_card")?;
    max_len(body, "markdown", 5000)?;
    max_len(body, "title", 64)?;
    if body.contains_key("single_title") || body.contains_key("single_url") {
        required(body, "single_title", "action_card")?;
        required(body, "single_url", "action_card")?;
        max_len(body, "single_title", 20)?;
        return max_len(body, "single_url", 500);
    }
    let buttons = required(body, "btn_json_list", "action_card")?;
    let list = buttons
        .as_array()
        .filter(|list| !list.is_empty())
        .ok_or_else(|| ApiFail::new(INVALID_PARAM, "msg.action_card.btn_json_list 须为非空数组"))?;
    if buttons.to_string().len() > 1000 {
        return Err(ApiFail::new(34016, "btn_json_list 超过长度限制 1000"));
    }
    for button in list {
        let title = button
            .get("title")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let url = button
            .get("action_url")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if title.is_empty()
            || url.is_empty()
            || title.chars().count() > 20
            || url.chars().count() > 700
        {
            return Err(ApiFail::new(
                34016,
                "btn_json_list 按钮 title(≤20)/action_url(≤700) 不合法",
            ));
        }
    }
    Ok(())
}

fn content_hash(msg: &Value) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    msg.to_string().hash(&mut hasher);
    hasher.finish()
}

impl Notifications {
    /// `asyncsend_v2`. `agent_id` must be the app's; `now` is simulated seconds.
    pub fn send(
        &mut self,
        org: &Org,
        agent_id: i64,
        p: &Params,
        now: i64,
    ) -> Result<Value, ApiFail> {
        if p.required_i64("agent_id")? != agent_id {
            return Err(ApiFail::new(40056, "不合法的agentid"));
        }
        let raw_len = match p.0.get("msg") {
            Some(Value::String(text)) => text.len(),
            Some(other) => other.to_string().len(),
            None => 0,
        };
        let msg = p
            .object("msg")?
            .ok_or_else(|| ApiFail::new(INVALID_PARAM, "缺少参数 msg"))?;
        if raw_len > MAX_MESSAGE_BYTES {
            return Err(ApiFail::new(45002, "消息内容超过2048字节"));
        }
        validate_msg(&msg)?;
        let to = recipients(p)?;
        let task = self.deliver(org, Value::Object(msg), to, now);
        let task_id = task.task_id;
        self.tasks.insert(task_id, task);
        Ok(json!({ "task_id": task_id }))
    }

    /// Records a send of `msg` to `to` at `now` (seconds): its task, with who got it and who
    /// did not, and why.
    fn deliver(&mut self, org: &Org, msg: Value, to: Recipients, now: i64) -> Task {
        self.next_task_id += 1;
        let task_id = 256_000_000_000 + self.next_task_id;
        let mut task = Task {
            task_id,
            sent_at: now,
            msg,
            addressed: 0,
            delivered: Vec::new(),
            read: Vec::new(),
            invalid_users: Vec::new(),
            invalid_depts: Vec::new(),
            forbidden: Vec::new(),
            recalled: false,
        };
        let to_all = to.to_all;
        let targets = targets(org, to, &mut task);
        task.addressed = targets.len() + task.invalid_users.len();
        let day = now.div_euclid(SECS_PER_DAY);
        let to_all_spent = to_all && {
            let sends = self.to_all_per_day.entry(day).or_insert(0);
            *sends += 1;
            *sends > TO_ALL_PER_DAY
        };
        self.admit(&mut task, targets, day, to_all_spent);
        task
    }

    /// Delivers `task` to each of `targets` that flow control lets through on `day`; the
    /// others are `forbidden`: the daily cap per user (or the day's to-all sends spent), or
    /// the same content sent to them that day.
    fn admit(&mut self, task: &mut Task, targets: Vec<String>, day: i64, to_all_spent: bool) {
        let hash = content_hash(&task.msg);
        for userid in targets {
            let count = self.per_user_day.entry((userid.clone(), day)).or_insert(0);
            if *count >= DAILY_CAP_PER_USER || to_all_spent {
                task.forbidden.push((userid, DAILY_CAP));
            } else if self
                .seen_content
                .insert((userid.clone(), day, hash), ())
                .is_some()
            {
                task.forbidden.push((userid, DUPLICATE_CONTENT));
            } else {
                *count += 1;
                task.delivered.push(userid);
            }
        }
    }

    fn task(&self, agent_id: i64, p: &Params, task_key: &str) -> Result<&Task, ApiFail> {
        if p.required_i64("agent_id")? != agent_id {
            return Err(ApiFail::new(400002, "不合法的agentId"));
        }
        let task_id = p.required_i64(task_key)?;
        self.tasks
            .get(&task_id)
            .ok_or_else(|| ApiFail::new(400002, "不合法的taskId"))
    }

    /// `recall`: only within 24 h of the send.
    pub fn recall(&mut self, agent_id: i64, p: &Params, now: i64) -> Result<Value, ApiFail> {
        let task_id = self.task(agent_id, p, "msg_task_id")?.task_id;
        let task = self
            .tasks
            .get_mut(&task_id)
            .ok_or_else(|| ApiFail::new(400002, "不合法的taskId"))?;
        if now - task.sent_at > RECALL_WINDOW_SECS {
            return Err(ApiFail::new(400002, "只能撤回24小时内发送的消息"));
        }
        task.recalled = true;
        Ok(json!({}))
    }

    /// `getsendprogress`: the simulator finishes every task at once. API.md §8 #4: the page
    /// says 7 days in one place and 24 h in another; the simulator takes 24 h.
    pub fn progress(&self, agent_id: i64, p: &Params, now: i64) -> Result<Value, ApiFail> {
        let task = self.task(agent_id, p, "task_id")?;
        if now - task.sent_at > RECALL_WINDOW_SECS {
            return Err(ApiFail::new(400002, "只能查询24小时内的任务"));
        }
        Ok(json!({ "progress": { "progress_in_percent": 100, "status": 2 } }))
    }

    /// `getsendresult`: within 24 h, and not for more than 100 recipients.
    pub fn result(&self, agent_id: i64, p: &Params, now: i64) -> Result<Value, ApiFail> {
        let task = self.task(agent_id, p, "task_id")?;
        if now - task.sent_at > RECALL_WINDOW_SECS {
            return Err(ApiFail::new(400002, "只能查询24小时内的任务"));
        }
        if task.addressed > RESULT_MAX_RECIPIENTS {
            return Err(ApiFail::new(
                INVALID_PARAM,
                "接收人超过100时不支持查询发送结果",
            ));
        }
        let unread: Vec<&String> = task
            .delivered
            .iter()
            .filter(|u| !task.read.contains(u))
            .collect();
        let forbidden_ids: Vec<&String> = task.forbidden.iter().map(|(u, _)| u).collect();
        let forbidden_list: Vec<Value> = task
            .forbidden
            .iter()
            .map(|(userid, code)| json!({ "code": code.to_string(), "count": if *code == DAILY_CAP { 500 } else { 1 }, "userid": userid }))
            .collect();
        Ok(json!({ "send_result": {
            "invalid_user_id_list": task.invalid_users, "forbidden_user_id_list": forbidden_ids,
            "failed_user_id_list": [], "read_user_id_list": task.read, "unread_user_id_list": unread,
            "invalid_dept_id_list": task.invalid_depts, "forbidden_list": forbidden_list,
        }}))
    }
}

/// The userids `to` addresses that the organisation has (everyone for `to_all`, the
/// members of each department and those below it), sorted, each once; unknown userids and
/// departments are noted in `task`.
fn targets(org: &Org, to: Recipients, task: &mut Task) -> Vec<String> {
    let mut targets: Vec<String> = Vec::new();
    if to.to_all {
        targets.extend(org.users.keys().cloned());
    }
    for userid in to.userids {
        if org.users.contains_key(&userid) {
            targets.push(userid);
        } else {
            task.invalid_users.push(userid);
        }
    }
    for dept in to.dept_ids {
        if org.depts.contains_key(&dept) {
            targets.extend(org.members_recursive(dept));
        } else {
            task.invalid_depts.push(dept);
        }
    }
    targets.sort();
    targets.dedup();
    targets
}

/// Who a send addresses, as the call named them.
struct Recipients {
    userids: Vec<String>,
    dept_ids: Vec<i64>,
    to_all: bool,
}

/// A send's recipients as its parameters name them, within DingTalk's limits (100 userids,
/// 20 departments, at least one recipient).
fn recipients(p: &Params) -> Result<Recipients, ApiFail> {
    let userids = p.str_list("userid_list").unwrap_or_default();
    let dept_ids = p.id_list("dept_id_list")?.unwrap_or_default();
    let to_all = p.bool("to_all_user")?.unwrap_or(false);
    if userids.len() > MAX_USERIDS {
        return Err(ApiFail::new(INVALID_PARAM, "userid_list 最多100个"));
    }
    if dept_ids.len() > MAX_DEPT_IDS {
        return Err(ApiFail::new(INVALID_PARAM, "dept_id_list 最多20个"));
    }
    if !to_all && userids.is_empty() && dept_ids.is_empty() {
        return Err(ApiFail::new(
            INVALID_PARAM,
            "userid_list、dept_id_list、to_all_user 至少一个",
        ));
    }
    Ok(Recipients {
        userids,
        dept_ids,
        to_all,
    })
}

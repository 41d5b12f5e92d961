//! What happens around every call: injected faults, the access token, the per-app-per-path
//! rate limit (a sliding one-second window, stricter than a fixed one), call counters, the
//! answer envelope, and routing to the organisation and notifications.

use std::time::{Duration, Instant};

use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::params::Params;
use super::stream::changes;
use super::{ApiFail, App, Simulator, State, TokenEntry};

/// What an injected fault does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultAction {
    /// Answer HTTP 200 with this errcode (and `sub_code` for errcode 88).
    Errcode {
        /// The errcode, e.g. -1, 88, 90018, 90002.
        errcode: i64,
        /// `sub_code`, for errcode 88.
        #[serde(default)]
        sub_code: Option<String>,
    },
    /// Answer this HTTP status (502, 503, ...) with a plain-text body.
    Http {
        /// The status.
        status: u16,
    },
    /// Wait this long, then handle the call normally.
    Delay {
        /// Milliseconds.
        ms: u64,
    },
    /// Close the connection before handling the call (nothing happens).
    Drop,
    /// Handle the call, then close the connection before the answer (it happened, unseen).
    DropAfter,
    /// Answer DingTalk's IP-block HTML page (HTTP 200, text/html).
    Html,
    /// Answer the IP-block JSON without an errcode: `{"status":1111,"wait":5,...}`.
    IpBlock,
}

/// When a fault applies.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultRule {
    /// API path without the leading slash (`topapi/v2/user/create`), or `*` for all.
    pub path: String,
    /// Only this app; all apps when absent.
    #[serde(default)]
    pub appkey: Option<String>,
    /// What to do.
    pub action: FaultAction,
    /// Apply to the next N matching calls only.
    #[serde(default)]
    pub count: Option<u32>,
    /// Apply with this probability (0..1) to each matching call.
    #[serde(default)]
    pub probability: Option<f64>,
}

impl FaultRule {
    /// A rule for the next `count` calls of `path`.
    pub fn next(path: &str, count: u32, action: FaultAction) -> Self {
        Self {
            path: path.to_string(),
            appkey: None,
            action,
            count: Some(count),
            probability: None,
        }
    }

    /// A rule applying with `probability` to every call of `path`.
    pub fn random(path: &str, probability: f64, action: FaultAction) -> Self {
        Self {
            path: path.to_string(),
            appkey: None,
            action,
            count: None,
            probability: Some(probability),
        }
    }
}

/// How the simulator answers one request.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// A JSON body with this HTTP status.
    Json(u16, Value),
    /// A plain-text error body with this status.
    Status(u16),
    /// The IP-block HTML page.
    Html,
    /// No answer: the connection is closed.
    Drop,
}

/// One HTTP request, reduced to what DingTalk looks at.
pub struct ApiRequest<'a> {
    /// `GET` or `POST`.
    pub method: &'a str,
    /// Path without the leading slash.
    pub path: &'a str,
    /// Query parameters.
    pub query: Params,
    /// Raw body.
    pub body: &'a [u8],
    /// The `Host` header (the Stream endpoint is announced on it).
    pub host: Option<&'a str>,
}

/// An answer and how long to hold it back.
pub struct Answer {
    /// Wait before answering.
    pub delay: Option<Duration>,
    /// The answer.
    pub outcome: Outcome,
}

fn request_id() -> String {
    format!("{:x}", rand::rng().random::<u64>())
}

fn envelope(result: Result<Value, ApiFail>) -> Value {
    let mut body = match result {
        Ok(Value::Object(map)) => Value::Object(map),
        Ok(_) => json!({}),
        Err(fail) => json!({ "errcode": fail.errcode, "errmsg": fail.errmsg }),
    };
    if body.get("errcode").is_none() {
        body["errcode"] = json!(0);
        body["errmsg"] = json!("ok");
    }
    body["request_id"] = json!(request_id());
    body
}

/// Routes a topapi call to the organisation or the notifications; a successful change of
/// the address book queues its Stream event (one per call; failed calls queue none).
pub(super) fn route(app: &mut App, path: &str, p: &Params, now_ms: i64) -> Result<Value, ApiFail> {
    let subscribed = app.stream.subscribed();
    let before = subscribed
        .then(|| changes::user_before(&app.org, path, p))
        .flatten();
    let answer = call(app, path, p, now_ms / 1000)?;
    if subscribed {
        let made = changes::Call {
            path,
            params: p,
            answer: &answer,
        };
        if let Some((event_type, data)) =
            changes::event_of(&made, before.as_ref(), &app.org, now_ms)
        {
            app.stream.record(event_type, &data, now_ms);
        }
    }
    Ok(answer)
}

fn call(app: &mut App, path: &str, p: &Params, now_s: i64) -> Result<Value, ApiFail> {
    let org = &mut app.org;
    match path {
        "topapi/v2/user/create" => org.user_create(p),
        "topapi/v2/user/update" => org.user_update(p),
        "topapi/v2/user/get" => org.user_get(p),
        "topapi/v2/user/delete" => org.user_delete(p),
        "topapi/v2/user/list" => org.user_list(p),
        "topapi/v2/user/getbymobile" => org.user_getbymobile(p),
        "topapi/user/listid" => org.user_listid(p),
        "topapi/user/count" => org.user_count(p),
        "topapi/v2/department/create" => org.dept_create(p),
        "topapi/v2/department/update" => org.dept_update(p),
        "topapi/v2/department/delete" => org.dept_delete(p),
        "topapi/v2/department/get" => org.dept_get(p),
        "topapi/v2/department/listsub" => org.dept_listsub(p),
        "topapi/v2/department/listsubid" => org.dept_listsubid(p),
        "topapi/message/corpconversation/asyncsend_v2" => {
            app.notifications.send(&app.org, app.agent_id, p, now_s)
        }
        "topapi/message/corpconversation/recall" => {
            app.notifications.recall(app.agent_id, p, now_s)
        }
        "topapi/message/corpconversation/getsendprogress" => {
            app.notifications.progress(app.agent_id, p, now_s)
        }
        "topapi/message/corpconversation/getsendresult" => {
            app.notifications.result(app.agent_id, p, now_s)
        }
        _ => Err(ApiFail::new(404, "api not found")),
    }
}

impl Simulator {
    /// Answers one request as DingTalk would.
    pub fn handle(&self, request: ApiRequest<'_>) -> Answer {
        let mut state = self.lock();
        let body_params = Params::from_body(request.body);
        let appkey = state.appkey_of(&request, body_params.as_ref().ok());
        state.count(&appkey, request.path).calls += 1;
        let mut delay = None;
        let mut drop_after = false;
        match state.fault_for(&appkey, request.path) {
            Some(FaultAction::Delay { ms }) => delay = Some(Duration::from_millis(ms)),
            Some(FaultAction::DropAfter) => drop_after = true,
            Some(action) => {
                state.count(&appkey, request.path).faulted += 1;
                return Answer {
                    delay,
                    outcome: fault_outcome(action),
                };
            }
            None => {}
        }
        let outcome = match body_params {
            Ok(params) => state.answer(&request, &params),
            Err(fail) => Outcome::Json(200, envelope(Err(fail))),
        };
        let counter = state.count(&appkey, request.path);
        match &outcome {
            Outcome::Json(200, body) => match body.get("errcode").and_then(Value::as_i64) {
                Some(0) | None => counter.ok += 1,
                Some(90018) => counter.throttled += 1,
                Some(_) => counter.failed += 1,
            },
            _ => counter.failed += 1,
        }
        if drop_after {
            counter.faulted += 1;
            return Answer {
                delay,
                outcome: Outcome::Drop,
            };
        }
        Answer { delay, outcome }
    }
}

fn fault_outcome(action: FaultAction) -> Outcome {
    match action {
        FaultAction::Errcode { errcode, sub_code } => {
            let mut body = envelope(Err(ApiFail::new(errcode, "injected fault")));
            if let Some(sub_code) = sub_code {
                body["sub_code"] = json!(sub_code);
                body["sub_msg"] = json!("injected fault");
            }
            Outcome::Json(200, body)
        }
        FaultAction::Http { status } => Outcome::Status(status),
        FaultAction::Html => Outcome::Html,
        FaultAction::IpBlock => Outcome::Json(
            200,
            json!({ "status": 1111, "wait": 5, "source": "x5", "punish": "deny", "uuid": request_id() }),
        ),
        FaultAction::Drop | FaultAction::DropAfter | FaultAction::Delay { .. } => Outcome::Drop,
    }
}

impl State {
    fn appkey_of(&self, request: &ApiRequest<'_>, body: Option<&Params>) -> String {
        let from = match request.path {
            "gettoken" => request.query.str("appkey"),
            "v1.0/oauth2/accessToken" => body.and_then(|b| b.str("appKey")),
            "v1.0/gateway/connections/open" => body.and_then(|b| b.str("clientId")),
            _ => request
                .query
                .str("access_token")
                .and_then(|token| self.tokens.get(&token).map(|t| t.appkey.clone())),
        };
        from.filter(|key| self.apps.contains_key(key))
            .unwrap_or_else(|| "-".to_string())
    }

    fn fault_for(&mut self, appkey: &str, path: &str) -> Option<FaultAction> {
        let roll: f64 = self.rng.random();
        let index = self.faults.iter().position(|rule| {
            (rule.path == "*" || rule.path == path)
                && rule.appkey.as_deref().is_none_or(|key| key == appkey)
                && rule.probability.is_none_or(|p| roll < p)
                && rule.count.is_none_or(|n| n > 0)
        })?;
        let rule = &mut self.faults[index];
        let action = rule.action.clone();
        if let Some(n) = rule.count.as_mut() {
            *n -= 1;
            if *n == 0 {
                self.faults.remove(index);
            }
        }
        Some(action)
    }

    fn answer(&mut self, request: &ApiRequest<'_>, params: &Params) -> Outcome {
        match request.path {
            "gettoken" if request.method != "GET" => {
                Outcome::Json(200, envelope(Err(ApiFail::new(43001, "需要GET请求"))))
            }
            "gettoken" => Outcome::Json(200, envelope(self.gettoken(&request.query))),
            "v1.0/oauth2/accessToken" => self.access_token_v1(params),
            "v1.0/gateway/connections/open" if request.method == "POST" => {
                self.stream_open(params, request.host.unwrap_or("127.0.0.1"))
            }
            path if path.starts_with("topapi/") => {
                if request.method != "POST" {
                    return Outcome::Json(200, envelope(Err(ApiFail::new(43002, "需要POST请求"))));
                }
                Outcome::Json(200, envelope(self.topapi(path, &request.query, params)))
            }
            _ => Outcome::Json(404, json!({ "errcode": 404, "errmsg": "not found" })),
        }
    }

    fn issue_token(&mut self, appkey: &str) -> String {
        let now = self.now_ms();
        let ttl_ms = i64::try_from(self.options.token_ttl.as_millis()).unwrap_or(i64::MAX);
        let existing = self
            .tokens
            .iter_mut()
            .find(|(_, entry)| entry.appkey == appkey && entry.expires_at_ms > now);
        if let Some((token, entry)) = existing {
            // Asking again while valid returns the same token and extends it (API.md §1.1).
            entry.expires_at_ms = now + ttl_ms;
            return token.clone();
        }
        self.next_token += 1;
        let token = format!(
            "{:016x}{:016x}",
            rand::rng().random::<u64>(),
            self.next_token
        );
        self.tokens.retain(|_, entry| entry.appkey != appkey);
        self.tokens.insert(
            token.clone(),
            TokenEntry {
                appkey: appkey.to_string(),
                expires_at_ms: now + ttl_ms,
            },
        );
        token
    }

    pub(super) fn credentials_ok(
        &self,
        appkey: Option<&str>,
        secret: Option<&str>,
    ) -> Option<String> {
        let app = self.apps.get(appkey?)?;
        (Some(app.appsecret.as_str()) == secret).then(|| app.appkey.clone())
    }

    fn gettoken(&mut self, query: &Params) -> Result<Value, ApiFail> {
        let appkey = self
            .credentials_ok(
                query.str("appkey").as_deref(),
                query.str("appsecret").as_deref(),
            )
            .ok_or_else(|| ApiFail::new(40089, "不合法的corpId或corpSecret"))?;
        let token = self.issue_token(&appkey);
        Ok(json!({ "access_token": token, "expires_in": self.options.token_ttl.as_secs() }))
    }

    fn access_token_v1(&mut self, params: &Params) -> Outcome {
        if params.0.is_empty() {
            return Outcome::Json(
                400,
                json!({ "code": "MissingBody", "message": "body is mandatory", "requestid": request_id() }),
            );
        }
        match self.credentials_ok(
            params.str("appKey").as_deref(),
            params.str("appSecret").as_deref(),
        ) {
            Some(appkey) => {
                let token = self.issue_token(&appkey);
                Outcome::Json(
                    200,
                    json!({ "accessToken": token, "expireIn": self.options.token_ttl.as_secs() }),
                )
            }
            None => Outcome::Json(
                400,
                json!({ "code": "invalidClientIdOrSecret", "message": "无效的clientId或者clientSecret", "requestid": request_id() }),
            ),
        }
    }

    fn topapi(&mut self, path: &str, query: &Params, params: &Params) -> Result<Value, ApiFail> {
        let token = query
            .str("access_token")
            .ok_or_else(|| ApiFail::new(41001, "缺少access_token参数"))?;
        let now = self.now_ms();
        let entry = self
            .tokens
            .get(&token)
            .ok_or_else(|| ApiFail::new(40014, "不合法的access_token"))?;
        if entry.expires_at_ms <= now {
            return Err(ApiFail::new(42001, "access_token超时"));
        }
        let appkey = entry.appkey.clone();
        self.admit(&appkey, path)?;
        let app = self
            .apps
            .get_mut(&appkey)
            .ok_or_else(|| ApiFail::new(40014, "不合法的access_token"))?;
        route(app, path, params, now)
    }

    /// The per-app-per-path limit: at most `qps_per_path` accepted calls in any second.
    fn admit(&mut self, appkey: &str, path: &str) -> Result<(), ApiFail> {
        let limit = usize::try_from(self.options.qps_per_path).unwrap_or(usize::MAX);
        let window = self
            .windows
            .entry((appkey.to_string(), path.to_string()))
            .or_default();
        let now = Instant::now();
        while window
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            window.pop_front();
        }
        if window.len() >= limit {
            return Err(ApiFail::new(90018, "当前应用调用该接口的并发量超过限制"));
        }
        window.push_back(now);
        Ok(())
    }
}

//! The DingTalk client: one [`DingTalkClient`] per app (tenant), with its token cache
//! ([`token`]), per-path rate limiter ([`limiter`]), retries of transient failures, error
//! classes ([`error`]) and typed endpoints ([`api`], [`types`]); events over Stream mode
//! ([`stream`]). Only this module speaks HTTP (and WebSocket) to DingTalk; it knows nothing
//! of JeecgBoot or the database.

pub mod api;
pub mod error;
mod limiter;
pub mod stream;
mod token;
pub mod types;

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use rand::Rng;
use serde::Serialize;
use serde_json::Value;
use url::Url;

pub use error::{DingTalkError, ErrorKind};

use crate::config::{Config, DingTalkConfig, TenantConfig, TenantId};
use crate::secret::Secret;

/// Route of the token call.
const GETTOKEN: &str = "gettoken";

/// How a client connects and retries.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// oapi base URL.
    pub base_url: Url,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Whole-call timeout.
    pub request_timeout: Duration,
    /// Calls per second per API path.
    pub qps_per_api: NonZeroU32,
    /// Attempts per call for transient failures (busy, 5xx, transport, non-JSON).
    pub max_attempts: u32,
    /// Attempts per call while DingTalk answers "throttled".
    pub max_throttled_attempts: u32,
    /// First retry delay (doubles per attempt, full jitter).
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_cap: Duration,
    /// Wait after a 90018/90002 answer (DingTalk: the window is one second).
    pub throttle_wait: Duration,
}

impl ClientOptions {
    /// Options from the `[dingtalk]` section, with dingsync's retry defaults.
    pub fn from_config(config: &DingTalkConfig) -> Self {
        Self {
            base_url: config.base_url.clone(),
            connect_timeout: config.connect_timeout,
            request_timeout: config.request_timeout,
            qps_per_api: config.qps_per_api,
            max_attempts: 4,
            max_throttled_attempts: 10,
            retry_base: Duration::from_millis(200),
            retry_cap: Duration::from_secs(5),
            throttle_wait: Duration::from_secs(1),
        }
    }
}

/// One app's credentials.
#[derive(Clone, Debug)]
pub struct AppCredentials {
    /// The JeecgBoot tenant it serves (for logs).
    pub tenant: TenantId,
    /// AgentId.
    pub agent_id: i64,
    /// AppKey.
    pub client_id: String,
    /// AppSecret.
    pub client_secret: Secret,
}

impl From<&TenantConfig> for AppCredentials {
    fn from(tenant: &TenantConfig) -> Self {
        Self {
            tenant: tenant.id,
            agent_id: tenant.agent_id,
            client_id: tenant.client_id.clone(),
            client_secret: tenant.client_secret.clone(),
        }
    }
}

/// Whether a call may be repeated after an answer that was lost on the way back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Repeat {
    /// Reads, updates, deletes, and creates guarded by a natural key: repeat freely.
    Safe,
    /// Sends: repeat only when DingTalk surely did not act (throttled, not connected).
    OnlyIfUnsent,
}

/// A DingTalk client for one app.
pub struct DingTalkClient {
    http: reqwest::Client,
    options: ClientOptions,
    app: AppCredentials,
    tokens: token::TokenCache,
    limiter: limiter::PathLimiter,
    calls: Mutex<BTreeMap<&'static str, u64>>,
    /// Why the last attempt to get a token failed (None: it did not).
    token_failure: Mutex<Option<String>>,
}

impl std::fmt::Debug for DingTalkClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DingTalkClient")
            .field("app", &self.app)
            .field("base_url", &self.options.base_url.as_str())
            .finish()
    }
}

impl DingTalkClient {
    /// A client for `app`.
    pub fn new(options: ClientOptions, app: AppCredentials) -> Result<Self, DingTalkError> {
        let http = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .timeout(options.request_timeout)
            .user_agent(concat!("dingsync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| DingTalkError::transport(GETTOKEN, error))?;
        Ok(Self {
            http,
            limiter: limiter::PathLimiter::new(options.qps_per_api),
            options,
            app,
            tokens: token::TokenCache::default(),
            calls: Mutex::new(BTreeMap::new()),
            token_failure: Mutex::new(None),
        })
    }

    /// A client for one configured tenant.
    pub fn for_tenant(config: &Config, tenant: &TenantConfig) -> Result<Self, DingTalkError> {
        Self::new(
            ClientOptions::from_config(&config.dingtalk),
            AppCredentials::from(tenant),
        )
    }

    /// The app's AgentId.
    pub fn agent_id(&self) -> i64 {
        self.app.agent_id
    }

    /// HTTP requests sent so far, by route (retries included).
    pub fn calls_by_route(&self) -> BTreeMap<&'static str, u64> {
        self.calls
            .lock()
            .map(|calls| calls.clone())
            .unwrap_or_default()
    }

    /// Counts a call's outcome in the process's metrics.
    fn record(&self, route: &'static str, result: Result<(), &DingTalkError>) {
        let outcome = match result {
            // "No such user/department" answers the lookup that asked.
            Ok(()) => crate::metrics::CallOutcome::Ok,
            Err(error)
                if matches!(
                    error.kind,
                    ErrorKind::UserNotFound | ErrorKind::DeptNotFound
                ) =>
            {
                crate::metrics::CallOutcome::Ok
            }
            Err(error) if error.kind == ErrorKind::Throttled => {
                crate::metrics::CallOutcome::Throttled
            }
            Err(_) => crate::metrics::CallOutcome::Failed,
        };
        crate::metrics::metrics().call(self.app.tenant, route, outcome);
    }

    fn set_token_state(&self, failure: Option<String>) {
        if let Ok(mut state) = self.token_failure.lock() {
            *state = failure;
        }
    }

    /// Why the app has no valid access token, if it has none: the last `gettoken` failed
    /// (after its retries), or DingTalk refused the token and a new one could not be had.
    /// `None` once a token was fetched (or before any was asked for).
    pub fn token_failure(&self) -> Option<String> {
        self.token_failure.lock().ok().and_then(|s| s.clone())
    }

    fn count(&self, route: &'static str) {
        if let Ok(mut calls) = self.calls.lock() {
            *calls.entry(route).or_default() += 1;
        }
    }

    fn url(&self, route: &str) -> Url {
        let mut url = self.options.base_url.clone();
        let base_path = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{base_path}/{route}"));
        url
    }

    /// Calls a topapi `route` with a JSON body: rate-limited, token attached, token refreshed
    /// once on 40014/42001/40001, transient failures retried with backoff.
    pub async fn call<B: Serialize + ?Sized>(
        &self,
        route: &'static str,
        body: &B,
        repeat: Repeat,
    ) -> Result<Value, DingTalkError> {
        let mut attempts = 0u32;
        let mut throttled = 0u32;
        let mut refreshed = false;
        loop {
            let token = self.token().await?;
            self.wait_for_slot(route).await;
            let error = match self.post_once(route, &token, body).await {
                Ok(value) => {
                    self.record(route, Ok(()));
                    return Ok(value);
                }
                Err(error) => {
                    self.record(route, Err(&error));
                    error
                }
            };
            if error.kind == ErrorKind::TokenInvalid && !refreshed {
                refreshed = true;
                self.tokens.invalidate(&token).await;
                continue;
            }
            let delay = if error.kind == ErrorKind::Throttled {
                throttled += 1;
                self.log_server_throttle(route, &error);
                (throttled < self.options.max_throttled_attempts).then(|| self.throttle_delay())
            } else {
                attempts += 1;
                let may_repeat = repeat == Repeat::Safe || error.kind == ErrorKind::Busy;
                (error.is_retryable() && may_repeat && attempts < self.options.max_attempts)
                    .then(|| self.backoff(attempts))
            };
            self.log_failure(&error, attempts + throttled, delay);
            match delay {
                Some(delay) => tokio::time::sleep(delay).await,
                None => return Err(error),
            }
        }
    }

    async fn wait_for_slot(&self, route: &'static str) {
        let waited = self.limiter.acquire(route).await;
        if waited >= Duration::from_millis(1) {
            tracing::debug!(
                event = "dingtalk.throttled",
                source = "local",
                tenant = self.app.tenant,
                http.route = route,
                delay_ms = waited.as_millis() as u64,
                "waited for the rate limiter"
            );
        }
    }

    fn log_server_throttle(&self, route: &'static str, error: &DingTalkError) {
        tracing::warn!(
            event = "dingtalk.throttled",
            source = "server",
            tenant = self.app.tenant,
            http.route = route,
            errcode = error.errcode,
            request_id = error.request_id.as_deref(),
            "DingTalk answered throttled"
        );
    }

    fn log_failure(&self, error: &DingTalkError, attempt: u32, retry_in: Option<Duration>) {
        // "No such user/department" is an answer the caller asked for (a lookup), not a
        // failure worth a warning.
        let expected = retry_in.is_none()
            && matches!(
                error.kind,
                ErrorKind::UserNotFound | ErrorKind::DeptNotFound
            );
        macro_rules! failed {
            ($level:ident) => {
                tracing::$level!(
                    event = "dingtalk.call.failed",
                    tenant = self.app.tenant,
                    http.route = error.route,
                    errcode = error.errcode,
                    http.status = error.http_status,
                    request_id = error.request_id.as_deref(),
                    attempt,
                    retryable = error.is_retryable(),
                    retry_in_ms = retry_in.map(|d| d.as_millis() as u64),
                    error = %error,
                    "DingTalk call failed"
                )
            };
        }
        if expected {
            failed!(debug);
        } else {
            failed!(warn);
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(16);
        let ceiling = self
            .options
            .retry_base
            .saturating_mul(1 << exponent)
            .min(self.options.retry_cap);
        let millis = u64::try_from(ceiling.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        Duration::from_millis(rand::rng().random_range(millis / 2..=millis))
    }

    fn throttle_delay(&self) -> Duration {
        self.options.throttle_wait + Duration::from_millis(rand::rng().random_range(0..200))
    }

    /// Fetches the access token now if none is cached (start-up check of the credentials).
    pub async fn ensure_token(&self) -> Result<(), DingTalkError> {
        self.token().await.map(drop)
    }

    async fn token(&self) -> Result<Secret, DingTalkError> {
        self.tokens.get(|| self.fetch_token()).await
    }

    /// `GET /gettoken`, retried like any transient failure.
    async fn fetch_token(&self) -> Result<(Secret, Duration), DingTalkError> {
        let mut attempts = 0;
        loop {
            self.wait_for_slot(GETTOKEN).await;
            let error = match self.gettoken_once().await {
                Ok(token) => {
                    self.record(GETTOKEN, Ok(()));
                    self.set_token_state(None);
                    return Ok(token);
                }
                Err(error) => {
                    self.record(GETTOKEN, Err(&error));
                    error
                }
            };
            attempts += 1;
            let delay =
                (error.is_retryable() && attempts < self.options.max_attempts).then(|| match error
                    .kind
                {
                    ErrorKind::Throttled => self.throttle_delay(),
                    _ => self.backoff(attempts),
                });
            self.log_failure(&error, attempts, delay);
            match delay {
                Some(delay) => tokio::time::sleep(delay).await,
                None => {
                    self.set_token_state(Some(error.to_string()));
                    return Err(error);
                }
            }
        }
    }

    async fn gettoken_once(&self) -> Result<(Secret, Duration), DingTalkError> {
        let mut url = self.url(GETTOKEN);
        url.query_pairs_mut()
            .append_pair("appkey", &self.app.client_id)
            .append_pair("appsecret", self.app.client_secret.expose());
        self.count(GETTOKEN);
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| DingTalkError::transport(GETTOKEN, e))?;
        let value = read_envelope(GETTOKEN, response).await?;
        let parsed: types::TokenAnswer = types::parse(GETTOKEN, value)?;
        let expires_in = Duration::from_secs(parsed.expires_in.max(1));
        tracing::info!(
            event = "dingtalk.token.refreshed",
            tenant = self.app.tenant,
            expires_in_s = expires_in.as_secs(),
            "access token refreshed"
        );
        Ok((Secret::new(parsed.access_token), expires_in))
    }

    async fn post_once<B: Serialize + ?Sized>(
        &self,
        route: &'static str,
        token: &Secret,
        body: &B,
    ) -> Result<Value, DingTalkError> {
        let mut url = self.url(route);
        url.query_pairs_mut()
            .append_pair("access_token", token.expose());
        self.count(route);
        let response = self
            .http
            .post(url)
            .json(body)
            .send()
            .await
            .map_err(|e| DingTalkError::transport(route, e))?;
        read_envelope(route, response).await
    }
}

/// Reads an answer: HTTP status, JSON, errcode (number or string), request_id.
async fn read_envelope(
    route: &'static str,
    response: reqwest::Response,
) -> Result<Value, DingTalkError> {
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| DingTalkError::transport(route, e))?;
    let snippet = || String::from_utf8_lossy(&bytes[..bytes.len().min(120)]).replace('\n', " ");
    if !status.is_success() {
        let mut error = DingTalkError::new(ErrorKind::Http, route, snippet());
        error.http_status = Some(status.as_u16());
        return Err(error);
    }
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| {
        DingTalkError::new(
            ErrorKind::NotJson,
            route,
            format!("answer is not JSON: {}", snippet()),
        )
    })?;
    let errcode = match value.get("errcode") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    let Some(errcode) = errcode else {
        // No errcode: DingTalk's IP-block JSON ({"status":1111,"wait":5,...}) or some other
        // body that is not the envelope.
        return Err(DingTalkError::new(
            ErrorKind::NotJson,
            route,
            format!("answer has no errcode: {}", snippet()),
        ));
    };
    if errcode == 0 {
        return Ok(value);
    }
    let text = |key: &str| {
        value
            .get(key)
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
    };
    let mut error = DingTalkError::api(route, errcode, text("errmsg").unwrap_or_default());
    error.request_id = text("request_id");
    error.sub_code = text("sub_code");
    Err(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> reqwest::Response {
        let response = axum::http::Response::builder()
            .status(status)
            .body(body.to_string())
            .unwrap();
        reqwest::Response::from(response)
    }

    #[tokio::test]
    async fn envelopes_are_read_leniently() {
        let ok = read_envelope("r", answer(200, r#"{"errcode":"0","result":{"has_more":"true","next_cursor":"100","list":[{"userid":"a","dept_id_list":["1",2],"active":"false"}]}}"#)).await.unwrap();
        let page: types::UserPage = types::parse("r", ok["result"].clone()).unwrap();
        assert!(page.has_more);
        assert_eq!(page.next_cursor, Some(100));
        assert_eq!(page.list[0].dept_id_list, vec![1, 2]);
        let error = read_envelope(
            "r",
            answer(
                200,
                r#"{"errcode":"60121","errmsg":"找不到该用户","request_id":"abc"}"#,
            ),
        )
        .await
        .unwrap_err();
        assert_eq!(
            (error.kind, error.errcode, error.request_id.as_deref()),
            (ErrorKind::UserNotFound, Some(60121), Some("abc"))
        );
    }

    #[test]
    fn nulls_and_comma_lists_are_read_as_absent_and_as_lists() {
        let user: types::DtUser = types::parse(
            "r",
            serde_json::json!({"userid": "a", "name": null, "email": null, "mobile": "138",
                "dept_id_list": "1,2", "active": null}),
        )
        .unwrap();
        assert_eq!(
            (
                user.name.as_str(),
                user.email.as_str(),
                user.dept_id_list,
                user.active
            ),
            ("", "", vec![1, 2], false)
        );
        let page: types::UserPage = types::parse(
            "r",
            serde_json::json!({"has_more": false, "next_cursor": null, "list": null}),
        )
        .unwrap();
        assert!(page.list.is_empty() && page.next_cursor.is_none());
        let result: types::SendResult = types::parse(
            "r",
            serde_json::json!({"invalid_user_id_list": "x,y", "read_user_id_list": ["a"],
                "invalid_dept_id_list": "", "forbidden_list": null}),
        )
        .unwrap();
        assert_eq!(result.invalid_user_id_list, vec!["x", "y"]);
        assert_eq!(result.read_user_id_list, vec!["a"]);
        assert!(result.invalid_dept_id_list.is_empty() && result.forbidden_list.is_empty());
    }

    #[tokio::test]
    async fn non_envelopes_are_retryable_errors() {
        let html = read_envelope("r", answer(200, "<html>blocked</html>"))
            .await
            .unwrap_err();
        assert_eq!(html.kind, ErrorKind::NotJson);
        let block = read_envelope("r", answer(200, r#"{"status":1111,"wait":5}"#))
            .await
            .unwrap_err();
        assert_eq!(block.kind, ErrorKind::NotJson);
        let gateway = read_envelope("r", answer(502, "bad gateway"))
            .await
            .unwrap_err();
        assert_eq!(
            (gateway.kind, gateway.http_status),
            (ErrorKind::Http, Some(502))
        );
        assert!(html.is_retryable() && block.is_retryable() && gateway.is_retryable());
    }
}

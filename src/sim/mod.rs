//! dingtalk-sim: a stateful, in-memory DingTalk for tests, benchmarks and the demo.
//!
//! Each app (appkey/appsecret/agent_id) has its own organisation ([`org::Org`]) and work
//! notifications ([`messages::Notifications`]). [`dispatch`] applies DingTalk's conventions
//! around every call (tokens, per-app-per-path rate limit, injected faults, call counters);
//! [`stream`] is the Stream-mode gateway (tickets, WebSocket, events for every address-book
//! change); [`http`] serves it all, plus the admin API under `/_sim/`. Everything is
//! reachable in-process through [`Simulator`] too. It never calls out; it is not used by
//! `dingsync run`.

pub mod dispatch;
pub mod http;
pub mod messages;
pub mod org;
pub mod params;
pub mod stream;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use dispatch::{FaultAction, FaultRule};
pub use http::SimServer;
pub use stream::{StreamSimOptions, StreamSimStats};

/// A DingTalk error answer: errcode and errmsg.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiFail {
    /// DingTalk's errcode.
    pub errcode: i64,
    /// Its message.
    pub errmsg: String,
}

impl ApiFail {
    /// An error answer.
    pub fn new(errcode: i64, errmsg: impl Into<String>) -> Self {
        Self {
            errcode,
            errmsg: errmsg.into(),
        }
    }
}

/// How the simulator behaves.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Calls per second allowed per app per API path (DingTalk: 20).
    pub qps_per_path: u32,
    /// Access-token lifetime (DingTalk: 7200 s).
    pub token_ttl: Duration,
    /// Seed for fault probabilities, so a run can be repeated.
    pub seed: u64,
    /// Stream-mode timings (ack timeout, redelivery, pings, disconnect grace, tickets).
    pub stream: StreamSimOptions,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            qps_per_path: 20,
            token_ttl: Duration::from_secs(7200),
            seed: 1,
            stream: StreamSimOptions::default(),
        }
    }
}

/// Calls seen on one path of one app.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallCount {
    /// Requests received.
    pub calls: u64,
    /// Answered errcode 0.
    pub ok: u64,
    /// Answered another errcode.
    pub failed: u64,
    /// Answered 90018 by the rate limit.
    pub throttled: u64,
    /// Answered by an injected fault.
    pub faulted: u64,
}

/// The paths that change DingTalk state (for "zero write calls" checks).
pub const WRITE_PATHS: &[&str] = &[
    "topapi/v2/user/create",
    "topapi/v2/user/update",
    "topapi/v2/user/delete",
    "topapi/v2/department/create",
    "topapi/v2/department/update",
    "topapi/v2/department/delete",
    "topapi/message/corpconversation/asyncsend_v2",
    "topapi/message/corpconversation/recall",
];

/// One app and its organisation.
#[derive(Clone, Debug, Serialize)]
pub struct App {
    /// AppKey (client id).
    pub appkey: String,
    #[serde(skip_serializing)]
    appsecret: String,
    /// AgentId.
    pub agent_id: i64,
    /// The address book.
    pub org: org::Org,
    /// Work notifications.
    pub notifications: messages::Notifications,
    /// The Stream gateway: queued events, connections, counters.
    #[serde(skip)]
    stream: stream::hub::AppStream,
}

struct TokenEntry {
    appkey: String,
    expires_at_ms: i64,
}

struct State {
    options: SimOptions,
    apps: BTreeMap<String, App>,
    tokens: HashMap<String, TokenEntry>,
    clock_offset_ms: i64,
    windows: HashMap<(String, String), VecDeque<Instant>>,
    counters: BTreeMap<String, BTreeMap<String, CallCount>>,
    faults: Vec<FaultRule>,
    rng: StdRng,
    next_token: u64,
}

/// The simulator: cheap to clone, shared between the HTTP server and the test.
#[derive(Clone)]
pub struct Simulator {
    state: Arc<Mutex<State>>,
}

impl Simulator {
    /// An empty simulator (no apps).
    pub fn new(options: SimOptions) -> Self {
        let rng = StdRng::seed_from_u64(options.seed);
        Self {
            state: Arc::new(Mutex::new(State {
                options,
                apps: BTreeMap::new(),
                tokens: HashMap::new(),
                clock_offset_ms: 0,
                windows: HashMap::new(),
                counters: BTreeMap::new(),
                faults: Vec::new(),
                rng,
                next_token: 0,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds an app with an empty organisation (root department 1). Replaces one with the
    /// same appkey.
    pub fn add_app(&self, appkey: &str, appsecret: &str, agent_id: i64) {
        let mut state = self.lock();
        let app = App {
            appkey: appkey.to_string(),
            appsecret: appsecret.to_string(),
            agent_id,
            org: org::Org::default(),
            notifications: messages::Notifications::default(),
            stream: stream::hub::AppStream::new(appkey, state.options.stream.clone()),
        };
        state.apps.insert(appkey.to_string(), app);
    }

    /// A copy of an app's organisation and notifications.
    pub fn app(&self, appkey: &str) -> Option<App> {
        self.lock().apps.get(appkey).cloned()
    }

    /// Runs an API call as an admin in the DingTalk console would: same rules, no token,
    /// no rate limit, no fault, not counted.
    pub fn admin_call(&self, appkey: &str, path: &str, params: Value) -> Result<Value, ApiFail> {
        let params = match params {
            Value::Object(map) => params::Params(map),
            _ => {
                return Err(ApiFail::new(
                    params::INVALID_PARAM,
                    "params must be a JSON object",
                ))
            }
        };
        let mut state = self.lock();
        let now = state.now_ms();
        let app = state
            .apps
            .get_mut(appkey)
            .ok_or_else(|| ApiFail::new(40089, "不合法的appkey"))?;
        dispatch::route(app, path, &params, now)
    }

    /// Call counters of one app, by path.
    pub fn calls(&self, appkey: &str) -> BTreeMap<String, CallCount> {
        self.lock()
            .counters
            .get(appkey)
            .cloned()
            .unwrap_or_default()
    }

    /// Calls of one app on the [`WRITE_PATHS`].
    pub fn write_calls(&self, appkey: &str) -> u64 {
        let calls = self.calls(appkey);
        WRITE_PATHS
            .iter()
            .filter_map(|p| calls.get(*p))
            .map(|c| c.calls)
            .sum()
    }

    /// Forgets all call counters.
    pub fn reset_calls(&self) {
        self.lock().counters.clear();
    }

    /// Moves the simulated clock forward (token expiry, 24 h recall window, message days).
    pub fn advance_clock(&self, by: Duration) {
        let by_ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.lock().clock_offset_ms += by_ms;
    }

    /// The simulated time, in ms since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        self.lock().now_ms()
    }

    /// Adds a fault rule; rules are tried in the order added.
    pub fn inject(&self, rule: FaultRule) {
        self.lock().faults.push(rule);
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Invalidates every token of `appkey` (all apps when `None`): the next call gets 40014.
    pub fn invalidate_tokens(&self, appkey: Option<&str>) {
        self.lock()
            .tokens
            .retain(|_, entry| appkey.is_some_and(|key| key != entry.appkey));
    }

    /// Revokes an app's credentials as a console admin resetting its AppSecret would: the
    /// secret becomes `secret` and every token issued is invalid. `false` when there is no
    /// such app.
    pub fn reset_secret(&self, appkey: &str, secret: &str) -> bool {
        let found = match self.lock().apps.get_mut(appkey) {
            Some(app) => {
                app.appsecret = secret.to_string();
                true
            }
            None => false,
        };
        self.invalidate_tokens(Some(appkey));
        found
    }

    /// Changes the per-path rate limit.
    pub fn set_qps(&self, qps_per_path: u32) {
        self.lock().options.qps_per_path = qps_per_path;
    }

    /// Grants or withdraws an app's mobile permission: without it, user reads carry no
    /// mobile. `false` when there is no such app.
    pub fn set_mobile_permission(&self, appkey: &str, granted: bool) -> bool {
        match self.lock().apps.get_mut(appkey) {
            Some(app) => {
                app.org.hide_mobiles = !granted;
                true
            }
            None => false,
        }
    }
}

impl State {
    fn now_ms(&self) -> i64 {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        i64::try_from(wall.as_millis()).unwrap_or(i64::MAX) + self.clock_offset_ms
    }

    fn count(&mut self, appkey: &str, path: &str) -> &mut CallCount {
        self.counters
            .entry(appkey.to_string())
            .or_default()
            .entry(path.to_string())
            .or_default()
    }
}

//! The simulator over HTTP (axum): every DingTalk path through [`Simulator::handle`], and the
//! admin API under `/_sim/` (JSON). Binds wherever it is told, port 0 included.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::dispatch::{ApiRequest, Outcome};
use super::params::Params;
use super::{FaultRule, Simulator};

/// DingTalk's IP-block page, roughly: HTML where JSON was expected.
const IP_BLOCK_PAGE: &str = "<!DOCTYPE html><html><head><title>访问被拒绝</title></head>\
<body><h1>您的访问被拒绝</h1><p>IP访问频率过高，请5分钟后再试。</p></body></html>";

/// A running simulator server.
pub struct SimServer {
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    /// The bound address.
    pub addr: SocketAddr,
    /// The state behind it.
    pub sim: Simulator,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl SimServer {
    /// Serves `sim` on `addr` (use port 0 for a free port) until [`SimServer::stop`].
    pub async fn start(sim: Simulator, addr: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let cancel = CancellationToken::new();
        let shutdown = cancel.clone();
        let app = router(sim.clone());
        let task = tokio::spawn(async move {
            let server =
                axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned());
            if let Err(error) = server.await {
                tracing::error!(event = "sim.server.failed", error = %error, "simulator server failed");
            }
        });
        Ok(Self {
            url: format!("http://{addr}"),
            addr,
            sim,
            cancel,
            task,
        })
    }

    /// Stops serving and waits until the listener is closed.
    pub async fn stop(self) {
        self.cancel.cancel();
        // Upgraded WebSocket connections outlive graceful shutdown: close them.
        self.sim.stream_close_all();
        // A join error means the server task panicked; it is gone either way.
        let _ = self.task.await;
    }
}

/// The router: admin API under `/_sim/`, everything else is DingTalk.
pub fn router(sim: Simulator) -> Router {
    Router::new()
        .route("/_sim/apps", post(add_app))
        .route("/_sim/apps/{appkey}", get(dump_app))
        .route("/_sim/apps/{appkey}/api/{*path}", post(admin_api))
        .route("/_sim/calls", get(calls).delete(reset_calls))
        .route("/_sim/clock", get(clock))
        .route("/_sim/clock/advance", post(advance_clock))
        .route("/_sim/faults", post(add_fault).delete(clear_faults))
        .route("/_sim/tokens/invalidate", post(invalidate_tokens))
        .route("/_sim/limits", post(set_limits))
        .route("/_sim/apps/{appkey}/permissions", post(set_permissions))
        .merge(super::stream::socket::routes())
        .fallback(api)
        .with_state(sim)
}

/// Every other path: a DingTalk API call, handled by the simulator and answered (after the
/// delay its answer asks for, if any).
async fn api(
    State(sim): State<Simulator>,
    method: Method,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let query = query_params(&uri);
    let path = uri.path().trim_start_matches('/').to_string();
    let answer = sim.handle(ApiRequest {
        method: method.as_str(),
        path: &path,
        query,
        body: &body,
        host: headers
            .get(header::HOST)
            .and_then(|host| host.to_str().ok())
            .or_else(|| uri.authority().map(|authority| authority.as_str())),
    });
    if let Some(delay) = answer.delay {
        tokio::time::sleep(delay).await;
    }
    response(answer.outcome)
}

/// The query string's parameters, each a JSON string (none when it does not parse).
fn query_params(uri: &axum::http::Uri) -> Params {
    uri.query()
        .and_then(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok())
        .map(|pairs| {
            Params(
                pairs
                    .into_iter()
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect(),
            )
        })
        .unwrap_or_default()
}

/// The HTTP response an answer's outcome is given as.
fn response(outcome: Outcome) -> Response {
    match outcome {
        Outcome::Json(status, value) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
            Json(value),
        )
            .into_response(),
        Outcome::Status(status) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            [(header::CONTENT_TYPE, "text/html")],
            "<html><body><h1>502 Bad Gateway</h1></body></html>",
        )
            .into_response(),
        Outcome::Html => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            IP_BLOCK_PAGE,
        )
            .into_response(),
        Outcome::Drop => dropped_connection(),
    }
}

/// A response whose body fails at once: hyper closes the connection mid-answer, so the
/// client sees a dropped connection, not an HTTP answer.
fn dropped_connection() -> Response {
    let stream = futures_util::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "dropped by fault",
        ))
    });
    Response::new(Body::from_stream(stream))
}

fn admin_error(message: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "error": message.into() })),
    )
        .into_response()
}

#[derive(Deserialize)]
struct NewApp {
    appkey: String,
    appsecret: String,
    agent_id: i64,
}

async fn add_app(State(sim): State<Simulator>, Json(app): Json<NewApp>) -> Response {
    sim.add_app(&app.appkey, &app.appsecret, app.agent_id);
    Json(json!({ "ok": true })).into_response()
}

async fn dump_app(State(sim): State<Simulator>, Path(appkey): Path<String>) -> Response {
    match sim.app(&appkey) {
        Some(app) => Json(app).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": "no such app" })),
        )
            .into_response(),
    }
}

async fn admin_api(
    State(sim): State<Simulator>,
    Path((appkey, path)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let params = match Params::from_body(&body) {
        Ok(params) => Value::Object(params.0),
        Err(fail) => return admin_error(fail.errmsg),
    };
    let path = path.trim_start_matches('/');
    match sim.admin_call(&appkey, path, params) {
        Ok(mut value) => {
            value["errcode"] = json!(0);
            Json(value).into_response()
        }
        Err(fail) => {
            Json(json!({ "errcode": fail.errcode, "errmsg": fail.errmsg })).into_response()
        }
    }
}

#[derive(Deserialize)]
struct CallsQuery {
    appkey: Option<String>,
}

async fn calls(State(sim): State<Simulator>, RawQuery(query): RawQuery) -> Response {
    let query: CallsQuery = serde_urlencoded::from_str(query.as_deref().unwrap_or(""))
        .unwrap_or(CallsQuery { appkey: None });
    match query.appkey {
        Some(appkey) => Json(json!({ "appkey": appkey, "paths": sim.calls(&appkey), "write_calls": sim.write_calls(&appkey) })).into_response(),
        None => Json(json!({ "apps": sim.lock().counters.clone() })).into_response(),
    }
}

async fn reset_calls(State(sim): State<Simulator>) -> Response {
    sim.reset_calls();
    Json(json!({ "ok": true })).into_response()
}

async fn clock(State(sim): State<Simulator>) -> Response {
    Json(json!({ "now_ms": sim.now_ms() })).into_response()
}

#[derive(Deserialize)]
struct Advance {
    seconds: u64,
}

async fn advance_clock(State(sim): State<Simulator>, Json(advance): Json<Advance>) -> Response {
    sim.advance_clock(Duration::from_secs(advance.seconds));
    Json(json!({ "now_ms": sim.now_ms() })).into_response()
}

async fn add_fault(State(sim): State<Simulator>, Json(rule): Json<FaultRule>) -> Response {
    if rule.probability.is_some_and(|p| !(0.0..=1.0).contains(&p)) {
        return admin_error("probability must be between 0 and 1");
    }
    sim.inject(rule);
    Json(json!({ "ok": true })).into_response()
}

async fn clear_faults(State(sim): State<Simulator>) -> Response {
    sim.clear_faults();
    Json(json!({ "ok": true })).into_response()
}

#[derive(Deserialize)]
struct Invalidate {
    appkey: Option<String>,
}

async fn invalidate_tokens(State(sim): State<Simulator>, body: Bytes) -> Response {
    let request: Invalidate = serde_json::from_slice(&body).unwrap_or(Invalidate { appkey: None });
    sim.invalidate_tokens(request.appkey.as_deref());
    Json(json!({ "ok": true })).into_response()
}

#[derive(Deserialize)]
struct Limits {
    qps_per_path: u32,
}

async fn set_limits(State(sim): State<Simulator>, Json(limits): Json<Limits>) -> Response {
    if limits.qps_per_path == 0 {
        return admin_error("qps_per_path must be at least 1");
    }
    sim.set_qps(limits.qps_per_path);
    Json(json!({ "ok": true })).into_response()
}

#[derive(Deserialize)]
struct Permissions {
    mobile: bool,
}

async fn set_permissions(
    State(sim): State<Simulator>,
    Path(appkey): Path<String>,
    Json(permissions): Json<Permissions>,
) -> Response {
    if sim.set_mobile_permission(&appkey, permissions.mobile) {
        Json(json!({ "ok": true })).into_response()
    } else {
        admin_error(format!("no app {appkey}"))
    }
}

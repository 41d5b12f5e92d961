//! `[metrics] listen`: the daemon's HTTP endpoints for Prometheus and probes.
//! - `GET /metrics`: OpenMetrics text (`crate::metrics`), the gauges read from the database
//!   at each scrape;
//! - `GET /healthz`: 200 while the process runs;
//! - `GET /readyz`: 200 when the database answers and every tenant has a valid token; 503
//!   with a JSON reason otherwise.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use serde_json::json;

use crate::metrics::{metrics, Snapshot, CONTENT_TYPE};
use crate::store::now_ms;

use super::Shared;

/// How long a probe or a scrape waits for the database.
const DATABASE_WITHIN: Duration = Duration::from_secs(2);

/// Binds `address` (port 0: any free port), logs `metrics.listening` with the bound
/// address, and serves until shutdown.
pub(super) async fn start(
    shared: Arc<Shared>,
    address: SocketAddr,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    tracing::info!(event = "metrics.listening", address = %bound, "serving /metrics, /healthz and /readyz");
    let shutdown = shared.shutdown.clone();
    let app = Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(shared);
    Ok(tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(error) = served {
            tracing::error!(event = "metrics.failed", error = %error, "the metrics endpoint stopped");
        }
    }))
}

async fn scrape(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    // One scrape at a time: the gauges are shared (and the database asked once per scrape).
    static SCRAPE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one = SCRAPE.lock().await;
    let snapshot = snapshot(&shared).await;
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        metrics().render(&snapshot),
    )
}

/// What the gauges show: read from the database (a database that does not answer within
/// 2 s leaves them as they were and sets `dingsync_database_up` to 0).
async fn snapshot(shared: &Shared) -> Snapshot {
    let runtime = shared.runtime();
    let owned = shared.owned();
    let tenants: Vec<_> = runtime.tenants.iter().map(|t| t.id).collect();
    let mut snapshot = Snapshot {
        owned: tenants.iter().map(|t| (*t, owned.contains(t))).collect(),
        ..Snapshot::default()
    };
    let store = &shared.store;
    let read = async {
        let (queue, oldest) = store.job_counts().await?;
        let lag = store.last_change_id().await? - store.change_cursor().await?;
        let runs = store.last_successes().await?;
        Ok::<_, crate::store::StoreError>((queue, oldest, lag, runs))
    };
    let Ok(Ok((queue, oldest, lag, runs))) = tokio::time::timeout(DATABASE_WITHIN, read).await
    else {
        return snapshot;
    };
    let now = now_ms();
    snapshot.database_up = true;
    snapshot.queue = queue;
    snapshot.oldest_pending = tenants
        .iter()
        .map(|tenant| {
            let at = oldest.iter().find(|(t, _)| t == tenant).map(|(_, at)| *at);
            (
                *tenant,
                at.map_or(0.0, |at| (now - at).max(0) as f64 / 1000.0),
            )
        })
        .collect();
    snapshot.changelog_lag = Some(lag.max(0));
    snapshot.last_success = runs
        .into_iter()
        .map(|(tenant, kind, at)| (tenant, kind, at as f64 / 1000.0))
        .collect();
    snapshot
}

/// Ready: the database answers and no tenant's token is known to be refused.
async fn ready(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let mut reasons = Vec::new();
    if !shared
        .tokens_tried
        .load(std::sync::atomic::Ordering::Acquire)
    {
        reasons.push("starting: the first access tokens are not tried yet".to_string());
    }
    match tokio::time::timeout(DATABASE_WITHIN, shared.store.schema_version()).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => reasons.push(format!("database: {error}")),
        Err(_) => reasons.push(format!(
            "database: no answer within {} s",
            DATABASE_WITHIN.as_secs()
        )),
    }
    let runtime = shared.runtime();
    for tenant in &runtime.tenants {
        if let Some((_, client)) = runtime.tenant(tenant.id) {
            if let Some(failure) = client.token_failure() {
                reasons.push(format!("tenant {}: no access token: {failure}", tenant.id));
            }
        }
    }
    if reasons.is_empty() {
        (StatusCode::OK, axum::Json(json!({ "ready": true })))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "ready": false, "reasons": reasons })),
        )
    }
}

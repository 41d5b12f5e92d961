//! The daemon's Prometheus metrics: counters and a histogram recorded where things happen
//! (DingTalk calls in the client, entities at the end of runs and jobs, events as they are
//! stored), and gauges read from the database at each scrape (the queue, the change-log lag,
//! the last successful runs), so that they hold for every instance and every `sync` process
//! writing to the same database. Served by `daemon::http` in OpenMetrics text.
//!
//! Labels carry tenant ids, routes, kinds, states and outcomes only: never a secret, a
//! mobile, an e-mail or a name.

use std::sync::atomic::AtomicU64;
use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::config::TenantId;

/// Every metric family the daemon exports, as it appears in the exposition (counters with
/// `_total`; a histogram's `_bucket`/`_sum`/`_count` are under its own name).
pub const NAMES: &[&str] = &[
    "dingsync_up",
    "dingsync_database_up",
    "dingsync_queue_jobs",
    "dingsync_queue_oldest_pending_seconds",
    "dingsync_dingtalk_calls_total",
    "dingsync_change_to_dingtalk_seconds",
    "dingsync_changelog_lag_rows",
    "dingsync_run_last_success_timestamp_seconds",
    "dingsync_run_entities_total",
    "dingsync_tenant_owned",
    "dingsync_events_total",
];

/// The OpenMetrics content type of `/metrics`.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How a DingTalk call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallOutcome {
    /// errcode 0.
    Ok,
    /// Any other answer, or none.
    Failed,
    /// DingTalk's rate limit (90018 and its kin).
    Throttled,
}

impl CallOutcome {
    fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failed => "failed",
            Self::Throttled => "throttled",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    tenant: String,
    route: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    tenant: String,
    kind: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabel {
    tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    tenant: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    tenant: String,
    kind: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    tenant: String,
    r#type: String,
    outcome: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// The metrics of this process.
pub struct Metrics {
    registry: Registry,
    up: Gauge,
    database_up: Gauge,
    queue_jobs: Family<QueueLabels, Gauge>,
    oldest_pending: Family<TenantLabel, FloatGauge>,
    calls: Family<CallLabels, Counter>,
    latency: Histogram,
    changelog_lag: Gauge,
    last_success: Family<KindLabels, FloatGauge>,
    entities: Family<OutcomeLabels, Counter>,
    owned: Family<TenantLabel, Gauge>,
    events: Family<EventLabels, Counter>,
}

/// What a scrape reads from the database and the daemon's state.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Whether the database answered.
    pub database_up: bool,
    /// `(tenant, kind, state, jobs)`.
    pub queue: Vec<(TenantId, String, String, i64)>,
    /// `(tenant, age of its oldest pending job in seconds)`, for every configured tenant.
    pub oldest_pending: Vec<(TenantId, f64)>,
    /// Change-log rows not yet read (None when the database did not answer).
    pub changelog_lag: Option<i64>,
    /// `(tenant, kind, unix seconds of its last run without failures)`.
    pub last_success: Vec<(TenantId, String, f64)>,
    /// `(tenant, owned by this instance)`, for every configured tenant.
    pub owned: Vec<(TenantId, bool)>,
}

fn registered<M: prometheus_client::registry::Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    metric: M,
) -> M {
    registry.register(name, help, metric.clone());
    metric
}

/// A metric family (one metric per label set), registered as `name`.
fn family<F: prometheus_client::registry::Metric + Clone + Default>(
    registry: &mut Registry,
    name: &str,
    help: &str,
) -> F {
    registered(registry, name, help, F::default())
}

impl Metrics {
    fn new() -> Self {
        let mut r = Registry::default();
        // Counters are exposed with `_total` appended.
        let latency_buckets = [
            0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
        ];
        Self {
            up: registered(&mut r, "dingsync_up", "1 while the daemon runs", Gauge::default()),
            database_up: registered(
                &mut r,
                "dingsync_database_up",
                "1 when the database answered the last scrape",
                Gauge::default(),
            ),
            queue_jobs: family(&mut r, "dingsync_queue_jobs", "Jobs in the retry queue, by tenant, kind and state"),
            oldest_pending: family(&mut r, "dingsync_queue_oldest_pending_seconds", "Age of the oldest pending job of the tenant (0 when none)"),
            calls: family(&mut r, "dingsync_dingtalk_calls", "DingTalk API calls by tenant, route and outcome (ok, failed, throttled)"),
            latency: registered(
                &mut r,
                "dingsync_change_to_dingtalk_seconds",
                "Time from a local commit to its change applied in DingTalk (push jobs)",
                Histogram::new(latency_buckets),
            ),
            changelog_lag: registered(
                &mut r,
                "dingsync_changelog_lag_rows",
                "Change-log rows the daemon has not read yet",
                Gauge::default(),
            ),
            last_success: family(&mut r, "dingsync_run_last_success_timestamp_seconds", "Unix time of the tenant's last run of this kind that finished without failures"),
            entities: family(&mut r, "dingsync_run_entities", "Entities handled by runs and jobs, by tenant, kind and outcome"),
            owned: family(&mut r, "dingsync_tenant_owned", "1 when this instance owns the tenant (runs its jobs and schedules)"),
            events: family(&mut r, "dingsync_events", "DingTalk Stream events by tenant, type and outcome (stored, duplicate, ignored, later)"),
            registry: r,
        }
    }

    /// A DingTalk call of `tenant` on `route` ended with `outcome`.
    pub fn call(&self, tenant: TenantId, route: &str, outcome: CallOutcome) {
        self.calls
            .get_or_create(&CallLabels {
                tenant: tenant.to_string(),
                route: route.to_string(),
                outcome: outcome.label().to_string(),
            })
            .inc();
    }

    /// A local change reached DingTalk `seconds` after its commit.
    pub fn change_applied(&self, seconds: f64) {
        self.latency.observe(seconds.max(0.0));
    }

    /// A run or job of `kind` handled entities: its counts by outcome.
    pub fn entities(&self, tenant: TenantId, kind: &str, summary: &crate::sync::model::Summary) {
        for (outcome, n) in [
            ("created", summary.created),
            ("updated", summary.updated),
            ("deleted", summary.deleted),
            ("skipped", summary.skipped),
            ("failed", summary.failed),
        ] {
            if n > 0 {
                self.entities
                    .get_or_create(&OutcomeLabels {
                        tenant: tenant.to_string(),
                        kind: kind.to_string(),
                        outcome: outcome.to_string(),
                    })
                    .inc_by(u64::try_from(n).unwrap_or(0));
            }
        }
    }

    /// A job of `kind` failed (the retry queue keeps it).
    pub fn job_failed(&self, tenant: TenantId, kind: &str) {
        self.entities
            .get_or_create(&OutcomeLabels {
                tenant: tenant.to_string(),
                kind: kind.to_string(),
                outcome: "failed".to_string(),
            })
            .inc();
    }

    /// A Stream event of `event_type` ended with `outcome`.
    pub fn event(&self, tenant: TenantId, event_type: &str, outcome: &str) {
        self.events
            .get_or_create(&EventLabels {
                tenant: tenant.to_string(),
                r#type: event_type.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// The gauges set from a scrape's snapshot, then everything encoded.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        self.up.set(1);
        self.database_up.set(i64::from(snapshot.database_up));
        if snapshot.database_up {
            self.queue_jobs.clear();
            for (tenant, kind, state, jobs) in &snapshot.queue {
                self.queue_jobs
                    .get_or_create(&QueueLabels {
                        tenant: tenant.to_string(),
                        kind: kind.clone(),
                        state: state.clone(),
                    })
                    .set(*jobs);
            }
            self.oldest_pending.clear();
            for (tenant, age) in &snapshot.oldest_pending {
                self.oldest_pending
                    .get_or_create(&TenantLabel {
                        tenant: tenant.to_string(),
                    })
                    .set(*age);
            }
            if let Some(lag) = snapshot.changelog_lag {
                self.changelog_lag.set(lag);
            }
            self.last_success.clear();
            for (tenant, kind, at) in &snapshot.last_success {
                self.last_success
                    .get_or_create(&KindLabels {
                        tenant: tenant.to_string(),
                        kind: kind.clone(),
                    })
                    .set(*at);
            }
        }
        self.owned.clear();
        for (tenant, owned) in &snapshot.owned {
            self.owned
                .get_or_create(&TenantLabel {
                    tenant: tenant.to_string(),
                })
                .set(i64::from(*owned));
        }
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// This process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_exported_under_its_listed_name() {
        let m = Metrics::new();
        m.call(0, "gettoken", CallOutcome::Ok);
        m.change_applied(0.2);
        m.entities(
            0,
            "user",
            &crate::sync::model::Summary {
                created: 2,
                ..Default::default()
            },
        );
        m.event(0, "user_add_org", "stored");
        let text = m.render(&Snapshot {
            database_up: true,
            queue: vec![(0, "user".into(), "done".into(), 2)],
            oldest_pending: vec![(0, 0.0)],
            changelog_lag: Some(0),
            last_success: vec![(0, "pull".into(), 1.7e9)],
            owned: vec![(0, true)],
        });
        for name in NAMES {
            assert!(
                text.lines().any(|l| l.starts_with(name)),
                "{name} missing in:\n{text}"
            );
        }
        assert!(text.contains(
            "dingsync_dingtalk_calls_total{tenant=\"0\",route=\"gettoken\",outcome=\"ok\"} 1"
        ));
        assert!(text.contains("dingsync_change_to_dingtalk_seconds_count 1"));
        assert!(text.contains(
            "dingsync_run_entities_total{tenant=\"0\",kind=\"user\",outcome=\"created\"} 2"
        ));
    }
}

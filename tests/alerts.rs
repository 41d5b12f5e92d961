//! The monitoring files in `config/` speak only the metrics the daemon exports: every
//! `dingsync_*` family named by an expression of the Prometheus alert rules
//! (`prometheus-alerts.yml`) or of the Grafana dashboard (`grafana-dashboard.json`) is one of
//! `dingsync::metrics::NAMES`, and every alert carries a severity, a summary and a description,
//! so a renamed metric cannot silently turn an alert into one that never fires.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::path::PathBuf;

use serde_json::Value;
use yaml_rust2::{Yaml, YamlLoader};

/// What Prometheus appends to a histogram's family name for its series.
const SERIES_SUFFIXES: &[&str] = &["_bucket", "_sum", "_count"];

const METRIC_PREFIX: &str = "dingsync_";

fn config_file(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("config")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// Every `dingsync_[a-z_]+` token of a PromQL expression, a histogram series suffix stripped.
fn metric_families(expr: &str) -> Vec<String> {
    let mut families = Vec::new();
    let mut rest = expr;
    while let Some(start) = rest.find(METRIC_PREFIX) {
        let after = &rest[start + METRIC_PREFIX.len()..];
        let len = after
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(after.len());
        if len > 0 {
            let token = &rest[start..start + METRIC_PREFIX.len() + len];
            let family = SERIES_SUFFIXES
                .iter()
                .find_map(|suffix| token.strip_suffix(suffix))
                .unwrap_or(token);
            families.push(family.to_owned());
        }
        rest = &after[len..];
    }
    families
}

/// The `(where, family)` pairs of `exprs` whose family the daemon does not export.
fn unknown_families<'a>(exprs: impl IntoIterator<Item = (String, &'a str)>) -> Vec<String> {
    let exported: HashSet<&str> = dingsync::metrics::NAMES.iter().copied().collect();
    exprs
        .into_iter()
        .flat_map(|(place, expr)| {
            metric_families(expr)
                .into_iter()
                .filter(|family| !exported.contains(family.as_str()))
                .map(move |family| format!("{place}: {family}"))
        })
        .collect()
}

/// The non-empty string at `path` under `node`, if there is one.
fn text<'a>(node: &'a Yaml, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .fold(node, |node, key| &node[*key])
        .as_str()
        .filter(|value| !value.trim().is_empty())
}

#[test]
fn the_token_scanner_finds_families_and_strips_series_suffixes() {
    let expr = "histogram_quantile(0.99, sum by (le) (rate(dingsync_change_to_dingtalk_seconds_bucket[5m]))) \
                + dingsync_up{tenant=\"0\"} - time() / dingsync_queue_jobs";
    assert_eq!(
        metric_families(expr),
        [
            "dingsync_change_to_dingtalk_seconds",
            "dingsync_up",
            "dingsync_queue_jobs"
        ]
    );
    assert!(metric_families("dingsync_ + up").is_empty());
}

#[test]
fn every_alert_rule_is_complete_and_uses_exported_metrics() {
    let docs = YamlLoader::load_from_str(&config_file("prometheus-alerts.yml"))
        .expect("prometheus-alerts.yml is YAML");
    assert_eq!(docs.len(), 1, "prometheus-alerts.yml holds one document");
    let groups = docs[0]["groups"]
        .as_vec()
        .expect("prometheus-alerts.yml has a `groups` list");
    assert!(!groups.is_empty(), "prometheus-alerts.yml has no groups");

    let mut names = HashSet::new();
    let mut exprs = Vec::new();
    for group in groups {
        let group_name = text(group, &["name"]).expect("every group has a name");
        let rules = group["rules"]
            .as_vec()
            .unwrap_or_else(|| panic!("group {group_name} has a `rules` list"));
        assert!(!rules.is_empty(), "group {group_name} has no rules");
        for (index, rule) in rules.iter().enumerate() {
            let alert = text(rule, &["alert"])
                .unwrap_or_else(|| panic!("rule {index} of {group_name} has no `alert` name"));
            assert!(names.insert(alert), "alert {alert} is defined twice");
            let expr = text(rule, &["expr"]).unwrap_or_else(|| panic!("{alert} has no `expr`"));
            let severity = text(rule, &["labels", "severity"])
                .unwrap_or_else(|| panic!("{alert} has no `labels.severity`"));
            assert!(
                ["warning", "critical"].contains(&severity),
                "{alert}: severity {severity} is neither warning nor critical"
            );
            for annotation in ["summary", "description"] {
                assert!(
                    text(rule, &["annotations", annotation]).is_some(),
                    "{alert} has no `annotations.{annotation}`"
                );
            }
            assert!(
                !metric_families(expr).is_empty(),
                "{alert} names no dingsync metric: {expr}"
            );
            exprs.push((alert.to_owned(), expr));
        }
    }
    let unknown = unknown_families(exprs);
    assert!(
        unknown.is_empty(),
        "alert expressions name metrics the daemon does not export: {unknown:?}"
    );
}

/// Every panel of the dashboard, rows' collapsed panels included.
fn all_panels(panels: &[Value]) -> Vec<&Value> {
    panels
        .iter()
        .flat_map(|panel| {
            let nested = panel["panels"].as_array().map(Vec::as_slice).unwrap_or(&[]);
            std::iter::once(panel).chain(all_panels(nested))
        })
        .collect()
}

#[test]
fn every_dashboard_query_uses_exported_metrics() {
    let dashboard: Value = serde_json::from_str(&config_file("grafana-dashboard.json"))
        .expect("grafana-dashboard.json is JSON");
    let panels = dashboard["panels"]
        .as_array()
        .expect("the dashboard has panels");

    let mut exprs = Vec::new();
    for panel in all_panels(panels) {
        let title = panel["title"].as_str().unwrap_or("(untitled)");
        let targets = panel["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        for target in targets {
            let expr = target["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("a target of panel {title} has no `expr`"));
            exprs.push((format!("panel {title}"), expr));
        }
    }
    assert!(!exprs.is_empty(), "the dashboard has no queries");

    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("the dashboard has template variables");
    let tenant = variables
        .iter()
        .find(|variable| variable["name"] == "tenant")
        .expect("the dashboard has a `tenant` variable");
    let tenant_query = tenant["definition"]
        .as_str()
        .expect("the `tenant` variable has a query");
    exprs.push(("variable tenant".to_owned(), tenant_query));

    let unknown = unknown_families(exprs);
    assert!(
        unknown.is_empty(),
        "dashboard queries name metrics the daemon does not export: {unknown:?}"
    );
}

//! The configuration as written: `#[serde(deny_unknown_fields)]` structs that mirror the TOML
//! file key for key, every value optional. Deserialising collects every problem instead of
//! stopping at the first one. It owns no defaults and no validation; `typed` does.

use std::path::PathBuf;

use serde::Deserialize;

use super::Problem;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub tenants_from_database: Option<bool>,
    pub allow_insecure_secret_files: Option<bool>,
    #[serde(default)]
    pub database: RawDatabase,
    #[serde(default)]
    pub dingtalk: RawDingTalk,
    #[serde(default, rename = "tenant")]
    pub tenants: Vec<RawTenant>,
    #[serde(default)]
    pub push: RawPush,
    #[serde(default)]
    pub pull: RawPull,
    #[serde(default)]
    pub queue: RawQueue,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub watch: RawWatch,
    #[serde(default)]
    pub daemon: RawDaemon,
    #[serde(default)]
    pub announcement: RawAnnouncement,
    #[serde(default)]
    pub tenant_defaults: RawTenantDefaults,
    #[serde(default)]
    pub outbox: RawOutbox,
    #[serde(default)]
    pub sync: RawSync,
    #[serde(default)]
    pub events: RawEvents,
    #[serde(default)]
    pub metrics: RawMetrics,
}

/// `[metrics]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub listen: Option<String>,
}

/// `[events]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEvents {
    pub mode: Option<String>,
}

/// `[sync]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSync {
    pub conflict: Option<String>,
}

/// `[tenant_defaults]`: switches of tenants read from `sys_third_app_config`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTenantDefaults {
    #[serde(default)]
    pub push: RawSwitch,
    #[serde(default)]
    pub pull: RawSwitch,
}

/// `[outbox]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOutbox {
    pub enabled: Option<bool>,
    pub allow_to_all: Option<bool>,
    pub max_recipients: Option<i64>,
}

/// `[announcement]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAnnouncement {
    pub base_url: Option<String>,
    pub max_age: Option<String>,
    pub mode: Option<String>,
}

/// `[watch]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWatch {
    pub poll_interval: Option<String>,
    pub fallback_poll: Option<String>,
}

/// `[daemon]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDaemon {
    pub drain_timeout: Option<String>,
    pub lease_ttl: Option<String>,
    pub retention: Option<String>,
    pub timezone: Option<String>,
}

/// `[database]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDatabase {
    pub url: Option<String>,
    pub url_file: Option<PathBuf>,
    pub pool_size: Option<i64>,
}

/// `[dingtalk]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDingTalk {
    pub base_url: Option<String>,
    pub api_base_url: Option<String>,
    pub connect_timeout: Option<String>,
    pub request_timeout: Option<String>,
    pub qps_per_api: Option<i64>,
}

/// One `[[tenant]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTenant {
    pub id: Option<i64>,
    pub agent_id: Option<i64>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    #[serde(default)]
    pub push: RawSwitch,
    #[serde(default)]
    pub pull: RawSwitch,
}

/// `push.enabled` / `pull.enabled` inside a tenant.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSwitch {
    pub enabled: Option<bool>,
}

/// `[push]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPush {
    pub users: Option<bool>,
    pub departments: Option<bool>,
    pub delete_departments: Option<bool>,
    pub max_department_deletes: Option<i64>,
    pub delete_users_on_hard_delete: Option<bool>,
    pub reconcile_cron: Option<String>,
}

/// `[pull]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPull {
    pub cron: Option<String>,
    pub new_user_password: Option<String>,
    pub new_user_password_file: Option<PathBuf>,
}

/// `[queue]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawQueue {
    pub workers: Option<i64>,
    pub max_attempts: Option<i64>,
    pub backoff_base: Option<String>,
    pub backoff_cap: Option<String>,
    pub max_waits: Option<i64>,
    pub wait_cap: Option<String>,
}

/// `[log]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub format: Option<String>,
    pub level: Option<String>,
}

/// Most keys a file can hold; bounds the retry loop below.
const MAX_PROBLEMS: usize = 256;

/// Deserialises `value`, collecting every problem. Each failing key is recorded with its
/// path and removed, then deserialising starts again, so one pass reports unknown keys and
/// type errors everywhere in the file, not just the first.
pub(super) fn deserialize_collecting(
    mut value: toml::Value,
    problems: &mut Vec<Problem>,
) -> RawConfig {
    for _ in 0..MAX_PROBLEMS {
        let error = match serde_path_to_error::deserialize::<_, RawConfig>(value.clone()) {
            Ok(raw) => return raw,
            Err(error) => error,
        };
        let message = error.inner().to_string();
        let mut path: Vec<String> = error.path().iter().filter_map(segment_name).collect();
        let message = match unknown_field(&message) {
            Some(field) => {
                if path.last().map(String::as_str) != Some(field) {
                    path.push(field.to_string());
                }
                format!("unknown key ({})", expected_part(&message))
            }
            None => first_line(&message)
                .replace("expected i64", "expected a whole number")
                .replace("expected a boolean", "expected true or false"),
        };
        problems.push(Problem::new(display_path(&path), message));
        if path.is_empty() || !remove_path(&mut value, &path) {
            return RawConfig::default();
        }
    }
    RawConfig::default()
}

fn segment_name(segment: &serde_path_to_error::Segment) -> Option<String> {
    use serde_path_to_error::Segment;
    match segment {
        Segment::Map { key } => Some(key.clone()),
        Segment::Seq { index } => Some(format!("[{index}]")),
        Segment::Enum { variant } => Some(variant.clone()),
        Segment::Unknown => None,
    }
}

/// `tenant.[0].id` -> `tenant[0].id`.
pub(super) fn display_path(path: &[String]) -> String {
    let mut out = String::new();
    for part in path {
        if !out.is_empty() && !part.starts_with('[') {
            out.push('.');
        }
        out.push_str(part);
    }
    out
}

fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

fn expected_part(message: &str) -> String {
    match message.split_once(", expected ") {
        Some((_, expected)) => format!("expected {}", first_line(expected)),
        None => "not a dingsync setting".to_string(),
    }
}

fn first_line(message: &str) -> String {
    message
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn remove_path(value: &mut toml::Value, path: &[String]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut node = value;
    for part in parents {
        let next = match part.strip_prefix('[').and_then(|p| p.strip_suffix(']')) {
            Some(index) => index
                .parse::<usize>()
                .ok()
                .and_then(|i| node.as_array_mut().and_then(|a| a.get_mut(i))),
            None => node.as_table_mut().and_then(|t| t.get_mut(part)),
        };
        match next {
            Some(child) => node = child,
            None => return false,
        }
    }
    node.as_table_mut().and_then(|t| t.remove(last)).is_some()
}

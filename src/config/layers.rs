//! The layers under the typed configuration: the TOML file, then `DINGSYNC_*` environment
//! variables, then command-line flags, each written over the one before into one
//! `toml::Value`. It owns the list of environment variables; it validates nothing.

use std::collections::BTreeMap;

use toml::Value;

use super::Problem;

/// What a setting's value must look like when it arrives as text (environment, flags).
#[derive(Clone, Copy, Debug)]
enum Kind {
    Text,
    Integer,
    Boolean,
}

/// Every global setting that `DINGSYNC_<PATH>` can set; the variable name is the dotted path
/// upper-cased with `.` turned into `_` (`queue.workers` -> `DINGSYNC_QUEUE_WORKERS`).
const GLOBAL_KEYS: &[(&str, Kind)] = &[
    ("tenants_from_database", Kind::Boolean),
    ("allow_insecure_secret_files", Kind::Boolean),
    ("database.url", Kind::Text),
    ("database.url_file", Kind::Text),
    ("database.pool_size", Kind::Integer),
    ("dingtalk.base_url", Kind::Text),
    ("dingtalk.api_base_url", Kind::Text),
    ("dingtalk.connect_timeout", Kind::Text),
    ("dingtalk.request_timeout", Kind::Text),
    ("dingtalk.qps_per_api", Kind::Integer),
    ("push.users", Kind::Boolean),
    ("push.departments", Kind::Boolean),
    ("push.delete_departments", Kind::Boolean),
    ("push.max_department_deletes", Kind::Integer),
    ("push.delete_users_on_hard_delete", Kind::Boolean),
    ("push.reconcile_cron", Kind::Text),
    ("watch.poll_interval", Kind::Text),
    ("watch.fallback_poll", Kind::Text),
    ("daemon.drain_timeout", Kind::Text),
    ("daemon.lease_ttl", Kind::Text),
    ("daemon.retention", Kind::Text),
    ("daemon.timezone", Kind::Text),
    ("announcement.base_url", Kind::Text),
    ("announcement.max_age", Kind::Text),
    ("announcement.mode", Kind::Text),
    ("tenant_defaults.push.enabled", Kind::Boolean),
    ("tenant_defaults.pull.enabled", Kind::Boolean),
    ("outbox.enabled", Kind::Boolean),
    ("outbox.allow_to_all", Kind::Boolean),
    ("outbox.max_recipients", Kind::Integer),
    ("sync.conflict", Kind::Text),
    ("events.mode", Kind::Text),
    ("metrics.listen", Kind::Text),
    ("pull.cron", Kind::Text),
    ("pull.new_user_password", Kind::Text),
    ("pull.new_user_password_file", Kind::Text),
    ("queue.workers", Kind::Integer),
    ("queue.max_attempts", Kind::Integer),
    ("queue.backoff_base", Kind::Text),
    ("queue.backoff_cap", Kind::Text),
    ("queue.max_waits", Kind::Integer),
    ("queue.wait_cap", Kind::Text),
    ("log.format", Kind::Text),
    ("log.level", Kind::Text),
];

/// Per-tenant settings: `DINGSYNC_TENANT_<ID>_<FIELD>`, e.g. `DINGSYNC_TENANT_0_CLIENT_SECRET`.
const TENANT_KEYS: &[(&str, Kind)] = &[
    ("agent_id", Kind::Integer),
    ("client_id", Kind::Text),
    ("client_secret", Kind::Text),
    ("client_secret_file", Kind::Text),
    ("push.enabled", Kind::Boolean),
    ("pull.enabled", Kind::Boolean),
];

/// Prefix of every environment variable dingsync reads.
pub const ENV_PREFIX: &str = "DINGSYNC_";

/// Environment variables that are not settings but are still ours.
const OTHER_VARIABLES: &[&str] = &["DINGSYNC_CONFIG", "DINGSYNC_LOG"];

fn env_name(path: &str) -> String {
    format!("{ENV_PREFIX}{}", path.replace('.', "_").to_uppercase())
}

/// Writes the `DINGSYNC_*` variables in `vars` over `root`. Unknown `DINGSYNC_*` names come
/// back as warnings; values of the wrong shape as problems.
pub(super) fn apply_env(
    root: &mut Value,
    vars: &BTreeMap<String, String>,
    problems: &mut Vec<Problem>,
) -> Vec<String> {
    let mut warnings = Vec::new();
    let mut layering = Layering { root, problems };
    for (name, text) in vars.iter().filter(|(n, _)| n.starts_with(ENV_PREFIX)) {
        if OTHER_VARIABLES.contains(&name.as_str()) {
            continue;
        }
        if let Some((path, kind)) = GLOBAL_KEYS.iter().find(|(p, _)| env_name(p) == *name) {
            layering.set_text(&split(path), *kind, text, name);
        } else if let Some((id, field, kind)) = tenant_variable(name) {
            let index = tenant_index(layering.root, id);
            let mut path = vec!["tenant".to_string(), format!("[{index}]")];
            path.extend(split(field));
            layering.set_text(&path, kind, text, name);
        } else {
            warnings.push(format!("unknown environment variable {name} ignored"));
        }
    }
    warnings
}

/// Writes one `--flag` value over `root`, at the dotted `path`.
pub(super) fn apply_flag(root: &mut Value, path: &str, text: &str, problems: &mut Vec<Problem>) {
    let kind = GLOBAL_KEYS
        .iter()
        .find(|(p, _)| *p == path)
        .map_or(Kind::Text, |(_, kind)| *kind);
    Layering { root, problems }.set_text(&split(path), kind, text, path);
}

fn split(path: &str) -> Vec<String> {
    path.split('.').map(str::to_string).collect()
}

fn tenant_variable(name: &str) -> Option<(i64, &'static str, Kind)> {
    let rest = name.strip_prefix("DINGSYNC_TENANT_")?;
    let (id, field) = rest.split_once('_')?;
    let id = id.parse::<i64>().ok()?;
    TENANT_KEYS
        .iter()
        .find(|(path, _)| path.replace('.', "_").to_uppercase() == field)
        .map(|(path, kind)| (id, *path, *kind))
}

/// Index of the `[[tenant]]` whose id is `id`, appending one when the file has none.
fn tenant_index(root: &mut Value, id: i64) -> usize {
    let table = ensure_table(root);
    let tenants = table
        .entry("tenant")
        .or_insert_with(|| Value::Array(Vec::new()));
    if !tenants.is_array() {
        *tenants = Value::Array(Vec::new());
    }
    let Value::Array(list) = tenants else {
        return 0;
    };
    if let Some(index) = list
        .iter()
        .position(|t| t.get("id").and_then(Value::as_integer) == Some(id))
    {
        return index;
    }
    let mut entry = toml::Table::new();
    entry.insert("id".into(), Value::Integer(id));
    list.push(Value::Table(entry));
    list.len() - 1
}

fn ensure_table(value: &mut Value) -> &mut toml::Table {
    if !value.is_table() {
        *value = Value::Table(toml::Table::new());
    }
    match value {
        Value::Table(table) => table,
        _ => unreachable!("value was just made a table"),
    }
}

/// The `toml::Value` being layered, and the problems its text values have shown so far.
struct Layering<'a> {
    root: &'a mut Value,
    problems: &'a mut Vec<Problem>,
}

impl Layering<'_> {
    /// Writes `text`, read as `kind`, at `path`; a text of the wrong shape is a problem
    /// named after its `source` (the variable or flag), and writes nothing.
    fn set_text(&mut self, path: &[String], kind: Kind, text: &str, source: &str) {
        match parse_text(kind, text) {
            Some(parsed) => set_value(self.root, path, parsed),
            None => {
                let expected = match kind {
                    Kind::Integer => "an integer",
                    _ => "true or false",
                };
                let problem = Problem::new(source, format!("expected {expected}"));
                self.problems.push(problem);
            }
        }
    }
}

/// `text` as a value of `kind`; `None` when it is not one.
fn parse_text(kind: Kind, text: &str) -> Option<Value> {
    match kind {
        Kind::Text => Some(Value::String(text.to_string())),
        Kind::Integer => text.trim().parse::<i64>().ok().map(Value::Integer),
        Kind::Boolean => match text.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Some(Value::Boolean(true)),
            "false" | "0" | "no" | "off" => Some(Value::Boolean(false)),
            _ => None,
        },
    }
}

/// Writes `value` at `path` under `root`, making the tables on the way; `[n]` steps into
/// the n-th element of an array, and a missing element writes nothing.
fn set_value(root: &mut Value, path: &[String], value: Value) {
    let mut node = root;
    for part in path {
        node = match part.strip_prefix('[').and_then(|p| p.strip_suffix(']')) {
            Some(index) => {
                let index: usize = index.parse().unwrap_or_default();
                match node.as_array_mut().and_then(|list| list.get_mut(index)) {
                    Some(child) => child,
                    None => return,
                }
            }
            None => ensure_table(node)
                .entry(part.clone())
                .or_insert_with(|| Value::Table(toml::Table::new())),
        };
    }
    *node = value;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn env_overrides_file_and_creates_tenants() {
        let mut root: Value = toml::from_str("[queue]\nworkers = 2\n[[tenant]]\nid = 7\n").unwrap();
        let mut problems = Vec::new();
        let warnings = apply_env(
            &mut root,
            &vars(&[
                ("DINGSYNC_QUEUE_WORKERS", "8"),
                ("DINGSYNC_TENANT_7_CLIENT_SECRET", "x"),
                ("DINGSYNC_TENANT_9_AGENT_ID", "99"),
                ("DINGSYNC_CONFIG", "/etc/x.toml"),
                ("DINGSYNC_BOGUS", "1"),
                ("HOME", "/root"),
            ]),
            &mut problems,
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            warnings,
            vec!["unknown environment variable DINGSYNC_BOGUS ignored"]
        );
        assert_eq!(root["queue"]["workers"].as_integer(), Some(8));
        assert_eq!(root["tenant"][0]["client_secret"].as_str(), Some("x"));
        assert_eq!(root["tenant"][1]["id"].as_integer(), Some(9));
        assert_eq!(root["tenant"][1]["agent_id"].as_integer(), Some(99));
    }

    #[test]
    fn badly_shaped_env_values_are_problems_naming_the_variable() {
        let mut root = Value::Table(toml::Table::new());
        let mut problems = Vec::new();
        apply_env(
            &mut root,
            &vars(&[
                ("DINGSYNC_QUEUE_WORKERS", "many"),
                ("DINGSYNC_PUSH_USERS", "maybe"),
            ]),
            &mut problems,
        );
        let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, vec!["DINGSYNC_PUSH_USERS", "DINGSYNC_QUEUE_WORKERS"]);
    }
}

//! Unit tests of loading: layering, collected problems, redaction, the example file.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;

use super::*;

const SECRET: &str = "S3CR3T-app-secret-value";
const DB_PASSWORD: &str = "DbPassw0rd-value";

fn options(env: &[(&str, &str)]) -> LoadOptions {
    LoadOptions {
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        ..LoadOptions::default()
    }
}

fn load_text(text: &str, opts: &LoadOptions) -> Result<Loaded, ConfigError> {
    load_str(text, Path::new("test.toml"), opts)
}

fn minimal() -> String {
    format!(
        "[database]\nurl = \"mysql://dingsync:{DB_PASSWORD}@127.0.0.1:3306/jeecg-boot\"\n\
         [[tenant]]\nid = 0\nagent_id = 1000000001\nclient_id = \"dingxxxxxxxxxxxxxxxx\"\n\
         client_secret = \"{SECRET}\"\n"
    )
}

fn problem_keys(error: ConfigError) -> Vec<String> {
    match error {
        ConfigError::Invalid(problems) => problems.into_iter().map(|p| p.key).collect(),
        other => panic!("expected Invalid, got {other}"),
    }
}

#[test]
fn example_parses_and_holds_the_defaults() {
    let opts = options(&[("DINGSYNC_TENANT_0_CLIENT_SECRET", SECRET)]);
    let example = load_text(EXAMPLE_CONFIG, &opts).unwrap().config;
    let defaults = load_text(&minimal(), &options(&[])).unwrap().config;
    // Same rendering except the database URL (the example has no password in it).
    let strip =
        |text: String| -> String { text.lines().filter(|l| !l.starts_with("url = ")).collect() };
    assert_eq!(strip(example.render()), strip(defaults.render()));
    assert_eq!(example.tenants[0].client_secret.expose(), SECRET);
}

#[test]
fn every_problem_is_reported_with_its_key() {
    let text = "surprise = 1\n[database]\nurl = \"sqlite:x.db\"\n[dingtalk]\nbase_url = \"oapi.dingtalk.com\"\n\
                [[tenant]]\nid = 0\nagent_id = 1\nclient_id = \"k\"\n[pull]\ncron = \"every hour\"\n";
    let keys = problem_keys(load_text(text, &options(&[])).unwrap_err());
    for expected in [
        "surprise",
        "dingtalk.base_url",
        "tenant[0].client_secret",
        "pull.cron",
    ] {
        assert!(
            keys.iter().any(|k| k == expected),
            "{expected} not in {keys:?}"
        );
    }
    assert_eq!(keys.len(), 4, "{keys:?}");
}

#[test]
fn relative_base_url_is_named_as_such() {
    let text = format!(
        "{}[dingtalk]\nbase_url = \"oapi.dingtalk.com\"\n",
        minimal()
    );
    let message = load_text(&text, &options(&[])).unwrap_err().to_string();
    assert!(
        message.contains("dingtalk.base_url: relative URL without a base"),
        "{message}"
    );
}

#[test]
fn type_errors_in_several_sections_are_all_reported() {
    let text = format!(
        "{}[queue]\nworkers = \"four\"\nmax_attempts = 0\n[push]\nusers = \"yes\"\n",
        minimal()
    );
    let keys = problem_keys(load_text(&text, &options(&[])).unwrap_err());
    assert_eq!(
        keys,
        vec!["push.users", "queue.max_attempts", "queue.workers"]
    );
}

#[test]
fn layers_apply_in_order_file_env_flags() {
    let text = format!(
        "{}[queue]\nworkers = 2\n[log]\nlevel = \"warn\"\nformat = \"text\"\n",
        minimal()
    );
    let mut opts = options(&[
        ("DINGSYNC_QUEUE_WORKERS", "6"),
        ("DINGSYNC_LOG_LEVEL", "debug"),
    ]);
    let config = load_text(&text, &opts).unwrap().config;
    assert_eq!(config.queue.workers.get(), 6);
    assert_eq!(config.log.level, "debug");
    assert_eq!(config.log.format, LogFormat::Text);
    opts.log_level = Some("error".into());
    opts.log_format = Some(LogFormat::Json);
    let config = load_text(&text, &opts).unwrap().config;
    assert_eq!(config.log.level, "error");
    assert_eq!(config.log.format, LogFormat::Json);
}

#[test]
fn config_path_precedence() {
    assert_eq!(
        options(&[]).config_path(),
        PathBuf::from(DEFAULT_CONFIG_PATH)
    );
    let mut opts = options(&[("DINGSYNC_CONFIG", "/srv/env.toml")]);
    assert_eq!(opts.config_path(), PathBuf::from("/srv/env.toml"));
    opts.path = Some("/srv/flag.toml".into());
    assert_eq!(opts.config_path(), PathBuf::from("/srv/flag.toml"));
}

#[test]
fn secrets_never_show_in_debug_render_or_errors() {
    let loaded = load_text(&minimal(), &options(&[])).unwrap();
    let shown = format!(
        "{:?}\n{}\n{:?}",
        loaded.config,
        loaded.config.render(),
        loaded
    );
    assert!(
        !shown.contains(SECRET) && !shown.contains(DB_PASSWORD),
        "{shown}"
    );
    assert!(loaded
        .config
        .render()
        .contains("mysql://dingsync:***@127.0.0.1:3306/jeecg-boot"));
    assert_eq!(
        loaded.config.database.url.expose(),
        format!("mysql://dingsync:{DB_PASSWORD}@127.0.0.1:3306/jeecg-boot")
    );

    let clash = format!("{}client_secret_file = \"/nonexistent\"\n", minimal());
    let bad_scheme = format!("[database]\nurl = \"ftp://u:{DB_PASSWORD}@h/x\"\n[[tenant]]\nid = 0\nagent_id = 1\nclient_id = \"k\"\nclient_secret = 5\n");
    let bad_env = options(&[("DINGSYNC_TENANT_0_AGENT_ID", SECRET)]);
    for (text, opts) in [
        (clash, options(&[])),
        (bad_scheme, options(&[])),
        (minimal(), bad_env),
    ] {
        let message = load_text(&text, &opts).unwrap_err().to_string();
        assert!(
            !message.contains(SECRET) && !message.contains(DB_PASSWORD),
            "{message}"
        );
    }
}

#[test]
fn secret_files_are_read_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret");
    let mut file = std::fs::File::create(&path).unwrap();
    writeln!(file, "{SECRET}").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = minimal().replace(
        &format!("client_secret = \"{SECRET}\""),
        &format!("client_secret_file = {:?}", path),
    );
    assert_eq!(
        load_text(&text, &options(&[])).unwrap().config.tenants[0]
            .client_secret
            .expose(),
        SECRET
    );

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let keys = problem_keys(load_text(&text, &options(&[])).unwrap_err());
    assert_eq!(keys, vec!["tenant[0].client_secret_file"]);
    let allowed = format!("allow_insecure_secret_files = true\n{text}");
    assert!(load_text(&allowed, &options(&[])).is_ok());
}

#[test]
fn tenant_rules() {
    let both = format!("{}client_secret_file = \"/x\"\n", minimal());
    assert_eq!(
        problem_keys(load_text(&both, &options(&[])).unwrap_err()),
        vec!["tenant[0].client_secret"]
    );
    let twice = format!(
        "{}[[tenant]]\nid = 0\nagent_id = 2\nclient_id = \"b\"\nclient_secret = \"c\"\n",
        minimal()
    );
    assert_eq!(
        problem_keys(load_text(&twice, &options(&[])).unwrap_err()),
        vec!["tenant[1].id"]
    );
    let none = "[database]\nurl = \"sqlite:x.db\"\n";
    assert_eq!(
        problem_keys(load_text(none, &options(&[])).unwrap_err()),
        vec!["tenant"]
    );
    let from_db = "tenants_from_database = true\n[database]\nurl = \"sqlite:x.db\"\n";
    assert!(load_text(from_db, &options(&[])).is_ok());
}

#[test]
fn weak_default_password_warns_only_when_pulling() {
    let loaded = load_text(&minimal(), &options(&[])).unwrap();
    assert!(loaded
        .warnings
        .iter()
        .any(|w| w.contains("new_user_password")));
    let no_pull = format!("{}pull.enabled = false\n", minimal());
    assert!(load_text(&no_pull, &options(&[]))
        .unwrap()
        .warnings
        .is_empty());
}

#[test]
fn database_url_backends() {
    for (text, backend) in [
        ("sqlite:/var/lib/dingsync/jeecg.db", Backend::Sqlite),
        ("sqlite::memory:", Backend::Sqlite),
        ("mariadb://u@h/db", Backend::MySql),
        ("postgresql://u:p@h/db", Backend::Postgres),
    ] {
        assert_eq!(
            DatabaseUrl::parse(text).unwrap().backend(),
            backend,
            "{text}"
        );
    }
    assert!(DatabaseUrl::parse("redis://h").is_err());
}

#[test]
fn the_pool_defaults_to_three_connections_on_sqlite_and_five_on_servers() {
    let pool = |url: &str, extra: &str| {
        let text = format!(
            "[database]\nurl = \"{url}\"\n{extra}[[tenant]]\nid = 0\nagent_id = 1\nclient_id = \"k\"\nclient_secret = \"{SECRET}\"\n"
        );
        let config = load_text(&text, &options(&[])).unwrap().config;
        Some(config.database.pool_size.get())
    };
    assert_eq!(pool("sqlite:x.db", ""), Some(3));
    assert_eq!(pool("postgres://u@h/db", ""), Some(5));
    assert_eq!(pool("mysql://u@h/db", ""), Some(5));
    assert_eq!(pool("sqlite:x.db", "pool_size = 4\n"), Some(4));
    // A bad pool size is listed with a missing URL.
    let keys = problem_keys(
        load_text(
            &format!("[database]\npool_size = 0\n[[tenant]]\nid = 0\nagent_id = 1\nclient_id = \"k\"\nclient_secret = \"{SECRET}\"\n"),
            &options(&[]),
        )
        .unwrap_err(),
    );
    assert_eq!(keys, ["database.pool_size", "database.url"]);
}

//! The `dingsync` binary as an operator meets it: help, exit codes, check-config.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

const SECRET: &str = "tenant-secret-XYZZY-123";
const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/dingsync.example.toml");

fn dingsync(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dingsync"));
    command.args(args).env("DINGSYNC_LOG_FORMAT", "json");
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("DINGSYNC_")) {
        command.env_remove(key);
    }
    command
        .envs(env.iter().copied())
        .output()
        .expect("run dingsync")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_and_version_exit_zero_and_bad_usage_exits_64() {
    let help = dingsync(&["--help"], &[]);
    assert_eq!(help.status.code(), Some(0));
    assert!(text(&help.stdout).contains("check-config"));
    assert!(text(&help.stdout).contains("78 bad config"));
    let version = dingsync(&["--version"], &[]);
    assert_eq!(version.status.code(), Some(0));
    assert!(text(&version.stdout).contains(env!("CARGO_PKG_VERSION")));
    assert_eq!(dingsync(&["--no-such-flag"], &[]).status.code(), Some(64));
    assert_eq!(dingsync(&[], &[]).status.code(), Some(64));
}

#[test]
fn example_config_checks_clean_with_secret_from_env_and_prints_no_secret() {
    let out = dingsync(
        &["check-config", "--config", EXAMPLE],
        &[("DINGSYNC_TENANT_0_CLIENT_SECRET", SECRET)],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("client_secret = \"***\""), "{stdout}");
    assert!(!stdout.contains(SECRET) && !stderr.contains(SECRET));
    // The start-up line is JSON with the tenant ids only.
    let startup = stderr
        .lines()
        .find(|l| l.contains("\"event\":\"startup\""))
        .expect("startup line");
    let json: serde_json::Value = serde_json::from_str(startup).unwrap();
    assert_eq!(json["tenants"], "[0]");
    assert_eq!(json["config"], EXAMPLE);
}

#[test]
fn secret_from_file_and_config_from_env_variable() {
    let dir = tempfile::tempdir().unwrap();
    let secret_path = dir.path().join("secret");
    let mut file = std::fs::File::create(&secret_path).unwrap();
    writeln!(file, "{SECRET}").unwrap();
    std::fs::set_permissions(&secret_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let secret_path = secret_path.to_str().unwrap();
    let out = dingsync(
        &["check-config"],
        &[
            ("DINGSYNC_CONFIG", EXAMPLE),
            ("DINGSYNC_TENANT_0_CLIENT_SECRET_FILE", secret_path),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains(SECRET));

    std::fs::set_permissions(secret_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = dingsync(
        &["check-config", "--config", EXAMPLE],
        &[("DINGSYNC_TENANT_0_CLIENT_SECRET_FILE", secret_path)],
    );
    assert_eq!(out.status.code(), Some(78));
    assert!(
        text(&out.stderr).contains("tenant[0].client_secret_file"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn bad_config_exits_78_naming_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[database]\nurl = \"sqlite:jeecg.db\"\n[dingtalk]\nbase_url = \"oapi.dingtalk.com\"\nretries = 3\n\
         [[tenant]]\nid = 0\nagent_id = 1\nclient_id = \"key\"\n[pull]\ncron = \"*/5 * * *\"\n",
    )
    .unwrap();
    let out = dingsync(&["check-config", "--config", path.to_str().unwrap()], &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    for key in [
        "dingtalk.retries: unknown key",
        "dingtalk.base_url: relative URL without a base",
        "tenant[0].client_secret: missing",
        "pull.cron:",
    ] {
        assert!(stderr.contains(key), "{key} not named in:\n{stderr}");
    }
    assert!(stderr.contains("4 problem(s)"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn missing_file_and_bad_toml_exit_78() {
    let out = dingsync(
        &["check-config", "--config", "/nonexistent/dingsync.toml"],
        &[],
    );
    assert_eq!(out.status.code(), Some(78));
    assert!(text(&out.stderr).contains("/nonexistent/dingsync.toml"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, "[database\nurl = 1").unwrap();
    let out = dingsync(&["check-config", "--config", path.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(78));
    assert!(
        text(&out.stderr).contains("not valid TOML"),
        "{}",
        text(&out.stderr)
    );
}

fn sqlite_config(dir: &std::path::Path, db: &str) -> std::path::PathBuf {
    let path = dir.join("dingsync.toml");
    std::fs::write(
        &path,
        format!(
            "[database]\nurl = \"sqlite:{}\"\n[[tenant]]\nid = 0\nagent_id = 1\nclient_id = \"k\"\nclient_secret = \"s\"\n",
            dir.join(db).display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn init_twice_then_uninstall() {
    let dir = tempfile::tempdir().unwrap();
    let config = sqlite_config(dir.path(), "jeecg.db");
    let config = config.to_str().unwrap();
    let bare = dingsync(&["init", "--config", config], &[]);
    assert_eq!(
        bare.status.code(),
        Some(65),
        "no JeecgBoot tables: {}",
        text(&bare.stderr)
    );
    assert!(text(&bare.stderr).contains("--with-jeecg-schema"));
    let first = dingsync(&["init", "--with-jeecg-schema", "--config", config], &[]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    assert!(
        text(&first.stdout).contains(&format!("0 -> {}", dingsync::store::schema::SCHEMA_VERSION))
    );
    let second = dingsync(&["init", "--config", config], &[]);
    assert_eq!(second.status.code(), Some(0));
    assert!(text(&second.stdout).contains("nothing to do"));
    assert_eq!(
        dingsync(&["uninstall", "--config", config], &[])
            .status
            .code(),
        Some(64),
        "needs --yes"
    );
    let out = dingsync(&["uninstall", "--yes", "--config", config], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn unreachable_database_exits_69() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dingsync.toml");
    let socket = dir.path().join("no-such.sock");
    std::fs::write(
        &path,
        format!(
            "[database]\nurl = \"mysql://u:DBSECRET@localhost/jeecg?socket={}\"\n[[tenant]]\nid = 0\nagent_id = 1\nclient_id = \"k\"\nclient_secret = \"s\"\n",
            socket.display()
        ),
    )
    .unwrap();
    let out = dingsync(&["init", "--config", path.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(69), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("DBSECRET"));
}

#[test]
fn demo_runs_the_whole_product_and_exits_zero() {
    let out = dingsync(&["demo"], &[]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    for needle in [
        "DingTalk has 7 departments (+ root) and 6 users",
        "DingTalk name updated",
        "local user dt_newbie (新同事)",
        "delivered to 3 users",
        "recalled in DingTalk",
        "queue: 0 pending, 0 running, 0 dead",
        "done.",
    ] {
        assert!(
            stdout.contains(needle),
            "{needle:?} missing from:\n{stdout}"
        );
    }
}

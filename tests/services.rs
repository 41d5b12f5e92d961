//! The test databases that scripts/test starts are there and new enough for dingsync's
//! queue (FOR UPDATE SKIP LOCKED needs MariaDB 10.6+ or PostgreSQL 9.5+).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use sqlx::Connection;

#[tokio::test]
async fn mariadb_is_up_and_supports_skip_locked() {
    let Some(url) = common::mysql_url() else {
        return;
    };
    let mut connection = sqlx::MySqlConnection::connect(&url)
        .await
        .expect("connect to MariaDB");
    let version: String = sqlx::query_scalar("SELECT VERSION()")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    let mut parts = version
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    assert!(
        (major, minor) >= (10, 6),
        "MariaDB {version} is older than 10.6"
    );
    sqlx::query("SELECT 1 FROM DUAL FOR UPDATE SKIP LOCKED")
        .execute(&mut connection)
        .await
        .expect("SKIP LOCKED accepted");
}

#[tokio::test]
async fn postgres_is_up_and_supports_skip_locked() {
    let Some(url) = common::postgres_url() else {
        return;
    };
    let mut connection = sqlx::PgConnection::connect(&url)
        .await
        .expect("connect to PostgreSQL");
    let version: i32 = sqlx::query_scalar("SELECT current_setting('server_version_num')::int")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert!(version >= 95_000, "PostgreSQL {version} is too old");
    sqlx::query("SELECT 1 FOR UPDATE SKIP LOCKED")
        .execute(&mut connection)
        .await
        .expect("SKIP LOCKED accepted");
}

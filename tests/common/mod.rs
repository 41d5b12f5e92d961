//! Helpers shared by the integration tests: where the test databases are.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

/// The URL of a test service from `var`, which `scripts/test` exports. Under CI a missing
/// variable fails the test (a service the tests need must not be skipped silently);
/// elsewhere the test says it was skipped and why.
pub fn service_url(var: &str, service: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => {
            panic!("{var} is not set under CI: scripts/test must start {service} for this test")
        }
        _ => {
            eprintln!("SKIPPED: {var} is not set, so the {service} part of this test did not run; run scripts/test");
            None
        }
    }
}

/// MariaDB/MySQL started by scripts/test.
pub fn mysql_url() -> Option<String> {
    service_url("DINGSYNC_TEST_MYSQL_URL", "MariaDB")
}

/// PostgreSQL started by scripts/test.
pub fn postgres_url() -> Option<String> {
    service_url("DINGSYNC_TEST_PG_URL", "PostgreSQL")
}

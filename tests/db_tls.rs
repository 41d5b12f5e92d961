//! TLS to the database: MariaDB and PostgreSQL as scripts/test starts them (TCP on
//! 127.0.0.1 with a certificate from a throwaway CA). dingsync connects with the server's
//! certificate verified against the CA named in `database.url` (`ssl-mode=VERIFY_IDENTITY&
//! ssl-ca=…`, `sslmode=verify-full&sslrootcert=…`), the session is encrypted, `check-config`
//! names the mode, and the same URL with a CA that did not sign the server's certificate
//! fails at start with 69 and the reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

async fn dingsync(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_dingsync"))
        .args(args)
        .args(["--config", config.to_str().unwrap()])
        .env_remove("DINGSYNC_CONFIG")
        .output()
        .await
        .unwrap()
}

/// Whether the store's session is encrypted, as the server sees it.
async fn encrypted(db: &common::TestDb) -> bool {
    match db.name {
        "postgres" => db
            .plain
            .fetch_value::<bool>(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .unwrap(),
        _ => db
            .plain
            .fetch_rows::<(String, String)>("SHOW SESSION STATUS LIKE 'Ssl_cipher'", &[])
            .await
            .map(|rows| !rows[0].1.is_empty())
            .unwrap(),
    }
}

#[tokio::test]
async fn verified_tls_to_the_database_and_a_wrong_ca_exits_69() {
    let Some(wrong_ca) = common::service_url("DINGSYNC_TEST_WRONG_CA", "the TLS test CA") else {
        return;
    };
    for (name, var, mode, ca_key) in [
        (
            "mariadb",
            "DINGSYNC_TEST_MYSQL_TLS_URL",
            "verify_identity",
            "ssl-ca",
        ),
        (
            "postgres",
            "DINGSYNC_TEST_PG_TLS_URL",
            "verify-full",
            "sslrootcert",
        ),
    ] {
        let Some(admin) = common::service_url(var, name) else {
            continue;
        };
        // A fresh database, created and used over verified TLS.
        let db = common::server_db(name, &admin).await;
        assert!(encrypted(&db).await, "{name}: the session is not encrypted");

        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("dingsync.toml");
        common::write_config(&config, &db.url, "http://127.0.0.1:9", 20, "");
        let checked = dingsync(&config, &["check-config"]).await;
        let stdout = String::from_utf8_lossy(&checked.stdout);
        assert!(
            checked.status.success() && stdout.contains(&format!("# database TLS: {mode} (CA ")),
            "{name}: {stdout}"
        );
        let init = dingsync(&config, &["init", "--with-jeecg-schema"]).await;
        assert_eq!(init.status.code(), Some(0), "{name}: {init:?}");

        // The server's certificate checked against a CA that did not sign it: exit 69.
        let mut url = url::Url::parse(&db.url).unwrap();
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == ca_key {
                    wrong_ca.clone()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
        common::write_config(&config, url.as_str(), "http://127.0.0.1:9", 20, "");
        let refused = dingsync(&config, &["init"]).await;
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(refused.status.code(), Some(69), "{name}: {stderr}");
        assert!(
            stderr.to_lowercase().contains("certificate"),
            "{name}: the reason names the certificate: {stderr}"
        );
    }
}

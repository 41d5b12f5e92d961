//! `dingtalk-sim` as a process: prints its bound address first, serves the apps given with
//! --app, and the admin API drives it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

#[tokio::test]
async fn sim_binary_serves_apps_and_admin_api() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dingtalk-sim"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--app",
            "key1:secret1:101",
            "--app",
            "key2:secret2:102",
            "--qps",
            "5",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start dingtalk-sim");
    let mut first_line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first_line)
        .unwrap();
    let base = format!("http://{}", first_line.trim());
    let http = reqwest::Client::new();
    let get = |url: String| {
        let http = http.clone();
        async move {
            http.get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let token = get(format!("{base}/gettoken?appkey=key2&appsecret=secret2")).await;
    let token = token["access_token"].as_str().unwrap().to_string();
    // Form body, as DingTalk's curl samples send it.
    let created: Value = http
        .post(format!(
            "{base}/topapi/v2/department/create?access_token={token}"
        ))
        .form(&[
            ("name", "销售部"),
            ("parent_id", "1"),
            ("source_identifier", "S1"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(created["errcode"], 0);
    // A console edit through the admin API, then the org dump shows both departments.
    let edit: Value = http
        .post(format!(
            "{base}/_sim/apps/key2/api/topapi/v2/department/create"
        ))
        .json(&json!({ "name": "市场部", "parent_id": 1 }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(edit["errcode"], 0);
    let org = get(format!("{base}/_sim/apps/key2")).await;
    assert_eq!(org["org"]["depts"].as_object().unwrap().len(), 3);
    assert!(
        org.get("appsecret").is_none(),
        "the dump never shows the secret"
    );
    // Apps are separate organisations.
    assert_eq!(
        get(format!("{base}/_sim/apps/key1")).await["org"]["depts"]
            .as_object()
            .unwrap()
            .len(),
        1
    );
    let calls = get(format!("{base}/_sim/calls?appkey=key2")).await;
    assert_eq!(
        calls["paths"]["topapi/v2/department/create"]["calls"], 1,
        "console edits are not counted"
    );
    assert_eq!(calls["write_calls"], 1);
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn sim_help_explains_the_admin_api() {
    let out = Command::new(env!("CARGO_BIN_EXE_dingtalk-sim"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--app",
        "--qps",
        "--token-ttl",
        "/_sim/faults",
        "/_sim/clock/advance",
        "90018",
    ] {
        assert!(help.contains(needle), "{needle} missing from --help");
    }
}

//! dingsync on JeecgBoot's real MySQL schema and seed rows (../shared/jeecgboot/, read in
//! place), loaded into MariaDB: `init` succeeds unchanged, and the store reads the 4 users and
//! the 50-department tree with its posts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use dingsync::jeecg::password;

#[tokio::test]
async fn init_and_reads_on_jeecgboots_real_schema() {
    let Some(db) = common::loaded_mariadb().await else {
        return;
    };
    let report = db.store.init(false).await.expect("init on the real schema");
    assert_eq!(
        (report.from_version, report.to_version),
        (0, dingsync::store::schema::SCHEMA_VERSION)
    );

    let users = db.store.load_users(0).await.unwrap();
    let names: Vec<&str> = users.iter().map(|u| u.username.as_str()).collect();
    assert_eq!(names, vec!["admin", "ceshi", "jeecg", "zhangsan"]);
    let zhangsan = users.iter().find(|u| u.username == "zhangsan").unwrap();
    assert_eq!(
        zhangsan.depart_ids,
        vec!["a7d7e77e06c84325a40932163adcdaa6".to_string()]
    );
    assert_eq!(zhangsan.phone.as_deref(), Some("13426411111"));
    assert_eq!(
        (zhangsan.work_no.as_deref(), zhangsan.del_flag),
        (Some("0005"), 0)
    );
    // Tenant 1001 holds jeecg only (sys_user_tenant, status 1).
    let tenant_users = db.store.load_users(1001).await.unwrap();
    assert_eq!(
        tenant_users
            .iter()
            .map(|u| u.username.as_str())
            .collect::<Vec<_>>(),
        vec!["jeecg"]
    );

    let depts = db.store.load_departments(0).await.unwrap();
    assert_eq!(depts.len(), 50);
    let posts = depts.iter().filter(|d| d.is_post()).count();
    assert!(posts > 0 && posts < 50, "posts identified: {posts}");
    let tops: Vec<&str> = depts
        .iter()
        .filter(|d| d.parent_id.is_none())
        .map(|d| d.name.as_str())
        .collect();
    assert!(
        tops.contains(&"北京国炬软件") && tops.contains(&"北京卓尔互动"),
        "top level ('' parent) read as none: {tops:?}"
    );
    assert!(depts.iter().filter(|d| !d.is_post()).all(|d| d
        .parent_id
        .as_ref()
        .is_none_or(|p| depts.iter().any(|x| &x.id == p))));
    let rd = depts.iter().filter(|d| d.name == "研发部").count();
    assert_eq!(rd, 2, "two 研发部 under different parents");

    // The seed users' hashes verify with JeecgBoot's scheme.
    let (hash, salt) = db.store.password_of("admin").await.unwrap().unwrap();
    assert!(password::verify("admin", "123456", &salt, &hash));

    // The placeholder DingTalk config row of the seed.
    let apps = db.store.app_configs().await.unwrap();
    assert_eq!(
        (apps.len(), apps[0].tenant_id, apps[0].client_id.as_str()),
        (1, 0, "1")
    );

    // Triggers work on the real tables.
    db.plain
        .execute("UPDATE sys_user SET realname = '张三2' WHERE username = 'zhangsan'")
        .await
        .unwrap();
    let changes = db.store.changes_after(0, 10).await.unwrap();
    assert_eq!(
        (changes.len(), changes[0].row_key.as_str()),
        (1, "3d464b4ea0d2491aab8a7bde74c57e95")
    );
}

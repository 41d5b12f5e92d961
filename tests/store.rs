//! The store on SQLite, MariaDB and PostgreSQL: init and uninstall, change-log triggers,
//! echo suppression, the job queue, leases, JeecgBoot reads and writes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::TestDb;
use dingsync::jeecg::{password, Link, NewDept, NewUser};
use dingsync::secret::Secret;
use dingsync::store::batch::LinkWrite;
use dingsync::store::changes::Change;
use dingsync::store::links::LinkSaved;
use dingsync::store::queue::{state, FailOutcome, Job, JobFilter, RetryPolicy, WaitPolicy};
use dingsync::store::raw::Arg;
use dingsync::store::snapshots::SnapshotWrite;
use dingsync::store::{now_ms, Store, StoreError};

async fn changes(db: &TestDb) -> Vec<(String, String, String)> {
    db.store
        .changes_after(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|c: Change| (c.table_name, c.row_key, c.op))
        .collect()
}

async fn count(store: &Store, sql: &str) -> i64 {
    store.fetch_value::<i64>(sql, &[]).await.unwrap().unwrap()
}

#[tokio::test]
async fn init_is_idempotent_and_uninstall_leaves_jeecgboot_rows() {
    for db in common::all_dbs().await {
        let name = db.name;
        let first = db.store.init(true).await.unwrap();
        assert_eq!(
            (
                first.from_version,
                first.to_version,
                first.jeecg_tables_created
            ),
            (0, dingsync::store::schema::SCHEMA_VERSION, 11),
            "{name}"
        );
        let triggers = db.store.trigger_names().await.unwrap();
        assert_eq!(
            triggers.len(),
            25,
            "{name}: 6 tables x insert/update/delete, the outbox, and the department tree's version on sys_depart and dingsync_snapshot (3 each): {triggers:?}"
        );
        let again = db.store.init(true).await.unwrap();
        assert_eq!(
            (again.from_version, again.jeecg_tables_created),
            (dingsync::store::schema::SCHEMA_VERSION, 0),
            "{name}"
        );
        assert_eq!(
            db.store.trigger_names().await.unwrap(),
            triggers,
            "{name}: second init changes nothing"
        );

        db.plain
            .execute(
                "INSERT INTO sys_user (id, username, realname) VALUES ('u1', 'zhangsan', '张三')",
            )
            .await
            .unwrap();
        db.plain.execute("INSERT INTO sys_depart (id, depart_name, org_code, org_category) VALUES ('d1', '研发部', 'A01', '1')").await.unwrap();
        db.store.enqueue(0, "user", "u1", now_ms()).await.unwrap();
        let indexes = |db: &common::TestDb, index: &str| {
            let sql = match db.name {
                "sqlite" => format!("SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = '{index}'"),
                "postgres" => format!("SELECT COUNT(*) FROM pg_indexes WHERE indexname = '{index}'"),
                _ => format!("SELECT COUNT(*) FROM information_schema.statistics WHERE table_schema = DATABASE() AND index_name = '{index}'"),
            };
            let store = db.store.clone();
            async move { store.fetch_value::<i64>(&sql, &[]).await.unwrap().unwrap() }
        };
        // JeecgBoot's own indexes come with its tables (tenant and membership reads use them).
        for index in ["idx_sut_tenant_id", "idx_sud_user_id", "idx_sd_parent_id"] {
            assert!(indexes(&db, index).await > 0, "{name}: {index}");
        }
        assert!(
            indexes(&db, "dingsync_sta_user").await > 0,
            "{name}: the link index is there"
        );
        db.store.uninstall().await.unwrap();
        assert_eq!(
            indexes(&db, "dingsync_sta_user").await,
            0,
            "{name}: uninstall drops the link index"
        );
        assert!(
            indexes(&db, "idx_sut_tenant_id").await > 0,
            "{name}: and leaves JeecgBoot's"
        );
        assert!(db.store.trigger_names().await.unwrap().is_empty(), "{name}");
        assert!(
            !db.store.table_exists("dingsync_job").await.unwrap(),
            "{name}"
        );
        assert_eq!(
            count(&db.plain, "SELECT COUNT(*) FROM sys_user").await,
            1,
            "{name}"
        );
        assert_eq!(
            count(&db.plain, "SELECT COUNT(*) FROM sys_depart").await,
            1,
            "{name}"
        );
        // A write after uninstall is not logged anywhere, and init installs again.
        db.plain
            .execute("UPDATE sys_user SET realname = '张三丰' WHERE id = 'u1'")
            .await
            .unwrap();
        assert_eq!(
            db.store.init(false).await.unwrap().from_version,
            0,
            "{name}"
        );
        assert!(changes(&db).await.is_empty(), "{name}");
    }
}

#[tokio::test]
async fn init_refuses_a_database_without_jeecgboot() {
    let db = common::sqlite_db().await;
    let error = db.store.init(false).await.unwrap_err();
    assert!(
        matches!(error, StoreError::MissingTable(ref t) if t == "sys_user"),
        "{error}"
    );
    assert!(
        !db.store.table_exists("dingsync_job").await.unwrap(),
        "nothing created"
    );
}

#[tokio::test]
async fn each_trigger_logs_its_change() {
    for db in common::initialised_dbs().await {
        let p = &db.plain;
        for statement in [
            "INSERT INTO sys_user (id, username, realname) VALUES ('u1', 'zhangsan', '张三')",
            "UPDATE sys_user SET realname = 'Z' WHERE id = 'u1'",
            "INSERT INTO sys_depart (id, depart_name, org_code, tenant_id) VALUES ('d1', 'RD', 'A01', 7)",
            "UPDATE sys_depart SET depart_name = 'R&D' WHERE id = 'd1'",
            "INSERT INTO sys_user_depart (ID, user_id, dep_id) VALUES ('m1', 'u1', 'd1')",
            "DELETE FROM sys_user_depart WHERE ID = 'm1'",
            "INSERT INTO sys_user_position (id, user_id, position_id) VALUES ('p1', 'u1', 'pos')",
            "UPDATE sys_user_position SET position_id = 'pos2' WHERE id = 'p1'",
            "INSERT INTO sys_announcement (id, titile, send_status, tenant_id) VALUES ('a1', 'T', '0', 7)",
            "UPDATE sys_announcement SET send_status = '1' WHERE id = 'a1'",
            "DELETE FROM sys_depart WHERE id = 'd1'",
            "DELETE FROM sys_user WHERE id = 'u1'",
            "INSERT INTO sys_user_tenant (id, user_id, tenant_id, status) VALUES ('t1', 'u1', 7, '1')",
            "UPDATE sys_user_tenant SET status = '0' WHERE id = 't1'",
        ] {
            p.execute(statement).await.unwrap_or_else(|e| panic!("{}: {statement}: {e}", db.name));
        }
        let expected: Vec<(String, String, String)> = [
            ("sys_user", "u1", "I"),
            ("sys_user", "u1", "U"),
            ("sys_depart", "d1", "I"),
            ("sys_depart", "d1", "U"),
            ("sys_user_depart", "u1", "I"),
            ("sys_user_depart", "u1", "D"),
            ("sys_user_position", "u1", "I"),
            ("sys_user_position", "u1", "U"),
            ("sys_announcement", "a1", "I"),
            ("sys_announcement", "a1", "U"),
            ("sys_depart", "d1", "D"),
            ("sys_user", "u1", "D"),
            ("sys_user_tenant", "u1", "I"),
            ("sys_user_tenant", "u1", "U"),
        ]
        .iter()
        .map(|(t, k, o)| (t.to_string(), k.to_string(), o.to_string()))
        .collect();
        assert_eq!(changes(&db).await, expected, "{}", db.name);
        let rows = db.store.changes_after(0, 100).await.unwrap();
        assert!(
            rows.windows(2).all(|w| w[0].id < w[1].id),
            "{}: ids increase",
            db.name
        );
        assert_eq!(
            rows[2].tenant_id,
            Some(7),
            "{}: the department's tenant",
            db.name
        );
        assert_eq!(rows[0].tenant_id, None, "{}", db.name);
        assert!(
            rows.iter()
                .all(|r| (r.changed_at - now_ms()).abs() < 60_000),
            "{}: times are epoch ms",
            db.name
        );
        assert_eq!(
            rows[12].tenant_id,
            Some(7),
            "{}: the tenant a user joined",
            db.name
        );
        assert_eq!(
            db.store.changes_after(rows[9].id, 100).await.unwrap().len(),
            4,
            "{}",
            db.name
        );
    }
}

#[tokio::test]
async fn postgres_trigger_raises_notify() {
    let Some(db) = common::postgres_db().await else {
        return;
    };
    db.store.init(true).await.unwrap();
    let mut listener = sqlx::postgres::PgListener::connect(&db.url).await.unwrap();
    listener
        .listen(dingsync::store::schema::NOTIFY_CHANNEL)
        .await
        .unwrap();
    db.plain
        .execute("INSERT INTO sys_user (id, username) VALUES ('u9', 'lisi')")
        .await
        .unwrap();
    let notification = tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .expect("notified in time")
        .unwrap();
    let id: i64 = notification.payload().parse().unwrap();
    assert_eq!(
        db.store.changes_after(id - 1, 1).await.unwrap()[0].row_key,
        "u9"
    );
}

/// dingsync's writes of a small org as it pulls one: two departments (the child coded under
/// the top), a user of tenant 3 with its link, the top's DingTalk id, the child renamed and
/// moved to the top. The top's and the child's ids.
async fn dingsync_writes_an_org(db: &TestDb) -> (String, String) {
    let name = db.name;
    let top = db
        .store
        .insert_department(&NewDept {
            name: "总部".into(),
            ding_identifier: 101,
            ..NewDept::default()
        })
        .await
        .unwrap();
    let child = db
        .store
        .insert_department(&NewDept {
            name: "研发部".into(),
            parent_id: Some(top.id.clone()),
            ding_identifier: 102,
            ..NewDept::default()
        })
        .await
        .unwrap();
    assert_eq!(
        (top.org_code.as_str(), child.org_code.as_str()),
        ("A01", "A01A01"),
        "{name}"
    );
    let user = NewUser {
        username: "wangwu".into(),
        realname: "王五".into(),
        phone: Some("13900000001".into()),
        depart_ids: vec![child.id.clone()],
        tenant_id: 3,
        ..NewUser::default()
    };
    let id = db
        .store
        .insert_user(&user, &Secret::new("123456"))
        .await
        .unwrap();
    db.store
        .save_link(
            &Link {
                user_id: id.clone(),
                userid: "wangwu".into(),
                unionid: Some("un1".into()),
                tenant_id: 3,
            },
            "王五",
        )
        .await
        .unwrap();
    db.store
        .set_ding_identifier(&top.id, Some(555))
        .await
        .unwrap();
    db.store
        .update_department(&child.id, "研发中心", None, 5)
        .await
        .unwrap();
    (top.id, child.id)
}

/// What [`dingsync_writes_an_org`] wrote reads back as JeecgBoot has it.
async fn the_org_reads_back_as_jeecgboot_has_it(db: &TestDb, top: &str, child: &str) {
    let name = db.name;
    let users = db.store.load_users(3).await.unwrap();
    assert_eq!(users.len(), 1, "{name}: tied to tenant 3");
    assert_eq!(users[0].depart_ids, vec![child.to_string()], "{name}");
    assert!(db.store.load_users(4).await.unwrap().is_empty(), "{name}");
    let (hash, salt) = db.store.password_of("wangwu").await.unwrap().unwrap();
    assert!(
        password::verify("wangwu", "123456", &salt, &hash),
        "{name}: JeecgBoot's login accepts it"
    );
    let depts = db.store.load_departments(0).await.unwrap();
    let moved = depts.iter().find(|d| d.id == child).unwrap();
    assert_eq!(
        (
            moved.name.as_str(),
            moved.parent_id.as_deref(),
            moved.org_code.as_str()
        ),
        ("研发中心", None, "A02"),
        "{name}: moved to top, recoded"
    );
    assert_eq!(
        depts.iter().find(|d| d.id == top).unwrap().ding_identifier,
        Some(555),
        "{name}"
    );
    let links = db.store.links(3).await.unwrap();
    assert_eq!(
        (links.len(), links[0].userid.as_str()),
        (1, "wangwu"),
        "{name}"
    );
}

/// A clash on a unique key (wangwu's phone) is a typed error naming the key, and writes
/// nothing.
async fn a_unique_clash_is_a_typed_error_and_writes_nothing(db: &TestDb) {
    let name = db.name;
    let clash = NewUser {
        username: "other".into(),
        phone: Some("13900000001".into()),
        ..NewUser::default()
    };
    let error = db
        .store
        .insert_user(&clash, &Secret::new("x"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::UniqueClash {
                column: "phone",
                ..
            }
        ),
        "{name}: {error}"
    );
    assert_eq!(
        count(&db.plain, "SELECT COUNT(*) FROM sys_user").await,
        1,
        "{name}"
    );
}

#[tokio::test]
async fn dingsyncs_own_writes_are_not_logged() {
    for db in common::initialised_dbs().await {
        let name = db.name;
        let (top, child) = dingsync_writes_an_org(&db).await;
        assert!(
            changes(&db).await.is_empty(),
            "{name}: dingsync's writes echoed: {:?}",
            changes(&db).await
        );
        // The same kind of write by JeecgBoot is logged.
        db.plain
            .execute("UPDATE sys_depart SET depart_name = 'X' WHERE org_code = 'A01'")
            .await
            .unwrap();
        assert_eq!(changes(&db).await.len(), 1, "{name}");

        // What was written reads back as JeecgBoot has it.
        the_org_reads_back_as_jeecgboot_has_it(&db, &top, &child).await;
        // A clash on a unique key is a typed error naming the key, and writes nothing.
        a_unique_clash_is_a_typed_error_and_writes_nothing(&db).await;
    }
}

fn policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        base: Duration::from_secs(10),
        cap: Duration::from_secs(40),
    }
}

/// Four enqueues of two entities coalesce into two pending jobs, u1's at its earliest due
/// time.
async fn enqueues_coalesce(s: &Store, name: &str, now: i64) {
    s.enqueue(0, "user", "u1", now + 5_000).await.unwrap();
    s.enqueue(0, "user", "u1", now - 1_000).await.unwrap();
    s.enqueue(0, "user", "u1", now + 9_000).await.unwrap();
    s.enqueue(0, "user", "later", now + 60_000).await.unwrap();
    let pending = s
        .list_jobs(&JobFilter {
            state: Some(state::PENDING.into()),
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(pending.len(), 2, "{name}: coalesced");
    assert_eq!(
        pending[0].run_at,
        now - 1_000,
        "{name}: earliest due time kept"
    );
}

/// Only the due job (u1) is claimed, leased to w1; a change while it runs gives a new
/// pending job, and w2 cannot complete w1's lease. The claimed job.
async fn only_the_due_job_is_claimed(s: &Store, name: &str, now: i64) -> Job {
    let mut claimed = s
        .claim("w1", 10, Duration::from_secs(30), None)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "{name}: only due jobs");
    let job = claimed.remove(0);
    assert_eq!(
        (
            job.entity_key.as_str(),
            job.state.as_str(),
            job.lease_owner.as_deref()
        ),
        ("u1", "running", Some("w1")),
        "{name}"
    );
    // A change while it runs gives a new pending job rather than being lost.
    s.enqueue(0, "user", "u1", now + 20_000).await.unwrap();
    assert!(
        !s.complete(job.id, "w2").await.unwrap(),
        "{name}: not w2's lease"
    );
    job
}

/// Failure: back to pending after a backoff within the ceiling, merged with the newer
/// pending job (earliest due time wins). The merged job's id.
async fn a_failure_backs_off_and_merges(s: &Store, name: &str, job: &Job) -> i64 {
    let before = now_ms();
    let FailOutcome::Retry { run_at, attempts } = s
        .fail(job.id, "w1", "errcode -1", false, &policy())
        .await
        .unwrap()
    else {
        panic!("{name}")
    };
    assert_eq!(attempts, 1, "{name}");
    assert!(
        run_at >= before && run_at <= now_ms() + 10_000,
        "{name}: within base"
    );
    let pending = s
        .list_jobs(&JobFilter {
            state: Some(state::PENDING.into()),
            kind: Some("user".into()),
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        pending.iter().filter(|j| j.entity_key == "u1").count(),
        1,
        "{name}: merged"
    );
    assert_eq!(
        pending
            .iter()
            .find(|j| j.entity_key == "u1")
            .unwrap()
            .last_error
            .as_deref(),
        Some("errcode -1"),
        "{name}"
    );
    pending.iter().find(|j| j.entity_key == "u1").unwrap().id
}

/// Spent attempts -> dead with the reason; permanent -> dead at once. The dead dept job.
async fn spent_and_permanent_failures_go_dead(s: &Store, name: &str, u1: i64, now: i64) -> Job {
    let mut outcome = FailOutcome::LeaseLost;
    for _ in 0..2 {
        force_due(s, u1).await;
        let job = s
            .claim("w1", 1, Duration::from_secs(30), Some(&[0]))
            .await
            .unwrap()
            .remove(0);
        outcome = s
            .fail(job.id, "w1", "still busy", false, &policy())
            .await
            .unwrap();
    }
    assert_eq!(outcome, FailOutcome::Dead { attempts: 3 }, "{name}");
    s.enqueue(0, "dept", "d1", now).await.unwrap();
    let dept = s
        .claim("w1", 1, Duration::from_secs(30), None)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        s.fail(dept.id, "w1", "60021 name exists", true, &policy())
            .await
            .unwrap(),
        FailOutcome::Dead { attempts: 1 },
        "{name}"
    );
    let dead = s
        .list_jobs(&JobFilter {
            state: Some(state::DEAD.into()),
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(dead.len(), 2, "{name}");
    assert_eq!(
        dead.iter()
            .find(|j| j.kind == "dept")
            .unwrap()
            .last_error
            .as_deref(),
        Some("60021 name exists"),
        "{name}"
    );
    dept
}

/// Retry dead (the dept job, then all the rest), drop, tenant filter.
async fn dead_jobs_are_retried_and_dropped(s: &Store, name: &str, dept: &Job) {
    assert!(s.retry_dead(dept.id).await.unwrap(), "{name}");
    let revived = s
        .claim("w1", 5, Duration::from_secs(30), Some(&[0]))
        .await
        .unwrap();
    assert_eq!(
        (revived.len(), revived[0].attempts),
        (1, 0),
        "{name}: due now, attempts reset"
    );
    assert!(s.complete(revived[0].id, "w1").await.unwrap(), "{name}");
    assert!(
        s.claim("w1", 5, Duration::from_secs(30), Some(&[9]))
            .await
            .unwrap()
            .is_empty(),
        "{name}"
    );
    assert_eq!(s.retry_all_dead(None).await.unwrap(), 1, "{name}");
    let later = s
        .list_jobs(&JobFilter {
            kind: Some("user".into()),
            ..JobFilter::default()
        })
        .await
        .unwrap();
    let later = later.iter().find(|j| j.entity_key == "later").unwrap().id;
    assert!(s.drop_job(later).await.unwrap(), "{name}");
    assert!(!s.drop_job(later).await.unwrap(), "{name}");
}

#[tokio::test]
async fn queue_dedupes_leases_backs_off_and_goes_dead() {
    for db in common::initialised_dbs().await {
        let (s, name) = (&db.store, db.name);
        let now = now_ms();
        enqueues_coalesce(s, name, now).await;
        let job = only_the_due_job_is_claimed(s, name, now).await;
        let u1 = a_failure_backs_off_and_merges(s, name, &job).await;
        let dept = spent_and_permanent_failures_go_dead(s, name, u1, now).await;
        dead_jobs_are_retried_and_dropped(s, name, &dept).await;
    }
}

async fn force_due(store: &Store, id: i64) {
    let sql = store
        .sql("UPDATE dingsync_job SET run_at = 0 WHERE id = ?")
        .into_owned();
    store.execute_with(&sql, &[Arg::Int(id)]).await.unwrap();
}

/// A failed job goes back to pending while the change log enqueues its entity again: the two
/// merge into one pending job, whichever commits first (CI once saw MariaDB refuse the
/// failed job's update for the pending job committed between its look and its write).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_job_merges_a_concurrent_enqueue_of_its_entity() {
    let policy = RetryPolicy {
        max_attempts: 1_000,
        ..policy()
    };
    for db in common::initialised_dbs().await {
        let (s, name) = (&db.store, db.name);
        for round in 0..150 {
            s.enqueue(0, "user", "u1", 0).await.unwrap();
            let job = s
                .claim("w", 1, Duration::from_secs(30), None)
                .await
                .unwrap()
                .pop()
                .unwrap_or_else(|| panic!("{name}: round {round}: nothing to claim"));
            let (enqueued, failed) = tokio::join!(
                s.enqueue(0, "user", "u1", 0),
                s.fail(job.id, "w", "errcode -1", false, &policy)
            );
            enqueued.unwrap();
            let failed = failed.unwrap_or_else(|e| panic!("{name}: round {round}: {e}"));
            assert!(
                matches!(failed, FailOutcome::Retry { .. }),
                "{name}: {failed:?}"
            );
            let jobs = s.list_jobs(&JobFilter::default()).await.unwrap();
            assert_eq!(jobs.len(), 1, "{name}: round {round}: {jobs:?}");
            assert_eq!(jobs[0].state, state::PENDING, "{name}: round {round}");
        }
    }
}

/// dingsync's MariaDB sessions look into the index for every value of an IN list: with the
/// server's default (200) a slice's 500-key lists were planned from statistics and read a
/// whole index prefix (38 ms a query at 100k users).
#[tokio::test]
async fn mariadb_sessions_plan_in_lists_by_looking() {
    let Some(db) = common::mariadb_db().await else {
        return;
    };
    for store in [&db.store, &db.plain] {
        let limit: i64 = store
            .fetch_value(
                "SELECT CAST(@@SESSION.eq_range_index_dive_limit AS SIGNED)",
                &[],
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(limit, 0);
    }
}

/// dingsync's PostgreSQL sessions cost a page read as SSDs and cached tables do: with the
/// server's default (4) a pull's 1,000-key lookups read all of `sys_user` once it passed
/// about 50,000 rows.
#[tokio::test]
async fn postgres_sessions_cost_page_reads_as_cached() {
    let Some(db) = common::postgres_db().await else {
        return;
    };
    for store in [&db.store, &db.plain] {
        let cost: String = store
            .fetch_value("SELECT current_setting('random_page_cost')", &[])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(cost, "1.1");
    }
}

/// Who may claim DingTalk users: the users linked to them by a link row (of the tenant, or of
/// any for tenant 0) or by a user snapshot of the tenant, and the tenant's users holding their
/// username or phone; each once.
#[tokio::test]
async fn claimer_ids_are_the_users_linked_or_holding_a_username_or_phone() {
    for db in common::initialised_dbs().await {
        let (s, name) = (&db.store, db.name);
        for (user, userid, tenant) in [("a", "da", 0), ("b", "db", 7), ("c", "dc", 7)] {
            s.save_link(
                &Link {
                    user_id: user.into(),
                    userid: userid.into(),
                    unionid: None,
                    tenant_id: tenant,
                },
                user,
            )
            .await
            .unwrap();
        }
        // `a` also by its snapshot; `d` only by one; `e`'s snapshot is of another tenant.
        s.put_snapshot(0, "user", "a", "da", "{}").await.unwrap();
        s.put_snapshot(0, "user", "d", "dd", "{}").await.unwrap();
        s.put_snapshot(7, "user", "e", "dd", "{}").await.unwrap();
        s.put_snapshot(0, "dept", "f", "dd", "{}").await.unwrap();
        // `g` holds `dd`'s username and `h` a phone; only `h` is a member of tenant 7 (`i`'s
        // membership is inactive).
        for sql in [
            "INSERT INTO sys_user (id, username, realname, phone) VALUES ('g', 'dd', 'G', NULL)",
            "INSERT INTO sys_user (id, username, realname, phone) VALUES ('h', 'hh', 'H', '13800000001')",
            "INSERT INTO sys_user (id, username, realname, phone) VALUES ('i', 'ii', 'I', '13800000002')",
            "INSERT INTO sys_user_tenant (id, user_id, tenant_id, status) VALUES ('th', 'h', 7, '1')",
            "INSERT INTO sys_user_tenant (id, user_id, tenant_id, status) VALUES ('ti', 'i', 7, '0')",
        ] {
            s.execute(sql).await.unwrap();
        }
        let all = ["da", "db", "dc", "dd", "nobody"];
        let phones = ["13800000001", "13800000002", "+86-13800000003"];
        assert_eq!(
            s.claimer_ids(0, &all, &[]).await.unwrap(),
            ["a", "b", "c", "d", "g"],
            "{name}"
        );
        assert_eq!(
            s.claimer_ids(0, &[], &phones).await.unwrap(),
            ["h", "i"],
            "{name}"
        );
        assert_eq!(
            s.claimer_ids(7, &all, &phones).await.unwrap(),
            ["b", "c", "e", "h"],
            "{name}"
        );
        assert!(
            s.claimer_ids(0, &[], &[]).await.unwrap().is_empty(),
            "{name}"
        );
        // The statistics a pull refreshes: on PostgreSQL every table it fills is analyzed.
        s.refresh_statistics().await.unwrap();
        if name == "postgres" {
            let analyzed = count(
                s,
                "SELECT COUNT(*) FROM pg_stat_user_tables WHERE relname IN ('sys_user', 'sys_user_depart', 'sys_user_tenant', 'sys_third_account', 'sys_depart', 'dingsync_snapshot') AND analyze_count > 0",
            )
            .await;
            assert_eq!(analyzed, 6, "{name}");
        }
    }
}

#[tokio::test]
async fn expired_leases_are_reclaimed() {
    for db in common::initialised_dbs().await {
        let (s, name) = (&db.store, db.name);
        s.enqueue(0, "user", "u1", now_ms()).await.unwrap();
        s.enqueue(0, "user", "u2", now_ms()).await.unwrap();
        let claimed = s.claim("crashed", 10, Duration::ZERO, None).await.unwrap();
        assert_eq!(claimed.len(), 2, "{name}");
        // While u2 "ran", a new change for it arrived: reclaim merges instead of duplicating.
        s.enqueue(0, "user", "u2", now_ms()).await.unwrap();
        common::eventually(
            &format!("{name}: the expired leases reclaimed"),
            Duration::from_secs(5),
            async || {
                let reclaimed = s.reclaim_expired().await.unwrap();
                common::done_or(reclaimed > 0, reclaimed)
            },
        )
        .await;
        let pending = s
            .list_jobs(&JobFilter {
                state: Some(state::PENDING.into()),
                ..JobFilter::default()
            })
            .await
            .unwrap();
        let keys: Vec<&str> = pending.iter().map(|j| j.entity_key.as_str()).collect();
        assert_eq!(keys.len(), 2, "{name}: {keys:?}");
        assert!(keys.contains(&"u1") && keys.contains(&"u2"), "{name}");
        assert!(
            !s.complete(claimed[0].id, "crashed").await.unwrap(),
            "{name}: the old lease is void"
        );
        assert_eq!(
            s.list_jobs(&JobFilter {
                state: Some(state::RUNNING.into()),
                ..JobFilter::default()
            })
            .await
            .unwrap()
            .len(),
            0,
            "{name}"
        );
    }
}

#[tokio::test]
async fn concurrent_claimers_never_share_a_job() {
    for db in common::initialised_dbs().await {
        let store = Arc::new(db.store.clone());
        for n in 0..120 {
            store
                .enqueue(n % 3, "user", &format!("u{n}"), now_ms())
                .await
                .unwrap();
        }
        let mut workers = Vec::new();
        for w in 0..4 {
            let store = Arc::clone(&store);
            workers.push(tokio::spawn(async move {
                let owner = format!("w{w}");
                let mut mine = Vec::new();
                loop {
                    let jobs = store
                        .claim(&owner, 7, Duration::from_secs(60), None)
                        .await
                        .unwrap();
                    if jobs.is_empty() {
                        return mine;
                    }
                    for job in jobs {
                        assert!(store.complete(job.id, &owner).await.unwrap());
                        mine.push(job.id);
                    }
                }
            }));
        }
        let mut seen = HashSet::new();
        for worker in workers {
            for id in worker.await.unwrap() {
                assert!(seen.insert(id), "{}: job {id} claimed twice", db.name);
            }
        }
        assert_eq!(seen.len(), 120, "{}", db.name);
    }
}

#[tokio::test]
async fn leases_have_one_holder_until_they_expire() {
    for db in common::initialised_dbs().await {
        let (s, name) = (&db.store, db.name);
        assert!(
            s.acquire_lease("tenant:0", "a", Duration::from_secs(30))
                .await
                .unwrap(),
            "{name}"
        );
        assert!(
            !s.acquire_lease("tenant:0", "b", Duration::from_secs(30))
                .await
                .unwrap(),
            "{name}"
        );
        assert!(
            s.acquire_lease("tenant:0", "a", Duration::from_secs(30))
                .await
                .unwrap(),
            "{name}: renew"
        );
        assert_eq!(
            s.lease_holder("tenant:0").await.unwrap().as_deref(),
            Some("a"),
            "{name}"
        );
        assert!(
            s.acquire_lease("tenant:0", "a", Duration::ZERO)
                .await
                .unwrap(),
            "{name}"
        );
        common::eventually(
            &format!("{name}: b takes the expired lease"),
            Duration::from_secs(5),
            async || {
                let taken = s
                    .acquire_lease("tenant:0", "b", Duration::from_secs(30))
                    .await
                    .unwrap();
                common::done_or(taken, "still a's")
            },
        )
        .await;
        assert!(!s.release_lease("tenant:0", "a").await.unwrap(), "{name}");
        assert!(s.release_lease("tenant:0", "b").await.unwrap(), "{name}");
        assert_eq!(s.lease_holder("tenant:0").await.unwrap(), None, "{name}");
        // At shutdown an instance gives up every lease it holds, and only those.
        for lease in ["tenant:0", "tenant:7"] {
            assert!(s
                .acquire_lease(lease, "a", Duration::from_secs(30))
                .await
                .unwrap());
        }
        assert!(s
            .acquire_lease("tenant:8", "b", Duration::from_secs(30))
            .await
            .unwrap());
        assert_eq!(s.release_leases_of("a").await.unwrap(), 2, "{name}");
        assert_eq!(s.lease_holder("tenant:7").await.unwrap(), None, "{name}");
        assert_eq!(
            s.lease_holder("tenant:8").await.unwrap().as_deref(),
            Some("b"),
            "{name}"
        );
    }
}

#[tokio::test]
async fn snapshots_runs_and_app_configs() {
    for db in common::initialised_dbs().await {
        let (s, name) = (&db.store, db.name);
        s.put_snapshot(0, "user", "u1", "zhangsan", r#"{"name":"A"}"#)
            .await
            .unwrap();
        s.put_snapshot(0, "user", "u1", "zhangsan", r#"{"name":"B"}"#)
            .await
            .unwrap();
        let snaps = s.snapshots(0, "user").await.unwrap();
        assert_eq!(
            (snaps.len(), snaps[0].base.as_deref()),
            (1, Some(r#"{"name":"B"}"#)),
            "{name}: one snapshot, the latest base"
        );
        s.delete_snapshot(0, "user", "u1").await.unwrap();
        assert!(s.snapshots(0, "user").await.unwrap().is_empty(), "{name}");

        let run = s.start_run(0, "push").await.unwrap();
        let counts = dingsync::store::runs::RunCounts {
            created: 3,
            failed: 1,
            ..Default::default()
        };
        let calls = std::collections::BTreeMap::from([("topapi/v2/user/create", 3u64)]);
        s.finish_run(run, &counts, &calls, None).await.unwrap();
        assert_eq!(
            count(s, "SELECT created FROM dingsync_run").await,
            3,
            "{name}"
        );

        db.plain
            .execute("INSERT INTO sys_third_app_config (id, tenant_id, agent_id, client_id, client_secret, third_type, status) VALUES ('c1', 5, '123', 'key', 'sec', 'dingtalk', 1), ('c2', 6, '1', 'k', 's', 'dingtalk', 0), ('c3', 7, '1', 'k', 's', 'wechat_enterprise', 1)")
            .await
            .unwrap();
        // Every DingTalk row, whatever its status (JeecgBoot's own switch: `enabled`).
        let apps = s.app_configs().await.unwrap();
        assert_eq!(apps.len(), 2, "{name}");
        assert_eq!(
            (
                apps[0].tenant_id,
                apps[0].agent_id.as_str(),
                apps[0].client_secret.expose(),
                apps[0].enabled,
                apps[0].is_placeholder()
            ),
            (5, "123", "sec", true, false),
            "{name}"
        );
        assert_eq!(
            (apps[1].tenant_id, apps[1].enabled, apps[1].is_placeholder()),
            (6, false, true),
            "{name}"
        );
    }
}

#[tokio::test]
async fn init_migrates_forward_from_version_1() {
    for db in common::all_dbs().await {
        let name = db.name;
        // A version-1 installation: no outbox trigger (v2), no gap table and no
        // sys_user_tenant triggers (v4), no waits column (v5).
        db.store.init_to(true, 1).await.unwrap();
        assert_eq!(db.store.trigger_names().await.unwrap().len(), 15, "{name}");
        // Rows of the old schema survive the migrations (v5 rebuilds SQLite's delivery table).
        db.store
            .execute("INSERT INTO dingsync_delivery (tenant_id, source, source_id, chunk, state, task_id, created_at, updated_at) VALUES (3, 'announcement', 'a1', 0, 'sent', 77, 1, 1)")
            .await
            .unwrap();
        db.store
            .execute("INSERT INTO dingsync_job (tenant_id, kind, entity_key, state, attempts, run_at, created_at, updated_at) VALUES (0, 'user', 'u9', 'dead', 1, 1, 1, 1)")
            .await
            .unwrap();
        let report = db.store.init(false).await.unwrap();
        assert_eq!(
            (report.from_version, report.to_version),
            (1, dingsync::store::schema::SCHEMA_VERSION),
            "{name}"
        );
        let kept = db.store.deliveries(3, "announcement", "a1").await.unwrap();
        assert_eq!(kept.len(), 1, "{name}");
        assert_eq!(kept[0].task_id, Some(77), "{name}");
        let dead = db.store.dead_keys(0, "user").await.unwrap();
        assert_eq!(dead, vec![("u9".to_string(), None)], "{name}");
        assert!(
            db.store.table_exists("dingsync_change_gap").await.unwrap(),
            "{name}"
        );
        assert_eq!(db.store.trigger_names().await.unwrap().len(), 25, "{name}");
        // The outbox trigger logs inserted rows.
        db.plain
            .execute("INSERT INTO dingsync_outbox (tenant_id, to_all, message) VALUES (0, 1, '{}')")
            .await
            .unwrap();
        let changes = db.store.changes_after(0, 10).await.unwrap();
        assert_eq!(
            changes
                .iter()
                .filter(|c| c.table_name == "dingsync_outbox")
                .count(),
            1,
            "{name}"
        );
    }
}

#[tokio::test]
async fn an_entity_with_a_running_job_is_not_claimed_twice() {
    for db in common::initialised_dbs().await {
        let (s, name) = (&db.store, db.name);
        s.enqueue(0, "announce", "a1", now_ms()).await.unwrap();
        let first = s
            .claim("w1", 5, Duration::from_secs(30), None)
            .await
            .unwrap();
        assert_eq!(first.len(), 1, "{name}");
        // A change while it runs: a second job for the same entity, due now...
        s.enqueue(0, "announce", "a1", now_ms()).await.unwrap();
        s.enqueue(0, "announce", "other", now_ms()).await.unwrap();
        // ...which waits until the first is done (two sends of one announcement would both go out).
        let second = s
            .claim("w2", 5, Duration::from_secs(30), None)
            .await
            .unwrap();
        assert_eq!(
            second
                .iter()
                .map(|j| j.entity_key.as_str())
                .collect::<Vec<_>>(),
            vec!["other"],
            "{name}"
        );
        assert!(s.complete(first[0].id, "w1").await.unwrap());
        let third = s
            .claim("w2", 5, Duration::from_secs(30), None)
            .await
            .unwrap();
        assert_eq!(
            third
                .iter()
                .map(|j| j.entity_key.as_str())
                .collect::<Vec<_>>(),
            vec!["a1"],
            "{name}"
        );
    }
}

/// A transaction that commits after a later one: its change row lands behind the cursor,
/// which has passed the gap it left. It is still read (the gap is watched), once.
#[tokio::test]
async fn a_change_committed_late_behind_the_cursor_is_not_lost() {
    use dingsync::store::changes::GapRules;
    let gaps = GapRules {
        hold_ms: 0,
        keep_ms: 3_600_000,
    };
    let tenants = [0];
    for db in common::initialised_dbs().await {
        let name = db.name;
        let read = || {
            db.store
                .changes_to_jobs(100, &tenants, dingsync::job::job_rows, gaps)
        };
        let user = |id: &str| {
            format!("INSERT INTO sys_user (id, username, realname) VALUES ('{id}', '{id}', '{id}')")
        };
        if name == "sqlite" {
            // One writer at a time: no transaction commits out of order, but ids can still
            // skip (a rolled-back insert). The same gap, written by hand.
            db.store.execute("INSERT INTO dingsync_change (id, table_name, row_key, op, tenant_id, changed_at) VALUES (11, 'sys_user', 'early', 'I', NULL, 0)").await.unwrap();
            assert_eq!(read().await.unwrap().consumed, 1, "{name}");
            db.store.execute("INSERT INTO dingsync_change (id, table_name, row_key, op, tenant_id, changed_at) VALUES (7, 'sys_user', 'late', 'I', NULL, 0)").await.unwrap();
        } else {
            assert_eq!(read().await.unwrap().consumed, 0, "{name}");
            let late = user("late");
            let mut slow = db.plain.begin_raw().await.unwrap();
            slow.execute(&late).await.unwrap();
            // A later transaction commits first; the reader passes the gap.
            db.plain.execute(&user("early")).await.unwrap();
            assert_eq!(read().await.unwrap().consumed, 1, "{name}");
            slow.commit().await.unwrap();
        }
        assert_eq!(read().await.unwrap().consumed, 1, "{name}: the late row");
        assert_eq!(read().await.unwrap().consumed, 0, "{name}: read once");
        let keys: Vec<String> = db
            .store
            .list_jobs(&JobFilter::default())
            .await
            .unwrap()
            .into_iter()
            .map(|j| j.entity_key)
            .collect();
        assert!(
            keys.contains(&"early".to_string()) && keys.contains(&"late".to_string()),
            "{name}: {keys:?}"
        );
    }
}

/// The dead jobs.
async fn dead_jobs(s: &Store) -> Vec<Job> {
    s.list_jobs(&JobFilter {
        state: Some(state::DEAD.into()),
        ..JobFilter::default()
    })
    .await
    .unwrap()
}

/// A job that waits is looked at again; after max_waits waits it is dead, with the reason
/// and the count.
async fn waits_end_in_a_dead_job(s: &Store, name: &str, waits: &WaitPolicy) {
    assert!(s.enqueue(0, "user", "w1", now_ms()).await.unwrap());
    for round in 0..3 {
        // Due again 1 ms after each postponement.
        let job = common::eventually(
            &format!("{name}: round {round}: w1 due"),
            Duration::from_secs(5),
            async || {
                let claimed = s.claim("w", 1, Duration::from_secs(30), None).await;
                claimed.unwrap().pop().ok_or_else(|| "not due".to_string())
            },
        )
        .await;
        let outcome = s
            .postpone(
                job.id,
                "w",
                Duration::from_millis(1),
                "department d1 is not in DingTalk yet",
                waits,
            )
            .await
            .unwrap();
        match round {
            0 | 1 => assert!(
                matches!(outcome, FailOutcome::Retry { .. }),
                "{name}: {outcome:?}"
            ),
            _ => assert!(
                matches!(outcome, FailOutcome::Dead { .. }),
                "{name}: {outcome:?}"
            ),
        }
    }
    let gone = dead_jobs(s).await;
    assert_eq!(gone.len(), 1, "{name}");
    assert_eq!(gone[0].waits, 2, "{name}");
    assert!(
        gone[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("gave up after 2 waits"),
        "{name}"
    );
}

/// A job's own enqueue leaves a dead entity alone (no loop); a change of its row supersedes
/// the dead job: still one job, pending again.
async fn a_change_of_its_row_supersedes_the_dead_job(db: &TestDb) {
    let (s, name) = (&db.store, db.name);
    assert!(
        !s.enqueue(0, "user", "w1", now_ms()).await.unwrap(),
        "{name}"
    );
    db.plain
        .execute("INSERT INTO sys_user (id, username, realname, status, del_flag) VALUES ('w1', 'waiter', 'W', 1, 0)")
        .await
        .unwrap();
    s.changes_to_jobs(
        100,
        &[0],
        dingsync::job::job_rows,
        dingsync::store::changes::GapRules {
            hold_ms: 0,
            keep_ms: 60_000,
        },
    )
    .await
    .unwrap();
    let all = s.list_jobs(&JobFilter::default()).await.unwrap();
    let w1: Vec<_> = all.iter().filter(|j| j.entity_key == "w1").collect();
    assert_eq!(w1.len(), 1, "{name}: {all:?}");
    assert_eq!(w1[0].state, "pending", "{name}");
    assert!(s.dead_keys(0, "user").await.unwrap().is_empty(), "{name}");
}

/// Dead jobs are purged after the retention, like done ones.
async fn dead_jobs_are_purged(s: &Store, name: &str) {
    let job = s
        .claim("w", 1, Duration::from_secs(30), None)
        .await
        .unwrap()
        .pop()
        .unwrap();
    s.fail(job.id, "w", "errcode 60009 refused", true, &policy())
        .await
        .unwrap();
    assert_eq!(dead_jobs(s).await.len(), 1, "{name}");
    assert_eq!(
        s.purge_finished(now_ms() - 60_000).await.unwrap(),
        0,
        "{name}: too young"
    );
    assert_eq!(s.purge_finished(now_ms() + 1).await.unwrap(), 1, "{name}");
    assert!(dead_jobs(s).await.is_empty(), "{name}");
}

#[tokio::test]
async fn an_entity_has_one_dead_job_waits_are_bounded_and_dead_jobs_are_purged() {
    let waits = WaitPolicy {
        max_waits: 2,
        cap: Duration::from_millis(1),
        counted: true,
    };
    for db in common::initialised_dbs().await {
        let (s, name) = (&db.store, db.name);
        waits_end_in_a_dead_job(s, name, &waits).await;
        a_change_of_its_row_supersedes_the_dead_job(&db).await;
        dead_jobs_are_purged(s, name).await;
    }
}

/// The department tree kept in memory (`Store::dept_rows`) is read again after any write to
/// a department or a department's snapshot — by JeecgBoot (the plain connection) or by
/// dingsync — and not after a user's snapshot changes.
#[tokio::test]
async fn the_department_tree_is_read_again_after_any_write_to_it() {
    for db in common::initialised_dbs().await {
        let name = db.name;
        let ptr = |rows: &std::sync::Arc<dingsync::store::departments::DeptRows>| {
            std::sync::Arc::as_ptr(rows) as usize
        };
        let first = db.store.dept_rows(0).await.unwrap();
        assert!(first.depts.is_empty(), "{name}");
        let same = db.store.dept_rows(0).await.unwrap();
        assert_eq!(
            ptr(&first),
            ptr(&same),
            "{name}: nothing changed, nothing read"
        );
        db.plain
            .execute("INSERT INTO sys_depart (id, parent_id, depart_name, depart_order, org_category, org_code, del_flag) VALUES ('d1', '', 'A', 1, '1', 'A01', '0')")
            .await
            .unwrap();
        let after_insert = db.store.dept_rows(0).await.unwrap();
        assert_eq!(
            after_insert.depts.len(),
            1,
            "{name}: JeecgBoot's insert seen"
        );
        db.store.set_ding_identifier("d1", Some(42)).await.unwrap();
        let linked = db.store.dept_rows(0).await.unwrap();
        assert_eq!(
            linked.depts[0].ding_identifier,
            Some(42),
            "{name}: dingsync's own (marked) write seen"
        );
        db.store
            .put_snapshot(0, "dept", "d1", "42", "{}")
            .await
            .unwrap();
        let with_snapshot = db.store.dept_rows(0).await.unwrap();
        assert_eq!(with_snapshot.snapshots.len(), 1, "{name}");
        db.store
            .put_snapshot(0, "user", "u1", "lihua", "{}")
            .await
            .unwrap();
        let after_user = db.store.dept_rows(0).await.unwrap();
        assert_eq!(
            ptr(&with_snapshot),
            ptr(&after_user),
            "{name}: a user's snapshot leaves the tree alone"
        );
        db.plain
            .execute("UPDATE sys_depart SET depart_name = 'B' WHERE id = 'd1'")
            .await
            .unwrap();
        assert_eq!(
            db.store.dept_rows(0).await.unwrap().depts[0].name,
            "B",
            "{name}"
        );
        db.store.delete_snapshot(0, "dept", "d1").await.unwrap();
        assert!(
            db.store.dept_rows(0).await.unwrap().snapshots.is_empty(),
            "{name}"
        );
        db.plain
            .execute("DELETE FROM sys_depart WHERE id = 'd1'")
            .await
            .unwrap();
        assert!(
            db.store.dept_rows(0).await.unwrap().depts.is_empty(),
            "{name}"
        );
    }
}

/// Two creators of one DingTalk department (a pull job and a full pull, or a department's job
/// and its child's): one local row, and both get it.
#[tokio::test]
async fn one_dingtalk_department_is_created_locally_once() {
    for db in common::initialised_dbs().await {
        let name = db.name;
        let new = dingsync::jeecg::NewDept {
            name: "并发".into(),
            parent_id: None,
            order: 1,
            ding_identifier: 777,
            tenant_id: 0,
        };
        let (a, b) = tokio::join!(
            db.store.insert_department(&new),
            db.store.insert_department(&new)
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a.id, b.id, "{name}");
        assert_eq!(
            count(
                &db.store,
                "SELECT COUNT(*) FROM sys_depart WHERE ding_identifier = '777'"
            )
            .await,
            1,
            "{name}"
        );
    }
}

/// A link record of `user` to `userid` with its base, in tenant 5.
fn link_write(user: &str, userid: &str) -> LinkWrite {
    LinkWrite {
        link: Link {
            user_id: user.into(),
            userid: userid.into(),
            unionid: None,
            tenant_id: 5,
        },
        realname: user.to_uppercase(),
        snapshot: SnapshotWrite {
            tenant: 5,
            entity: "user",
            local_id: user.into(),
            ding_id: userid.into(),
            base: "{}".into(),
        },
    }
}

/// Link records of `(user, userid)` pairs in tenant 0, which owns every row.
fn in_tenant_0(pairs: &[(&str, &str)]) -> Vec<LinkWrite> {
    pairs
        .iter()
        .map(|(u, x)| {
            let mut w = link_write(u, x);
            w.link.tenant_id = 0;
            w.snapshot.tenant = 0;
            w
        })
        .collect()
}

/// In tenant 0, which owns every row: c takes over tenant 9's row of H and f gets a new one
/// (in one batch); then a moves to Z while b takes X (row by row: both look at a's row).
async fn a_batch_moves_takes_over_and_adds_rows(db: &TestDb) {
    let name = db.name;
    db.plain
        .execute("INSERT INTO sys_third_account (id, sys_user_id, third_user_id, third_type, tenant_id, del_flag, status) VALUES \
                  ('r1', 'a', 'X', 'dingtalk', 0, 0, 1), ('r2', 'other', 'H', 'dingtalk', 9, 0, 1)")
        .await
        .unwrap();
    for pairs in [[("c", "H"), ("f", "F")], [("a", "Z"), ("b", "X")]] {
        let saved: Vec<LinkSaved> = db
            .store
            .save_links_and_bases(&in_tenant_0(&pairs))
            .await
            .unwrap()
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(saved, [LinkSaved::Written; 2], "{name}: {pairs:?}");
    }
    let rows: Vec<(String, String)> = db
        .plain
        .fetch_rows(
            "SELECT sys_user_id, third_user_id FROM sys_third_account ORDER BY sys_user_id",
            &[],
        )
        .await
        .unwrap();
    let pairs: Vec<(&str, &str)> = rows.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    assert_eq!(
        pairs,
        [("a", "Z"), ("b", "X"), ("c", "H"), ("f", "F")],
        "{name}"
    );
    let bases = "SELECT COUNT(*) FROM dingsync_snapshot WHERE entity = 'user'";
    assert_eq!(count(&db.plain, bases).await, 4, "{name}");
}

/// A userid that differs from a row's only in case is that row's on MariaDB (its
/// collation), another on SQLite and PostgreSQL: in a batch as one by one.
async fn a_userid_differing_in_case_as_one_by_one(db: &TestDb) {
    let name = db.name;
    db.plain
        .execute("INSERT INTO sys_third_account (id, sys_user_id, third_user_id, third_type, tenant_id, del_flag, status) VALUES ('r3', 'g', 'CASE', 'dingtalk', 0, 0, 1)")
        .await
        .unwrap();
    let saved = db
        .store
        .save_links_and_bases(&in_tenant_0(&[("g2", "case"), ("h", "H2")]))
        .await
        .unwrap();
    assert!(saved.iter().all(Result::is_ok), "{name}: {saved:?}");
    let of =
        |user: &str| format!("SELECT COUNT(*) FROM sys_third_account WHERE sys_user_id = '{user}'");
    assert_eq!(
        count(&db.plain, &of("g")).await,
        i64::from(name != "mariadb"),
        "{name}"
    );
    assert_eq!(count(&db.plain, &of("g2")).await, 1, "{name}");
}

/// In tenant 7, a userid another tenant's row holds is answered HeldBy, that row kept.
async fn a_userid_held_by_another_tenant_is_answered_held_by(db: &TestDb) {
    let name = db.name;
    let held = db
        .store
        .save_links_and_bases(&[link_write("d", "X"), link_write("e", "Q")].map(|mut w| {
            w.link.tenant_id = 7;
            w.snapshot.tenant = 7;
            w
        }))
        .await
        .unwrap();
    let held: Vec<LinkSaved> = held.into_iter().map(Result::unwrap).collect();
    assert_eq!(held, [LinkSaved::HeldBy(0), LinkSaved::Written], "{name}");
    assert_eq!(
        count(&db.plain, "SELECT COUNT(*) FROM sys_third_account WHERE sys_user_id = 'b' AND third_user_id = 'X'").await,
        1,
        "{name}: the holding row is left alone"
    );
}

/// A batch of link records decides each row as the single-row path would, one after the
/// other: user a's link moves from userid X to Z while user b is linked to X in the same
/// batch — a keeps its row (now Z), b gets a row of its own (X), both with their bases; a
/// userid held by another tenant's row is answered `HeldBy` and that row left alone.
#[tokio::test]
async fn a_batch_of_links_writes_what_one_by_one_would() {
    for db in common::initialised_dbs().await {
        a_batch_moves_takes_over_and_adds_rows(&db).await;
        a_userid_differing_in_case_as_one_by_one(&db).await;
        a_userid_held_by_another_tenant_is_answered_held_by(&db).await;
    }
}

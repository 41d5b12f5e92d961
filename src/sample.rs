//! The sample organisation, written for the project from JeecgBoot's schema (not copied from
//! its seed rows): two companies, each with a 研发部, three levels of departments, a post, a
//! deleted department, a person in both companies, one frozen and one deleted user, and a
//! position. `dingsync demo` loads it, and so do the tests that run the product end to end
//! (`tests/sync.rs`), through [`load`]: one fixture, so that what the demo shows is what the
//! tests check.

use crate::store::{Store, StoreResult};

/// The rows, as JeecgBoot's own code would write them.
const STATEMENTS: &[&str] = &[
    "INSERT INTO sys_depart (id, parent_id, depart_name, depart_order, org_category, org_code, del_flag, tenant_id) VALUES \
     ('d-xh', '', '星河科技', 1, '1', 'A01', '0', 0), ('d-xh-rd', 'd-xh', '研发部', 1, '2', 'A01A01', '0', 0), \
     ('d-xh-rd-fe', 'd-xh-rd', '前端组', 1, '2', 'A01A01A01', '0', 0), ('d-xh-fin', 'd-xh', '财务部', 2, '2', 'A01A02', '0', 0), \
     ('d-xh-rd-mgr', 'd-xh-rd', '研发经理', 0, '3', 'A01A01A02', '0', 0), ('d-yf', '', '云帆咨询', 2, '1', 'A02', '0', 0), \
     ('d-yf-mkt', 'd-yf', '市场部', 1, '2', 'A02A01', '0', 0), ('d-yf-rd', 'd-yf', '研发部', 2, '2', 'A02A02', '0', 0), \
     ('d-yf-old', 'd-yf', '旧部门', 3, '2', 'A02A03', '1', 0)",
    "INSERT INTO sys_user (id, username, realname, phone, email, work_no, status, del_flag) VALUES \
     ('u-admin', 'admin', '管理员', '13900000001', 'admin@example.com', 'E0001', 1, 0), \
     ('u-li', 'lihua', '李华', '13900000002', 'lihua@example.com', 'E0002', 1, 0), \
     ('u-wang', 'wangfang', '王芳', '13900000003', NULL, 'E0003', 1, 0), \
     ('u-zhao', 'zhaolei', '赵磊', '13900000004', NULL, 'E0004', 2, 0), \
     ('u-chen', 'chenjing', '陈静', '13900000005', NULL, 'E0005', 1, 0), \
     ('u-sun', 'sunyang', '孙阳', '13900000006', NULL, 'E0006', 1, 0), \
     ('u-gone', 'zhoujie', '周杰', '13900000007', NULL, 'E0007', 1, 1)",
    "INSERT INTO sys_user_depart (ID, user_id, dep_id) VALUES ('m1', 'u-li', 'd-xh-rd'), ('m2', 'u-li', 'd-yf-rd'), \
     ('m3', 'u-wang', 'd-xh-fin'), ('m4', 'u-zhao', 'd-xh-rd-fe'), ('m5', 'u-chen', 'd-yf-mkt'), ('m6', 'u-sun', 'd-xh-rd-mgr')",
    "INSERT INTO sys_position (id, code, name) VALUES ('p1', 'dev', '工程师')",
    "INSERT INTO sys_user_position (id, user_id, position_id) VALUES ('up1', 'u-li', 'p1'), ('up2', 'u-zhao', 'p1')",
];

/// What the sample holds, for people.
pub const SUMMARY: &str = "9 departments (1 post, 1 deleted), 7 users (1 deleted)";

/// The departments a push creates in DingTalk: every one but the post and the deleted one.
pub const PUSHED_DEPARTMENTS: usize = 7;

/// The users a push creates in DingTalk, by username: every one but the deleted one (the
/// frozen one too, and the one with no department, at the root).
pub const PUSHED_USERS: &[&str] = &[
    "admin", "chenjing", "lihua", "sunyang", "wangfang", "zhaolei",
];

/// Writes the sample organisation into `store`'s JeecgBoot tables (which must exist and be
/// empty of these ids). Write it through a connection that is not dingsync's writer, so that
/// the change log sees it as JeecgBoot's.
pub async fn load(store: &Store) -> StoreResult<()> {
    for statement in STATEMENTS {
        store.execute(statement).await?;
    }
    Ok(())
}

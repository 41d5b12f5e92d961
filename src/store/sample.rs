//! The sample organisation (`crate::sample` says what it holds) and the edits `dingsync demo`
//! makes in JeecgBoot's place, as SQL in the store like every statement dingsync runs. Run
//! them through a connection that is not dingsync's writer, so that the change log records
//! them as JeecgBoot's own writes.

use super::{Store, StoreResult};

/// The rows, as JeecgBoot's own code would write them.
const ORGANISATION: &[&str] = &[
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

/// A JeecgBoot edit the demo makes, as JeecgBoot's own code would make it.
#[derive(Clone, Copy, Debug)]
pub enum SampleEdit {
    /// 李华 (u-li) renamed 李华(研发) in JeecgBoot.
    RenameLihua,
    /// The announcement ann-1 (周五团建) to 李华, 王芳 and 陈静, published.
    PublishOuting,
    /// ann-1 revoked.
    RevokeOuting,
}

impl SampleEdit {
    fn statement(self) -> &'static str {
        match self {
            Self::RenameLihua => "UPDATE sys_user SET realname = '李华(研发)' WHERE id = 'u-li'",
            Self::PublishOuting => "INSERT INTO sys_announcement (id, titile, msg_abstract, msg_type, user_ids, send_status, del_flag, tenant_id) VALUES ('ann-1', '周五团建', '下午三点出发', 'USER', 'u-li,u-wang,u-chen,', '1', '0', 0)",
            Self::RevokeOuting => "UPDATE sys_announcement SET send_status = '2' WHERE id = 'ann-1'",
        }
    }
}

impl Store {
    /// Writes the sample organisation into JeecgBoot's tables (which must exist and hold none
    /// of its ids), one statement at a time, in order.
    pub async fn load_sample_org(&self) -> StoreResult<()> {
        for statement in ORGANISATION {
            self.execute(statement).await?;
        }
        Ok(())
    }

    /// Makes `edit` in JeecgBoot's tables.
    pub async fn sample_edit(&self, edit: SampleEdit) -> StoreResult<()> {
        self.execute(edit.statement()).await.map(drop)
    }
}

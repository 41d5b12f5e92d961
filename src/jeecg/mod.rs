//! JeecgBoot's side of the sync as domain types: users, departments, links, org codes and
//! password hashing. No SQL here (that is `store`), no DingTalk (`dingtalk`).

pub mod dept_index;
pub mod orgcode;
pub mod password;
pub mod types;

pub use dept_index::DeptIndex;
pub use types::*;

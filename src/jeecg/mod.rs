//! JeecgBoot's side of the sync as domain types: users, departments, links, org codes and
//! password hashing. No SQL here (that is `store`), no DingTalk (`dingtalk`).

pub mod orgcode;
pub mod password;
pub mod types;

pub use types::*;

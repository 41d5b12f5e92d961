//! The sync engine: the guide's four rules (push/pull × users/departments).
//!
//! `read` gathers the local view (store) and the remote view (DingTalk lists); `plan` turns
//! them into an ordered list of operations without any I/O; `apply` executes a plan with
//! the client and the store, recording links, snapshots and one run row. A failing entity
//! is recorded with its reason and the rest continue.

pub mod apply;
pub(crate) mod around;
pub mod contact;
pub mod job;
pub mod model;
pub mod plan;
pub mod pull_job;
pub mod pull_run;
pub mod read;
pub mod remote_users;
pub mod run;
mod written;

pub use model::*;

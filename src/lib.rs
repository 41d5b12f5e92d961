//! dingsync: keeps a JeecgBoot back office and DingTalk in step.
//!
//! The binary `dingsync` is thin: it parses the command line ([`cli`]) and calls into this
//! library. See ARCHITECTURE.md for the map.
#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod daemon;
pub mod dingtalk;
pub mod exit;
pub mod jeecg;
pub mod job;
pub mod logging;
pub mod messages;
pub mod metrics;
pub mod sample;
pub mod secret;
pub mod sim;
pub mod store;
pub mod sync;

#[cfg(test)]
mod docs_tests;
#[cfg(test)]
mod house_tests;

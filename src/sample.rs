//! The sample organisation, written for the project from JeecgBoot's schema (not copied from
//! its seed rows): two companies, each with a 研发部, three levels of departments, a post, a
//! deleted department, a person in both companies, one frozen and one deleted user, and a
//! position. `dingsync demo` loads it, and so do the tests that run the product end to end
//! (`tests/sync.rs`), through [`Store::load_sample_org`](crate::store::Store::load_sample_org)
//! (its rows are SQL, so they live in `store/sample.rs`): one fixture, so that what the demo
//! shows is what the tests check. This module says what the fixture holds.

/// What the sample holds, for people.
pub const SUMMARY: &str = "9 departments (1 post, 1 deleted), 7 users (1 deleted)";

/// The departments a push creates in DingTalk: every one but the post and the deleted one.
pub const PUSHED_DEPARTMENTS: usize = 7;

/// The users a push creates in DingTalk, by username: every one but the deleted one (the
/// frozen one too, and the one with no department, at the root).
pub const PUSHED_USERS: &[&str] = &[
    "admin", "chenjing", "lihua", "sunyang", "wangfang", "zhaolei",
];

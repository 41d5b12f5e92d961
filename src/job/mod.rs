//! Jobs: the daemon's unit of work. This module owns the job kinds, what a job gets to work
//! with ([`JobCtx`]), what becomes of it ([`JobOutcome`]), the dispatch to the handlers
//! (`sync` pushes users and departments and pulls the ones DingTalk's events name, `messages`
//! delivers announcements and outbox rows), which jobs a change-log row asks for
//! ([`jobs_for`]) and which an event asks for ([`event_jobs`]). It decides no sync rule: a
//! handler plans with the same planner as a full run, scoped to its entity.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::config::{Config, TenantConfig, TenantId};
use crate::dingtalk::DingTalkClient;
use crate::store::changes::Change;
use crate::store::Store;
use crate::sync::model::Summary;

/// What a job does; stored in `dingsync_job.kind` as [`JobKind::as_str`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Push one user (key: `sys_user.id`).
    User,
    /// Push one department (key: `sys_depart.id`).
    Dept,
    /// Deliver or recall one announcement (key: `sys_announcement.id`).
    Announce,
    /// Deliver one outbox row (key: `dingsync_outbox.id`).
    Outbox,
    /// Pull one DingTalk user (key: the DingTalk userid), asked for by an event.
    PullUser,
    /// Pull one DingTalk department (key: its dept_id), asked for by an event.
    PullDept,
    /// A full pull (key: `all`), asked for by an address-book event that names no one.
    PullAll,
}

impl JobKind {
    /// Every kind.
    pub const ALL: [JobKind; 7] = [
        JobKind::User,
        JobKind::Dept,
        JobKind::Announce,
        JobKind::Outbox,
        JobKind::PullUser,
        JobKind::PullDept,
        JobKind::PullAll,
    ];

    /// The name stored in the queue.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::User => "user",
            JobKind::Dept => "dept",
            JobKind::Announce => "announce",
            JobKind::Outbox => "outbox",
            JobKind::PullUser => "pull_user",
            JobKind::PullDept => "pull_dept",
            JobKind::PullAll => "pull_all",
        }
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A kind name the queue holds that this dingsync does not know.
#[derive(Debug, thiserror::Error)]
#[error("unknown job kind {0:?}")]
pub struct UnknownKind(String);

impl FromStr for JobKind {
    type Err = UnknownKind;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        JobKind::ALL
            .into_iter()
            .find(|k| k.as_str() == text)
            .ok_or_else(|| UnknownKind(text.to_string()))
    }
}

/// What executing a job needs.
pub struct JobCtx<'a> {
    /// The database.
    pub store: &'a Store,
    /// DingTalk for the job's tenant.
    pub client: &'a DingTalkClient,
    /// The configuration.
    pub config: &'a Config,
    /// The job's tenant.
    pub tenant: &'a TenantConfig,
}

/// What became of a job.
#[derive(Debug)]
pub enum JobOutcome {
    /// Finished (possibly with nothing to do).
    Done(Summary),
    /// Not yet possible (something it needs is on its way); looked at again after `delay`,
    /// doubling each time up to `queue.wait_cap`, and given up (dead) after
    /// `queue.max_waits` waits.
    Wait {
        /// When to look again (the first time).
        delay: Duration,
        /// Why.
        reason: String,
    },
    /// Not finished: looked at again after `delay` (DingTalk is still working on it, or
    /// a revoke came while sending). Not a wait on something missing, so never counted
    /// towards `queue.max_waits`; bounded by what it polls (a send's result is kept 24 h).
    Poll {
        /// When to look again.
        delay: Duration,
        /// Why.
        reason: String,
    },
    /// Failed.
    Failed {
        /// No point retrying without a change.
        permanent: bool,
        /// Why.
        reason: String,
    },
}

/// The longest poll interval.
pub const POLL_CAP: Duration = Duration::from_secs(30);

/// Executes one job of kind `kind` (as stored) for `key`.
pub async fn execute(ctx: &JobCtx<'_>, kind: &str, key: &str) -> JobOutcome {
    let kind = match kind.parse::<JobKind>() {
        Ok(kind) => kind,
        Err(error) => {
            return JobOutcome::Failed {
                permanent: true,
                reason: error.to_string(),
            }
        }
    };
    match kind {
        JobKind::User => crate::sync::job::push_user(ctx, key).await,
        JobKind::Dept => crate::sync::job::push_dept(ctx, key).await,
        JobKind::Announce => crate::messages::announce_job(ctx, key).await,
        JobKind::Outbox => crate::messages::outbox_job(ctx, key).await,
        JobKind::PullUser => crate::sync::pull_job::pull_user(ctx, key).await,
        JobKind::PullDept => crate::sync::pull_job::pull_dept(ctx, key).await,
        JobKind::PullAll => crate::sync::pull_job::pull_all(ctx).await,
    }
}

/// The jobs a change row asks for: users (also for their memberships and positions) in
/// every tenant, and in the tenant they joined or left; departments, announcements and
/// outbox rows in their own tenant only (tenant 0, which never stands beside another, owns
/// every row).
pub fn jobs_for(change: &Change, tenants: &[TenantId]) -> Vec<(TenantId, JobKind, String)> {
    type Reach = fn(TenantId, Option<TenantId>) -> bool;
    let every: Reach = |_, _| true;
    let own: Reach = |tenant, row| tenant == 0 || Some(tenant) == row;
    let (kind, reach) = match change.table_name.as_str() {
        "sys_user" | "sys_user_depart" | "sys_user_position" => (JobKind::User, every),
        "sys_user_tenant" => (JobKind::User, own),
        "sys_depart" => (JobKind::Dept, own),
        "sys_announcement" => (JobKind::Announce, own),
        "dingsync_outbox" => (JobKind::Outbox, own),
        _ => return Vec::new(),
    };
    tenants
        .iter()
        .filter(|t| reach(**t, change.tenant_id))
        .map(|t| (*t, kind, change.row_key.clone()))
        .collect()
}

/// The pull jobs a DingTalk address-book event asks for: one per user or department it names
/// (the event's own data is not enough to apply: it lacks the mobile and the departments, so
/// the job reads the entity); one that names nobody asks for a full pull. Other events ask
/// for nothing.
pub fn event_jobs(
    change: Option<&crate::dingtalk::stream::AddressBookChange>,
) -> Vec<(&'static str, String)> {
    use crate::dingtalk::stream::AddressBookChange;
    let all = || vec![(JobKind::PullAll.as_str(), "all".to_string())];
    match change {
        Some(AddressBookChange::Users { userids, .. }) if userids.is_empty() => all(),
        Some(AddressBookChange::Depts { dept_ids, .. }) if dept_ids.is_empty() => all(),
        Some(AddressBookChange::Users { userids, .. }) => userids
            .iter()
            .map(|id| (JobKind::PullUser.as_str(), id.clone()))
            .collect(),
        Some(AddressBookChange::Depts { dept_ids, .. }) => dept_ids
            .iter()
            .map(|id| (JobKind::PullDept.as_str(), id.to_string()))
            .collect(),
        None => Vec::new(),
    }
}

/// [`jobs_for`] as the change-log reader takes it (kinds as stored).
pub fn job_rows(change: &Change, tenants: &[TenantId]) -> Vec<(TenantId, &'static str, String)> {
    jobs_for(change, tenants)
        .into_iter()
        .map(|(tenant, kind, key)| (tenant, kind.as_str(), key))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(table: &str, tenant: Option<i64>) -> Change {
        Change {
            id: 1,
            table_name: table.into(),
            row_key: "k".into(),
            op: "I".into(),
            tenant_id: tenant,
            changed_at: 0,
        }
    }

    #[test]
    fn each_change_asks_for_jobs_in_the_tenants_it_concerns() {
        let reach = |tenants: &[i64], table: &str, tenant: Option<i64>| -> Vec<(i64, JobKind)> {
            jobs_for(&change(table, tenant), tenants)
                .into_iter()
                .map(|(t, kind, _)| (t, kind))
                .collect()
        };
        let many = [7, 8];
        assert_eq!(
            reach(&many, "sys_user_depart", None),
            vec![(7, JobKind::User), (8, JobKind::User)]
        );
        assert_eq!(
            reach(&many, "sys_user_tenant", Some(7)),
            vec![(7, JobKind::User)]
        );
        assert_eq!(
            reach(&many, "sys_depart", Some(8)),
            vec![(8, JobKind::Dept)]
        );
        assert!(reach(&many, "sys_announcement", Some(9)).is_empty());
        assert_eq!(
            reach(&many, "dingsync_outbox", Some(7)),
            vec![(7, JobKind::Outbox)]
        );
        // Tenant 0 stands alone and owns every row.
        assert_eq!(reach(&[0], "sys_depart", Some(8)), vec![(0, JobKind::Dept)]);
        assert_eq!(
            reach(&[0], "sys_announcement", None),
            vec![(0, JobKind::Announce)]
        );
        assert!(reach(&many, "sys_role", None).is_empty());
    }

    #[test]
    fn kinds_round_trip_through_their_stored_names() {
        for kind in JobKind::ALL {
            assert_eq!(kind.as_str().parse::<JobKind>().unwrap(), kind);
        }
        assert!("pull".parse::<JobKind>().is_err());
    }
}

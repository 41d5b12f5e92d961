//! The three-way merge: each synced field compared with its base — the value last agreed with
//! DingTalk — so that a side that changed is told from a side that is stale. Only the side
//! that changed is propagated; when both changed, the configured side wins. With no base (an
//! entity never synced, or synced before schema v5) each direction takes its own side, as
//! before bases existed. Pure: used by push and pull plans alike.

use serde::Serialize;

/// A side of the sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// The local database (the system of record in JeecgBoot's guide).
    Jeecgboot,
    /// DingTalk.
    Dingtalk,
}

/// How differences are settled for one tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Who wins when both sides changed a field (`[sync] conflict`).
    pub prefer: Side,
    /// A side that always wins for users: JeecgBoot when the tenant's pull is off (a push
    /// restores its values), DingTalk when its push is off or `[push] users = false` (a
    /// local edit can never be sent, so the pull takes DingTalk's).
    pub master: Option<Side>,
    /// The same for departments (`[push] departments = false` makes DingTalk their master).
    pub dept_master: Option<Side>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            prefer: Side::Jeecgboot,
            master: None,
            dept_master: None,
        }
    }
}

impl Policy {
    /// The policy department fields are judged by.
    pub fn depts(&self) -> Self {
        Self {
            master: self.dept_master,
            ..*self
        }
    }
}

/// Which side changed a field since its base.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Changed {
    /// JeecgBoot changed it; DingTalk still holds the base.
    Jeecgboot,
    /// DingTalk changed it (an admin in its console); JeecgBoot still holds the base.
    Dingtalk,
    /// Both, differently: a conflict.
    Both,
    /// No base to tell (first sync).
    Unknown,
    /// A master side decides whatever changed.
    Master,
}

/// The verdict on one field that differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Who changed it.
    pub changed: Changed,
    /// Whose value stands; `None` with no base: each direction takes its own side.
    pub winner: Option<Side>,
}

impl Verdict {
    /// Whether the push sends JeecgBoot's value.
    pub fn push(self) -> bool {
        self.winner.is_none_or(|w| w == Side::Jeecgboot)
    }

    /// Whether the pull writes DingTalk's value.
    pub fn pull(self) -> bool {
        self.winner.is_none_or(|w| w == Side::Dingtalk)
    }

    /// Whether this is a conflict (both changed).
    pub fn conflict(self) -> bool {
        self.changed == Changed::Both
    }
}

/// Judges one field: `None` when the sides agree, else who changed it and who wins.
pub fn judge<T: PartialEq + ?Sized>(
    local: &T,
    remote: &T,
    base: Option<&T>,
    policy: &Policy,
) -> Option<Verdict> {
    if local == remote {
        return None;
    }
    if let Some(master) = policy.master {
        return Some(Verdict {
            changed: Changed::Master,
            winner: Some(master),
        });
    }
    Some(match base {
        None => Verdict {
            changed: Changed::Unknown,
            winner: None,
        },
        Some(base) if local == base => Verdict {
            changed: Changed::Dingtalk,
            winner: Some(Side::Dingtalk),
        },
        Some(base) if remote == base => Verdict {
            changed: Changed::Jeecgboot,
            winner: Some(Side::Jeecgboot),
        },
        Some(_) => Verdict {
            changed: Changed::Both,
            winner: Some(policy.prefer),
        },
    })
}

/// One field of an entity whose sides differ, as a plan shows it: who changed it, what goes
/// where.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldMerge {
    /// The field (`name`, `mobile`, `depts`, `parent`, ...).
    pub field: String,
    /// JeecgBoot's value.
    pub jeecgboot: String,
    /// DingTalk's value.
    pub dingtalk: String,
    /// The base, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// Who changed it.
    pub changed: Changed,
    /// What this plan does with it: `push` (sent to DingTalk), `pull` (written locally),
    /// or why it does nothing (`left for the pull`, `left for the push`, `DingTalk cannot
    /// change it`, `hidden by DingTalk`, ...).
    pub action: String,
    /// This plan applies the winner of a conflict: logged as `sync.conflict`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub resolves_conflict: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(prefer: Side, master: Option<Side>) -> Policy {
        Policy {
            prefer,
            master,
            dept_master: master,
        }
    }

    /// (local, remote, base) -> (changed, push sends, pull writes).
    type Case<'a> = (
        &'a str,
        &'a str,
        Option<&'a str>,
        Option<(Changed, bool, bool)>,
    );

    #[test]
    fn each_field_class_is_judged_against_its_base() {
        let both = policy(Side::Jeecgboot, None);
        // (local, remote, base) -> (changed, push sends, pull writes)
        let cases: &[Case] = &[
            ("a", "a", Some("x"), None),
            (
                "new",
                "a",
                Some("a"),
                Some((Changed::Jeecgboot, true, false)),
            ),
            (
                "a",
                "new",
                Some("a"),
                Some((Changed::Dingtalk, false, true)),
            ),
            ("l", "r", Some("a"), Some((Changed::Both, true, false))),
            ("l", "r", None, Some((Changed::Unknown, true, true))),
        ];
        for (local, remote, base, expected) in cases {
            let verdict = judge(*local, *remote, *base, &both);
            let got = verdict.map(|v| (v.changed, v.push(), v.pull()));
            assert_eq!(got, *expected, "{local} / {remote} / {base:?}");
        }
        // DingTalk wins conflicts when configured so.
        let dingtalk = policy(Side::Dingtalk, None);
        let verdict = judge("l", "r", Some("a"), &dingtalk).unwrap();
        assert!(verdict.conflict() && verdict.pull() && !verdict.push());
        // Lists compare as values (department lists are sorted before).
        let verdict = judge(&[1, 2][..], &[1, 3][..], Some(&[1, 2][..]), &both).unwrap();
        assert_eq!(verdict.changed, Changed::Dingtalk);
    }

    #[test]
    fn a_master_side_decides_every_difference() {
        for (master, push, pull) in [
            (Side::Jeecgboot, true, false),
            (Side::Dingtalk, false, true),
        ] {
            let p = policy(Side::Jeecgboot, Some(master));
            for base in [None, Some("a"), Some("l"), Some("r")] {
                let verdict = judge("l", "r", base, &p).unwrap();
                assert_eq!(
                    (verdict.push(), verdict.pull()),
                    (push, pull),
                    "{master:?} {base:?}"
                );
            }
            assert!(judge("same", "same", Some("x"), &p).is_none());
        }
    }
}

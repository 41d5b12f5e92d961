//! DingTalk's users as a run holds them: packed, so that a 100,000-user organisation fits in
//! about 14 MiB. All users' text fields live end to end in one string and all their
//! department ids in one vector; each user is a 44-byte entry of offsets (about 140 bytes a
//! user with its text, departments and mobile index, instead of ~400 for a [`DtUser`]). A
//! few large buffers also leave no holes in the allocator: with one allocation per user,
//! mixed with a run's short-lived ones, a 100,000-user re-push peaked at 68 MiB; with the
//! shared buffers, at 46.5 MiB. Entries are sorted by userid (lookups by binary search); a
//! sorted `(hash of mobile, index)` table finds users by mobile. Lookups unpack a
//! [`DtUser`].

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use crate::dingtalk::types::DtUser;

use super::contact::mobile_key;

/// Text fields in packing order.
const FIELDS: usize = 8;
const USERID: usize = 0;
const MOBILE: usize = 3;

/// One user: where its fields and departments are in the shared buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    /// Start of its text; field `i` ends at `text + ends[i]`.
    text: u32,
    ends: [u32; FIELDS],
    /// Start and count of its department ids.
    depts: u32,
    dept_count: u16,
    active: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Buffers {
    text: String,
    depts: Vec<i64>,
}

impl Buffers {
    fn add(&mut self, user: &DtUser) -> Entry {
        let fields = [
            &user.userid,
            &user.unionid,
            &user.name,
            &user.mobile,
            &user.telephone,
            &user.job_number,
            &user.title,
            &user.email,
        ];
        // A run never holds 4 GiB of text nor a user in 65,536 departments (DingTalk: 100).
        let offset = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let start = self.text.len();
        let mut ends = [0u32; FIELDS];
        for (end, field) in ends.iter_mut().zip(fields) {
            self.text.push_str(field);
            *end = offset(self.text.len() - start);
        }
        let depts = self.depts.len();
        self.depts.extend_from_slice(&user.dept_id_list);
        Entry {
            text: offset(start),
            ends,
            depts: offset(depts),
            dept_count: u16::try_from(user.dept_id_list.len()).unwrap_or(u16::MAX),
            active: user.active,
        }
    }

    fn field(&self, entry: &Entry, index: usize) -> &str {
        let base = entry.text as usize;
        let start = if index == 0 {
            0
        } else {
            entry.ends[index - 1] as usize
        };
        self.text
            .get(base + start..base + entry.ends[index] as usize)
            .unwrap_or_default()
    }

    fn depts(&self, entry: &Entry) -> &[i64] {
        let start = entry.depts as usize;
        self.depts
            .get(start..start + usize::from(entry.dept_count))
            .unwrap_or_default()
    }

    fn unpack(&self, entry: &Entry) -> DtUser {
        let f = |i| self.field(entry, i).to_string();
        DtUser {
            userid: f(0),
            unionid: f(1),
            name: f(2),
            mobile: f(3),
            telephone: f(4),
            job_number: f(5),
            title: f(6),
            email: f(7),
            dept_id_list: self.depts(entry).to_vec(),
            active: entry.active,
        }
    }
}

fn hash_of(text: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

/// Every DingTalk user of a run, once, packed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoteUsers {
    buffers: Buffers,
    /// Sorted by userid.
    users: Vec<Entry>,
    by_mobile: Vec<(u64, u32)>,
}

/// Collects users as pages arrive; [`RemoteUsersBuilder::finish`] sorts and indexes.
#[derive(Debug, Default)]
pub struct RemoteUsersBuilder {
    buffers: Buffers,
    users: Vec<Entry>,
    /// Hash of userid -> index of the first user with it: a member of several departments
    /// is listed in each, and repeats are dropped as they come.
    seen: HashMap<u64, u32>,
}

impl RemoteUsersBuilder {
    /// Adds one listed user (a repeat of one already added is dropped).
    pub fn push(&mut self, user: DtUser) {
        let hash = hash_of(&user.userid);
        if let Some(&index) = self.seen.get(&hash) {
            if self.buffers.field(&self.users[index as usize], USERID) == user.userid {
                return;
            }
        }
        let index = u32::try_from(self.users.len()).unwrap_or(u32::MAX);
        self.seen.entry(hash).or_insert(index);
        let entry = self.buffers.add(&user);
        self.users.push(entry);
    }

    /// The finished list.
    pub fn finish(self) -> RemoteUsers {
        let Self {
            mut buffers,
            mut users,
            seen,
        } = self;
        drop(seen);
        users.sort_unstable_by(|a, b| buffers.field(a, USERID).cmp(buffers.field(b, USERID)));
        // Two users hashed alike are both kept above; an exact repeat of either goes here.
        users.dedup_by(|a, b| buffers.field(a, USERID) == buffers.field(b, USERID));
        users.shrink_to_fit();
        buffers.text.shrink_to_fit();
        buffers.depts.shrink_to_fit();
        let mut by_mobile: Vec<(u64, u32)> = users
            .iter()
            .enumerate()
            .filter(|(_, u)| !buffers.field(u, MOBILE).is_empty())
            .map(|(i, u)| {
                (
                    hash_of(&mobile_key(buffers.field(u, MOBILE))),
                    u32::try_from(i).unwrap_or(u32::MAX),
                )
            })
            .collect();
        by_mobile.sort_unstable();
        RemoteUsers {
            buffers,
            users,
            by_mobile,
        }
    }
}

impl From<Vec<DtUser>> for RemoteUsers {
    fn from(users: Vec<DtUser>) -> Self {
        let mut builder = RemoteUsersBuilder::default();
        for user in users {
            builder.push(user);
        }
        builder.finish()
    }
}

impl RemoteUsers {
    /// How many.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// None at all.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    fn index_of(&self, userid: &str) -> Option<usize> {
        self.users
            .binary_search_by(|u| self.buffers.field(u, USERID).cmp(userid))
            .ok()
    }

    /// Whether `userid` is a DingTalk user.
    pub fn contains(&self, userid: &str) -> bool {
        self.index_of(userid).is_some()
    }

    /// The position of `userid` in userid order (a compact key for per-user state).
    pub fn position(&self, userid: &str) -> Option<usize> {
        self.index_of(userid)
    }

    /// The user `userid`.
    pub fn get(&self, userid: &str) -> Option<DtUser> {
        self.index_of(userid)
            .map(|i| self.buffers.unpack(&self.users[i]))
    }

    /// The user whose mobile is `mobile` (never for an empty one).
    pub fn by_mobile(&self, mobile: &str) -> Option<DtUser> {
        if mobile.is_empty() {
            return None;
        }
        let key = mobile_key(mobile);
        let hash = hash_of(&key);
        let start = self.by_mobile.partition_point(|(h, _)| *h < hash);
        self.by_mobile[start..]
            .iter()
            .take_while(|(h, _)| *h == hash)
            .map(|(_, i)| &self.users[*i as usize])
            .find(|u| mobile_key(self.buffers.field(u, MOBILE)) == key)
            .map(|u| self.buffers.unpack(u))
    }

    /// Every user, unpacked one at a time, in userid order.
    pub fn iter(&self) -> impl Iterator<Item = DtUser> + '_ {
        self.users.iter().map(|u| self.buffers.unpack(u))
    }

    /// `(userid, departments)` of every user, without unpacking.
    pub fn memberships(&self) -> impl Iterator<Item = (&str, &[i64])> + '_ {
        self.users
            .iter()
            .map(|u| (self.buffers.field(u, USERID), self.buffers.depts(u)))
    }

    /// Users `start..start + len` in userid order, unpacked (a pull's slice).
    pub fn slice(&self, start: usize, len: usize) -> Vec<DtUser> {
        self.users
            .iter()
            .skip(start)
            .take(len)
            .map(|u| self.buffers.unpack(u))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(userid: &str, mobile: &str, depts: &[i64]) -> DtUser {
        DtUser {
            userid: userid.into(),
            unionid: format!("u-{userid}"),
            name: format!("名{userid}"),
            mobile: mobile.into(),
            telephone: String::new(),
            job_number: "7".into(),
            title: "title".into(),
            email: format!("{userid}@example.com"),
            dept_id_list: depts.to_vec(),
            active: true,
        }
    }

    #[test]
    fn packed_users_unpack_to_what_was_listed_once_each_and_are_found_by_mobile() {
        let b = user("b", "13800000002", &[2, 3]);
        let a = user("a", "13800000001", &[1]);
        let none = user("c", "", &[]);
        let users = RemoteUsers::from(vec![b.clone(), a.clone(), b.clone(), none.clone()]);
        assert_eq!(users.len(), 3, "the repeat of b is dropped");
        assert_eq!(
            users.iter().collect::<Vec<_>>(),
            vec![a.clone(), b.clone(), none.clone()]
        );
        assert_eq!(users.get("b"), Some(b.clone()));
        assert_eq!(users.get("zz"), None);
        assert_eq!(users.by_mobile("13800000001"), Some(a));
        assert_eq!(users.by_mobile(""), None, "an empty mobile matches nobody");
        assert_eq!(users.by_mobile("13800000003"), None);
        assert!(users.contains("c"));
        let members: Vec<(&str, &[i64])> = users.memberships().collect();
        assert_eq!(members[1], ("b", &[2, 3][..]));
        assert_eq!(users.slice(1, 5), vec![b, none]);
        assert_eq!(std::mem::size_of::<Entry>(), 44, "the module's figures");
    }
}

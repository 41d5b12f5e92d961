//! DingTalk's users as a run holds them: packed, so that a 100,000-user organisation fits in
//! a few tens of MiB. Each user is one string (its text fields end to end, with their end
//! offsets) and a boxed slice of department ids, about 150 bytes instead of the 400 a
//! [`DtUser`] takes. The list is sorted by userid (lookups by binary search) and a sorted
//! `(hash of mobile, index)` table finds users by mobile. Lookups unpack a [`DtUser`].

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use crate::dingtalk::types::DtUser;

/// Text fields in packing order.
const FIELDS: usize = 8;
const USERID: usize = 0;
const MOBILE: usize = 3;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Packed {
    text: Box<str>,
    ends: [u32; FIELDS],
    depts: Box<[i64]>,
    active: bool,
}

impl Packed {
    fn new(user: DtUser) -> Self {
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
        let mut text = String::with_capacity(fields.iter().map(|f| f.len()).sum());
        let mut ends = [0u32; FIELDS];
        for (end, field) in ends.iter_mut().zip(fields) {
            text.push_str(field);
            // DingTalk's fields are at most a few hundred bytes; a run never holds 4 GiB.
            *end = u32::try_from(text.len()).unwrap_or(u32::MAX);
        }
        Self {
            text: text.into_boxed_str(),
            ends,
            depts: user.dept_id_list.into_boxed_slice(),
            active: user.active,
        }
    }

    fn field(&self, index: usize) -> &str {
        let start = if index == 0 { 0 } else { self.ends[index - 1] } as usize;
        self.text
            .get(start..self.ends[index] as usize)
            .unwrap_or_default()
    }

    fn unpack(&self) -> DtUser {
        let f = |i| self.field(i).to_string();
        DtUser {
            userid: f(0),
            unionid: f(1),
            name: f(2),
            mobile: f(3),
            telephone: f(4),
            job_number: f(5),
            title: f(6),
            email: f(7),
            dept_id_list: self.depts.to_vec(),
            active: self.active,
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
    users: Vec<Packed>,
    by_mobile: Vec<(u64, u32)>,
}

/// Collects users as pages arrive; [`RemoteUsersBuilder::finish`] sorts, drops repeats (a
/// member of several departments is listed in each) and indexes.
#[derive(Debug, Default)]
pub struct RemoteUsersBuilder {
    users: Vec<Packed>,
    /// Hash of userid -> index of the first user with it (a third of a generated org's
    /// listings are repeats; they are dropped as they come, not held until the end).
    seen: HashMap<u64, u32>,
}

impl RemoteUsersBuilder {
    /// Adds one listed user (a repeat of one already added is dropped).
    pub fn push(&mut self, user: DtUser) {
        let hash = hash_of(&user.userid);
        if let Some(&index) = self.seen.get(&hash) {
            if self.users[index as usize].field(USERID) == user.userid {
                return;
            }
        }
        let index = u32::try_from(self.users.len()).unwrap_or(u32::MAX);
        self.seen.entry(hash).or_insert(index);
        self.users.push(Packed::new(user));
    }

    /// The finished list.
    pub fn finish(mut self) -> RemoteUsers {
        drop(self.seen);
        self.users
            .sort_unstable_by(|a, b| a.field(USERID).cmp(b.field(USERID)));
        self.users
            .dedup_by(|a, b| a.field(USERID) == b.field(USERID));
        self.users.shrink_to_fit();
        let mut by_mobile: Vec<(u64, u32)> = self
            .users
            .iter()
            .enumerate()
            .filter(|(_, u)| !u.field(MOBILE).is_empty())
            .map(|(i, u)| {
                (
                    hash_of(u.field(MOBILE)),
                    u32::try_from(i).unwrap_or(u32::MAX),
                )
            })
            .collect();
        by_mobile.sort_unstable();
        RemoteUsers {
            users: self.users,
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
            .binary_search_by(|u| u.field(USERID).cmp(userid))
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
        self.index_of(userid).map(|i| self.users[i].unpack())
    }

    /// The user whose mobile is `mobile` (never for an empty one).
    pub fn by_mobile(&self, mobile: &str) -> Option<DtUser> {
        if mobile.is_empty() {
            return None;
        }
        let hash = hash_of(mobile);
        let start = self.by_mobile.partition_point(|(h, _)| *h < hash);
        self.by_mobile[start..]
            .iter()
            .take_while(|(h, _)| *h == hash)
            .map(|(_, i)| &self.users[*i as usize])
            .find(|u| u.field(MOBILE) == mobile)
            .map(Packed::unpack)
    }

    /// Every user, unpacked one at a time, in userid order.
    pub fn iter(&self) -> impl Iterator<Item = DtUser> + '_ {
        self.users.iter().map(Packed::unpack)
    }

    /// `(userid, departments)` of every user, without unpacking.
    pub fn memberships(&self) -> impl Iterator<Item = (&str, &[i64])> + '_ {
        self.users.iter().map(|u| (u.field(USERID), &*u.depts))
    }

    /// Users `start..start + len` in userid order, unpacked (a pull's slice).
    pub fn slice(&self, start: usize, len: usize) -> Vec<DtUser> {
        self.users
            .iter()
            .skip(start)
            .take(len)
            .map(Packed::unpack)
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
    }
}

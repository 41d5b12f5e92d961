//! An index over a tenant's departments that finds, without walking the whole tree, the part
//! of it that decides how given departments are pushed: their ancestors (posts and deleted
//! rows included, which the nearest pushed ancestor walks through), and every department that
//! shares a nearest pushed ancestor with one of them (the siblings a duplicate name is judged
//! against), with their own ancestors. Built once per read of the tree; a job then judges a
//! few dozen rows instead of thousands, with the same outcome for the departments it asked
//! about.

use std::collections::{BTreeSet, HashMap, HashSet};

use super::LocalDept;

/// Whether a department is pushed at all (not a post, not logically deleted).
fn pushed(dept: &LocalDept) -> bool {
    !dept.is_post() && !dept.is_deleted()
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct DeptIndex {
    by_id: HashMap<String, usize>,
    /// Each row's nearest pushed ancestor (None: the top level, a missing parent, a cycle).
    nearest: Vec<Option<usize>>,
    /// Pushed rows by their nearest pushed ancestor.
    groups: HashMap<Option<usize>, Vec<usize>>,
    by_ding: HashMap<i64, Vec<usize>>,
}

impl DeptIndex {
    /// Indexes `depts`.
    pub fn new(depts: &[LocalDept]) -> Self {
        let by_id: HashMap<String, usize> = depts
            .iter()
            .enumerate()
            .map(|(i, d)| (d.id.clone(), i))
            .collect();
        let parent = |i: usize| -> Option<usize> {
            depts[i]
                .parent_id
                .as_deref()
                .and_then(|p| by_id.get(p))
                .copied()
        };
        let nearest: Vec<Option<usize>> = (0..depts.len())
            .map(|i| {
                let mut seen = HashSet::from([i]);
                let mut next = parent(i);
                while let Some(p) = next {
                    if !seen.insert(p) {
                        return None;
                    }
                    if pushed(&depts[p]) {
                        return Some(p);
                    }
                    next = parent(p);
                }
                None
            })
            .collect();
        let mut groups: HashMap<Option<usize>, Vec<usize>> = HashMap::new();
        let mut by_ding: HashMap<i64, Vec<usize>> = HashMap::new();
        for (i, dept) in depts.iter().enumerate() {
            if pushed(dept) {
                groups.entry(nearest[i]).or_default().push(i);
            }
            if let Some(ding) = dept.ding_identifier {
                by_ding.entry(ding).or_default().push(i);
            }
        }
        Self {
            by_id,
            nearest,
            groups,
            by_ding,
        }
    }

    /// The row of department `id`.
    pub fn row(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    /// The rows linked to DingTalk department `ding`.
    pub fn linked(&self, ding: i64) -> &[usize] {
        self.by_ding.get(&ding).map_or(&[], Vec::as_slice)
    }

    /// The rows that decide how the rows `of` are pushed (see the module documentation), in
    /// table order.
    pub fn around(&self, depts: &[LocalDept], of: impl IntoIterator<Item = usize>) -> Vec<usize> {
        let mut keep = BTreeSet::new();
        for i in of {
            self.ancestors(depts, i, &mut keep);
        }
        let groups: BTreeSet<Option<usize>> = keep
            .iter()
            .filter(|i| pushed(&depts[**i]))
            .map(|i| self.nearest[*i])
            .collect();
        for group in groups {
            for &sibling in self.groups.get(&group).map_or(&[][..], Vec::as_slice) {
                self.ancestors(depts, sibling, &mut keep);
            }
        }
        keep.into_iter().collect()
    }

    /// Row `i` and its ancestors, up to one already kept.
    fn ancestors(&self, depts: &[LocalDept], i: usize, keep: &mut BTreeSet<usize>) {
        let mut next = Some(i);
        while let Some(row) = next {
            if !keep.insert(row) {
                return;
            }
            next = depts[row]
                .parent_id
                .as_deref()
                .and_then(|p| self.by_id.get(p))
                .copied();
        }
    }
}

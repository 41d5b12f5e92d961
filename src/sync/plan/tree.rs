//! The local department tree as a push sees it: which departments are pushed (not posts, not
//! logically deleted), each one's nearest pushed ancestor, parents-first order, and why a
//! department cannot be pushed — a name DingTalk refuses, a cycle of `parent_id`s, two
//! siblings of one name, a job DingTalk refused before (dead), or a parent that cannot be
//! pushed. Every path (a full run, a job, a dry run) judges departments here, so they all
//! refuse the same departments with the same reason text.

use std::collections::{HashMap, HashSet};

use crate::jeecg::LocalDept;

/// Longest department name DingTalk takes (errcode 60001 beyond it).
pub const MAX_DEPT_NAME_CHARS: usize = 64;

/// Characters DingTalk refuses in a department name (errcode 60009).
const FORBIDDEN_IN_NAMES: [char; 3] = ['-', ',', '，'];

/// Whether a department is pushed at all.
pub fn pushable(dept: &LocalDept) -> bool {
    !dept.is_post() && !dept.is_deleted()
}

/// Why DingTalk would refuse `name`, if it would.
pub fn name_refusal(name: &str) -> Option<String> {
    let chars = name.chars().count();
    if name.trim().is_empty() {
        Some(
            "the department name is empty; DingTalk needs 1 to 64 characters (errcode 60001)"
                .into(),
        )
    } else if chars > MAX_DEPT_NAME_CHARS {
        Some(format!(
            "the department name has {chars} characters; DingTalk allows {MAX_DEPT_NAME_CHARS} (errcode 60001)"
        ))
    } else if name.contains(FORBIDDEN_IN_NAMES) {
        Some(format!(
            "DingTalk refuses department names with '-', ',' or '，' (errcode 60009): {name:?}"
        ))
    } else {
        None
    }
}

/// The pushed departments of a local tree and the rules that judge them.
pub struct DeptTree<'a> {
    by_id: HashMap<&'a str, &'a LocalDept>,
    /// Pushed departments, parents before children (cycles last).
    order: Vec<&'a LocalDept>,
    /// Each pushed department's nearest pushed ancestor (None: top level).
    parent: HashMap<&'a str, Option<&'a str>>,
    /// Pushed departments that cannot be pushed, with the reason.
    refused: HashMap<&'a str, String>,
}

impl<'a> DeptTree<'a> {
    /// Judges `depts` (a tenant's whole tree, posts and deleted rows included); `dead` names
    /// departments whose job DingTalk refused, with its reason.
    pub fn new(depts: &'a [LocalDept], dead: &HashMap<String, String>) -> Self {
        let by_id: HashMap<&str, &LocalDept> = depts.iter().map(|d| (d.id.as_str(), d)).collect();
        let pushed: Vec<&LocalDept> = depts.iter().filter(|d| pushable(d)).collect();
        let parent: HashMap<&str, Option<&str>> = pushed
            .iter()
            .map(|d| (d.id.as_str(), nearest_pushed_ancestor(&by_id, d)))
            .collect();
        let cycles = cycles(&pushed, &parent);
        let depth = depths(&pushed, &parent, &cycles);
        let mut order = pushed;
        order.sort_by(|a, b| {
            (depth[a.id.as_str()], &a.org_code, &a.id).cmp(&(
                depth[b.id.as_str()],
                &b.org_code,
                &b.id,
            ))
        });
        let mut tree = Self {
            by_id,
            order,
            parent,
            refused: HashMap::new(),
        };
        tree.judge(&cycles, dead);
        tree
    }

    /// Decides, parents first, which departments cannot be pushed and why.
    fn judge(&mut self, cycles: &HashMap<&'a str, String>, dead: &HashMap<String, String>) {
        let mut names: HashSet<(Option<&str>, &str)> = HashSet::new();
        for dept in self.order.clone() {
            let id = dept.id.as_str();
            let parent = self.parent[id];
            let reason = cycles
                .get(id)
                .cloned()
                .or_else(|| name_refusal(&dept.name))
                .or_else(|| {
                    dead.get(id).map(|error| {
                        format!("DingTalk refused it before ({error}); fix it, then `dingsync queue retry`")
                    })
                })
                .or_else(|| {
                    let p = parent?;
                    let why = self.refused.get(p)?;
                    Some(format!("its parent department {p} cannot be pushed: {why}"))
                })
                .or_else(|| {
                    (!names.insert((parent, dept.name.as_str()))).then(|| {
                        format!(
                            "a sibling department is also named {:?}; DingTalk needs unique names under one parent (errcode 60021)",
                            dept.name
                        )
                    })
                });
            if let Some(reason) = reason {
                self.refused.insert(id, reason);
            }
        }
    }

    /// Pushed departments, parents first.
    pub fn order(&self) -> &[&'a LocalDept] {
        &self.order
    }

    /// How many departments are pushed (refused ones included).
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether nothing is pushed.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Whether `id` is a pushed department.
    pub fn contains(&self, id: &str) -> bool {
        self.parent.contains_key(id)
    }

    /// The department `id` (any row of the tree).
    pub fn get(&self, id: &str) -> Option<&'a LocalDept> {
        self.by_id.get(id).copied()
    }

    /// The nearest pushed ancestor of a pushed department (None: top level, or not pushed).
    pub fn parent(&self, id: &str) -> Option<&'a str> {
        self.parent.get(id).copied().flatten()
    }

    /// Why `id` cannot be pushed, if it cannot.
    pub fn refusal(&self, id: &str) -> Option<&str> {
        self.refused.get(id).map(String::as_str)
    }

    /// Each pushed department's nearest pushed ancestor (None: top level): where a push
    /// places it, so that a pull compares against the same placement.
    pub fn placement(&self) -> HashMap<String, Option<String>> {
        self.parent
            .iter()
            .map(|(id, p)| (id.to_string(), p.map(str::to_string)))
            .collect()
    }
}

/// The nearest ancestor of `dept` that is pushed, skipping posts and deleted rows (None: top
/// level; also when the chain loops through rows that are not pushed).
fn nearest_pushed_ancestor<'a>(
    by_id: &HashMap<&'a str, &'a LocalDept>,
    dept: &LocalDept,
) -> Option<&'a str> {
    let mut seen: HashSet<&str> = HashSet::from([dept.id.as_str()]);
    let mut next = dept.parent_id.as_deref();
    while let Some(id) = next {
        let row = by_id.get(id)?;
        if !seen.insert(row.id.as_str()) {
            return None;
        }
        if pushable(row) {
            return Some(row.id.as_str());
        }
        next = row.parent_id.as_deref();
    }
    None
}

/// The pushed departments on a cycle of nearest-ancestor links, each with the reason
/// naming the whole cycle ("department cycle: a (A) -> b (B) -> a (A)").
fn cycles<'a>(
    pushed: &[&'a LocalDept],
    parent: &HashMap<&'a str, Option<&'a str>>,
) -> HashMap<&'a str, String> {
    let names: HashMap<&str, &str> = pushed
        .iter()
        .map(|d| (d.id.as_str(), d.name.as_str()))
        .collect();
    let mut found: HashMap<&str, String> = HashMap::new();
    let mut cleared: HashSet<&str> = HashSet::new();
    for start in pushed {
        let mut path: Vec<&str> = Vec::new();
        let mut on_path: HashSet<&str> = HashSet::new();
        let mut current = Some(start.id.as_str());
        while let Some(id) = current {
            if cleared.contains(id) || found.contains_key(id) {
                break;
            }
            if !on_path.insert(id) {
                let from = path.iter().position(|p| *p == id).unwrap_or(0);
                let ring = &path[from..];
                let text: Vec<String> = ring
                    .iter()
                    .chain(std::iter::once(&id))
                    .map(|r| format!("{r} ({})", names.get(r).copied().unwrap_or("")))
                    .collect();
                let reason = format!(
                    "department cycle: {}; DingTalk cannot place it (fix the parent_id of one of them)",
                    text.join(" -> ")
                );
                for member in ring {
                    found.insert(member, reason.clone());
                }
                break;
            }
            path.push(id);
            current = parent.get(id).copied().flatten();
        }
        cleared.extend(path.into_iter().filter(|p| !found.contains_key(p)));
    }
    found
}

/// Depth of each pushed department under the top level. Departments on a cycle count as
/// deeper than any other, and those under a cycle deeper still, so that parents are judged
/// before their children in every case.
fn depths<'a>(
    pushed: &[&'a LocalDept],
    parent: &HashMap<&'a str, Option<&'a str>>,
    cycles: &HashMap<&'a str, String>,
) -> HashMap<&'a str, usize> {
    let limit = pushed.len() + 1;
    pushed
        .iter()
        .map(|d| {
            let mut steps = 0;
            let mut current = d.id.as_str();
            let depth = loop {
                if cycles.contains_key(current) {
                    break limit + steps;
                }
                match parent.get(current).copied().flatten() {
                    Some(up) if steps <= limit => {
                        steps += 1;
                        current = up;
                    }
                    _ => break steps,
                }
            };
            (d.id.as_str(), depth)
        })
        .collect()
}

//! The local writes that record what a DingTalk call (or a pull's local update) made true —
//! link rows, `ding_identifier` and snapshots with their bases — kept until [`FLUSH_AT`] of
//! them wait, or the plan is applied, and then written together: one marked transaction of
//! multi-row statements per kind, instead of one transaction per entity.
//!
//! When the batch fails as a whole, its writes are made one by one, so one bad row costs
//! only its entity. A crash between a call and the flush loses the records not yet written
//! (about [`FLUSH_AT`]; more when a flush was under way meanwhile, since records arriving
//! then wait for the next); the next run adopts what DingTalk already has (a userid or
//! department name that exists is taken over, not created twice).

use std::sync::{Mutex, PoisonError};

use crate::store::batch::LinkWrite;
use crate::store::links::LinkSaved;
use crate::store::snapshots::SnapshotWrite;
use crate::store::{Store, StoreError};

use super::model::UserBase;

/// Records that make a batch due (about half a second of writes at a path's 200 calls/s).
pub(super) const FLUSH_AT: usize = 100;

/// The entity a record belongs to (kind, key), for its failure.
pub(super) type Key = (String, String);

/// Which count of the run's summary an entity took when its call succeeded: taken back
/// when its record cannot be written, so that the entity is counted once, as failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Counted {
    Nothing,
    Created,
    Updated,
}

/// A link and the base it was written with.
pub(super) struct LinkRecord {
    pub key: Key,
    pub counted: Counted,
    pub write: LinkWrite,
    pub base: UserBase,
}

/// What became of a record that was not simply written.
pub(super) enum Outcome {
    /// Another tenant's row holds the userid: the link lives in the snapshot.
    HeldBy(Box<LinkRecord>, i64),
    /// Not written.
    Failed(Key, Counted, StoreError),
}

#[derive(Default)]
struct Pending {
    links: Vec<LinkRecord>,
    depts: Vec<(Key, Counted, SnapshotWrite)>,
}

/// The records of one run not written yet.
#[derive(Default)]
pub(super) struct Written {
    pending: Mutex<Pending>,
}

impl Written {
    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps a link record; whether a batch is due.
    pub fn link(&self, record: LinkRecord) -> bool {
        let mut pending = self.pending();
        pending.links.push(record);
        pending.links.len() + pending.depts.len() >= FLUSH_AT
    }

    /// Keeps a department's record; whether a batch is due.
    pub fn dept(&self, key: Key, counted: Counted, snapshot: SnapshotWrite) -> bool {
        let mut pending = self.pending();
        pending.depts.push((key, counted, snapshot));
        pending.links.len() + pending.depts.len() >= FLUSH_AT
    }

    /// Writes what waits; what was not simply written.
    pub async fn flush(&self, store: &Store) -> Vec<Outcome> {
        let Pending { links, depts } = std::mem::take(&mut *self.pending());
        let mut outcomes = Vec::new();
        if !depts.is_empty() {
            let snapshots: Vec<SnapshotWrite> = depts.iter().map(|(_, _, s)| s.clone()).collect();
            if let Err(error) = store.link_depts(&snapshots).await {
                tracing::debug!(error = %error, records = depts.len(), "batch of department records failed; written one by one");
                for (key, counted, snapshot) in depts {
                    if let Err(error) = store.link_dept(&snapshot).await {
                        outcomes.push(Outcome::Failed(key, counted, error));
                    }
                }
            }
        }
        if links.is_empty() {
            return outcomes;
        }
        let writes: Vec<LinkWrite> = links.iter().map(|r| r.write.clone()).collect();
        let answers = match store.save_links_and_bases(&writes).await {
            Ok(answers) => answers,
            Err(error) => {
                tracing::debug!(error = %error, records = writes.len(), "batch of link records failed; written one by one");
                let mut answers = Vec::with_capacity(writes.len());
                for w in &writes {
                    answers.push(
                        store
                            .save_link_and_base(&w.link, &w.realname, Some(&w.snapshot))
                            .await,
                    );
                }
                answers
            }
        };
        for (record, answer) in links.into_iter().zip(answers) {
            match answer {
                Ok(LinkSaved::Written) => {}
                Ok(LinkSaved::HeldBy(other)) => {
                    outcomes.push(Outcome::HeldBy(Box::new(record), other));
                }
                Err(error) => outcomes.push(Outcome::Failed(record.key, record.counted, error)),
            }
        }
        outcomes
    }
}

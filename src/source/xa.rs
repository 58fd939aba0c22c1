//! XA transactions: rows held from `XA PREPARE` until `XA COMMIT`.
//!
//! The server binlogs an XA transaction when it is prepared (`XA START …` rows `XA END …`,
//! then an XA_PREPARE event), and its `XA COMMIT` or `XA ROLLBACK` later, as a group of its
//! own, possibly after other transactions. Its rows are therefore held here until the commit
//! is read, and published then, in commit order; a rollback drops them. `XA COMMIT … ONE
//! PHASE` is binlogged as an ordinary transaction (MariaDB) or as an XA_PREPARE event marked
//! one-phase (MySQL), and is published at once.
//!
//! While a prepared transaction with outbox rows is unresolved, the checkpoint cannot move
//! past its prepare: it keeps the resume point before the prepare group, the end of the last
//! handled transaction (`handled_through`) and the list of prepared transactions. A restart
//! reads the prepare groups again ("replay") without publishing what was already handled.
//!
//! Invariants: entries are kept in prepare order; an id is in the tracker at most once (the
//! server refuses a second prepared transaction with the same id).

use std::collections::HashSet;

use crate::outbox::OutboxEvent;
use crate::position::{PreparedXa, Xid};

enum State<R> {
    /// Prepared; with outbox rows, also where reading must resume to get them again.
    Prepared(Option<(R, Vec<OutboxEvent>)>),
    /// Listed in the checkpoint with rows; its prepare group is to be read again.
    AwaitingReread,
}

struct Entry<R> {
    xid: Xid,
    state: State<R>,
}

/// The prepared XA transactions, in prepare order. `R` is a resume point: where reading
/// must start to read a prepare group again.
pub struct XaTracker<R> {
    entries: Vec<Entry<R>>,
    /// Ids the checkpoint listed with rows (their prepare groups are read again).
    listed: HashSet<Xid>,
}

impl<R: Clone> Default for XaTracker<R> {
    fn default() -> Self {
        Self::restore(&[])
    }
}

impl<R: Clone> XaTracker<R> {
    /// The tracker as a checkpoint left it.
    pub fn restore(prepared: &[PreparedXa]) -> Self {
        let entries = prepared
            .iter()
            .map(|p| Entry {
                xid: p.xid.clone(),
                state: match p.outbox_rows {
                    true => State::AwaitingReread,
                    false => State::Prepared(None),
                },
            })
            .collect();
        let listed = prepared
            .iter()
            .filter(|p| p.outbox_rows)
            .map(|p| p.xid.clone())
            .collect();
        Self { entries, listed }
    }

    fn position(&self, xid: &Xid) -> Option<usize> {
        self.entries.iter().position(|e| e.xid == *xid)
    }

    /// Records a prepare read normally (not during replay). `events` may be empty.
    pub fn prepare(&mut self, xid: Xid, resume: R, events: Vec<OutboxEvent>) {
        let held = (!events.is_empty()).then_some((resume, events));
        match self.position(&xid) {
            Some(i) => self.entries[i].state = State::Prepared(held),
            None => self.entries.push(Entry {
                xid,
                state: State::Prepared(held),
            }),
        }
    }

    /// Whether the rows of a prepare group read during replay are wanted: the checkpoint
    /// listed its id with rows. (Other prepare groups in the replayed range were resolved
    /// before the checkpoint, and their rows already handled.)
    pub fn wants_replayed(&self, xid: &Xid) -> bool {
        self.listed.contains(xid)
    }

    /// Records a prepare group read during replay: held only when wanted. A wanted one read
    /// again without rows stays awaited, so that [`XaTracker::missing_after_replay`] reports
    /// it rather than its rows going missing quietly.
    pub fn prepare_replayed(&mut self, xid: Xid, resume: R, events: Vec<OutboxEvent>) {
        if self.wants_replayed(&xid) && !events.is_empty() {
            self.prepare(xid, resume, events);
        }
    }

    /// A commit or rollback read during replay was handled before: an earlier transaction
    /// with the same id. A listed id waits for its own prepare again.
    pub fn resolve_replayed(&mut self, xid: &Xid) {
        if let Some(i) = self.position(xid) {
            if self.listed.contains(xid) {
                self.entries[i].state = State::AwaitingReread;
            } else {
                self.entries.remove(i);
            }
        }
    }

    /// Ids listed with rows whose prepare group was not found again (checked once replay
    /// has passed the end of the handled transactions).
    pub fn missing_after_replay(&self) -> Vec<Xid> {
        self.entries
            .iter()
            .filter(|e| matches!(e.state, State::AwaitingReread))
            .map(|e| e.xid.clone())
            .collect()
    }

    /// Replay is over: the ids listed by the checkpoint behave like any other from now on.
    pub fn end_replay(&mut self) {
        self.listed.clear();
    }

    /// An `XA COMMIT`: the transaction's rows (empty when it wrote none), or `None` when its
    /// prepare was never read.
    pub fn commit(&mut self, xid: &Xid) -> Option<Vec<OutboxEvent>> {
        let entry = self.entries.remove(self.position(xid)?);
        match entry.state {
            State::Prepared(held) => Some(held.map(|(_, events)| events).unwrap_or_default()),
            State::AwaitingReread => None,
        }
    }

    /// An `XA ROLLBACK`: its rows are dropped.
    pub fn rollback(&mut self, xid: &Xid) {
        if let Some(i) = self.position(xid) {
            self.entries.remove(i);
        }
    }

    /// Where reading must resume so that no held rows are lost: the resume point of the
    /// earliest prepared transaction with outbox rows.
    pub fn hold_back(&self) -> Option<&R> {
        self.entries.iter().find_map(|e| match &e.state {
            State::Prepared(Some((resume, _))) => Some(resume),
            _ => None,
        })
    }

    /// The prepared transactions holding outbox rows, in prepare order: each id, its resume
    /// point and how many rows it holds (for `replay`, which reports those its files never
    /// end).
    pub fn holding_rows(&self) -> Vec<(&Xid, &R, usize)> {
        self.entries
            .iter()
            .filter_map(|e| match &e.state {
                State::Prepared(Some((resume, events))) => Some((&e.xid, resume, events.len())),
                _ => None,
            })
            .collect()
    }

    /// What the checkpoint records.
    pub fn prepared(&self) -> Vec<PreparedXa> {
        self.entries
            .iter()
            .map(|e| PreparedXa {
                xid: e.xid.clone(),
                outbox_rows: !matches!(e.state, State::Prepared(None)),
            })
            .collect()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xid(s: &str) -> Xid {
        s.parse().unwrap()
    }

    fn event(id: &str) -> OutboxEvent {
        OutboxEvent {
            id: id.into(),
            aggregate_type: "A".into(),
            aggregate_id: "1".into(),
            event_type: "T".into(),
            payload: b"{}".to_vec(),
            timestamp: None,
            headers: Vec::new(),
            subject: "s".into(),
            schema: "shop".into(),
            table: "outbox".into(),
            qualified_table: "shop.outbox".into(),
            stream: "S".into(),
            position: "bin.000001:4#0".parse().unwrap(),
            checksum: 0,
            dead_letter: None,
            dead_letter_reason: None,
            committed_us: 0,
        }
    }

    #[test]
    fn rows_are_held_until_commit_dropped_on_rollback_and_hold_the_checkpoint_back() {
        let mut xa: XaTracker<u64> = XaTracker::default();
        xa.prepare(xid("X'01',X'',1"), 100, vec![event("a")]);
        xa.prepare(xid("X'02',X'',1"), 200, Vec::new());
        xa.prepare(xid("X'03',X'',1"), 300, vec![event("c")]);
        assert_eq!(xa.hold_back(), Some(&100));
        assert_eq!(
            xa.prepared(),
            vec![
                PreparedXa {
                    xid: xid("X'01',X'',1"),
                    outbox_rows: true
                },
                PreparedXa {
                    xid: xid("X'02',X'',1"),
                    outbox_rows: false
                },
                PreparedXa {
                    xid: xid("X'03',X'',1"),
                    outbox_rows: true
                },
            ]
        );
        xa.rollback(&xid("X'01',X'',1"));
        assert_eq!(xa.hold_back(), Some(&300));
        assert_eq!(xa.commit(&xid("X'02',X'',1")), Some(Vec::new()));
        let rows = xa.commit(&xid("X'03',X'',1")).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].id, "c");
        assert!(xa.is_empty() && xa.hold_back().is_none());
        assert_eq!(xa.commit(&xid("X'09',X'',1")), None, "never prepared");
    }

    #[test]
    fn replay_takes_back_only_the_listed_prepares_and_reports_missing_ones() {
        let listed = [
            PreparedXa {
                xid: xid("X'01',X'',1"),
                outbox_rows: true,
            },
            PreparedXa {
                xid: xid("X'02',X'',1"),
                outbox_rows: false,
            },
            PreparedXa {
                xid: xid("X'03',X'',1"),
                outbox_rows: true,
            },
        ];
        let mut xa: XaTracker<u64> = XaTracker::restore(&listed);
        assert_eq!(xa.hold_back(), None, "nothing read yet");
        // An id used once before, resolved before the checkpoint, then prepared again.
        xa.prepare_replayed(xid("X'01',X'',1"), 50, vec![event("old")]);
        xa.resolve_replayed(&xid("X'01',X'',1"));
        xa.prepare_replayed(xid("X'01',X'',1"), 100, vec![event("a")]);
        // Resolved within the replayed range: not wanted.
        xa.prepare_replayed(xid("X'07',X'',1"), 150, vec![event("x")]);
        xa.resolve_replayed(&xid("X'07',X'',1"));
        assert_eq!(xa.missing_after_replay(), vec![xid("X'03',X'',1")]);
        xa.prepare_replayed(xid("X'03',X'',1"), 300, Vec::new());
        assert_eq!(
            xa.missing_after_replay(),
            vec![xid("X'03',X'',1")],
            "read again without its rows"
        );
        xa.prepare_replayed(xid("X'03',X'',1"), 300, vec![event("c")]);
        assert!(xa.missing_after_replay().is_empty());
        xa.end_replay();
        assert_eq!(xa.hold_back(), Some(&100));
        assert_eq!(xa.commit(&xid("X'01',X'',1")).unwrap()[0].id, "a");
        assert_eq!(
            xa.commit(&xid("X'02',X'',1")),
            Some(Vec::new()),
            "listed without rows"
        );
        assert_eq!(xa.prepared().len(), 1);
    }
}

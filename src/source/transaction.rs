//! One binlog transaction's outbox rows, until the source knows how the transaction ends.
//!
//! A binlog group does not always commit: when a transaction also changed a
//! non-transactional table, the server binlogs its transactional rows too and ends the group
//! with `ROLLBACK`, or undoes part of it with `ROLLBACK TO <savepoint>`. An XA transaction's
//! group ends with XA_PREPARE and commits later. So rows are held until the group's end
//! decides: `COMMIT`/XID publishes them, `ROLLBACK` drops them, a rollback to a savepoint
//! drops the rows after it, XA_PREPARE hands them to the XA tracker.
//!
//! Holding is bounded by [`MAX_HELD_BYTES`]. A transaction above it is read to its end
//! without holding anything ("look-ahead", remembering which rows savepoint rollbacks undo);
//! if it commits, the source reads it again from its start and streams its rows as they come
//! ([`Mode::Streaming`]), skipping the undone ones. Memory stays bounded whatever the
//! transaction's size; only very large transactions are read twice.

use crate::outbox::OutboxEvent;

/// Rows held per transaction before it is read ahead instead (payload bytes plus a fixed
/// estimate per row for ids and headers). Typical outbox transactions hold a few KB.
pub const MAX_HELD_BYTES: usize = 8 << 20;
/// Per-row estimate of what an event holds besides its payload.
const ROW_OVERHEAD_BYTES: usize = 512;

/// How the rows of the transaction being read are treated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Rows are held until the transaction's end.
    Holding,
    /// Too large to hold: read to the end to learn how it ends, rows dropped.
    LookingAhead,
    /// Known to commit (read ahead before): rows are published as they come, except those
    /// whose rows event starts in an undone range.
    Streaming { undone: Vec<(u64, u64)> },
}

/// How a transaction ended, and what to do with its rows.
#[derive(Debug)]
pub enum Ending {
    /// Publish these rows (empty when they were streamed already), then the transaction end.
    Publish(Vec<OutboxEvent>),
    /// The rows were not held (too large): read the transaction again from its start and
    /// stream it, skipping rows in these ranges of rows-event offsets.
    ReadAgain { undone: Vec<(u64, u64)> },
}

/// The rows and savepoints of the transaction being read.
#[derive(Debug)]
pub struct Transaction {
    mode: Mode,
    held: Vec<OutboxEvent>,
    held_bytes: usize,
    /// Savepoints: name, rows held at it, and the offset right after its SAVEPOINT event.
    savepoints: Vec<(String, usize, u64)>,
    /// While looking ahead: ranges of rows-event offsets undone by rollbacks to savepoints.
    undone: Vec<(u64, u64)>,
    /// Rows published before the end (streaming).
    streamed: usize,
}

impl Transaction {
    pub fn new(mode: Mode) -> Self {
        Self {
            mode,
            held: Vec::new(),
            held_bytes: 0,
            savepoints: Vec::new(),
            undone: Vec::new(),
            streamed: 0,
        }
    }

    #[cfg(test)]
    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    /// Too large to hold: reading on only to learn how it ends.
    pub fn is_looking_ahead(&self) -> bool {
        self.mode == Mode::LookingAhead
    }

    /// A row of the transaction: held, dropped (looking ahead, or undone), or returned to be
    /// published now (streaming).
    pub fn row(&mut self, event: OutboxEvent) -> Option<OutboxEvent> {
        match &self.mode {
            Mode::Holding => {
                self.held_bytes += event.payload.len() + ROW_OVERHEAD_BYTES;
                self.held.push(event);
                if self.held_bytes > MAX_HELD_BYTES {
                    self.mode = Mode::LookingAhead;
                    self.held = Vec::new();
                }
                None
            }
            Mode::LookingAhead => None,
            Mode::Streaming { undone } => {
                let at = event.position.pos;
                if undone.iter().any(|&(from, to)| from <= at && at < to) {
                    None
                } else {
                    self.streamed += 1;
                    Some(event)
                }
            }
        }
    }

    /// `SAVEPOINT name`, whose event ends at `end`.
    pub fn savepoint(&mut self, name: String, end: u64) {
        self.savepoints.retain(|(n, _, _)| *n != name);
        self.savepoints.push((name, self.held.len(), end));
    }

    /// `ROLLBACK TO name`, whose event starts at `start`: the rows since the savepoint are
    /// undone; later savepoints are gone, the named one stays. Returns false when the
    /// savepoint is unknown (its SAVEPOINT was not binlogged).
    pub fn rollback_to(&mut self, name: &str, start: u64) -> bool {
        let Some(i) = self.savepoints.iter().rposition(|(n, _, _)| n == name) else {
            return false;
        };
        let (_, held, end) = self.savepoints[i];
        self.savepoints.truncate(i + 1);
        // Recorded whatever the mode: a transaction still held now may outgrow the limit
        // later and be read again, and the re-read must skip these rows too.
        self.undone.push((end, start));
        if self.mode == Mode::Holding {
            self.held.truncate(held);
            self.held_bytes = self
                .held
                .iter()
                .map(|e| e.payload.len() + ROW_OVERHEAD_BYTES)
                .sum();
        }
        true
    }

    /// Whether rows were published before the end (streaming), so that dropping the
    /// transaction is no longer possible.
    pub fn streamed(&self) -> usize {
        self.streamed
    }

    /// The transaction commits.
    pub fn commit(self) -> Ending {
        match self.mode {
            Mode::LookingAhead => Ending::ReadAgain {
                undone: self.undone,
            },
            Mode::Holding | Mode::Streaming { .. } => Ending::Publish(self.held),
        }
    }

    /// The held rows, for an XA prepare; `None` when they were too many to hold.
    pub fn into_held(self) -> Option<Vec<OutboxEvent>> {
        match self.mode {
            Mode::Holding => Some(self.held),
            Mode::LookingAhead | Mode::Streaming { .. } => None,
        }
    }

    /// Rows held right now.
    pub fn held(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pos: u64, payload_len: usize) -> OutboxEvent {
        OutboxEvent {
            id: format!("e{pos}"),
            aggregate_type: "A".into(),
            aggregate_id: "1".into(),
            event_type: "T".into(),
            payload: vec![b'x'; payload_len],
            timestamp: None,
            headers: Vec::new(),
            subject: "s".into(),
            schema: "shop".into(),
            table: "outbox".into(),
            qualified_table: "shop.outbox".into(),
            stream: "S".into(),
            position: format!("bin.000001:{pos}#0").parse().unwrap(),
            checksum: 0,
            dead_letter: None,
            dead_letter_reason: None,
            committed_us: 0,
        }
    }

    fn ids(ending: Ending) -> Vec<String> {
        match ending {
            Ending::Publish(rows) => rows.into_iter().map(|e| e.id).collect(),
            Ending::ReadAgain { .. } => panic!("read again"),
        }
    }

    #[test]
    fn rows_are_held_to_the_end_and_a_savepoint_rollback_drops_those_after_it() {
        let mut tx = Transaction::new(Mode::Holding);
        assert!(tx.row(row(100, 10)).is_none());
        tx.savepoint("s1".into(), 150);
        assert!(tx.row(row(200, 10)).is_none());
        tx.savepoint("s2".into(), 250);
        assert!(tx.row(row(300, 10)).is_none());
        assert!(tx.rollback_to("s1", 350));
        assert!(!tx.rollback_to("s2", 360), "later savepoints are gone");
        assert!(tx.row(row(400, 10)).is_none());
        assert!(tx.rollback_to("s1", 450), "the named one stays");
        assert!(tx.row(row(500, 10)).is_none());
        assert_eq!(ids(tx.commit()), ["e100", "e500"]);
    }

    #[test]
    fn a_transaction_too_large_to_hold_is_read_again_and_streamed_without_its_undone_rows() {
        let big = MAX_HELD_BYTES / 4;
        let mut tx = Transaction::new(Mode::Holding);
        tx.row(row(100, big));
        tx.savepoint("s".into(), 150);
        for pos in [200, 300, 400, 500] {
            tx.row(row(pos, big));
        }
        assert_eq!(tx.mode(), &Mode::LookingAhead);
        assert_eq!(tx.held(), 0, "nothing held once too large");
        assert!(tx.rollback_to("s", 550));
        tx.row(row(600, big));
        let Ending::ReadAgain { undone } = tx.commit() else {
            panic!("must be read again")
        };
        assert_eq!(undone, [(150, 550)]);

        let mut again = Transaction::new(Mode::Streaming { undone });
        let published: Vec<u64> = [100, 200, 300, 400, 500, 600]
            .into_iter()
            .filter_map(|pos| again.row(row(pos, big)))
            .map(|e| e.position.pos)
            .collect();
        assert_eq!(published, [100, 600]);
        assert_eq!(again.streamed(), 2);
        assert_eq!(ids(again.commit()), Vec::<String>::new());
    }

    #[test]
    fn a_rollback_to_a_savepoint_while_holding_is_remembered_when_the_transaction_outgrows_the_limit()
     {
        let big = MAX_HELD_BYTES / 4;
        let mut tx = Transaction::new(Mode::Holding);
        tx.row(row(100, 10));
        tx.savepoint("s".into(), 150);
        tx.row(row(200, 10));
        assert!(tx.rollback_to("s", 250));
        for pos in [300, 400, 500, 600, 700] {
            tx.row(row(pos, big));
        }
        let Ending::ReadAgain { undone } = tx.commit() else {
            panic!("must be read again")
        };
        let mut again = Transaction::new(Mode::Streaming { undone });
        let published: Vec<u64> = [100, 200, 300, 400, 500, 600, 700]
            .into_iter()
            .filter_map(|pos| again.row(row(pos, big)))
            .map(|e| e.position.pos)
            .collect();
        assert_eq!(
            published,
            [100, 300, 400, 500, 600, 700],
            "the undone row stays undone"
        );
    }

    #[test]
    fn held_rows_go_to_an_xa_prepare_unless_they_were_too_many() {
        let mut tx = Transaction::new(Mode::Holding);
        tx.row(row(100, 1));
        assert_eq!(tx.into_held().unwrap().len(), 1);
        let mut tx = Transaction::new(Mode::Holding);
        tx.row(row(100, MAX_HELD_BYTES + 1));
        assert!(tx.into_held().is_none());
    }
}

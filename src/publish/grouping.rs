//! Grouping consecutive database transactions into atomic batches (pure logic; the
//! publishing loop is [`super::batched`]).
//!
//! A batch holds whole transactions only, per stream, up to `limit` messages. Events of the
//! transaction being read wait in `current` until its end; then the transaction joins the
//! open group, or, when it would push a stream's batch above the limit, the group is sent
//! first. A transaction with more than `limit` events for one stream cannot be atomic: its
//! events go out in consecutive batches of `limit` as they arrive (everything before them
//! first), so memory stays bounded by about two batches per stream.
//!
//! A transaction end is released only after every batch holding its events (it then follows
//! them in the output), so a checkpoint never passes an event that is not sent.
//!
//! A batch says whether each of its messages is the only event of its transaction for that
//! stream (`singles`): such a message is atomic on its own, so the publisher may send the
//! messages one by one instead of as an atomic batch (see [`super::batched`]).

use std::sync::Arc;

/// What the grouper hands to the publisher, in publish order.
#[derive(Debug, PartialEq, Eq)]
pub enum Output<M, E> {
    /// Messages for one stream, to be sent as one atomic batch; with `singles`, each is the
    /// only event of its transaction for the stream.
    Batch {
        stream: Arc<str>,
        messages: Vec<M>,
        singles: bool,
    },
    /// A transaction end whose events are all in batches output before it.
    End(E),
}

/// Messages per stream, in the order the streams first appeared.
struct PerStream<M> {
    streams: Vec<StreamGroup<M>>,
}

/// One stream's messages, and whether a transaction gave it more than one of them.
struct StreamGroup<M> {
    stream: Arc<str>,
    messages: Vec<M>,
    several_per_transaction: bool,
}

impl<M> StreamGroup<M> {
    fn into_output<E>(self) -> Output<M, E> {
        Output::Batch {
            stream: self.stream,
            messages: self.messages,
            singles: !self.several_per_transaction,
        }
    }
}

impl<M> PerStream<M> {
    fn new() -> Self {
        Self {
            streams: Vec::new(),
        }
    }

    fn get_mut(&mut self, stream: &Arc<str>) -> &mut StreamGroup<M> {
        // A connector has a handful of streams: a linear search beats hashing.
        let at = match self.streams.iter().position(|g| &g.stream == stream) {
            Some(at) => at,
            None => {
                self.streams.push(StreamGroup {
                    stream: Arc::clone(stream),
                    messages: Vec::new(),
                    several_per_transaction: false,
                });
                self.streams.len() - 1
            }
        };
        &mut self.streams[at]
    }

    fn len_of(&self, stream: &str) -> usize {
        self.streams
            .iter()
            .find(|g| &*g.stream == stream)
            .map_or(0, |g| g.messages.len())
    }

    fn is_empty(&self) -> bool {
        self.streams.iter().all(|g| g.messages.is_empty())
    }

    fn total(&self) -> usize {
        self.streams.iter().map(|g| g.messages.len()).sum()
    }
}

/// Groups events and transaction ends into batches (see the module docs).
pub struct Grouper<M, E> {
    limit: usize,
    /// Complete transactions not yet sent.
    group: PerStream<M>,
    /// Ends of the transactions in `group`, in order.
    ends: Vec<E>,
    /// The transaction being read (its events not yet in a batch).
    current: PerStream<M>,
}

impl<M, E> Grouper<M, E> {
    /// A grouper making batches of at most `limit` (≥ 1) messages.
    pub fn new(limit: usize) -> Self {
        assert!(limit >= 1, "a batch holds at least one message");
        Self {
            limit,
            group: PerStream::new(),
            ends: Vec::new(),
            current: PerStream::new(),
        }
    }

    /// An event of the transaction being read, for `stream`.
    pub fn push(&mut self, stream: &Arc<str>, message: M, out: &mut Vec<Output<M, E>>) {
        let events = &mut self.current.get_mut(stream).messages;
        events.push(message);
        if events.len() < self.limit {
            return;
        }
        // Too large for one batch: this part goes now, after everything before it.
        let chunk = std::mem::take(events);
        self.flush(out);
        out.push(Output::Batch {
            stream: Arc::clone(stream),
            singles: chunk.len() == 1,
            messages: chunk,
        });
    }

    /// The end of the transaction being read.
    pub fn end(&mut self, end: E, out: &mut Vec<Output<M, E>>) {
        let fits = self
            .current
            .streams
            .iter()
            .all(|g| self.group.len_of(&g.stream) + g.messages.len() <= self.limit);
        if !fits {
            self.flush(out);
        }
        for mut events in self.current.streams.drain(..) {
            if !events.messages.is_empty() {
                let group = self.group.get_mut(&events.stream);
                group.several_per_transaction |= events.messages.len() > 1;
                group.messages.append(&mut events.messages);
            }
        }
        if self.group.is_empty() {
            // Nothing of it (or before it) waits: the end can follow what is already out.
            out.push(Output::End(end));
        } else {
            self.ends.push(end);
        }
    }

    /// Hands out the open group: a batch per stream, then the ends of its transactions.
    pub fn flush(&mut self, out: &mut Vec<Output<M, E>>) {
        for group in self.group.streams.drain(..) {
            if !group.messages.is_empty() {
                out.push(group.into_output());
            }
        }
        out.extend(self.ends.drain(..).map(Output::End));
    }

    /// Whether complete transactions wait to be sent.
    pub fn has_group(&self) -> bool {
        !self.ends.is_empty()
    }

    /// Messages held back (the open group and the transaction being read).
    pub fn held(&self) -> usize {
        self.group.total() + self.current.total()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Out = Output<u32, &'static str>;

    /// A batch some transaction gave several of its events.
    fn batch(stream: &str, messages: &[u32]) -> Out {
        Output::Batch {
            stream: stream.into(),
            messages: messages.to_vec(),
            singles: false,
        }
    }

    /// A batch of messages that are each their transaction's only event for the stream.
    fn singles(stream: &str, messages: &[u32]) -> Out {
        Output::Batch {
            stream: stream.into(),
            messages: messages.to_vec(),
            singles: true,
        }
    }

    #[test]
    fn consecutive_transactions_share_a_batch_until_flushed() {
        let a: Arc<str> = "A".into();
        let mut g = Grouper::new(10);
        let mut out = Vec::new();
        g.push(&a, 1, &mut out);
        g.push(&a, 2, &mut out);
        g.end("t1", &mut out);
        g.push(&a, 3, &mut out);
        g.end("t2", &mut out);
        g.push(&a, 4, &mut out);
        assert!(out.is_empty(), "nothing goes before a flush: {out:?}");
        assert!(g.has_group());
        assert_eq!(g.held(), 4);
        g.flush(&mut out);
        assert_eq!(
            out,
            vec![batch("A", &[1, 2, 3]), Output::End("t1"), Output::End("t2")],
            "the transaction being read stays"
        );
        out.clear();
        g.end("t3", &mut out);
        g.flush(&mut out);
        assert_eq!(out, vec![singles("A", &[4]), Output::End("t3")]);
        assert_eq!(g.held(), 0);
        assert!(!g.has_group());
    }

    #[test]
    fn a_transaction_that_would_overfill_the_batch_starts_the_next_one() {
        let a: Arc<str> = "A".into();
        let mut g = Grouper::new(3);
        let mut out = Vec::new();
        g.push(&a, 1, &mut out);
        g.push(&a, 2, &mut out);
        g.end("t1", &mut out);
        g.push(&a, 3, &mut out);
        g.push(&a, 4, &mut out);
        g.end("t2", &mut out);
        assert_eq!(
            out,
            vec![batch("A", &[1, 2]), Output::End("t1")],
            "t2 does not fit beside t1"
        );
        out.clear();
        g.flush(&mut out);
        assert_eq!(out, vec![batch("A", &[3, 4]), Output::End("t2")]);
    }

    #[test]
    fn a_transaction_above_the_limit_goes_out_in_consecutive_batches_after_what_came_before() {
        let a: Arc<str> = "A".into();
        let mut g = Grouper::new(2);
        let mut out = Vec::new();
        g.push(&a, 1, &mut out);
        g.end("t1", &mut out);
        for m in 2..=6 {
            g.push(&a, m, &mut out);
        }
        assert_eq!(
            out,
            vec![
                singles("A", &[1]),
                Output::End("t1"),
                batch("A", &[2, 3]),
                batch("A", &[4, 5]),
            ]
        );
        out.clear();
        g.end("t2", &mut out);
        assert!(out.is_empty(), "its tail waits in the group");
        g.flush(&mut out);
        assert_eq!(
            out,
            vec![singles("A", &[6]), Output::End("t2")],
            "a split transaction's tail of one event is a unit of its own"
        );
    }

    #[test]
    fn streams_are_batched_separately_and_an_end_follows_all_of_its_batches() {
        let (a, b): (Arc<str>, Arc<str>) = ("A".into(), "B".into());
        let mut g = Grouper::new(10);
        let mut out = Vec::new();
        g.push(&a, 1, &mut out);
        g.push(&b, 2, &mut out);
        g.push(&a, 3, &mut out);
        g.end("t1", &mut out);
        g.flush(&mut out);
        assert_eq!(
            out,
            vec![batch("A", &[1, 3]), singles("B", &[2]), Output::End("t1")]
        );
    }

    #[test]
    fn an_end_without_events_waits_only_for_what_is_held_before_it() {
        let a: Arc<str> = "A".into();
        let mut g: Grouper<u32, &str> = Grouper::new(10);
        let mut out = Vec::new();
        g.end("empty", &mut out);
        assert_eq!(out, vec![Output::End("empty")], "nothing before it");
        out.clear();
        g.push(&a, 1, &mut out);
        g.end("t1", &mut out);
        g.end("empty2", &mut out);
        assert!(out.is_empty());
        g.flush(&mut out);
        assert_eq!(
            out,
            vec![singles("A", &[1]), Output::End("t1"), Output::End("empty2")]
        );
    }

    #[test]
    fn a_transaction_of_exactly_the_limit_is_one_batch_and_a_chunk_leaves_other_streams_waiting() {
        let (a, b): (Arc<str>, Arc<str>) = ("A".into(), "B".into());
        let mut g = Grouper::new(3);
        let mut out = Vec::new();
        for m in 1..=3 {
            g.push(&a, m, &mut out);
        }
        assert_eq!(out, vec![batch("A", &[1, 2, 3])], "full: out at once");
        out.clear();
        g.end("t1", &mut out);
        assert_eq!(out, vec![Output::End("t1")], "nothing of it is held");
        out.clear();
        // A transaction over two streams, too large for one batch of A.
        g.push(&b, 10, &mut out);
        for m in 4..=7 {
            g.push(&a, m, &mut out);
        }
        assert_eq!(
            out,
            vec![batch("A", &[4, 5, 6])],
            "B's event waits for the end"
        );
        out.clear();
        g.end("t2", &mut out);
        g.flush(&mut out);
        assert_eq!(
            out,
            vec![singles("B", &[10]), singles("A", &[7]), Output::End("t2")]
        );
    }

    #[test]
    fn a_group_of_one_event_transactions_is_singles_until_a_transaction_gives_it_two() {
        let a: Arc<str> = "A".into();
        let mut g = Grouper::new(10);
        let mut out = Vec::new();
        for (m, end) in [(1, "t1"), (2, "t2"), (3, "t3")] {
            g.push(&a, m, &mut out);
            g.end(end, &mut out);
        }
        g.flush(&mut out);
        assert_eq!(
            out,
            vec![
                singles("A", &[1, 2, 3]),
                Output::End("t1"),
                Output::End("t2"),
                Output::End("t3")
            ]
        );
        out.clear();
        g.push(&a, 4, &mut out);
        g.end("t4", &mut out);
        g.push(&a, 5, &mut out);
        g.push(&a, 6, &mut out);
        g.end("t5", &mut out);
        g.flush(&mut out);
        assert_eq!(
            out,
            vec![batch("A", &[4, 5, 6]), Output::End("t4"), Output::End("t5")],
            "t5's two events must be atomic: the whole group is a batch"
        );
    }
}

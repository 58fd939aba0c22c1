//! The order guard's bookkeeping (see the `publish` module docs): per stream, the message the
//! next one must follow.

use std::collections::HashMap;
use std::sync::Arc;

/// Per stream, the id of the last message sent that JetStream should store, which the next
/// message expects as the stream's last. Empty at the start of a run, so the first message of
/// each stream is unconditional: everything before it is acknowledged, or already in the
/// stream.
pub struct OrderChain {
    enabled: bool,
    last: HashMap<Arc<str>, String>,
}

impl OrderChain {
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            last: HashMap::new(),
        }
    }

    /// Bytes of the `Nats-Expected-Last-Msg-Id` header the next message of `stream` will
    /// carry (0: none), for sizing it before [`OrderChain::next`] decides its id.
    pub fn expected_len(&self, stream: &str) -> usize {
        match (self.enabled, self.last.get(stream)) {
            (true, Some(last)) => {
                super::message::header_line_len("Nats-Expected-Last-Msg-Id", last.len())
            }
            _ => 0,
        }
    }

    /// The id message `id` of `stream` must follow, if any. A message JetStream is known to
    /// drop as a duplicate is not stored, so the chain does not move past it.
    pub fn next(&mut self, stream: &Arc<str>, id: &str, known_duplicate: bool) -> Option<String> {
        if !self.enabled {
            return None;
        }
        if known_duplicate {
            return self.last.get(stream).cloned();
        }
        match self.last.get_mut(stream) {
            Some(last) => Some(std::mem::replace(last, id.to_owned())),
            None => {
                self.last.insert(Arc::clone(stream), id.to_owned());
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_message_of_a_stream_expects_the_previous_one_except_the_first() {
        let (a, b): (Arc<str>, Arc<str>) = ("A".into(), "B".into());
        let mut chain = OrderChain::new(true);
        assert_eq!(chain.expected_len("A"), 0);
        assert_eq!(chain.next(&a, "1", false), None);
        assert_eq!(chain.next(&b, "x", false), None, "streams chain separately");
        assert_eq!(
            chain.expected_len("A"),
            "Nats-Expected-Last-Msg-Id: 1\r\n".len()
        );
        assert_eq!(chain.next(&a, "2", false).as_deref(), Some("1"));
        assert_eq!(
            chain.next(&a, "1", true).as_deref(),
            Some("2"),
            "a known duplicate"
        );
        assert_eq!(chain.next(&a, "3", false).as_deref(), Some("2"), "skips it");
        assert_eq!(chain.next(&b, "y", false).as_deref(), Some("x"));
    }

    #[test]
    fn without_the_guard_nothing_is_expected() {
        let a: Arc<str> = "A".into();
        let mut chain = OrderChain::new(false);
        assert_eq!(chain.next(&a, "1", false), None);
        assert_eq!(chain.next(&a, "2", false), None);
        assert_eq!(chain.expected_len("A"), 0);
    }
}

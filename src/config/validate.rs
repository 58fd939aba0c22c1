//! [`Config::validate`]: everything serde cannot check, each problem with its field path.
//! Bounds are named constants, with why they are what they are.

use super::*;

/// Below 100 ms heartbeats cost more than they tell; above 10 minutes a dead connection
/// goes unnoticed for too long (two periods).
pub const HEARTBEAT_MS: std::ops::RangeInclusive<u64> = 100..=600_000;
/// Polling the binlog end more often than every 100 ms costs the server for nothing; less
/// often than hourly says nothing.
pub const PROGRESS_INTERVAL_MS: std::ops::RangeInclusive<u64> = 100..=3_600_000;
/// Below a second every slow moment would look wedged.
pub const MIN_STALL_TIMEOUT_MS: u64 = 1_000;
/// Heartbeat periods an idle source may stay quiet before it counts as wedged.
pub const STALL_HEARTBEATS: u64 = 3;
/// JetStream's duplicate window in whole seconds; a shorter one is not a useful window.
pub const MIN_DUPLICATE_WINDOW_MS: u64 = 1_000;

impl Config {
    /// Checks everything serde cannot: reports all problems at once, each with its field path.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        self.validate_source(&mut problems);
        if self.outbox.is_empty() {
            problems.push("outbox: at least one [[outbox]] table is required".into());
        }
        let mut seen = std::collections::HashSet::new();
        for (i, table) in self.outbox.iter().enumerate() {
            let at = format!("outbox[{i}]");
            if table.schema_and_table().is_some() && !seen.insert(table.table.as_str()) {
                problems.push(format!("{at}.table: {:?} is configured twice", table.table));
            }
            table.validate(&at, &mut problems);
        }
        problems.extend(self.overlapping_streams());
        self.validate_nats(&mut problems);
        self.validate_checkpoint(&mut problems);
        if let Some(http) = &self.http {
            if http.address().is_none() {
                problems.push(format!(
                    "http.listen: {:?} is not an address like \"127.0.0.1:9187\"",
                    http.listen
                ));
            }
            // An idle source proves it is alive only once per heartbeat.
            let floor = MIN_STALL_TIMEOUT_MS.max(STALL_HEARTBEATS * self.source.heartbeat_ms);
            if http.stall_timeout_ms < floor {
                problems.push(format!(
                    "http.stall_timeout_ms: must be at least {floor} ({MIN_STALL_TIMEOUT_MS}, and {STALL_HEARTBEATS} × source.heartbeat_ms), got {}",
                    http.stall_timeout_ms
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    fn validate_source(&self, problems: &mut Vec<String>) {
        let source = &self.source;
        if source.server_id == 0 {
            problems.push(
                "source.server_id: must be a non-zero id unique among the source's replicas".into(),
            );
        }
        if !HEARTBEAT_MS.contains(&source.heartbeat_ms) {
            problems.push(format!(
                "source.heartbeat_ms: must be between {} and {}, got {}",
                HEARTBEAT_MS.start(),
                HEARTBEAT_MS.end(),
                source.heartbeat_ms
            ));
        }
        if let Some(tls) = &source.tls {
            tls.validate(problems);
        }
        if !PROGRESS_INTERVAL_MS.contains(&source.progress_interval_ms) {
            problems.push(format!(
                "source.progress_interval_ms: must be between {} and {}, got {}",
                PROGRESS_INTERVAL_MS.start(),
                PROGRESS_INTERVAL_MS.end(),
                source.progress_interval_ms
            ));
        }
        positive(
            "source.connect_timeout_ms",
            source.connect_timeout_ms,
            problems,
        );
    }

    fn validate_nats(&self, problems: &mut Vec<String>) {
        let nats = &self.nats;
        check_stream_name("nats.stream", &nats.stream, problems);
        for (i, table) in self.outbox.iter().enumerate() {
            if let Some(stream) = &table.stream {
                check_stream_name(&format!("outbox[{i}].stream"), stream, problems);
            }
        }
        if !(1..=MAX_ACK_WINDOW).contains(&nats.ack_window) {
            problems.push(format!(
                "nats.ack_window: must be between 1 and {MAX_ACK_WINDOW}, got {}",
                nats.ack_window
            ));
        }
        if nats.duplicate_window_ms < MIN_DUPLICATE_WINDOW_MS {
            problems.push(format!(
                "nats.duplicate_window_ms: must be at least {MIN_DUPLICATE_WINDOW_MS}, got {}",
                nats.duplicate_window_ms
            ));
        }
        if !(1..=5).contains(&nats.stream_replicas) {
            problems.push(format!(
                "nats.stream_replicas: must be between 1 and 5 (JetStream's limit), got {}",
                nats.stream_replicas
            ));
        }
        if nats.publish_mode == super::PublishMode::AtomicBatch && !nats.exclusive_streams {
            problems.push(
                "nats.publish_mode: \"atomic_batch\" needs nats.exclusive_streams = true (each batch expects the stream's last sequence, which only holds when nothing else writes to the stream); use \"auto\" or \"per_message\"".into(),
            );
        }
        positive("nats.ack_timeout_ms", nats.ack_timeout_ms, problems);
        positive("nats.connect_timeout_ms", nats.connect_timeout_ms, problems);
        if nats.credentials_file.is_some() && nats.nkey_seed_file.is_some() {
            problems.push(
                "nats.nkey_seed_file: a .creds file (nats.credentials_file) already holds the seed; set one of them".into(),
            );
        }
        super::tls::check_file(
            "nats.credentials_file",
            nats.credentials_file.as_deref(),
            problems,
        );
        super::tls::check_file(
            "nats.nkey_seed_file",
            nats.nkey_seed_file.as_deref(),
            problems,
        );
        if let Some(tls) = &nats.tls {
            tls.validate(problems);
        }
    }

    /// Tables of different streams whose subjects overlap: JetStream routes by subject, so one
    /// subject cannot belong to two streams.
    fn overlapping_streams(&self) -> Vec<String> {
        let filters: Vec<(usize, &str, String)> = self
            .outbox
            .iter()
            .enumerate()
            .filter_map(|(i, t)| {
                let filter = SubjectTemplate::parse(&t.subject).ok()?.filter();
                Some((i, self.stream_of(t), filter))
            })
            .collect();
        let mut problems = Vec::new();
        for (n, (i, stream_a, a)) in filters.iter().enumerate() {
            for (j, stream_b, b) in &filters[n + 1..] {
                if stream_a != stream_b && crate::route::subjects_overlap(a, b) {
                    problems.push(format!(
                        "outbox[{j}].subject: {b:?} (stream {stream_b}) overlaps outbox[{i}] {a:?} (stream {stream_a}); tables in different streams need disjoint subjects"
                    ));
                }
            }
        }
        problems
    }
}

impl OutboxTableConfig {
    /// The table's own settings; `at` is its field path (`outbox[i]`).
    fn validate(&self, at: &str, problems: &mut Vec<String>) {
        if self.schema_and_table().is_none() {
            problems.push(format!(
                "{at}.table: expected \"schema.table\", got {:?}",
                self.table
            ));
        }
        if let Err(e) = SubjectTemplate::parse(&self.subject) {
            problems.push(format!("{at}.subject: {e}"));
        }
        let dead_letter = SubjectTemplate::parse(&self.dead_letter_subject);
        if !dead_letter
            .as_ref()
            .is_ok_and(|t| !t.filter().contains('*'))
        {
            problems.push(format!(
                "{at}.dead_letter_subject: {:?} must be a plain subject without placeholders",
                self.dead_letter_subject
            ));
        }
        for (field, column) in self.columns.mapped() {
            if column.trim().is_empty() {
                problems.push(format!("{at}.columns.{field}: column name is empty"));
            }
        }
        let columns = &self.columns;
        if columns.tracing_span_context.is_some()
            && (columns.traceparent.is_some() || columns.tracestate.is_some())
        {
            problems.push(format!(
                "{at}.columns.tracing_span_context: the span context holds traceparent and tracestate already; map either it or columns.traceparent / columns.tracestate"
            ));
        }
        if columns.tracestate.is_some() && columns.traceparent.is_none() {
            problems.push(format!(
                "{at}.columns.tracestate: a tracestate means nothing without a traceparent; map columns.traceparent too"
            ));
        }
        self.validate_envelope(at, problems);
        let traced = columns.traceparent.is_some() || columns.tracing_span_context.is_some();
        for (header, column) in &self.headers {
            if traced && TRACE_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(header)) {
                problems.push(format!(
                    "{at}.headers.{header}: the mapped trace context sets this header; remove it from [outbox.headers]"
                ));
            }
            if !is_valid_header_name(header) {
                problems.push(format!(
                    "{at}.headers.{header}: not a valid header name (letters, digits and '-')"
                ));
            } else if let Some(prefix) = reserved_header_prefix(header) {
                problems.push(format!(
                    "{at}.headers.{header}: header names starting with {prefix:?} are reserved (JetStream acts on Nats-* headers, the connector sets Outbox-* itself); choose another name"
                ));
            }
            if column.trim().is_empty() {
                problems.push(format!("{at}.headers.{header}: column name is empty"));
            }
        }
    }
}

impl OutboxTableConfig {
    /// `envelope`, `cloudevents_source`, `content_type`.
    fn validate_envelope(&self, at: &str, problems: &mut Vec<String>) {
        use crate::outbox::cloudevents;
        let cloudevents = self.envelope == EnvelopeKind::Cloudevents;
        for (key, set) in [
            ("cloudevents_source", self.cloudevents_source.is_some()),
            ("content_type", self.content_type.is_some()),
        ] {
            if set && !cloudevents {
                problems.push(format!(
                    "{at}.{key}: only used with envelope = \"cloudevents\"; set that too or remove it"
                ));
            }
        }
        if let Some(source) = &self.cloudevents_source
            && !cloudevents::valid_source(source)
        {
            problems.push(format!(
                "{at}.cloudevents_source: {source:?} is not a URI-reference (non-empty, no spaces), e.g. \"https://example.com/shop\" or \"/shop/outbox\""
            ));
        }
        if let Some(ct) = &self.content_type
            && !cloudevents::valid_content_type(ct)
        {
            problems.push(format!(
                "{at}.content_type: {ct:?} is not a media type like \"application/json\""
            ));
        }
        if cloudevents {
            for header in self.headers.keys() {
                let lower = header.to_ascii_lowercase();
                if lower.starts_with("ce-") || lower == cloudevents::CONTENT_TYPE {
                    problems.push(format!(
                        "{at}.headers.{header}: the CloudEvents envelope sets ce-* and content-type headers; choose another name"
                    ));
                }
            }
        }
    }
}

/// Headers the trace context columns set.
const TRACE_HEADERS: [&str; 2] = [
    crate::outbox::trace::TRACEPARENT,
    crate::outbox::trace::TRACESTATE,
];

/// A timeout of 0 would give up before anything could answer.
fn positive(path: &str, value: u64, problems: &mut Vec<String>) {
    if value == 0 {
        problems.push(format!("{path}: must be positive (milliseconds), got 0"));
    }
}

fn check_stream_name(path: &str, stream: &str, problems: &mut Vec<String>) {
    if stream.is_empty() || stream.contains(['.', '*', '>', ' ', '/', '\\']) {
        problems.push(format!(
            "{path}: {stream:?} is not a valid stream name (non-empty, no '.', '*', '>', spaces or slashes)"
        ));
    }
}

/// Header name prefixes the `headers` mapping may not use: JetStream acts on `Nats-*`
/// headers (a mapped `Nats-Msg-Id` would make it drop distinct events as duplicates), and the
/// connector's own `Outbox-*` headers must not be replaced.
pub const RESERVED_HEADER_PREFIXES: [&str; 2] = ["Nats-", "Outbox-"];

fn reserved_header_prefix(name: &str) -> Option<&'static str> {
    RESERVED_HEADER_PREFIXES.into_iter().find(|prefix| {
        name.get(..prefix.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
    })
}

fn is_valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

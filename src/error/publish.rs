//! Errors of the JetStream publisher, classified by what JetStream answered (or did not).

/// A cause from async-nats (its stream and request errors are several types).
pub type NatsCause = Box<dyn std::error::Error + Send + Sync>;

/// Errors of the JetStream publisher.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("cannot connect to NATS at {url}")]
    Connect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("{key}: cannot read {}", .path.display())]
    Credentials {
        key: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("stream {stream} cannot be read right now ({action})")]
    StreamUnavailable {
        stream: String,
        action: &'static str,
        #[source]
        source: NatsCause,
    },
    #[error("stream {stream} does not exist; create it or set nats.create_stream = true")]
    StreamMissing { stream: String },
    #[error(
        "stream {stream}: its subjects [{}] do not cover [{}]; add them to the stream",
        .subjects.join(", "),
        .uncovered.join(", ")
    )]
    StreamNotCovering {
        stream: String,
        subjects: Vec<String>,
        uncovered: Vec<String>,
    },
    #[error("stream {stream}: duplicate_window is 0, so republished events would be stored twice")]
    NoDuplicateWindow { stream: String },
    #[error("stream {stream} cannot be created")]
    StreamCreate {
        stream: String,
        #[source]
        source: NatsCause,
    },
    #[error("not publishing event {id}: this instance's leader lease ran out")]
    LeaseExpired { id: String },
    #[error("cannot publish event {id} to {subject}")]
    Send {
        id: String,
        subject: String,
        #[source]
        source: NatsCause,
    },
    #[error(
        "event {id} on {subject} is {size} bytes, above the NATS server's max_payload of {max} bytes"
    )]
    TooLarge {
        id: String,
        subject: String,
        size: usize,
        max: usize,
    },
    #[error(
        "JetStream refused event {id} on {subject}: it was to follow {previous}, which is not the stream's last message (a message before it was lost, nats-server restarted and forgot its last message id, or another publisher writes to the stream; if so, set nats.exclusive_streams = false)"
    )]
    Overtaken {
        id: String,
        subject: String,
        previous: String,
        #[source]
        source: NatsCause,
    },
    #[error("JetStream refused event {id} on {subject}")]
    Refused {
        id: String,
        subject: String,
        #[source]
        source: NatsCause,
    },
    #[error(
        "atomic batch {batch} of stream {stream} (events {first_id} to {last_id}) was not stored"
    )]
    Batch {
        batch: String,
        stream: String,
        first_id: String,
        last_id: String,
        #[source]
        source: Box<crate::publish::batch::BatchError>,
    },
    #[error(
        "nats.publish_mode = \"atomic_batch\" needs nats-server 2.12.1 or later (this one is {version}); upgrade it, or set nats.publish_mode to \"auto\" or \"per_message\""
    )]
    AtomicBatchesUnsupported { version: String },
    #[error("cannot subscribe for JetStream's acks")]
    AckSubscribe {
        #[source]
        source: async_nats::SubscribeError,
    },
    #[error("JetStream did not confirm event {id} on {subject}: outcome unknown")]
    Ack {
        id: String,
        subject: String,
        #[source]
        source: NatsCause,
    },
}

impl PublishError {
    /// A stable label of the kind of error, for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Connect { .. } => "nats_connect",
            Self::Credentials { .. } => "nats_credentials",
            Self::StreamUnavailable { .. } => "stream_unavailable",
            Self::StreamMissing { .. } => "stream_missing",
            Self::StreamNotCovering { .. } => "stream_not_covering",
            Self::NoDuplicateWindow { .. } => "no_duplicate_window",
            Self::StreamCreate { .. } => "stream_create",
            Self::Send { .. } => "publish_send",
            Self::TooLarge { .. } => "too_large",
            Self::Overtaken { .. } => "publish_overtaken",
            Self::Refused { .. } => "publish_refused",
            Self::Ack { .. } => "publish_ack",
            Self::AckSubscribe { .. } => "ack_subscribe",
            Self::Batch { .. } => "publish_batch",
            Self::AtomicBatchesUnsupported { .. } => "atomic_batches_unsupported",
            Self::LeaseExpired { .. } => "lease_expired",
        }
    }
}

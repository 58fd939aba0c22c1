//! The checkpoint record every store keeps: the checkpoint's fields plus `version`
//! ([`RECORD_VERSION`]), as JSON. Version 1 (before `last_event`, `handled_through` and
//! `xa_prepared`) is read too. A record that does not parse in full is an error, never "no
//! checkpoint".

use super::{Checkpoint, CheckpointError};

/// The record format version this build writes.
pub const RECORD_VERSION: u32 = 2;
/// The oldest record format version this build reads.
pub const OLDEST_RECORD_VERSION: u32 = 1;

/// The record of `checkpoint` (pretty JSON with a final newline: people read these).
pub fn encode(checkpoint: &Checkpoint) -> Vec<u8> {
    let mut record = serde_json::to_value(checkpoint).expect("checkpoint serialises");
    if let Some(fields) = record.as_object_mut() {
        fields.insert("version".into(), RECORD_VERSION.into());
    }
    let mut body = serde_json::to_vec_pretty(&record).expect("record serialises");
    body.push(b'\n');
    body
}

/// The checkpoint a record holds; `store` describes where it came from, for errors.
pub fn decode(bytes: &[u8], store: impl Fn() -> String) -> Result<Checkpoint, CheckpointError> {
    let corrupt = |reason: String| CheckpointError::Corrupt {
        store: store(),
        reason,
    };
    let mut value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    let found = value
        .as_object_mut()
        .and_then(|record| record.remove("version"))
        .and_then(|v| v.as_u64())
        .ok_or_else(|| corrupt("no version field".into()))?;
    if !(u64::from(OLDEST_RECORD_VERSION)..=u64::from(RECORD_VERSION)).contains(&found) {
        return Err(CheckpointError::Version {
            store: store(),
            found,
            oldest: OLDEST_RECORD_VERSION,
            newest: RECORD_VERSION,
        });
    }
    serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))
}

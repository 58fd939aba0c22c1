//! `[checkpoint]`: where the acknowledged position is kept, and `[ha]`: the leader lease that
//! lets a standby take over.

use std::path::PathBuf;

use serde::Deserialize;

/// Where the checkpoint is kept, chosen by `store` (`"file"` when not given).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "store", rename_all = "snake_case")]
pub enum CheckpointConfig {
    /// A local file, replaced atomically; a lock file beside it keeps a second connector out.
    File(FileCheckpointConfig),
    /// A key of a NATS KV bucket (on the `[nats]` server), written only if nobody else wrote
    /// it since: shared by every instance of a connector, so that a standby can take over.
    Nats(NatsCheckpointConfig),
}

/// The store used when `[checkpoint]` names none.
pub const DEFAULT_CHECKPOINT_STORE: &str = "file";
/// The KV bucket of `store = "nats"` unless configured.
pub const DEFAULT_CHECKPOINT_BUCKET: &str = "binlog_outbox_checkpoints";
/// The KV bucket of the leader leases unless configured.
pub const DEFAULT_LEASE_BUCKET: &str = "binlog_outbox_leases";
/// A standby takes over at most this long after the leader died without a word (it stops
/// writing long before: see [`crate::ha`]).
pub const DEFAULT_LEASE_MS: u64 = 10_000;
/// Leases are renewed every sixth of a lease; below a second that is a KV write more often
/// than every 170 ms.
pub const MIN_LEASE_MS: u64 = 1_000;

/// `[checkpoint] store = "file"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCheckpointConfig {
    /// File holding the last acknowledged transaction end. Its directory must exist or be
    /// creatable.
    pub path: PathBuf,
}

/// `[checkpoint] store = "nats"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsCheckpointConfig {
    /// The KV bucket, created when missing.
    #[serde(default = "default_checkpoint_bucket")]
    pub bucket: String,
    /// This connector's key in the bucket: one per source database.
    pub key: String,
    /// Replicas of a bucket this connector creates (3 on a JetStream cluster).
    #[serde(default = "one")]
    pub replicas: usize,
}

/// `[ha]`: run as one of several instances of the same connector; only the holder of the
/// lease reads the binlog and publishes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaConfig {
    #[serde(default)]
    pub enabled: bool,
    /// The KV bucket of the leases, created when missing. Every connector sharing it must
    /// use the same `lease_ms` (it is the bucket's max age).
    #[serde(default = "default_lease_bucket")]
    pub bucket: String,
    /// The lease's key: `checkpoint.key` unless set.
    #[serde(default)]
    pub key: Option<String>,
    /// How long a lease lives without renewal: the longest a standby waits after a leader
    /// died without releasing it.
    #[serde(default = "default_lease_ms")]
    pub lease_ms: u64,
    /// This instance's name in the lease (logs, `status`): `host:pid` unless set.
    #[serde(default)]
    pub instance: Option<String>,
    /// Replicas of a lease bucket this connector creates.
    #[serde(default = "one")]
    pub replicas: usize,
}

impl HaConfig {
    /// The lease key, given the checkpoint's key.
    pub fn key_for<'a>(&'a self, checkpoint: &'a CheckpointConfig) -> &'a str {
        match (&self.key, checkpoint) {
            (Some(key), _) => key,
            (None, CheckpointConfig::Nats(nats)) => &nats.key,
            (None, CheckpointConfig::File(_)) => "",
        }
    }
}

fn default_checkpoint_bucket() -> String {
    DEFAULT_CHECKPOINT_BUCKET.into()
}
fn default_lease_bucket() -> String {
    DEFAULT_LEASE_BUCKET.into()
}
fn default_lease_ms() -> u64 {
    DEFAULT_LEASE_MS
}
fn one() -> usize {
    1
}

/// A KV bucket name: letters, digits, `-` and `_`.
pub fn is_bucket_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A KV key: letters, digits and `-_=./`, not starting or ending with `.`.
pub fn is_key_name(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with('.')
        && !key.ends_with('.')
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_=./".contains(&b))
}

impl super::Config {
    /// Problems of `[checkpoint]` and `[ha]`, each with its key.
    pub(super) fn validate_checkpoint(&self, problems: &mut Vec<String>) {
        match &self.checkpoint {
            CheckpointConfig::File(file) if file.path.as_os_str().is_empty() => {
                problems.push("checkpoint.path: must not be empty".into());
            }
            CheckpointConfig::File(_) => {}
            CheckpointConfig::Nats(nats) => {
                if !is_bucket_name(&nats.bucket) {
                    problems.push(format!(
                        "checkpoint.bucket: {:?} is not a KV bucket name (letters, digits, - and _)",
                        nats.bucket
                    ));
                }
                if !is_key_name(&nats.key) {
                    problems.push(format!(
                        "checkpoint.key: {:?} is not a KV key (letters, digits and -_=./, not starting or ending with .)",
                        nats.key
                    ));
                }
                replicas("checkpoint.replicas", nats.replicas, problems);
            }
        }
        let Some(ha) = self.ha.as_ref().filter(|ha| ha.enabled) else {
            return;
        };
        if matches!(self.checkpoint, CheckpointConfig::File(_)) {
            problems.push(
                "ha.enabled: the instances must share the checkpoint: set [checkpoint] store = \"nats\" with a key".into(),
            );
        } else if !is_key_name(ha.key_for(&self.checkpoint)) {
            problems.push(format!(
                "ha.key: {:?} is not a KV key (letters, digits and -_=./)",
                ha.key_for(&self.checkpoint)
            ));
        }
        if let CheckpointConfig::Nats(nats) = &self.checkpoint
            && nats.bucket == ha.bucket
        {
            problems.push(format!(
                "ha.bucket: {:?} is also checkpoint.bucket; leases expire, checkpoints must not: use two buckets",
                ha.bucket
            ));
        }
        if !self.nats.exclusive_streams {
            problems.push(
                "ha.enabled: needs nats.exclusive_streams = true (the order guard also keeps a deposed leader's late publishes out of the stream)".into(),
            );
        }
        if !is_bucket_name(&ha.bucket) {
            problems.push(format!(
                "ha.bucket: {:?} is not a KV bucket name (letters, digits, - and _)",
                ha.bucket
            ));
        }
        if ha.lease_ms < MIN_LEASE_MS {
            problems.push(format!(
                "ha.lease_ms: must be at least {MIN_LEASE_MS} (renewed every sixth of a lease), got {}",
                ha.lease_ms
            ));
        }
        if ha.instance.as_deref().is_some_and(str::is_empty) {
            problems.push("ha.instance: must not be empty (leave it out for host:pid)".into());
        }
        replicas("ha.replicas", ha.replicas, problems);
    }
}

fn replicas(key: &str, n: usize, problems: &mut Vec<String>) {
    if !(1..=5).contains(&n) {
        problems.push(format!("{key}: must be between 1 and 5, got {n}"));
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Config, ConfigError};
    use super::*;

    const BASE: &str = r#"
        [source]
        url = "mysql://cdc:secret@127.0.0.1:3306"
        server_id = 4201

        [[outbox]]
        table = "shop.outbox"

        [nats]
        url = "nats://127.0.0.1:4222"
        stream = "OUTBOX"
    "#;

    fn load(tail: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, format!("{BASE}\n{tail}")).unwrap();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::load_with_env(&path, env)
    }

    fn problems(tail: &str) -> String {
        load(tail, &[]).unwrap_err().to_string()
    }

    #[test]
    fn the_nats_store_and_the_lease_get_their_defaults() {
        let c = load(
            "[checkpoint]\nstore = \"nats\"\nkey = \"shop\"\n[ha]\nenabled = true\n",
            &[],
        )
        .unwrap();
        let CheckpointConfig::Nats(nats) = &c.checkpoint else {
            panic!("{:?}", c.checkpoint);
        };
        assert_eq!(nats.bucket, DEFAULT_CHECKPOINT_BUCKET);
        assert_eq!(nats.replicas, 1);
        let ha = c.ha.as_ref().unwrap();
        assert_eq!(ha.lease_ms, DEFAULT_LEASE_MS);
        assert_eq!(ha.bucket, DEFAULT_LEASE_BUCKET);
        assert_eq!(ha.key_for(&c.checkpoint), "shop", "the checkpoint's key");
    }

    #[test]
    fn ha_can_be_switched_off_from_the_environment() {
        let c = load(
            "[checkpoint]\nstore = \"nats\"\nkey = \"shop\"\n[ha]\nenabled = true\n",
            &[("BINLOG_OUTBOX__HA__ENABLED", "false")],
        )
        .unwrap();
        assert!(!c.ha.unwrap().enabled);
    }

    #[test]
    fn ha_needs_a_shared_checkpoint_and_sane_names_and_lease() {
        let text = problems("[checkpoint]\npath = \"cp\"\n[ha]\nenabled = true\nlease_ms = 10\n");
        assert!(
            text.contains("ha.enabled: the instances must share"),
            "{text}"
        );
        assert!(
            text.contains("ha.lease_ms: must be at least 1000"),
            "{text}"
        );
        let text = problems(
            "[checkpoint]\nstore = \"nats\"\nkey = \"a b\"\nbucket = \"x.y\"\nreplicas = 7\n[ha]\nenabled = true\nbucket = \"\"\ninstance = \"\"\n",
        );
        for expected in [
            "checkpoint.key: \"a b\" is not a KV key",
            "checkpoint.bucket: \"x.y\" is not a KV bucket name",
            "checkpoint.replicas: must be between 1 and 5",
            "ha.bucket",
            "ha.instance: must not be empty",
        ] {
            assert!(text.contains(expected), "{expected}: {text}");
        }
    }

    #[test]
    fn ha_needs_two_buckets_and_the_order_guard() {
        let text = problems(
            "[checkpoint]\nstore = \"nats\"\nkey = \"k\"\nbucket = \"same\"\n[ha]\nenabled = true\nbucket = \"same\"\n",
        );
        assert!(
            text.contains("ha.bucket: \"same\" is also checkpoint.bucket"),
            "{text}"
        );
        let err = load(
            "[checkpoint]\nstore = \"nats\"\nkey = \"k\"\n[ha]\nenabled = true\n",
            &[("BINLOG_OUTBOX__NATS__EXCLUSIVE_STREAMS", "false")],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("needs nats.exclusive_streams = true"), "{err}");
    }

    #[test]
    fn the_nats_store_needs_a_key_and_knows_only_its_own_keys() {
        let text = load("[checkpoint]\nstore = \"nats\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(text.contains("key"), "{text}");
        let text = load(
            "[checkpoint]\nstore = \"nats\"\nkey = \"k\"\npath = \"p\"\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(text.contains("path"), "{text}");
    }

    #[test]
    fn kv_names() {
        assert!(is_bucket_name("binlog_outbox-1"));
        assert!(!is_bucket_name("a.b") && !is_bucket_name(""));
        assert!(is_key_name("shop/eu-1.orders=x"));
        assert!(!is_key_name(".a") && !is_key_name("a.") && !is_key_name("a b"));
    }
}

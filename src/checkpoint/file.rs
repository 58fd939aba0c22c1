//! Checkpoint file store: JSON record, replaced atomically.
//!
//! `save` writes a temp file in the same directory, fsyncs it, renames it over the checkpoint
//! and fsyncs the directory, so after a crash the file holds either the old or the new
//! checkpoint, never a torn one.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{
    CHECKPOINT_VERSION, Checkpoint, CheckpointError, CheckpointStore, OLDEST_CHECKPOINT_VERSION,
};

#[derive(Debug)]
pub struct FileCheckpointStore {
    path: PathBuf,
    /// Held for the store's lifetime when opened with [`FileCheckpointStore::lock`].
    _lock: Option<File>,
}

impl FileCheckpointStore {
    /// A store for reading and writing `path`, without taking the instance lock.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            _lock: None,
        }
    }

    /// Opens the store and takes an exclusive lock (`<path>.lock`) for as long as it lives, so
    /// that two connectors can never share one checkpoint. The OS releases the lock when the
    /// process dies, however it dies.
    pub fn lock(path: impl Into<PathBuf>) -> Result<Self, CheckpointError> {
        let mut store = Self::new(path);
        fs::create_dir_all(store.dir()).map_err(store.io("create the directory of"))?;
        let mut lock_name = store.path.clone().into_os_string();
        lock_name.push(".lock");
        let lock_path = PathBuf::from(lock_name);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(store.io("create the lock file of"))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(CheckpointError::Locked {
                    path: store.path.clone(),
                    lock: lock_path,
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(store.io("lock")(e)),
        }
        store._lock = Some(file);
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, action: &'static str) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
        move |source| CheckpointError::Io {
            action,
            path: self.path.clone(),
            source,
        }
    }

    fn dir(&self) -> &Path {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        }
    }
}

impl CheckpointStore for FileCheckpointStore {
    fn load(&self) -> Result<Option<Checkpoint>, CheckpointError> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io("read")(e)),
        };
        let corrupt = |reason: String| CheckpointError::Corrupt {
            path: self.path.clone(),
            reason,
        };
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        let found = value
            .get("version")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| corrupt("no version field".into()))?;
        if !(u64::from(OLDEST_CHECKPOINT_VERSION)..=u64::from(CHECKPOINT_VERSION)).contains(&found)
        {
            return Err(CheckpointError::Version {
                path: self.path.clone(),
                found: found.try_into().unwrap_or(u32::MAX),
            });
        }
        let mut checkpoint: Checkpoint =
            serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))?;
        // Written again in this build's version.
        checkpoint.version = CHECKPOINT_VERSION;
        Ok(Some(checkpoint))
    }

    fn save(&self, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
        let dir = self.dir();
        fs::create_dir_all(dir).map_err(self.io("create the directory of"))?;
        let mut body = serde_json::to_vec_pretty(checkpoint).expect("checkpoint serialises");
        body.push(b'\n');
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "checkpoint".into());
        let tmp = dir.join(format!(".{name}.tmp"));
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(self.io("create temp file for"))?;
        file.write_all(&body).map_err(self.io("write"))?;
        file.sync_all().map_err(self.io("fsync"))?;
        drop(file);
        fs::rename(&tmp, &self.path).map_err(self.io("rename temp file over"))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(self.io("fsync the directory of"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::position::{BinlogPosition, MariadbGtidList};

    #[test]
    fn missing_file_means_no_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileCheckpointStore::new(dir.path().join("none"));
        assert_eq!(store.load().unwrap(), None);
    }

    #[test]
    fn save_then_load_round_trips_and_creates_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileCheckpointStore::new(dir.path().join("sub/dir/cp.json"));
        let cp = Checkpoint::new(
            BinlogPosition::new("bin.000003", 777),
            Some("0-1-9,2-5-3".parse::<MariadbGtidList>().unwrap()),
        );
        store.save(&cp).unwrap();
        assert_eq!(store.load().unwrap(), Some(cp.clone()));
        let cp2 = Checkpoint::new(BinlogPosition::new("bin.000004", 4), None);
        store.save(&cp2).unwrap();
        assert_eq!(store.load().unwrap(), Some(cp2));
        let leftovers: Vec<_> = fs::read_dir(dir.path().join("sub/dir")).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "temp file must be renamed away");
    }

    #[test]
    fn a_second_instance_cannot_take_the_same_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.json");
        let first = FileCheckpointStore::lock(&path).unwrap();
        let err = FileCheckpointStore::lock(&path).unwrap_err();
        assert!(matches!(err, CheckpointError::Locked { .. }), "{err}");
        assert!(err.to_string().contains("another binlog-outbox"), "{err}");
        drop(first);
        FileCheckpointStore::lock(&path).expect("lock is released with the store");
    }

    #[test]
    fn truncated_or_garbage_file_is_an_error_not_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.json");
        let store = FileCheckpointStore::new(&path);
        for content in ["{\"version\":1,\"posi", "garbage", "{\"version\":1}", ""] {
            fs::write(&path, content).unwrap();
            let err = store.load().unwrap_err();
            assert!(
                matches!(err, CheckpointError::Corrupt { .. }),
                "{content}: {err}"
            );
        }
        fs::write(&path, r#"{"version":1,"position":"b.1:4","gtid":"0-1-5"}"#).unwrap();
        let v1 = store.load().unwrap().expect("version 1 is read");
        assert_eq!(v1.version, CHECKPOINT_VERSION);
        assert_eq!(v1.last_event, None);
        assert!(v1.xa_prepared.is_empty());
        fs::write(&path, r#"{"version":99,"position":"b.1:4"}"#).unwrap();
        assert!(matches!(
            store.load().unwrap_err(),
            CheckpointError::Version { found: 99, .. }
        ));
    }
}

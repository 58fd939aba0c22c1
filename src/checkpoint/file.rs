//! Checkpoint file store: a versioned JSON record, replaced atomically.
//!
//! `save` writes a temp file in the same directory, fsyncs it, renames it over the checkpoint
//! and fsyncs the directory, so after a crash the file holds either the old or the new
//! checkpoint, never a torn one. The file holds the versioned record of [`super::record`].

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use futures::FutureExt;
use futures::future::BoxFuture;

use super::{Checkpoint, CheckpointError, CheckpointStore};

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
        fs::create_dir_all(dir_of(&store.path))
            .map_err(io(&store.path, "create the directory of"))?;
        let mut lock_name = store.path.clone().into_os_string();
        lock_name.push(".lock");
        let lock_path = PathBuf::from(lock_name);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&store.path, "create the lock file of"))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(CheckpointError::Locked {
                    store: describe(&store.path),
                    lock: format!("lock {}", lock_path.display()),
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(io(&store.path, "lock")(e)),
        }
        store._lock = Some(file);
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl CheckpointStore for FileCheckpointStore {
    fn load(&self) -> BoxFuture<'_, Result<Option<Checkpoint>, CheckpointError>> {
        let path = self.path.clone();
        async move {
            tokio::task::spawn_blocking(move || read_file(&path))
                .await
                .expect("checkpoint read does not panic")
        }
        .boxed()
    }

    fn save<'a>(
        &'a self,
        checkpoint: &'a Checkpoint,
    ) -> BoxFuture<'a, Result<(), CheckpointError>> {
        let path = self.path.clone();
        let checkpoint = checkpoint.clone();
        async move {
            tokio::task::spawn_blocking(move || write_file(&path, &checkpoint))
                .await
                .expect("checkpoint save does not panic")
        }
        .boxed()
    }

    fn saved_at(&self) -> BoxFuture<'_, Result<Option<std::time::SystemTime>, CheckpointError>> {
        let path = self.path.clone();
        async move {
            match fs::metadata(&path).and_then(|m| m.modified()) {
                Ok(time) => Ok(Some(time)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(io(&path, "read the time of")(e)),
            }
        }
        .boxed()
    }

    fn describe(&self) -> String {
        describe(&self.path)
    }
}

fn describe(path: &Path) -> String {
    format!("checkpoint file {}", path.display())
}

fn io(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> CheckpointError {
    let store = describe(path);
    move |source| CheckpointError::Io {
        action,
        store,
        source,
    }
}

fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Reads a checkpoint file: `None` when there is none.
pub fn read_file(path: &Path) -> Result<Option<Checkpoint>, CheckpointError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path, "read")(e)),
    };
    super::record::decode(&bytes, || describe(path)).map(Some)
}

fn write_file(path: &Path, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
    let dir = dir_of(path);
    fs::create_dir_all(dir).map_err(io(path, "create the directory of"))?;
    let body = super::record::encode(checkpoint);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "checkpoint".into());
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io(path, "create the temp file of"))?;
    file.write_all(&body).map_err(io(path, "write"))?;
    file.sync_all().map_err(io(path, "fsync"))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io(path, "rename the temp file over"))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(path, "fsync the directory of"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::position::{BinlogPosition, EventMark, MariadbGtidList};

    #[tokio::test]
    async fn missing_file_means_no_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileCheckpointStore::new(dir.path().join("none"));
        assert_eq!(store.load().await.unwrap(), None);
    }

    #[tokio::test]
    async fn save_then_load_round_trips_and_creates_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileCheckpointStore::new(dir.path().join("sub/dir/cp.json"));
        let cp = Checkpoint {
            last_event: Some(EventMark {
                position: BinlogPosition::new("bin.000003", 700),
                checksum: 0xabcdef01,
            }),
            handled_through: Some(BinlogPosition::new("bin.000003", 900)),
            xa_prepared: vec![crate::position::PreparedXa {
                xid: "X'01',X'',1".parse().unwrap(),
                outbox_rows: true,
            }],
            ..Checkpoint::new(
                BinlogPosition::new("bin.000003", 777),
                Some("0-1-9,2-5-3".parse::<MariadbGtidList>().unwrap()),
            )
        };
        store.save(&cp).await.unwrap();
        assert_eq!(store.load().await.unwrap(), Some(cp.clone()));
        let text = fs::read_to_string(store.path()).unwrap();
        assert!(text.contains("\"version\": 2"), "{text}");
        let cp2 = Checkpoint::new(BinlogPosition::new("bin.000004", 4), None);
        store.save(&cp2).await.unwrap();
        assert_eq!(store.load().await.unwrap(), Some(cp2));
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
    fn truncated_garbage_or_future_files_are_errors_and_version_1_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.json");
        for content in ["{\"version\":1,\"posi", "garbage", "{\"version\":1}", ""] {
            fs::write(&path, content).unwrap();
            let err = read_file(&path).unwrap_err();
            assert!(
                matches!(err, CheckpointError::Corrupt { .. }),
                "{content}: {err}"
            );
        }
        fs::write(&path, r#"{"version":1,"position":"b.1:4","gtid":"0-1-5"}"#).unwrap();
        let v1 = read_file(&path).unwrap().expect("version 1 is read");
        assert_eq!(v1.last_event, None);
        assert!(v1.xa_prepared.is_empty());
        fs::write(&path, r#"{"version":99,"position":"b.1:4"}"#).unwrap();
        assert!(matches!(
            read_file(&path).unwrap_err(),
            CheckpointError::Version { found: 99, .. }
        ));
    }
}

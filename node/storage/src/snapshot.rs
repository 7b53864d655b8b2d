//! [`SnapshotStore`]: one snapshot file (`snapshot.bin` unless named otherwise), replaced
//! atomically.
//!
//! # On-disk format
//!
//! ```text
//! snapshot.bin: magic "KVLSNAP1" | len u64 LE | crc u32 LE | payload (len bytes)
//!               crc = CRC-32 (IEEE) of len LE ‖ payload
//! ```
//!
//! # Atomic replacement
//!
//! [`SnapshotStore::save`] writes `snapshot.bin.tmp`, fsyncs it, renames it over
//! `snapshot.bin` and fsyncs the directory. A crash at any point leaves either the old
//! snapshot or the new one under `snapshot.bin`, never a mix; a leftover
//! `snapshot.bin.tmp` is ignored by [`SnapshotStore::load`] and removed by
//! [`SnapshotStore::open`].

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::StorageError;
use crate::vfs::{Vfs, VfsFile};

/// The largest snapshot payload [`SnapshotStore::save`] accepts, and the largest length
/// [`SnapshotStore::load`] believes.
pub const MAX_SNAPSHOT_BYTES: u64 = 1 << 30;

/// The snapshot's file name in its directory.
pub const SNAPSHOT_FILE_NAME: &str = "snapshot.bin";

/// The temporary file a snapshot is written to before it is renamed into place.
pub const SNAPSHOT_TEMP_FILE_NAME: &str = "snapshot.bin.tmp";

const SNAPSHOT_MAGIC: [u8; 8] = *b"KVLSNAP1";
const SNAPSHOT_HEADER_BYTES: usize = 20;

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> StorageError + 'a {
    move |source| StorageError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

fn snapshot_crc(len: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// The latest snapshot of a node, kept in `snapshot.bin` of one directory.
pub struct SnapshotStore<V: Vfs> {
    vfs: V,
    dir: PathBuf,
    path: PathBuf,
    temp_path: PathBuf,
    removed_leftover_temp: bool,
}

impl<V: Vfs> fmt::Debug for SnapshotStore<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotStore")
            .field("path", &self.path)
            .finish()
    }
}

impl<V: Vfs> SnapshotStore<V> {
    /// Opens the store in `dir` (creating the directory if needed) and removes a
    /// temporary file a crash may have left behind mid-save.
    pub fn open(vfs: V, dir: &Path) -> Result<Self, StorageError> {
        Self::open_named(vfs, dir, SNAPSHOT_FILE_NAME)
    }

    /// [`SnapshotStore::open`] for a snapshot kept in `dir/file_name` (its temporary file
    /// is `file_name` + `.tmp`), so that several stores share one directory.
    pub fn open_named(vfs: V, dir: &Path, file_name: &str) -> Result<Self, StorageError> {
        vfs.create_dir_all(dir)
            .map_err(io_err(dir, "create directory"))?;
        let mut store = SnapshotStore {
            vfs,
            dir: dir.to_path_buf(),
            path: dir.join(file_name),
            temp_path: dir.join(format!("{file_name}.tmp")),
            removed_leftover_temp: false,
        };
        store.removed_leftover_temp = store.remove_temp()?;
        Ok(store)
    }

    fn remove_temp(&self) -> Result<bool, StorageError> {
        let exists = self
            .vfs
            .exists(&self.temp_path)
            .map_err(io_err(&self.temp_path, "stat"))?;
        if exists {
            self.vfs
                .remove_file(&self.temp_path)
                .map_err(io_err(&self.temp_path, "remove leftover temp snapshot"))?;
        }
        Ok(exists)
    }

    /// Durably and atomically replaces the snapshot with `data`: when this returns, a
    /// crash leaves `data` as the snapshot; if it fails or a crash interrupts it, the
    /// snapshot is the old one or the new one, never a mix. Snapshots are always fsynced,
    /// whatever the log's [`crate::FsyncPolicy`].
    pub fn save(&mut self, data: &[u8]) -> Result<(), StorageError> {
        let len = data.len() as u64;
        if len > MAX_SNAPSHOT_BYTES {
            return Err(StorageError::SnapshotTooLarge {
                len_bytes: len,
                max_bytes: MAX_SNAPSHOT_BYTES,
            });
        }
        self.remove_temp()?;
        let mut header = [0u8; SNAPSHOT_HEADER_BYTES];
        header[..8].copy_from_slice(&SNAPSHOT_MAGIC);
        header[8..16].copy_from_slice(&len.to_le_bytes());
        header[16..20].copy_from_slice(&snapshot_crc(len, data).to_le_bytes());

        let tmp = &self.temp_path;
        let mut file = self
            .vfs
            .create(tmp)
            .map_err(io_err(tmp, "create temp snapshot"))?;
        file.write_all(&header)
            .map_err(io_err(tmp, "write temp snapshot"))?;
        file.write_all(data)
            .map_err(io_err(tmp, "write temp snapshot"))?;
        file.sync_all()
            .map_err(io_err(tmp, "fsync temp snapshot"))?;
        drop(file);
        self.vfs
            .rename(tmp, &self.path)
            .map_err(io_err(&self.path, "rename temp snapshot into place"))?;
        self.vfs
            .sync_dir(&self.dir)
            .map_err(io_err(&self.dir, "fsync directory"))?;
        Ok(())
    }

    /// The current snapshot, `None` if none was ever saved. A damaged snapshot file is
    /// [`StorageError::CorruptSnapshot`] naming it; a leftover temp file is ignored.
    pub fn load(&self) -> Result<Option<Vec<u8>>, StorageError> {
        let exists = self
            .vfs
            .exists(&self.path)
            .map_err(io_err(&self.path, "stat"))?;
        if !exists {
            return Ok(None);
        }
        let bytes = self
            .vfs
            .read(&self.path)
            .map_err(io_err(&self.path, "read snapshot"))?;
        let corrupt = |reason: String| StorageError::CorruptSnapshot {
            file: self.path.clone(),
            reason,
        };
        if bytes.len() < SNAPSHOT_HEADER_BYTES {
            return Err(corrupt(format!(
                "incomplete header: {} of {SNAPSHOT_HEADER_BYTES} bytes",
                bytes.len()
            )));
        }
        if bytes[..8] != SNAPSHOT_MAGIC {
            return Err(corrupt("bad magic".to_owned()));
        }
        let mut len8 = [0u8; 8];
        len8.copy_from_slice(&bytes[8..16]);
        let len = u64::from_le_bytes(len8);
        let mut crc4 = [0u8; 4];
        crc4.copy_from_slice(&bytes[16..20]);
        let stored_crc = u32::from_le_bytes(crc4);
        let actual = (bytes.len() - SNAPSHOT_HEADER_BYTES) as u64;
        if len != actual {
            return Err(corrupt(format!(
                "header says {len} payload bytes, file holds {actual}"
            )));
        }
        let payload = &bytes[SNAPSHOT_HEADER_BYTES..];
        let crc = snapshot_crc(len, payload);
        if crc != stored_crc {
            return Err(corrupt(format!(
                "checksum mismatch (stored {stored_crc:#010x}, computed {crc:#010x})"
            )));
        }
        Ok(Some(payload.to_vec()))
    }

    /// Whether [`SnapshotStore::open`] found and removed a temp file left by a crash.
    pub fn removed_leftover_temp(&self) -> bool {
        self.removed_leftover_temp
    }

    /// The snapshot file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

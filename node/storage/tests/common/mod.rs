//! Helpers shared by the integration tests: run one scenario on both file systems, and
//! damage files the same way on either.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use kvlab_storage::{FsyncPolicy, RealFs, SimFs, StorageOptions, Vfs, VfsFile};

/// A file system under test plus the directory the scenario uses, with byte-level
/// damage helpers (which bypass the storage layer, like a disk fault would).
pub trait Disk: Vfs {
    /// Overwrites `bytes` at `offset` in place, durably.
    fn poke(&self, path: &Path, offset: u64, bytes: &[u8]);
    /// Appends `bytes` at the end, durably.
    fn append_raw(&self, path: &Path, bytes: &[u8]) {
        let mut f = self.open_append(path).expect("open for raw append");
        f.write_all(bytes).expect("raw append");
        f.sync_all().expect("raw sync");
    }
    /// Cuts the file to `len`, durably.
    fn cut(&self, path: &Path, len: u64) {
        let mut f = self.open_append(path).expect("open for cut");
        f.truncate(len).expect("cut");
        f.sync_all().expect("sync cut");
    }
    /// Creates a file with `bytes`, durably.
    fn put(&self, path: &Path, bytes: &[u8]) {
        let mut f = self.create(path).expect("create raw");
        f.write_all(bytes).expect("write raw");
        f.sync_all().expect("sync raw");
        self.sync_dir(path.parent().expect("parent"))
            .expect("sync dir");
    }
    fn size(&self, path: &Path) -> u64 {
        self.read(path).expect("read").len() as u64
    }
    /// Power fails now: on the simulated disk, unsynced data may be lost (real files
    /// cannot lose power in a test; there the process "crash" is dropping the log
    /// without closing it).
    fn power_loss(&self) {}
}

impl Disk for SimFs {
    fn power_loss(&self) {
        self.crash(
            &mut kvlab_types::seeded_rng(0),
            &kvlab_storage::CrashOptions::default(),
        );
    }

    fn poke(&self, path: &Path, offset: u64, bytes: &[u8]) {
        let old = self.read(path).expect("read");
        for (i, b) in bytes.iter().enumerate() {
            let off = offset + i as u64;
            self.corrupt_byte(path, off, old[off as usize] ^ b)
                .expect("corrupt byte");
        }
    }
}

impl Disk for RealFs {
    fn poke(&self, path: &Path, offset: u64, bytes: &[u8]) {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .expect("open for poke");
        f.seek(SeekFrom::Start(offset)).expect("seek");
        f.write_all(bytes).expect("poke");
        f.sync_all().expect("sync poke");
    }
}

/// Calls `f` once with a `SimFs` and once with a `RealFs` in a new temp directory.
#[macro_export]
macro_rules! on_both_fs {
    ($f:ident) => {{
        $f(
            kvlab_storage::SimFs::new(),
            std::path::PathBuf::from("/node"),
        );
        let tmp = tempfile::tempdir().expect("tempdir");
        $f(kvlab_storage::RealFs, tmp.path().join("node"));
    }};
}

pub fn opts(fsync: FsyncPolicy, segment_size_bytes: u64) -> StorageOptions {
    StorageOptions {
        fsync,
        segment_size_bytes,
        ..StorageOptions::default()
    }
}

/// The segment files in `dir`, oldest first.
pub fn segments<V: Vfs>(vfs: &V, dir: &Path) -> Vec<PathBuf> {
    vfs.list_dir(dir)
        .expect("list")
        .into_iter()
        .filter(|n| n.starts_with("wal-") && n.ends_with(".log"))
        .map(|n| dir.join(n))
        .collect()
}

/// A payload that is recognisably the `i`-th one of a test, of varying length.
pub fn payload(i: u64, len: usize) -> Vec<u8> {
    let mut v = format!("rec-{i}-").into_bytes();
    v.resize(len.max(v.len()), (i % 251) as u8);
    v
}

/// A [`Vfs`] wrapper that lets the first `budget` mutating calls (create, write, sync,
/// truncate, rename, remove, directory sync) through and fails every later call: the
/// process "loses power" at that step. Pair it with [`kvlab_storage::SimFs::crash`] to
/// crash a multi-step operation at every possible point.
#[derive(Clone, Debug)]
pub struct FailAfter<V> {
    pub inner: V,
    budget: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

impl<V: Vfs> FailAfter<V> {
    pub fn new(inner: V, budget: i64) -> Self {
        FailAfter {
            inner,
            budget: std::sync::Arc::new(std::sync::atomic::AtomicI64::new(budget)),
        }
    }

    /// Whether the budget ran out (some call failed).
    pub fn tripped(&self) -> bool {
        self.budget.load(std::sync::atomic::Ordering::SeqCst) < 0
    }

    fn spend(budget: &std::sync::atomic::AtomicI64) -> std::io::Result<()> {
        spend(budget)
    }
}

fn spend(budget: &std::sync::atomic::AtomicI64) -> std::io::Result<()> {
    {
        if budget.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) <= 0 {
            // Stay exhausted.
            budget.store(-1, std::sync::atomic::Ordering::SeqCst);
            Err(std::io::Error::other("injected power loss"))
        } else {
            Ok(())
        }
    }
}

#[derive(Debug)]
pub struct FailAfterFile<F> {
    inner: F,
    budget: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

impl<F: VfsFile> VfsFile for FailAfterFile<F> {
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        spend(&self.budget)?;
        self.inner.write_all(buf)
    }
    fn sync_data(&mut self) -> std::io::Result<()> {
        spend(&self.budget)?;
        self.inner.sync_data()
    }
    fn sync_all(&mut self) -> std::io::Result<()> {
        spend(&self.budget)?;
        self.inner.sync_all()
    }
    fn truncate(&mut self, len_bytes: u64) -> std::io::Result<()> {
        spend(&self.budget)?;
        self.inner.truncate(len_bytes)
    }
    fn len_bytes(&self) -> std::io::Result<u64> {
        self.inner.len_bytes()
    }
}

impl<V: Vfs> Vfs for FailAfter<V> {
    type File = FailAfterFile<V::File>;
    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn list_dir(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        self.inner.list_dir(dir)
    }
    fn exists(&self, path: &Path) -> std::io::Result<bool> {
        self.inner.exists(path)
    }
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        self.inner.read(path)
    }
    fn create(&self, path: &Path) -> std::io::Result<Self::File> {
        Self::spend(&self.budget)?;
        Ok(FailAfterFile {
            inner: self.inner.create(path)?,
            budget: self.budget.clone(),
        })
    }
    fn open_append(&self, path: &Path) -> std::io::Result<Self::File> {
        Ok(FailAfterFile {
            inner: self.inner.open_append(path)?,
            budget: self.budget.clone(),
        })
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        Self::spend(&self.budget)?;
        self.inner.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        Self::spend(&self.budget)?;
        self.inner.remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        Self::spend(&self.budget)?;
        self.inner.sync_dir(dir)
    }
}

/// Runs `check(seed)` for every seed in `seeds` (or only `$KVLAB_STORAGE_SEED` when set)
/// and panics with the first failing seed and the command that reproduces it.
pub fn for_seeds(
    test_name: &str,
    seeds: std::ops::Range<u64>,
    check: impl Fn(u64) -> Result<(), String>,
) {
    let seeds: Vec<u64> = match std::env::var("KVLAB_STORAGE_SEED") {
        Ok(s) => vec![s.parse().expect("KVLAB_STORAGE_SEED must be a u64")],
        Err(_) => seeds.collect(),
    };
    for seed in seeds {
        if let Err(msg) = check(seed) {
            panic!(
                "seed {seed} failed: {msg}\nreproduce: KVLAB_STORAGE_SEED={seed} cargo test -p kvlab-storage --test {test_name}"
            );
        }
    }
}

//! The file-system seam: the few operations the WAL and the snapshot store need, with
//! their durability contract, and [`RealFs`], the implementation over `std::fs`.
//!
//! The contract every implementation must honour (and that [`crate::SimFs`] models):
//!
//! - Bytes written to a file are *not* durable until [`VfsFile::sync_data`] (or
//!   [`VfsFile::sync_all`]) on that file returns. After power loss an unsynced file may
//!   keep any prefix of its unsynced bytes, and the last write it keeps may be torn.
//! - Creating, renaming and removing a file changes the directory; such a change is not
//!   durable until [`Vfs::sync_dir`] on the parent directory returns. Syncing a file does
//!   not make its name durable.
//! - A rename within one directory is atomic: after power loss the target name refers to
//!   either the old file or the new one, never to a mix.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// A file system the storage layer can run on: real files ([`RealFs`]) or the simulated
/// crash-prone disk ([`crate::SimFs`]).
///
/// A `Vfs` value is a cheap handle (`Clone`); every clone sees the same files.
pub trait Vfs: Clone + Send + Sync + fmt::Debug + 'static {
    /// An open file, positioned for appending.
    type File: VfsFile;

    /// Creates `dir` and its missing ancestors. Directory creation is durable when this
    /// returns (`RealFs` syncs each parent it touched).
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;

    /// Names of the regular files directly in `dir`, sorted by byte order.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>>;

    /// Whether a file exists at `path`.
    fn exists(&self, path: &Path) -> io::Result<bool>;

    /// Reads the whole file at `path` (what a reader would see now, durable or not).
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;

    /// Creates the file at `path`, or truncates it to zero bytes if it exists, and opens
    /// it for appending. Neither the name nor the truncation is durable until synced.
    fn create(&self, path: &Path) -> io::Result<Self::File>;

    /// Opens the existing file at `path` for appending at its end.
    fn open_append(&self, path: &Path) -> io::Result<Self::File>;

    /// Atomically renames `from` to `to` (same directory), replacing `to` if it exists.
    /// Durable after [`Vfs::sync_dir`] of the directory.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Removes the file at `path`. Durable after [`Vfs::sync_dir`] of the directory.
    fn remove_file(&self, path: &Path) -> io::Result<()>;

    /// Makes every creation, rename and removal in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// An open file of a [`Vfs`]. Every write appends at the end of the file.
pub trait VfsFile: Send + fmt::Debug {
    /// Appends `buf` at the end of the file (not durable until synced).
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;

    /// Makes the file's content and size durable (`fdatasync`).
    fn sync_data(&mut self) -> io::Result<()>;

    /// Makes the file's content, size and metadata durable (`fsync`).
    fn sync_all(&mut self) -> io::Result<()>;

    /// Cuts the file to `len_bytes` (later writes append after the cut). Not durable
    /// until synced.
    fn truncate(&mut self, len_bytes: u64) -> io::Result<()>;

    /// The current size of the file in bytes.
    fn len_bytes(&self) -> io::Result<u64>;
}

/// The real file system, through `std::fs`, with real `fdatasync`/`fsync` and directory
/// fsync (open the directory and `sync_all` it).
#[derive(Clone, Copy, Debug, Default)]
pub struct RealFs;

/// A real file opened by [`RealFs`], always in append mode.
#[derive(Debug)]
pub struct RealFile {
    file: File,
}

impl Vfs for RealFs {
    type File = RealFile;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        if dir.is_dir() {
            return Ok(());
        }
        // Create the missing ancestors first, then this directory, syncing each parent so
        // that the new directory entries survive power loss.
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            self.create_dir_all(parent)?;
        }
        match fs::create_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
            Err(e) => return Err(e),
        }
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            self.sync_dir(parent)?;
        }
        Ok(())
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                // Names that are not UTF-8 cannot be ours; skip them.
                if let Ok(name) = entry.file_name().into_string() {
                    names.push(name);
                }
            }
        }
        names.sort();
        Ok(names)
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        path.try_exists()
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn create(&self, path: &Path) -> io::Result<RealFile> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(path)?;
        // Reopen semantics: append mode, so writes after a truncate land at the new end.
        drop(file);
        self.open_append(path)
    }

    fn open_append(&self, path: &Path) -> io::Result<RealFile> {
        let file = OpenOptions::new().append(true).open(path)?;
        Ok(RealFile { file })
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

impl VfsFile for RealFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all(buf)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn sync_all(&mut self) -> io::Result<()> {
        self.file.sync_all()
    }

    fn truncate(&mut self, len_bytes: u64) -> io::Result<()> {
        self.file.set_len(len_bytes)
    }

    fn len_bytes(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
}

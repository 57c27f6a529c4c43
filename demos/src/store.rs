//! The file store on disk: [`DirStore`], the real [`Store`] behind the file demo's
//! receivers, and [`FileSender::from_path`], a sender of a file on disk.
//!
//! The machines in [`proto::file`](crate::proto::file) write through the [`Store`] trait
//! and read through [`Read`](std::io::Read), never through `std::fs` themselves; the wiring (the CLI,
//! [`serve`](crate::serve)) makes the real ones here and hands them over.

use crate::proto::file::{check_name, FileSender, Store, TempFile};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Files in a directory on disk; see the [module docs](crate::proto::file#storage-all-or-nothing).
#[derive(Clone, Debug)]
pub struct DirStore {
    dir: PathBuf,
}

impl DirStore {
    /// Files go into `dir`, which is created (with its parents) when the first transfer
    /// starts if it is missing.
    pub fn new(dir: impl Into<PathBuf>) -> DirStore {
        DirStore { dir: dir.into() }
    }

    /// Like [`DirStore::new`], creating `dir` now, so a bad path is reported at start-up.
    pub fn create(dir: impl Into<PathBuf>) -> io::Result<DirStore> {
        let store = DirStore::new(dir);
        fs::create_dir_all(&store.dir)?;
        Ok(store)
    }

    /// The directory files go into.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Makes temporary names unique within this process (the pid covers other processes).
static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// The prefix of [`DirStore`]'s temporary files (a leading dot: never a received name).
pub const TEMP_PREFIX: &str = ".sockloop-";

impl Store for DirStore {
    type Temp = DirTemp;

    fn create_temp(&mut self, name: &str) -> io::Result<DirTemp> {
        // The machine checked the name; checking again costs nothing and keeps this type
        // safe for any other caller.
        check_name(name.as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("name {e}")))?;
        fs::create_dir_all(&self.dir)?;
        let final_path = self.dir.join(name);
        if fs::symlink_metadata(&final_path).is_ok() {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        // Not derived from `name`: a 255-byte name plus a suffix would be too long.
        let mut attempts = 0;
        loop {
            let seq = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
            let temp_path = self
                .dir
                .join(format!("{TEMP_PREFIX}{}-{seq}.part", std::process::id()));
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&temp_path)
            {
                Ok(file) => {
                    log::trace!("file: writing {} as {}", name, temp_path.display());
                    return Ok(DirTemp {
                        file: Some(file),
                        temp_path,
                        final_path,
                        committed: false,
                    });
                }
                // Left by a process that had our pid before us: try the next number.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 16 => {
                    attempts += 1
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// A file being written by a [`DirStore`].
#[derive(Debug)]
pub struct DirTemp {
    /// `None` once closed for the commit.
    file: Option<File>,
    temp_path: PathBuf,
    final_path: PathBuf,
    committed: bool,
}

impl TempFile for DirTemp {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.write_all(bytes),
            None => Err(io::Error::other("the file is already closed")),
        }
    }

    fn commit(mut self) -> io::Result<()> {
        if let Some(file) = self.file.take() {
            // The bytes reach the disk before the name does: after a crash the final
            // name holds the whole file or does not exist.
            file.sync_all()?;
        }
        // A hard link, unlike `rename`, fails if the final name exists: a file that
        // arrived meanwhile under the same name is never replaced.
        fs::hard_link(&self.temp_path, &self.final_path)?;
        self.committed = true;
        if let Err(e) = fs::remove_file(&self.temp_path) {
            log::warn!(
                "file: stored {} but could not remove {}: {e}",
                self.final_path.display(),
                self.temp_path.display()
            );
        }
        Ok(())
    }

    fn abort(self) {
        // Drop removes it.
    }
}

impl Drop for DirTemp {
    fn drop(&mut self) {
        if !self.committed {
            self.file = None;
            match fs::remove_file(&self.temp_path) {
                Ok(()) => log::trace!("file: removed {}", self.temp_path.display()),
                Err(e) => log::warn!("file: cannot remove {}: {e}", self.temp_path.display()),
            }
        }
    }
}

impl FileSender<File> {
    /// A sender of the file at `path`, named after its last component.
    pub fn from_path(path: &Path) -> io::Result<FileSender<File>> {
        let invalid = |why: String| io::Error::new(io::ErrorKind::InvalidInput, why);
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| invalid(format!("{} has no UTF-8 file name", path.display())))?;
        let file = File::open(path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(invalid(format!("{} is not a regular file", path.display())));
        }
        FileSender::new(name, meta.len(), file)
            .map_err(|e| invalid(format!("the name {name:?} would be refused: {e}")))
    }
}

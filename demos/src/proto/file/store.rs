//! Where a receiver puts files: the [`Store`] trait, and [`MemStore`], in memory. The
//! store on disk, [`DirStore`](crate::store::DirStore), is outside the I/O-free `proto/`.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};

/// Where a receiver puts files: the machine's only way to the disk.
pub trait Store {
    /// A file being written.
    type Temp: TempFile;

    /// Starts a file that becomes `name` when committed. Errors with
    /// [`io::ErrorKind::AlreadyExists`] if `name` is taken.
    fn create_temp(&mut self, name: &str) -> io::Result<Self::Temp>;
}

/// A file being received: invisible under its final name until committed.
///
/// Dropping one that was not committed discards it, like [`TempFile::abort`].
pub trait TempFile {
    /// Appends `bytes`.
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()>;

    /// Gives the file its final name, atomically. Never replaces an existing file: errors
    /// with [`io::ErrorKind::AlreadyExists`] if the name was taken meanwhile, and the
    /// file is discarded on any error.
    fn commit(self) -> io::Result<()>;

    /// Discards the file.
    fn abort(self);
}

/// Files in memory, for tests and examples: a clone sees the same files.
#[derive(Clone, Debug, Default)]
pub struct MemStore {
    inner: Arc<Mutex<MemFiles>>,
}

#[derive(Debug, Default)]
struct MemFiles {
    files: BTreeMap<String, Vec<u8>>,
    open_temps: usize,
    /// Most bytes one file may hold; writes past it fail like a full disk.
    limit: Option<usize>,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> MemStore {
        MemStore::default()
    }

    /// An empty store whose files can hold at most `limit` bytes each; a write past it
    /// fails, like a full disk.
    pub fn with_limit(limit: usize) -> MemStore {
        let store = MemStore::new();
        store.lock().limit = Some(limit);
        store
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemFiles> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores `bytes` under `name` directly, as if received earlier.
    pub fn insert(&self, name: &str, bytes: &[u8]) {
        self.lock().files.insert(name.to_owned(), bytes.to_vec());
    }

    /// The committed file called `name`, if any.
    pub fn file(&self, name: &str) -> Option<Vec<u8>> {
        self.lock().files.get(name).cloned()
    }

    /// The names of every committed file, sorted.
    pub fn names(&self) -> Vec<String> {
        self.lock().files.keys().cloned().collect()
    }

    /// How many files are being written now (neither committed nor discarded).
    pub fn open_temps(&self) -> usize {
        self.lock().open_temps
    }
}

impl Store for MemStore {
    type Temp = MemTemp;

    fn create_temp(&mut self, name: &str) -> io::Result<MemTemp> {
        let mut files = self.lock();
        if files.files.contains_key(name) {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        files.open_temps += 1;
        Ok(MemTemp {
            store: self.clone(),
            name: name.to_owned(),
            bytes: Vec::new(),
            limit: files.limit,
        })
    }
}

/// A file being written into a [`MemStore`].
#[derive(Debug)]
pub struct MemTemp {
    store: MemStore,
    name: String,
    bytes: Vec<u8>,
    limit: Option<usize>,
}

impl TempFile for MemTemp {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self
            .limit
            .is_some_and(|limit| self.bytes.len() + bytes.len() > limit)
        {
            return Err(io::Error::other("no space left in the memory store"));
        }
        self.bytes.extend_from_slice(bytes);
        Ok(())
    }

    fn commit(mut self) -> io::Result<()> {
        let mut files = self.store.lock();
        if files.files.contains_key(&self.name) {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        let bytes = std::mem::take(&mut self.bytes);
        files.files.insert(std::mem::take(&mut self.name), bytes);
        Ok(())
    }

    fn abort(self) {}
}

impl Drop for MemTemp {
    fn drop(&mut self) {
        self.store.lock().open_temps -= 1;
    }
}

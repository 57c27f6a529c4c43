//! File transfer: "send a file to a friend with your own program" (tutorial 001).
//!
//! One connection carries one file. The sender names it and says how long it is, sends
//! exactly that many bytes, and waits for the receiver to say what it stored:
//!
//! ```text
//! sender   -> receiver   FILE notes.txt 12\n                then exactly 12 bytes
//! receiver -> sender     OK 12 <SHA-256 of the 12 bytes, 64 lowercase hex digits>\n
//!                     or ERR <reason>\n
//! ```
//!
//! After its reply the receiver closes. The sender succeeds only when the size and the
//! digest in `OK` are those of the bytes it sent: TCP's checksum is weak, and a
//! digest catches a receiver that stored something else (a full disk, a bug).
//!
//! # Names
//!
//! The name becomes a file name in the receiver's directory, so it is checked before a
//! byte is written ([`check_name`]). Refused: the empty name; names longer than
//! [`MAX_NAME`] bytes (255, the usual file-name limit); names that are not UTF-8; and names
//! containing `/` or `\` (another directory), `..` (anywhere: `a..b` is harmless but
//! refusing every `..` is simpler to trust), NUL, a space (the header is space-separated;
//! `my notes.txt` would otherwise need quoting) or any other control character (terminal
//! escapes in a listing), or starting with `.` (hidden files, and the receiver's own
//! temporary files). There is no quoting: a name the rules refuse cannot be sent.
//!
//! # Sizes
//!
//! The size is decimal ASCII digits (no sign, no spaces) for a `u64`, at most
//! [`FileReceiver::with_max_size`] (default [`DEFAULT_MAX_SIZE`], 64 GiB); a larger
//! size is refused before any byte is stored. Bytes that follow the announced size are not
//! part of the file and are discarded. A `\r` before the header's `\n` is accepted.
//!
//! # Replies
//!
//! | reply | when |
//! |---|---|
//! | `OK <size> <sha256>` | the file is stored under its name |
//! | `ERR malformed header: expected FILE <name> <size>` | anything else; EOF mid-header |
//! | `ERR header too long` | no newline within [`MAX_HEADER`] bytes |
//! | `ERR bad name: <why>` | the name breaks a rule above |
//! | `ERR bad size` | the size is not decimal digits |
//! | `ERR too large: the limit is <n> bytes` | the size is over the receiver's limit |
//! | `ERR exists` | a file of that name is already there (it is never overwritten) |
//! | `ERR cannot store` | the receiver's disk failed (the cause is in its log) |
//! | `ERR truncated: got <n> of <size> bytes` | the sender closed before the last byte |
//!
//! # Storage: all or nothing
//!
//! The receiver writes through a [`Store`], never through `std::fs` itself, so its tests
//! run in memory ([`MemStore`]) and the machine stays sans-I/O. [`DirStore`] is the real
//! one: it writes to a temporary file in the target directory (named
//! `.sockloop-<pid>-<n>.part`: its leading dot is one no accepted name has, so the two
//! never collide) and gives it the final name only once every byte has arrived and been
//! hashed, *before* `OK` goes out. An interrupted transfer (early EOF, a reset, a
//! refused header, the server stopping) leaves nothing under the final name, and the
//! temporary file is removed. An existing file is never replaced: the name is checked
//! when the header arrives, and again, atomically, when the file is committed (with a
//! hard link, which fails if the name was taken meanwhile).
//!
//! The trade-off: disk writes block. On the reactor a slow disk holds up every connection
//! on the loop while one chunk is written, and while the finished file is synced to disk
//! before it is named. That is fine for a loopback demo and a page cache that absorbs
//! writes; a real server would hand writes to a thread pool (and would need a way for the
//! machine to wait for them, which the contract does not have). Each transfer also holds
//! one more fd, its temporary file, on top of its socket.
//!
//! # Memory stays constant, whatever the file size
//!
//! - The receiver consumes every byte it is handed ([`Protocol::handle_input`] always
//!   returns the whole input once the header is complete), writes it and hashes it
//!   incrementally. It holds no body bytes between calls.
//! - The sender reads the file [`CHUNK`] (64 KiB) at a time through an injected
//!   [`Read`]. It asks for [`Protocol::handle_writable`] with [`Out::want_writable`], so
//!   the driver asks for the next chunk only once the last one has been taken by the
//!   socket: one chunk in the sender, at most one in the driver, the rest is the kernel's.
//!
//! # Serving and sending
//!
//! A receiver is one [`FileReceiver`] per connection, under any driver:
//!
//! ```no_run
//! use sockloop_demos::proto::file::{DirStore, FileReceiver};
//! use sockloop::reactor::Reactor;
//!
//! let mut reactor = Reactor::new()?;
//! let inbox = DirStore::create("inbox")?;
//! reactor.listen("127.0.0.1:7001".parse().unwrap(), move || {
//!     FileReceiver::new(inbox.clone())
//! })?;
//! reactor.run()?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! A sender is a [`FileSender`] on an outgoing connection; its [`Outcome`] says how the
//! transfer ended once the connection is gone:
//!
//! ```no_run
//! use sockloop::net::Endpoint;
//! use sockloop_demos::proto::file::FileSender;
//! use sockloop::reactor::Reactor;
//! use std::time::Duration;
//!
//! let sender = FileSender::from_path("notes.txt".as_ref())?;
//! let outcome = sender.outcome();
//! let mut reactor = Reactor::new()?;
//! let to = Endpoint::parse("127.0.0.1:7001").unwrap();
//! let conn = reactor.connect(&to, Some(Duration::from_secs(5)), sender)?;
//! while reactor.phase(conn).is_some() {
//!     reactor.run_once(None)?;
//! }
//! match outcome.get() {
//!     Some(Ok(sent)) => println!("sent {} bytes, sha256 {}", sent.size, sent.sha256),
//!     Some(Err(e)) => eprintln!("not sent: {e}"),
//!     None => unreachable!("the outcome is recorded by the time the connection closes"),
//! }
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! Not implemented: resuming a transfer, several files per connection, compression,
//! authentication, encryption.

use super::{CloseReason, Out, PeerError, Protocol};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// How much of the file the sender reads and hands to the driver per call: one read
/// buffer's worth, like the reactor's own (64 KiB).
pub const CHUNK: usize = 64 * 1024;

/// The longest name accepted, in bytes: `NAME_MAX` on Linux's common file systems.
pub const MAX_NAME: usize = 255;

/// The largest file a receiver accepts unless told otherwise: 64 GiB.
pub const DEFAULT_MAX_SIZE: u64 = 64 << 30;

/// The longest header line accepted, newline included. The longest valid header is
/// `FILE ` + 255 + ` ` + 20 digits + `\r\n` = 283 bytes; the margin lets a name a little
/// over the limit get the precise "longer than 255 bytes" answer.
pub const MAX_HEADER: usize = 1024;

/// The longest reply line the sender accepts, newline included (`OK` needs 88 bytes).
pub const MAX_REPLY: usize = 1024;

const PREFIX: &[u8] = b"FILE ";

// ---------------------------------------------------------------------------------------
// Names and the header.

/// Why a name is refused; see the [module docs](self#names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameError {
    /// The name is empty.
    Empty,
    /// The name is longer than [`MAX_NAME`] bytes.
    TooLong,
    /// The name is not UTF-8.
    NotUtf8,
    /// The name contains `/` or `\`.
    Separator,
    /// The name contains `..`.
    DotDot,
    /// The name starts with `.`.
    LeadingDot,
    /// The name contains a NUL byte.
    Nul,
    /// The name contains a space.
    Space,
    /// The name contains a control character other than NUL.
    Control,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameError::Empty => "empty",
            NameError::TooLong => "longer than 255 bytes",
            NameError::NotUtf8 => "not UTF-8",
            NameError::Separator => "contains a path separator",
            NameError::DotDot => "contains ..",
            NameError::LeadingDot => "starts with .",
            NameError::Nul => "contains NUL",
            NameError::Space => "contains a space",
            NameError::Control => "contains a control character",
        })
    }
}

impl std::error::Error for NameError {}

/// Checks `name` against the rules in the [module docs](self#names); returns it as text.
pub fn check_name(name: &[u8]) -> Result<&str, NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME {
        return Err(NameError::TooLong);
    }
    // The byte checks come first so that a name with NUL or `/` is called that, even
    // when it is not UTF-8 as well.
    if name.contains(&0) {
        return Err(NameError::Nul);
    }
    if name.iter().any(|&b| b == b'/' || b == b'\\') {
        return Err(NameError::Separator);
    }
    if name.starts_with(b".") {
        return Err(NameError::LeadingDot);
    }
    if name.windows(2).any(|w| w == b"..") {
        return Err(NameError::DotDot);
    }
    let text = std::str::from_utf8(name).map_err(|_| NameError::NotUtf8)?;
    if text.contains(' ') {
        return Err(NameError::Space);
    }
    if text.chars().any(char::is_control) {
        return Err(NameError::Control);
    }
    Ok(text)
}

/// A parsed header: the file's name and size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header<'a> {
    /// The name, already checked by [`check_name`].
    pub name: &'a str,
    /// The number of bytes that follow the header.
    pub size: u64,
}

/// The result of an incremental parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed<T> {
    /// More bytes are needed; none were consumed.
    Partial,
    /// A whole value, and how many bytes it took (its line ending included).
    Complete(T, usize),
}

/// Why a receiver refuses a transfer: the text after `ERR ` in its reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The first line is not `FILE <name> <size>`.
    Malformed,
    /// No newline within [`MAX_HEADER`] bytes.
    HeaderTooLong,
    /// The name breaks a rule.
    BadName(NameError),
    /// The size is not decimal digits.
    BadSize,
    /// The size is over the receiver's limit.
    TooLarge {
        /// The receiver's limit, in bytes.
        limit: u64,
    },
    /// A file of that name exists already.
    Exists,
    /// The store failed (the cause is logged by the receiver).
    CannotStore,
    /// The sender closed before the last byte.
    Truncated {
        /// Bytes received.
        got: u64,
        /// Bytes announced.
        size: u64,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Malformed => f.write_str("malformed header: expected FILE <name> <size>"),
            Refusal::HeaderTooLong => f.write_str("header too long"),
            Refusal::BadName(e) => write!(f, "bad name: {e}"),
            Refusal::BadSize => f.write_str("bad size"),
            Refusal::TooLarge { limit } => write!(f, "too large: the limit is {limit} bytes"),
            Refusal::Exists => f.write_str("exists"),
            Refusal::CannotStore => f.write_str("cannot store"),
            Refusal::Truncated { got, size } => write!(f, "truncated: got {got} of {size} bytes"),
        }
    }
}

/// Parses `FILE <name> <size>\n` from the start of `input`, refusing sizes over
/// `max_size`. Input that cannot become a header is refused as soon as that is clear
/// (`GET /` is refused at its first byte), not when its newline arrives.
pub fn parse_header(input: &[u8], max_size: u64) -> Result<Parsed<Header<'_>>, Refusal> {
    let n = input.len().min(PREFIX.len());
    if input[..n] != PREFIX[..n] {
        return Err(Refusal::Malformed);
    }
    let Some(nl) = input.iter().position(|&b| b == b'\n') else {
        return if input.len() >= MAX_HEADER {
            Err(Refusal::HeaderTooLong)
        } else {
            Ok(Parsed::Partial)
        };
    };
    if nl >= MAX_HEADER {
        return Err(Refusal::HeaderTooLong);
    }
    let line = &input[..nl];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    // A newline inside "FILE " itself leaves no prefix to strip.
    let rest = line.strip_prefix(PREFIX).ok_or(Refusal::Malformed)?;
    // The size is the last field; everything before it is the name (so a name with a
    // space is refused for its space, not as a malformed line).
    let sp = rest
        .iter()
        .rposition(|&b| b == b' ')
        .ok_or(Refusal::Malformed)?;
    let name = check_name(&rest[..sp]).map_err(Refusal::BadName)?;
    let size = parse_size(&rest[sp + 1..], max_size)?;
    Ok(Parsed::Complete(Header { name, size }, nl + 1))
}

fn parse_size(digits: &[u8], max_size: u64) -> Result<u64, Refusal> {
    // `u64::from_str` would also take a leading `+`: check the digits ourselves.
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(Refusal::BadSize);
    }
    let too_large = Refusal::TooLarge { limit: max_size };
    // All digits, so the only way to fail is overflow: more than any limit.
    let size: u64 = std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(too_large.clone())?;
    if size > max_size {
        return Err(too_large);
    }
    Ok(size)
}

/// Lowercase hex of `bytes`, as `OK` carries a digest.
fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

// ---------------------------------------------------------------------------------------
// Storage.

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

/// Files in a directory on disk; see the [module docs](self#storage-all-or-nothing).
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

// ---------------------------------------------------------------------------------------
// The receiver.

/// The receiving side: stores one file per connection through a [`Store`].
///
/// ```text
///   Header ── FILE <name> <size>\n, name free ──▶ Body ── <size> bytes ──▶ Done (OK sent)
///     │                                            │
///     └── refused ──▶ Done (ERR sent)             └── EOF / close / write error ──▶ Done
///                                                     (ERR sent if possible; temp removed)
/// ```
pub struct FileReceiver<S: Store> {
    store: S,
    max_size: u64,
    state: Recv<S::Temp>,
}

/// Where a receiver is in its one transfer.
enum Recv<T> {
    /// Waiting for the header line; its bytes stay unconsumed until the newline.
    Header,
    /// Writing the body into a temporary file.
    Body(Body<T>),
    /// The reply (`OK` or `ERR`) is written; later input is discarded until the close.
    Done,
}

struct Body<T> {
    name: String,
    size: u64,
    /// Bytes still to come.
    left: u64,
    temp: T,
    hasher: Sha256,
}

impl<T> fmt::Display for Recv<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Recv::Header => f.write_str("Header"),
            Recv::Body(b) => write!(f, "Body({} of {} bytes)", b.size - b.left, b.size),
            Recv::Done => f.write_str("Done"),
        }
    }
}

impl<S: Store> FileReceiver<S> {
    /// A receiver for one connection, storing into `store`, with the default size limit.
    pub fn new(store: S) -> FileReceiver<S> {
        FileReceiver {
            store,
            max_size: DEFAULT_MAX_SIZE,
            state: Recv::Header,
        }
    }

    /// The same receiver, refusing files larger than `max_size` bytes.
    pub fn with_max_size(mut self, max_size: u64) -> FileReceiver<S> {
        self.max_size = max_size;
        self
    }

    fn set_state(&mut self, next: Recv<S::Temp>) -> Recv<S::Temp> {
        log::trace!("file recv state={}=>{}", self.state, next);
        std::mem::replace(&mut self.state, next)
    }

    /// A header arrived: start the file, or refuse it.
    fn start(&mut self, name: &str, size: u64, out: &mut Out<'_>) {
        match self.store.create_temp(name) {
            Ok(temp) => {
                log::debug!("file: receiving {name} ({size} bytes)");
                self.set_state(Recv::Body(Body {
                    name: name.to_owned(),
                    size,
                    left: size,
                    temp,
                    hasher: Sha256::new(),
                }));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => self.refuse(Refusal::Exists, out),
            Err(e) => {
                log::warn!("file: cannot start {name}: {e}");
                self.refuse(Refusal::CannotStore, out);
            }
        }
    }

    /// Writes body bytes; finishes once the last one is in. Consumes all of `bytes`
    /// (those past the announced size are discarded).
    fn body(&mut self, bytes: &[u8], out: &mut Out<'_>) -> usize {
        let Recv::Body(b) = &mut self.state else {
            return bytes.len();
        };
        let take = bytes
            .len()
            .min(usize::try_from(b.left).unwrap_or(usize::MAX));
        if take > 0 {
            if let Err(e) = b.temp.write_all(&bytes[..take]) {
                log::warn!("file: writing {} failed: {e}", b.name);
                self.refuse(Refusal::CannotStore, out);
                return bytes.len();
            }
            b.hasher.update(&bytes[..take]);
            b.left -= take as u64;
        }
        if b.left == 0 {
            self.finish(out);
        }
        bytes.len()
    }

    /// Every byte is in: commit, then say `OK` (or why not).
    fn finish(&mut self, out: &mut Out<'_>) {
        let Recv::Body(b) = self.set_state(Recv::Done) else {
            return;
        };
        let digest = hex(&b.hasher.finalize());
        match b.temp.commit() {
            Ok(()) => {
                log::info!(
                    "file: received {}: {} bytes, sha256 {digest}",
                    b.name,
                    b.size
                );
                out.push(format!("OK {} {digest}\n", b.size).as_bytes());
                out.close();
            }
            Err(e) => {
                let refusal = if e.kind() == io::ErrorKind::AlreadyExists {
                    Refusal::Exists
                } else {
                    log::warn!("file: storing {} failed: {e}", b.name);
                    Refusal::CannotStore
                };
                self.refuse(refusal, out);
            }
        }
    }

    /// Answers `ERR`, discards any file begun, and closes.
    fn refuse(&mut self, refusal: Refusal, out: &mut Out<'_>) {
        if let Recv::Body(b) = self.set_state(Recv::Done) {
            b.temp.abort();
        }
        log::debug!("file: refused: {refusal}");
        out.push(format!("ERR {refusal}\n").as_bytes());
        out.close();
    }
}

impl<S: Store> Protocol for FileReceiver<S> {
    fn handle_input(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<usize, PeerError> {
        match self.state {
            // The header: nothing is consumed until its newline.
            Recv::Header => match parse_header(input, self.max_size) {
                Ok(Parsed::Partial) => Ok(0),
                Ok(Parsed::Complete(h, used)) => {
                    self.start(h.name, h.size, out);
                    // The body may have arrived with the header (and an empty file is
                    // complete at once).
                    let rest = &input[used..];
                    Ok(used + self.body(rest, out))
                }
                Err(refusal) => {
                    self.refuse(refusal, out);
                    Ok(input.len())
                }
            },
            // The body: every byte is written and consumed at once.
            Recv::Body(_) => Ok(self.body(input, out)),
            // Replied: what follows is not ours to store.
            Recv::Done => Ok(input.len()),
        }
    }

    fn handle_eof(&mut self, rest: &[u8], out: &mut Out<'_>) -> Result<(), PeerError> {
        match &self.state {
            // Connected and left without a word: nothing to answer.
            Recv::Header if rest.is_empty() => Ok(()),
            Recv::Header => {
                self.refuse(Refusal::Malformed, out);
                Err(PeerError::new("stream ended inside the file header"))
            }
            Recv::Body(b) => {
                let (got, size) = (b.size - b.left, b.size);
                self.refuse(Refusal::Truncated { got, size }, out);
                Err(PeerError::new(format!(
                    "stream ended after {got} of {size} file bytes"
                )))
            }
            Recv::Done => Ok(()),
        }
    }

    fn handle_shutdown(&mut self, out: &mut Out<'_>) {
        // A transfer under way may finish within the driver's grace period; if it does
        // not, `handle_close` discards it.
        if !matches!(self.state, Recv::Body(_)) {
            out.close();
        }
    }

    fn handle_close(&mut self, reason: &CloseReason) {
        if let Recv::Body(b) = self.set_state(Recv::Done) {
            log::debug!(
                "file: {} interrupted after {} of {} bytes ({reason}): discarded",
                b.name,
                b.size - b.left,
                b.size
            );
            b.temp.abort();
        }
    }
}

// ---------------------------------------------------------------------------------------
// The sender.

/// A file the receiver confirmed: same size, same digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    /// The name it was sent under.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256, in lowercase hex.
    pub sha256: String,
}

/// Why a file was not sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendError {
    /// The receiver answered `ERR <reason>`.
    Refused(String),
    /// The receiver stored something other than what was sent.
    Mismatch {
        /// Bytes sent.
        sent_size: u64,
        /// SHA-256 of the bytes sent.
        sent_sha256: String,
        /// Bytes the receiver says it stored.
        stored_size: u64,
        /// SHA-256 the receiver computed.
        stored_sha256: String,
    },
    /// The reply was neither `OK <size> <sha256>` nor `ERR <reason>`, or came too early.
    BadReply(String),
    /// Reading the file failed, or it ended before its announced size.
    Read(String),
    /// The connection ended before a reply arrived.
    Disconnected(CloseReason),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Refused(why) => write!(f, "the receiver refused the file: {why}"),
            SendError::Mismatch {
                sent_size,
                sent_sha256,
                stored_size,
                stored_sha256,
            } => write!(
                f,
                "the receiver stored {stored_size} bytes with sha256 {stored_sha256}, \
                 but {sent_size} bytes with sha256 {sent_sha256} were sent"
            ),
            SendError::BadReply(what) => write!(f, "unexpected reply: {what}"),
            SendError::Read(what) => write!(f, "reading the file failed: {what}"),
            SendError::Disconnected(reason) => {
                write!(f, "the connection ended before a reply ({reason})")
            }
        }
    }
}

impl std::error::Error for SendError {}

/// Where a [`FileSender`] records how its transfer ended, for the caller to read after
/// the driver is done with the machine. Clones share the record.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    inner: Arc<Mutex<Option<Result<Sent, SendError>>>>,
}

impl Outcome {
    /// How the transfer ended, or `None` while it is still under way.
    pub fn get(&self) -> Option<Result<Sent, SendError>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records `result` unless an earlier one was recorded (the first cause wins).
    fn set(&self, result: Result<Sent, SendError>) {
        let mut slot = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            match &result {
                Ok(s) => log::debug!(
                    "file: sent {}: {} bytes, sha256 {}",
                    s.name,
                    s.size,
                    s.sha256
                ),
                Err(e) => log::debug!("file: not sent: {e}"),
            }
            *slot = Some(result);
        }
    }
}

/// Where a sender is in its one transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sending {
    /// Not connected yet.
    Connecting,
    /// The header is out; the body goes out a chunk per `handle_writable`.
    Streaming,
    /// Every byte is out; waiting for `OK` or `ERR`.
    AwaitingReply,
    /// The outcome is recorded; nothing more is sent.
    Done,
}

impl fmt::Display for Sending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The sending side: streams one file from an injected reader and checks the reply.
///
/// ```text
///   Connecting ── open: header ──▶ Streaming ── last chunk ──▶ AwaitingReply ── OK/ERR ──▶ Done
///                 (empty file: straight to AwaitingReply)  │                 │
///                       ERR early, read error, close ──────┴─────────────────┴──▶ Done
/// ```
///
/// How it ended is recorded in its [`Outcome`] (take one with [`FileSender::outcome`]
/// before handing the machine to a driver).
///
/// The reactor reads while it streams, so a receiver that refuses early (`ERR exists`)
/// stops the stream at once. The blocking driver reads only once it has written the
/// whole file: there an early refusal is seen after that, or, if the receiver has closed
/// meanwhile, as a failed write ([`SendError::Disconnected`]).
pub struct FileSender<R> {
    name: String,
    size: u64,
    reader: R,
    state: Sending,
    /// Bytes handed to the driver so far.
    sent: u64,
    hasher: Sha256,
    /// One chunk, allocated when the first is read.
    buf: Vec<u8>,
    outcome: Outcome,
}

impl<R: Read> FileSender<R> {
    /// A sender of `size` bytes read from `reader`, named `name` at the receiver.
    /// Errors if the receiver would refuse the name.
    pub fn new(name: &str, size: u64, reader: R) -> Result<FileSender<R>, NameError> {
        check_name(name.as_bytes())?;
        Ok(FileSender {
            name: name.to_owned(),
            size,
            reader,
            state: Sending::Connecting,
            sent: 0,
            hasher: Sha256::new(),
            buf: Vec::new(),
            outcome: Outcome::default(),
        })
    }

    /// A handle to this transfer's outcome.
    pub fn outcome(&self) -> Outcome {
        self.outcome.clone()
    }

    fn set_state(&mut self, next: Sending) {
        log::trace!("file send state={}=>{}", self.state, next);
        self.state = next;
    }

    fn finish(&mut self, result: Result<Sent, SendError>) {
        self.set_state(Sending::Done);
        self.outcome.set(result);
    }

    /// What a complete reply line means.
    fn judge(&self, line: &[u8]) -> Result<Sent, SendError> {
        let text = String::from_utf8_lossy(line);
        if text == "ERR" {
            return Err(SendError::Refused(String::new()));
        }
        if let Some(why) = text.strip_prefix("ERR ") {
            return Err(SendError::Refused(why.to_owned()));
        }
        let bad = || SendError::BadReply(text.chars().take(100).collect());
        let fields = text.strip_prefix("OK ").ok_or_else(bad)?;
        let (size, sha256) = fields.split_once(' ').ok_or_else(bad)?;
        let stored_size: u64 = size.parse().map_err(|_| bad())?;
        if self.state != Sending::AwaitingReply {
            return Err(SendError::BadReply(format!(
                "OK after {} of {} bytes were sent",
                self.sent, self.size
            )));
        }
        let sent_sha256 = hex(&self.hasher.clone().finalize());
        if stored_size != self.size || !sha256.eq_ignore_ascii_case(&sent_sha256) {
            return Err(SendError::Mismatch {
                sent_size: self.size,
                sent_sha256,
                stored_size,
                stored_sha256: sha256.to_owned(),
            });
        }
        Ok(Sent {
            name: self.name.clone(),
            size: self.size,
            sha256: sent_sha256,
        })
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

impl<R: Read> Protocol for FileSender<R> {
    fn handle_open(&mut self, out: &mut Out<'_>) {
        out.push(format!("FILE {} {}\n", self.name, self.size).as_bytes());
        if self.size == 0 {
            self.set_state(Sending::AwaitingReply);
        } else {
            self.set_state(Sending::Streaming);
            out.want_writable();
        }
    }

    fn handle_writable(&mut self, out: &mut Out<'_>) {
        if self.state != Sending::Streaming {
            return;
        }
        let want = usize::try_from(self.size - self.sent)
            .unwrap_or(usize::MAX)
            .min(CHUNK);
        if self.buf.len() < CHUNK {
            self.buf = vec![0; CHUNK];
        }
        let n = loop {
            match self.reader.read(&mut self.buf[..want]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.finish(Err(SendError::Read(e.to_string())));
                    // The receiver sees the stream end early and discards what it has.
                    out.abort();
                    return;
                }
            }
        };
        if n == 0 {
            self.finish(Err(SendError::Read(format!(
                "the file ended after {} of {} bytes",
                self.sent, self.size
            ))));
            out.abort();
            return;
        }
        self.hasher.update(&self.buf[..n]);
        out.push(&self.buf[..n]);
        self.sent += n as u64;
        if self.sent == self.size {
            // The chunk buffer is not needed any more.
            self.buf = Vec::new();
            self.set_state(Sending::AwaitingReply);
        } else {
            out.want_writable();
        }
    }

    fn handle_input(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<usize, PeerError> {
        if self.state == Sending::Done {
            return Ok(input.len());
        }
        let Some(nl) = input.iter().position(|&b| b == b'\n') else {
            if input.len() >= MAX_REPLY {
                self.finish(Err(SendError::BadReply(format!(
                    "no newline within {MAX_REPLY} bytes"
                ))));
                return Err(PeerError::new("reply line too long"));
            }
            return Ok(0);
        };
        let line = &input[..nl];
        let result = self.judge(line.strip_suffix(b"\r").unwrap_or(line));
        // A reply, even an early ERR, ends the transfer: no more chunks.
        self.finish(result);
        out.close();
        Ok(input.len())
    }

    fn handle_eof(&mut self, rest: &[u8], _out: &mut Out<'_>) -> Result<(), PeerError> {
        if self.state == Sending::Done {
            return Ok(());
        }
        if rest.is_empty() {
            self.finish(Err(SendError::Disconnected(CloseReason::PeerClosed)));
            Ok(())
        } else {
            let partial = String::from_utf8_lossy(rest).chars().take(100).collect();
            self.finish(Err(SendError::BadReply(partial)));
            Err(PeerError::new("stream ended inside the reply"))
        }
    }

    fn handle_close(&mut self, reason: &CloseReason) {
        if self.state != Sending::Done {
            self.finish(Err(SendError::Disconnected(reason.clone())));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Action;
    use std::io::Cursor;
    use std::time::Instant;

    const ABC_SHA256: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    fn sha256_hex(bytes: &[u8]) -> String {
        hex(&Sha256::digest(bytes))
    }

    /// Bytes that differ per `seed`, so a misplaced chunk changes the digest.
    fn pattern(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// A driver in miniature for one receiver: feeds `chunks` in order, keeping what is
    /// not consumed, as the contract says; then EOF if `eof`. Returns the reply and the
    /// last action.
    fn feed_receiver<S: Store>(
        rx: &mut FileReceiver<S>,
        chunks: &[&[u8]],
        eof: bool,
    ) -> (String, Action) {
        let now = Instant::now();
        let mut sent = Vec::new();
        let mut kept = Vec::new();
        let mut action = Action::Continue;
        for c in chunks {
            kept.extend_from_slice(c);
            let mut out = Out::new(&mut sent, now);
            let used = rx.handle_input(&kept, &mut out).expect("no peer error");
            assert!(used <= kept.len());
            kept.drain(..used);
            action = out.action();
            if action != Action::Continue {
                break;
            }
        }
        if eof && action == Action::Continue {
            let mut out = Out::new(&mut sent, now);
            let _ = rx.handle_eof(&kept, &mut out);
            action = out.action();
        }
        rx.handle_close(&CloseReason::PeerClosed);
        (String::from_utf8(sent).unwrap(), action)
    }

    fn receive(store: &MemStore, stream: &[u8]) -> String {
        feed_receiver(&mut FileReceiver::new(store.clone()), &[stream], true).0
    }

    // --- the header ---------------------------------------------------------------------

    #[test]
    fn header_whole_byte_by_byte_and_with_trailing_bytes() {
        let stream = b"FILE notes.txt 12\nhello world!";
        let want = Header {
            name: "notes.txt",
            size: 12,
        };
        assert_eq!(
            parse_header(stream, DEFAULT_MAX_SIZE),
            Ok(Parsed::Complete(want, 18)),
            "trailing body bytes are left for the body"
        );
        for cut in 0..18 {
            assert_eq!(
                parse_header(&stream[..cut], DEFAULT_MAX_SIZE),
                Ok(Parsed::Partial),
                "cut at {cut}"
            );
        }
        assert_eq!(
            parse_header(b"FILE a 0\r\n", DEFAULT_MAX_SIZE),
            Ok(Parsed::Complete(Header { name: "a", size: 0 }, 10))
        );

        // The machine, fed one byte per call, stores the same file.
        let store = MemStore::new();
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        let (reply, action) = feed_receiver(&mut FileReceiver::new(store.clone()), &bytes, false);
        assert_eq!(reply, format!("OK 12 {}\n", sha256_hex(b"hello world!")));
        assert_eq!(action, Action::CloseAfterFlush);
        assert_eq!(store.file("notes.txt").unwrap(), b"hello world!");
    }

    #[test]
    fn a_partial_header_is_not_consumed() {
        let mut rx = FileReceiver::new(MemStore::new());
        let mut sent = Vec::new();
        let mut out = Out::new(&mut sent, Instant::now());
        assert_eq!(rx.handle_input(b"FILE notes.t", &mut out).unwrap(), 0);
        assert!(sent.is_empty());
    }

    #[test]
    fn malformed_headers_are_refused_as_soon_as_they_are_known_to_be() {
        for bad in [&b"GET / HTTP/1.1\r\n"[..], b"G", b"file a 1\n", b"FILE\n"] {
            assert_eq!(
                parse_header(bad, DEFAULT_MAX_SIZE),
                Err(Refusal::Malformed),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        for bad in [&b"FILE a\n"[..], b"FILE \n", b"FILE a1\n"] {
            assert_eq!(parse_header(bad, DEFAULT_MAX_SIZE), Err(Refusal::Malformed));
        }
        let long = [&b"FILE "[..], &[b'a'; MAX_HEADER]].concat();
        assert_eq!(
            parse_header(&long, DEFAULT_MAX_SIZE),
            Err(Refusal::HeaderTooLong)
        );
        let store = MemStore::new();
        assert_eq!(
            receive(&store, b"GET / HTTP/1.1\r\n\r\n"),
            "ERR malformed header: expected FILE <name> <size>\n"
        );
        assert_eq!(receive(&store, &long), "ERR header too long\n");
        assert_eq!(
            receive(&store, b"FILE a 5"),
            "ERR malformed header: expected FILE <name> <size>\n",
            "EOF inside the header"
        );
        assert!(store.names().is_empty());
    }

    #[test]
    fn every_refused_name() {
        let long = "a".repeat(MAX_NAME + 1);
        let cases: &[(&[u8], NameError)] = &[
            (b"", NameError::Empty),
            (long.as_bytes(), NameError::TooLong),
            (b"a/b", NameError::Separator),
            (b"/etc", NameError::Separator),
            (b"a\\b", NameError::Separator),
            (b"..", NameError::LeadingDot),
            (b"a..b", NameError::DotDot),
            (b"x..", NameError::DotDot),
            (b".hidden", NameError::LeadingDot),
            (b"a\0b", NameError::Nul),
            (b"a b", NameError::Space),
            (b"a\tb", NameError::Control),
            (b"a\x1b[2Jb", NameError::Control),
            (b"a\x7fb", NameError::Control),
            ("a\u{85}b".as_bytes(), NameError::Control),
            (b"\xff\xfe", NameError::NotUtf8),
        ];
        for &(name, why) in cases {
            assert_eq!(check_name(name), Err(why), "{name:?}");
            let store = MemStore::new();
            let stream = [&b"FILE "[..], name, b" 5\nhello"].concat();
            assert_eq!(
                receive(&store, &stream),
                format!("ERR bad name: {why}\n"),
                "{name:?}"
            );
            assert!(store.names().is_empty(), "{name:?}: nothing stored");
            assert_eq!(store.open_temps(), 0, "{name:?}: no file begun");
        }
        assert!(FileSender::new("../x", 1, Cursor::new(b"x")).is_err());
    }

    #[test]
    fn names_that_are_fine() {
        let longest = "a".repeat(MAX_NAME);
        for name in [
            "notes.txt",
            "a",
            "a.b.c",
            "résumé.pdf",
            "x-y_z(1)",
            &longest,
        ] {
            assert_eq!(check_name(name.as_bytes()), Ok(name));
        }
    }

    #[test]
    fn bad_and_excessive_sizes() {
        for size in ["", "-1", "+5", "1e3", "0x10", " 5", "5 "] {
            let header = format!("FILE a {size}\n");
            let got = parse_header(header.as_bytes(), DEFAULT_MAX_SIZE);
            assert!(
                matches!(got, Err(Refusal::BadSize | Refusal::BadName(_))),
                "{size:?}: {got:?}"
            );
        }
        let over = Err(Refusal::TooLarge { limit: 10 });
        assert_eq!(parse_header(b"FILE a 11\n", 10), over);
        assert_eq!(parse_header(b"FILE a 99999999999999999999\n", 10), over);
        assert!(matches!(
            parse_header(b"FILE a 10\n", 10),
            Ok(Parsed::Complete(_, _))
        ));

        let store = MemStore::new();
        let mut rx = FileReceiver::new(store.clone()).with_max_size(10);
        let (reply, action) = feed_receiver(&mut rx, &[b"FILE a 11\nhello world"], false);
        assert_eq!(reply, "ERR too large: the limit is 10 bytes\n");
        assert_eq!(action, Action::CloseAfterFlush);
        assert!(store.names().is_empty());
    }

    // --- the body and the store ---------------------------------------------------------

    #[test]
    fn the_digest_is_sha256_of_the_body() {
        let store = MemStore::new();
        assert_eq!(
            receive(&store, b"FILE abc 3\nabc"),
            format!("OK 3 {ABC_SHA256}\n")
        );
        assert_eq!(store.file("abc").unwrap(), b"abc");
        // The empty file is complete with its header.
        assert_eq!(
            receive(&store, b"FILE empty 0\n"),
            format!("OK 0 {}\n", sha256_hex(b""))
        );
        assert_eq!(store.file("empty").unwrap(), b"");
    }

    #[test]
    fn bytes_past_the_size_are_not_stored() {
        let store = MemStore::new();
        let mut rx = FileReceiver::new(store.clone());
        let (reply, _) = feed_receiver(&mut rx, &[b"FILE abc 3\nab", b"cdef", b"more"], false);
        assert_eq!(reply, format!("OK 3 {ABC_SHA256}\n"));
        assert_eq!(store.file("abc").unwrap(), b"abc");
    }

    #[test]
    fn early_eof_commits_nothing() {
        let store = MemStore::new();
        let mut rx = FileReceiver::new(store.clone());
        let mut sent = Vec::new();
        let now = Instant::now();
        let mut out = Out::new(&mut sent, now);
        assert_eq!(rx.handle_input(b"FILE a 10\nhello", &mut out).unwrap(), 15);
        assert_eq!(store.open_temps(), 1);
        let mut out = Out::new(&mut sent, now);
        assert!(rx.handle_eof(b"", &mut out).is_err(), "a truncated file");
        assert_eq!(out.action(), Action::CloseAfterFlush);
        rx.handle_close(&CloseReason::PeerClosed);
        assert_eq!(sent, b"ERR truncated: got 5 of 10 bytes\n");
        assert!(store.names().is_empty());
        assert_eq!(store.open_temps(), 0, "the temporary file is discarded");
    }

    #[test]
    fn any_close_mid_body_commits_nothing() {
        for reason in [
            CloseReason::Io(io::ErrorKind::ConnectionReset),
            CloseReason::IdleTimeout,
            CloseReason::Shutdown,
            CloseReason::PeerClosed,
        ] {
            let store = MemStore::new();
            let mut rx = FileReceiver::new(store.clone());
            let mut sent = Vec::new();
            let mut out = Out::new(&mut sent, Instant::now());
            rx.handle_input(b"FILE a 10\nhello", &mut out).unwrap();
            rx.handle_close(&reason);
            assert!(sent.is_empty(), "{reason}");
            assert!(store.names().is_empty(), "{reason}");
            assert_eq!(store.open_temps(), 0, "{reason}");
        }
        // Dropped without a close (a driver that panicked): the temp goes with it.
        let store = MemStore::new();
        let mut rx = FileReceiver::new(store.clone());
        let mut sent = Vec::new();
        rx.handle_input(
            b"FILE a 10\nhello",
            &mut Out::new(&mut sent, Instant::now()),
        )
        .unwrap();
        drop(rx);
        assert_eq!(store.open_temps(), 0);
    }

    #[test]
    fn an_existing_name_is_refused_and_kept() {
        let store = MemStore::new();
        store.insert("a", b"old");
        assert_eq!(receive(&store, b"FILE a 3\nnew"), "ERR exists\n");
        assert_eq!(store.file("a").unwrap(), b"old");
    }

    #[test]
    fn a_name_taken_during_the_transfer_is_not_replaced() {
        let store = MemStore::new();
        let mut rx = FileReceiver::new(store.clone());
        let mut sent = Vec::new();
        let now = Instant::now();
        rx.handle_input(b"FILE a 3\nn", &mut Out::new(&mut sent, now))
            .unwrap();
        store.insert("a", b"old");
        let mut out = Out::new(&mut sent, now);
        rx.handle_input(b"ew", &mut out).unwrap();
        assert_eq!(out.action(), Action::CloseAfterFlush);
        assert_eq!(sent, b"ERR exists\n");
        assert_eq!(store.file("a").unwrap(), b"old");
        assert_eq!(store.open_temps(), 0);
    }

    #[test]
    fn a_failing_store_is_an_error_not_a_file() {
        let store = MemStore::with_limit(4);
        assert_eq!(
            receive(&store, b"FILE a 10\nhelloworld"),
            "ERR cannot store\n"
        );
        assert!(store.names().is_empty());
        assert_eq!(store.open_temps(), 0);
    }

    #[test]
    fn shutdown_lets_a_transfer_finish_and_closes_an_idle_connection() {
        let now = Instant::now();
        let mut sent = Vec::new();
        let mut idle = FileReceiver::new(MemStore::new());
        let mut out = Out::new(&mut sent, now);
        idle.handle_shutdown(&mut out);
        assert_eq!(out.action(), Action::CloseAfterFlush);

        let store = MemStore::new();
        let mut busy = FileReceiver::new(store.clone());
        busy.handle_input(b"FILE a 3\na", &mut Out::new(&mut sent, now))
            .unwrap();
        let mut out = Out::new(&mut sent, now);
        busy.handle_shutdown(&mut out);
        assert_eq!(out.action(), Action::Continue);
        let mut out = Out::new(&mut sent, now);
        busy.handle_input(b"bc", &mut out).unwrap();
        assert_eq!(sent, format!("OK 3 {ABC_SHA256}\n").as_bytes());
        assert_eq!(store.file("a").unwrap(), b"abc");
    }

    // --- the sender ---------------------------------------------------------------------

    /// Opens `tx` and drains it as a driver would, one `handle_writable` per chunk.
    /// Returns everything it sent and checks no call produced more than one chunk.
    fn drain_sender<R: Read>(tx: &mut FileSender<R>) -> (Vec<u8>, Action) {
        let now = Instant::now();
        let mut wire = Vec::new();
        let mut out = Out::new(&mut wire, now);
        tx.handle_open(&mut out);
        let mut wants = out.wants_writable();
        let mut action = out.action();
        while wants && action == Action::Continue {
            let mut piece = Vec::new();
            let mut out = Out::new(&mut piece, now);
            tx.handle_writable(&mut out);
            wants = out.wants_writable();
            action = out.action();
            assert!(piece.len() <= CHUNK, "one chunk per call");
            wire.extend_from_slice(&piece);
        }
        (wire, action)
    }

    fn reply_to<R: Read>(tx: &mut FileSender<R>, reply: &[u8]) -> Action {
        let mut sent = Vec::new();
        let mut out = Out::new(&mut sent, Instant::now());
        assert_eq!(tx.handle_input(reply, &mut out).unwrap(), reply.len());
        let action = out.action();
        assert!(sent.is_empty());
        action
    }

    #[test]
    fn the_sender_streams_header_then_body() {
        let mut tx = FileSender::new("abc", 3, Cursor::new(b"abc".to_vec())).unwrap();
        let outcome = tx.outcome();
        let (wire, action) = drain_sender(&mut tx);
        assert_eq!(wire, b"FILE abc 3\nabc");
        assert_eq!(action, Action::Continue, "it waits for the reply");
        assert_eq!(outcome.get(), None);
        // A reply may arrive in pieces: nothing is consumed until its newline.
        let mut sent = Vec::new();
        let mut out = Out::new(&mut sent, Instant::now());
        assert_eq!(tx.handle_input(b"OK 3 ba78", &mut out).unwrap(), 0);
        let reply = format!("OK 3 {ABC_SHA256}\n");
        assert_eq!(reply_to(&mut tx, reply.as_bytes()), Action::CloseAfterFlush);
        assert_eq!(
            outcome.get(),
            Some(Ok(Sent {
                name: "abc".into(),
                size: 3,
                sha256: ABC_SHA256.into()
            }))
        );
        tx.handle_close(&CloseReason::Closed);
        assert!(outcome.get().unwrap().is_ok(), "the first outcome stays");
    }

    /// Sends "abc", answers with `reply`, and returns the error the sender records.
    fn failure_after(reply: &str) -> SendError {
        let mut tx = FileSender::new("abc", 3, Cursor::new(b"abc".to_vec())).unwrap();
        let outcome = tx.outcome();
        drain_sender(&mut tx);
        assert_eq!(reply_to(&mut tx, reply.as_bytes()), Action::CloseAfterFlush);
        outcome.get().unwrap().unwrap_err()
    }

    #[test]
    fn the_sender_believes_only_a_matching_ok() {
        assert_eq!(
            failure_after("ERR exists\n"),
            SendError::Refused("exists".into())
        );
        assert_eq!(
            failure_after(&format!("OK 4 {ABC_SHA256}\n")),
            SendError::Mismatch {
                sent_size: 3,
                sent_sha256: ABC_SHA256.into(),
                stored_size: 4,
                stored_sha256: ABC_SHA256.into(),
            }
        );
        let other = sha256_hex(b"abd");
        assert!(matches!(
            failure_after(&format!("OK 3 {other}\n")),
            SendError::Mismatch { stored_sha256, .. } if stored_sha256 == other
        ));
        for garbage in ["HELLO\n", "ERRATIC\n", "OK three x\n", "OK 3\n", "\n"] {
            let got = failure_after(garbage);
            assert!(
                matches!(got, SendError::BadReply(_)),
                "{garbage:?}: {got:?}"
            );
        }
    }

    #[test]
    fn an_early_err_stops_the_stream() {
        let data = pattern(1, 3 * CHUNK);
        let mut tx = FileSender::new("big", data.len() as u64, Cursor::new(data)).unwrap();
        let outcome = tx.outcome();
        let mut wire = Vec::new();
        let now = Instant::now();
        tx.handle_open(&mut Out::new(&mut wire, now));
        tx.handle_writable(&mut Out::new(&mut wire, now));
        reply_to(&mut tx, b"ERR too large: the limit is 10 bytes\n");
        let mut more = Vec::new();
        let mut out = Out::new(&mut more, now);
        tx.handle_writable(&mut out);
        assert!(!out.wants_writable());
        assert!(more.is_empty());
        assert_eq!(
            outcome.get(),
            Some(Err(SendError::Refused(
                "too large: the limit is 10 bytes".into()
            )))
        );
    }

    #[test]
    fn an_ok_before_the_last_byte_is_not_believed() {
        let data = pattern(2, 2 * CHUNK);
        let mut tx = FileSender::new("big", data.len() as u64, Cursor::new(data)).unwrap();
        let outcome = tx.outcome();
        let mut wire = Vec::new();
        tx.handle_open(&mut Out::new(&mut wire, Instant::now()));
        reply_to(&mut tx, format!("OK 131072 {ABC_SHA256}\n").as_bytes());
        assert!(matches!(outcome.get(), Some(Err(SendError::BadReply(_)))));
    }

    #[test]
    fn a_short_file_aborts_the_connection() {
        let mut tx = FileSender::new("a", 10, Cursor::new(b"hello".to_vec())).unwrap();
        let outcome = tx.outcome();
        let (wire, action) = drain_sender(&mut tx);
        assert_eq!(wire, b"FILE a 10\nhello");
        assert_eq!(
            action,
            Action::Abort,
            "the receiver must see the stream end early"
        );
        assert!(matches!(outcome.get(), Some(Err(SendError::Read(_)))));
    }

    #[test]
    fn a_read_error_aborts_the_connection() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk on fire"))
            }
        }
        let mut tx = FileSender::new("a", 10, Broken).unwrap();
        let outcome = tx.outcome();
        let (_, action) = drain_sender(&mut tx);
        assert_eq!(action, Action::Abort);
        assert_eq!(
            outcome.get(),
            Some(Err(SendError::Read("disk on fire".into())))
        );
    }

    #[test]
    fn no_reply_is_a_failure() {
        let mut tx = FileSender::new("abc", 3, Cursor::new(b"abc".to_vec())).unwrap();
        let outcome = tx.outcome();
        drain_sender(&mut tx);
        let mut sent = Vec::new();
        assert!(tx
            .handle_eof(b"", &mut Out::new(&mut sent, Instant::now()))
            .is_ok());
        assert_eq!(
            outcome.get(),
            Some(Err(SendError::Disconnected(CloseReason::PeerClosed)))
        );

        let tx = FileSender::new("abc", 3, Cursor::new(b"abc".to_vec())).unwrap();
        let outcome = tx.outcome();
        let mut tx = tx;
        let refused = CloseReason::ConnectFailed(io::ErrorKind::ConnectionRefused);
        tx.handle_close(&refused);
        assert_eq!(outcome.get(), Some(Err(SendError::Disconnected(refused))));
    }

    // --- sender and receiver together ---------------------------------------------------

    /// A sender and a receiver connected back to back: each one's output is shuttled into
    /// the other's input, `piece` bytes per call, as two drivers would, until neither has
    /// anything to say. The wire holds at most one chunk at a time.
    struct Pair<R> {
        tx: FileSender<R>,
        rx: FileReceiver<MemStore>,
        piece: usize,
        /// The most bytes ever waiting on the sender-to-receiver wire.
        peak_in_flight: usize,
    }

    impl<R: Read> Pair<R> {
        fn new(tx: FileSender<R>, store: &MemStore, piece: usize) -> Pair<R> {
            Pair {
                tx,
                rx: FileReceiver::new(store.clone()),
                piece,
                peak_in_flight: 0,
            }
        }

        fn run(&mut self) {
            let now = Instant::now();
            let (mut to_rx, mut to_tx) = (Vec::new(), Vec::new());
            let (mut rx_kept, mut tx_kept) = (Vec::new(), Vec::new());

            let mut out = Out::new(&mut to_rx, now);
            self.tx.handle_open(&mut out);
            let mut tx_wants = out.wants_writable();
            let mut tx_action = out.action();
            let mut out = Out::new(&mut to_tx, now);
            self.rx.handle_open(&mut out);
            let mut rx_action = out.action();

            for _turn in 0..1_000_000 {
                let mut moved = false;
                self.peak_in_flight = self.peak_in_flight.max(to_rx.len());
                // The receiver's driver: hand over what arrived, `piece` bytes a call.
                if !to_rx.is_empty() {
                    moved = true;
                    for p in to_rx.chunks(self.piece) {
                        if rx_action != Action::Continue {
                            break; // a closing driver discards input
                        }
                        rx_kept.extend_from_slice(p);
                        let mut out = Out::new(&mut to_tx, now);
                        let used = self.rx.handle_input(&rx_kept, &mut out).unwrap();
                        rx_kept.drain(..used);
                        rx_action = out.action();
                    }
                    to_rx.clear();
                }
                // The sender's driver: the reply, then the next chunk once the wire is empty.
                if !to_tx.is_empty() && tx_action == Action::Continue {
                    moved = true;
                    tx_kept.append(&mut to_tx);
                    let mut out = Out::new(&mut to_rx, now);
                    let used = self.tx.handle_input(&tx_kept, &mut out).unwrap();
                    tx_kept.drain(..used);
                    tx_action = out.action();
                }
                if to_rx.is_empty() && tx_wants && tx_action == Action::Continue {
                    moved = true;
                    let mut out = Out::new(&mut to_rx, now);
                    self.tx.handle_writable(&mut out);
                    tx_wants = out.wants_writable();
                    tx_action = out.action();
                }
                if !moved {
                    break;
                }
            }
            assert!(rx_kept.is_empty(), "the receiver consumes everything");
            self.tx.handle_close(&CloseReason::Closed);
            self.rx.handle_close(&CloseReason::PeerClosed);
        }
    }

    #[test]
    fn pairs_of_many_sizes_arrive_intact() {
        let sizes = [0, 1, 1000, CHUNK - 1, CHUNK, CHUNK + 1, 1 << 20];
        for (seed, &size) in sizes.iter().enumerate() {
            let data = pattern(seed as u64, size);
            // Odd piece sizes split the header, chunks and reply at every kind of place.
            for piece in [1, 7919, CHUNK] {
                if piece == 1 && size > CHUNK + 1 {
                    continue; // a byte per call adds nothing at 1 MiB but time
                }
                let store = MemStore::new();
                let tx = FileSender::new("f.bin", size as u64, Cursor::new(data.clone())).unwrap();
                let outcome = tx.outcome();
                let mut pair = Pair::new(tx, &store, piece);
                pair.run();
                let what = format!("{size} bytes, {piece} per call");
                assert_eq!(
                    outcome.get(),
                    Some(Ok(Sent {
                        name: "f.bin".into(),
                        size: size as u64,
                        sha256: sha256_hex(&data)
                    })),
                    "{what}"
                );
                assert!(
                    store.file("f.bin").unwrap() == data,
                    "{what}: the bytes differ"
                );
                assert_eq!(store.open_temps(), 0, "{what}");
                assert!(
                    pair.peak_in_flight <= CHUNK + 64,
                    "{what}: {} bytes in flight",
                    pair.peak_in_flight
                );
            }
        }
    }

    #[test]
    fn a_pair_reports_a_refusal() {
        let store = MemStore::new();
        store.insert("f.bin", b"old");
        let data = pattern(9, 3 * CHUNK);
        let tx = FileSender::new("f.bin", data.len() as u64, Cursor::new(data)).unwrap();
        let outcome = tx.outcome();
        Pair::new(tx, &store, CHUNK).run();
        assert_eq!(
            outcome.get(),
            Some(Err(SendError::Refused("exists".into())))
        );
        assert_eq!(store.file("f.bin").unwrap(), b"old");
    }
}

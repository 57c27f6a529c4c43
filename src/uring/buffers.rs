//! The receive buffers the kernel picks from: a provided-buffer ring (Linux 5.19+).
//!
//! With readiness I/O the program owns the read buffer and lends it to `recv` for the
//! length of one call. With completion I/O a `recv` is submitted *before* any data has
//! arrived, and the kernel writes into the buffer whenever data comes: the buffer is the
//! kernel's from submission to completion. Giving every connection a buffer of its own
//! would tie up `connections × size` bytes for peers that are silent. A provided-buffer
//! ring instead gives the kernel a pool: a `recv` names the pool (its group), the kernel
//! takes a buffer from it only when data arrives, and the completion says which one (its
//! id). The driver feeds those bytes to the connection's session at once and hands the
//! buffer straight back to the ring, so the pool only needs to cover the completions of
//! one turn.
//!
//! The ring is an array of `{addr, len, bid}` entries shared with the kernel; the
//! program adds buffers at the tail (a `u16` in the first entry's reserved field,
//! published with a release store) and the kernel consumes them from its own head.

use io_uring::types::BufRingEntry;
use io_uring::IoUring;
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

/// The group id sockloop registers its one pool under.
pub(super) const GROUP: u16 = 0;

/// A provided-buffer ring and the buffers it hands out. Must outlive every `recv` that
/// names its group: the driver drops it only after the ring's operations have ended (or
/// leaks it if they did not, see `Driver::drop`).
pub(super) struct BufRing {
    /// The entries shared with the kernel (page-aligned, `entries` of them).
    ring: *mut BufRingEntry,
    ring_len: usize,
    /// The buffers, `entries × size` bytes in one mapping.
    pool: *mut u8,
    pool_len: usize,
    entries: u16,
    size: u32,
    /// Our tail: the next entry to fill.
    tail: u16,
}

// SAFETY: the memory is owned by this value; the kernel only touches it through the ring
// it is registered with, which moves to the driver's thread with it.
unsafe impl Send for BufRing {}

impl BufRing {
    /// Allocates `entries` buffers of `size` bytes and registers them with `ring` as
    /// group [`GROUP`]. `entries` must be a power of two (at most 32,768).
    ///
    /// # Errors
    ///
    /// What `io_uring_register(IORING_REGISTER_PBUF_RING)` says: `EINVAL` on a kernel
    /// before 5.19, where the driver falls back to a buffer per connection.
    pub(super) fn register(ring: &IoUring, entries: u16, size: u32) -> io::Result<BufRing> {
        assert!(
            entries.is_power_of_two(),
            "a buffer ring's size is a power of two"
        );
        let ring_len = usize::from(entries) * std::mem::size_of::<BufRingEntry>();
        let pool_len = usize::from(entries) * size as usize;
        // Fresh anonymous mappings: page-aligned and zeroed by the kernel, and, until the
        // kernel writes a buffer, not resident (an idle server costs no pool memory).
        let ring_mem = map(ring_len)?;
        let pool = match map(pool_len) {
            Ok(p) => p,
            Err(e) => {
                // SAFETY: mapped just above with this length.
                unsafe { libc::munmap(ring_mem.cast(), ring_len) };
                return Err(e);
            }
        };
        let mut this = BufRing {
            ring: ring_mem.cast(),
            ring_len,
            pool,
            pool_len,
            entries,
            size,
            tail: 0,
        };
        // SAFETY: the ring memory is valid, page-aligned, `entries` entries long, and is
        // kept until this value is dropped, after the ring's operations have ended.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(this.ring as u64, entries, GROUP, 0)?;
        }
        for bid in 0..entries {
            this.give_back(bid);
        }
        Ok(this)
    }

    /// The size of each buffer.
    pub(super) fn size(&self) -> u32 {
        self.size
    }

    /// How many buffers the pool has.
    pub(super) fn entries(&self) -> u16 {
        self.entries
    }

    /// The `len` bytes the kernel wrote into buffer `bid`.
    ///
    /// # Safety
    ///
    /// `bid` came from a completion of this ring's group and has not been given back yet,
    /// and `len` is that completion's result: the kernel is done writing it.
    pub(super) unsafe fn filled(&self, bid: u16, len: usize) -> &[u8] {
        debug_assert!(bid < self.entries && len <= self.size as usize);
        std::slice::from_raw_parts(
            self.pool.add(usize::from(bid) * self.size as usize),
            len.min(self.size as usize),
        )
    }

    /// Hands buffer `bid` back to the kernel: it may fill it again.
    pub(super) fn give_back(&mut self, bid: u16) {
        let mask = self.entries - 1;
        // SAFETY: the index is masked into the ring; the entry is ours until the tail is
        // published past it.
        unsafe {
            let entry = &mut *self.ring.add(usize::from(self.tail & mask));
            entry.set_addr(self.pool.add(usize::from(bid) * self.size as usize) as u64);
            entry.set_len(self.size);
            entry.set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail lives in the first entry's reserved field, u16-aligned, shared
        // with the kernel, which reads it atomically; the release store publishes the
        // entry written above.
        unsafe {
            let tail = BufRingEntry::tail(self.ring) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: mapped in `register` with these lengths; the driver drops this only
        // once no operation of its ring can still select a buffer.
        unsafe {
            libc::munmap(self.ring.cast(), self.ring_len);
            libc::munmap(self.pool.cast(), self.pool_len);
        }
    }
}

/// An anonymous private mapping of `len` bytes.
fn map(len: usize) -> io::Result<*mut u8> {
    // SAFETY: a new anonymous mapping; no existing memory is involved.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(p.cast())
}

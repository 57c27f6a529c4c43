//! The file demo's receiver (the `FILE name size` header, then the body) through the
//! connection core, storing into memory.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sockloop_demos::proto::file::{FileReceiver, MemStore};

fuzz_target!(|data: &[u8]| {
    sockloop_fuzz::drive(FileReceiver::new(MemStore::with_limit(64 * 1024)), data);
});

//! The line framer shared by the line demos (ack, stamp, greet, chat), through the
//! connection core with the ack machine: any bytes, any split, any timing.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sockloop_fuzz::drive(sockloop_demos::proto::ack::Ack::new(), data);
});

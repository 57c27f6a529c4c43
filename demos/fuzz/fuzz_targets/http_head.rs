//! The HTTP request head parser on arbitrary bytes: never a panic, and the answer for the
//! whole input is the answer for the shortest prefix that decides (so a driver presenting
//! the input as it grows meets the same answer at the same byte).
#![no_main]
use libfuzzer_sys::fuzz_target;
use sockloop_demos::proto::http::parse::{parse_request, HeadLimits};

fuzz_target!(|data: &[u8]| {
    let limits = HeadLimits::default();
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let whole = parse_request(data, &mut req, limits);
    // Byte by byte, the first decided answer must be the whole input's.
    for end in 0..=data.len() {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match parse_request(&data[..end], &mut req, limits) {
            Ok(None) => continue,
            first => {
                assert_eq!(first.map(|o| o.is_some()), whole.map(|o| o.is_some()));
                return;
            }
        }
    }
    assert_eq!(
        whole.ok(),
        Some(None),
        "undecided whole means undecided prefixes"
    );
});

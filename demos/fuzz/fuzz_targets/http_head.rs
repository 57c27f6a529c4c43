//! The HTTP head parser on arbitrary bytes, as a request head, a response head and a
//! trailer section: never a panic, and the answer for the whole input is the answer for
//! the shortest prefix that decides (so a driver presenting the input as it grows meets
//! the same answer at the same byte).
#![no_main]
use libfuzzer_sys::fuzz_target;
use sockloop_demos::proto::http::parse::{self, HeadError, HeadLimits, Kind, Trailers};

/// [`parse::parse`] of `input` as a section of `kind`.
fn parse_as(kind: Kind, input: &[u8], limits: HeadLimits) -> Result<Option<usize>, HeadError> {
    let mut fields = [httparse::EMPTY_HEADER; 64];
    match kind {
        Kind::Request => parse::parse(input, &mut httparse::Request::new(&mut fields), limits),
        Kind::Response => parse::parse(input, &mut httparse::Response::new(&mut fields), limits),
        Kind::Trailers => parse::parse(input, &mut Trailers::new(&mut fields), limits),
    }
}

fuzz_target!(|data: &[u8]| {
    for (kind, limits) in [
        (Kind::Request, HeadLimits::REQUEST),
        (Kind::Response, HeadLimits::RESPONSE),
        (Kind::Trailers, HeadLimits::TRAILERS),
    ] {
        let whole = parse_as(kind, data, limits);
        // Byte by byte, the first decided answer must be the whole input's.
        let first = (0..=data.len())
            .map(|end| parse_as(kind, &data[..end], limits))
            .find(|r| *r != Ok(None));
        match first {
            Some(first) => assert_eq!(
                first.map(|o| o.is_some()),
                whole.map(|o| o.is_some()),
                "{kind}"
            ),
            None => assert_eq!(
                whole,
                Ok(None),
                "{kind}: undecided whole means undecided prefixes"
            ),
        }
    }
});

//! The `get` client's response machine (status line, headers, content-length, chunked with
//! trailers, until close) through the connection core, fed an arbitrary server.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sockloop_demos::proto::http::client::{Collect, HttpClient, Request};

fuzz_target!(|data: &[u8]| {
    let request = Request::get("example.test", "/").expect("a valid request");
    sockloop_fuzz::drive(HttpClient::new(request, Collect::new()), data);
});

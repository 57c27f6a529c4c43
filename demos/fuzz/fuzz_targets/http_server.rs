//! The HTTP server machine through the connection core, along arbitrary event sequences:
//! any bytes get a reply or a close, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sockloop_demos::proto::http::server::{HttpConfig, HttpServer};
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    let cfg = Arc::new(HttpConfig {
        max_head: 1024,
        max_request_line: 256,
        max_body: 2048,
        ..HttpConfig::default()
    });
    sockloop_fuzz::drive(HttpServer::new(cfg), data);
});

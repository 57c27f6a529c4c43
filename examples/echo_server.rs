//! Embedding the reactor with a protocol of your own: an upper-casing line server.
//!
//! Run: `cargo run --example echo_server`, then `nc 127.0.0.1 7100` and type lines (port
//! 7100 is clear of the 7000-7007 that `sockloop serve` takes). It serves until Ctrl-C.
//! With `RUST_LOG=trace` the reactor narrates each event, read and write.

use sockloop::proto::{Out, PeerError, Protocol};
use sockloop::reactor::{Config, Reactor};

/// Replies to each complete line with the line upper-cased. A line not yet complete is
/// left unconsumed: the reactor keeps those bytes and hands them back with the next ones.
struct Upper;

impl Protocol for Upper {
    fn handle_open(&mut self, out: &mut Out<'_>) {
        out.push(b"hello! I shout back every line; send 'bye' to leave\n");
    }

    fn handle_input(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<usize, PeerError> {
        let mut used = 0;
        while let Some(nl) = input[used..].iter().position(|&b| b == b'\n') {
            let line = &input[used..used + nl];
            used += nl + 1;
            if line.trim_ascii() == b"bye" {
                out.push(b"BYE\n");
                out.close(); // sent after everything queued, then FIN
                break;
            }
            out.push(&line.to_ascii_uppercase());
            out.push(b"\n");
        }
        if input.len() - used > 4096 {
            return Err(PeerError::new("line longer than 4 KiB"));
        }
        Ok(used)
    }
}

fn main() -> std::io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let config = Config {
        max_connections: 1000,
        ..Config::default()
    };
    let mut reactor = Reactor::with_config(config)?;
    let addr = reactor.listen("127.0.0.1:7100".parse().unwrap(), || Upper)?;
    println!("listening upper tcp {addr}");

    // Another thread may stop the loop through a handle; here, Ctrl-C just ends the process.
    reactor.run()
}

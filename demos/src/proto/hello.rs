//! Hello over datagrams: each datagram is a name, answered with one greeting datagram.
//!
//! From tutorial 003 (a Python UDP server: `data, addr = s.recvfrom(1024)` then
//! `s.sendto('Hello, %s!' % data, addr)`), served on UDP or Unix datagram sockets.
//!
//! # Wire format
//!
//! ```text
//! client -> server   datagram  Michael
//! server -> client   datagram  Hello, Michael!      (to the sender's address)
//! ```
//!
//! - A datagram is a whole message: there is no framing, no joining and no splitting, and
//!   each one gets exactly one reply, sent to the address it came from.
//! - One trailing line ending, `\n` or `\r\n`, is stripped from the request, so
//!   `echo Michael | nc -u` gets `Hello, Michael!` too. Nothing else is trimmed, and the
//!   reply carries no line ending (a datagram needs none).
//! - The name is sent back byte for byte, UTF-8 or not.
//! - An empty datagram (or one holding only a line ending) is an empty name and gets
//!   `Hello, !`, as the tutorial's server would answer it. Refusing it would gain nothing:
//!   the reply is only 8 bytes longer than the request, however short, and an empty
//!   datagram is the cheapest way for a client to ask "are you there?".
//! - Sizes are the driver's business: a datagram larger than the driver's receive buffer is
//!   dropped there, and a reply too large for the socket fails its send there (logged).
//!
//! The machine keeps no state between datagrams (there is no connection), so one value
//! serves every peer of its socket.

use super::{DatagramProtocol, Transmit};
use sockloop::net::Endpoint;
use std::time::Instant;

/// The hello machine; see the [module docs](self). Stateless.
#[derive(Clone, Copy, Debug, Default)]
pub struct Hello;

impl Hello {
    /// The machine for one datagram socket.
    pub fn new() -> Hello {
        Hello
    }
}

/// The greeting for the request `bytes`: `Hello, <name>!`, the name being the request
/// without one trailing `\n` or `\r\n`.
///
/// ```
/// use sockloop_demos::proto::hello::greeting;
///
/// assert_eq!(greeting(b"Michael"), b"Hello, Michael!");
/// assert_eq!(greeting(b"Michael\r\n"), b"Hello, Michael!");
/// assert_eq!(greeting(b""), b"Hello, !");
/// ```
pub fn greeting(bytes: &[u8]) -> Vec<u8> {
    let name = match bytes.strip_suffix(b"\n") {
        Some(line) => line.strip_suffix(b"\r").unwrap_or(line),
        None => bytes,
    };
    let mut reply = Vec::with_capacity(name.len() + 8);
    reply.extend_from_slice(b"Hello, ");
    reply.extend_from_slice(name);
    reply.push(b'!');
    reply
}

impl DatagramProtocol for Hello {
    fn handle_datagram(
        &mut self,
        from: &Endpoint,
        bytes: &[u8],
        _: Instant,
        out: &mut Vec<Transmit>,
    ) {
        log::debug!("hello: {} bytes from {from}", bytes.len());
        out.push(Transmit {
            to: from.clone(),
            bytes: greeting(bytes),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::test_epoch;

    fn peer(port: u16) -> Endpoint {
        Endpoint::Inet(([127, 0, 0, 1], port).into())
    }

    /// Sends each of `datagrams` from `from`; returns the replies.
    fn exchange(from: &Endpoint, datagrams: &[&[u8]]) -> Vec<Transmit> {
        let mut m = Hello::new();
        let mut out = Vec::new();
        for d in datagrams {
            m.handle_datagram(from, d, test_epoch(), &mut out);
        }
        out
    }

    fn reply(to: &Endpoint, bytes: &[u8]) -> Transmit {
        Transmit {
            to: to.clone(),
            bytes: bytes.to_vec(),
        }
    }

    #[test]
    fn a_name_is_greeted_back_to_its_sender() {
        let p = peer(4000);
        assert_eq!(
            exchange(&p, &[b"Michael"]),
            vec![reply(&p, b"Hello, Michael!")]
        );
    }

    #[test]
    fn exactly_one_line_ending_is_stripped() {
        for (request, want) in [
            (&b"Michael\n"[..], &b"Hello, Michael!"[..]),
            (b"Michael\r\n", b"Hello, Michael!"),
            (b"Michael\n\n", b"Hello, Michael\n!"),
            (b"Michael\r", b"Hello, Michael\r!"),
            (b"Michael\n\r", b"Hello, Michael\n\r!"),
            (b" Michael ", b"Hello,  Michael !"),
            (b"\xff\x00\xfe", b"Hello, \xff\x00\xfe!"),
        ] {
            assert_eq!(greeting(request), want, "request {request:?}");
        }
    }

    #[test]
    fn an_empty_name_is_greeted_too() {
        for request in [&b""[..], b"\n", b"\r\n"] {
            assert_eq!(greeting(request), b"Hello, !", "request {request:?}");
        }
    }

    #[test]
    fn every_datagram_is_a_whole_message() {
        // Byte by byte: each byte is its own name; nothing is joined across datagrams.
        let p = peer(4001);
        let got = exchange(&p, &[b"T", b"o", b"m"]);
        assert_eq!(
            got,
            vec![
                reply(&p, b"Hello, T!"),
                reply(&p, b"Hello, o!"),
                reply(&p, b"Hello, m!")
            ]
        );
        // Trailing bytes after a newline stay part of the name: no splitting either.
        assert_eq!(
            exchange(&p, &[b"Tracy\nSarah"]),
            vec![reply(&p, b"Hello, Tracy\nSarah!")]
        );
    }

    #[test]
    fn replies_go_to_each_sender_in_turn() {
        let (a, b) = (peer(4002), peer(4003));
        let mut m = Hello;
        let mut out = Vec::new();
        m.handle_datagram(&a, b"Ann", test_epoch(), &mut out);
        m.handle_datagram(&b, b"Bob", test_epoch(), &mut out);
        assert_eq!(
            out,
            vec![reply(&a, b"Hello, Ann!"), reply(&b, b"Hello, Bob!")]
        );
    }

    #[test]
    fn a_large_datagram_is_answered_whole() {
        let name = vec![b'x'; 60_000];
        let got = greeting(&name);
        assert_eq!(got.len(), name.len() + 8);
        assert!(got.starts_with(b"Hello, xxx") && got.ends_with(b"x!"));
    }
}

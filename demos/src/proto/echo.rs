//! Echo: every byte that arrives is sent back, unchanged and in order.
//!
//! The smallest protocol there is, and the one the reactor's tests and benchmarks use:
//! it has a single state, so whatever a test observes is the driver's doing. [`DatagramEcho`]
//! is its twin for datagram sockets: each datagram goes back to its sender.

use super::{DatagramProtocol, Out, PeerError, Protocol, Transmit};
use sockloop::net::Endpoint;
use std::time::Instant;

/// The echo machine. It has no state: each call returns its input to the sink whole.
#[derive(Clone, Copy, Debug, Default)]
pub struct Echo;

impl Protocol for Echo {
    fn handle_input(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<usize, PeerError> {
        out.push(input);
        Ok(input.len())
    }
}

/// The datagram echo machine: each datagram is sent back, whole, to whoever sent it.
#[derive(Clone, Copy, Debug, Default)]
pub struct DatagramEcho;

impl DatagramProtocol for DatagramEcho {
    fn handle_datagram(
        &mut self,
        from: &Endpoint,
        bytes: &[u8],
        _: Instant,
        out: &mut Vec<Transmit>,
    ) {
        out.push(Transmit {
            to: from.clone(),
            bytes: bytes.to_vec(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Action;
    use crate::testing::test_epoch;

    #[test]
    fn echoes_whole_and_byte_by_byte() {
        let msg = b"hello\r\nworld\x00\xff";
        let mut whole = Vec::new();
        let consumed = Echo
            .handle_input(msg, &mut Out::new(&mut whole, test_epoch()))
            .unwrap();
        assert_eq!((consumed, &whole[..]), (msg.len(), &msg[..]));

        let mut bytewise = Vec::new();
        for b in msg.chunks(1) {
            let mut out = Out::new(&mut bytewise, test_epoch());
            assert_eq!(Echo.handle_input(b, &mut out).unwrap(), 1);
            assert_eq!(out.action(), Action::Continue);
        }
        assert_eq!(bytewise, msg);
    }

    #[test]
    fn clean_eof_is_fine() {
        let mut sink = Vec::new();
        assert!(Echo
            .handle_eof(b"", &mut Out::new(&mut sink, test_epoch()))
            .is_ok());
        assert!(sink.is_empty());
    }
}

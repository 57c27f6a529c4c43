//! Echo: every byte that arrives is sent back, unchanged and in order.
//!
//! The smallest protocol there is, and the one the reactor's tests and benchmarks use:
//! it has a single state, so whatever a test observes is the driver's doing.

use super::{Out, PeerError, Protocol};

/// The echo machine. It has no state: each call returns its input to the sink whole.
#[derive(Clone, Copy, Debug, Default)]
pub struct Echo;

impl Protocol for Echo {
    fn handle_input(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<usize, PeerError> {
        out.push(input);
        Ok(input.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Action;
    use std::time::Instant;

    #[test]
    fn echoes_whole_and_byte_by_byte() {
        let msg = b"hello\r\nworld\x00\xff";
        let mut whole = Vec::new();
        let consumed = Echo
            .handle_input(msg, &mut Out::new(&mut whole, Instant::now()))
            .unwrap();
        assert_eq!((consumed, &whole[..]), (msg.len(), &msg[..]));

        let mut bytewise = Vec::new();
        for b in msg.chunks(1) {
            let mut out = Out::new(&mut bytewise, Instant::now());
            assert_eq!(Echo.handle_input(b, &mut out).unwrap(), 1);
            assert_eq!(out.action(), Action::Continue);
        }
        assert_eq!(bytewise, msg);
    }

    #[test]
    fn clean_eof_is_fine() {
        let mut sink = Vec::new();
        assert!(Echo
            .handle_eof(b"", &mut Out::new(&mut sink, Instant::now()))
            .is_ok());
        assert!(sink.is_empty());
    }
}

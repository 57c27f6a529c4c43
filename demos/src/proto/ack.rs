//! Ack: every message is logged and acknowledged with one fixed sentence.
//!
//! From tutorial 000 (a Python TCP server that prints what it receives and answers every
//! `recv` with `conn.send("server received you message.")`). The sentence is the
//! tutorial's, typo included, because clients written against it compare it exactly.
//!
//! # Wire format
//!
//! ```text
//! client -> server   Michael\n           (or Michael with no newline; see below)
//! server -> client   server received you message.\n
//! ```
//!
//! Messages are lines, framed by [`Lines`] (see [`line`](super::line)): the tutorial's
//! client, which sends `Michael` with no newline and waits, gets its reply after the quiet
//! period (100 ms), while `nc` gets one per line at once. An empty line is a message too,
//! and is acknowledged. Every message is logged at `info` level (its text, with non-UTF-8
//! bytes replaced and control characters escaped); the reply never depends on it.
//!
//! The machine has a single state (serving), so it has no state enum.

use super::line::{Flow, Lines, OnLine};
use super::Out;

/// The reply to every message, with its line ending: the tutorial's words exactly.
pub const REPLY: &[u8] = b"server received you message.\n";

/// The ack machine: the line adapter around [`AckLines`]; see the [module docs](self).
pub type Ack = Lines<AckLines>;

/// What the ack demo does with each message.
#[derive(Debug, Clone, Default)]
pub struct AckLines;

impl Ack {
    /// A fresh machine for one connection.
    pub fn new() -> Ack {
        Lines::with_handler(AckLines)
    }
}

impl OnLine for AckLines {
    /// Logs one message and queues the acknowledgement.
    fn on_line(&mut self, line: &[u8], out: &mut Out<'_>) -> Flow {
        log::info!("ack: received {:?}", String::from_utf8_lossy(line));
        out.push(REPLY);
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::line::{MAX_LINE, QUIET};
    use crate::proto::{Action, Protocol};
    use crate::testing::{feed, test_epoch};

    fn replies(n: usize) -> Vec<u8> {
        REPLY.repeat(n)
    }

    #[test]
    fn nothing_is_sent_on_open() {
        let mut sent = Vec::new();
        Ack::new().handle_open(&mut Out::new(&mut sent, test_epoch()));
        assert!(sent.is_empty());
    }

    #[test]
    fn one_reply_per_line_whole_and_byte_by_byte() {
        let now = test_epoch();
        let stream = b"Michael\nTracy\r\n\nSarah\n";
        assert_eq!(feed(&mut Ack::new(), &[stream], now), replies(4));
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        let mut m = Ack::new();
        assert_eq!(feed(&mut m, &bytes, now), replies(4));
        assert_eq!(m.poll_timeout(), None, "no partial line is left");
    }

    #[test]
    fn trailing_bytes_wait_for_the_quiet_period() {
        let t0 = test_epoch();
        let mut m = Ack::new();
        assert_eq!(feed(&mut m, &[b"Michael\nTra"], t0), replies(1));
        assert_eq!(m.poll_timeout(), Some(t0 + QUIET));

        let mut sent = Vec::new();
        m.handle_timeout(&mut Out::new(&mut sent, t0 + QUIET / 2));
        assert!(sent.is_empty(), "a timer that fires early answers nothing");
        assert_eq!(feed(&mut m, &[b"cy"], t0 + QUIET / 2), b"");

        let mut out = Out::new(&mut sent, t0 + QUIET / 2 + QUIET);
        m.handle_timeout(&mut out);
        assert_eq!(out.action(), Action::Continue);
        assert_eq!(sent, REPLY);
        assert_eq!(m.poll_timeout(), None);
    }

    #[test]
    fn eof_answers_a_partial_line_and_a_clean_eof_nothing() {
        let now = test_epoch();
        let mut m = Ack::new();
        feed(&mut m, &[b"last words"], now);
        let mut sent = Vec::new();
        m.handle_eof(b"", &mut Out::new(&mut sent, now)).unwrap();
        assert_eq!(sent, REPLY);

        let mut sent = Vec::new();
        Ack::new()
            .handle_eof(b"", &mut Out::new(&mut sent, now))
            .unwrap();
        assert!(sent.is_empty());
    }

    #[test]
    fn shutdown_answers_a_partial_line_then_closes() {
        let now = test_epoch();
        let mut m = Ack::new();
        feed(&mut m, &[b"Michael"], now);
        let mut sent = Vec::new();
        let mut out = Out::new(&mut sent, now);
        m.handle_shutdown(&mut out);
        assert_eq!(out.action(), Action::CloseAfterFlush);
        assert_eq!(sent, REPLY);
    }

    #[test]
    fn any_bytes_are_acknowledged_and_an_over_long_line_is_a_peer_error() {
        let now = test_epoch();
        assert_eq!(
            feed(&mut Ack::new(), &[b"\xff\xfe\x00\x1b[2J\n"], now),
            replies(1)
        );
        let mut sent = Vec::new();
        let long = vec![b'a'; MAX_LINE + 1];
        assert!(Ack::new()
            .handle_input(&long, &mut Out::new(&mut sent, now))
            .is_err());
    }
}

//! Line framing, and the adapter every line demo (ack, stamp, greet, chat) is built on.
//!
//! TCP is a byte stream: one `write` by the peer can arrive as two reads, and two writes
//! as one read. The tutorials' clients nevertheless treat one `send()` as one message and
//! send no newline (`Michael`, then wait for `Hello, Michael!`), while `nc` and telnet send
//! whole lines ending in `\n` (or `\r\n`). [`LineFramer`] serves both:
//!
//! - a message ends at `\n`; a `\r` before it is dropped; several lines in one read are
//!   several messages, and a line split across reads is joined;
//! - bytes with no newline yet are kept, and become a message when the peer has gone
//!   quiet for [`QUIET`] (100 ms) with nothing more arriving, or when it closes its side.
//!
//! The trade-off: a newline-less client waits [`QUIET`] for each reply, and a line that a
//! newline-terminated client sends in two pieces more than [`QUIET`] apart is taken as two
//! messages. 100 ms is far above the gap between the segments of one write on any LAN or
//! loopback, and short enough that a person does not notice it. A line longer than the
//! limit ([`MAX_LINE`], 8 KiB) is a [`PeerError`]: the framer never buffers without bound.
//!
//! # Who keeps the partial line
//!
//! The contract lets a machine leave bytes unconsumed: the driver keeps them and presents
//! them again with the next arrival, so a machine may consume nothing until a line is
//! complete. The framer does not do that. [`LineFramer::feed`] always returns the whole
//! input's length: complete lines are handed out, and the bytes of an unfinished line are
//! copied into the framer's own buffer (at most [`MAX_LINE`] of them; one more is a
//! [`PeerError`], not a wait). It keeps the partial line itself because
//! `handle_timeout`, where a quiet peer's partial line becomes a message, is given no
//! input to read it from. After a [`Flow::Stop`] it drops the rest of that input, and
//! still reports all of it consumed.
//!
//! # The adapter
//!
//! Every line demo would otherwise repeat the same plumbing: feed the framer in
//! `handle_input`, ask it for its timer, hand out the partial line on a timeout, at end of
//! stream and on shutdown. [`Lines`] does that once. A demo implements [`OnLine`] (what to
//! do with one message, and optionally hooks for open, arrival, its own timer, end of
//! stream, shutdown and close), and `Lines<ItsHandler>` is its [`Protocol`].

use super::{CloseReason, Out, PeerError, Protocol};
use std::time::{Duration, Instant};

/// How long a partial line waits for more bytes before it is taken as a whole message.
pub const QUIET: Duration = Duration::from_millis(100);

/// The longest line accepted, in bytes, not counting the line ending. Like nginx's
/// 8 KiB header buffer: ample for a chat line or a name, small enough to bound memory.
pub const MAX_LINE: usize = 8 * 1024;

/// Whether to keep framing after a line was handed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Hand out the next line.
    Continue,
    /// Stop: the protocol is closing; the rest of the input is discarded.
    Stop,
}

/// Splits a byte stream into lines; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct LineFramer {
    partial: Vec<u8>,
    /// When the first byte of the partial line arrived without a newline after it.
    partial_since: Option<Instant>,
    quiet: Duration,
    max_line: usize,
}

impl Default for LineFramer {
    fn default() -> LineFramer {
        LineFramer::new(QUIET, MAX_LINE)
    }
}

impl LineFramer {
    /// A framer with the given quiet period and line limit.
    pub fn new(quiet: Duration, max_line: usize) -> LineFramer {
        LineFramer {
            partial: Vec::new(),
            partial_since: None,
            quiet,
            max_line,
        }
    }

    /// Hands every complete line in `input` (after any kept partial line) to `on_line`,
    /// without its line ending, and keeps the rest. Returns the bytes consumed: all of
    /// them. Errors if a line grows past the limit.
    pub fn feed(
        &mut self,
        input: &[u8],
        now: Instant,
        mut on_line: impl FnMut(&[u8]) -> Flow,
    ) -> Result<usize, PeerError> {
        let mut rest = input;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            self.check_len(self.partial.len() + nl)?;
            let flow = if self.partial.is_empty() {
                on_line(trim_cr(&rest[..nl]))
            } else {
                self.partial.extend_from_slice(&rest[..nl]);
                let line = std::mem::take(&mut self.partial);
                on_line(trim_cr(&line))
            };
            self.partial_since = None;
            rest = &rest[nl + 1..];
            if flow == Flow::Stop {
                self.partial = Vec::new();
                return Ok(input.len());
            }
        }
        if !rest.is_empty() {
            self.check_len(self.partial.len() + rest.len())?;
            self.partial.extend_from_slice(rest);
        }
        // The quiet clock restarts with every arrival: the peer is not quiet yet.
        if !self.partial.is_empty() {
            self.partial_since = Some(now);
        }
        Ok(input.len())
    }

    /// When a partial line becomes a message if nothing more arrives.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.partial_since.map(|t| t + self.quiet)
    }

    /// At or after [`LineFramer::poll_timeout`]: hands out the partial line as a message.
    pub fn handle_timeout(&mut self, now: Instant, on_line: impl FnOnce(&[u8]) -> Flow) -> Flow {
        match self.poll_timeout() {
            Some(at) if at <= now => self.take_partial(on_line),
            _ => Flow::Continue,
        }
    }

    /// The peer closed its side: a partial line is its last message.
    pub fn finish(&mut self, on_line: impl FnOnce(&[u8]) -> Flow) -> Flow {
        self.take_partial(on_line)
    }

    /// Returns true if and only if bytes of an unfinished line are held.
    pub fn has_partial(&self) -> bool {
        !self.partial.is_empty()
    }

    fn take_partial(&mut self, on_line: impl FnOnce(&[u8]) -> Flow) -> Flow {
        self.partial_since = None;
        if self.partial.is_empty() {
            return Flow::Continue;
        }
        let line = std::mem::take(&mut self.partial);
        on_line(trim_cr(&line))
    }

    fn check_len(&self, len: usize) -> Result<(), PeerError> {
        if len > self.max_line {
            Err(PeerError::new(format!(
                "line longer than {} bytes",
                self.max_line
            )))
        } else {
            Ok(())
        }
    }
}

/// What a line demo does with its messages; [`Lines`] turns it into a [`Protocol`].
///
/// Only [`OnLine::on_line`] is required. The hooks run after the adapter has done its
/// part of the same event (a partial line is handed to `on_line` before `on_eof` and
/// `on_shutdown`, and framer timeouts before `on_timeout`).
pub trait OnLine {
    /// One whole message, without its line ending. Return [`Flow::Stop`] when the
    /// connection is closing: the rest of the input, and all input after it, is then
    /// discarded unframed.
    fn on_line(&mut self, line: &[u8], out: &mut Out<'_>) -> Flow;

    /// The connection is established (a banner goes out here). Default: nothing.
    fn on_open(&mut self, _out: &mut Out<'_>) {}

    /// Bytes arrived (after the complete lines among them were handed out), whether or
    /// not they finished a line. Default: nothing.
    fn on_arrival(&mut self, _out: &mut Out<'_>) {}

    /// When the handler's own timer is due, besides the framer's. Default: none.
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    /// A timer came due (the framer's, the handler's, or both; check `out.now()`).
    /// Default: nothing.
    fn on_timeout(&mut self, _out: &mut Out<'_>) {}

    /// The peer closed its side, after its partial line, if any, was handed out.
    /// Default: nothing.
    fn on_eof(&mut self, _out: &mut Out<'_>) {}

    /// The server is shutting down, after a partial line, if any, was handed out (so a
    /// newline-less client waiting out the quiet period gets its answer first). Default:
    /// close once the queued output is sent, and take no more input.
    fn on_shutdown(&mut self, out: &mut Out<'_>) -> Flow {
        out.close();
        Flow::Stop
    }

    /// The connection ended, for whatever reason; nothing follows. Default: nothing.
    fn on_close(&mut self, _reason: &CloseReason) {}
}

/// A line demo as a [`Protocol`]: a [`LineFramer`] feeding an [`OnLine`] handler; see
/// the [module docs](self).
#[derive(Debug, Clone, Default)]
pub struct Lines<T> {
    framer: LineFramer,
    handler: T,
    /// A handler returned [`Flow::Stop`]: input is discarded unframed from now on.
    stopped: bool,
}

impl<T: OnLine> Lines<T> {
    /// `handler` behind the default framer ([`QUIET`], [`MAX_LINE`]).
    pub fn with_handler(handler: T) -> Lines<T> {
        Lines {
            framer: LineFramer::default(),
            handler,
            stopped: false,
        }
    }

    /// The demo's own state.
    pub fn handler(&self) -> &T {
        &self.handler
    }

    fn obey(&mut self, flow: Flow) {
        if flow == Flow::Stop {
            self.stopped = true;
        }
    }

    /// Frames `input`, handing every complete line to the handler.
    fn frame(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<(), PeerError> {
        if self.stopped {
            return Ok(());
        }
        let handler = &mut self.handler;
        let mut flow = Flow::Continue;
        self.framer.feed(input, out.now(), |line| {
            flow = handler.on_line(line, out);
            flow
        })?;
        self.obey(flow);
        Ok(())
    }

    /// Hands the partial line, if any, to the handler as a whole message.
    fn finish_partial(&mut self, out: &mut Out<'_>) {
        if self.stopped {
            return;
        }
        let handler = &mut self.handler;
        let flow = self.framer.finish(|line| handler.on_line(line, out));
        self.obey(flow);
    }
}

impl<T: OnLine> Protocol for Lines<T> {
    fn handle_open(&mut self, out: &mut Out<'_>) {
        self.handler.on_open(out);
    }

    fn handle_input(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<usize, PeerError> {
        if self.stopped {
            // Closing: the bytes are read only to be dropped (not framed, so no limit).
            return Ok(input.len());
        }
        self.frame(input, out)?;
        self.handler.on_arrival(out);
        // The framer keeps any partial line itself: everything was consumed.
        Ok(input.len())
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let framer = if self.stopped {
            None
        } else {
            self.framer.poll_timeout()
        };
        match (framer, self.handler.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn handle_timeout(&mut self, out: &mut Out<'_>) {
        if !self.stopped {
            // The peer went quiet after a partial line: that line is a whole message.
            let handler = &mut self.handler;
            let flow = self
                .framer
                .handle_timeout(out.now(), |line| handler.on_line(line, out));
            self.obey(flow);
        }
        self.handler.on_timeout(out);
    }

    fn handle_shutdown(&mut self, out: &mut Out<'_>) {
        self.finish_partial(out);
        let flow = self.handler.on_shutdown(out);
        self.obey(flow);
    }

    fn handle_eof(&mut self, rest: &[u8], out: &mut Out<'_>) -> Result<(), PeerError> {
        // The framer consumes everything, so `rest` is empty under the contract; framing
        // it anyway costs nothing and keeps a driver's leftovers from being lost.
        self.frame(rest, out)?;
        // The peer closed its side: a partial line is its last message.
        self.finish_partial(out);
        self.handler.on_eof(out);
        Ok(())
    }

    fn handle_close(&mut self, reason: &CloseReason) {
        self.handler.on_close(reason);
    }
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::test_epoch;

    fn lines_of(framer: &mut LineFramer, chunks: &[&[u8]], now: Instant) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        for c in chunks {
            let used = framer
                .feed(c, now, |l| {
                    got.push(l.to_vec());
                    Flow::Continue
                })
                .unwrap();
            assert_eq!(used, c.len(), "the framer consumes everything");
        }
        got
    }

    #[test]
    fn whole_split_and_joined_lines() {
        let now = test_epoch();
        let want = vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()];
        let stream = b"one\ntwo\r\nthree\n";
        // Whole, then one byte at a time, then every split point in two.
        assert_eq!(lines_of(&mut LineFramer::default(), &[stream], now), want);
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(lines_of(&mut LineFramer::default(), &bytes, now), want);
        for cut in 0..stream.len() {
            let (a, b) = stream.split_at(cut);
            assert_eq!(
                lines_of(&mut LineFramer::default(), &[a, b], now),
                want,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn partial_line_becomes_a_message_when_the_peer_goes_quiet() {
        let t0 = test_epoch();
        let mut f = LineFramer::default();
        assert!(lines_of(&mut f, &[b"Mich"], t0).is_empty());
        let t1 = t0 + Duration::from_millis(50);
        assert!(lines_of(&mut f, &[b"ael"], t1).is_empty());
        assert_eq!(
            f.poll_timeout(),
            Some(t1 + QUIET),
            "each arrival restarts the clock"
        );
        let mut got = None;
        assert_eq!(
            f.handle_timeout(t1 + QUIET / 2, |_| unreachable!()),
            Flow::Continue
        );
        f.handle_timeout(t1 + QUIET, |l| {
            got = Some(l.to_vec());
            Flow::Continue
        });
        assert_eq!(got.as_deref(), Some(&b"Michael"[..]));
        assert_eq!(f.poll_timeout(), None);
    }

    #[test]
    fn eof_finishes_a_partial_line_and_stop_discards_the_rest() {
        let now = test_epoch();
        let mut f = LineFramer::default();
        lines_of(&mut f, &[b"last words"], now);
        let mut got = Vec::new();
        f.finish(|l| {
            got.extend_from_slice(l);
            Flow::Continue
        });
        assert_eq!(got, b"last words");

        let mut seen = Vec::new();
        f.feed(b"exit\nafter\n", now, |l| {
            seen.push(l.to_vec());
            Flow::Stop
        })
        .unwrap();
        assert_eq!(seen, vec![b"exit".to_vec()]);
        assert!(!f.has_partial());
    }

    #[test]
    fn over_long_lines_are_refused_not_buffered() {
        let now = test_epoch();
        let mut f = LineFramer::new(QUIET, 16);
        assert!(f.feed(&[b'a'; 17], now, |_| Flow::Continue).is_err());
        let mut f = LineFramer::new(QUIET, 16);
        f.feed(&[b'a'; 10], now, |_| Flow::Continue).unwrap();
        assert!(f.feed(&[b'a'; 10], now, |_| Flow::Continue).is_err());
        let mut f = LineFramer::new(QUIET, 16);
        let mut long = vec![b'a'; 20];
        long.push(b'\n');
        assert!(f.feed(&long, now, |_| Flow::Continue).is_err());
    }
}

//! Greet: a welcome on connect, a greeting for every name, and `exit` to leave.
//!
//! From tutorial 003 (a Python server with one thread per connection that sends
//! `Welcome!`, answers each `recv` with `'Hello, %s!' % data`, and closes the connection
//! when the data is `exit`).
//!
//! # Wire format
//!
//! ```text
//! server -> client   Welcome!\n                       (as soon as the connection is up)
//! client -> server   Michael\n                        (or Michael with no newline)
//! server -> client   Hello, Michael!\n
//! client -> server   exit\n                           (or exit with no newline)
//! server             closes the connection: our FIN after everything queued
//! ```
//!
//! The name is sent back byte for byte (any bytes, UTF-8 or not), without its line
//! ending; an empty line is a name too (`Hello, !`). Only the exact message `exit` ends the
//! conversation (`exit\r\n` is `exit`; `Exit` and ` exit` are names); whatever the peer
//! sent after it is discarded unanswered.
//!
//! Messages are lines, framed by [`Lines`] (see [`line`](super::line)): the tutorial's
//! client, which sends `Michael` with no newline and waits for `Hello, Michael!`, gets it
//! after the quiet period (100 ms).
//!
//! # States
//!
//! ```text
//!                   open                  line "exit", or shutdown
//!  SendingWelcome ───────────▶ Greeting ─────────────────────────▶ Closing
//!                 send            │  ▲    close after the queued output
//!                 Welcome!        └──┘
//!                        other line: send Hello, <line>!
//! ```
//!
//! Every transition goes through one function that logs it at `trace` level
//! (`greet state=Greeting=>Closing`).

use super::line::{Flow, Lines, OnLine};
use super::Out;
use std::fmt;

/// The banner sent when the connection opens, with its line ending.
pub const WELCOME: &[u8] = b"Welcome!\n";

/// The message that ends the conversation.
pub const EXIT: &[u8] = b"exit";

/// Where a [`Greeter`] is in its conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Connected, and the welcome is not queued yet: it goes out before anything else.
    SendingWelcome,
    /// The welcome is queued; every message is a name to greet.
    Greeting,
    /// `exit` arrived or the server is shutting down: the connection closes once the
    /// queued output is sent, and input is discarded.
    Closing,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::SendingWelcome => "SendingWelcome",
            State::Greeting => "Greeting",
            State::Closing => "Closing",
        })
    }
}

/// What happened to the machine.
#[derive(Clone, Copy, Debug)]
enum Event<'a> {
    /// The connection is established.
    Open,
    /// A whole message (without its line ending) arrived.
    Line(&'a [u8]),
    /// The server is shutting down.
    Shutdown,
}

/// The greet machine: the line adapter around [`GreetLines`]; see the
/// [module docs](self).
pub type Greeter = Lines<GreetLines>;

/// The greet demo's conversation: its [`State`], stepped by every event.
#[derive(Debug, Clone)]
pub struct GreetLines {
    state: State,
}

impl Default for GreetLines {
    fn default() -> GreetLines {
        GreetLines {
            state: State::SendingWelcome,
        }
    }
}

impl Greeter {
    /// A fresh machine for one connection, about to send its welcome.
    pub fn new() -> Greeter {
        Greeter::default()
    }

    /// Where the conversation is.
    pub fn state(&self) -> State {
        self.handler().state
    }
}

/// The one place the state changes, so every transition is logged.
fn set_state(state: &mut State, next: State) {
    if *state != next {
        log::trace!("greet state={}=>{}", state, next);
        *state = next;
    }
}

/// The transition function: what `event` does in `state`. Returns whether the framer
/// should hand out the lines after this one.
fn step(state: &mut State, event: Event<'_>, out: &mut Out<'_>) -> Flow {
    match (*state, event) {
        // The connection is up: the welcome goes first.
        (State::SendingWelcome, Event::Open) => {
            out.push(WELCOME);
            set_state(state, State::Greeting);
            Flow::Continue
        }
        // A message before the open (a driver that skipped `handle_open`): still welcome
        // first, then treat the message as in Greeting.
        (State::SendingWelcome, Event::Line(_)) => {
            out.push(WELCOME);
            set_state(state, State::Greeting);
            step(state, event, out)
        }
        // The tutorial's goodbye: close once everything queued is sent; drop what follows.
        (State::Greeting, Event::Line(EXIT)) => {
            set_state(state, State::Closing);
            out.close();
            Flow::Stop
        }
        // Any other message, the empty one included, is a name to greet.
        (State::Greeting, Event::Line(name)) => {
            out.push(b"Hello, ");
            out.push(name);
            out.push(b"!\n");
            Flow::Continue
        }
        // A second open would be a driver bug: there is nothing to redo.
        (State::Greeting | State::Closing, Event::Open) => Flow::Continue,
        // After `exit` nothing more is answered.
        (State::Closing, Event::Line(_)) => Flow::Stop,
        // The server is going away: no more greetings; close after the queued output.
        (_, Event::Shutdown) => {
            set_state(state, State::Closing);
            out.close();
            Flow::Stop
        }
    }
}

impl OnLine for GreetLines {
    fn on_open(&mut self, out: &mut Out<'_>) {
        step(&mut self.state, Event::Open, out);
    }

    fn on_line(&mut self, line: &[u8], out: &mut Out<'_>) -> Flow {
        step(&mut self.state, Event::Line(line), out)
    }

    fn on_shutdown(&mut self, out: &mut Out<'_>) -> Flow {
        step(&mut self.state, Event::Shutdown, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::line::{MAX_LINE, QUIET};
    use crate::proto::{Action, Protocol};
    use crate::testing::test_epoch;
    use std::time::Instant;

    /// An opened machine and what it sent on open.
    fn opened(now: Instant) -> (Greeter, Vec<u8>) {
        let mut m = Greeter::new();
        assert_eq!(m.state(), State::SendingWelcome);
        let mut sent = Vec::new();
        let mut out = Out::new(&mut sent, now);
        m.handle_open(&mut out);
        assert_eq!(out.action(), Action::Continue);
        (m, sent)
    }

    /// Feeds `chunks` one call each at `now`; returns what was sent and the last action.
    /// Every byte must be consumed.
    fn feed(m: &mut Greeter, chunks: &[&[u8]], now: Instant) -> (Vec<u8>, Action) {
        let mut sent = Vec::new();
        let mut action = Action::Continue;
        for c in chunks {
            let mut out = Out::new(&mut sent, now);
            assert_eq!(m.handle_input(c, &mut out).unwrap(), c.len());
            if out.action() != Action::Continue {
                action = out.action();
            }
        }
        (sent, action)
    }

    mod sending_welcome {
        use super::*;

        #[test]
        fn open_sends_the_welcome_and_starts_greeting() {
            let (m, sent) = opened(test_epoch());
            assert_eq!(sent, WELCOME);
            assert_eq!(m.state(), State::Greeting);
        }

        #[test]
        fn a_message_before_the_open_still_gets_the_welcome_first() {
            let mut m = Greeter::new();
            let (sent, action) = feed(&mut m, &[b"Michael\n"], test_epoch());
            assert_eq!(sent, b"Welcome!\nHello, Michael!\n");
            assert_eq!(action, Action::Continue);
        }

        #[test]
        fn shutdown_before_the_open_just_closes() {
            let mut m = Greeter::new();
            let mut sent = Vec::new();
            let mut out = Out::new(&mut sent, test_epoch());
            m.handle_shutdown(&mut out);
            assert_eq!(out.action(), Action::CloseAfterFlush);
            assert!(sent.is_empty());
            assert_eq!(m.state(), State::Closing);
        }
    }

    mod greeting {
        use super::*;

        const CONVERSATION: &[u8] = b"Michael\nTracy\r\n\n\xffSarah\nexit\n";
        const REPLIES: &[u8] = b"Hello, Michael!\nHello, Tracy!\nHello, !\nHello, \xffSarah!\n";

        #[test]
        fn the_tutorial_conversation_whole_and_byte_by_byte() {
            let now = test_epoch();
            let (mut m, _) = opened(now);
            assert_eq!(
                feed(&mut m, &[CONVERSATION], now),
                (REPLIES.to_vec(), Action::CloseAfterFlush)
            );
            assert_eq!(m.state(), State::Closing);

            let (mut m, _) = opened(now);
            let bytes: Vec<&[u8]> = CONVERSATION.chunks(1).collect();
            assert_eq!(
                feed(&mut m, &bytes, now),
                (REPLIES.to_vec(), Action::CloseAfterFlush)
            );
            assert_eq!(m.state(), State::Closing);
        }

        #[test]
        fn the_tutorial_conversation_cut_anywhere_in_two() {
            let now = test_epoch();
            for cut in 0..=CONVERSATION.len() {
                let (a, b) = CONVERSATION.split_at(cut);
                let (mut m, _) = opened(now);
                assert_eq!(
                    feed(&mut m, &[a, b], now),
                    (REPLIES.to_vec(), Action::CloseAfterFlush),
                    "cut at {cut}"
                );
            }
        }

        #[test]
        fn only_the_exact_word_exit_closes() {
            let now = test_epoch();
            let (mut m, _) = opened(now);
            let (sent, action) = feed(&mut m, &[b"Exit\n exit\nexit \nexits\n"], now);
            assert_eq!(
                sent,
                b"Hello, Exit!\nHello,  exit!\nHello, exit !\nHello, exits!\n"
            );
            assert_eq!(action, Action::Continue);
            assert_eq!(
                feed(&mut m, &[b"exit\r\n"], now),
                (Vec::new(), Action::CloseAfterFlush)
            );
        }

        #[test]
        fn trailing_bytes_are_greeted_when_the_peer_goes_quiet() {
            let t0 = test_epoch();
            let (mut m, _) = opened(t0);
            let (sent, _) = feed(&mut m, &[b"Michael\nTra"], t0);
            assert_eq!(sent, b"Hello, Michael!\n");
            assert_eq!(m.poll_timeout(), Some(t0 + QUIET));

            let mut sent = Vec::new();
            m.handle_timeout(&mut Out::new(&mut sent, t0 + QUIET / 2));
            assert!(sent.is_empty(), "a timer that fires early answers nothing");
            feed(&mut m, &[b"cy"], t0 + QUIET / 2);

            let mut out = Out::new(&mut sent, t0 + QUIET / 2 + QUIET);
            m.handle_timeout(&mut out);
            assert_eq!(out.action(), Action::Continue);
            assert_eq!(sent, b"Hello, Tracy!\n");
            assert_eq!(m.poll_timeout(), None);
        }

        #[test]
        fn a_newline_less_exit_closes_when_the_peer_goes_quiet() {
            let t0 = test_epoch();
            let (mut m, _) = opened(t0);
            feed(&mut m, &[b"exit"], t0);
            let mut sent = Vec::new();
            let mut out = Out::new(&mut sent, t0 + QUIET);
            m.handle_timeout(&mut out);
            assert_eq!(out.action(), Action::CloseAfterFlush);
            assert!(sent.is_empty());
            assert_eq!(m.state(), State::Closing);
        }

        #[test]
        fn eof_greets_a_partial_line_or_takes_it_as_exit() {
            let now = test_epoch();
            let (mut m, _) = opened(now);
            feed(&mut m, &[b"Sarah"], now);
            let mut sent = Vec::new();
            m.handle_eof(b"", &mut Out::new(&mut sent, now)).unwrap();
            assert_eq!(sent, b"Hello, Sarah!\n");

            let (mut m, _) = opened(now);
            feed(&mut m, &[b"exit"], now);
            let mut sent = Vec::new();
            let mut out = Out::new(&mut sent, now);
            m.handle_eof(b"", &mut out).unwrap();
            assert_eq!(out.action(), Action::CloseAfterFlush);
            assert!(sent.is_empty());
        }

        #[test]
        fn shutdown_greets_a_partial_line_then_closes() {
            let now = test_epoch();
            let (mut m, _) = opened(now);
            feed(&mut m, &[b"Michael"], now);
            let mut sent = Vec::new();
            let mut out = Out::new(&mut sent, now);
            m.handle_shutdown(&mut out);
            assert_eq!(out.action(), Action::CloseAfterFlush);
            assert_eq!(sent, b"Hello, Michael!\n");
            assert_eq!(m.state(), State::Closing);
        }

        #[test]
        fn an_over_long_line_is_a_peer_error() {
            let now = test_epoch();
            let (mut m, _) = opened(now);
            let mut sent = Vec::new();
            let long = vec![b'a'; MAX_LINE + 1];
            assert!(m
                .handle_input(&long, &mut Out::new(&mut sent, now))
                .is_err());
        }
    }

    mod closing {
        use super::*;

        #[test]
        fn what_follows_exit_is_dropped_unanswered() {
            let now = test_epoch();
            let (mut m, _) = opened(now);
            let (sent, action) = feed(&mut m, &[b"Michael\nexit\nTracy\nSar"], now);
            assert_eq!(sent, b"Hello, Michael!\n");
            assert_eq!(action, Action::CloseAfterFlush);
            assert_eq!(m.poll_timeout(), None);

            // Later input, even an over-long line, is consumed and ignored.
            let long = vec![b'a'; MAX_LINE * 2];
            let (sent, _) = feed(&mut m, &[b"Sarah\n", &long], now);
            assert!(sent.is_empty());
            let mut sent = Vec::new();
            m.handle_eof(b"", &mut Out::new(&mut sent, now)).unwrap();
            m.handle_timeout(&mut Out::new(&mut sent, now + QUIET));
            assert!(sent.is_empty());
            assert_eq!(m.state(), State::Closing);
        }
    }

    #[test]
    fn states_display_as_their_names() {
        assert_eq!(State::SendingWelcome.to_string(), "SendingWelcome");
        assert_eq!(State::Greeting.to_string(), "Greeting");
        assert_eq!(State::Closing.to_string(), "Closing");
    }
}

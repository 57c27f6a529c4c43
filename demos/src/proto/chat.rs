//! chat: server push and keep-alive (tutorial 000).
//!
//! Every line a client sends is pushed to every *other* client as `<name>: <line>`. The
//! server speaks first when something happens to the room, without being asked: that
//! is server push, which a request/reply protocol cannot do.
//!
//! Wire format (lines end with `\n`; input lines are framed by [`Lines`], see
//! [`line`](super::line)):
//!
//! | from the client        | to the others                 | to the client |
//! |------------------------|-------------------------------|---------------|
//! | (connects)             | `* <name> joined`             |               |
//! | `<line>`               | `<name>: <line>`              |               |
//! | `/nick NAME`           | `* <old> is now <NAME>`       | same          |
//! | `PONG`                 |                               |               |
//! | (disconnects)          | `* <name> left`               |               |
//! | (silent for `ping_after`) |                            | `PING`        |
//! | (silent for `drop_after`) | `* <name> left`            | `* idle too long, bye`, then close |
//!
//! The default name is the peer's address. A name is 1 to 32 bytes of printable ASCII
//! without spaces; a refused `/nick` is answered with `* invalid name` to the client
//! alone. Empty lines are ignored.
//!
//! Keep-alive: a client silent for `ping_after` (15 s) gets `PING`; anything it sends
//! (`PONG` is the polite answer) counts as life. One silent for `drop_after` (60 s) is
//! dropped. Long-lived connections through NATs and firewalls need such traffic, and
//! the server learns of peers that vanished without a FIN.
//!
//! Slow readers: deliveries go through each member's [`Mailbox`], and the driver bounds
//! what it holds per connection. A member over its high-water mark holds back whoever
//! delivers to it (the reactor stops reading the sender; a blocking sender's thread waits
//! in its write), so a fast publisher is paced by its slowest live reader and healthy
//! members lose nothing. A member that stays over the mark for the backlog timeout (60 s
//! by default), or passes the output limit, is dropped (logged, counted in
//! `Stats::slow_readers`), which lets the publisher go on.

use super::line::{Flow, Lines, OnLine};
use super::{CloseReason, Mailbox, Out};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Keep-alive tunables of the chat demo.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChatConfig {
    /// Send `PING` to a client silent this long. Default 15 s.
    pub ping_after: Duration,
    /// Drop a client silent this long. Default 60 s.
    pub drop_after: Duration,
}

impl Default for ChatConfig {
    fn default() -> ChatConfig {
        ChatConfig {
            ping_after: Duration::from_secs(15),
            drop_after: Duration::from_secs(60),
        }
    }
}

/// The members of one chat room, shared by the machines of every connection in it.
#[derive(Default)]
pub struct Room {
    members: BTreeMap<u64, Member>,
    next_id: u64,
}

struct Member {
    name: String,
    mailbox: Option<Mailbox>,
}

impl Room {
    /// A new empty room, ready to be shared by the connections' machines.
    pub fn shared() -> Arc<Mutex<Room>> {
        Arc::new(Mutex::new(Room::default()))
    }

    /// How many clients are in the room.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Returns true if and only if nobody is in the room.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

/// Where one connection is in the room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChatState {
    /// Connected, not yet announced (before `handle_open`).
    Connecting,
    /// In the room: lines go to the others.
    Chatting,
    /// Gone from the room (left, dropped, or closed).
    Left,
}

impl fmt::Display for ChatState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChatState::Connecting => "Connecting",
            ChatState::Chatting => "Chatting",
            ChatState::Left => "Left",
        })
    }
}

/// The chat machine of one connection: the line adapter around [`ChatLines`].
pub type Chat = Lines<ChatLines>;

/// One connection's membership of a room: what it does with its lines and its silence.
pub struct ChatLines {
    room: Arc<Mutex<Room>>,
    cfg: ChatConfig,
    state: ChatState,
    id: u64,
    name: String,
    /// When the client last sent anything (from the open on; `None` before it).
    last_heard: Option<Instant>,
    /// `PING` was sent since the client was last heard.
    pinged: bool,
}

impl Chat {
    /// A machine for one connection to `room`.
    pub fn new(room: Arc<Mutex<Room>>, cfg: ChatConfig) -> Chat {
        Lines::with_handler(ChatLines::new(room, cfg))
    }

    /// This client's current name.
    pub fn name(&self) -> &str {
        self.handler().name()
    }
}

impl ChatLines {
    /// A member of `room`, joining it when the connection opens.
    pub fn new(room: Arc<Mutex<Room>>, cfg: ChatConfig) -> ChatLines {
        ChatLines {
            room,
            cfg,
            state: ChatState::Connecting,
            id: 0,
            name: String::new(),
            last_heard: None,
            pinged: false,
        }
    }

    /// This client's current name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn set_state(&mut self, next: ChatState) {
        log::trace!("chat state={}=>{} ({})", self.state, next, self.name);
        self.state = next;
    }

    /// Sends `text` to every member but this one. Mailboxes are collected under the lock
    /// and written to after it is released, so a slow delivery never holds the room.
    fn broadcast(&self, text: &str) {
        let targets: Vec<Mailbox> = {
            let room = self.room.lock().unwrap_or_else(|p| p.into_inner());
            room.members
                .iter()
                .filter(|(&id, _)| id != self.id)
                .filter_map(|(_, m)| m.mailbox.clone())
                .collect()
        };
        for m in targets {
            m.deliver(text.as_bytes());
        }
    }

    fn leave(&mut self) {
        if self.state != ChatState::Chatting {
            return;
        }
        self.room
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .members
            .remove(&self.id);
        self.broadcast(&format!("* {} left\n", self.name));
        self.set_state(ChatState::Left);
    }

    /// The client was heard from at `now`: the keep-alive clock restarts.
    fn heard(&mut self, now: Instant) {
        self.last_heard = Some(now);
        self.pinged = false;
    }

    fn say(&mut self, line: &[u8], out: &mut Out<'_>) {
        self.heard(out.now());
        let line = String::from_utf8_lossy(line);
        if line.is_empty() || line == "PONG" {
            return;
        }
        if let Some(rest) = line.strip_prefix("/nick") {
            let new = rest.trim();
            if rest.starts_with(' ') && valid_name(new) {
                let notice = format!("* {} is now {new}\n", self.name);
                self.name = new.to_string();
                if let Some(m) = self
                    .room
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .members
                    .get_mut(&self.id)
                {
                    m.name = self.name.clone();
                }
                self.broadcast(&notice);
                out.push(notice.as_bytes());
            } else {
                out.push(b"* invalid name\n");
            }
            return;
        }
        self.broadcast(&format!("{}: {line}\n", self.name));
    }

    fn keepalive_deadline(&self) -> Option<Instant> {
        let last_heard = self.last_heard?;
        match self.state {
            ChatState::Chatting if self.pinged => Some(last_heard + self.cfg.drop_after),
            ChatState::Chatting => Some(last_heard + self.cfg.ping_after),
            _ => None,
        }
    }
}

fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_graphic())
}

impl OnLine for ChatLines {
    fn on_open(&mut self, out: &mut Out<'_>) {
        self.heard(out.now());
        let mailbox = out.mailbox();
        if mailbox.is_none() {
            log::warn!("chat: this driver offers no mailbox; the client will not receive messages");
        }
        {
            let mut room = self.room.lock().unwrap_or_else(|p| p.into_inner());
            room.next_id += 1;
            self.id = room.next_id;
            self.name = match out.peer() {
                Some(peer) if !peer.to_string().contains(' ') => peer.to_string(),
                _ => format!("guest{}", self.id),
            };
            room.members.insert(
                self.id,
                Member {
                    name: self.name.clone(),
                    mailbox,
                },
            );
        }
        self.set_state(ChatState::Chatting);
        self.broadcast(&format!("* {} joined\n", self.name));
    }

    fn on_line(&mut self, line: &[u8], out: &mut Out<'_>) -> Flow {
        self.say(line, out);
        Flow::Continue
    }

    /// Anything the client sends, a partial line too, counts as life.
    fn on_arrival(&mut self, out: &mut Out<'_>) {
        self.heard(out.now());
    }

    fn on_eof(&mut self, _out: &mut Out<'_>) {
        self.leave();
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.keepalive_deadline()
    }

    fn on_timeout(&mut self, out: &mut Out<'_>) {
        let now = out.now();
        let Some(last_heard) = self.last_heard else {
            return;
        };
        if self.state != ChatState::Chatting {
            return;
        }
        if now >= last_heard + self.cfg.drop_after {
            log::debug!(
                "chat: dropping {}: silent for {:?}",
                self.name,
                self.cfg.drop_after
            );
            out.push(b"* idle too long, bye\n");
            self.leave();
            out.close();
        } else if !self.pinged && now >= last_heard + self.cfg.ping_after {
            log::trace!(
                "chat: {} silent for {:?}: PING",
                self.name,
                self.cfg.ping_after
            );
            out.push(b"PING\n");
            self.pinged = true;
        }
    }

    fn on_close(&mut self, reason: &CloseReason) {
        log::debug!("chat: {} gone: {reason}", self.name);
        self.leave();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Protocol;
    use crate::testing::test_epoch;
    use sockloop::session::Deliver;
    use std::sync::Mutex as StdMutex;

    /// A mailbox that records what was delivered.
    #[derive(Default)]
    struct Inbox(StdMutex<Vec<u8>>);

    impl Deliver for Inbox {
        fn deliver(&self, bytes: &[u8]) -> bool {
            self.0.lock().unwrap().extend_from_slice(bytes);
            true
        }
        fn close(&self) {}
    }

    fn join(room: &Arc<Mutex<Room>>, peer: &str, now: Instant) -> (Chat, Arc<Inbox>) {
        let inbox = Arc::new(Inbox::default());
        let mb = Mailbox::new(inbox.clone());
        let make = move || mb.clone();
        let peer = sockloop::net::Endpoint::parse(peer).unwrap();
        let mut chat = Chat::new(room.clone(), ChatConfig::default());
        let mut sink = Vec::new();
        chat.handle_open(
            &mut Out::new(&mut sink, now)
                .with_mailbox(&make)
                .with_peer(&peer),
        );
        assert!(sink.is_empty(), "nothing is sent to the one who joins");
        (chat, inbox)
    }

    fn take(inbox: &Inbox) -> String {
        String::from_utf8(std::mem::take(&mut *inbox.0.lock().unwrap())).unwrap()
    }

    fn say(chat: &mut Chat, bytes: &[u8], now: Instant) -> Vec<u8> {
        let mut sink = Vec::new();
        let used = chat
            .handle_input(bytes, &mut Out::new(&mut sink, now))
            .unwrap();
        assert_eq!(used, bytes.len());
        sink
    }

    #[test]
    fn lines_go_to_the_others_with_notices() {
        let now = test_epoch();
        let room = Room::shared();
        let (mut a, a_in) = join(&room, "127.0.0.1:1000", now);
        let (mut b, b_in) = join(&room, "127.0.0.1:2000", now);
        assert_eq!(take(&a_in), "* 127.0.0.1:2000 joined\n");
        assert_eq!(take(&b_in), "");

        say(&mut a, b"hi there\n", now);
        assert_eq!(take(&b_in), "127.0.0.1:1000: hi there\n");
        assert_eq!(take(&a_in), "", "no echo to the sender");

        // One byte at a time gives the same result.
        for byte in b"/nick bob\n" {
            say(&mut b, &[*byte], now);
        }
        assert_eq!(take(&a_in), "* 127.0.0.1:2000 is now bob\n");
        say(&mut b, b"yo\r\n", now);
        assert_eq!(take(&a_in), "bob: yo\n");
        assert_eq!(say(&mut b, b"/nick \n", now), b"* invalid name\n");

        b.handle_close(&CloseReason::PeerClosed);
        assert_eq!(take(&a_in), "* bob left\n");
        assert_eq!(room.lock().unwrap().len(), 1);
        a.handle_close(&CloseReason::PeerClosed);
        assert!(room.lock().unwrap().is_empty());
    }

    #[test]
    fn silent_clients_are_pinged_then_dropped() {
        let t0 = test_epoch();
        let room = Room::shared();
        let (mut a, _a_in) = join(&room, "127.0.0.1:1000", t0);
        let (_b, b_in) = join(&room, "127.0.0.1:2000", t0);
        let cfg = ChatConfig::default();
        assert_eq!(a.poll_timeout(), Some(t0 + cfg.ping_after));

        let mut sink = Vec::new();
        let t1 = t0 + cfg.ping_after;
        a.handle_timeout(&mut Out::new(&mut sink, t1));
        assert_eq!(sink, b"PING\n");
        assert_eq!(a.poll_timeout(), Some(t0 + cfg.drop_after));

        // Answering resets the clock.
        say(&mut a, b"PONG\n", t1);
        assert_eq!(a.poll_timeout(), Some(t1 + cfg.ping_after));

        let mut sink = Vec::new();
        let mut out = Out::new(&mut sink, t1 + cfg.ping_after);
        a.handle_timeout(&mut out);
        let t2 = t1 + cfg.drop_after;
        let mut out = Out::new(&mut sink, t2);
        a.handle_timeout(&mut out);
        assert_eq!(out.action(), crate::proto::Action::CloseAfterFlush);
        assert_eq!(sink, b"PING\n* idle too long, bye\n");
        assert!(take(&b_in).ends_with("* 127.0.0.1:1000 left\n"));
    }

    #[test]
    fn partial_line_is_sent_once_the_client_goes_quiet() {
        let now = test_epoch();
        let room = Room::shared();
        let (mut a, _) = join(&room, "127.0.0.1:1000", now);
        let (_b, b_in) = join(&room, "127.0.0.1:2000", now);
        say(&mut a, b"no newline", now);
        let at = a.poll_timeout().unwrap();
        a.handle_timeout(&mut Out::new(&mut Vec::new(), at));
        assert_eq!(take(&b_in), "127.0.0.1:1000: no newline\n");
    }
}

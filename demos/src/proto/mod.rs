//! The tutorials' programs as sans-I/O state machines.
//!
//! Each module is one program of the source tutorials, written against the protocol
//! contract of the core crate ([`sockloop::proto::Protocol`] for streams,
//! [`sockloop::proto::DatagramProtocol`] for datagrams). None of them holds a socket, a
//! clock or a thread: bytes and time come in, bytes and actions go out, so every driver
//! serves every machine, and each is unit-tested with byte slices alone.
//!
//! The contract's types are re-exported here so a machine's module can name them
//! beside its siblings (`use super::{Out, Protocol}`).

pub mod ack;
pub mod calendar;
pub mod chat;
pub mod echo;
pub mod file;
pub mod greet;
pub mod hello;
pub mod http;
pub mod line;
pub mod stamp;

pub use sockloop::proto::{
    Action, CloseReason, DatagramProtocol, Mailbox, Out, PeerError, Protocol, Transmit,
};

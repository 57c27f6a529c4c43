//! sockloop: a single-threaded event-loop reactor built by hand on mio.
pub mod blocking;
pub mod buf;
pub mod demos;
pub mod error;
pub mod net;
pub mod proto;
pub mod reactor;

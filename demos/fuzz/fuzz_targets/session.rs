//! The connection core fed arbitrary event sequences, with a line protocol that answers,
//! streams, closes and errs on command (see `sockloop_fuzz::drive` for the operations).
#![no_main]
use libfuzzer_sys::fuzz_target;
use sockloop::proto::{Out, PeerError, Protocol};

/// Lines: `s` streams 4 KiB pieces until `e`; `q` closes; `a` aborts; `!` is a peer
/// error; `t` sets a timer 50 ms out; anything else is echoed.
#[derive(Default)]
struct Script {
    streaming: bool,
    timer: Option<std::time::Instant>,
}

impl Protocol for Script {
    fn handle_input(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<usize, PeerError> {
        let mut used = 0;
        while let Some(nl) = input[used..].iter().position(|&b| b == b'\n') {
            let line = &input[used..used + nl];
            used += nl + 1;
            match line.first() {
                Some(b's') => {
                    self.streaming = true;
                    out.want_writable();
                }
                Some(b'e') => self.streaming = false,
                Some(b'q') => out.close(),
                Some(b'a') => out.abort(),
                Some(b'!') => return Err(PeerError::new("bad line")),
                Some(b't') => self.timer = Some(out.now() + std::time::Duration::from_millis(50)),
                _ => out.push(line),
            }
        }
        Ok(used)
    }
    fn handle_writable(&mut self, out: &mut Out<'_>) {
        if self.streaming {
            out.push(&[b'x'; 4096]);
            out.want_writable();
        }
    }
    fn poll_timeout(&self) -> Option<std::time::Instant> {
        self.timer
    }
    fn handle_timeout(&mut self, out: &mut Out<'_>) {
        self.timer = None;
        out.push(b"tick\n");
    }
}

fuzz_target!(|data: &[u8]| {
    sockloop_fuzz::drive(Script::default(), data);
});

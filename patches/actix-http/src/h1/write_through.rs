//! hubferry: a response body that writes to the connection itself.

use std::cell::Cell;

/// hubferry: lets a response body write some of its bytes to the connection's socket itself
/// (with `splice(2)` from another socket, say) instead of yielding them, on an HTTP/1.1
/// connection.
///
/// The application puts an `Rc<WriteThrough>` into the connection's extensions from its
/// `on_connect` hook; the dispatcher of that connection then honours it for every response.
/// A body that wants to write itself:
///
/// 1. calls [`require_flushed`](Self::require_flushed); from then on, until its response ends,
///    the dispatcher polls it only when everything taken from the response so far (the head,
///    earlier chunks) has been written to the I/O, so what the body writes itself follows it
///    on the wire;
/// 2. writes, and counts what it wrote with [`wrote`](Self::wrote), which the dispatcher takes
///    after each poll and counts against the response's framing as if the bytes had been
///    yielded. Only a body with a Content-Length (or one ending with the connection) can do
///    this: bytes written past the framing of a chunked body would corrupt it, and the
///    dispatcher fails the response instead.
///
/// Nothing else writes to the connection while a response is being sent, so between polls the
/// body has the socket to itself.
#[derive(Debug, Default)]
pub struct WriteThrough {
    flushed_first: Cell<bool>,
    written: Cell<u64>,
}

impl WriteThrough {
    /// Nothing asked for yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks to be polled only once all the dispatcher took from the response before is written
    /// to the I/O; in force until the response ends.
    pub fn require_flushed(&self) {
        self.flushed_first.set(true);
    }

    /// Counts `n` body bytes written to the connection by the body itself.
    pub fn wrote(&self, n: u64) {
        self.written.set(self.written.get() + n);
    }

    /// Whether the body is to be polled only with nothing left to write before it.
    pub(crate) fn flushed_first(&self) -> bool {
        self.flushed_first.get()
    }

    /// The bytes the body wrote itself since this was last called.
    pub(crate) fn take_written(&self) -> u64 {
        self.written.take()
    }

    /// A response begins or ends: nothing is asked for.
    pub(crate) fn reset(&self) {
        self.flushed_first.set(false);
        self.written.set(0);
    }
}

//! What a PostgreSQL session's recording keeps of the server's side: every message the client
//! was shown, after masking, except rows past the per-statement cap (counted) and messages too
//! large to hold whole (named with their size). Statements and results come from the core.

use gatehouse_core::record::{FrameKind, Recorder};

/// Counts rows per result and keeps the cap.
pub(crate) struct Tap {
    cap: u64,
    rows: u64,
    omitted: u64,
    omitted_bytes: u64,
}

impl Tap {
    pub(crate) fn new(cap: u64) -> Tap {
        Tap {
            cap,
            rows: 0,
            omitted: 0,
            omitted_bytes: 0,
        }
    }

    /// A whole message as the client was sent it.
    pub(crate) fn message(&mut self, recorder: &Recorder, tag: u8, bytes: &[u8]) {
        if matches!(tag, b'D' | b'd') {
            if self.rows < self.cap {
                self.rows += 1;
                recorder.frame(FrameKind::Wire, bytes);
            } else {
                self.omit(bytes.len() as u64);
            }
            return;
        }
        self.end_rows(recorder);
        recorder.frame(FrameKind::Wire, bytes);
    }

    /// A message relayed in pieces (larger than the framer holds whole): named, not kept.
    pub(crate) fn streamed(&mut self, recorder: &Recorder, tag: u8, len: usize) {
        if !matches!(tag, b'D' | b'd') {
            self.end_rows(recorder);
        }
        let note = serde_json::json!({
            "messages": 1,
            "bytes": len + 1,
            "type": char::from(tag).to_string(),
            "why": "too large to record",
        });
        recorder.json(FrameKind::Omitted, &note);
    }

    fn omit(&mut self, bytes: u64) {
        self.omitted += 1;
        self.omitted_bytes += bytes;
    }

    /// A result's rows are over: say how many were not kept, and start counting again.
    fn end_rows(&mut self, recorder: &Recorder) {
        if self.omitted > 0 {
            let note = serde_json::json!({
                "messages": self.omitted,
                "bytes": self.omitted_bytes,
                "why": "past the rows kept per statement",
            });
            recorder.json(FrameKind::Omitted, &note);
        }
        self.rows = 0;
        self.omitted = 0;
        self.omitted_bytes = 0;
    }
}

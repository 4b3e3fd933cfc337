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

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_core::record::{Header, Reader, RecorderLimits};

    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut m = bytes::BytesMut::new();
        crate::codec::message_with(&mut m, tag, |out| out.extend_from_slice(body));
        m.to_vec()
    }

    #[tokio::test]
    async fn rows_past_the_cap_are_counted_per_result_and_large_messages_named() {
        let dir = tempfile::tempdir().unwrap();
        let header = Header {
            version: 1,
            session: "s".into(),
            protocol: "postgres".into(),
            connection: "c".into(),
            started: "t".into(),
            encryption: None,
        };
        let recorder =
            Recorder::create(dir.path(), &header, None, RecorderLimits::default()).unwrap();
        let mut tap = Tap::new(2);
        let row = message(b'D', b"\0\x01\0\0\0\x01x");
        for _ in 0..2 {
            tap.message(&recorder, b'T', &message(b'T', b"\0\0"));
            for _ in 0..5 {
                tap.message(&recorder, b'D', &row);
            }
            tap.message(&recorder, b'C', &message(b'C', b"SELECT 5\0"));
        }
        tap.streamed(&recorder, b'D', 1 << 20);
        let summary = recorder.finish(&serde_json::json!({})).await.unwrap();
        let file = std::fs::File::open(dir.path().join(summary.file)).unwrap();
        let mut reader = Reader::new(file, None).unwrap();
        let mut kinds = Vec::new();
        let mut omitted = Vec::new();
        while let Some(frame) = reader.next_frame().unwrap() {
            match frame.kind {
                FrameKind::Wire => kinds.push(char::from(frame.payload[0])),
                FrameKind::Omitted => {
                    kinds.push('-');
                    omitted.push(frame.json().unwrap());
                }
                _ => {}
            }
        }
        let kinds: String = kinds.into_iter().collect();
        assert_eq!(kinds, "TDD-CTDD-C-");
        assert_eq!(omitted[0]["messages"], 3);
        assert_eq!(omitted[0]["bytes"], 3 * row.len());
        assert_eq!(omitted[2]["bytes"], (1 << 20) + 1);
    }
}

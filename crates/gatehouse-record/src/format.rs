//! The file layout (all integers big-endian):
//!
//! ```text
//! file   = MAGIC u32(header_len) header_json chunk*
//! chunk  = u32(len) bytes(len)          ; frames, or their sealed form when encrypted
//! frame  = u8(kind) u64(micros since the session opened) u32(len) payload(len)
//! ```
//!
//! A chunk holds whole frames. Payloads are JSON, except `wire` frames, which hold one
//! protocol message exactly as the client was sent it (after masking).

use serde::{Deserialize, Serialize};

/// First bytes of every recording; the digits are the format version.
pub const MAGIC: &[u8; 8] = b"GHREC01\n";
pub const FILE_EXTENSION: &str = "ghrec";
/// Readers refuse headers and chunks longer than these (a corrupt length cannot make them
/// allocate without bound); writers stay far below.
pub(crate) const MAX_HEADER: usize = 64 * 1024;
pub(crate) const MAX_CHUNK: usize = 64 * 1024 * 1024;
pub(crate) const FRAME_HEAD: usize = 13;

/// What a recording is of, written first in the clear.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub version: u32,
    pub session: String,
    pub protocol: String,
    pub connection: String,
    /// RFC 3339, when the session opened; frame times count from here.
    pub started: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
}

/// How the chunks are sealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encryption {
    /// `xchacha20poly1305`.
    pub alg: String,
    /// Names the key (the first 8 bytes of its SHA-256, hex), never the key.
    pub key_id: String,
    /// 16 random bytes, hex; a chunk's nonce is this followed by its index.
    pub nonce_prefix: String,
}

/// The kinds of frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// A statement as audited (masked): `{"seq", "text", "step", "decision", ...}`.
    Statement,
    /// A statement's end: `{"seq", "status", "rows", "duration_ns", ...}`.
    Result,
    /// One protocol message as the client was sent it (masked).
    Wire,
    /// Messages not kept (past the per-statement row cap, or too large): `{"messages", "bytes"}`.
    Omitted,
    /// The session's size cap was reached; nothing more is kept but the end.
    Truncated,
    /// The session's end: `{"cause", "dropped_frames", "dropped_bytes"}`.
    End,
}

impl FrameKind {
    pub fn code(self) -> u8 {
        match self {
            FrameKind::Statement => 1,
            FrameKind::Result => 2,
            FrameKind::Wire => 3,
            FrameKind::Omitted => 4,
            FrameKind::Truncated => 5,
            FrameKind::End => 6,
        }
    }

    pub fn from_code(code: u8) -> Option<FrameKind> {
        Some(match code {
            1 => FrameKind::Statement,
            2 => FrameKind::Result,
            3 => FrameKind::Wire,
            4 => FrameKind::Omitted,
            5 => FrameKind::Truncated,
            6 => FrameKind::End,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FrameKind::Statement => "statement",
            FrameKind::Result => "result",
            FrameKind::Wire => "wire",
            FrameKind::Omitted => "omitted",
            FrameKind::Truncated => "truncated",
            FrameKind::End => "end",
        }
    }
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameKind,
    /// Microseconds since the session opened.
    pub at_micros: u64,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The payload as JSON (every kind but `wire`).
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.payload).ok()
    }
}

pub(crate) fn encoded_len(payload: usize) -> usize {
    FRAME_HEAD + payload
}

pub(crate) fn encode_frame(out: &mut Vec<u8>, kind: FrameKind, at_micros: u64, payload: &[u8]) {
    out.push(kind.code());
    out.extend_from_slice(&at_micros.to_be_bytes());
    // Callers bound payloads far below 4 GiB (a wire message is at most 1 GiB).
    out.extend_from_slice(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(payload);
}

/// Splits a chunk's plain bytes into frames; `None` names the offset of a malformed one.
pub(crate) fn parse_frames(mut chunk: &[u8], out: &mut Vec<Frame>) -> Result<(), usize> {
    let total = chunk.len();
    while !chunk.is_empty() {
        let at = total - chunk.len();
        if chunk.len() < FRAME_HEAD {
            return Err(at);
        }
        let kind = FrameKind::from_code(chunk[0]).ok_or(at)?;
        let mut micros = [0u8; 8];
        micros.copy_from_slice(&chunk[1..9]);
        let mut len = [0u8; 4];
        len.copy_from_slice(&chunk[9..13]);
        let len = usize::try_from(u32::from_be_bytes(len)).map_err(|_| at)?;
        let rest = &chunk[FRAME_HEAD..];
        if rest.len() < len {
            return Err(at);
        }
        out.push(Frame {
            kind,
            at_micros: u64::from_be_bytes(micros),
            payload: rest[..len].to_vec(),
        });
        chunk = &rest[len..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_truncated_frames_are_named() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, FrameKind::Statement, 7, br#"{"seq":1}"#);
        encode_frame(&mut buf, FrameKind::Wire, 9, b"C\0\0\0\x0dSELECT 1\0");
        let mut frames = Vec::new();
        parse_frames(&buf, &mut frames).unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].kind, FrameKind::Statement);
        assert_eq!(frames[0].at_micros, 7);
        assert_eq!(frames[1].payload, b"C\0\0\0\x0dSELECT 1\0");
        let first_len = encoded_len(9);
        for cut in 1..buf.len() - first_len {
            let mut frames = Vec::new();
            assert_eq!(
                parse_frames(&buf[..first_len + cut], &mut frames),
                Err(first_len)
            );
        }
        assert!(parse_frames(&[0u8; 13], &mut Vec::new()).is_err());
    }
}

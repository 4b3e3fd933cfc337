//! Masking of the server's messages on their way to the client: every text value a message
//! carries goes through the caller's detectors, in place (lengths kept), whole messages and
//! streamed ones alike. Pure: bytes in, bytes out, table-tested.
//!
//! * DataRow: each field value. The `null` strategy NULLs the whole field when the row is
//!   whole; in a streamed row, whose length has gone out already, the value is starred. A
//!   value that is nothing but a number keeps digits (`*` becomes `0`), so numeric columns
//!   still parse.
//! * ErrorResponse, NoticeResponse: every field but severity, SQLSTATE and source location.
//! * NotificationResponse: channel and payload. ParameterStatus: the value.
//! * CopyData: the whole data (text and CSV rows). RowDescription: column names.
//! * FunctionCallResponse: the value.
//!
//! A streamed value is held back in a window of [`WINDOW`] bytes, so a value split across
//! chunks is still found whole; a value only counts as found once the byte after it is known.

use bytes::{BufMut, BytesMut};
use gatehouse_core::mask::scan::Finding;
use gatehouse_core::mask::{Counts, Masked, Masker};
use std::sync::Arc;

/// Bytes of a streamed value held back until the bytes after them are known: the longest
/// value found across chunks (a PEM key, a JWT) fits in it.
pub const WINDOW: usize = 64 * 1024;

/// Settings whose values the client reads the protocol by: never masked.
const PROTOCOL_SETTINGS: &[&[u8]] = &[
    b"client_encoding",
    b"server_encoding",
    b"DateStyle",
    b"IntervalStyle",
    b"integer_datetimes",
    b"standard_conforming_strings",
    b"TimeZone",
    b"server_version",
    b"is_superuser",
    b"in_hot_standby",
    b"default_transaction_read_only",
    b"scram_iterations",
];

/// Whether messages of this type carry text that masking reads.
pub fn masks(tag: u8) -> bool {
    matches!(tag, b'D' | b'E' | b'N' | b'A' | b'S' | b'd' | b'T' | b'V')
}

/// Where in its message the masker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Structure bytes to pass (a count, a length, a code), collected in `header`.
    Fixed(usize, Next),
    /// A length-prefixed value: bytes still to come.
    Counted(usize),
    /// A NUL-terminated string; `masked`: whether it is a value to mask.
    Cstring { masked: bool },
    /// The rest of the message is one value.
    Rest,
    /// Nothing more to mask.
    Pass,
}

/// What the structure bytes in `header` are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    RowFieldCount,
    RowFieldLength,
    ErrorFieldCode,
    NotificationPid,
    ColumnCount,
    /// The 18 bytes after a column name.
    ColumnTail,
    ValueLength,
}

/// Masks one server message as it passes, in pieces or whole.
pub struct MessageMasker {
    masker: Arc<Masker>,
    tag: u8,
    state: State,
    /// Structure bytes read so far (at most four).
    header: [u8; 4],
    header_len: usize,
    /// The value being read: held back until it ends, or sent but for the window.
    pending: Vec<u8>,
    /// DataRow fields or RowDescription columns still to come.
    left: u32,
    /// Strings of a NotificationResponse or ParameterStatus already read.
    strings: u8,
    /// A ParameterStatus of a setting that is the protocol's, not data.
    protocol_setting: bool,
    /// The whole message is in hand (the `null` strategy can then shorten it).
    whole: bool,
    /// Where the current DataRow field's length went in `out` (whole messages).
    length_at: usize,
    /// Bytes the message lost (fields NULLed): its header is rewritten.
    shrunk: usize,
    scratch: Vec<Finding>,
    pub counts: Counts,
}

impl MessageMasker {
    /// A masker for a message of type `tag`; `whole` when its body comes in one piece.
    pub fn new(masker: Arc<Masker>, tag: u8, whole: bool) -> MessageMasker {
        let state = match tag {
            b'D' => State::Fixed(2, Next::RowFieldCount),
            b'E' | b'N' => State::Fixed(1, Next::ErrorFieldCode),
            b'A' => State::Fixed(4, Next::NotificationPid),
            b'S' => State::Cstring { masked: false },
            b'd' => State::Rest,
            b'T' => State::Fixed(2, Next::ColumnCount),
            b'V' => State::Fixed(4, Next::ValueLength),
            _ => State::Pass,
        };
        MessageMasker {
            masker,
            tag,
            state,
            header: [0; 4],
            header_len: 0,
            pending: Vec::new(),
            left: 0,
            strings: 0,
            protocol_setting: false,
            whole,
            length_at: 0,
            shrunk: 0,
            scratch: Vec::new(),
            counts: Counts::default(),
        }
    }

    /// Masks a whole message (`raw`, header included) into `out`; returns what it masked.
    pub fn whole(masker: Arc<Masker>, raw: &[u8], out: &mut BytesMut) -> Counts {
        let start = out.len();
        let mut m = MessageMasker::new(masker, raw[0], true);
        out.extend_from_slice(&raw[..5]);
        m.feed(&raw[5..], out);
        m.finish(out);
        if m.shrunk > 0 {
            let len = u32::try_from(raw.len() - 1 - m.shrunk).unwrap_or(u32::MAX);
            out[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
        }
        m.counts
    }

    /// Feeds body bytes; what can be sent goes to `out`.
    pub fn feed(&mut self, mut body: &[u8], out: &mut BytesMut) {
        while !body.is_empty() {
            match self.state {
                State::Pass => {
                    out.extend_from_slice(body);
                    return;
                }
                State::Fixed(left, next) => {
                    let n = left.min(body.len());
                    out.extend_from_slice(&body[..n]);
                    // Only counts and lengths are read (at most four bytes); a column's
                    // 18 trailing bytes are passed unread.
                    let keep = n.min(4 - self.header_len.min(4));
                    self.header[self.header_len..self.header_len + keep]
                        .copy_from_slice(&body[..keep]);
                    self.header_len += keep;
                    body = &body[n..];
                    if n == left {
                        self.structure(next, out);
                    } else {
                        self.state = State::Fixed(left - n, next);
                    }
                }
                State::Counted(left) => {
                    let n = left.min(body.len());
                    if n == left && self.pending.is_empty() {
                        // The whole value is here: masked where it lands in the output.
                        let at = out.len();
                        out.extend_from_slice(&body[..n]);
                        body = &body[n..];
                        self.mask_region(out, at);
                        self.after_counted(out);
                        continue;
                    }
                    self.pending.extend_from_slice(&body[..n]);
                    body = &body[n..];
                    if n == left {
                        self.end_value(out);
                        self.after_counted(out);
                    } else {
                        self.state = State::Counted(left - n);
                        self.stream_out(out);
                    }
                }
                State::Cstring { masked } => {
                    let end = memchr::memchr(0, body);
                    let n = end.unwrap_or(body.len());
                    let at = out.len();
                    if self.tag == b'S' && self.strings == 0 {
                        self.protocol_setting = PROTOCOL_SETTINGS.contains(&&body[..n]);
                    }
                    let direct = !masked || (end.is_some() && self.pending.is_empty());
                    if direct {
                        out.extend_from_slice(&body[..n]);
                    } else {
                        self.pending.extend_from_slice(&body[..n]);
                    }
                    body = &body[n..];
                    if end.is_some() {
                        if masked && direct {
                            self.mask_region(out, at);
                        } else if masked {
                            self.end_value(out);
                        }
                        out.put_u8(0);
                        body = &body[1..];
                        self.after_cstring();
                    } else if masked {
                        self.stream_out(out);
                    }
                }
                State::Rest => {
                    self.pending.extend_from_slice(body);
                    self.stream_out(out);
                    return;
                }
            }
        }
    }

    /// The message is complete: what is held back goes out.
    pub fn finish(&mut self, out: &mut BytesMut) {
        if !self.pending.is_empty() {
            self.end_value(out);
        }
    }

    fn structure(&mut self, next: Next, out: &mut BytesMut) {
        let h = self.header;
        self.header_len = 0;
        let int16 = || u32::from(u16::from_be_bytes([h[0], h[1]]));
        let int32 = || i32::from_be_bytes([h[0], h[1], h[2], h[3]]);
        self.state = match next {
            Next::RowFieldCount => {
                self.left = int16();
                self.next_field(out)
            }
            Next::RowFieldLength => match usize::try_from(int32()) {
                Ok(n) if n > 0 => State::Counted(n),
                // NULL or empty.
                _ => self.next_field(out),
            },
            Next::ErrorFieldCode => match h[0] {
                0 => State::Pass,
                // Severity, SQLSTATE and where in the server's source: not data.
                b'S' | b'V' | b'C' | b'F' | b'L' | b'R' => State::Cstring { masked: false },
                _ => State::Cstring { masked: true },
            },
            Next::NotificationPid => State::Cstring { masked: true },
            Next::ColumnCount | Next::ColumnTail => {
                if next == Next::ColumnCount {
                    self.left = int16();
                }
                if self.left == 0 {
                    State::Pass
                } else {
                    self.left -= 1;
                    State::Cstring { masked: true }
                }
            }
            Next::ValueLength => match usize::try_from(int32()) {
                Ok(n) if n > 0 => State::Counted(n),
                _ => State::Pass,
            },
        };
    }

    fn next_field(&mut self, out: &BytesMut) -> State {
        if self.left == 0 {
            // A valid row ends here; anything after its fields is read as text, not passed.
            return State::Rest;
        }
        self.left -= 1;
        self.length_at = out.len();
        State::Fixed(4, Next::RowFieldLength)
    }

    fn after_counted(&mut self, out: &BytesMut) {
        self.state = match self.tag {
            b'D' => self.next_field(out),
            _ => State::Pass,
        };
    }

    fn after_cstring(&mut self) {
        self.strings = self.strings.saturating_add(1);
        self.state = match self.tag {
            b'E' | b'N' => State::Fixed(1, Next::ErrorFieldCode),
            b'T' => State::Fixed(18, Next::ColumnTail),
            // The channel, then the payload.
            b'A' if self.strings == 1 => State::Cstring { masked: true },
            // The name, then the value (settings the client's protocol reading depends on are
            // passed as they are).
            b'S' if self.strings == 1 => State::Cstring {
                masked: !self.protocol_setting,
            },
            _ => State::Pass,
        };
    }

    /// A value is complete: mask all of it and send it.
    fn end_value(&mut self, out: &mut BytesMut) {
        let at = out.len();
        out.extend_from_slice(&self.pending);
        self.pending.clear();
        self.mask_region(out, at);
    }

    /// Masks the value that is `out[at..]`, in place.
    fn mask_region(&mut self, out: &mut BytesMut, at: usize) {
        let numeric = self.tag == b'D' && is_number(&out[at..]);
        let result = self
            .masker
            .mask_in_place(&mut out[at..], &mut self.scratch, &mut self.counts);
        match result {
            Masked::Unchanged => {}
            Masked::Null if self.tag == b'D' && self.whole => {
                // The field becomes NULL: its length says -1 and its bytes go.
                self.shrunk += out.len() - at;
                out.truncate(self.length_at);
                out.put_i32(-1);
            }
            _ if numeric => as_digits(&mut out[at..]),
            _ => {}
        }
    }

    /// A value still streaming: sends what is surely complete, holding back the window.
    fn stream_out(&mut self, out: &mut BytesMut) {
        if self.pending.len() < 2 * WINDOW {
            return;
        }
        let len = self.pending.len();
        // Cut just after a byte no value contains, so the next pass starts where a value may
        // start and reads it as a whole scan would.
        let mut cut = len - WINDOW;
        let from = len - 2 * WINDOW;
        if let Some(k) = self.pending[from..cut]
            .iter()
            .rposition(|b| outside_values(*b))
        {
            cut = from + k + 1;
        }
        self.masker.find(&self.pending, &mut self.scratch);
        let mut findings = std::mem::take(&mut self.scratch);
        findings.retain(|f| f.start < cut);
        // Values that started before the cut are masked and sent whole. One still running at
        // the end of what is here is longer than the window: it is masked up to the cut (the
        // held-back part stays bounded; its rest is scanned on its own).
        let mut sent = cut;
        for f in &mut findings {
            if f.end >= len {
                f.end = cut;
            }
            sent = sent.max(f.end);
        }
        self.masker
            .apply(&mut self.pending[..sent], &findings, &mut self.counts);
        out.extend_from_slice(&self.pending[..sent]);
        self.pending.drain(..sent);
        findings.clear();
        self.scratch = findings;
    }
}

/// A byte that is in no detector's values (control characters, quotes, most punctuation).
fn outside_values(b: u8) -> bool {
    !b.is_ascii_alphanumeric() && !b" -.()+@_%=/".contains(&b)
}

/// A value that is a number as PostgreSQL writes one (a sign, digits, at most one point): an
/// integer or numeric column's text.
fn is_number(value: &[u8]) -> bool {
    let digits = value.strip_prefix(b"-").unwrap_or(value);
    !digits.is_empty()
        && digits.iter().filter(|b| **b == b'.').count() <= 1
        && digits.iter().all(|b| b.is_ascii_digit() || *b == b'.')
        && digits.iter().any(u8::is_ascii_digit)
}

/// Masked characters of a number become digits.
fn as_digits(value: &mut [u8]) {
    for b in value {
        if !b.is_ascii_digit() && !matches!(*b, b'-' | b'.') {
            *b = if *b == b'*' { b'0' } else { b'0' + *b % 10 };
        }
    }
}

#[cfg(test)]
mod tests;

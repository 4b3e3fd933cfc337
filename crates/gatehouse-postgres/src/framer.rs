//! Reads PostgreSQL messages from a byte stream with bounded memory.
//!
//! Small messages come out whole. Messages of a *streamable* type (row data, COPY data, a Bind
//! with large parameters) larger than the inline limit come out as a head (the header and the
//! first part of the body, for the fields at the front) followed by chunks, so a 1 GiB row
//! never sits in memory. Every other message is capped at `max_message`: a larger one comes out
//! as [`Piece::Oversized`] with its head, and the framer skips the rest of it, so the caller can
//! refuse it properly and carry on. `next` is cancel-safe: state changes only once a piece is
//! returned.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Below this, even streamable messages are read whole.
const INLINE_LIMIT: usize = 64 * 1024;
const READ_CHUNK: usize = 64 * 1024;

#[derive(Debug)]
pub enum Piece {
    /// A whole message, header included (`raw[0]` is the tag).
    Whole { tag: u8, raw: Bytes },
    /// The header and first [`HEAD_BODY`] bytes of a large streamable message (`len` is its
    /// whole body's length); the rest of the body follows as chunks.
    Head { tag: u8, raw: Bytes, len: usize },
    /// Part of a large message's body.
    Chunk(Bytes),
    /// A message over the limit: its header and first [`HEAD_BODY`] bytes of body. The framer
    /// skips the rest; nothing of it is returned.
    Oversized { tag: u8, head: Bytes, len: usize },
}

/// How much of a large message's body comes with its head.
pub const HEAD_BODY: usize = INLINE_LIMIT;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("invalid message length {len} for message type {tag:?}")]
    BadLength { tag: char, len: i64 },
    #[error("connection closed in the middle of a message")]
    Truncated,
}

pub struct Framer<R> {
    inner: R,
    buf: BytesMut,
    /// Bytes of a large message's body still to come.
    remaining: usize,
    /// Bytes of an oversized message still to skip.
    skip: usize,
    max_message: usize,
    streamable: fn(u8) -> bool,
    /// Oversized messages of these types come out with their head (the caller records it);
    /// others at once, with no head.
    oversized_head: fn(u8) -> bool,
}

impl<R: AsyncRead + Unpin> Framer<R> {
    pub fn new(inner: R, max_message: usize, streamable: fn(u8) -> bool) -> Self {
        Framer {
            inner,
            buf: BytesMut::with_capacity(READ_CHUNK),
            remaining: 0,
            skip: 0,
            max_message,
            streamable,
            oversized_head: |_| false,
        }
    }

    /// Which oversized messages come out with their head.
    pub fn with_oversized_head(mut self, wanted: fn(u8) -> bool) -> Self {
        self.oversized_head = wanted;
        self
    }

    /// True when the next piece can be produced without reading the socket; relays use it to
    /// flush their output only when the input runs dry.
    pub fn has_buffered_piece(&self) -> bool {
        if self.remaining > 0 {
            return !self.buf.is_empty();
        }
        if self.skip > 0 {
            return false;
        }
        match header(&self.buf) {
            Some((tag, len)) => {
                let body = len.saturating_sub(4);
                let large = if (self.streamable)(tag) {
                    body > INLINE_LIMIT
                } else {
                    body > self.max_message
                };
                self.buf.len() > len || (large && self.buf.len() >= 5 + HEAD_BODY)
            }
            None => false,
        }
    }

    /// The next piece, or `None` at a clean end of stream (between messages).
    pub async fn next(&mut self) -> Result<Option<Piece>, FrameError> {
        if self.remaining > 0 {
            if self.buf.is_empty() && self.fill().await? == 0 {
                return Err(FrameError::Truncated);
            }
            let n = self.remaining.min(self.buf.len());
            self.remaining -= n;
            return Ok(Some(Piece::Chunk(self.buf.split_to(n).freeze())));
        }
        while self.skip > 0 {
            if self.buf.is_empty() && self.fill().await? == 0 {
                return Err(FrameError::Truncated);
            }
            let n = self.skip.min(self.buf.len());
            let _ = self.buf.split_to(n);
            self.skip -= n;
        }
        while self.buf.len() < 5 {
            if self.fill().await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(FrameError::Truncated)
                };
            }
        }
        let tag = self.buf[0];
        let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
        if len < 4 {
            return Err(FrameError::BadLength {
                tag: char::from(tag),
                len: i64::from(len),
            });
        }
        let len = len as usize; // non-negative, checked above
        let body = len - 4;
        let large = if (self.streamable)(tag) {
            body > INLINE_LIMIT
        } else {
            body > self.max_message
        };
        if large {
            let streamable = (self.streamable)(tag);
            let head = if streamable || (self.oversized_head)(tag) {
                5 + HEAD_BODY.min(body)
            } else {
                5
            };
            while self.buf.len() < head {
                self.buf.reserve(head - self.buf.len());
                if self.fill().await? == 0 {
                    return Err(FrameError::Truncated);
                }
            }
            let raw = self.buf.split_to(head).freeze();
            if streamable {
                self.remaining = body - (head - 5);
                return Ok(Some(Piece::Head {
                    tag,
                    raw,
                    len: body,
                }));
            }
            self.skip = body - (head - 5);
            return Ok(Some(Piece::Oversized {
                tag,
                head: raw,
                len: body,
            }));
        }
        while self.buf.len() < 1 + len {
            self.buf.reserve(1 + len - self.buf.len());
            if self.fill().await? == 0 {
                return Err(FrameError::Truncated);
            }
        }
        Ok(Some(Piece::Whole {
            tag,
            raw: self.buf.split_to(1 + len).freeze(),
        }))
    }

    async fn fill(&mut self) -> std::io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(READ_CHUNK);
        }
        self.inner.read_buf(&mut self.buf).await
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The stream and any bytes read but not yet returned.
    pub fn into_parts(self) -> (R, BytesMut) {
        (self.inner, self.buf)
    }
}

fn header(buf: &[u8]) -> Option<(u8, usize)> {
    if buf.len() < 5 {
        return None;
    }
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    Some((buf[0], usize::try_from(len).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    fn streamable(tag: u8) -> bool {
        tag == b'D'
    }

    #[tokio::test]
    async fn reads_whole_and_streamed_messages() {
        let big = vec![7u8; 200_000];
        let mut input = msg(b'C', b"SELECT 1\0");
        input.extend(msg(b'D', &big));
        input.extend(msg(b'Z', b"I"));
        let mut f = Framer::new(&input[..], 1024, streamable);
        let Some(Piece::Whole { tag: b'C', raw }) = f.next().await.unwrap() else {
            panic!()
        };
        assert_eq!(&raw[..], &msg(b'C', b"SELECT 1\0")[..]);
        let Some(Piece::Head {
            tag: b'D',
            raw,
            len: 200_000,
        }) = f.next().await.unwrap()
        else {
            panic!()
        };
        assert_eq!(raw.len(), 5 + HEAD_BODY);
        assert_eq!(&raw[5..], &big[..HEAD_BODY]);
        let mut got = raw.len() - 5;
        loop {
            match f.next().await.unwrap() {
                Some(Piece::Chunk(c)) => {
                    assert!(c.len() <= 200_000);
                    got += c.len();
                }
                Some(Piece::Whole { tag: b'Z', .. }) => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(got, big.len());
        assert!(f.next().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn rejects_bad_lengths_and_oversized_messages() {
        let input = [b'Q', 0, 0, 0, 2];
        let mut f = Framer::new(&input[..], 1024, streamable);
        assert!(matches!(f.next().await, Err(FrameError::BadLength { .. })));

        // Over the limit: its head comes out, the rest is skipped, the next message is read.
        let mut input = msg(b'Q', &vec![b'x'; 100_000]);
        input.extend(msg(b'S', b""));
        let mut f = Framer::new(&input[..], 1024, streamable).with_oversized_head(|t| t == b'Q');
        let Some(Piece::Oversized {
            tag: b'Q',
            head,
            len: 100_000,
        }) = f.next().await.unwrap()
        else {
            panic!()
        };
        assert_eq!(head.len(), 5 + HEAD_BODY);
        assert!(matches!(
            f.next().await,
            Ok(Some(Piece::Whole { tag: b'S', .. }))
        ));
        assert!(f.next().await.unwrap().is_none());
        // Without a wanted head, an oversized message comes out at once; what follows of it
        // is skipped (here it never comes).
        let input = [b'Q', 0x7f, 0xff, 0xff, 0xff, b'x'];
        let mut f = Framer::new(&input[..], 1024, streamable);
        assert!(matches!(
            f.next().await,
            Ok(Some(Piece::Oversized {
                tag: b'Q',
                len: 0x7fff_fffb,
                ..
            }))
        ));
        assert!(matches!(f.next().await, Err(FrameError::Truncated)));

        let input = [b'Q', 0xff, 0xff, 0xff, 0xff];
        let mut f = Framer::new(&input[..], 1024, streamable);
        assert!(matches!(f.next().await, Err(FrameError::BadLength { .. })));

        let input = msg(b'Q', b"SELECT 1\0");
        let mut f = Framer::new(&input[..input.len() - 2], 1024, streamable);
        assert!(matches!(f.next().await, Err(FrameError::Truncated)));
    }

    /// A reader that hands out the input in pseudo-random small pieces.
    struct Trickle {
        data: Vec<u8>,
        pos: usize,
        rng: u64,
    }

    impl Trickle {
        fn next_len(&mut self) -> usize {
            // xorshift64: deterministic, dependency-free.
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            1 + (self.rng % 7000) as usize
        }
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let n = self
                .next_len()
                .min(buf.remaining())
                .min(self.data.len() - self.pos);
            let pos = self.pos;
            buf.put_slice(&self.data[pos..pos + n]);
            self.pos += n;
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn any_read_split_reproduces_the_stream_exactly() {
        for seed in 1..40u64 {
            let mut input = Vec::new();
            let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            for i in 0..200 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let len = match rng % 10 {
                    0 => 150_000 + (rng % 50_000) as usize, // large, streamed
                    1 => 0,
                    _ => (rng % 300) as usize,
                };
                let tag = if i % 3 == 0 { b'D' } else { b'C' };
                let body: Vec<u8> = (0..len).map(|j| (j as u8).wrapping_mul(31)).collect();
                if tag == b'C' && len > 1024 {
                    continue;
                }
                input.extend(msg(tag, &body));
            }
            let reader = Trickle {
                data: input.clone(),
                pos: 0,
                rng: seed,
            };
            let mut f = Framer::new(reader, 1024, streamable);
            let mut out = Vec::new();
            while let Some(piece) = f.next().await.unwrap() {
                match piece {
                    Piece::Whole { raw, .. } => {
                        let len = i32::from_be_bytes([raw[1], raw[2], raw[3], raw[4]]) as usize;
                        assert_eq!(raw.len(), 1 + len, "a whole message is exactly one message");
                        out.extend_from_slice(&raw);
                    }
                    Piece::Head { raw, .. } | Piece::Chunk(raw) => out.extend_from_slice(&raw),
                    Piece::Oversized { .. } => panic!("no message here is over the limit"),
                }
            }
            assert_eq!(out, input, "seed {seed}");
        }
    }

    #[tokio::test]
    async fn random_bytes_never_panic() {
        for seed in 1..200u64 {
            let mut rng = seed;
            let data: Vec<u8> = (0..4096)
                .map(|_| {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng as u8
                })
                .collect();
            let mut f = Framer::new(
                Trickle {
                    data,
                    pos: 0,
                    rng: seed,
                },
                1024,
                streamable,
            );
            for _ in 0..10_000 {
                match f.next().await {
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }
}

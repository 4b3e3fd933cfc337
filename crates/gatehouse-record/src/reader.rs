//! Reading a recording back, chunk by chunk, with bounded allocation on hostile input.

use crate::format::{parse_frames, Frame, Header, MAGIC, MAX_CHUNK, MAX_HEADER};
use crate::seal::{Key, ALG};
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::io::{self, Read};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read the recording: {0}")]
    Io(#[from] io::Error),
    #[error("not a recording (no {:?} header)", String::from_utf8_lossy(&MAGIC[..7]))]
    NotARecording,
    #[error("the recording's header is unreadable: {0}")]
    BadHeader(String),
    #[error(
        "the recording is encrypted with key {0}; configure recording.encryption_key to read it"
    )]
    NeedsKey(String),
    #[error("the recording is encrypted with key {found}, not the configured key {configured}")]
    WrongKey { found: String, configured: String },
    #[error("chunk {0} does not open with the key (altered, reordered or from another file)")]
    Sealed(u64),
    #[error("chunk {chunk} is malformed at byte {offset}")]
    BadFrame { chunk: u64, offset: usize },
    #[error("chunk {0} declares more than {MAX_CHUNK} bytes")]
    ChunkTooLarge(u64),
    #[error("the recording ends inside chunk {0} (a write that never finished)")]
    Truncated(u64),
}

/// Frames of a recording, in order.
pub struct Reader<R> {
    input: R,
    header: Header,
    seal: Option<(Key, [u8; 16])>,
    index: u64,
    pending: VecDeque<Frame>,
}

impl<R: Read> Reader<R> {
    /// Reads the header. An encrypted recording needs its key.
    pub fn new(mut input: R, key: Option<&Key>) -> Result<Reader<R>, ReadError> {
        let mut magic = [0u8; 8];
        read_exact_or(&mut input, &mut magic, ReadError::NotARecording)?;
        if &magic != MAGIC {
            return Err(ReadError::NotARecording);
        }
        let mut len = [0u8; 4];
        read_exact_or(&mut input, &mut len, ReadError::NotARecording)?;
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_HEADER {
            return Err(ReadError::BadHeader(format!("{len} bytes long")));
        }
        let mut json = vec![0u8; len];
        read_exact_or(
            &mut input,
            &mut json,
            ReadError::BadHeader("cut short".into()),
        )?;
        let header: Header =
            serde_json::from_slice(&json).map_err(|e| ReadError::BadHeader(e.to_string()))?;
        let seal = match &header.encryption {
            None => None,
            Some(enc) => {
                if enc.alg != ALG {
                    return Err(ReadError::BadHeader(format!(
                        "unknown cipher {:?}",
                        enc.alg
                    )));
                }
                let key = key.ok_or_else(|| ReadError::NeedsKey(enc.key_id.clone()))?;
                if key.id() != enc.key_id {
                    return Err(ReadError::WrongKey {
                        found: enc.key_id.clone(),
                        configured: key.id().to_owned(),
                    });
                }
                let mut prefix = [0u8; 16];
                hex::decode_to_slice(&enc.nonce_prefix, &mut prefix)
                    .map_err(|e| ReadError::BadHeader(format!("nonce prefix: {e}")))?;
                Some((key.clone(), prefix))
            }
        };
        Ok(Reader {
            input,
            header,
            seal,
            index: 0,
            pending: VecDeque::new(),
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The next frame, or `None` at the end of the file.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, ReadError> {
        loop {
            if let Some(frame) = self.pending.pop_front() {
                return Ok(Some(frame));
            }
            let mut len = [0u8; 4];
            match read_full(&mut self.input, &mut len)? {
                0 => return Ok(None),
                4 => {}
                _ => return Err(ReadError::Truncated(self.index)),
            }
            let len = u32::from_be_bytes(len) as usize;
            if len > MAX_CHUNK {
                return Err(ReadError::ChunkTooLarge(self.index));
            }
            let mut body = vec![0u8; len];
            if read_full(&mut self.input, &mut body)? != len {
                return Err(ReadError::Truncated(self.index));
            }
            let plain = match &self.seal {
                Some((key, prefix)) => key
                    .open(prefix, self.index, &body)
                    .ok_or(ReadError::Sealed(self.index))?,
                None => body,
            };
            let mut frames = Vec::new();
            parse_frames(&plain, &mut frames).map_err(|offset| ReadError::BadFrame {
                chunk: self.index,
                offset,
            })?;
            self.pending.extend(frames);
            self.index += 1;
        }
    }
}

fn read_exact_or(input: &mut impl Read, buf: &mut [u8], short: ReadError) -> Result<(), ReadError> {
    if read_full(input, buf)? == buf.len() {
        Ok(())
    } else {
        Err(short)
    }
}

/// Reads until `buf` is full or the input ends; returns how much was read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match input.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// SHA-256 of a file, hex: what `session.end` records of its recording.
pub fn file_sha256(path: &Path) -> io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

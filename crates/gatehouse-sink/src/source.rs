//! Reading records from a cursor onwards: the only code that knows how the log is stored.
//!
//! Today the log is one file, `audit.log`, and a [`Source`] tails it by byte offset. When the
//! log is split into segments, this module is what changes; the sinks only see
//! [`Source::open`] and [`Source::read`].
//!
//! Every line is checked before it is handed out: its own hash ([`record::decode`]), and that it
//! continues the chain (`seq` one more than the last, `prev` the last one's `hash`). A line that
//! fails is an error, never skipped: a sink must not pass on corrupted evidence. Only complete
//! lines (ending in `\n`) are read; an unfinished last line is left for a later read, and bytes
//! past the last complete line are never kept between reads (a failed write is cut back by the
//! writer and written again, so they may change).

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};

use gatehouse_audit::event::{EventKind, Status};
use gatehouse_audit::record::{self, HashHex, RecordError, MAX_LINE_LEN};
use time::OffsetDateTime;

use crate::cursor::{Cursor, CursorMismatch};

/// Bytes read from the file at a time.
pub const READ_CHUNK: usize = 1024 * 1024;

/// One verified record, with its line exactly as stored (without the `\n`).
#[derive(Debug, Clone)]
pub struct SourceRecord {
    pub seq: u64,
    pub hash: HashHex,
    /// Byte offset of the line in the log.
    pub offset: u64,
    pub kind: EventKind,
    pub status: Status,
    pub time: OffsetDateTime,
    pub line: Vec<u8>,
}

impl SourceRecord {
    /// The cursor that acknowledges this record.
    pub fn cursor(&self) -> Cursor {
        Cursor {
            seq: self.seq,
            offset: self.offset,
            hash: self.hash,
        }
    }
}

/// What one [`Source::read`] found.
#[derive(Debug)]
pub struct Batch {
    pub records: Vec<SourceRecord>,
    /// The read stopped at `max_records` or `max_bytes`: more records are there already.
    pub limited: bool,
}

/// Why the log cannot be read from here. All of these stop the sink.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("audit log {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("audit log {}: {mismatch}", path.display())]
    CursorMismatch {
        path: PathBuf,
        mismatch: CursorMismatch,
    },
    #[error("audit log {}: record at byte {offset} does not verify: {reason}", path.display())]
    BadRecord {
        path: PathBuf,
        offset: u64,
        reason: RecordError,
    },
    #[error("audit log {}: chain broken at byte {offset}: {reason}", path.display())]
    Chain {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("audit log {}: line at byte {offset} is longer than any record", path.display())]
    LineTooLong { path: PathBuf, offset: u64 },
    #[error("audit log {}: the file shrank to {len} bytes, below the read position {pos}", path.display())]
    Truncated { path: PathBuf, len: u64, pos: u64 },
    #[error("audit log {}: the file was replaced while it was being read", path.display())]
    Replaced { path: PathBuf },
}

impl SourceError {
    /// The cursor named a record the log does not have there.
    pub fn mismatch(&self) -> Option<&CursorMismatch> {
        match self {
            SourceError::CursorMismatch { mismatch, .. } => Some(mismatch),
            _ => None,
        }
    }
}

/// Follows the log from a cursor.
#[derive(Debug)]
pub struct Source {
    path: PathBuf,
    file: File,
    ino: (u64, u64),
    /// Where the next unread line starts.
    pos: u64,
    next_seq: u64,
    prev: HashHex,
    /// Complete lines read ahead, starting at `pos`.
    buf: Vec<u8>,
}

impl Source {
    /// Opens the log and positions after the record the cursor names, checking it is there.
    pub fn open(path: &Path, cursor: &Cursor) -> Result<Source, SourceError> {
        let io_err = |source| SourceError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        let meta = file.metadata().map_err(io_err)?;
        let mut source = Source {
            path: path.to_path_buf(),
            file,
            ino: (meta.dev(), meta.ino()),
            pos: 0,
            next_seq: 1,
            prev: record::GENESIS_PREV,
            buf: Vec::new(),
        };
        if cursor.is_start() {
            return Ok(source);
        }
        let mismatch = |mismatch| SourceError::CursorMismatch {
            path: path.to_path_buf(),
            mismatch,
        };
        if meta.len() <= cursor.offset {
            return Err(mismatch(CursorMismatch::PastEnd {
                seq: cursor.seq,
                offset: cursor.offset,
                len: meta.len(),
            }));
        }
        let line = source.line_at(cursor.offset).map_err(|e| match e {
            LineAt::Io(e) => io_err(e),
            LineAt::Incomplete(why) => mismatch(CursorMismatch::NotARecord {
                seq: cursor.seq,
                offset: cursor.offset,
                reason: why.into(),
            }),
        })?;
        if cursor.offset > 0 {
            // A record starts right after a newline: otherwise the offset is inside a line.
            let mut before = [0u8; 1];
            source
                .file
                .read_exact_at(&mut before, cursor.offset - 1)
                .map_err(io_err)?;
            if before[0] != b'\n' {
                return Err(mismatch(CursorMismatch::NotARecord {
                    seq: cursor.seq,
                    offset: cursor.offset,
                    reason: "the offset is inside a line".into(),
                }));
            }
        }
        let found = record::decode(&line).map_err(|e| {
            mismatch(CursorMismatch::NotARecord {
                seq: cursor.seq,
                offset: cursor.offset,
                reason: e.to_string(),
            })
        })?;
        cursor.check(&found).map_err(mismatch)?;
        source.pos = cursor.offset + line.len() as u64 + 1;
        source.next_seq = cursor.seq + 1;
        source.prev = cursor.hash;
        Ok(source)
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `seq` of the next record [`Source::read`] returns.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Reads the next complete, verified records: at most `max_records`, at most `max_bytes`
    /// of lines, none with a `seq` above `max_seq`. With `first_may_exceed`, a first record
    /// larger than `max_bytes` is still returned (alone), so a large record cannot get stuck.
    /// Returns no records when there is nothing new yet.
    pub fn read(
        &mut self,
        max_records: usize,
        max_bytes: usize,
        max_seq: u64,
        first_may_exceed: bool,
    ) -> Result<Batch, SourceError> {
        self.check_file()?;
        let mut out = Vec::new();
        let mut limited = false;
        let mut bytes = 0usize;
        // `consumed` bytes of `buf` have been handed out; they start at `self.pos - consumed`.
        // An error after good records: hand those out; the next read starts at the bad line
        // and reports it.
        macro_rules! fail {
            ($e:expr) => {{
                if out.is_empty() {
                    return Err($e);
                }
                break;
            }};
        }
        let mut consumed = 0usize;
        loop {
            if out.len() >= max_records {
                limited = true;
                break;
            }
            let Some(nl) = memchr::memchr(b'\n', &self.buf[consumed..]) else {
                let pending = self.buf.len() - consumed;
                if pending > MAX_LINE_LEN {
                    fail!(SourceError::LineTooLong {
                        path: self.path.clone(),
                        offset: self.pos,
                    });
                }
                self.buf.drain(..consumed);
                consumed = 0;
                match self.fill() {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => fail!(e),
                }
                continue;
            };
            if nl > MAX_LINE_LEN {
                fail!(SourceError::LineTooLong {
                    path: self.path.clone(),
                    offset: self.pos,
                });
            }
            if bytes + nl > max_bytes && !(out.is_empty() && first_may_exceed) {
                limited = true;
                break;
            }
            let line = &self.buf[consumed..consumed + nl];
            let offset = self.pos;
            let rec = match record::decode(line) {
                Ok(rec) => rec,
                Err(reason) => fail!(SourceError::BadRecord {
                    path: self.path.clone(),
                    offset,
                    reason,
                }),
            };
            if rec.seq != self.next_seq || rec.prev != self.prev {
                fail!(SourceError::Chain {
                    path: self.path.clone(),
                    offset,
                    reason: chain_reason(self.next_seq, &self.prev, rec.seq, &rec.prev),
                });
            }
            if rec.seq > max_seq {
                break;
            }
            out.push(SourceRecord {
                seq: rec.seq,
                hash: rec.hash,
                offset,
                kind: rec.event.kind,
                status: rec.event.outcome.status,
                time: rec.event.time,
                line: line.to_vec(),
            });
            bytes += nl;
            consumed += nl + 1;
            self.pos += nl as u64 + 1;
            self.next_seq += 1;
            self.prev = rec.hash;
        }
        self.buf.drain(..consumed);
        // Keep only complete lines for the next read.
        let keep = memchr::memrchr(b'\n', &self.buf).map_or(0, |i| i + 1);
        self.buf.truncate(keep);
        Ok(Batch {
            records: out,
            limited,
        })
    }

    /// Reads up to one chunk after what is buffered; returns the bytes read.
    fn fill(&mut self) -> Result<usize, SourceError> {
        let have = self.buf.len();
        let want = READ_CHUNK
            .min(MAX_LINE_LEN + 1 - have.min(MAX_LINE_LEN))
            .max(1);
        self.buf.resize(have + want, 0);
        let at = self.pos + have as u64;
        let result = loop {
            match self.file.read_at(&mut self.buf[have..], at) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        match result {
            Ok(n) => {
                self.buf.truncate(have + n);
                Ok(n)
            }
            Err(source) => {
                self.buf.truncate(have);
                Err(SourceError::Io {
                    path: self.path.clone(),
                    source,
                })
            }
        }
    }

    /// The file must still be the one opened, and not shorter than what was read.
    fn check_file(&self) -> Result<(), SourceError> {
        let io_err = |source| SourceError::Io {
            path: self.path.clone(),
            source,
        };
        let len = self.file.metadata().map_err(io_err)?.len();
        if len < self.pos {
            return Err(SourceError::Truncated {
                path: self.path.clone(),
                len,
                pos: self.pos,
            });
        }
        match std::fs::metadata(&self.path) {
            Ok(m) if (m.dev(), m.ino()) == self.ino => Ok(()),
            Ok(_) => Err(SourceError::Replaced {
                path: self.path.clone(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(SourceError::Replaced {
                path: self.path.clone(),
            }),
            Err(e) => Err(io_err(e)),
        }
    }

    /// The complete line starting at `offset` (without its `\n`).
    fn line_at(&self, offset: u64) -> Result<Vec<u8>, LineAt> {
        let mut line = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let at = offset + line.len() as u64;
            let n = match self.file.read_at(&mut chunk, at) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(LineAt::Io(e)),
                Ok(n) => n,
            };
            if n == 0 {
                return Err(LineAt::Incomplete("the line there has no end"));
            }
            if let Some(i) = memchr::memchr(b'\n', &chunk[..n]) {
                line.extend_from_slice(&chunk[..i]);
                if line.len() > MAX_LINE_LEN {
                    return Err(LineAt::Incomplete(
                        "the line there is longer than any record",
                    ));
                }
                return Ok(line);
            }
            line.extend_from_slice(&chunk[..n]);
            if line.len() > MAX_LINE_LEN {
                return Err(LineAt::Incomplete(
                    "the line there is longer than any record",
                ));
            }
        }
    }
}

enum LineAt {
    Io(io::Error),
    Incomplete(&'static str),
}

fn chain_reason(want_seq: u64, want_prev: &HashHex, seq: u64, prev: &HashHex) -> String {
    if seq != want_seq {
        format!("expected seq {want_seq}, found {seq}")
    } else {
        format!("seq {seq} has prev {prev}, expected {want_prev}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_audit::record::{encode, GENESIS_PREV};
    use gatehouse_audit::{Event, Outcome};
    use std::io::Write as _;

    /// `n` records as the writer would store them, and each one's start offset.
    fn log(n: u64) -> (Vec<u8>, Vec<Cursor>) {
        let mut buf = Vec::new();
        let mut prev = GENESIS_PREV;
        let mut cursors = Vec::new();
        for seq in 1..=n {
            let offset = buf.len() as u64;
            let mut event = Event::now(EventKind::Statement, Outcome::success());
            event.session = Some(format!("s{seq}"));
            prev = encode(&mut buf, seq, &prev, &event).unwrap();
            cursors.push(Cursor {
                seq,
                offset,
                hash: prev,
            });
        }
        (buf, cursors)
    }

    fn file(bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        std::fs::write(&path, bytes).unwrap();
        (dir, path)
    }

    fn seqs(batch: &Batch) -> Vec<u64> {
        batch.records.iter().map(|r| r.seq).collect()
    }

    #[test]
    fn reads_in_batches_and_resumes_from_a_cursor() {
        let (bytes, cursors) = log(10);
        let (_dir, path) = file(&bytes);
        let mut source = Source::open(&path, &Cursor::START).unwrap();
        let batch = source.read(4, usize::MAX, u64::MAX, true).unwrap();
        assert_eq!(seqs(&batch), [1, 2, 3, 4]);
        assert!(batch.limited);
        let first = batch.records;
        assert_eq!(first[3].cursor(), cursors[3]);
        let line_end = cursors[1].offset as usize - 1;
        assert_eq!(first[0].line, &bytes[..line_end]);
        assert_eq!(
            seqs(&source.read(100, usize::MAX, 7, true).unwrap()),
            [5, 6, 7]
        );
        assert_eq!(
            seqs(&source.read(100, usize::MAX, u64::MAX, true).unwrap()),
            [8, 9, 10]
        );
        assert!(source
            .read(100, usize::MAX, u64::MAX, true)
            .unwrap()
            .records
            .is_empty());

        let mut resumed = Source::open(&path, &cursors[5]).unwrap();
        assert_eq!(resumed.next_seq(), 7);
        assert_eq!(
            seqs(&resumed.read(100, usize::MAX, u64::MAX, true).unwrap()),
            [7, 8, 9, 10]
        );
        let at_end = Source::open(&path, &cursors[9]).unwrap();
        assert_eq!(at_end.next_seq(), 11);
    }

    #[test]
    fn max_bytes_bounds_a_batch_but_one_record_always_goes() {
        let (bytes, _) = log(5);
        let (_dir, path) = file(&bytes);
        let mut source = Source::open(&path, &Cursor::START).unwrap();
        assert_eq!(seqs(&source.read(100, 1, u64::MAX, true).unwrap()), [1]);
        let len = source.read(1, usize::MAX, u64::MAX, true).unwrap().records[0]
            .line
            .len();
        assert_eq!(
            seqs(&source.read(100, 2 * len + 10, u64::MAX, true).unwrap()),
            [3, 4]
        );
    }

    #[test]
    fn waits_for_the_newline_of_a_partial_line() {
        let (bytes, cursors) = log(3);
        let cut = cursors[2].offset as usize + 20;
        let (_dir, path) = file(&bytes[..cut]);
        let mut source = Source::open(&path, &Cursor::START).unwrap();
        assert_eq!(
            seqs(&source.read(100, usize::MAX, u64::MAX, true).unwrap()),
            [1, 2]
        );
        assert!(source
            .read(100, usize::MAX, u64::MAX, true)
            .unwrap()
            .records
            .is_empty());
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(&bytes[cut..bytes.len() - 1]).unwrap();
        assert!(source
            .read(100, usize::MAX, u64::MAX, true)
            .unwrap()
            .records
            .is_empty());
        f.write_all(b"\n").unwrap();
        assert_eq!(
            seqs(&source.read(100, usize::MAX, u64::MAX, true).unwrap()),
            [3]
        );
    }

    #[test]
    fn a_corrupt_line_is_an_error_after_the_good_ones() {
        let (mut bytes, cursors) = log(4);
        let at = cursors[2].offset as usize + 30;
        bytes[at] ^= 0x01;
        let (_dir, path) = file(&bytes);
        let mut source = Source::open(&path, &Cursor::START).unwrap();
        // The good records first, then the error, again and again.
        assert_eq!(
            seqs(&source.read(100, usize::MAX, u64::MAX, true).unwrap()),
            [1, 2]
        );
        for _ in 0..2 {
            let err = source.read(100, usize::MAX, u64::MAX, true).unwrap_err();
            assert!(
                matches!(err, SourceError::BadRecord { offset, .. } if offset == cursors[2].offset),
                "{err}"
            );
        }
    }

    #[test]
    fn a_broken_chain_is_an_error() {
        let (a, ca) = log(3);
        // Records 1..3 of another log: seq 2 follows seq 1 of the first log with a wrong prev.
        let (b, cb) = log(3);
        let mut bytes = a[..ca[1].offset as usize].to_vec();
        bytes.extend_from_slice(&b[cb[1].offset as usize..]);
        let (_dir, path) = file(&bytes);
        let mut source = Source::open(&path, &Cursor::START).unwrap();
        assert_eq!(
            seqs(&source.read(100, usize::MAX, u64::MAX, true).unwrap()),
            [1]
        );
        let err = source.read(100, usize::MAX, u64::MAX, true).unwrap_err();
        assert!(matches!(err, SourceError::Chain { .. }), "{err}");
    }

    #[test]
    fn a_cursor_that_does_not_match_is_refused() {
        let (bytes, cursors) = log(5);
        let (_dir, path) = file(&bytes);
        let mismatch = |cursor: Cursor| Source::open(&path, &cursor).unwrap_err();

        let wrong_hash = Cursor {
            hash: cursors[1].hash,
            ..cursors[2]
        };
        assert!(matches!(
            mismatch(wrong_hash).mismatch(),
            Some(CursorMismatch::WrongRecord { found_seq: 3, .. })
        ));
        let wrong_seq = Cursor {
            seq: 4,
            ..cursors[2]
        };
        assert!(matches!(
            mismatch(wrong_seq).mismatch(),
            Some(CursorMismatch::WrongRecord {
                expected_seq: 4,
                found_seq: 3,
                ..
            })
        ));
        let past_end = Cursor {
            offset: bytes.len() as u64,
            ..cursors[4]
        };
        assert!(matches!(
            mismatch(past_end).mismatch(),
            Some(CursorMismatch::PastEnd { .. })
        ));
        let inside = Cursor {
            offset: cursors[2].offset + 1,
            ..cursors[2]
        };
        assert!(matches!(
            mismatch(inside).mismatch(),
            Some(CursorMismatch::NotARecord { .. })
        ));

        // A different log of the same length: same seq at the same offset, another hash.
        let (other, _) = log(5);
        std::fs::write(&path, &other).unwrap();
        let err = mismatch(cursors[2]);
        assert!(
            matches!(err.mismatch(), Some(CursorMismatch::WrongRecord { .. })),
            "{err}"
        );
        assert!(err.to_string().contains("cursor names seq 3"), "{err}");
    }

    #[test]
    fn a_replaced_or_truncated_file_is_noticed() {
        let (bytes, _) = log(3);
        let (_dir, path) = file(&bytes);
        let mut source = Source::open(&path, &Cursor::START).unwrap();
        source.read(100, usize::MAX, u64::MAX, true).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(10)
            .unwrap();
        assert!(matches!(
            source.read(100, usize::MAX, u64::MAX, true),
            Err(SourceError::Truncated { .. })
        ));
        let mut source = Source::open(&path, &Cursor::START).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            source.read(100, usize::MAX, u64::MAX, true),
            Err(SourceError::Replaced { .. })
        ));
    }
}

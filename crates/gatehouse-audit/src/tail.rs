//! Continuing an existing log: find its last record by scanning back from the end (the file may
//! be many gigabytes), and set aside an unfinished last line left by a crash.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::AuditError;
use crate::record::{self, HashHex, GENESIS_PREV, MAX_LINE_LEN};

const CHUNK: usize = 64 * 1024;

/// Where the chain continues.
#[derive(Debug)]
pub(crate) struct Continuation {
    /// `seq` for the next record.
    pub next_seq: u64,
    /// `prev` for the next record.
    pub prev: HashHex,
    /// File length after any recovery: everything up to here is complete records.
    pub len: u64,
    /// Where an unfinished last line was moved, if there was one.
    pub recovered: Option<PathBuf>,
}

/// Reads the log's tail, moves a partial last line aside, and checks the last record.
///
/// Only the last record is checked (a full check is `verify_file`'s job and would make opening
/// take time proportional to the log's size). A last record that does not check out stops the
/// open: appending to a log whose end cannot be trusted would hide the damage.
pub(crate) fn continue_log(
    dir: &Path,
    path: &Path,
    file: &File,
) -> Result<Continuation, AuditError> {
    let io_err = |e| AuditError::io(path, e);
    let corrupt = |offset: u64, reason: String| AuditError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason,
    };
    let mut len = file.metadata().map_err(io_err)?.len();
    let mut recovered = None;
    if len == 0 {
        return Ok(Continuation {
            next_seq: 1,
            prev: GENESIS_PREV,
            len,
            recovered,
        });
    }

    let mut last = [0u8; 1];
    file.read_exact_at(&mut last, len - 1).map_err(io_err)?;
    let complete_end = if last[0] == b'\n' {
        Some(len - 1)
    } else {
        let (partial_start, complete_end) = match rfind_newline(file, len).map_err(io_err)? {
            Scan::Found(nl) => (nl + 1, Some(nl)),
            Scan::Start => (0, None),
            Scan::TooFar => {
                return Err(corrupt(
                    len,
                    "unterminated last line is longer than any record".into(),
                ))
            }
        };
        recovered = Some(set_aside(dir, path, file, partial_start, len)?);
        len = partial_start;
        complete_end
    };

    let Some(end) = complete_end else {
        return Ok(Continuation {
            next_seq: 1,
            prev: GENESIS_PREV,
            len,
            recovered,
        });
    };
    let start = match rfind_newline(file, end).map_err(io_err)? {
        Scan::Found(nl) => nl + 1,
        Scan::Start => 0,
        Scan::TooFar => return Err(corrupt(end, "last line is longer than any record".into())),
    };
    // At most MAX_LINE_LEN, as rfind_newline looked no further back.
    let mut line = vec![0u8; (end - start) as usize];
    file.read_exact_at(&mut line, start).map_err(io_err)?;
    let last = record::decode(&line)
        .map_err(|e| corrupt(start, format!("last record does not verify: {e}")))?;
    let next_seq = last
        .seq
        .checked_add(1)
        .ok_or_else(|| corrupt(start, "sequence number overflow".into()))?;
    Ok(Continuation {
        next_seq,
        prev: last.hash,
        len,
        recovered,
    })
}

pub(crate) enum Scan {
    /// Offset of the last `\n` before the end position.
    Found(u64),
    /// No `\n` between the start of the file and the end position.
    Start,
    /// No `\n` within the longest possible line.
    TooFar,
}

/// Finds the last `\n` before `end`, looking back at most one maximal line.
pub(crate) fn rfind_newline(file: &File, end: u64) -> io::Result<Scan> {
    let floor = end.saturating_sub(MAX_LINE_LEN as u64 + 1);
    let mut buf = vec![0u8; CHUNK];
    let mut pos = end;
    while pos > floor {
        let n = (pos - floor).min(CHUNK as u64) as usize;
        let from = pos - n as u64;
        file.read_exact_at(&mut buf[..n], from)?;
        if let Some(i) = buf[..n].iter().rposition(|&b| b == b'\n') {
            return Ok(Scan::Found(from + i as u64));
        }
        pos = from;
    }
    Ok(if floor == 0 {
        Scan::Start
    } else {
        Scan::TooFar
    })
}

/// Copies bytes `from..to` into `<log>.partial-<unix nanos>`, then cuts them off the log.
/// Both steps are synced, in that order, so a crash in between loses nothing.
fn set_aside(
    dir: &Path,
    path: &Path,
    file: &File,
    from: u64,
    to: u64,
) -> Result<PathBuf, AuditError> {
    let mut bytes = vec![0u8; (to - from) as usize];
    file.read_exact_at(&mut bytes, from)
        .map_err(|e| AuditError::io(path, e))?;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let name = format!(
        "{}.partial-{nanos}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(crate::writer::LOG_FILE_NAME)
    );
    let aside = dir.join(name);
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&aside)
        .map_err(|e| AuditError::io(&aside, e))?;
    out.write_all(&bytes)
        .and_then(|()| out.sync_all())
        .map_err(|e| AuditError::io(&aside, e))?;
    sync_dir(dir)?;
    file.set_len(from)
        .and_then(|()| file.sync_all())
        .map_err(|e| AuditError::io(path, e))?;
    tracing::warn!(
        log = %path.display(),
        moved_to = %aside.display(),
        bytes = bytes.len(),
        "audit log ended with an unfinished record (crash during a write); moved it aside"
    );
    Ok(aside)
}

/// Makes a new directory entry durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), AuditError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| AuditError::io(dir, e))
}

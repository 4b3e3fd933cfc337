//! What a previous run left open: at start, the gateway closes in the log the sessions a run
//! that never wrote `gateway.stop` (a crash, `kill -9`, a power loss) left open.
//!
//! Sessions never span runs, so only the records since the last `gateway.start` matter: the
//! file is searched backwards for it (logs can be many gigabytes), then read forwards from
//! there. Memory is bounded by the sessions that were open.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::event::EventKind;
use crate::lines::{self, Line};
use crate::pairing::{self, Pending, Role};
use crate::record::{self, HashHex, MAX_LINE_LEN};

/// The end of a run that stopped without `gateway.stop`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UncleanStop {
    /// The last record of that run: its `seq` and hash (the head it left).
    pub last_seq: u64,
    pub last_hash: HashHex,
    pub last_time: time::OffsetDateTime,
    /// Sessions it left open, with the statements of each that never got a result.
    pub open_sessions: Vec<OpenSession>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenSession {
    pub id: String,
    pub unfinished_statements: Vec<u64>,
}

const CHUNK: u64 = 256 * 1024;
const START_MARK: &[u8] = b"\"kind\":\"gateway.start\"";

/// `None` when the log is empty or its last run ended with `gateway.stop`.
pub fn unclean_stop(path: &Path) -> std::io::Result<Option<UncleanStop>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let start = last_start_offset(&file)?;
    let mut file = file;
    file.seek(SeekFrom::Start(start))?;
    let mut reader = BufReader::with_capacity(1024 * 1024, file);
    let mut buf = Vec::new();
    let mut sessions: BTreeMap<String, ()> = BTreeMap::new();
    let mut pending: Pending<()> = Pending::default();
    let mut last = None;
    while lines::read_line(&mut reader, &mut buf, MAX_LINE_LEN)? == Line::Complete {
        let Ok(rec) = record::parse(&buf) else {
            continue;
        };
        let event = &rec.event;
        match event.kind {
            EventKind::SessionStart => {
                if let Some(id) = &event.session {
                    sessions.insert(id.clone(), ());
                }
            }
            EventKind::SessionEnd => {
                if let Some(id) = &event.session {
                    sessions.remove(id);
                }
            }
            _ => {}
        }
        match pairing::role(event) {
            Role::Opens => pending.open(rec.seq, event.session.clone(), ()),
            Role::Resolves(seq) => {
                pending.resolve(seq);
            }
            Role::EndsSession => {
                pending.end_session(event.session.as_deref());
            }
            Role::Other => {}
        }
        // The final checkpoint follows `gateway.stop`; it says nothing about the run's end.
        if event.kind != EventKind::AuditCheckpoint {
            last = Some((rec.seq, rec.hash, event.time, event.kind));
        }
    }
    let Some((last_seq, last_hash, last_time, kind)) = last else {
        return Ok(None);
    };
    if kind == EventKind::GatewayStop {
        return Ok(None);
    }
    let mut open: BTreeMap<String, Vec<u64>> =
        sessions.into_keys().map(|k| (k, Vec::new())).collect();
    for (seq, session) in pending.drain_sessions() {
        if let Some(id) = session {
            open.entry(id).or_default().push(seq);
        }
    }
    Ok(Some(UncleanStop {
        last_seq,
        last_hash,
        last_time,
        open_sessions: open
            .into_iter()
            .map(|(id, unfinished_statements)| OpenSession {
                id,
                unfinished_statements,
            })
            .collect(),
    }))
}

/// The offset of the line holding the last `gateway.start` record (0 if none).
fn last_start_offset(file: &File) -> std::io::Result<u64> {
    let len = file.metadata()?.len();
    let mut end = len;
    let mut buf = vec![0u8; (CHUNK as usize) + START_MARK.len()];
    while end > 0 {
        let from = end.saturating_sub(CHUNK);
        // Overlap the next chunk by the mark's length, so a mark across the boundary is found.
        let to = (end + START_MARK.len() as u64).min(len);
        let n = (to - from) as usize;
        file.read_exact_at(&mut buf[..n], from)?;
        if let Some(at) = rfind(&buf[..n], START_MARK) {
            let mark = from + at as u64;
            // Back to the start of that line.
            let line_start = buf[..at].iter().rposition(|&b| b == b'\n').map_or_else(
                || line_start_before(file, from),
                |nl| Ok(from + nl as u64 + 1),
            )?;
            debug_assert!(line_start <= mark);
            return Ok(line_start);
        }
        end = from;
    }
    Ok(0)
}

fn line_start_before(file: &File, pos: u64) -> std::io::Result<u64> {
    let mut end = pos;
    let mut buf = vec![0u8; CHUNK as usize];
    while end > 0 {
        let from = end.saturating_sub(CHUNK);
        let n = (end - from) as usize;
        file.read_exact_at(&mut buf[..n], from)?;
        if let Some(nl) = buf[..n].iter().rposition(|&b| b == b'\n') {
            return Ok(from + nl as u64 + 1);
        }
        end = from;
    }
    Ok(0)
}

fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if hay.len() < needle.len() {
        return None;
    }
    (0..=hay.len() - needle.len())
        .rev()
        .find(|&i| &hay[i..i + needle.len()] == needle)
}

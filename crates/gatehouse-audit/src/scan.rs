//! Reading a log for verification on every core: a reader cuts the file into batches of whole
//! lines, workers check each line on its own (JSON, record shape, own hash, Merkle leaf), and
//! the caller takes the results back in file order for the checks that link records (`seq`,
//! `prev`, the tree, pairing). Memory stays bounded: a few batches in flight, and no line
//! longer than [`MAX_LINE_LEN`] is ever buffered.

use std::io::{self, Read};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use gatehouse_tlog::Hash;

use crate::checkpoint::leaf_of;
use time::OffsetDateTime;

use crate::event::{EventKind, Status};
use crate::record::{self, HashHex, Record, RecordError, MAX_LINE_LEN};

/// Bytes read per batch (a batch then holds the complete lines among them).
const BATCH: usize = 1 << 20;
/// Batches queued per worker, each way.
const DEPTH: usize = 2;

/// What the linking checks need of a record that checked out on its own.
pub(crate) struct Linked {
    pub seq: u64,
    pub prev: HashHex,
    pub hash: HashHex,
    pub leaf: Hash,
    pub time: OffsetDateTime,
    pub kind: EventKind,
    pub status: Status,
    pub refers: Option<u64>,
    pub session: Option<String>,
    /// The whole record, for the kinds whose detail verification reads (session ends,
    /// pruned recordings, checkpoints, acknowledgements).
    pub full: Option<Box<Record>>,
}

/// One line, checked on its own.
pub(crate) enum Checked {
    Record(Linked),
    /// Not a record, or its own hash is wrong; `seq` when it could be read.
    Bad {
        seq: Option<u64>,
        error: RecordError,
    },
}

/// How the input ended, after its last complete line.
pub(crate) enum End {
    Eof,
    /// Bytes without a final `\n`: a write that never finished.
    Partial {
        seq: Option<u64>,
    },
    /// A line longer than the limit.
    TooLong,
    Io(io::Error),
}

struct Batch {
    /// Complete lines, each ending with `\n`.
    data: Vec<u8>,
}

/// Checks one line (without its `\n`).
pub(crate) fn check_line(line: &[u8]) -> Checked {
    let record = match record::parse(line) {
        Ok(record) => record,
        Err(error) => return Checked::Bad { seq: None, error },
    };
    if let Err(error) = record::check_hash(line) {
        return Checked::Bad {
            seq: Some(record.seq),
            error,
        };
    }
    let leaf = leaf_of(&record.hash);
    let full = matches!(
        record.event.kind,
        EventKind::SessionEnd
            | EventKind::RecordingPruned
            | EventKind::AuditCheckpoint
            | EventKind::AuditAcknowledged
    );
    let mut record = record;
    let linked = Linked {
        seq: record.seq,
        prev: record.prev,
        hash: record.hash,
        leaf,
        time: record.event.time,
        kind: record.event.kind,
        status: record.event.outcome.status,
        refers: record.event.refers,
        session: if full {
            record.event.session.clone()
        } else {
            record.event.session.take()
        },
        full: None,
    };
    // The rest of an ordinary record is dropped here, on the worker: moving or freeing it on
    // the thread that links records would make that thread the bottleneck.
    Checked::Record(Linked {
        full: full.then(|| Box::new(record)),
        ..linked
    })
}

/// Reads `input` to its end, calling `each` with every line's check in file order (with the
/// 1-based line number). Stops early when `each` returns an error, and returns it.
pub(crate) fn scan<R, E>(
    input: R,
    mut each: impl FnMut(u64, Checked) -> Result<(), E>,
) -> Result<End, E>
where
    R: Read + Send,
{
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4);
    std::thread::scope(|scope| {
        let mut to_workers: Vec<SyncSender<Batch>> = Vec::new();
        let mut from_workers: Vec<Receiver<Vec<Checked>>> = Vec::new();
        let (end_tx, end_rx) = sync_channel::<End>(1);
        // Buffers come back from the workers to be filled again: a fresh 1 MiB allocation per
        // batch costs a mapping, page faults and zeroing each time.
        let (spare_tx, spare_rx) = sync_channel::<Vec<u8>>(workers * (DEPTH + 2));
        for _ in 0..workers {
            let (batch_tx, batch_rx) = sync_channel::<Batch>(DEPTH);
            let (done_tx, done_rx) = sync_channel::<Vec<Checked>>(DEPTH);
            let spare = spare_tx.clone();
            scope.spawn(move || work(batch_rx, done_tx, spare));
            to_workers.push(batch_tx);
            from_workers.push(done_rx);
        }
        drop(spare_tx);
        scope.spawn(move || {
            let end = read_batches(input, &to_workers, &spare_rx);
            drop(to_workers);
            let _ = end_tx.send(end);
        });
        // Batch i went to worker i % workers, which answers in the order it was given them.
        let mut line_no = 0u64;
        for i in 0.. {
            let Ok(checked) = from_workers[i % workers].recv() else {
                break;
            };
            for item in checked {
                line_no += 1;
                each(line_no, item)?;
            }
        }
        Ok(end_rx.recv().unwrap_or(End::Eof))
    })
}

fn work(batches: Receiver<Batch>, done: SyncSender<Vec<Checked>>, spare: SyncSender<Vec<u8>>) {
    for batch in batches {
        let data = &batch.data;
        let mut start = 0;
        let checked: Vec<Checked> = memchr::memchr_iter(b'\n', data)
            .map(|end| {
                let line = &data[start..end];
                start = end + 1;
                check_line(line)
            })
            .collect();
        let _ = spare.try_send(batch.data);
        if done.send(checked).is_err() {
            return;
        }
    }
}

/// Reads the input into batches of complete lines, round-robin to the workers.
fn read_batches<R: Read>(
    mut input: R,
    workers: &[SyncSender<Batch>],
    spare: &Receiver<Vec<u8>>,
) -> End {
    let mut carry: Vec<u8> = Vec::new();
    let mut next = 0usize;
    loop {
        let mut data = spare.try_recv().unwrap_or_default();
        data.clear();
        data.extend_from_slice(&carry);
        let start = data.len();
        // Zeroed only the first time a buffer grows to this size.
        data.resize(start + BATCH, 0);
        let n = match read_some(&mut input, &mut data[start..]) {
            Ok(n) => n,
            Err(e) => return End::Io(e),
        };
        data.truncate(start + n);
        if n == 0 {
            if data.is_empty() {
                return End::Eof;
            }
            let seq = record::parse(&data).ok().map(|r| r.seq);
            return End::Partial { seq };
        }
        let Some(last_nl) = memchr::memrchr(b'\n', &data) else {
            if data.len() > MAX_LINE_LEN {
                return End::TooLong;
            }
            carry = data;
            continue;
        };
        carry.clear();
        carry.extend_from_slice(&data[last_nl + 1..]);
        data.truncate(last_nl + 1);
        if let Some(cut) = start_of_long_line(&data) {
            // Hand over the lines before the long one, then stop at it.
            data.truncate(cut);
            let _ = workers[next % workers.len()].send(Batch { data });
            return End::TooLong;
        }
        if carry.len() > MAX_LINE_LEN {
            let _ = workers[next % workers.len()].send(Batch { data });
            return End::TooLong;
        }
        if workers[next % workers.len()].send(Batch { data }).is_err() {
            return End::Eof;
        }
        next += 1;
    }
}

/// Where the first line longer than the limit starts, if there is one.
fn start_of_long_line(data: &[u8]) -> Option<usize> {
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', data) {
        if end - start > MAX_LINE_LEN {
            return Some(start);
        }
        start = end + 1;
    }
    None
}

/// Fills as much of `buf` as the input gives before its end.
fn read_some<R: Read>(input: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

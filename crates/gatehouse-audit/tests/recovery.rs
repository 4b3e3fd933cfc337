//! What a run that stopped without `gateway.stop` left open, read back from the log.

mod common;

use common::{fast, log_path, statement};
use gatehouse_audit::{unclean_stop, AuditLog, Event, EventKind, Outcome};

fn event(kind: EventKind, session: Option<&str>) -> Event {
    let mut e = Event::now(kind, Outcome::success());
    e.session = session.map(str::to_owned);
    e
}

#[test]
fn open_sessions_and_their_unfinished_statements_are_found() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path(), fast()).unwrap();
    // An earlier, cleanly stopped run, then the run that is killed.
    log.append(event(EventKind::GatewayStart, None)).unwrap();
    log.append(event(EventKind::SessionStart, Some("old")))
        .unwrap();
    log.append(event(EventKind::GatewayStop, None)).unwrap();
    log.append(event(EventKind::GatewayStart, None)).unwrap();
    for s in ["a", "b", "c"] {
        log.append(event(EventKind::SessionStart, Some(s))).unwrap();
    }
    // Enough records that the search for the last start crosses read chunks.
    for i in 0..3000 {
        let mut e = statement(i);
        e.session = Some("a".into());
        let t = log.append(e.clone()).unwrap();
        let mut done = event(EventKind::StatementResult, Some("a"));
        done.refers = Some(t.seq());
        if i != 2999 {
            log.append(done).unwrap();
        }
    }
    let mut pending = statement(5000);
    pending.session = Some("b".into());
    pending.outcome = Outcome::pending();
    let b_pending = log.append(pending).unwrap();
    log.append(event(EventKind::SessionEnd, Some("c"))).unwrap();
    let last = log.append(event(EventKind::Cancel, None)).unwrap();
    log.close().unwrap();

    let found = unclean_stop(&log_path(dir.path()))
        .unwrap()
        .expect("an unclean stop");
    assert_eq!(found.last_seq, last.seq());
    let open: Vec<(&str, &[u64])> = found
        .open_sessions
        .iter()
        .map(|s| (s.id.as_str(), s.unfinished_statements.as_slice()))
        .collect();
    // `a`'s statements are old-style (status success), so nothing of it is unfinished; `b`
    // has its pending statement; `c` ended; `old` belongs to a run that stopped cleanly.
    assert_eq!(open, [("a", &[][..]), ("b", &[b_pending.seq()][..])]);
}

#[test]
fn a_clean_stop_or_an_empty_log_leaves_nothing_open() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(unclean_stop(&log_path(dir.path())).unwrap(), None);
    let log = AuditLog::open(dir.path(), fast()).unwrap();
    log.append(event(EventKind::GatewayStart, None)).unwrap();
    log.append(event(EventKind::SessionStart, Some("x")))
        .unwrap();
    log.append(event(EventKind::GatewayStop, None)).unwrap();
    log.close().unwrap();
    assert_eq!(unclean_stop(&log_path(dir.path())).unwrap(), None);
}

//! A recording written by the recorder reads back frame for frame, its hash is the file's,
//! and it stays within its size cap.

use gatehouse_record::{
    file_sha256, FrameKind, Header, Key, ReadError, Reader, Recorder, RecorderLimits,
};
use std::fs::File;

fn header(session: &str) -> Header {
    Header {
        version: 1,
        session: session.to_owned(),
        protocol: "postgres".into(),
        connection: "db".into(),
        started: "2026-12-02T00:00:00Z".into(),
        encryption: None,
    }
}

async fn write(
    dir: &std::path::Path,
    key: Option<&Key>,
    limits: RecorderLimits,
    n: usize,
) -> gatehouse_record::Summary {
    let recorder = Recorder::create(dir, &header("s1"), key, limits).unwrap();
    for i in 0..n {
        recorder.json(
            FrameKind::Statement,
            &serde_json::json!({ "seq": i, "text": "SELECT 1" }),
        );
        recorder.frame(
            FrameKind::Wire,
            format!("row {i} 4111111111111111").as_bytes(),
        );
        if i % 100 == 0 {
            recorder.flush().await.unwrap();
        }
    }
    recorder
        .finish(&serde_json::json!({ "cause": "client_terminated" }))
        .await
        .unwrap()
}

fn read_all(
    path: &std::path::Path,
    key: Option<&Key>,
) -> Result<Vec<gatehouse_record::Frame>, ReadError> {
    let mut reader = Reader::new(File::open(path)?, key)?;
    assert_eq!(reader.header().session, "s1");
    let mut frames = Vec::new();
    while let Some(f) = reader.next_frame()? {
        frames.push(f);
    }
    Ok(frames)
}

#[tokio::test]
async fn frames_read_back_in_order_and_the_hash_is_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let summary = write(dir.path(), None, RecorderLimits::default(), 1000).await;
    let path = dir.path().join(&summary.file);
    assert_eq!(file_sha256(&path).unwrap(), summary.sha256);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), summary.bytes);
    assert!(!summary.truncated);
    let frames = read_all(&path, None).unwrap();
    assert_eq!(frames.len(), 2001);
    assert_eq!(frames[1].payload, b"row 0 4111111111111111");
    assert!(frames.windows(2).all(|w| w[0].at_micros <= w[1].at_micros));
    let end = frames.last().unwrap();
    assert_eq!(end.kind, FrameKind::End);
    assert_eq!(end.json().unwrap()["cause"], "client_terminated");
    // A second recording of the same session never overwrites the first.
    assert!(Recorder::create(dir.path(), &header("s1"), None, RecorderLimits::default()).is_err());
}

#[tokio::test]
async fn encrypted_recordings_hide_their_content_and_need_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = Key::from_secret(b"a recording key of some length").unwrap();
    let summary = write(dir.path(), Some(&key), RecorderLimits::default(), 300).await;
    let path = dir.path().join(&summary.file);
    let raw = std::fs::read(&path).unwrap();
    assert!(!raw.windows(16).any(|w| w == b"4111111111111111"));
    assert!(!raw.windows(8).any(|w| w == b"SELECT 1"));
    assert_eq!(read_all(&path, Some(&key)).unwrap().len(), 601);
    assert!(matches!(read_all(&path, None), Err(ReadError::NeedsKey(_))));
    let other = Key::from_secret(b"another key of some length").unwrap();
    assert!(matches!(
        read_all(&path, Some(&other)),
        Err(ReadError::WrongKey { .. })
    ));
    // One changed byte in a sealed chunk: it no longer opens.
    let mut altered = raw.clone();
    let at = raw.len() - 20;
    altered[at] ^= 0x40;
    std::fs::write(&path, &altered).unwrap();
    assert!(matches!(
        read_all(&path, Some(&key)),
        Err(ReadError::Sealed(_))
    ));
}

#[tokio::test]
async fn the_size_cap_keeps_a_marker_and_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let limits = RecorderLimits {
        max_bytes: 64 * 1024,
        queue_chunks: 2,
    };
    let summary = write(dir.path(), None, limits, 10_000).await;
    assert!(summary.truncated);
    assert!(summary.dropped_frames > 0);
    let path = dir.path().join(&summary.file);
    assert!(std::fs::metadata(&path).unwrap().len() <= 64 * 1024 + 64);
    let frames = read_all(&path, None).unwrap();
    let kinds: Vec<FrameKind> = frames.iter().rev().take(2).map(|f| f.kind).collect();
    assert_eq!(kinds, [FrameKind::End, FrameKind::Truncated]);
    assert_eq!(
        frames.last().unwrap().json().unwrap()["dropped_frames"],
        summary.dropped_frames
    );
}

#[test]
fn hostile_files_are_refused_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.ghrec");
    let mut cases: Vec<Vec<u8>> = vec![
        vec![],
        b"GHREC01".to_vec(),
        b"GHREC01\n\xff\xff\xff\xff".to_vec(),
        b"GHREC01\n\0\0\0\x02{}".to_vec(),
    ];
    let mut good = b"GHREC01\n".to_vec();
    let json = serde_json::to_vec(&header("s1")).unwrap();
    good.extend_from_slice(&(json.len() as u32).to_be_bytes());
    good.extend_from_slice(&json);
    for tail in [
        &b"\xff\xff\xff\xff"[..],
        b"\0\0\0\x05abc",
        b"\0\0\0\x03abc",
        b"\0\0",
    ] {
        let mut c = good.clone();
        c.extend_from_slice(tail);
        cases.push(c);
    }
    for case in cases {
        std::fs::write(&path, &case).unwrap();
        assert!(read_all(&path, None).is_err(), "{case:?}");
    }
}

#[tokio::test]
async fn frames_reach_the_file_within_a_second_without_a_flush_or_an_end() {
    let dir = tempfile::tempdir().unwrap();
    let key = Key::from_secret(&[9u8; 32]).unwrap();
    for key in [None, Some(&key)] {
        let session = if key.is_some() { "s1" } else { "s0" };
        let recorder =
            Recorder::create(dir.path(), &header(session), key, RecorderLimits::default()).unwrap();
        recorder.json(
            FrameKind::Statement,
            &serde_json::json!({ "text": "UPDATE t" }),
        );
        // What a crash leaves: the file as it is, no end frame.
        tokio::time::sleep(gatehouse_record::FLUSH_EVERY * 2).await;
        let path = dir.path().join(format!("{session}.ghrec"));
        let mut reader = Reader::new(File::open(&path).unwrap(), key).unwrap();
        let frame = reader.next_frame().unwrap().expect("the statement frame");
        assert_eq!(frame.json().unwrap()["text"], "UPDATE t");
        assert!(reader.next_frame().unwrap().is_none());
        let summary = recorder
            .finish(&serde_json::json!({ "cause": "client_terminated" }))
            .await
            .unwrap();
        assert_eq!(file_sha256(&path).unwrap(), summary.sha256);
    }
}

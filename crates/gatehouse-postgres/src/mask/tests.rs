use super::*;
use gatehouse_core::mask::{HashKey, Kind, Strategy};

fn masker(strategy: Strategy) -> Arc<Masker> {
    Arc::new(Masker::all(strategy, HashKey::new(b"k".to_vec())))
}

fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&u32::try_from(body.len() + 4).unwrap().to_be_bytes());
    m.extend_from_slice(body);
    m
}

fn data_row(fields: &[Option<&[u8]>]) -> Vec<u8> {
    let mut body = u16::try_from(fields.len()).unwrap().to_be_bytes().to_vec();
    for f in fields {
        match f {
            Some(v) => {
                body.extend_from_slice(&i32::try_from(v.len()).unwrap().to_be_bytes());
                body.extend_from_slice(v);
            }
            None => body.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    message(b'D', &body)
}

fn whole(m: &Arc<Masker>, raw: &[u8]) -> (Vec<u8>, Counts) {
    let mut out = BytesMut::new();
    let counts = MessageMasker::whole(m.clone(), raw, &mut out);
    (out.to_vec(), counts)
}

/// The message fed in pieces of `size` bytes, as a streamed message is.
fn streamed(m: &Arc<Masker>, raw: &[u8], size: usize) -> (Vec<u8>, Counts) {
    let mut out = BytesMut::new();
    out.extend_from_slice(&raw[..5]);
    let mut mm = MessageMasker::new(m.clone(), raw[0], false);
    for piece in raw[5..].chunks(size) {
        mm.feed(piece, &mut out);
    }
    mm.finish(&mut out);
    (out.to_vec(), mm.counts)
}

#[test]
fn row_fields_are_masked_and_lengths_kept() {
    let m = masker(Strategy::Partial);
    let raw = data_row(&[
        Some(b"4111 1111 1111 1111"),
        None,
        Some(b"mail jane@example.com"),
        Some(b""),
        Some(b"plain"),
    ]);
    let (out, counts) = whole(&m, &raw);
    assert_eq!(
        out,
        data_row(&[
            Some(b"**** **** **** 1111"),
            None,
            Some(b"mail ****@******e.com"),
            Some(b""),
            Some(b"plain"),
        ])
    );
    assert_eq!((counts.get(Kind::Card), counts.get(Kind::Email)), (1, 1));
}

#[test]
fn numbers_stay_numbers() {
    let m = masker(Strategy::Partial);
    let (out, _) = whole(&m, &data_row(&[Some(b"4111111111111111")]));
    assert_eq!(out, data_row(&[Some(b"0000000000001111")]));
    let h = masker(Strategy::Hash);
    let (out, _) = whole(&h, &data_row(&[Some(b"4111111111111111")]));
    assert!(out[11..].iter().all(u8::is_ascii_digit), "{out:?}");
}

#[test]
fn null_strategy_nulls_the_field_of_a_whole_row_and_stars_a_streamed_one() {
    let m = masker(Strategy::Null);
    let raw = data_row(&[Some(b"a"), Some(b"123-45-6789"), Some(b"b")]);
    let (out, _) = whole(&m, &raw);
    assert_eq!(out, data_row(&[Some(b"a"), None, Some(b"b")]));
    let (out, _) = streamed(&m, &raw, 3);
    assert_eq!(
        out,
        data_row(&[Some(b"a"), Some(b"***********"), Some(b"b")])
    );
}

#[test]
fn errors_keep_their_code_and_mask_message_and_detail() {
    let m = masker(Strategy::Partial);
    let mut body = Vec::new();
    for (code, text) in [
        (b'S', "ERROR"),
        (b'V', "ERROR"),
        (b'C', "23505"),
        (
            b'M',
            "duplicate key value violates unique constraint \"cards_pkey\"",
        ),
        (b'D', "Key (pan)=(4111111111111111) already exists."),
        (b'F', "nbtinsert.c"),
        (b'L', "666"),
    ] {
        body.push(code);
        body.extend_from_slice(text.as_bytes());
        body.push(0);
    }
    body.push(0);
    let raw = message(b'E', &body);
    let (out, counts) = whole(&m, &raw);
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.contains("Key (pan)=(************1111) already exists."),
        "{text}"
    );
    assert!(text.contains("23505") && text.contains("nbtinsert.c"));
    assert_eq!(out.len(), raw.len());
    assert_eq!(counts.get(Kind::Card), 1);
    assert_eq!(streamed(&m, &raw, 7).0, out);
}

#[test]
fn notifications_settings_copy_and_column_names() {
    let m = masker(Strategy::Full);
    let mut body = 42u32.to_be_bytes().to_vec();
    body.extend_from_slice(b"cards\0paid 4111-1111-1111-1111\0");
    let (out, _) = whole(&m, &message(b'A', &body));
    assert!(String::from_utf8_lossy(&out).contains("paid *******************\0"));

    let (out, _) = whole(&m, &message(b'S', b"application_name\0user 123-45-6789\0"));
    assert_eq!(out, message(b'S', b"application_name\0user ***********\0"));

    let (out, _) = whole(&m, &message(b'd', b"1\t4111111111111111\t\\N\n"));
    assert_eq!(out, message(b'd', b"1\t****************\t\\N\n"));

    let mut body = 2u16.to_be_bytes().to_vec();
    for name in ["id", "4111111111111111"] {
        body.extend_from_slice(name.as_bytes());
        body.push(0);
        body.extend_from_slice(&[7u8; 18]);
    }
    let (out, _) = whole(&m, &message(b'T', &body));
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.contains("id\0") && text.contains("****************\0"),
        "{text}"
    );
    assert_eq!(out.len(), 5 + body.len());
}

#[test]
fn a_value_split_across_chunks_is_found_at_every_split() {
    let m = masker(Strategy::Partial);
    // A large value, with cards near where the window cuts it.
    let mut value = vec![b'x'; 3 * WINDOW];
    for at in [
        WINDOW - 10,
        2 * WINDOW - 3,
        2 * WINDOW + 500,
        3 * WINDOW - 21,
    ] {
        value[at - 1] = b' ';
        value[at..at + 19].copy_from_slice(b"4111 1111 1111 1111");
        value[at + 19] = b' ';
    }
    let raw = data_row(&[Some(b"id"), Some(&value), Some(b"tail 123-45-6789")]);
    let (expect, counts) = whole(&m, &raw);
    assert_eq!(counts.get(Kind::Card), 4);
    assert!(!String::from_utf8_lossy(&expect).contains("4111 1111 1111 1111"));
    for size in [1, 7, 4096, 65_536, 65_537, 100_000, WINDOW * 2 + 13] {
        let (out, counts) = streamed(&m, &raw, size);
        assert_eq!(out.len(), expect.len(), "piece size {size}");
        assert!(out == expect, "piece size {size}");
        assert_eq!(counts.get(Kind::Card), 4, "piece size {size}");
        assert_eq!(counts.get(Kind::Ssn), 1, "piece size {size}");
    }
}

#[test]
fn a_value_longer_than_the_window_is_masked_up_to_the_cut_and_memory_stays_bounded() {
    let m = masker(Strategy::Full);
    // A JWT whose signature never ends within the window.
    let mut value = b"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.".to_vec();
    value.extend(std::iter::repeat_n(b'A', 8 * WINDOW));
    let raw = data_row(&[Some(&value)]);
    let mut out = BytesMut::new();
    out.extend_from_slice(&raw[..5]);
    let mut mm = MessageMasker::new(m.clone(), b'D', false);
    let mut most_held = 0;
    for piece in raw[5..].chunks(4096) {
        mm.feed(piece, &mut out);
        most_held = most_held.max(mm.pending.len());
    }
    mm.finish(&mut out);
    assert!(most_held <= 2 * WINDOW + 4096, "held back {most_held}");
    assert_eq!(out.len(), raw.len());
    assert!(!String::from_utf8_lossy(&out).contains("eyJhbGciOiJIUzI1NiJ9"));
}

#[test]
fn a_cut_inside_digit_groups_does_not_split_values_differently() {
    let m = masker(Strategy::Partial);
    // Digit groups with spaces only, then punctuation the cut can use.
    let mut value = Vec::new();
    while value.len() < 3 * WINDOW {
        value.extend_from_slice(b"order; 56009 4111 1111 1111 1111, ");
    }
    let raw = data_row(&[Some(&value)]);
    let (expect, _) = whole(&m, &raw);
    for size in [1000, 4096, 65_536, 77_777] {
        let (out, _) = streamed(&m, &raw, size);
        assert!(out == expect, "piece size {size}");
    }
}

#[test]
fn protocol_settings_pass_and_others_are_masked() {
    let m = masker(Strategy::Full);
    let raw = message(b'S', b"client_encoding\0UTF8\0");
    assert_eq!(whole(&m, &raw).0, raw);
}

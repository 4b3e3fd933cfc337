//! Finding sensitive values in text: one pass for digit groups (cards, SSNs, phone numbers and
//! IBANs), and fast byte searches for the anchors of the others (`@`, `A`, `eyJ`, `-----BEGIN `).
//! Every candidate is then checked by the rules in [`crate::validate`].
//!
//! A value counts only when it stands alone: it is not directly preceded or followed by an
//! ASCII letter or digit, so a card number inside a longer digit run is not a card number.

use crate::validate;
use crate::Kind;
use memchr::memmem;
use std::sync::LazyLock;

static JWT: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new(b"eyJ"));
static PEM: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(b"-----BEGIN "));

/// A value found in text: its kind and byte range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finding {
    pub kind: Kind,
    pub start: usize,
    pub end: usize,
}

/// A set of built-in kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KindSet(u16);

impl KindSet {
    pub const ALL: KindSet = KindSet(0xff);

    pub fn of(kinds: impl IntoIterator<Item = Kind>) -> KindSet {
        let mut set = KindSet(0);
        for kind in kinds {
            set.insert(kind);
        }
        set
    }

    pub fn insert(&mut self, kind: Kind) {
        if let Some(bit) = bit(kind) {
            self.0 |= bit;
        }
    }

    pub fn contains(self, kind: Kind) -> bool {
        bit(kind).is_some_and(|b| self.0 & b != 0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

fn bit(kind: Kind) -> Option<u16> {
    Kind::BUILT_IN
        .iter()
        .position(|k| *k == kind)
        .map(|i| 1 << i)
}

/// Finds the built-in kinds of `kinds` in `text`, appending to `out` (sorted by start, not
/// overlapping, once [`merge`] has run).
pub fn scan(text: &[u8], kinds: KindSet, out: &mut Vec<Finding>) {
    let numbers = [Kind::Card, Kind::Ssn, Kind::Phone, Kind::Iban]
        .into_iter()
        .any(|k| kinds.contains(k));
    if numbers {
        digits(text, kinds, out);
    }
    if kinds.contains(Kind::Email) {
        emails(text, out);
    }
    if kinds.contains(Kind::AwsKey) {
        aws_keys(text, out);
    }
    if kinds.contains(Kind::Jwt) {
        jwts(text, out);
    }
    if kinds.contains(Kind::PemKey) {
        pem_keys(text, out);
    }
}

/// Sorts findings and merges overlapping ones (the earlier one's kind names the merged range).
pub fn merge(findings: &mut Vec<Finding>) {
    if findings.len() < 2 {
        return;
    }
    findings.sort_by_key(|f| (f.start, std::cmp::Reverse(f.end)));
    let mut kept = 0;
    for i in 1..findings.len() {
        let next = findings[i];
        if next.start < findings[kept].end {
            findings[kept].end = findings[kept].end.max(next.end);
        } else {
            kept += 1;
            findings[kept] = next;
        }
    }
    findings.truncate(kept + 1);
}

fn alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

/// Before `i` is no letter or digit, or only the letter of a backslash escape (`\n`, `\t`, …)
/// as JSON and COPY text write control characters.
fn stands_before(t: &[u8], i: usize) -> bool {
    i == 0
        || !alnum(t[i - 1])
        || (i >= 2
            && t[i - 2] == b'\\'
            && matches!(t[i - 1], b'b' | b'f' | b'n' | b'r' | b't' | b'v'))
}

fn stands_after(t: &[u8], j: usize) -> bool {
    j >= t.len() || !alnum(t[j])
}

// ---------------------------------------------------------------------------------------------
// Digit groups: cards, SSNs, phone numbers; IBANs start at a digit run after two letters.

/// Digit groups parsed from one token at a time.
const MAX_GROUPS: usize = 64;
/// A value spans at most this many groups (a 19-digit card in five groups, an E.164 number
/// written in pairs: `+49 30 12 34 56 78 90`).
const MAX_SPAN: usize = 8;

#[derive(Clone, Copy, Default)]
struct Group {
    start: usize,
    end: usize,
    /// The separator before the next group (`)` stands for `)` or `) `).
    sep: u8,
}

fn digits(t: &[u8], kinds: KindSet, out: &mut Vec<Finding>) {
    let n = t.len();
    let mut i = 0;
    while i < n {
        match next_digit(t, i) {
            Some(k) => i = k,
            None => return,
        }
        if kinds.contains(Kind::Iban)
            && i >= 2
            && t[i - 1].is_ascii_uppercase()
            && t[i - 2].is_ascii_uppercase()
            && stands_before(t, i - 2)
        {
            if let Some(end) = iban_at(t, i - 2) {
                out.push(Finding {
                    kind: Kind::Iban,
                    start: i - 2,
                    end,
                });
                i = end;
                continue;
            }
        }
        let run_end = i + t[i..]
            .iter()
            .position(|b| !b.is_ascii_digit())
            .unwrap_or(n - i);
        // Most digit runs stand alone and are too short for any value: skipped at once.
        let after_plus = i > 0 && t[i - 1] == b'+';
        if stands_before(t, i) && (run_end - i >= 12 || after_plus || continues(t, i, run_end)) {
            i = number_token(t, i, kinds, out);
        } else {
            i = run_end;
        }
    }
}

/// The first ASCII digit at or after `from`, eight bytes at a time.
fn next_digit(t: &[u8], mut from: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    while from + 8 <= t.len() {
        let mut word = [0u8; 8];
        word.copy_from_slice(&t[from..from + 8]);
        let w = u64::from_le_bytes(word);
        // A byte is a digit when its high nibble is 3 and its low nibble below 10: `m` has a
        // zero byte exactly there.
        let high = (w & (0xf0 * ONES)) ^ (0x30 * ONES);
        let low_over_9 = ((w & (0x0f * ONES)) + 0x06 * ONES) & (0x10 * ONES);
        let m = high | low_over_9;
        let zero = m.wrapping_sub(ONES) & !m & (0x80 * ONES);
        if zero != 0 {
            // The lowest flagged byte is exact (borrows only run upwards).
            return Some(from + (zero.trailing_zeros() / 8) as usize);
        }
        from += 8;
    }
    t[from..]
        .iter()
        .position(u8::is_ascii_digit)
        .map(|k| from + k)
}

/// Whether the digit run `i..end` is followed by another group (or is a phone number's
/// parenthesised area code).
fn continues(t: &[u8], i: usize, end: usize) -> bool {
    match t.get(end) {
        Some(b' ' | b'-' | b'.') => t.get(end + 1).is_some_and(u8::is_ascii_digit),
        Some(b')') => i > 0 && t[i - 1] == b'(',
        _ => false,
    }
}

/// Parses the digit groups from `i` and records every value among them. Returns where the
/// scan goes on.
fn number_token(t: &[u8], mut i: usize, kinds: KindSet, out: &mut Vec<Finding>) -> usize {
    let n = t.len();
    let mut groups = [Group::default(); MAX_GROUPS];
    loop {
        let mut count = 0;
        let mut j = i;
        let complete = loop {
            let start = j;
            while j < n && t[j].is_ascii_digit() {
                j += 1;
            }
            groups[count] = Group {
                start,
                end: j,
                sep: 0,
            };
            count += 1;
            if count == MAX_GROUPS {
                break false;
            }
            let next =
                if j + 1 < n && matches!(t[j], b' ' | b'-' | b'.') && t[j + 1].is_ascii_digit() {
                    Some((t[j], j + 1))
                } else if count == 1 && j < n && t[j] == b')' && start > 0 && t[start - 1] == b'(' {
                    match t.get(j + 1) {
                        Some(d) if d.is_ascii_digit() => Some((b')', j + 1)),
                        Some(b' ') if t.get(j + 2).is_some_and(u8::is_ascii_digit) => {
                            Some((b')', j + 2))
                        }
                        _ => None,
                    }
                } else {
                    None
                };
            match next {
                Some((sep, at)) => {
                    groups[count - 1].sep = sep;
                    j = at;
                }
                None => break true,
            }
        };
        let groups = &groups[..count];
        // Starts whose whole span was parsed are decided now; the rest again with the next
        // window (its first group follows a separator, so it stands alone).
        let decided = if complete { count } else { count - MAX_SPAN };
        let mut g = 0;
        while g < decided {
            match value_from(t, groups, g, complete, kinds) {
                Some((kind, last)) => {
                    out.push(Finding {
                        kind,
                        start: value_start(t, groups, g, kind),
                        end: groups[last].end,
                    });
                    g = last + 1;
                }
                None => g += 1,
            }
        }
        if complete {
            return groups[count - 1].end;
        }
        i = groups[g.max(decided)].start;
    }
}

/// A phone number's range includes its `+`, or the `(` of its area code.
fn value_start(t: &[u8], groups: &[Group], g: usize, kind: Kind) -> usize {
    let start = groups[g].start;
    let opens = match t.get(start.wrapping_sub(1)) {
        Some(b'+') => true,
        Some(b'(') => groups[g].sep == b')',
        _ => false,
    };
    if kind == Kind::Phone && start > 0 && opens {
        start - 1
    } else {
        start
    }
}

/// The longest value starting at group `g`: its kind and last group.
fn value_from(
    t: &[u8],
    groups: &[Group],
    g: usize,
    complete: bool,
    kinds: KindSet,
) -> Option<(Kind, usize)> {
    let last_possible = (g + MAX_SPAN - 1).min(groups.len() - 1);
    for e in (g..=last_possible).rev() {
        // The token's last group must not run into a letter.
        if complete && e == groups.len() - 1 && !stands_after(t, groups[e].end) {
            continue;
        }
        let span = &groups[g..=e];
        if let Some(kind) = classify(t, span, kinds) {
            return Some((kind, e));
        }
    }
    None
}

fn classify(t: &[u8], span: &[Group], kinds: KindSet) -> Option<Kind> {
    let total: usize = span.iter().map(|g| g.end - g.start).sum();
    let lens = |i: usize| span[i].end - span[i].start;
    let seps: &[Group] = &span[..span.len() - 1];
    let same_sep = |allowed: &[u8]| {
        seps.first().is_none_or(|first| {
            allowed.contains(&first.sep) && seps.iter().all(|g| g.sep == first.sep)
        })
    };
    let mut buf = [0u8; 24];
    let mut digits = || {
        let mut k = 0;
        for g in span {
            for &d in &t[g.start..g.end] {
                if k < buf.len() {
                    buf[k] = d;
                }
                k += 1;
            }
        }
        buf
    };
    if kinds.contains(Kind::Card) && (12..=19).contains(&total) && same_sep(b" -") {
        let layout = span.len() == 1
            || (span[..span.len() - 1].iter().all(|g| g.end - g.start == 4)
                && (1..=4).contains(&lens(span.len() - 1)))
            || (span.len() == 3 && lens(0) == 4 && lens(1) == 6 && matches!(lens(2), 4 | 5));
        if layout && validate::card(&digits()[..total]) {
            return Some(Kind::Card);
        }
    }
    if kinds.contains(Kind::Ssn) && span.len() == 3 && same_sep(b" -") {
        let d = |i: usize| &t[span[i].start..span[i].end];
        if validate::ssn(d(0), d(1), d(2)) {
            return Some(Kind::Ssn);
        }
    }
    if kinds.contains(Kind::Phone) && phone(t, span, total) {
        return Some(Kind::Phone);
    }
    None
}

/// E.164 (`+` and 8–15 digits, groups after the country code of two digits or more, spaces or
/// hyphens between them) or a North American number in its usual layouts.
fn phone(t: &[u8], span: &[Group], total: usize) -> bool {
    let first = span[0];
    let before = first.start.checked_sub(1).map(|i| t[i]);
    let mut lens = [0usize; MAX_SPAN];
    for (l, g) in lens.iter_mut().zip(span) {
        *l = g.end - g.start;
    }
    let lens = &lens[..span.len()];
    let seps = &span[..span.len() - 1];
    if before == Some(b'+') {
        return (8..=15).contains(&total)
            && t[first.start] != b'0'
            && lens[1..].iter().all(|l| *l >= 2)
            && seps.iter().all(|g| matches!(g.sep, b' ' | b'-'));
    }
    let nanp = |area: Group, exchange: Group| {
        matches!(t[area.start], b'2'..=b'9') && matches!(t[exchange.start], b'2'..=b'9')
    };
    let all_sep = |allowed: &[u8]| {
        seps.first()
            .is_some_and(|s| allowed.contains(&s.sep) && seps.iter().all(|g| g.sep == s.sep))
    };
    match lens {
        [3, 3, 4] if before == Some(b'(') && first.sep == b')' => {
            matches!(span[1].sep, b'-' | b'.' | b' ') && nanp(span[0], span[1])
        }
        [3, 3, 4] => all_sep(b"-. ") && nanp(span[0], span[1]),
        [1, 3, 3, 4] => t[first.start] == b'1' && all_sep(b"-. ") && nanp(span[1], span[2]),
        _ => false,
    }
}

/// An IBAN at `p` (two capital letters, then digits), electronic or in groups of four: its end.
fn iban_at(t: &[u8], p: usize) -> Option<usize> {
    let len = validate::iban_length(&t[p..p + 2])?;
    let mut chars = [0u8; 34];
    let mut k = 0;
    let mut j = p;
    let mut first = true;
    loop {
        let start = j;
        while j < t.len() && alnum(t[j]) {
            if !(t[j].is_ascii_uppercase() || t[j].is_ascii_digit()) || k == len {
                return None;
            }
            chars[k] = t[j];
            k += 1;
            j += 1;
        }
        let group = j - start;
        // Print form: every group after the first has at most four characters.
        if !first && group > 4 {
            return None;
        }
        first = false;
        if k == len {
            return validate::iban(&chars[..len]).then_some(j);
        }
        // Not yet complete: only a print-form group of four followed by one space goes on.
        if group != 4 || t.get(j) != Some(&b' ') || !t.get(j + 1).is_some_and(|b| alnum(*b)) {
            return None;
        }
        j += 1;
    }
}

// ---------------------------------------------------------------------------------------------
// Anchored kinds.

fn local_char(b: u8) -> bool {
    alnum(b) || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn domain_char(b: u8) -> bool {
    alnum(b) || matches!(b, b'.' | b'-')
}

fn emails(t: &[u8], out: &mut Vec<Finding>) {
    let mut after = 0;
    for at in memchr::memchr_iter(b'@', t) {
        if at < after {
            continue;
        }
        let mut l = at;
        while l > 0 && local_char(t[l - 1]) {
            l -= 1;
        }
        while l < at && t[l] == b'.' {
            l += 1;
        }
        if l == at || t[at - 1] == b'.' {
            continue;
        }
        let mut r = at + 1;
        while r < t.len() && domain_char(t[r]) {
            r += 1;
        }
        while r > at + 1 && matches!(t[r - 1], b'.' | b'-') {
            r -= 1;
        }
        if domain(&t[at + 1..r]) {
            out.push(Finding {
                kind: Kind::Email,
                start: l,
                end: r,
            });
            after = r;
        }
    }
}

fn domain(d: &[u8]) -> bool {
    let mut labels = 0;
    let mut last: &[u8] = &[];
    for label in d.split(|b| *b == b'.') {
        if label.is_empty() || label[0] == b'-' || label[label.len() - 1] == b'-' {
            return false;
        }
        labels += 1;
        last = label;
    }
    labels >= 2 && (2..=24).contains(&last.len()) && last.iter().all(u8::is_ascii_alphabetic)
}

const AWS_PREFIXES: [&[u8; 4]; 8] = [
    b"AKIA", b"ASIA", b"AGPA", b"AIDA", b"AROA", b"ANPA", b"ANVA", b"AIPA",
];

fn aws_keys(t: &[u8], out: &mut Vec<Finding>) {
    for p in memchr::memchr_iter(b'A', t) {
        let Some(key) = t.get(p..p + 20) else {
            return;
        };
        if AWS_PREFIXES.iter().any(|pre| &key[..4] == *pre)
            && key[4..]
                .iter()
                .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(b))
            && stands_before(t, p)
            && stands_after(t, p + 20)
        {
            out.push(Finding {
                kind: Kind::AwsKey,
                start: p,
                end: p + 20,
            });
        }
    }
}

fn b64url(b: u8) -> bool {
    alnum(b) || matches!(b, b'-' | b'_')
}

fn segment_end(t: &[u8], from: usize) -> usize {
    let mut j = from;
    while j < t.len() && b64url(t[j]) {
        j += 1;
    }
    j
}

fn jwts(t: &[u8], out: &mut Vec<Finding>) {
    let mut after = 0;
    for p in JWT.find_iter(t) {
        if p < after || (p > 0 && b64url(t[p - 1])) {
            continue;
        }
        let e1 = segment_end(t, p);
        if t.get(e1) != Some(&b'.') || !t[e1 + 1..].starts_with(b"eyJ") {
            continue;
        }
        let e2 = segment_end(t, e1 + 1);
        if t.get(e2) != Some(&b'.') {
            continue;
        }
        let e3 = segment_end(t, e2 + 1);
        if e3 - (e2 + 1) >= 16 && validate::json_segment(&t[p..e1]) {
            out.push(Finding {
                kind: Kind::Jwt,
                start: p,
                end: e3,
            });
            after = e3;
        }
    }
}

fn pem_keys(t: &[u8], out: &mut Vec<Finding>) {
    let mut after = 0;
    // Labels whose END line is not in the rest of the text: no later BEGIN of theirs can end
    // either (so hostile text of many BEGIN lines costs one search per label, not per line).
    let mut unended: Vec<&[u8]> = Vec::new();
    for p in PEM.find_iter(t) {
        if p < after {
            continue;
        }
        let label_start = p + 11;
        let window = &t[label_start..t.len().min(label_start + 40)];
        let Some(label_len) = memmem::find(window, b"-----") else {
            continue;
        };
        let label = &window[..label_len];
        if !label.ends_with(b"PRIVATE KEY") || unended.contains(&label) {
            continue;
        }
        let mut end_line = Vec::with_capacity(label.len() + 14);
        end_line.extend_from_slice(b"-----END ");
        end_line.extend_from_slice(label);
        end_line.extend_from_slice(b"-----");
        let body = label_start + label_len + 5;
        if let Some(k) = memmem::find(&t[body..], &end_line) {
            let end = body + k + end_line.len();
            out.push(Finding {
                kind: Kind::PemKey,
                start: p,
                end,
            });
            after = end;
        } else {
            unended.push(label);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(text: &str) -> Vec<(Kind, &str)> {
        let mut out = Vec::new();
        scan(text.as_bytes(), KindSet::ALL, &mut out);
        merge(&mut out);
        out.iter()
            .map(|f| (f.kind, &text[f.start..f.end]))
            .collect()
    }

    #[test]
    fn each_kind_in_text() {
        assert_eq!(
            found("card 4111 1111 1111 1111."),
            [(Kind::Card, "4111 1111 1111 1111")]
        );
        assert_eq!(
            found("amex 3782-822463-10005,"),
            [(Kind::Card, "3782-822463-10005")]
        );
        assert_eq!(found("ssn=123-45-6789;"), [(Kind::Ssn, "123-45-6789")]);
        assert_eq!(
            found("call (212) 555-0143 now"),
            [(Kind::Phone, "(212) 555-0143")]
        );
        assert_eq!(
            found("call +44 20 7946 0958"),
            [(Kind::Phone, "+44 20 7946 0958")]
        );
        assert_eq!(
            found("iban DE89 3704 0044 0532 0130 00 ok"),
            [(Kind::Iban, "DE89 3704 0044 0532 0130 00")]
        );
        assert_eq!(
            found("iban:GB29NWBK60161331926819"),
            [(Kind::Iban, "GB29NWBK60161331926819")]
        );
        assert_eq!(
            found("to: jane.doe+x@mail.example.co.uk."),
            [(Kind::Email, "jane.doe+x@mail.example.co.uk")]
        );
        assert_eq!(
            found("key AKIAIOSFODNN7EXAMPLE end"),
            [(Kind::AwsKey, "AKIAIOSFODNN7EXAMPLE")]
        );
    }

    #[test]
    fn values_side_by_side_are_each_found() {
        assert_eq!(
            found("123-45-6789 4111 1111 1111 1111 +1 212 555 0143"),
            [
                (Kind::Ssn, "123-45-6789"),
                (Kind::Card, "4111 1111 1111 1111"),
                (Kind::Phone, "+1 212 555 0143"),
            ]
        );
    }

    #[test]
    fn look_alikes_are_not_found() {
        for text in [
            "2026-12-01T09:23:35Z",
            "order 2125550143",
            "x4111111111111111",
            "94111111111111111",
            "4111 1111-1111 1111",
            "v1.2.3 on 10.0.0.1:5432",
            "user@localhost",
            "AKIAIOSFODNN7EXAMPLEX",
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
            "978-3-16-148410-0",
            "1,234,567.89",
        ] {
            assert_eq!(found(text), [], "{text}");
        }
    }

    #[test]
    fn digits_are_found_eight_bytes_at_a_time() {
        for b in 0..=255u8 {
            for at in 0..20 {
                let mut t = vec![b'x'; 20];
                t[at] = b;
                let expect = b.is_ascii_digit().then_some(at);
                assert_eq!(next_digit(&t, 0), expect, "byte {b} at {at}");
            }
        }
        let t = b"ab1cdefghij2";
        assert_eq!(next_digit(t, 3), Some(11));
    }

    #[test]
    fn escaped_control_characters_are_boundaries() {
        assert_eq!(
            found(r#"{"note":"\n4111 1111 1111 1111\t"}"#),
            [(Kind::Card, "4111 1111 1111 1111")]
        );
        assert_eq!(found(r"1\t123-45-6789\n"), [(Kind::Ssn, "123-45-6789")]);
    }

    #[test]
    fn many_unended_private_key_lines_cost_one_search() {
        let text = "-----BEGIN PRIVATE KEY-----\n".repeat(50_000);
        let started = std::time::Instant::now();
        assert_eq!(found(&text), []);
        // Quadratic would be 50,000 searches of ~1.4 MB: minutes, not milliseconds.
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn long_digit_tokens_are_scanned_in_windows() {
        let mut text = String::new();
        for _ in 0..100 {
            text.push_str("12 ");
        }
        text.push_str("4111 1111 1111 1111");
        assert_eq!(found(&text), [(Kind::Card, "4111 1111 1111 1111")]);
    }
}

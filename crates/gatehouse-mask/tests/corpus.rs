//! The known-answer corpus (tests/data/corpus.tsv, from scripts/mask-corpus.py): valid values
//! of every kind in every common layout, alone and inside log lines, SQL, JSON and prose, and
//! look-alikes that must not match. Prints recall and false positives by kind; valid cards,
//! SSNs and IBANs must all be found, and the corpus as a whole must be read exactly.

use gatehouse_mask::scan::Finding;
use gatehouse_mask::{Counts, HashKey, Kind, Masker, Strategy};
use std::collections::BTreeMap;

fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('\\') => out.push('\\'),
            other => panic!("bad escape \\{other:?} in {field:?}"),
        }
    }
    out
}

struct Line {
    kind: String,
    text: String,
    value: String,
    note: String,
}

fn corpus() -> Vec<Line> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/corpus.tsv");
    let data = std::fs::read_to_string(path).expect("the corpus");
    data.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 4, "corpus line {l:?}");
            Line {
                kind: f[0].to_owned(),
                text: unescape(f[1]),
                value: unescape(f[2]),
                note: f[3].to_owned(),
            }
        })
        .collect()
}

#[derive(Default)]
struct Tally {
    positives: u32,
    found: u32,
    negatives: u32,
    false_positives: u32,
}

#[test]
fn known_answers() {
    let lines = corpus();
    assert!(lines.len() >= 2000, "{} lines", lines.len());
    let masker = Masker::all(Strategy::Full, HashKey::new(b"corpus".to_vec()));
    let mut tally: BTreeMap<String, Tally> = BTreeMap::new();
    let mut wrong = Vec::new();
    let mut findings: Vec<Finding> = Vec::new();
    for line in &lines {
        masker.find(line.text.as_bytes(), &mut findings);
        let kinds: Vec<&str> = findings.iter().map(|f| f.kind.name()).collect();
        let mut masked = line.text.clone().into_bytes();
        masker.mask_in_place(&mut masked, &mut Vec::new(), &mut Counts::default());
        let masked = String::from_utf8(masked).expect("masking keeps UTF-8");
        if line.kind == "none" {
            let t = tally.entry("none".into()).or_default();
            t.negatives += 1;
            if !findings.is_empty() {
                t.false_positives += 1;
                wrong.push(format!(
                    "false positive {kinds:?}: {:?} ({})",
                    line.text, line.note
                ));
            }
            continue;
        }
        let t = tally.entry(line.kind.clone()).or_default();
        t.positives += 1;
        let exact = findings.len() == 1
            && findings[0].kind.name() == line.kind
            && line.text[findings[0].start..findings[0].end] == line.value;
        if exact && !masked.contains(&line.value) {
            t.found += 1;
        } else {
            wrong.push(format!(
                "{} not found exactly (found {kinds:?}): {:?} ({})",
                line.kind, line.text, line.note
            ));
        }
    }
    println!("kind      positives  recall   | negatives  false positives");
    for (kind, t) in &tally {
        if t.positives > 0 {
            println!(
                "{kind:<9} {:>9}  {:>6.2}%",
                t.positives,
                100.0 * f64::from(t.found) / f64::from(t.positives)
            );
        } else {
            println!(
                "{kind:<9} {:>30} {:>9}  {:>6.2}%",
                "",
                t.negatives,
                100.0 * f64::from(t.false_positives) / f64::from(t.negatives)
            );
        }
    }
    for must in ["card", "ssn", "iban"] {
        let t = &tally[must];
        assert_eq!(t.found, t.positives, "every valid {must} is masked");
    }
    assert!(
        wrong.is_empty(),
        "{} lines read wrongly:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert_eq!(Kind::from_name("card"), Some(Kind::Card));
}

//! Signed notes and checkpoints: known answers from `golang.org/x/mod/sumdb/note`'s tests
//! (whose PeterNeumann private key is published there), the C2SP spec examples, tampering,
//! and garbage that must be refused without a panic.

mod common;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use gatehouse_tlog::note::{key_id, MAX_SIGNATURES};
use gatehouse_tlog::tree::root;
use gatehouse_tlog::{Checkpoint, CheckpointError, KeyId, NoteError, SignedNote, Signer, Verifier};

const PETER_SKEY: &str =
    "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const ENOCH_VKEY: &str = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
const TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                    then you don't know what your problem is.\n";
const PETER_SIG: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
const ENOCH_SIG: &str = "\u{2014} EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

fn peter_seed() -> [u8; 32] {
    let raw = BASE64
        .decode("AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz")
        .unwrap();
    assert_eq!(raw[0], 0x01);
    raw[1..].try_into().unwrap()
}

fn peter() -> Verifier {
    Verifier::parse(PETER_VKEY).unwrap()
}

fn enoch() -> Verifier {
    Verifier::parse(ENOCH_VKEY).unwrap()
}

#[test]
fn go_known_answer_signature() {
    let want = format!("{TEXT}\n{PETER_SIG}");
    let from_skey = Signer::from_skey(PETER_SKEY).unwrap();
    let from_seed = Signer::from_seed("PeterNeumann", &peter_seed()).unwrap();
    for signer in [from_skey, from_seed] {
        assert_eq!(signer.key_id(), KeyId([0xc7, 0x4f, 0x20, 0xa3]));
        assert_eq!(signer.verifier(), peter());
        assert_eq!(signer.verifier().to_vkey(), PETER_VKEY);
        let note = signer.sign(TEXT).unwrap();
        assert_eq!(note.to_text(), want);
        assert_eq!(note.verify(&peter()), Ok(()));
    }
}

#[test]
fn key_id_is_sha256_of_name_newline_type_key() {
    let v = peter();
    assert_eq!(key_id("PeterNeumann", &v.public_key()), v.key_id());
    assert_eq!(v.key_id().to_string(), "c74f20a3");
    assert_eq!(enoch().key_id().to_string(), "af0cfe78");
    assert_eq!(v.name(), "PeterNeumann");
}

#[test]
fn vkeys_round_trip_and_manglings_are_refused() {
    for vkey in [PETER_VKEY, ENOCH_VKEY] {
        assert_eq!(Verifier::parse(vkey).unwrap().to_string(), vkey);
        assert_eq!(vkey.parse::<Verifier>().unwrap().to_vkey(), vkey);
        let b = vkey.as_bytes();
        for i in 0..=b.len() {
            for j in i + 1..=b.len() {
                if (i, j) != (0, b.len()) {
                    let part = std::str::from_utf8(&b[i..j]).unwrap();
                    assert!(Verifier::parse(part).is_err(), "{part:?}");
                }
            }
        }
        let mut b = b.to_vec();
        for i in 0..b.len() {
            b[i] += 1;
            let mangled = String::from_utf8(b.clone()).unwrap();
            assert!(Verifier::parse(&mangled).is_err(), "{mangled:?}");
            b[i] -= 1;
        }
    }
    // From the Go tests: wrong length with adjusted hash; unknown algorithm with adjusted hash.
    assert!(matches!(
        Verifier::parse(
            "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY=="
        ),
        Err(NoteError::MalformedVerifierKey(_))
    ));
    assert_eq!(
        Verifier::parse("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"),
        Err(NoteError::UnknownAlgorithm(0x65))
    );
    assert!(matches!(
        Verifier::parse("PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"),
        Err(NoteError::KeyIdMismatch { .. })
    ));
    assert!(
        Verifier::parse("PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")
            .is_err()
    );
    assert!(Verifier::parse(&format!("{PETER_VKEY}\n")).is_err());
    assert!(Verifier::parse(&format!(" {PETER_VKEY}")).is_err());
}

#[test]
fn skey_manglings_are_refused() {
    let b = PETER_SKEY.as_bytes();
    for i in 0..=b.len() {
        for j in i + 1..=b.len() {
            if (i, j) != (0, b.len()) {
                let part = std::str::from_utf8(&b[i..j]).unwrap();
                assert!(Signer::from_skey(part).is_err(), "{part:?}");
            }
        }
    }
    let mut b = b.to_vec();
    for i in 0..b.len() {
        b[i] += 1;
        let mangled = String::from_utf8(b.clone()).unwrap();
        assert!(Signer::from_skey(&mangled).is_err(), "{mangled:?}");
        b[i] -= 1;
    }
    // A vkey is not an skey and vice versa.
    assert!(Signer::from_skey(PETER_VKEY).is_err());
    assert!(Verifier::parse(PETER_SKEY).is_err());
}

#[test]
fn go_open_cases() {
    let both = format!("{TEXT}\n{PETER_SIG}{ENOCH_SIG}");
    let note = SignedNote::parse(&both).unwrap();
    assert_eq!(note.body(), TEXT);
    assert_eq!(note.signatures().len(), 2);
    assert_eq!(note.signatures()[1].name(), "EnochRoot");
    assert_eq!(note.signatures()[1].key_id().to_string(), "af0cfe78");
    assert_eq!(note.signatures()[0].signature().len(), 64);
    assert_eq!(note.verify(&peter()), Ok(()));
    assert_eq!(note.verify(&enoch()), Ok(()));
    assert_eq!(note.to_text(), both);

    // A key that did not sign.
    let stranger = Signer::from_seed("Stranger", &[9; 32]).unwrap().verifier();
    assert!(matches!(
        note.verify(&stranger),
        Err(NoteError::NotSignedByKey { .. })
    ));

    // Duplicate signature lines are fine as long as every one by the key verifies.
    let dup = SignedNote::parse(format!("{TEXT}\n{PETER_SIG}{PETER_SIG}{ENOCH_SIG}")).unwrap();
    assert_eq!(dup.verify(&peter()), Ok(()));

    // Extra bytes inside Peter's signature: same name and ID, so it must verify, and fails.
    let bad_peter = format!("{}ABCD{}", &PETER_SIG[..60], &PETER_SIG[60..]);
    let note = SignedNote::parse(format!("{TEXT}\n{bad_peter}")).unwrap();
    assert_eq!(
        note.verify(&peter()),
        Err(NoteError::InvalidSignature {
            name: "PeterNeumann".into(),
            key_id: peter().key_id()
        })
    );
    // ... and one bad copy next to a good one still rejects the note.
    let mixed = SignedNote::parse(format!("{TEXT}\n{PETER_SIG}{bad_peter}")).unwrap();
    assert!(matches!(
        mixed.verify(&peter()),
        Err(NoteError::InvalidSignature { .. })
    ));
    // A bad signature by an unknown key is ignored.
    let bad_enoch = format!("{}ABCD{}", &ENOCH_SIG[..60], &ENOCH_SIG[60..]);
    let note = SignedNote::parse(format!("{TEXT}\n{PETER_SIG}{bad_enoch}")).unwrap();
    assert_eq!(note.verify(&peter()), Ok(()));

    // Same key ID under another name, or another key ID under the same name: unknown keys.
    let misnamed = PETER_SIG.replace("PeterNeumann", "CarmenSandiego");
    let note = SignedNote::parse(format!("{TEXT}\n{misnamed}")).unwrap();
    assert!(matches!(
        note.verify(&peter()),
        Err(NoteError::NotSignedByKey { .. })
    ));
    let wrong_id = PETER_SIG.replace("x08g", "xxxx");
    let note = SignedNote::parse(format!("{TEXT}\n{wrong_id}")).unwrap();
    assert!(matches!(
        note.verify(&peter()),
        Err(NoteError::NotSignedByKey { .. })
    ));
}

#[test]
fn go_malformed_notes() {
    let bad = [
        TEXT.to_string(),
        format!("{TEXT}\n"),
        format!("{TEXT}\n{}", &PETER_SIG[..PETER_SIG.len() - 1]),
        format!("\x01{TEXT}\n{PETER_SIG}"),
        format!("{TEXT}\n\u{2014} Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="),
        format!("{TEXT}\n{PETER_SIG}Unexpected line.\n"),
        format!("{TEXT}\n\u{2014} PeterNeumann \n"),
        format!("{TEXT}\n\u{2014} PeterNeumann AAAAAA==\n"), // key ID but no signature
        format!("{TEXT}\n\u{2014}  x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"),
        format!("{TEXT}\n- PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"),
        format!("{TEXT}\n{}", PETER_SIG.replace("AM=", "AM")),
        format!("{TEXT}\n{}", PETER_SIG.replace("AM=", "AM= ")),
        format!("{TEXT}\r\n{PETER_SIG}"),
        format!("{}\n{PETER_SIG}", TEXT.trim_end()),
        format!("\n{PETER_SIG}"),
        format!("\n\n{PETER_SIG}"),
        String::new(),
    ];
    for msg in &bad {
        assert!(SignedNote::parse(msg).is_err(), "{msg:?}");
    }
    let mut not_utf8 = b"\xff".to_vec();
    not_utf8.extend_from_slice(format!("{TEXT}\n{PETER_SIG}").as_bytes());
    assert_eq!(SignedNote::parse(&not_utf8), Err(NoteError::NotUtf8));
}

#[test]
fn signature_count_is_bounded() {
    let at_limit = format!("{TEXT}\n{}", PETER_SIG.repeat(MAX_SIGNATURES));
    assert_eq!(
        SignedNote::parse(&at_limit).unwrap().verify(&peter()),
        Ok(())
    );
    let over = format!("{TEXT}\n{}", PETER_SIG.repeat(MAX_SIGNATURES + 1));
    assert_eq!(
        SignedNote::parse(&over),
        Err(NoteError::TooManySignatures(MAX_SIGNATURES))
    );
}

#[test]
fn c2sp_spec_examples() {
    // signed-note's example has an empty line in its body: v1 allows it, this crate does not.
    let poem = "Ognuno sta solo sul cuor della terra\ntrafitto da un raggio di sole:\n\ned \u{e8} subito sera.\n\n\u{2014} quasimodo.example/salvatore NnugSzTjtVAewIS+Z/iJhUPeFDkO/5QQ2i5ddnGITLlC+EhfLW9oJKONrMouFSQU0xMcXxj99ihAQwaqP3ZekRwNtIc=\n";
    assert_eq!(SignedNote::parse(poem), Err(NoteError::EmptyLineInBody));

    // tlog-checkpoint's example is well formed; we just do not hold its key.
    let text = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n\u{2014} example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n";
    let note = SignedNote::parse(text).unwrap();
    assert_eq!(note.to_text(), text);
    let checkpoint = Checkpoint::parse(note.body()).unwrap();
    assert_eq!(checkpoint.origin, "example.com/behind-the-sofa");
    assert_eq!(checkpoint.size, 20852163);
    assert!(checkpoint.extensions.is_empty());
    assert!(matches!(
        Checkpoint::open(text, &peter()),
        Err(CheckpointError::Note(NoteError::NotSignedByKey { .. }))
    ));
}

fn ct_checkpoint() -> Checkpoint {
    let leaves = common::ct_leaf_hashes();
    Checkpoint {
        origin: "example.com/gatehouse-test".into(),
        size: 8,
        root: root(&leaves, 8).unwrap(),
        extensions: vec![],
    }
}

/// A pinned signed checkpoint over the CT 8-leaf tree with the published PeterNeumann key
/// (Ed25519 is deterministic), so any change to the wire format shows up here.
#[test]
fn pinned_signed_checkpoint() {
    let signer = Signer::from_skey(PETER_SKEY).unwrap();
    let note = ct_checkpoint().sign(&signer).unwrap();
    let text = note.to_text();
    assert!(text.starts_with(
        "example.com/gatehouse-test\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n\n\u{2014} PeterNeumann x08go"
    ));
    assert_eq!(text, PINNED_CHECKPOINT);
    assert_eq!(Checkpoint::open(&text, &peter()), Ok(ct_checkpoint()));
}

const PINNED_CHECKPOINT: &str = "example.com/gatehouse-test\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n\n\u{2014} PeterNeumann x08goymUqr1GidbSI/XPKARGJcc3N7UyxhzSa1+iM/aydvZTkrOYCm1fZJglqavygyJTh1wgQLj069+HZTPllHR1QwM=\n";

#[test]
fn checkpoint_round_trips_and_tampering_is_caught() {
    let signer = Signer::from_seed("example.com/log", &[42; 32]).unwrap();
    let verifier = Verifier::parse(&signer.verifier().to_vkey()).unwrap();
    let mut checkpoint = ct_checkpoint();
    checkpoint.origin = "example.com/log".into();
    checkpoint.extensions = vec!["ext one".into(), "— two".into()];
    let text = checkpoint.sign(&signer).unwrap().to_text();
    assert_eq!(Checkpoint::open(&text, &verifier), Ok(checkpoint.clone()));
    assert_eq!(SignedNote::parse(&text).unwrap().to_text(), text);

    // Body tampering: the size, the root, an extension.
    for (from, to) in [("\n8\n", "\n9\n"), ("Xcna", "Xcnb"), ("ext one", "ext 0ne")] {
        let tampered = text.replacen(from, to, 1);
        assert_ne!(tampered, text);
        assert!(
            matches!(
                Checkpoint::open(&tampered, &verifier),
                Err(CheckpointError::Note(NoteError::InvalidSignature { .. }))
            ),
            "{from} -> {to}"
        );
    }
    // Any single bit of the signature bytes.
    let note = SignedNote::parse(&text).unwrap();
    let line_start = text.rfind('\u{2014}').unwrap();
    let b64_start = text[line_start..].rfind(' ').unwrap() + line_start + 1;
    let raw = BASE64.decode(text[b64_start..].trim_end()).unwrap();
    for bit in 0..raw.len() * 8 {
        let mut flipped = raw.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        let forged = format!("{}{}\n", &text[..b64_start], BASE64.encode(&flipped));
        let result = Checkpoint::open(&forged, &verifier);
        assert!(result.is_err(), "bit {bit}");
        if bit < 32 {
            // Key ID changed: the signature is by an unknown key now.
            assert!(matches!(
                result,
                Err(CheckpointError::Note(NoteError::NotSignedByKey { .. }))
            ));
        }
    }
    // Key name on the signature line.
    let renamed = text.replace("\u{2014} example.com/log ", "\u{2014} example.com/lag ");
    assert!(matches!(
        Checkpoint::open(&renamed, &verifier),
        Err(CheckpointError::Note(NoteError::NotSignedByKey { .. }))
    ));
    // The right signature checked against another key with the same name.
    let impostor = Signer::from_seed("example.com/log", &[43; 32])
        .unwrap()
        .verifier();
    assert!(Checkpoint::open(&text, &impostor).is_err());
    assert_eq!(note.verify(&verifier), Ok(()));
}

#[test]
fn cosigning_adds_and_replaces() {
    let log = Signer::from_seed("example.com/log", &[1; 32]).unwrap();
    let witness = Signer::from_seed("witness.example/w1", &[2; 32]).unwrap();
    let mut note = ct_checkpoint().sign(&log).unwrap();
    note.add_signature(&witness).unwrap();
    note.add_signature(&witness).unwrap();
    assert_eq!(note.signatures().len(), 2);
    let reparsed = SignedNote::parse(note.to_text()).unwrap();
    assert_eq!(reparsed.verify(&log.verifier()), Ok(()));
    assert_eq!(reparsed.verify(&witness.verifier()), Ok(()));
}

#[test]
fn signing_refuses_bad_bodies_and_names() {
    let signer = Signer::from_seed("ok", &[3; 32]).unwrap();
    assert_eq!(signer.sign(""), Err(NoteError::EmptyBody));
    assert_eq!(signer.sign("a"), Err(NoteError::BodyNotNewlineTerminated));
    assert_eq!(signer.sign("a\n\nb\n"), Err(NoteError::EmptyLineInBody));
    assert_eq!(signer.sign("\n"), Err(NoteError::EmptyLineInBody));
    assert_eq!(
        signer.sign("a\tb\n"),
        Err(NoteError::ControlCharacter { offset: 1 })
    );
    for name in ["", "a b", "a+b", "a\nb", "a\u{2003}b"] {
        assert_eq!(
            Signer::from_seed(name, &[3; 32]).unwrap_err(),
            NoteError::InvalidKeyName
        );
        assert_eq!(
            Verifier::new(name, &peter().public_key()).unwrap_err(),
            NoteError::InvalidKeyName
        );
    }
    let mut bad = ct_checkpoint();
    bad.origin = "two\nlines".into();
    assert_eq!(
        bad.sign(&signer),
        Err(CheckpointError::ControlCharacter { line: 1 })
    );
}

/// A deterministic generator for the garbage tests.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Mutates valid texts (bit flips, cut-offs, spliced-in separators) and feeds the result, and
/// pure noise, to every parser. Nothing may panic; mutations that happen to stay valid must
/// still only verify if the signed body is unchanged.
#[test]
fn garbage_never_panics() {
    let signer = Signer::from_skey(PETER_SKEY).unwrap();
    let checkpoint_body = ct_checkpoint().to_body().unwrap();
    let checkpoint_text = signer.sign(&checkpoint_body).unwrap().to_text();
    let seeds = [
        checkpoint_text.clone(),
        format!("{TEXT}\n{PETER_SIG}{ENOCH_SIG}"),
        PETER_VKEY.to_string(),
        PETER_SKEY.to_string(),
    ];
    let splices: [&[u8]; 8] = [
        b"\n",
        b"\n\n",
        "\u{2014} ".as_bytes(),
        b" ",
        b"+",
        b"=",
        b"\xe2\x80",
        b"0",
    ];
    let verifier = peter();
    let mut rng = Lcg(0x5eed);
    for round in 0..20_000 {
        let mut bytes = seeds[round % seeds.len()].clone().into_bytes();
        for _ in 0..1 + rng.below(4) {
            match rng.below(4) {
                0 if !bytes.is_empty() => {
                    let i = rng.below(bytes.len());
                    bytes[i] ^= 1 << rng.below(8);
                }
                1 if !bytes.is_empty() => {
                    let i = rng.below(bytes.len());
                    bytes.truncate(i);
                }
                2 => {
                    let i = rng.below(bytes.len() + 1);
                    let s = splices[rng.below(splices.len())];
                    bytes.splice(i..i, s.iter().copied());
                }
                _ => {
                    let n = rng.below(64);
                    bytes = (0..n).map(|_| rng.next() as u8).collect();
                }
            }
        }
        if let Ok(note) = SignedNote::parse(&bytes) {
            let _ = note.to_text();
            if note.verify(&verifier).is_ok() {
                assert!(
                    note.body() == TEXT || note.body() == checkpoint_body,
                    "a changed body verified: {:?}",
                    note.body()
                );
            }
            let _ = Checkpoint::parse(note.body());
        }
        let _ = Checkpoint::open(&bytes, &verifier);
        if let Ok(text) = std::str::from_utf8(&bytes) {
            let _ = Checkpoint::parse(text);
            let _ = Verifier::parse(text);
            let _ = Signer::from_skey(text);
        }
    }
}

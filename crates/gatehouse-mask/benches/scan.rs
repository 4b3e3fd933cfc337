//! Detector throughput over realistic mixed text with every default detector on: log lines,
//! SQL, JSON documents and prose with timestamps, amounts, ids, addresses and now and then a
//! sensitive value (about one per kilobyte). Run: cargo bench -p gatehouse-mask.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gatehouse_mask::{Counts, HashKey, Masker, Strategy};
use std::hint::black_box;

/// A small deterministic generator (the text must be the same on every run).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const WORDS: &[&str] = &[
    "the",
    "customer",
    "account",
    "payment",
    "was",
    "updated",
    "by",
    "service",
    "request",
    "completed",
    "after",
    "retry",
    "balance",
    "transfer",
    "pending",
    "approved",
    "for",
    "branch",
    "ledger",
    "entry",
    "reconciled",
    "with",
    "statement",
    "monthly",
    "fee",
    "waived",
    "notes",
    "Überweisung",
    "état",
    "번호",
    "確認",
];
const SENSITIVE: &[&str] = &[
    "4111 1111 1111 1111",
    "5555-5555-5555-4444",
    "123-45-6789",
    "DE89 3704 0044 0532 0130 00",
    "jane.doe@example.com",
    "+44 20 7946 0958",
    "(212) 555-0143",
    "AKIAIOSFODNN7EXAMPLE",
];

fn mixed_text(bytes: usize) -> Vec<u8> {
    let mut r = Lcg(20261202);
    let mut out = String::with_capacity(bytes + 256);
    while out.len() < bytes {
        match r.below(4) {
            0 => out.push_str(&format!(
                "2026-11-{:02}T{:02}:{:02}:{:02}.{:03}Z INFO request_id={:016x} user={} latency_ms={} status={}\n",
                1 + r.below(28), r.below(24), r.below(60), r.below(60), r.below(1000),
                r.next() << 20 | r.next(), r.pick(WORDS), r.below(900), 200 + r.below(300)
            )),
            1 => out.push_str(&format!(
                "SELECT id, amount, created_at FROM payments WHERE account_id = {} AND amount > {}.{:02} ORDER BY created_at DESC LIMIT {};\n",
                r.below(10_000_000), r.below(100_000), r.below(100), 1 + r.below(100)
            )),
            2 => out.push_str(&format!(
                "{{\"order\":\"ORD-{:08}\",\"amount\":\"{},{:03}.{:02}\",\"sku\":\"{:x}\",\"ip\":\"10.{}.{}.{}\",\"ver\":\"{}.{}.{}\"}}\n",
                r.below(100_000_000), r.below(1000), r.below(1000), r.below(100), r.next(),
                r.below(256), r.below(256), r.below(256), r.below(10), r.below(30), r.below(100)
            )),
            _ => {
                for _ in 0..(8 + r.below(20)) {
                    out.push_str(r.pick(WORDS));
                    out.push(' ');
                }
                out.push_str(&format!("ref {} on {}/{}/2026.\n", r.below(1_000_000), 1 + r.below(12), 1 + r.below(28)));
            }
        }
        if r.below(6) == 0 {
            out.push_str("contact: ");
            out.push_str(r.pick(SENSITIVE));
            out.push('\n');
        }
    }
    out.into_bytes()
}

fn detectors(c: &mut Criterion) {
    let text = mixed_text(4 << 20);
    let masker = Masker::all(Strategy::Partial, HashKey::new(b"bench".to_vec()));
    let mut group = c.benchmark_group("detectors");
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.sample_size(20);
    let mut findings = Vec::new();
    group.bench_function("find, every default detector, 4 MiB mixed text", |b| {
        b.iter(|| {
            masker.find(black_box(&text), &mut findings);
            black_box(findings.len())
        })
    });
    // Field by field, as a result streams: 64-byte values.
    group.bench_function("mask in place, 64-byte fields", |b| {
        let mut copy = text.clone();
        b.iter(|| {
            copy.copy_from_slice(&text);
            let mut counts = Counts::default();
            for field in copy.chunks_mut(64) {
                black_box(masker.mask_in_place(field, &mut findings, &mut counts));
            }
            black_box(counts.total())
        })
    });
    group.finish();
}

criterion_group!(benches, detectors);
criterion_main!(benches);

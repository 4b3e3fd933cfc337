//! Cost of classifying typical statements (run: cargo bench -p gatehouse-inspect).
//! Plain std timing: prints the median of several rounds in ns per classification.

use gatehouse_inspect::sql::{classify, Classifier};
use std::hint::black_box;
use std::time::Instant;

fn main() {
    let cases = [
        ("pgbench -S", "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;"),
        ("prepared select", "SELECT abalance FROM pgbench_accounts WHERE aid = $1"),
        ("pgbench update", "UPDATE pgbench_accounts SET abalance = abalance + -4211 WHERE aid = 83311;"),
        ("insert", "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (4, 1, 12, 311, CURRENT_TIMESTAMP);"),
        ("join", "SELECT c.name, sum(o.total) FROM customers c JOIN orders o ON o.customer_id = c.id WHERE o.created_at > now() - interval '7 days' GROUP BY c.name ORDER BY 2 DESC LIMIT 20"),
        ("unparsable", "SELECT FROM WHERE (( garbage"),
    ];
    for (name, sql) in cases {
        let mut rounds = Vec::new();
        for _ in 0..7 {
            let n = 20_000;
            let start = Instant::now();
            for _ in 0..n {
                black_box(classify(black_box(sql)));
            }
            rounds.push(start.elapsed().as_nanos() as f64 / n as f64);
        }
        rounds.sort_by(f64::total_cmp);
        let parsed = rounds[3];
        // The per-session cache: statements of one shape with changing literals.
        let mut classifier = Classifier::default();
        let variants: Vec<String> = (0..1000)
            .map(|i| sql.replace("48213", &i.to_string()))
            .collect();
        let mut cached = Vec::new();
        for _ in 0..7 {
            let n = 20_000;
            let start = Instant::now();
            for i in 0..n {
                black_box(classifier.classify(black_box(&variants[i % variants.len()])));
            }
            cached.push(start.elapsed().as_nanos() as f64 / n as f64);
        }
        cached.sort_by(f64::total_cmp);
        println!(
            "{name:<16} parse {parsed:>8.0} ns   cached {:>6.0} ns   (medians of 7)",
            cached[3]
        );
    }
}

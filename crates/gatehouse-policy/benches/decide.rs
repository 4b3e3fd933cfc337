//! Per-statement cost of the guardrails with the bank baseline (examples/bank-baseline.yaml):
//! parsing with PostgreSQL's grammar, with and without the per-session shape cache, and rule
//! evaluation alone. Run: cargo bench -p gatehouse-policy. Prints medians of 7 rounds.

use gatehouse_inspect::sql::{classify, Classifier};
use gatehouse_policy::config::from_yaml;
use gatehouse_policy::{Caller, Request, RuleSet};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

fn median(mut f: impl FnMut() -> f64) -> f64 {
    let mut rounds: Vec<f64> = (0..7).map(|_| f()).collect();
    rounds.sort_by(f64::total_cmp);
    rounds[3]
}

fn main() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/bank-baseline.yaml"
    );
    let rules: RuleSet = from_yaml(&std::fs::read_to_string(path).unwrap()).unwrap();
    let groups = vec!["developers".to_owned()];
    let claims = BTreeMap::new();
    let cases = [
        ("pgbench -S", "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;"),
        ("pgbench update", "UPDATE pgbench_accounts SET abalance = abalance + -4211 WHERE aid = 48213;"),
        ("join", "SELECT c.name, sum(o.total) FROM customers c JOIN orders o ON o.customer_id = c.id WHERE o.created_at > now() - interval '7 days' GROUP BY c.name ORDER BY 2 DESC LIMIT 20"),
        ("cte delete", "WITH gone AS (DELETE FROM sessions WHERE id = 48213 RETURNING *) SELECT count(*) FROM gone"),
    ];
    println!("{} rules, policy {}", rules.len(), &rules.hash()[..16]);
    for (name, sql) in cases {
        let n = 20_000;
        let parse = median(|| {
            let start = Instant::now();
            for _ in 0..n {
                black_box(classify(black_box(sql)));
            }
            start.elapsed().as_nanos() as f64 / n as f64
        });
        let variants: Vec<String> = (0..1000)
            .map(|i| sql.replace("48213", &i.to_string()))
            .collect();
        let mut classifier = Classifier::default();
        let cached = median(|| {
            let start = Instant::now();
            for i in 0..n {
                black_box(classifier.classify(black_box(&variants[i % variants.len()])));
            }
            start.elapsed().as_nanos() as f64 / n as f64
        });
        let c = classify(sql);
        let decide = median(|| {
            let start = Instant::now();
            for _ in 0..n {
                black_box(rules.decide(&Request {
                    caller: Caller {
                        principal: "key:dev",
                        subject: "key:dev",
                        groups: &groups,
                        actors: &[],
                        claims: &claims,
                        granted: false,
                    },
                    connection: "demo",
                    statements: &c.detail,
                    unseen: None,
                    now: time::OffsetDateTime::now_utc(),
                }));
            }
            start.elapsed().as_nanos() as f64 / n as f64
        });
        println!(
            "{name:<16} parse {parse:>8.0} ns   cached {cached:>6.0} ns   rules {decide:>6.0} ns"
        );
    }
}

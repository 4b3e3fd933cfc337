//! Verifies one log file and prints how long it took, for profiling verification alone:
//! `cargo run --release -p gatehouse-audit --example verify_log -- FILE [VKEY]`.

use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: verify_log FILE [VKEY]");
        std::process::exit(2);
    };
    let verifier = args
        .next()
        .map(|v| gatehouse_tlog::Verifier::parse(&v).expect("a verifier key"));
    let options = gatehouse_audit::VerifyOptions {
        verifier,
        state: None,
    };
    let start = Instant::now();
    match gatehouse_audit::verify_with(&path, &options) {
        Ok(report) => {
            let secs = start.elapsed().as_secs_f64();
            println!(
                "{} records, {} checkpoints in {secs:.2} s: {:.0} records/s",
                report.records,
                report.checkpoints.count,
                report.records as f64 / secs
            );
        }
        Err(e) => {
            eprintln!("NOT INTACT: {e}");
            std::process::exit(1);
        }
    }
}

use gatehouse_inspect::sql::classify;

#[test]
fn probe() {
    let text = std::fs::read_to_string("/tmp/probe.sql").unwrap();
    for sql in text.split("\n====\n") {
        let c = classify(sql);
        println!("### {sql}\nkind={:?} parsed={} n={}", c.kind, c.parsed, c.statements);
        for s in c.detail.iter() {
            println!("  {:?}", s);
        }
    }
}

use crate::harness::*;

#[test]
fn psql_through_the_gateway_with_scram_upstream() {
    let (_cluster, gateway) = cluster_and_gateway();
    let out = gateway.psql("main", "SELECT 40 + 2");
    assert_eq!(out.trim(), "42");
    let events = gateway.statements();
    let stmt = events.first().expect("statement event");
    assert_eq!(stmt["what"]["statement"], "SELECT 40 + 2");
    assert_eq!(stmt["what"]["classification"], "read");
    assert_eq!(stmt["who"]["subject"], "key:bootstrap-admin");
    assert_eq!(stmt["outcome"]["rows"], 1);
}

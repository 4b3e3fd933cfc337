//! End-to-end tests of `parse`: real YAML in, errors checked as the user sees them.

use std::env::VarError;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

fn env(name: &str) -> Result<String, VarError> {
    match name {
        "DEMO_PG_PASSWORD" => Ok("pg-s3cret".into()),
        _ => Err(VarError::NotPresent),
    }
}

fn parse_at(text: &str, path: &Path) -> Result<Config, ConfigError> {
    parse_with_env(text, path, &env)
}

/// Parses `text` as `/etc/gatehouse/gatehouse.yaml` and returns the rendered error.
fn error_of(text: &str) -> String {
    match parse_at(text, Path::new("/etc/gatehouse/gatehouse.yaml")) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e.to_string().replace("/etc/gatehouse/", ""),
    }
}

const MINIMAL: &str = "\
connections:
  demo:
    protocol: postgres
    upstream:
      host: 127.0.0.1
      database: postgres
      user: postgres
    allow:
      groups: [developers]
";

#[test]
fn quickstart_example_parses_cleanly() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart.yaml");
    let config = load(&path).expect("examples/quickstart.yaml must be valid");
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    assert!(config.data_dir.is_absolute());
    assert!(config.data_dir.ends_with(".gatehouse-data"));
    assert_eq!(config.postgres.listen.to_string(), "127.0.0.1:15432");
    assert_eq!(config.postgres.tls, None);
    let demo = &config.connections["demo"];
    assert_eq!(demo.protocol, Protocol::Postgres);
    assert_eq!(
        (demo.upstream.host.as_str(), demo.upstream.port),
        ("127.0.0.1", 5432)
    );
    assert_eq!(demo.upstream.database, "postgres");
    assert_eq!(demo.upstream.user, "postgres");
    assert_eq!(demo.upstream.password, None);
    assert!(demo.allow.groups.iter().any(|g| g == "gatehouse-admins"));
    assert!(config
        .admin
        .admin_groups
        .iter()
        .any(|g| g == "gatehouse-admins"));
}

#[test]
fn defaults_fill_an_almost_empty_file() {
    let config = parse_at(MINIMAL, Path::new("/srv/gh/gatehouse.yaml")).unwrap();
    assert_eq!(config.source, Path::new("/srv/gh/gatehouse.yaml"));
    assert_eq!(config.data_dir, Path::new("/srv/gh/data"));
    assert_eq!(config.audit.dir, Path::new("/srv/gh/data/audit"));
    assert_eq!(config.audit.fsync, Fsync::Always);
    assert_eq!(
        config.state,
        StateConfig::Sqlite {
            path: "/srv/gh/data/state.db".into()
        }
    );
    assert_eq!(config.log.level, LogLevel::Info);
    assert_eq!(config.log.format, LogFormat::Text);
    assert_eq!(config.admin.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(config.admin.admin_groups, vec!["gatehouse-admins"]);
    assert!(config.auth.api_keys.enabled);
    assert!(config.auth.oidc.is_empty());
    assert_eq!(config.postgres.require_tls, RequireTls::NonLoopback);
    assert_eq!(config.postgres.handshake_timeout, Duration::from_secs(10));
    assert_eq!(
        config.postgres.idle_timeout,
        Some(Duration::from_secs(1800))
    );
    let up = &config.connections["demo"].upstream;
    assert_eq!(up.port, 5432);
    assert_eq!(up.tls.mode, UpstreamTlsMode::Prefer);
    assert!(config.warnings.is_empty());

    let empty = parse_at("", Path::new("/srv/gh/g.yaml")).unwrap();
    assert!(empty.connections.is_empty());
}

#[test]
fn full_shape_parses() {
    let text = "\
data_dir: /var/lib/gatehouse
log: { level: debug, format: json }
admin:
  listen: 127.0.0.1:9090
  admin_groups: [ops]
audit:
  dir: /var/log/gatehouse
  fsync: always
state:
  sqlite: { path: /var/lib/gatehouse/s.db }
auth:
  api_keys: { enabled: false }
  oidc:
    - issuer: https://idp.example.com
      audiences: [gatehouse]
      groups_claim: roles
      subject_claim: email
      algorithms: [ES256, ES256, EdDSA]
      clock_skew: 30s
      jwks_refetch_cooldown: 1m
      ca_file: null
postgres:
  listen: '[::1]:15432'
  require_tls: never
  handshake_timeout: 500ms
  idle_timeout: 0
connections:
  demo:
    protocol: postgres
    upstream:
      host: db.internal
      port: 6432
      database: app
      user: gatehouse
      password: ${env:DEMO_PG_PASSWORD}
      tls: { mode: verify-full, server_name: db.example.com }
    allow:
      subjects: [\"key:ci-deploy\"]
      any_authenticated: true
";
    let c = parse_at(text, Path::new("/etc/g.yaml")).unwrap();
    assert_eq!(c.log.level, LogLevel::Debug);
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(c.audit.dir, Path::new("/var/log/gatehouse"));
    assert!(!c.auth.api_keys.enabled);
    let o = &c.auth.oidc[0];
    assert_eq!(o.groups_claim, "roles");
    assert_eq!(o.subject_claim, "email");
    assert_eq!(o.algorithms, vec![JwtAlgorithm::ES256, JwtAlgorithm::EdDSA]);
    assert_eq!(o.clock_skew, Duration::from_secs(30));
    assert_eq!(o.jwks_refetch_cooldown, Duration::from_secs(60));
    assert_eq!(c.postgres.listen.to_string(), "[::1]:15432");
    assert_eq!(c.postgres.handshake_timeout, Duration::from_millis(500));
    assert_eq!(c.postgres.idle_timeout, None);
    let up = &c.connections["demo"].upstream;
    assert_eq!(up.password.as_ref().map(Secret::expose), Some("pg-s3cret"));
    assert_eq!(up.tls.mode, UpstreamTlsMode::VerifyFull);
    assert_eq!(up.tls.server_name.as_deref(), Some("db.example.com"));
    assert!(c.connections["demo"].allow.any_authenticated);
    assert!(
        !format!("{c:?}").contains("pg-s3cret"),
        "Debug leaks the secret"
    );
}

#[test]
fn unknown_key_at_depth_names_line_and_key() {
    let text = MINIMAL.replace(
        "      user: postgres\n",
        "      user: postgres\n      passwrd: x\n",
    );
    assert_eq!(
        error_of(&text),
        "gatehouse.yaml:8: connections.demo.upstream.passwrd: unknown key, expected one of \
         `host`, `port`, `database`, `user`, `password`, `tls`, `auth`"
    );
    assert_eq!(
        error_of("lgo: {}\n"),
        "gatehouse.yaml:1: lgo: unknown key, expected one of `data_dir`, `log`, `admin`, \
         `audit`, `state`, `auth`, `postgres`, `connections`, `policy`, `notifications`, \
         `recording`"
    );
}

#[test]
fn type_error_names_line_and_key() {
    let text = MINIMAL.replace("      database:", "      port: x\n      database:");
    assert_eq!(
        error_of(&text),
        "gatehouse.yaml:6: connections.demo.upstream.port: invalid type: string \"x\", expected u16"
    );
    let text = MINIMAL.replace("      database:", "      port: 70000\n      database:");
    assert!(error_of(&text).starts_with("gatehouse.yaml:6: connections.demo.upstream.port: "));
}

#[test]
fn yaml_syntax_error_has_a_line() {
    let err = error_of("log:\n  level: info\n bad: [\n");
    assert!(err.starts_with("gatehouse.yaml:3: "), "{err}");
}

#[test]
fn value_errors_raised_while_reading_keep_their_line() {
    let cases = [
        ("postgres:\n  idle_timeout: 30\n", "gatehouse.yaml:2: postgres.idle_timeout: duration \"30\" needs a unit"),
        ("postgres:\n  listen: localhost:5\n", "gatehouse.yaml:2: postgres.listen: invalid listen address \"localhost:5\""),
        ("log:\n  format: xml\n", "gatehouse.yaml:2: log.format: unknown variant `xml`"),
        (
            "auth:\n  oidc:\n    - issuer: https://i.example.com\n      audiences: [a]\n      algorithms: [RS256, HS256]\n",
            "gatehouse.yaml:5: auth.oidc[0].algorithms[1]: algorithm \"HS256\": shared-secret",
        ),
        ("auth:\n  oidc:\n    - issuer: https://i.example.com\n", "gatehouse.yaml:3: auth.oidc[0]: missing field `audiences`"),
    ];
    for (text, want) in cases {
        let err = error_of(text);
        assert!(err.starts_with(want), "got {err:?}\nwant {want:?}");
    }
}

#[test]
fn missing_env_secret_names_key_and_variable() {
    let text = MINIMAL.replace(
        "      user: postgres\n",
        "      user: postgres\n      password: ${env:NOT_SET_ANYWHERE}\n",
    );
    assert_eq!(
        error_of(&text),
        "gatehouse.yaml:8: connections.demo.upstream.password: environment variable \
         NOT_SET_ANYWHERE is not set"
    );
}

#[test]
fn inline_password_is_rejected_without_echoing_it() {
    for value in ["hunter2", "123456", "true", "\"${env:X}tail\""] {
        let text = MINIMAL.replace(
            "      user: postgres\n",
            &format!("      user: postgres\n      password: {value}\n"),
        );
        let err = error_of(&text);
        assert!(
            err.starts_with("gatehouse.yaml:8: connections.demo.upstream.password: "),
            "{err}"
        );
        assert!(
            !err.contains(value.trim_matches('"')),
            "secret echoed: {err}"
        );
    }
    let text = MINIMAL.replace(
        "      user: postgres\n",
        "      user: postgres\n      password: hunter2\n",
    );
    assert!(error_of(&text).contains("secrets must be references"));
}

#[test]
fn relative_paths_resolve_against_the_config_directory() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("etc/tls")).unwrap();
    for f in ["etc/tls/gw.crt", "etc/tls/gw.key", "etc/tls/ca.pem"] {
        std::fs::write(root.join(f), "pem").unwrap();
    }
    std::fs::write(root.join("etc/pg.pass"), "from-file\n").unwrap();
    let text = "\
data_dir: ../var
audit: { dir: ./audit-log }
state:
  sqlite:
    path: state/gh.db
postgres:
  tls:
    cert_file: tls/gw.crt
    key_file: ./tls/gw.key
connections:
  demo:
    protocol: postgres
    upstream:
      host: 127.0.0.1
      database: postgres
      user: postgres
      password: ${file:pg.pass}
      tls:
        mode: verify-full
        ca_file: tls/ca.pem
    allow:
      groups: [developers]
";
    let etc = root.join("etc");
    let c = parse_at(text, &etc.join("gatehouse.yaml")).unwrap();
    assert_eq!(c.data_dir, etc.join("../var"));
    assert_eq!(c.audit.dir, etc.join("audit-log"));
    assert_eq!(
        c.state,
        StateConfig::Sqlite {
            path: etc.join("state/gh.db")
        }
    );
    let tls = c.postgres.tls.unwrap();
    assert_eq!(tls.cert_file, etc.join("tls/gw.crt"));
    assert_eq!(tls.key_file, etc.join("tls/gw.key"));
    let up = &c.connections["demo"].upstream;
    assert_eq!(up.tls.ca_file, Some(etc.join("tls/ca.pem")));
    assert_eq!(up.password.as_ref().map(Secret::expose), Some("from-file"));
}

#[test]
fn relative_config_path_still_gives_absolute_paths() {
    let c = parse_at(MINIMAL, Path::new("gatehouse.yaml")).unwrap();
    assert!(c.source.is_absolute());
    assert_eq!(c.data_dir, std::env::current_dir().unwrap().join("data"));
}

#[test]
fn semantic_errors_are_all_reported_with_lines() {
    let text = "\
postgres:
  tls:
    cert_file: /nonexistent/gw.crt
  require_tls: always
auth:
  oidc:
    - issuer: http://idp.example.com
      audiences: []
connections:
  'bad name':
    protocol: postgres
    upstream:
      host: h
      port: 0
      database: d
      user: u
    allow: {}
  nobody:
    protocol: postgres
    upstream: { host: h, database: d, user: u }
";
    let err = error_of(text);
    let want = [
        "gatehouse.yaml:2: postgres.tls: cert_file is set but key_file is missing: set both",
        "gatehouse.yaml:4: postgres.require_tls: always needs postgres.tls",
        "gatehouse.yaml:7: auth.oidc[0].issuer: issuer must use https",
        "gatehouse.yaml:8: auth.oidc[0].audiences: list at least one audience",
        "gatehouse.yaml:10: connections.bad name: connection names are non-empty",
        "gatehouse.yaml:14: connections.bad name.upstream.port: must be between 1 and 65535",
        "gatehouse.yaml:17: connections.bad name.allow: nobody may use this connection",
        "gatehouse.yaml:18: connections.nobody.allow: nobody may use this connection",
    ];
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), want.len(), "{err}");
    for (line, want) in lines.iter().zip(want) {
        assert!(line.starts_with(want), "got {line:?}\nwant {want:?}");
    }
}

#[test]
fn missing_tls_file_is_an_error() {
    let text = "postgres:\n  tls:\n    cert_file: nope.crt\n    key_file: nope.key\n";
    let err = error_of(text);
    assert!(
        err.starts_with("gatehouse.yaml:3: postgres.tls.cert_file: file not found: "),
        "{err}"
    );
    assert!(
        err.contains("\ngatehouse.yaml:4: postgres.tls.key_file: file not found"),
        "{err}"
    );
}

#[test]
fn risky_settings_produce_warnings() {
    let text = format!(
        "{MINIMAL}admin:\n  listen: 0.0.0.0:8080\naudit:\n  fsync: never\npostgres:\n  listen: 0.0.0.0:15432\n"
    );
    let c = parse_at(&text, Path::new("/g.yaml")).unwrap();
    let keys: Vec<&str> = c.warnings.iter().map(|w| w.key.as_str()).collect();
    assert_eq!(keys, ["admin.listen", "audit.fsync", "postgres.listen"]);
    assert_eq!(c.warnings[0].line, Some(11));
}

#[test]
fn duplicate_connection_names_are_refused() {
    let text = format!("{MINIMAL}{}", &MINIMAL["connections:\n".len()..]);
    assert_eq!(
        error_of(&text),
        "gatehouse.yaml:2: connections: \"demo\" is defined twice"
    );
}

#[test]
fn unreadable_file_names_the_path() {
    let err = load(Path::new("/nonexistent/gatehouse.yaml")).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(err
        .to_string()
        .starts_with("/nonexistent/gatehouse.yaml: cannot read config file"));
}

#[test]
fn issue_without_line_or_key_renders_compactly() {
    let issue = Issue {
        file: PathBuf::from("g.yaml"),
        line: None,
        key: String::new(),
        message: "m".into(),
    };
    assert_eq!(issue.to_string(), "g.yaml: m");
}

#[test]
fn a_password_to_a_remote_host_without_verified_tls_is_warned_about() {
    let text = "connections:\n  remote:\n    protocol: postgres\n    upstream:\n      host: db.example.com\n      database: postgres\n      user: app\n      password: ${env:DEMO_PG_PASSWORD}\n      tls: { mode: prefer }\n      auth: [scram-sha-256, password]\n    allow:\n      groups: [developers]\n";
    let c = parse_at(text, Path::new("/g.yaml")).unwrap();
    let keys: Vec<&str> = c.warnings.iter().map(|w| w.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "connections.remote.upstream.tls.mode",
            "connections.remote.upstream.auth"
        ]
    );
    assert!(c.warnings[0].message.contains("verify-full"));
    assert_eq!(
        c.connections["remote"].upstream.auth,
        [UpstreamAuth::ScramSha256, UpstreamAuth::Password]
    );
    // The default is SCRAM only.
    let c = parse_at(MINIMAL, Path::new("/g.yaml")).unwrap();
    assert_eq!(
        c.connections["demo"].upstream.auth,
        [UpstreamAuth::ScramSha256]
    );
}

#[test]
fn subjects_must_say_how_they_authenticate() {
    let text = MINIMAL.replace("groups: [developers]", "subjects: [alice]");
    let err = error_of(&text);
    assert!(err.contains("connections.demo.allow.subjects"), "{err}");
    assert!(err.contains("key:<name> for an API key"), "{err}");
    for ok in ["key:ci", "https://idp.example.com#alice"] {
        let text = MINIMAL.replace("groups: [developers]", &format!("subjects: [\"{ok}\"]"));
        parse_at(&text, Path::new("/g.yaml")).unwrap();
    }
}

#[test]
fn message_and_handshake_limits() {
    let text = format!("{MINIMAL}postgres:\n  max_message: 64MiB\n  max_handshakes: 100\n  max_handshakes_per_source: 10\n  first_packet_timeout: 2s\n");
    let c = parse_at(&text, Path::new("/g.yaml")).unwrap();
    assert_eq!(c.postgres.max_message, 64 << 20);
    assert_eq!(
        (
            c.postgres.max_handshakes,
            c.postgres.max_handshakes_per_source
        ),
        (100, 10)
    );
    assert_eq!(c.postgres.first_packet_timeout, Duration::from_secs(2));
    let err = error_of(&format!("{MINIMAL}postgres:\n  max_message: 2GiB\n"));
    assert!(err.contains("postgres.max_message"), "{err}");
    let err = error_of(&format!(
        "{MINIMAL}postgres:\n  max_handshakes: 4\n  max_handshakes_per_source: 8\n"
    ));
    assert!(err.contains("max_handshakes_per_source"), "{err}");
}

#[test]
fn webhooks_are_checked() {
    let text = format!(
        "{MINIMAL}notifications:\n  webhooks:\n    - name: a\n      url: ftp://x\n      format: standard\n    - name: a\n      url: http://x\n      format: slack\n      events: [approval.requested, approval.maybe]\n"
    );
    let errors = error_of(&text);
    assert!(
        errors.contains("notifications.webhooks[0].url: a webhook URL starts with http"),
        "{errors}"
    );
    assert!(
        errors.contains("notifications.webhooks[0].secret: a standard webhook is signed"),
        "{errors}"
    );
    assert!(
        errors.contains("notifications.webhooks[1].name: webhook names are non-empty and unique"),
        "{errors}"
    );
    assert!(
        errors.contains("\"approval.maybe\" is not an approval event"),
        "{errors}"
    );
}

#[test]
fn witnesses_are_checked() {
    let key = gatehouse_tlog::Cosigner::from_seed("w.example/1", &[5u8; 32])
        .unwrap()
        .verifier()
        .to_string();
    let log_key = gatehouse_tlog::Signer::from_seed("w.example/2", &[5u8; 32])
        .unwrap()
        .verifier()
        .to_string();
    let good = format!(
        "{MINIMAL}audit:\n  witnesses:\n    - url: http://127.0.0.1:7380/\n      key: {key}\n"
    );
    let config = parse_at(&good, Path::new("/etc/gatehouse/gatehouse.yaml")).unwrap();
    let witness = &config.audit.witnesses[0];
    assert_eq!(witness.url, "http://127.0.0.1:7380");
    assert_eq!(witness.key.name(), "w.example/1");
    assert_eq!(witness.timeout, Duration::from_secs(10));

    let bad = format!(
        "{MINIMAL}audit:\n  checkpoints:\n    enabled: false\n  witnesses:\n    - url: ftp://x\n      key: {key}\n    - url: http://y\n      key: {log_key}\n      timeout: 0s\n    - url: http://z\n      key: {key}\n    - url: https://z2\n      key: {key}\n    - url: https://u:secret@z3\n      key: {key}\n"
    );
    let errors = error_of(&bad);
    assert!(
        errors.contains("audit.witnesses.0.url: must be an http:// or https:// URL"),
        "{errors}"
    );
    assert!(
        errors.contains(
            "audit.witnesses.4.url: must be an http:// or https:// URL without credentials"
        ),
        "{errors}"
    );
    assert!(!errors.contains("secret"), "{errors}");
    // A log's key (type 0x01) is not a witness's.
    assert!(
        errors.contains("audit.witnesses.1.key: not a witness key"),
        "{errors}"
    );
    assert!(
        errors.contains("audit.witnesses.1.timeout: must be between"),
        "{errors}"
    );
    assert!(
        errors.contains("each witness key may be listed once"),
        "{errors}"
    );
    assert!(
        errors.contains("witnesses cosign checkpoints: turn audit.checkpoints on"),
        "{errors}"
    );
}

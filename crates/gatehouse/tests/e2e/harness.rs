//! Test harness: a throwaway PostgreSQL cluster (initdb/pg_ctl, SCRAM, md5 and TLS) and a real
//! `gatehouse serve` process in front of it. Nothing here is mocked.

#![allow(dead_code)]

use serde_json::Value;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tokio_postgres::{Client, NoTls};

/// Passwords of the throwaway cluster's roles. Tests assert these never leak.
pub const SUPER_PASSWORD: &str = "Sup3r-Secret-Upstream-Pw!";
pub const SCRAM_PASSWORD: &str = "scram-Only-Pw-7f3a";
pub const MD5_PASSWORD: &str = "md5-Only-Pw-19c2";

/// Process output as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// A small tmpfs, for filling a disk on purpose; unmounted when dropped. Needs root.
pub struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` (e.g. `512k`, `256m`).
    pub fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount");
        assert!(status.success(), "mount");
        SmallDisk { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Where a PostgreSQL server binary is: on PATH, else Debian's versioned directory.
fn pg_binary(program: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(program))
                .find(|f| f.exists())
        })
        .unwrap_or_default();
    on_path.unwrap_or_else(|| {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .map(|r| {
                r.filter_map(|e| e.ok())
                    .map(|e| e.path().join("bin"))
                    .collect()
            })
            .unwrap_or_default();
        dirs.sort();
        dirs.pop()
            .map(|d| d.join(program))
            .unwrap_or_else(|| PathBuf::from(program))
    })
}

/// Runs a PostgreSQL server binary, as the `postgres` user when we are root (initdb refuses root).
fn pg_command(program: &str) -> Command {
    let program = pg_binary(program);
    let program = program.to_str().expect("utf-8 path");
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", program]);
        c
    } else {
        Command::new(program)
    }
}

fn run(mut cmd: Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

/// Writes a self-signed certificate for localhost and 127.0.0.1 and its key, both PEM.
pub fn write_self_signed(cert_file: &Path, key_file: &Path) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("cert");
    std::fs::write(cert_file, cert.cert.pem()).expect("cert");
    std::fs::write(key_file, cert.key_pair.serialize_pem()).expect("key");
}

/// A psql command (`-X -At`, no ON_ERROR_STOP) for `url`, still to be given its arguments.
pub fn psql_command(url: &str) -> Command {
    let mut c = Command::new("psql");
    c.args(["-X", "-At"]).arg(url);
    c
}

/// A private PostgreSQL cluster on a free port, stopped on drop.
pub struct PgCluster {
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub socket_dir: PathBuf,
    /// The server certificate (self-signed, for localhost and 127.0.0.1), PEM.
    pub cert_file: PathBuf,
}

impl PgCluster {
    pub fn start() -> PgCluster {
        let dir = tempfile::Builder::new()
            .prefix("gh-pg-")
            .tempdir()
            .expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
        let data = dir.path().join("data");
        let socket_dir = dir.path().to_path_buf();
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, SUPER_PASSWORD).expect("pwfile");
        std::fs::set_permissions(&pwfile, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let mut initdb = pg_command("initdb");
        initdb
            .args(["-D"])
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()));
        run(initdb);

        let cert_file = dir.path().join("server.crt");
        let key_file = data.join("server.key");
        write_self_signed(&cert_file, &key_file);
        std::fs::set_permissions(&cert_file, std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
        if is_root() {
            run({
                let mut c = Command::new("chown");
                c.args(["postgres:postgres"]).arg(&key_file).arg(&cert_file);
                c
            });
        }
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");

        let port = free_port();
        let conf = format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{sock}'\nssl = on\nssl_cert_file = '{cert}'\nssl_key_file = 'server.key'\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 300\nshared_buffers = 64MB\n",
            sock = socket_dir.display(),
            cert = cert_file.display(),
        );
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .expect("conf");
        f.write_all(conf.as_bytes()).expect("conf");
        let hba = "local all all trust\n\
                   hostssl all tls_only 127.0.0.1/32 scram-sha-256\n\
                   hostnossl all tls_only 127.0.0.1/32 reject\n\
                   host all md5_user 127.0.0.1/32 md5\n\
                   host all all 127.0.0.1/32 scram-sha-256\n";
        std::fs::write(data.join("pg_hba.conf"), hba).expect("hba");

        let mut start = pg_command("pg_ctl");
        start
            .args(["-D"])
            .arg(&data)
            .args(["-l"])
            .arg(dir.path().join("log"))
            .args(["-w", "-t", "60", "start"]);
        run(start);
        let cluster = PgCluster {
            port,
            dir,
            socket_dir,
            cert_file,
        };
        cluster.psql_admin(&format!(
            "CREATE ROLE scram_user LOGIN PASSWORD '{SCRAM_PASSWORD}';\
             CREATE ROLE tls_only LOGIN PASSWORD '{SCRAM_PASSWORD}';\
             SET password_encryption = 'md5'; CREATE ROLE md5_user LOGIN PASSWORD '{MD5_PASSWORD}';\
             GRANT ALL ON SCHEMA public TO PUBLIC;"
        ));
        cluster
    }

    /// Runs SQL as the superuser over the Unix socket (trust), bypassing the gateway.
    pub fn psql_admin(&self, sql: &str) -> String {
        let out = run({
            let mut c = Command::new("psql");
            c.args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h"])
                .arg(&self.socket_dir)
                .args([
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                    "-d",
                    "postgres",
                    "-c",
                    sql,
                ]);
            c
        });
        text(&out.stdout)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let mut stop = pg_command("pg_ctl");
        stop.args(["-D"])
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"]);
        let _ = stop.stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}

/// Builds a gateway configuration.
#[derive(Default)]
pub struct GatewayBuilder {
    connections: Vec<String>,
    /// `upstream.auth` for the connections added after [`GatewayBuilder::upstream_auth`].
    upstream_auth: Option<String>,
    /// `audit.dir`, when not under the data directory.
    audit_dir: Option<PathBuf>,
    postgres_extra: String,
    admin_extra: String,
    top_extra: String,
    env: Vec<(String, String)>,
}

impl GatewayBuilder {
    /// A connection to `cluster` as `user` (password held in an env var), open to the
    /// `developers` and `gatehouse-admins` groups. `tls_mode` is the upstream sslmode.
    pub fn pg_connection(
        mut self,
        name: &str,
        cluster: &PgCluster,
        user: &str,
        password: Option<&str>,
        tls_mode: &str,
    ) -> Self {
        let password_line = match password {
            Some(pw) => {
                let var = format!("GH_TEST_PW_{}", name.to_uppercase().replace('-', "_"));
                self.env.push((var.clone(), pw.to_owned()));
                format!("      password: ${{env:{var}}}\n")
            }
            None => String::new(),
        };
        let auth_line = self
            .upstream_auth
            .as_ref()
            .map(|methods| format!("      auth: {methods}\n"))
            .unwrap_or_default();
        self.connections.push(format!(
            "  {name}:\n    protocol: postgres\n    upstream:\n      host: 127.0.0.1\n      port: {port}\n      database: postgres\n      user: {user}\n{password_line}{auth_line}      tls: {{ mode: {tls_mode}, ca_file: {ca} }}\n    allow:\n      groups: [developers, gatehouse-admins]\n",
            port = cluster.port,
            ca = cluster.cert_file.display(),
        ));
        self
    }

    /// An `audit:` section with `dir` and `extra` keys (each line indented two spaces).
    pub fn audit(mut self, dir: &Path, extra: &str) -> Self {
        self.top_extra
            .push_str(&format!("audit:\n  dir: {}\n{extra}", dir.display()));
        self.audit_dir = Some(dir.to_path_buf());
        self
    }

    /// `upstream.auth` (a YAML list such as `[scram-sha-256, md5]`) for the connections added
    /// from now on.
    pub fn upstream_auth(mut self, methods: &str) -> Self {
        self.upstream_auth = Some(methods.to_owned());
        self
    }

    /// A `pg_connection` to `cluster` for each (name, upstream user, held password, upstream
    /// sslmode).
    pub fn pg_connections(
        self,
        cluster: &PgCluster,
        connections: &[(&str, &str, Option<&str>, &str)],
    ) -> Self {
        connections
            .iter()
            .fold(self, |b, &(name, user, password, tls_mode)| {
                b.pg_connection(name, cluster, user, password, tls_mode)
            })
    }

    /// The usual `main` connection: to `cluster` as the superuser (SCRAM), no upstream TLS.
    pub fn main_connection(self, cluster: &PgCluster) -> Self {
        self.pg_connection("main", cluster, "postgres", Some(SUPER_PASSWORD), "disable")
    }

    /// A raw YAML block for one connection (indented under `connections:`).
    pub fn raw_connection(mut self, yaml: &str) -> Self {
        self.connections.push(yaml.to_owned());
        self
    }

    /// Extra keys under `postgres:` (each line indented two spaces).
    pub fn postgres(mut self, yaml: &str) -> Self {
        self.postgres_extra.push_str(yaml);
        self
    }

    /// Extra keys under `admin:` (each line indented two spaces).
    pub fn admin(mut self, yaml: &str) -> Self {
        self.admin_extra.push_str(yaml);
        self
    }

    /// Extra top-level YAML (e.g. an `auth:` section).
    pub fn top(mut self, yaml: &str) -> Self {
        self.top_extra.push_str(yaml);
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn start(self) -> Gateway {
        let dir = tempfile::Builder::new()
            .prefix("gh-gw-")
            .tempdir()
            .expect("tempdir");
        let pg_port = free_port();
        let admin_port = free_port();
        let config = format!(
            "data_dir: ./data\nlog: {{ level: info, format: text }}\nadmin:\n  listen: 127.0.0.1:{admin_port}\n  admin_groups: [gatehouse-admins]\n{admin_extra}postgres:\n  listen: 127.0.0.1:{pg_port}\n{timeout}{pg_extra}{top}connections:\n{conns}",
            // YAML keys may appear once: an explicit `handshake_timeout` replaces the default.
            timeout = if self.postgres_extra.contains("handshake_timeout:") { "" } else { "  handshake_timeout: 5s\n" },
            pg_extra = self.postgres_extra,
            admin_extra = self.admin_extra,
            top = self.top_extra,
            conns = self.connections.join(""),
        );
        let config_path = dir.path().join("gatehouse.yaml");
        std::fs::write(&config_path, &config).expect("config");
        let log_path = dir.path().join("gateway.log");
        let child = spawn_gateway(&config_path, &log_path, &self.env);
        let mut gateway = Gateway {
            child: Some(child),
            dir,
            config_path,
            log_path,
            pg_port,
            admin_port,
            admin_key: String::new(),
            env: self.env,
            audit_dir: self.audit_dir,
        };
        gateway.wait_ready();
        gateway.admin_key = std::fs::read_to_string(gateway.data_dir().join("admin.key"))
            .expect("admin.key")
            .trim()
            .to_owned();
        gateway
    }
}

/// Starts `gatehouse serve` with `config`, appending its output to `log`.
fn spawn_gateway(config: &Path, log: &Path, env: &[(String, String)]) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    cmd.arg("serve")
        .arg("--config")
        .arg(config)
        .stdout(log.try_clone().expect("log"))
        .stderr(log);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn gatehouse")
}

/// A running `gatehouse serve` process, killed on drop.
pub struct Gateway {
    child: Option<Child>,
    env: Vec<(String, String)>,
    audit_dir: Option<PathBuf>,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    pub pg_port: u16,
    pub admin_port: u16,
    pub admin_key: String,
}

impl Gateway {
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder::default()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("gatehouse exited with {status}:\n{}", self.log());
            }
            // The PostgreSQL listener is bound before the admin API, so a healthy admin API
            // means both are up (a raw probe of the PostgreSQL port would be audited).
            if self.http("/healthz", None).0 == 200 {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("gatehouse did not become ready:\n{}", self.log());
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn audit_path(&self) -> PathBuf {
        self.audit_dir
            .clone()
            .unwrap_or_else(|| self.data_dir().join("audit"))
            .join("audit.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// `postgresql://` URL for a credential and connection name (the credential is
    /// percent-encoded).
    pub fn url(&self, credential: &str, connection: &str) -> String {
        self.url_with(credential, connection, "sslmode=disable")
    }

    /// The same with the query string `params` (URL-encoded already) instead.
    pub fn url_with(&self, credential: &str, connection: &str, params: &str) -> String {
        format!(
            "postgresql://tester:{}@127.0.0.1:{}/{connection}?{params}",
            percent(credential),
            self.pg_port
        )
    }

    /// tokio-postgres / libpq key-value connection string.
    pub fn conninfo(&self, credential: &str, connection: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=tester password='{}' dbname={connection} sslmode=disable",
            self.pg_port,
            credential.replace('\\', "\\\\").replace('\'', "\\'")
        )
    }

    /// Runs psql through the gateway with the admin key; returns the output (panics on failure).
    pub fn psql(&self, connection: &str, sql: &str) -> String {
        let out = self.psql_args(connection, &["-c", sql]);
        assert!(
            out.status.success(),
            "psql on {connection} failed: {}\n{}",
            text(&out.stderr),
            self.log()
        );
        text(&out.stdout)
    }

    /// psql through the gateway with the admin key and `args`, whatever the outcome.
    pub fn psql_args(&self, connection: &str, args: &[&str]) -> Output {
        self.psql_raw(&self.admin_key, connection, args)
    }

    pub fn psql_raw(&self, credential: &str, connection: &str, args: &[&str]) -> Output {
        psql_command(&self.url(credential, connection))
            .args(["-v", "ON_ERROR_STOP=1"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("psql")
    }

    /// A tokio-postgres client through the gateway with `credential` on `connection`; the
    /// connection is driven by a spawned task whose result is returned.
    pub async fn pg_client(
        &self,
        credential: &str,
        connection: &str,
    ) -> (
        Client,
        tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
    ) {
        let (client, connection) =
            tokio_postgres::connect(&self.conninfo(credential, connection), NoTls)
                .await
                .expect("connect through the gateway");
        (client, tokio::spawn(connection))
    }

    /// The same with the admin key on `main`.
    pub async fn main_client(
        &self,
    ) -> (
        Client,
        tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
    ) {
        self.pg_client(&self.admin_key, "main").await
    }

    /// A pgbench command through the gateway on `main` with the admin key, given `args`.
    pub fn pgbench(&self, args: &[&str]) -> Command {
        let mut c = Command::new("pgbench");
        c.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.pg_port.to_string(),
            "-U",
            "tester",
        ])
        .args(args)
        .arg("main")
        .env("PGPASSWORD", &self.admin_key)
        .env("PGSSLMODE", "disable");
        c
    }

    /// Runs the gatehouse CLI against this gateway (admin token set).
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_as(&self.admin_key, args)
    }

    /// The CLI with `token` as its credential.
    pub fn cli_as(&self, token: &str, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(args)
            .env(
                "GATEHOUSE_SERVER",
                format!("http://127.0.0.1:{}", self.admin_port),
            )
            .env("GATEHOUSE_TOKEN", token)
            .env("GATEHOUSE_CONFIG", &self.config_path)
            .output()
            .expect("gatehouse cli")
    }

    /// Creates an API key with the CLI and returns it.
    pub fn create_key(&self, name: &str, groups: &[&str]) -> String {
        let mut args = vec!["keys", "create", "--name", name];
        for g in groups {
            args.extend(["--group", g]);
        }
        let out = self.cli(&args);
        assert!(out.status.success(), "keys create: {}", text(&out.stderr));
        text(&out.stdout).trim().to_owned()
    }

    /// `gatehouse audit verify` on this gateway's log (it may be stopped); asserts it passes and
    /// returns its report.
    pub fn assert_audit_verifies(&self) -> String {
        let out = self.audit_verify();
        let stdout = text(&out.stdout);
        assert!(
            out.status.success(),
            "audit verify failed: {stdout}{}",
            text(&out.stderr)
        );
        stdout
    }

    /// `gatehouse audit verify`, whatever the outcome.
    pub fn audit_verify(&self) -> Output {
        self.cli(&[
            "audit",
            "verify",
            "--config",
            self.config_path.to_str().expect("utf-8 path"),
        ])
    }

    /// Every audit record, parsed.
    pub fn audit_events(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.audit_path()).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Every audit record of `kind`.
    pub fn events_of_kind(&self, kind: &str) -> Vec<Value> {
        self.audit_events()
            .into_iter()
            .filter(|e| e["kind"] == kind)
            .collect()
    }

    /// Every `statement` record, each with its outcome as an examiner reads it: a forwarded
    /// statement's record (written `pending` before it reached the server) carries the
    /// outcome of its `statement.result` (and `result_seq`); one with no result stays
    /// `pending`.
    pub fn statements(&self) -> Vec<Value> {
        joined_statements(&self.audit_events())
    }

    /// The `statement` records whose text satisfies `pred`.
    pub fn statements_matching(&self, pred: impl Fn(&str) -> bool) -> Vec<Value> {
        self.statements()
            .into_iter()
            .filter(|e| e["what"]["statement"].as_str().is_some_and(&pred))
            .collect()
    }

    /// The `statement` records of exactly `sql`.
    pub fn statements_with_text(&self, sql: &str) -> Vec<Value> {
        self.statements_matching(|s| s == sql)
    }

    /// The `session.end` records of `session`.
    pub fn session_ends(&self, session: &Value) -> Vec<Value> {
        self.events_of_kind("session.end")
            .into_iter()
            .filter(|e| e["session"] == *session)
            .collect()
    }

    /// Re-reads the audit log every 50 ms until `done` holds for it or `timeout` passes, and
    /// returns the last reading (callers assert on it).
    pub fn audit_events_until(
        &self,
        timeout: Duration,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let events = self.audit_events();
            if done(&events) || Instant::now() >= deadline {
                return events;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until an audit event matches (the log is written before clients see outcomes, but
    /// session ends and protocol errors may land just after the client returns).
    pub fn wait_for_event(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.audit_events_until(Duration::from_secs(10), |events| events.iter().any(&pred))
            .into_iter()
            .find(|e| pred(e))
            .unwrap_or_else(|| panic!("no audit event: {what}"))
    }

    /// Waits until the `statement` record of exactly `sql` and its result are in the audit
    /// log; returns the joined record (see [`Gateway::statements`]).
    pub fn wait_for_statement(&self, sql: &str) -> Value {
        let events = self.audit_events_until(Duration::from_secs(10), |events| {
            joined_statements(events)
                .iter()
                .any(|e| e["what"]["statement"] == sql && e["outcome"]["status"] != "pending")
        });
        joined_statements(&events)
            .into_iter()
            .find(|e| e["what"]["statement"] == sql && e["outcome"]["status"] != "pending")
            .unwrap_or_else(|| panic!("no audit event: statement {sql:?} with its result"))
    }

    /// Waits for `session` to end, lets `settle` pass for any second record to land, and
    /// asserts that it ended exactly once, as a failure.
    pub fn assert_session_ended_once_as_failure(&self, session: &Value, settle: Duration) {
        self.wait_for_event("session.end", |e| {
            e["kind"] == "session.end" && e["session"] == *session
        });
        std::thread::sleep(settle);
        let ends = self.session_ends(session);
        assert_eq!(
            ends.len(),
            1,
            "session.end records for one session: {ends:#?}"
        );
        assert_eq!(ends[0]["outcome"]["status"], "failure");
    }

    /// Minimal HTTP/1.1 GET against the admin API, with a bearer token if given: (status,
    /// head, body). Status 0 when nothing answered.
    pub fn http(&self, path: &str, token: Option<&str>) -> (u16, String, String) {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.admin_port)) else {
            return (0, String::new(), String::new());
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let _ = write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n"
        );
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (status, head.to_owned(), body.to_owned())
    }

    /// Resident memory of the gateway process: (current, peak) in KiB.
    pub fn rss_kib(&self) -> (u64, u64) {
        (
            proc_kib(self.pid(), "VmRSS:"),
            proc_kib(self.pid(), "VmHWM:"),
        )
    }

    /// Kills the gateway with SIGKILL (no chance to write anything) and waits for it.
    pub fn kill_hard(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the gateway again on the same configuration and data directory.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill the gateway first");
        self.child = Some(spawn_gateway(&self.config_path, &self.log_path, &self.env));
        self.wait_ready();
    }

    /// Starts the gateway again and expects it to refuse: returns its log once it exited with
    /// a failure status.
    pub fn restart_refused(&mut self) -> String {
        assert!(self.child.is_none(), "stop or kill the gateway first");
        let mut child = spawn_gateway(&self.config_path, &self.log_path, &self.env);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                assert!(!status.success(), "gatehouse exited with success");
                return self.log();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "gatehouse started although it should have refused:\n{}",
            self.log()
        );
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Stops the gateway with SIGTERM and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `statement` records with their results' outcomes (see [`Gateway::statements`]).
pub fn joined_statements(events: &[Value]) -> Vec<Value> {
    let results: std::collections::HashMap<u64, &Value> = events
        .iter()
        .filter(|e| e["kind"] == "statement.result")
        .filter_map(|e| e["ref"].as_u64().map(|r| (r, e)))
        .collect();
    events
        .iter()
        .filter(|e| e["kind"] == "statement")
        .map(|e| {
            let mut e = e.clone();
            let seq = e["seq"].as_u64().unwrap_or_default();
            if e["outcome"]["status"] == "pending" {
                if let Some(result) = results.get(&seq) {
                    e["outcome"] = result["outcome"].clone();
                    e["result_seq"] = result["seq"].clone();
                    e["result_detail"] = result["what"]["detail"].clone();
                }
            }
            e
        })
        .collect()
}

/// Percent-encodes userinfo for a URL.
pub fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Resident/virtual memory figures of a process from /proc, in KiB.
pub fn proc_kib(pid: u32, name: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The shared cluster and a gateway with a `main` connection (superuser, SCRAM, no TLS).
pub fn cluster_and_gateway() -> (PgCluster, Gateway) {
    cluster_and_gateway_with(|b| b)
}

/// The same, with more configuration from `configure`.
pub fn cluster_and_gateway_with(
    configure: impl FnOnce(GatewayBuilder) -> GatewayBuilder,
) -> (PgCluster, Gateway) {
    let cluster = PgCluster::start();
    let gateway = configure(Gateway::builder().main_connection(&cluster)).start();
    (cluster, gateway)
}

/// A multi-threaded tokio runtime (two workers), for driving async clients from a plain test.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A single-threaded tokio runtime.
pub fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Connects with tokio-postgres (on a small runtime of its own; call it outside async code) and
/// runs `SELECT 1`. On failure: the server's error as (severity, SQLSTATE, message), or empty
/// severity and code with the client library's text when the server sent no error.
pub fn pg_try(conninfo: &str) -> Result<(), (String, String, String)> {
    current_thread_runtime().block_on(async {
        let to_tuple = |e: tokio_postgres::Error| match e.as_db_error() {
            Some(db) => (
                db.severity().to_owned(),
                db.code().code().to_owned(),
                db.message().to_owned(),
            ),
            None => (String::new(), String::new(), e.to_string()),
        };
        let (client, connection) = tokio_postgres::connect(conninfo, NoTls)
            .await
            .map_err(to_tuple)?;
        tokio::spawn(connection);
        client
            .simple_query("SELECT 1")
            .await
            .map(|_| ())
            .map_err(to_tuple)
    })
}

//! Starting and stopping the gateway.

use crate::admin::{self, AdminState};
use crate::config::{self, Config};
use crate::{approval_store, bootstrap, index, notify, reload, wiring};
use anyhow::Context;
use gatehouse_audit::{AuditLog, Event, EventKind, FsyncMode, Options, Outcome, What};
use gatehouse_core::approvals::Approvals;
use gatehouse_core::{Authenticator, Gate, GateParts, Metrics, RulePolicy};
use gatehouse_store::{SqliteStore, Store};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long open connections get to end after a stop is requested.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// A started gateway: its bound addresses and the means to stop it.
pub struct Running {
    pub admin_addr: SocketAddr,
    pub postgres_addr: SocketAddr,
    audit: AuditLog,
    gate: Gate,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    pg_threads: Vec<std::thread::JoinHandle<()>>,
    sinks: Vec<gatehouse_sink::SinkHandle>,
}

/// Runs the gateway until SIGINT or SIGTERM.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let running = start(config).await?;
    wait_for_signal().await;
    tracing::info!("shutting down");
    running.stop().await
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}

/// Starts every component; the audit log first, so that everything after it is recorded.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    raise_fd_limit();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&config.data_dir)
        .with_context(|| format!("creating data_dir {}", config.data_dir.display()))?;

    let options = Options {
        fsync: match config.audit.fsync {
            config::Fsync::Always => FsyncMode::Always,
            config::Fsync::Periodic => FsyncMode::Periodic(config.audit.fsync_interval),
            config::Fsync::Never => FsyncMode::Never,
        },
        low_space_bytes: config.audit.low_space_warning,
        ..Options::default()
    };
    let (options, key_created) = with_checkpoints(options, &config.audit.checkpoints)?;
    let audit = open_audit(&config, options)?;
    // Read before this run writes anything: what the previous run left open.
    let unclean = gatehouse_audit::unclean_stop(audit.path())
        .with_context(|| format!("reading {}", audit.path().display()))?;
    let mut start = Event::now(EventKind::GatewayStart, Outcome::success());
    start.what.detail = Some(serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "recovered_partial_record": audit.recovered_partial().map(|p| p.display().to_string()),
        "checkpoints": checkpoint_detail(&audit, &config.audit.checkpoints),
    }));
    audit.record(start).await?;
    if let Some(verifier) = key_created {
        let mut created = Event::now(EventKind::AuditKeyCreated, Outcome::success());
        created.what = What {
            resource: Some(config.audit.checkpoints.signing_key.display().to_string()),
            detail: Some(serde_json::json!({ "public_key": verifier.to_string() })),
            ..What::default()
        };
        audit.record(created).await?;
    }
    if let Some(unclean) = unclean {
        close_previous_run(&audit, &unclean, &config.recording.dir).await?;
    }
    let config_bytes = std::fs::read(&config.source).unwrap_or_default();
    let mut loaded = Event::now(EventKind::ConfigLoaded, Outcome::success());
    loaded.what = What {
        resource: Some(config.source.display().to_string()),
        detail: Some(serde_json::json!({
            "sha256": hex::encode(Sha256::digest(&config_bytes)),
            "connections": config.connections.keys().collect::<Vec<_>>(),
        })),
        ..What::default()
    };
    audit.record(loaded).await?;
    // The policy's own record comes before any statement it decides.
    audit
        .record(reload::loaded_event(
            &config,
            None,
            reload::Trigger::Start,
            false,
        ))
        .await?;
    let policy = Arc::new(RulePolicy::new(config.policy.clone()));

    let config::StateConfig::Sqlite { path } = &config.state;
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(path)
            .await
            .with_context(|| format!("opening the state store {}", path.display()))?,
    );
    let admin_group = config
        .admin
        .admin_groups
        .first()
        .cloned()
        .unwrap_or_else(|| "gatehouse-admins".to_owned());
    bootstrap::ensure_admin_key(store.as_ref(), &audit, &config.data_dir, &admin_group).await?;

    let authenticator = Arc::new(wiring::authenticator(&config, store.clone())?);
    if let Some(oidc) = &authenticator.oidc {
        oidc.warm_up().await;
    }
    let authenticator: Arc<dyn Authenticator> = authenticator;
    let metrics = Arc::new(Metrics::new());
    let mut parts = GateParts::new(
        authenticator,
        wiring::connections(&config),
        Arc::new(audit.clone()),
        metrics.clone(),
        Arc::new(index::StoreIndex(store.clone())),
    );
    parts.policy = policy.clone();
    parts.recordings = crate::recordings::settings(&config)?;
    let mut approvals = Approvals::load(
        Arc::new(approval_store::StoreApprovals(store.clone())),
        Arc::new(audit.clone()),
        config.admin.admin_groups.clone(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("loading approval requests from the state store: {e}"))?;
    if !config.notifications.webhooks.is_empty() {
        let (tx, rx) = tokio::sync::mpsc::channel(notify::QUEUE);
        approvals = approvals.with_notices(tx);
        tokio::spawn(notify::deliver(config.notifications.webhooks.clone(), rx));
    }
    let approvals = Arc::new(approvals);
    parts.approvals = Some(approvals.clone());
    let gate = Gate::new(parts);

    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(reload::watch(
        config.clone(),
        policy,
        audit.clone(),
        shutdown_rx.clone(),
    )));

    let pg = gatehouse_postgres::PgGateway::new(
        gate.clone(),
        wiring::pg_config(&config)?,
        shutdown_rx.clone(),
    )?;
    let limits = gatehouse_serve::Limits {
        max_handshakes: config.postgres.max_handshakes,
        per_source: config.postgres.max_handshakes_per_source,
        first_packet_timeout: config.postgres.first_packet_timeout,
    };
    let listening = gatehouse_serve::spawn(
        pg,
        config.postgres.listen,
        config.postgres.workers,
        limits,
        shutdown_rx.clone(),
        SHUTDOWN_GRACE,
    )
    .with_context(|| {
        format!(
            "binding the PostgreSQL listener on {}",
            config.postgres.listen
        )
    })?;
    let (postgres_addr, pg_threads) = (listening.addr, listening.threads);

    let sinks = start_sinks(&config, &audit)?;
    let witnesses = gatehouse_witness::client::spawn(
        audit.clone(),
        config.audit.witnesses.clone(),
        shutdown_rx.clone(),
    )
    .map_err(|e| anyhow::anyhow!("starting the witness clients: {e}"))?;
    tasks.extend(witnesses.tasks);
    let admin_listener = TcpListener::bind(config.admin.listen)
        .await
        .with_context(|| format!("binding the admin API on {}", config.admin.listen))?;
    let admin_addr = admin_listener.local_addr()?;
    let app = admin::router(AdminState {
        gate: gate.clone(),
        store,
        audit: audit.clone(),
        metrics,
        admin_groups: config.admin.admin_groups.clone(),
        metrics_require_auth: config.admin.metrics_require_auth,
        sinks: Arc::new(sinks.iter().map(|s| s.status_cell()).collect()),
        witnesses: Arc::new(witnesses.status),
        recordings: Arc::new(admin::RecordingAccess {
            dir: config.recording.dir.clone(),
            key: crate::recordings::key(&config.recording)?,
            audit_log: config.audit.dir.join(gatehouse_audit::LOG_FILE_NAME),
        }),
    });
    let limits = admin::ServeLimits {
        max_connections: config.admin.max_connections,
        request_timeout: config.admin.request_timeout,
    };
    tasks.push(tokio::spawn(admin::serve(
        admin_listener,
        app,
        limits,
        shutdown_rx.clone(),
    )));
    // Failures before authentication are summarised per window; write the summaries. Expire
    // approval requests and grants past their end.
    let sweeper = gate.clone();
    let mut sweep_stop = shutdown_rx.clone();
    tasks.push(tokio::spawn(async move {
        loop {
            let stopping = tokio::select! {
                () = tokio::time::sleep(std::time::Duration::from_secs(5)) => false,
                _ = sweep_stop.wait_for(|stop| *stop) => true,
            };
            if stopping {
                break;
            }
            sweeper.sweep_pre_auth(false);
            approvals.expire(time::OffsetDateTime::now_utc()).await;
        }
    }));

    if let Some(retention) = config.recording.retention {
        let (dir, audit, gate) = (config.recording.dir.clone(), audit.clone(), gate.clone());
        let mut stop = shutdown_rx.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let open: Vec<String> = gate.open_sessions().into_iter().map(|s| s.id).collect();
                match crate::recordings::prune(&dir, retention, &audit, &open).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(pruned = n, "pruned recordings past retention"),
                    Err(e) => tracing::error!(error = %e, "pruning recordings failed"),
                }
                tokio::select! {
                    () = tokio::time::sleep(crate::recordings::PRUNE_EVERY) => {}
                    _ = stop.wait_for(|stop| *stop) => break,
                }
            }
        }));
    }

    tracing::info!(postgres = %postgres_addr, admin = %admin_addr, "gatehouse is listening");
    Ok(Running {
        admin_addr,
        postgres_addr,
        audit,
        gate,
        shutdown,
        tasks,
        pg_threads,
        sinks,
    })
}

/// Starts one task per configured SIEM sink; each reads the log from its own cursor.
fn start_sinks(
    config: &Config,
    audit: &AuditLog,
) -> anyhow::Result<Vec<gatehouse_sink::SinkHandle>> {
    let state_dir = config.data_dir.join("sinks");
    if !config.audit.sinks.0.is_empty() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&state_dir)
            .with_context(|| format!("creating {}", state_dir.display()))?;
    }
    config
        .audit
        .sinks
        .0
        .iter()
        .map(|sink| {
            gatehouse_sink::Sink::spawn(sink.clone(), audit.path(), &state_dir, audit.clone())
                .with_context(|| format!("starting the audit sink {}", sink.name))
        })
        .collect()
}

/// Adds checkpoint signing to the writer's options, loading (or creating) the key. Returns the
/// public key when it was just created.
pub fn with_checkpoints(
    mut options: Options,
    config: &config::CheckpointConfig,
) -> anyhow::Result<(Options, Option<gatehouse_tlog::Verifier>)> {
    if !config.enabled {
        return Ok((options, None));
    }
    let (signer, created) = crate::signing::load_or_create(&config.signing_key, &config.origin)?;
    let verifier = created.then(|| signer.verifier());
    if let Some(v) = &verifier {
        tracing::warn!(
            key = %config.signing_key.display(),
            public_key = %v,
            "created the audit checkpoint signing key; give examiners its public key"
        );
    }
    options.checkpoints = Some(crate::signing::options(config, signer));
    Ok((options, verifier))
}

/// Opens the log; a log that disagrees with its last signed checkpoint stops the start.
fn open_audit(config: &Config, options: Options) -> anyhow::Result<AuditLog> {
    match AuditLog::open(&config.audit.dir, options) {
        Err(e @ gatehouse_audit::AuditError::Inconsistent { .. }) => {
            tracing::error!(
                error = %e,
                "REFUSING TO START: the audit log was cut or rewritten since the gateway last                  signed it; keep a copy for investigation, then acknowledge with                  `gatehouse audit acknowledge --reason TEXT`"
            );
            Err(anyhow::anyhow!(
                "{e}\nrefusing to start; investigate, then run `gatehouse audit acknowledge --reason TEXT`"
            ))
        }
        other => other
            .with_context(|| format!("opening the audit log in {}", config.audit.dir.display())),
    }
}

fn checkpoint_detail(audit: &AuditLog, config: &config::CheckpointConfig) -> serde_json::Value {
    let Some(how) = audit.resumption() else {
        return serde_json::json!({ "enabled": false });
    };
    use gatehouse_audit::checkpoint::Resumption;
    let resumed = match how {
        Resumption::Empty => serde_json::json!({ "from": "empty log" }),
        Resumption::FromCheckpoint { size, rehashed } => {
            serde_json::json!({ "from": "kept checkpoint", "size": size, "rehashed": rehashed })
        }
        Resumption::Rebuilt {
            records,
            checkpoints,
        } => serde_json::json!({
            "from": "whole log (no kept checkpoint)",
            "records": records,
            "checkpoints_checked": checkpoints,
        }),
        Resumption::Acknowledged { records } => {
            serde_json::json!({ "from": "acknowledged log", "records": records })
        }
    };
    serde_json::json!({
        "enabled": true,
        "origin": config.origin,
        "state_file": config.state_file.display().to_string(),
        "resumed": resumed,
    })
}

/// Closes in the log what a run that stopped without `gateway.stop` left open: one
/// `gateway.unclean_stop` naming the head it left, then a `session.end` for every session it
/// left open, with the statements that never got a result and, when the session was recorded,
/// the SHA-256 of its recording as the crash left it (so the chain covers it from here on).
async fn close_previous_run(
    audit: &AuditLog,
    unclean: &gatehouse_audit::UncleanStop,
    recordings: &std::path::Path,
) -> anyhow::Result<()> {
    let head = serde_json::json!({
        "seq": unclean.last_seq,
        "hash": unclean.last_hash.as_str(),
        "time": gatehouse_audit::timefmt::Rfc3339Nanos(unclean.last_time).to_string(),
    });
    tracing::warn!(
        previous_head = unclean.last_seq,
        open_sessions = unclean.open_sessions.len(),
        "the previous run stopped without closing the audit log; closing its open sessions"
    );
    let mut event = Event::now(
        EventKind::GatewayUncleanStop,
        Outcome::failure("the previous run ended without gateway.stop (crash, kill or power loss)"),
    );
    event.what.detail = Some(serde_json::json!({
        "previous_head": head,
        "open_sessions": unclean.open_sessions.iter().map(|s| &s.id).collect::<Vec<_>>(),
    }));
    let mut last = audit.append(event)?;
    for session in &unclean.open_sessions {
        let mut end = Event::now(
            EventKind::SessionEnd,
            Outcome::failure("the gateway stopped without closing the session (unclean stop)"),
        );
        end.session = Some(session.id.clone());
        let mut detail = serde_json::json!({
            "cause": "unclean_stop",
            "previous_head": head,
            "unfinished_statements": session.unfinished_statements,
        });
        if let Some(recording) = crate::recordings::left_by_crash(recordings, &session.id) {
            detail["recording"] = recording;
        }
        end.what.detail = Some(detail);
        last = audit.append(end)?;
    }
    audit.durable(last).await?;
    Ok(())
}

impl Running {
    /// Stops accepting connections, ends open sessions (each audited), records the stop and
    /// closes the audit log.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        let pg_threads = self.pg_threads;
        // The workers end once their sessions have ended (or the grace period is over).
        let _ = tokio::task::spawn_blocking(move || {
            for thread in pg_threads {
                let _ = thread.join();
            }
        })
        .await;
        for task in self.tasks {
            let _ = tokio::time::timeout(SHUTDOWN_GRACE + std::time::Duration::from_secs(1), task)
                .await;
        }
        self.gate.sweep_pre_auth(true);
        self.audit
            .record(Event::now(EventKind::GatewayStop, Outcome::success()))
            .await?;
        self.audit.shutdown().await?;
        // Sinks stop after the log: what they have not delivered, they resume from their
        // cursors at the next start.
        for sink in self.sinks {
            let name = sink.name().to_owned();
            if let Err(e) = sink.shutdown().await {
                tracing::warn!(sink = %name, error = %e, "audit sink stopped with an error");
            }
        }
        Ok(())
    }
}

/// Many concurrent clients need many descriptors; the soft limit is often 1024.
fn raise_fd_limit() {
    if let Ok((soft, hard)) = rlimit::Resource::NOFILE.get() {
        if soft < hard {
            let _ = rlimit::Resource::NOFILE.set(hard, hard);
        }
    }
}

//! `gatehouse witness serve|public-key`: a C2SP witness for other logs' checkpoints, so two
//! sites can witness each other.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use gatehouse_tlog::Verifier;
use gatehouse_witness::{keyfile, server, Init, Witness};

pub fn serve(
    listen: SocketAddr,
    name: &str,
    key: &Path,
    state: &Path,
    init: bool,
    logs: &[String],
) -> anyhow::Result<ExitCode> {
    init_logging();
    let (cosigner, created) = keyfile::load_or_create(key, name)?;
    let public = cosigner.verifier();
    if created {
        tracing::warn!(key = %key.display(), public_key = %public, "created the witness key; give logs its public key");
    }
    let logs = logs
        .iter()
        .map(|arg| {
            let text = std::fs::read_to_string(arg).unwrap_or_else(|_| arg.clone());
            Verifier::parse(text.trim())
                .map_err(|e| anyhow::anyhow!("--log {arg}: not a log public key ({e})"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let origins: Vec<String> = logs.iter().map(|l| l.name().to_owned()).collect();
    let init = if init {
        Init::CreateIfMissing
    } else {
        Init::Existing
    };
    let witness = Arc::new(Witness::open(cosigner, logs, state, init)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding the witness on {listen}"))?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, witness = %public, logs = ?origins, "witness is listening");
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                Some(()) = async { match term.as_mut() { Some(t) => t.recv().await, None => None } } => {}
            }
            let _ = stop.send(true);
        });
        let limits = gatehouse_server::admin::ServeLimits {
            max_connections: 64,
            request_timeout: Duration::from_secs(10),
        };
        gatehouse_server::admin::serve(listener, server::router(witness), limits, stopped).await;
        tracing::info!("witness stopped");
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

pub fn public_key(name: &str, key: &Path) -> anyhow::Result<ExitCode> {
    let (cosigner, created) = keyfile::load_or_create(key, name)?;
    if created {
        eprintln!("created the witness key {}", key.display());
    }
    println!("{}", cosigner.verifier());
    Ok(ExitCode::SUCCESS)
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("GATEHOUSE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

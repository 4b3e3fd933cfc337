//! `gatehouse`: the gateway binary and its operator commands.

mod admin_client;
mod audit_cmd;
mod bundle_cmd;
mod replay;
mod witness_cmd;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "gatehouse",
    version,
    about = "Identity-aware gateway for governed access to infrastructure"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct ConfigArg {
    /// Configuration file [default: $GATEHOUSE_CONFIG, else ./gatehouse.yaml]
    #[arg(
        long,
        short = 'c',
        env = "GATEHOUSE_CONFIG",
        default_value = "gatehouse.yaml"
    )]
    config: PathBuf,
}

#[derive(Args, Clone)]
pub(crate) struct ServerArg {
    /// Admin API of a running gateway
    #[arg(
        long,
        env = "GATEHOUSE_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    pub(crate) server: String,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway
    Serve(ConfigArg),
    /// Work with configuration files
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Manage service-account API keys (needs $GATEHOUSE_TOKEN with the admin role)
    #[command(subcommand)]
    Keys(KeysCommand),
    /// List recorded sessions (needs $GATEHOUSE_TOKEN with the admin role)
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// Decide statements held for approval (needs $GATEHOUSE_TOKEN of an approver)
    #[command(subcommand)]
    Approvals(ApprovalsCommand),
    /// Ask for time-bound access to a connection, and list grants
    #[command(subcommand)]
    Access(AccessCommand),
    /// Verify and export the audit log (reads the data directory; works with the gateway stopped)
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Run a witness that cosigns other logs' checkpoints (C2SP tlog-witness)
    #[command(subcommand)]
    Witness(WitnessCommand),
}

#[derive(Subcommand)]
enum WitnessCommand {
    /// Serve POST /add-checkpoint: cosign each checkpoint proven consistent with the last
    Serve {
        /// Address to listen on
        #[arg(long, default_value = "127.0.0.1:7380")]
        listen: std::net::SocketAddr,
        /// The witness's name (a schema-less URL, e.g. witness.example.com/w1)
        #[arg(long)]
        name: String,
        /// The cosigning key; created (mode 0600) if absent
        #[arg(long)]
        key: PathBuf,
        /// Where the latest cosigned checkpoint of each log is kept; must exist unless --init
        #[arg(long)]
        state: PathBuf,
        /// A new witness: create the state file if it does not exist (a witness that lost its
        /// state would cosign a rolled-back log, so this is never implied)
        #[arg(long)]
        init: bool,
        /// A log to witness: its public key (vkey text, or a file holding it); repeatable
        #[arg(long = "log", required = true)]
        logs: Vec<String>,
    },
    /// Print the witness's public key (vkey text, type 0x04), creating the key if absent
    PublicKey {
        #[arg(long)]
        name: String,
        #[arg(long)]
        key: PathBuf,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file; errors name the file, line and key
    Check(ConfigArg),
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create an API key; prints only the key on stdout
    Create {
        #[arg(long)]
        name: String,
        /// Group of the key's identity (repeatable)
        #[arg(long = "group")]
        groups: Vec<String>,
        #[command(flatten)]
        server: ServerArg,
    },
    /// List API keys (never the keys themselves)
    List {
        #[command(flatten)]
        server: ServerArg,
    },
    /// Revoke an API key; new connections with it are refused at once
    Revoke {
        name: String,
        #[command(flatten)]
        server: ServerArg,
    },
}

#[derive(Subcommand)]
enum SessionsCommand {
    /// List recent sessions, newest first
    List {
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Only the sessions open now
        #[arg(long)]
        open: bool,
        #[command(flatten)]
        server: ServerArg,
    },
    /// End an open session (audited); its client gets an error and is disconnected
    Kill {
        /// The session id (from `sessions list --open`)
        id: String,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Show a recorded session as psql showed it (audited: who watched what). Refused when
    /// the recording does not match the hash its session.end record holds
    Replay {
        /// The session id (from `sessions list`)
        id: String,
        /// Replay in time at this speed (pauses are capped at 3s)
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Print everything at once
        #[arg(long)]
        no_wait: bool,
        #[arg(long, value_enum, default_value_t = ReplayFormat::Text)]
        format: ReplayFormat,
        #[command(flatten)]
        server: ServerArg,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum ReplayFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub(crate) enum ApprovalsCommand {
    /// List approval requests you may see, newest first
    List {
        /// Only requests in this state: pending, approved, denied, expired, abandoned,
        /// cancelled, executed
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Print the requests as JSON (with the statement, the requester and its actor chain,
        /// the rule, the effect)
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Show one request whole: statement, requester and actor chain, rule, effect, decisions
    Show {
        id: String,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Approve a request (nobody approves their own, nor one made by an agent acting for them)
    Approve {
        id: String,
        #[arg(long)]
        comment: Option<String>,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Deny a request; the caller sees the reason; a denial is final
    Deny {
        id: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Withdraw a pending request, an approval not yet used, or an active access grant
    /// (sessions admitted by the grant end)
    Revoke {
        id: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        server: ServerArg,
    },
}

#[derive(Subcommand)]
pub(crate) enum AccessCommand {
    /// Ask for access to CONNECTION for a while; approvers decide it with `approvals approve`
    Request {
        connection: String,
        /// How long, e.g. 2h, 30m (at most the connection's grants.max_duration)
        #[arg(long = "for")]
        duration: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        server: ServerArg,
    },
    /// List access requests and grants you may see, newest first
    List {
        #[command(flatten)]
        server: ServerArg,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain and the signed checkpoints offline; exit 0 only when intact,
    /// otherwise name the first bad record
    Verify {
        #[command(flatten)]
        config: ConfigArg,
        /// The public key checkpoints must be signed by (vkey text, or a file holding it);
        /// default: the configured signing key's public half
        #[arg(long)]
        pubkey: Option<String>,
        /// The checkpoint kept outside the audit directory (default: the configured one)
        #[arg(long)]
        state: Option<PathBuf>,
        /// A witness whose cosignatures in the log to check (vkey text or file); repeatable
        #[arg(long = "witness-key")]
        witness_keys: Vec<String>,
    },
    /// Print the public key that signs audit checkpoints
    PublicKey(ConfigArg),
    /// Ask the running gateway to sign a checkpoint now (admin), so a bundle or proof made
    /// next covers everything recorded so far
    Checkpoint {
        #[command(flatten)]
        server: ServerArg,
    },
    /// Write an inclusion proof of one record against a signed checkpoint, or (with
    /// --consistency-from) a consistency proof from an older checkpoint to the latest
    Prove {
        #[command(flatten)]
        config: ConfigArg,
        /// The record's seq
        #[arg(
            required_unless_present = "consistency_from",
            conflicts_with = "consistency_from"
        )]
        seq: Option<u64>,
        /// The tree size of the older checkpoint
        #[arg(long)]
        consistency_from: Option<u64>,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Check an inclusion proof offline
    VerifyProof {
        file: PathBuf,
        /// The log's public key (vkey text, or a file holding it)
        #[arg(long)]
        pubkey: String,
    },
    /// Accept a log that disagrees with its last signed checkpoint (audited), so the gateway
    /// starts again; run with the gateway stopped
    Acknowledge {
        #[command(flatten)]
        config: ConfigArg,
        /// Why the log is accepted as it is (recorded)
        #[arg(long)]
        reason: String,
    },
    /// Write the examiner's bundle of a time range: the records (JSONL and CSV), the signed
    /// checkpoint, proofs that they are exactly the log's records, and a README mapping them to
    /// PCI DSS and FFIEC
    Bundle {
        #[command(flatten)]
        config: ConfigArg,
        /// From the first record at or after this time (RFC 3339); default: the log's start
        #[arg(long)]
        since: Option<String>,
        /// Up to the first record at or after this time (RFC 3339); default: the latest
        /// signed checkpoint
        #[arg(long)]
        until: Option<String>,
        /// The archive to write (a tar file)
        #[arg(long)]
        out: PathBuf,
    },
    /// Check an examiner's bundle with nothing but the file and the log's public key
    VerifyBundle {
        file: PathBuf,
        /// The log's public key (vkey text, or a file holding it)
        #[arg(long)]
        pubkey: String,
        /// A witness whose cosignature to check (vkey text or file); repeatable
        #[arg(long = "witness-key")]
        witness_keys: Vec<String>,
    },
    /// Export audit events
    Export {
        #[command(flatten)]
        config: ConfigArg,
        /// Only events at or after this time (RFC 3339, e.g. 2026-01-31T00:00:00Z)
        #[arg(long)]
        since: Option<String>,
        /// Only events before this time (RFC 3339)
        #[arg(long)]
        until: Option<String>,
        #[arg(long, value_enum, default_value_t = audit_cmd::Format::Jsonl)]
        format: audit_cmd::Format,
        /// Write to this file instead of stdout
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("gatehouse: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // One crypto provider for every TLS use in the process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.command {
        Command::Serve(arg) => {
            let config = load(&arg.config)?;
            init_logging(&config);
            for warning in &config.warnings {
                tracing::warn!("{warning}");
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(gatehouse_server::serve(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCommand::Check(arg)) => {
            let config = load(&arg.config)?;
            for warning in &config.warnings {
                eprintln!("warning: {warning}");
            }
            println!(
                "{}: OK ({} connection(s))",
                arg.config.display(),
                config.connections.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys(cmd) => admin_client::keys(cmd),
        Command::Sessions(SessionsCommand::List {
            limit,
            open,
            server,
        }) => admin_client::sessions(&server.server, limit, open),
        Command::Sessions(SessionsCommand::Kill { id, server }) => {
            admin_client::kill_session(&server.server, &id)
        }
        Command::Sessions(SessionsCommand::Replay {
            id,
            speed,
            no_wait,
            format,
            server,
        }) => admin_client::replay(&server.server, &id, speed, no_wait, format),
        Command::Approvals(cmd) => admin_client::approvals(cmd),
        Command::Access(cmd) => admin_client::access(cmd),
        Command::Audit(AuditCommand::Verify {
            config,
            pubkey,
            state,
            witness_keys,
        }) => audit_cmd::verify(
            &load_offline(&config.config)?,
            pubkey.as_deref(),
            state.as_deref(),
            &witness_keys,
        ),
        Command::Audit(AuditCommand::Checkpoint { server }) => {
            admin_client::checkpoint(&server.server)
        }
        Command::Audit(AuditCommand::PublicKey(arg)) => {
            audit_cmd::public_key(&load_offline(&arg.config)?)
        }
        Command::Audit(AuditCommand::Prove {
            config,
            seq,
            consistency_from,
            out,
        }) => {
            let what = match (seq, consistency_from) {
                (_, Some(size)) => audit_cmd::Prove::Consistency(size),
                (Some(seq), None) => audit_cmd::Prove::Record(seq),
                (None, None) => anyhow::bail!("give a SEQ or --consistency-from SIZE"),
            };
            audit_cmd::prove(&load_offline(&config.config)?, what, out.as_deref())
        }
        Command::Audit(AuditCommand::VerifyProof { file, pubkey }) => {
            audit_cmd::verify_proof(&file, &pubkey)
        }
        Command::Audit(AuditCommand::Acknowledge { config, reason }) => {
            audit_cmd::acknowledge(&load_offline(&config.config)?, &reason)
        }
        Command::Audit(AuditCommand::Bundle {
            config,
            since,
            until,
            out,
        }) => bundle_cmd::make(
            &load_offline(&config.config)?,
            since.as_deref(),
            until.as_deref(),
            &out,
        ),
        Command::Audit(AuditCommand::VerifyBundle {
            file,
            pubkey,
            witness_keys,
        }) => bundle_cmd::verify(&file, &pubkey, &witness_keys),
        Command::Witness(WitnessCommand::Serve {
            listen,
            name,
            key,
            state,
            init,
            logs,
        }) => witness_cmd::serve(listen, &name, &key, &state, init, &logs),
        Command::Witness(WitnessCommand::PublicKey { name, key }) => {
            witness_cmd::public_key(&name, &key)
        }
        Command::Audit(AuditCommand::Export {
            config,
            since,
            until,
            format,
            out,
        }) => audit_cmd::export(
            &load_offline(&config.config)?,
            since.as_deref(),
            until.as_deref(),
            format,
            out.as_deref(),
        ),
    }
}

fn load(path: &std::path::Path) -> anyhow::Result<gatehouse_server::config::Config> {
    // The error already names the file, line and key.
    gatehouse_server::config::load(path)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("invalid configuration")
}

/// The configuration without its secrets, for commands that only read the data directory.
fn load_offline(path: &std::path::Path) -> anyhow::Result<gatehouse_server::config::Config> {
    gatehouse_server::config::load_offline(path)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("invalid configuration")
}

fn init_logging(config: &gatehouse_server::config::Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("GATEHOUSE_LOG")
        .unwrap_or_else(|_| EnvFilter::new(config.log.level.as_str()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        gatehouse_server::config::LogFormat::Json => builder.json().init(),
        gatehouse_server::config::LogFormat::Text => builder.init(),
    }
}

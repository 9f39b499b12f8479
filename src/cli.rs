//! The command line: `relais [serve | migrate | create-admin | demo |
//! audit verify | backup | restore | config check]`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::audit::{self, Verdict, anchor};
use crate::clock::SystemClock;
use crate::config::Settings;
use crate::db::Db;
use crate::ops;
use crate::startup::Application;
use crate::store::account::create_admin;

/// Relais: the coordination backend of an OMT and acute-pain care network.
#[derive(Debug, Parser)]
#[command(name = "relais", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What to do (default: serve).
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Migrate the database if needed, then serve the API (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Create an administrator account; the password is read from standard input.
    CreateAdmin {
        #[arg(long)]
        email: String,
        #[arg(long)]
        full_name: String,
        /// Read the password from standard input (required: never from the command line).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Load a small demo care network (six organisations, one user per role,
    /// two patients with plans, a handover and a consultation) and print the logins.
    Demo,
    /// Audit trail tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// SQLite: copy the live database (servers may keep running) and its
    /// audit anchor to FILE and FILE.anchor/, then verify the copy.
    /// PostgreSQL: copy the audit anchor and print the pg_dump to run.
    Backup {
        /// Where to write the copy (never overwritten).
        #[arg(long)]
        to: PathBuf,
    },
    /// SQLite: replace the database with a backup (refused while any
    /// instance has it open), keeping the current one aside, and verify the
    /// audit chain.
    Restore {
        /// The backup file (its FILE.anchor/ folder beside it).
        #[arg(long)]
        from: PathBuf,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

/// What to do with the configuration.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and print the effective values, secrets
    /// redacted; exits non-zero naming the first bad key.
    Check,
}

/// What to do with the audit trail.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain, and the database against the signed checkpoints
    /// in the data directory; exits non-zero and names the first bad row
    /// (or checkpoint line) when broken.
    Verify {
        /// Check against the anchor (checkpoints and key) in this folder
        /// instead of the data directory's: a backup's FILE.anchor/, for a
        /// database restored from it (PostgreSQL: from its pg_dump).
        #[arg(long)]
        anchor: Option<PathBuf>,
    },
}

/// Runs the command line; errors are printed by `main`.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let command = cli.command.unwrap_or(Command::Serve);
    if let Command::Config {
        command: ConfigCommand::Check,
    } = command
    {
        let settings = Settings::load()?;
        print!("{}", settings.redacted_toml()?);
        println!("# configuration valid");
        return Ok(());
    }
    let settings = Settings::load()?;
    crate::telemetry::init(settings.log.format);
    match command {
        Command::Serve => {
            tracing::info!(bind = %settings.server.bind, "starting");
            let app = Application::build(settings, Arc::new(SystemClock)).await?;
            tracing::info!(
                port = app.port(),
                metrics_port = app.metrics_port(),
                "listening"
            );
            app.run_until_stopped().await?;
        }
        Command::Config { .. } => unreachable!("handled above"),
        Command::Backup { to } => {
            let report = tokio::task::spawn_blocking(move || ops::backup(&settings, &to)).await??;
            print_report(&report);
        }
        Command::Restore { from } => {
            let report =
                tokio::task::spawn_blocking(move || ops::restore(&settings, &from)).await??;
            print_report(&report);
        }
        Command::Migrate => {
            let db = Db::connect(&settings.database.url, 1)?;
            let applied = db.migrate().await?;
            println!("{applied} migration(s) applied");
        }
        Command::CreateAdmin {
            email, full_name, ..
        } => {
            let mut password = String::new();
            std::io::stdin().read_to_string(&mut password)?;
            let password = password.trim_end_matches(['\n', '\r']).to_owned();
            let db = Db::connect(&settings.database.url, 1)?;
            db.migrate().await?;
            let id = create_admin(&db, &SystemClock, &email, &full_name, &password).await?;
            println!("administrator created: {id}");
        }
        Command::Demo => crate::demo::run(settings).await?,
        Command::Audit {
            command: AuditCommand::Verify { anchor },
        } => {
            // The checkpoints first: each names a row committed before it
            // was written, so before the database snapshot is taken.
            let data_dir = anchor.as_deref().unwrap_or(&settings.server.data_dir);
            let checkpoints = anchor::load_checkpoints(data_dir)?;
            let db = Db::connect(&settings.database.url, 1)?;
            db.migrate().await?;
            let checked = checkpoints.valid.clone();
            let verdict = db
                .read(move |conn| Ok(audit::verify_against(conn, &checked)?))
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            match verdict {
                Verdict::Intact { rows } => {
                    let (report, warnings) = intact_report(rows, &checkpoints, data_dir);
                    println!("{report}");
                    for warning in warnings {
                        eprintln!("{warning}");
                    }
                }
                Verdict::Broken { seq, reason } => {
                    anyhow::bail!("audit chain broken at row {seq}: {reason}")
                }
            }
        }
    }
    Ok(())
}

/// What a backup or restore did: counts and paths, nothing about anyone.
fn print_report(report: &ops::Report) {
    for line in &report.lines {
        println!("{line}");
    }
    if report.verified {
        println!(
            "audit chain intact: {} row(s), {} checkpoint(s) checked",
            report.rows, report.checkpoints
        );
    }
}

/// What `audit verify` says of an intact chain (standard output: counts
/// and the latest checkpoint) and what it could not check (warnings, for
/// standard error). Row and checkpoint numbers and times only: nothing
/// about any patient.
fn intact_report(
    rows: i64,
    checkpoints: &anchor::Checkpoints,
    data_dir: &Path,
) -> (String, Vec<String>) {
    let path = anchor::checkpoint_path(data_dir);
    let mut report = format!(
        "audit chain intact: {rows} row(s), {} checkpoint(s) checked",
        checkpoints.valid.len()
    );
    let mut warnings = Vec::new();
    match checkpoints.valid.iter().max_by_key(|c| c.seq) {
        Some(latest) => report.push_str(&format!(
            " (latest: row {} at {})",
            latest.seq,
            latest.at.format("%Y-%m-%dT%H:%M:%SZ")
        )),
        None => warnings.push(format!(
            "warning: no checkpoints in {}: rows removed from the end of the chain \
             would go unseen (is server.data_dir the server's?)",
            path.display()
        )),
    }
    if checkpoints.unreadable > 0 {
        warnings.push(format!(
            "warning: {} unreadable line(s) in {} skipped (a torn write, or an edit)",
            checkpoints.unreadable,
            path.display()
        ));
    }
    (report, warnings)
}

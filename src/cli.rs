//! The command line: `relais [serve | migrate | create-admin | demo | audit verify]`.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::audit::{self, Verdict, anchor};
use crate::clock::SystemClock;
use crate::config::Settings;
use crate::db::Db;
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
}

/// What to do with the audit trail.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain, and the database against the signed checkpoints
    /// in the data directory; exits non-zero and names the first bad row
    /// (or checkpoint line) when broken.
    Verify,
}

/// Runs the command line; errors are printed by `main`.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = Settings::load()?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            tracing::info!(bind = %settings.server.bind, "starting");
            let app = Application::build(settings, Arc::new(SystemClock)).await?;
            app.run_until_stopped().await?;
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
            command: AuditCommand::Verify,
        } => {
            // The checkpoints first: each names a row committed before it
            // was written, so before the database snapshot is taken.
            let data_dir = &settings.server.data_dir;
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

//! The command line: `relais [serve | migrate | create-admin | demo | audit verify]`.

use std::io::Read;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use diesel::prelude::*;

use crate::audit::{self, Verdict};
use crate::auth::password;
use crate::clock::{Clock, SystemClock};
use crate::config::Settings;
use crate::db::models::{User, new_id};
use crate::db::schema::users;
use crate::db::{Db, is_unique_violation};
use crate::domain::contact::parse_email;
use crate::domain::role::{NotificationPreference, Role};
use crate::domain::text::{self, Flavour};
use crate::error::ApiError;
use crate::startup::Application;

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
    /// Check the hash chain; exits non-zero and names the first bad row when broken.
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
            let db = Db::connect(&settings.database.url, 1)?;
            db.migrate().await?;
            let verdict = db
                .read(|conn| Ok(audit::verify(conn)?))
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            match verdict {
                Verdict::Intact { rows } => println!("audit chain intact: {rows} row(s)"),
                Verdict::Broken { seq, reason } => {
                    anyhow::bail!("audit chain broken at row {seq}: {reason}")
                }
            }
        }
    }
    Ok(())
}

/// An account created from the command line (administrator, demo users).
pub struct NewAccount<'a> {
    pub email: &'a str,
    pub full_name: &'a str,
    pub role: Role,
    pub organization_id: Option<String>,
    pub phone: Option<&'a str>,
}

/// Creates an active administrator with a password; returns its id.
pub async fn create_admin(
    db: &Db,
    clock: &dyn Clock,
    email: &str,
    full_name: &str,
    password: &str,
) -> anyhow::Result<String> {
    let account = NewAccount {
        email,
        full_name,
        role: Role::Admin,
        organization_id: None,
        phone: None,
    };
    create_account(db, clock, account, password).await
}

/// Creates an active account with a password (no invitation); returns its id.
pub async fn create_account(
    db: &Db,
    clock: &dyn Clock,
    account: NewAccount<'_>,
    password: &str,
) -> anyhow::Result<String> {
    let email = parse_email(account.email).map_err(|m| anyhow::anyhow!("--email: {m}"))?;
    let full_name = text::required(
        account.full_name,
        "full_name",
        Flavour::Name,
        text::PERSON_NAME_MAX,
    )
    .map_err(|e| anyhow::anyhow!("--full-name: {}", e.message))?;
    password::check_new(password, "password").map_err(|_| {
        anyhow::anyhow!(
            "the password needs at least {} characters",
            password::MIN_LEN
        )
    })?;
    let phc = password::hash(password).map_err(|e| anyhow::anyhow!("{e}"))?;
    let now = clock.now_naive();
    let user = User {
        id: new_id(),
        email,
        full_name,
        role: account.role.as_str().into(),
        organization_id: account.organization_id,
        rpps: None,
        phone: account.phone.map(str::to_owned),
        active: true,
        password_hash: Some(phc),
        token_version: 0,
        notification_preference: NotificationPreference::Immediate.as_str().into(),
        created_at: now,
        updated_at: now,
    };
    let id = user.id.clone();
    db.write(move |conn| {
        diesel::insert_into(users::table)
            .values(&user)
            .execute(conn)
            .map_err(|e| {
                if is_unique_violation(&e) {
                    ApiError::conflict("email", "an account with this email exists")
                } else {
                    e.into()
                }
            })?;
        Ok(())
    })
    .await
    .map_err(|e| match e {
        ApiError::Conflict { detail, .. } => anyhow::anyhow!("--email: {detail}"),
        other => anyhow::anyhow!("{other}"),
    })?;
    Ok(id)
}

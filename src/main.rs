use clap::Parser;

#[actix_web::main]
async fn main() -> std::process::ExitCode {
    let cli = relais::cli::Cli::parse();
    match relais::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("relais: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

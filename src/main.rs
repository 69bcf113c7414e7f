use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = dream3d_cli::Cli::parse();
    match cli.run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[path = "cli/mod.rs"]
mod dream3d_cli;

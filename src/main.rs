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

// Candle allocates a fresh buffer for every op; glibc returns large ones to the kernel each
// time (page faults and zeroing), mimalloc keeps them (UNet forward+backward ~15% faster).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

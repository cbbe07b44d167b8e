use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// glibc malloc showed up at ~10% of the gateway's CPU under load and fragments with many
/// concurrent streams; mimalloc is faster and returns memory.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// APIProxy: one OpenAI-compatible endpoint in front of many LLM providers.
#[derive(Debug, Parser)]
#[command(name = "apiproxy", version)]
struct Cli {
    /// Configuration file [default: conf/apiproxy.yaml when present]
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Validate the configuration and exit (0 when valid).
    #[arg(long)]
    check: bool,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Move the stored provider keys from SECRET_KEY_PREVIOUS onto SECRET_KEY (run with the
    /// environment the gateway runs with after the change; see README "Rotating SECRET_KEY").
    RotateSecret,
    /// Ask the running gateway's proxy port for /health (exit 0 when it answers 200), as a
    /// container health check: run it with the gateway's configuration and environment.
    Health,
}

/// mimalloc's `arena_eager_commit` (its index in `mi_option_e` of the bundled mimalloc).
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// Committing arenas eagerly kept ~130 KiB more resident per open stream (1000 streams: 219 MiB
/// against 86 MiB without; benches/gateway.rs). The option must be set before mimalloc reserves its
/// first arena, which happens before `main`: hence a constructor. MIMALLOC_ARENA_EAGER_COMMIT still wins.
extern "C" fn lazy_arena_commit() {
    // SAFETY: getenv/option setting in a constructor, before any thread exists.
    unsafe {
        if libc_getenv(c"MIMALLOC_ARENA_EAGER_COMMIT".as_ptr()).is_null() {
            libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0);
        }
    }
}

extern "C" {
    #[link_name = "getenv"]
    fn libc_getenv(name: *const std::ffi::c_char) -> *const std::ffi::c_char;
}

#[used]
#[link_section = ".init_array"]
static LAZY_ARENA_COMMIT: extern "C" fn() = lazy_arena_commit;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Cmd::RotateSecret) = cli.command {
        return match apiproxy::rotate::rotate_secret() {
            Ok(rotation) => {
                println!("{rotation}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("apiproxy rotate-secret: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let path = cli.config.or_else(|| {
        let default = PathBuf::from("conf/apiproxy.yaml");
        default.exists().then_some(default)
    });
    let config = match apiproxy::config::load(path.as_deref(), &|k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("apiproxy: invalid configuration: {e}");
            // Docker reserves a health check's exit code 2: any failure there is a 1.
            return match cli.command {
                Some(Cmd::Health) => ExitCode::FAILURE,
                _ => ExitCode::from(2),
            };
        }
    };
    if let Some(Cmd::Health) = cli.command {
        return match apiproxy::health_probe::probe(&config.server.listen) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("apiproxy health: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if cli.check {
        if let Err(e) = apiproxy::server::check_environment() {
            eprintln!("apiproxy: invalid environment: {e}");
            return ExitCode::from(2);
        }
        println!(
            "{}: ok ({} providers, {} logical models, {} client keys)",
            path.as_deref()
                .map_or("(no config file)".into(), |p| p.display().to_string()),
            config.providers.len(),
            config.logical_models.len(),
            config.clients.len()
        );
        return ExitCode::SUCCESS;
    }
    if path.is_none() {
        // Run from another folder, the default file is not found: say so rather than start empty.
        eprintln!(
            "apiproxy: no configuration file (conf/apiproxy.yaml is not in {}, and no --config): \
             starting with what the environment gives",
            std::env::current_dir().map_or_else(|_| "this folder".into(), |d| d.display().to_string())
        );
    }
    match apiproxy::server::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("apiproxy: {e}");
            ExitCode::FAILURE
        }
    }
}

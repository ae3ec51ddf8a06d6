//! The `strata` binary: parse the command line, run the command (`cli/`, one
//! file per command), print one clear line on failure (`-v`: the causes).

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    unset_empty_variables();
    let cli = cli::Cli::parse();
    init_logging(cli.verbose);
    let runtime = match strata::runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(cli::run(&cli));
    // Writer threads of a cancelled build stop once their channels close.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    // A failed build can end while an export is still arriving: whatever
    // temporary path is still registered now is garbage.
    strata::cleanup::remove_all();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            report_error(&err, cli.verbose);
            match err.downcast_ref::<cli::signals::Interrupted>() {
                Some(signal) => ExitCode::from(signal.exit_code()),
                None => ExitCode::FAILURE,
            }
        }
    }
}

/// An empty `STRATA_*` or `BUILDKIT_HOST` means "none", the usual way to
/// switch a variable off (scripts/daemon.sh exports `STRATA_CA_CERT=` into
/// shells without a CA): removed before the flags read them, instead of
/// failing with "a value is required". Runs first, with one thread.
fn unset_empty_variables() {
    let empty: Vec<_> = std::env::vars_os()
        .filter(|(k, v)| {
            let k = k.to_string_lossy();
            v.is_empty() && (k.starts_with("STRATA_") || k == "BUILDKIT_HOST")
        })
        .map(|(k, _)| k)
        .collect();
    for k in empty {
        std::env::remove_var(k);
    }
}

fn init_logging(verbose: bool) {
    let default = if verbose { "strata=debug" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("STRATA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// One clear line (every library error names what failed and where); with -v,
/// the chain of causes beneath it.
fn report_error(err: &anyhow::Error, verbose: bool) {
    eprintln!("error: {err}");
    if verbose {
        for cause in err.chain().skip(1) {
            eprintln!("  caused by: {cause}");
        }
    }
}

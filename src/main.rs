use std::time::Duration;

use clap::Parser;
use hubferry::{
    config::{Config, Flags},
    logging,
};

/// On musl (the static build in the image and the release archive), mimalloc: musl's own
/// allocator cost the blob streams a quarter to a half of their speed (docs/benchmarks.md).
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc lays its memory out in 2 MiB-aligned regions, which transparent huge pages back
/// with whole 2 MiB pages: idle RSS was 28 MB instead of 10.5 MB. Turned off for this process
/// only (the machine's setting stays), before the workers start allocating.
#[cfg(target_env = "musl")]
fn no_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory of ours.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

/// How long an exiting hubferry waits for its last log lines to be written.
const LOG_FLUSH: Duration = Duration::from_secs(2);

fn main() {
    #[cfg(target_env = "musl")]
    no_huge_pages();
    let flags = Flags::parse().for_healthcheck();
    let config = match Config::load(&flags) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("hubferry: {err}");
            std::process::exit(2);
        }
    };
    if flags.check {
        println!("hubferry: the configuration is valid");
        return;
    }
    if flags.healthcheck {
        let Some(admin) = config.admin_listen else {
            eprintln!("hubferry: --healthcheck asks the admin listener, and admin_listen is off");
            std::process::exit(1);
        };
        if let Err(err) = hubferry::healthcheck(admin) {
            eprintln!("hubferry: unhealthy: {err}");
            std::process::exit(1);
        }
        return;
    }
    logging::init(config.log_format);
    let served = actix_rt::System::new().block_on(hubferry::serve(config));
    if let Err(err) = &served {
        log::error!("{err}");
    }
    logging::flush(LOG_FLUSH);
    if let Err(err) = served {
        eprintln!("hubferry: {err}");
        std::process::exit(1);
    }
}

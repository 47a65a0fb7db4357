use std::time::Duration;

use clap::Parser;
use hubferry::{
    config::{Config, Flags},
    logging,
};

/// How long an exiting hubferry waits for its last log lines to be written.
const LOG_FLUSH: Duration = Duration::from_secs(2);

fn main() {
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

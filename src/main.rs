use clap::Parser;
use hubferry::config::{Config, Flags};

fn main() {
    let flags = Flags::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let config = match Config::load(&flags) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("hubferry: {err}");
            std::process::exit(2);
        }
    };
    if let Err(err) = actix_rt::System::new().block_on(hubferry::serve(config)) {
        eprintln!("hubferry: {err}");
        std::process::exit(1);
    }
}

use std::io::Write;

use clap::Parser;
use hubferry::{
    config::{Config, Flags, LogFormat},
    log_escape,
};

fn main() {
    let flags = Flags::parse();
    let config = match Config::load(&flags) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("hubferry: {err}");
            std::process::exit(2);
        }
    };
    init_logger(config.log_format);
    if let Err(err) = actix_rt::System::new().block_on(hubferry::serve(config)) {
        log::error!("{err}");
        eprintln!("hubferry: {err}");
        std::process::exit(1);
    }
}

/// `RUST_LOG` as usual (default `info`). In JSON mode every line is one JSON object for log
/// shippers: access records carry their own fields, other messages a `message`. In text mode
/// every message has its control characters escaped (see `log_escape`), on a terminal too: a
/// client's CR, LF or ESC can neither start a line nor reach the reader's terminal.
fn init_logger(format: LogFormat) {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    // Lines are written as formatted, with no colours: our formats emit no escape codes (and
    // escape the ones a message holds), so `Always` passes them through as they are, where
    // `Never` would scan every byte of every line (one per request) for codes to strip.
    builder.write_style(env_logger::WriteStyle::Always);
    match format {
        LogFormat::Json => {
            builder.format(|buf, record| {
                let time = buf.timestamp_millis();
                let message = record.args().to_string();
                // An access record is already a JSON object: prepend the time to it.
                if record.target() == "hubferry::access" && message.starts_with('{') {
                    return writeln!(buf, "{{\"time\":\"{time}\",{}", &message[1..]);
                }
                let line = serde_json::json!({
                    "time": time.to_string(),
                    "level": record.level().as_str(),
                    "target": record.target(),
                    "message": message,
                });
                writeln!(buf, "{line}")
            });
        }
        LogFormat::Text => {
            // env_logger's default layout, without its colours.
            builder.format(|buf, record| {
                write!(
                    buf,
                    "[{} {:<5} {}] ",
                    buf.timestamp(),
                    record.level(),
                    record.target(),
                )?;
                log_escape::write_escaped(buf, *record.args())?;
                writeln!(buf)
            });
        }
    }
    builder.init();
}

use std::io::Write;

use clap::Parser;
use hubferry::config::{Config, Flags, LogFormat};

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
/// shippers: access records carry their own fields, other messages a `message`.
fn init_logger(format: LogFormat) {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    // Colours only on a terminal; logs going to a file or journald skip the colour stripping
    // pass on every line (one line per request).
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        builder.write_style(env_logger::WriteStyle::Never);
    }
    if format == LogFormat::Json {
        builder.format(|buf, record| {
            let time = buf.timestamp_millis().to_string();
            let message = record.args().to_string();
            let line = match serde_json::from_str::<serde_json::Value>(&message) {
                Ok(serde_json::Value::Object(mut fields))
                    if record.target() == "hubferry::access" =>
                {
                    fields.insert("time".into(), time.into());
                    serde_json::Value::Object(fields)
                }
                _ => serde_json::json!({
                    "time": time,
                    "level": record.level().as_str(),
                    "target": record.target(),
                    "message": message,
                }),
            };
            writeln!(buf, "{line}")
        });
    }
    builder.init();
}

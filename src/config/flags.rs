//! The command line, built from the settings table: one flag per setting that has one, its
//! help naming the key, the environment variable and the default. `Flags` implements clap's
//! `Parser`, so `Flags::parse()` and `Flags::try_parse_from` work as with a derived parser.

use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches, Command, CommandFactory, FromArgMatches, Parser};

use super::settings::SETTINGS;

/// The command line: `--config FILE`, and the settings it overrides.
#[derive(Debug, Default, Clone)]
pub struct Flags {
    /// TOML configuration file.
    pub config: Option<PathBuf>,
    /// `--check`: load and validate the settings, then exit (installers, config management).
    pub check: bool,
    /// `--healthcheck`: ask the running hubferry's admin listener, then exit.
    pub healthcheck: bool,
    /// The key of each setting given, with its values (several for a repeated flag).
    overrides: Vec<(&'static str, Override)>,
}

/// A flag's value as the layers take it.
#[derive(Debug, Clone)]
pub enum Override {
    One(String),
    /// A repeated flag: its values, each split at commas.
    Many(Vec<String>),
}

impl Flags {
    /// The key and value of each setting given on the command line.
    pub fn overrides(&self) -> &[(&'static str, Override)] {
        &self.overrides
    }

    /// The flags a `--healthcheck` asks with. A container's HEALTHCHECK runs `hubferry
    /// --healthcheck` beside the server with the container's environment, but without the flags
    /// given after the image name (`docker run IMAGE --admin-listen 0.0.0.0:9200`): those are on
    /// the server's own command line. So a health check given no settings of its own takes the
    /// command line of PID 1 when PID 1 is this same program, the image's entrypoint. Anywhere
    /// else (an init system as PID 1, `docker run --init`, a PID 1 it may not look at) its own
    /// flags stand.
    pub fn for_healthcheck(self) -> Flags {
        if !self.healthcheck || self.config.is_some() || !self.overrides.is_empty() {
            return self;
        }
        match entrypoint_flags() {
            Some(server) => Flags {
                healthcheck: true,
                check: false,
                ..server
            },
            None => self,
        }
    }
}

/// The flags of PID 1, when it runs the same executable as this process.
fn entrypoint_flags() -> Option<Flags> {
    use std::os::unix::fs::MetadataExt;
    let same =
        |a: &std::fs::Metadata, b: &std::fs::Metadata| (a.dev(), a.ino()) == (b.dev(), b.ino());
    let pid1 = std::fs::metadata("/proc/1/exe").ok()?;
    let own = std::fs::metadata("/proc/self/exe").ok()?;
    if !same(&pid1, &own) {
        return None;
    }
    let cmdline = std::fs::read("/proc/1/cmdline").ok()?;
    Flags::try_parse_from(command_line(&cmdline)).ok()
}

/// The arguments in a `/proc/PID/cmdline`: each ends in a NUL, the program's name first.
fn command_line(raw: &[u8]) -> Vec<std::ffi::OsString> {
    use std::os::unix::ffi::OsStrExt;
    raw.strip_suffix(&[0])
        .unwrap_or(raw)
        .split(|byte| *byte == 0)
        .map(|arg| std::ffi::OsStr::from_bytes(arg).to_owned())
        .collect()
}

impl CommandFactory for Flags {
    fn command() -> Command {
        let mut command = Command::new("hubferry")
            .version(env!("CARGO_PKG_VERSION"))
            .about("A streaming Docker Hub accelerator")
            .after_help(settings_without_a_flag())
            .arg(
                Arg::new("config")
                    .long("config")
                    .value_name("FILE")
                    .value_parser(clap::value_parser!(PathBuf))
                    .help("TOML configuration file"),
            )
            .arg(
                Arg::new("check")
                    .long("check")
                    .action(ArgAction::SetTrue)
                    .help(
                        "Load and validate the settings (file, environment, flags) and exit: 0 \
                         when hubferry would start with them, 2 with every problem otherwise",
                    ),
            )
            .arg(
                Arg::new("healthcheck")
                    .long("healthcheck")
                    .action(ArgAction::SetTrue)
                    .conflicts_with("check")
                    .help(
                        "Ask the hubferry running with these settings for /healthz on its admin \
                         listener and exit: 0 when it answers 2xx, 1 otherwise (container \
                         health checks). With no settings of its own, in a container whose main \
                         process is hubferry, that process's flags count too",
                    ),
            );
        for setting in SETTINGS {
            let Some(flag) = &setting.flag else { continue };
            let mut arg = Arg::new(setting.key)
                .long(flag.long.trim_start_matches('-'))
                .value_name(flag.value_name)
                .help(help(setting));
            if flag.repeated {
                arg = arg.action(ArgAction::Append).value_delimiter(',');
            }
            command = command.arg(arg);
        }
        command
    }

    fn command_for_update() -> Command {
        Self::command()
    }
}

/// `help [setting: key; env: HUBFERRY_KEY; default: ...]`, the default without the README's
/// backticks: where each flag's value goes, and what it replaces.
fn help(setting: &super::Setting) -> String {
    let mut help = setting.help.to_owned();
    if setting.flag.as_ref().is_some_and(|f| f.repeated) {
        help.push_str("; repeat it or separate values with commas");
    }
    help.push_str(&format!(" [setting: {}", setting.key));
    if let Some(env) = setting.env() {
        help.push_str(&format!("; env: {env}"));
    }
    help.push_str(&format!(
        "; default: {}]",
        setting.default_text().replace('`', "")
    ));
    help
}

fn settings_without_a_flag() -> String {
    let mut text = String::from(
        "Every flag overrides the same setting from the environment or the --config file.\n\
         Settings without a flag:",
    );
    for setting in SETTINGS.iter().filter(|s| s.flag.is_none()) {
        let place = setting
            .env()
            .map_or_else(|| "file only".to_owned(), |env| format!("file or {env}"));
        text.push_str(&format!("\n  {} ({place}): {}", setting.key, setting.help));
    }
    text
}

impl FromArgMatches for Flags {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut overrides = Vec::new();
        for setting in SETTINGS {
            let Some(flag) = &setting.flag else { continue };
            let value = if flag.repeated {
                matches
                    .get_many::<String>(setting.key)
                    .map(|values| Override::Many(values.cloned().collect()))
            } else {
                matches
                    .get_one::<String>(setting.key)
                    .cloned()
                    .map(Override::One)
            };
            if let Some(value) = value {
                overrides.push((setting.key, value));
            }
        }
        Ok(Flags {
            config: matches.get_one::<PathBuf>("config").cloned(),
            check: matches.get_flag("check"),
            healthcheck: matches.get_flag("healthcheck"),
            overrides,
        })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Parser for Flags {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proc_command_line_splits_at_its_nuls() {
        let args = command_line(b"/usr/local/bin/hubferry\0--admin-listen\0[::]:9200\0\0");
        assert_eq!(
            args,
            ["/usr/local/bin/hubferry", "--admin-listen", "[::]:9200", ""]
        );
        let flags = Flags::try_parse_from(command_line(
            b"/usr/local/bin/hubferry\0--admin-listen\0[::]:9200\0",
        ))
        .unwrap();
        assert_eq!(flags.overrides().len(), 1);
        assert!(command_line(b"").iter().all(|a| a.is_empty()));
    }

    #[test]
    fn a_health_check_given_settings_of_its_own_keeps_them() {
        let own =
            Flags::try_parse_from(["hubferry", "--healthcheck", "--admin-listen", "127.0.0.1:1"])
                .unwrap()
                .for_healthcheck();
        assert!(own.healthcheck);
        assert!(
            matches!(own.overrides(), [("admin_listen", Override::One(a))] if a == "127.0.0.1:1")
        );
        // Not a health check: nothing is looked up.
        let server = Flags::try_parse_from(["hubferry"])
            .unwrap()
            .for_healthcheck();
        assert!(!server.healthcheck && server.overrides().is_empty());
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Flags::command().debug_assert();
    }

    #[test]
    fn help_names_each_flags_key_environment_variable_and_default() {
        let help = Flags::command().render_long_help().to_string();
        for setting in SETTINGS {
            assert!(help.contains(setting.key), "{}", setting.key);
            if setting.flag.is_some() {
                let default = format!("default: {}]", setting.default_text().replace('`', ""));
                assert!(help.contains(&default), "{}: {default}", setting.key);
            }
            if let Some(env) = setting.env() {
                assert!(help.contains(&env), "{env}");
            }
        }
    }

    #[test]
    fn repeated_flags_take_commas_and_single_ones_refuse_a_second_value() {
        let flags = Flags::try_parse_from([
            "hubferry",
            "--allow",
            "10.0.0.0/8,10.1.0.0/16",
            "--allow",
            "10.2.0.0/16",
            "--listen",
            "127.0.0.1:1",
        ])
        .unwrap();
        let overrides: Vec<_> = flags
            .overrides()
            .iter()
            .map(|(key, value)| format!("{key}={value:?}"))
            .collect();
        assert_eq!(
            overrides,
            [
                "listen=One(\"127.0.0.1:1\")",
                "access.allow=Many([\"10.0.0.0/8\", \"10.1.0.0/16\", \"10.2.0.0/16\"])"
            ]
        );
        assert!(Flags::try_parse_from(["hubferry", "--listen", "a", "--listen", "b"]).is_err());
    }
}

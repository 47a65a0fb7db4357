//! What one setting declares (its key, default, flag and help) and how the README and the
//! environment name it. The settings themselves are declared in `settings.rs`.

/// One setting, as the flags, the layers and the README see it.
#[derive(Debug)]
pub struct Setting {
    /// As in the file (`upstream.registry`); the environment variable is made from it.
    pub key: &'static str,
    /// The value a user would write, applied beneath the file; `None`: unset (off, none, or
    /// derived; see `shown`).
    pub default: Option<&'static str>,
    /// What the documentation says of the default, beside `default` or instead of it.
    pub shown: Option<&'static str>,
    pub flag: Option<Flag>,
    /// Set only in the file (structured settings).
    pub file_only: bool,
    pub help: &'static str,
}

#[derive(Debug)]
pub struct Flag {
    /// With its dashes, as typed: `--listen`.
    pub long: &'static str,
    pub value_name: &'static str,
    /// Repeatable, each value a comma-separated list.
    pub repeated: bool,
}

impl Setting {
    /// `HUBFERRY_` and the key upper-cased, each `.` (a table) written `__`.
    pub fn env(&self) -> Option<String> {
        (!self.file_only).then(|| {
            format!(
                "HUBFERRY_{}",
                self.key.to_ascii_uppercase().replace('.', "__")
            )
        })
    }

    /// The default as the README writes it: the literal in backticks, then what `shown` adds.
    pub fn default_text(&self) -> String {
        match (self.default, self.shown) {
            (Some(value), None) => format!("`{value}`"),
            (Some(value), Some(shown)) => format!("`{value}` ({shown})"),
            (None, Some(shown)) => shown.to_owned(),
            (None, None) => "none".to_owned(),
        }
    }

    /// The flag as the README writes it (`--listen ADDR`), or what stands for none.
    pub fn flag_text(&self) -> String {
        match (&self.flag, self.file_only) {
            (Some(flag), _) => format!("{} {}", flag.long, flag.value_name),
            (None, true) => "none (file only)".to_owned(),
            (None, false) => "none".to_owned(),
        }
    }
}

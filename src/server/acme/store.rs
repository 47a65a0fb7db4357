//! What ACME keeps on disk, in `tls.acme.cache_dir`: the account's credentials (its private
//! key among them) and the certificate pair in service. Written whole and renamed into place,
//! so a crash never leaves half a file, and readable by hubferry's user only.

use std::{
    fs,
    io::{self, Write as _},
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::Path,
};

use instant_acme::AccountCredentials;

/// The stored credentials, or `None` when there are none yet.
pub fn read_account(path: &Path) -> Result<Option<AccountCredentials>, String> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{}: not ACME account credentials: {e}", path.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

pub fn write_account(path: &Path, credentials: &AccountCredentials) -> Result<(), String> {
    let json = serde_json::to_vec_pretty(credentials).map_err(|e| e.to_string())?;
    write_private(path, &json)
}

/// The key first, then the chain: the listener's file watcher reloads once both are in place,
/// and [`Certificates::reload`](crate::server::tls::Certificates::reload) is called after.
pub fn write_pair(
    (cert, key): &(std::path::PathBuf, std::path::PathBuf),
    chain_pem: &str,
    key_pem: &str,
) -> Result<(), String> {
    write_private(key, key_pem.as_bytes())?;
    write_private(cert, chain_pem.as_bytes())
}

/// Writes `path` through a temporary file beside it, mode 0600, in a directory made 0700 if
/// missing.
fn write_private(path: &Path, contents: &[u8]) -> Result<(), String> {
    let failed = |e: io::Error| format!("{}: {e}", path.display());
    if let Some(dir) = path.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(failed)?;
    file.write_all(contents).map_err(failed)?;
    file.sync_all().map_err(failed)?;
    fs::rename(&tmp, path).map_err(failed)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn files_are_private_and_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("acme");
        let pair = (cache.join("m.crt"), cache.join("m.key"));
        write_pair(&pair, "chain 1", "key 1").unwrap();
        write_pair(&pair, "chain 2", "key 2").unwrap();
        assert_eq!(fs::read_to_string(&pair.0).unwrap(), "chain 2");
        assert_eq!(fs::read_to_string(&pair.1).unwrap(), "key 2");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&cache), 0o700);
        assert_eq!(mode(&pair.1), 0o600);
        assert_eq!(
            fs::read_dir(&cache).unwrap().count(),
            2,
            "no temporary left"
        );
        assert!(matches!(read_account(&cache.join("none.json")), Ok(None)));
        fs::write(cache.join("bad.json"), "{").unwrap();
        let Err(err) = read_account(&cache.join("bad.json")) else {
            panic!("a broken file read as credentials");
        };
        assert!(err.contains("not ACME account credentials"), "{err}");
    }
}

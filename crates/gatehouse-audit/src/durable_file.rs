//! Replacing a small file atomically and durably (the kept checkpoint, sink cursors).

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

/// Writes `bytes` to `tmp` (mode 0600), syncs it, renames it over `path` and syncs the
/// directory: after a crash the file holds either the old contents or the new, never a mix.
/// The error names neither path; callers say which file it was.
pub fn replace(path: &Path, tmp: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(tmp, path)?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    File::open(dir.unwrap_or(Path::new(".")))?.sync_all()
}

/// Creates `path` holding `bytes` (a secret key), mode 0600, in a directory created with mode
/// 0700 if missing; fails if the file exists. Synced, and so is its directory.
pub fn create_secret(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    File::open(dir.unwrap_or(Path::new(".")))?.sync_all()
}

/// Reads a secret key file, refusing one that others can read. Errors name the file only.
pub fn read_secret(path: &Path) -> io::Result<zeroize::Zeroizing<String>> {
    use std::os::unix::fs::PermissionsExt as _;
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path)?);
    let mode = std::fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is readable by others (mode {:o}); chmod 600 it",
                path.display(),
                mode & 0o777
            ),
        ));
    }
    Ok(text)
}

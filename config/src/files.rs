//! Files the platform writes that hold secrets or personal data: written atomically, owner-only.

use std::path::Path;

/// Writes a file so that a crash leaves either the old or the new content, never a mix. The
/// file is readable by its owner only (mode 0600): what the gateway writes holds secrets (keys
/// in the config) or personal data (audit records).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.set_permissions(
            <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
        )?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Makes `dir` (created if missing) mode 0700 and each of `files` in it that exists mode 0600:
/// run at start, so files written by an older version or by hand are private too.
pub fn secure_private_dir(dir: &Path, files: &[&str]) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    // A shared sticky directory (`/tmp` given as the data dir) is left as it is; its files are
    // still made private.
    if std::fs::metadata(dir)?.permissions().mode() & 0o1000 == 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    for f in files {
        let path = dir.join(f);
        if path.is_file() {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

//! Where miglab finds its tools and keeps its state. Every location can be overridden from the
//! environment, and defaults match what `ci/setup` installs.

use std::path::{Path, PathBuf};

/// Where `ci/setup` installs virtiofsd (`$MIGLAB_PREFIX/bin`).
pub fn prefix() -> PathBuf {
    env_path("MIGLAB_PREFIX").unwrap_or_else(|| PathBuf::from("/opt/miglab"))
}

/// Where `ci/setup` unpacks the guest kernel and miglab caches images.
pub fn cache() -> PathBuf {
    env_path("MIGLAB_CACHE").unwrap_or_else(|| PathBuf::from("/var/cache/miglab"))
}

/// The parent of every lab directory (`<root>/<lab name>`), outside any repository.
pub fn lab_root() -> PathBuf {
    env_path("MIGLAB_LAB_ROOT").unwrap_or_else(|| PathBuf::from("/var/lib/miglab"))
}

/// The unpacked distribution kernel package.
pub fn guest_kernel_dir() -> PathBuf {
    cache().join("kernel/current")
}

/// The distribution's Python, which has the `rados` binding (a pyenv or venv one does not).
pub fn system_python() -> PathBuf {
    env_path("MIGLAB_PYTHON").unwrap_or_else(|| PathBuf::from("/usr/bin/python3"))
}

fn env_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var).filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// Finds an executable: `$PATH`, then the sbin directories (root's tools), then our prefix.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    dirs.extend(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from));
    dirs.push(prefix().join("bin"));
    dirs.into_iter().map(|d| d.join(name)).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// Like [`find_tool`], but falls back to the bare name so that the spawn error names it.
pub fn tool(name: &str) -> PathBuf {
    find_tool(name).unwrap_or_else(|| PathBuf::from(name))
}

/// Makes `dir` a directory only its owner (this user) can enter, or checks that it already is
/// one: a predictable path (a control socket's directory in /tmp) that someone else made first,
/// or made a symlink, must not be used as root.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let m = std::fs::symlink_metadata(dir)?;
    let me = nix::unistd::geteuid().as_raw();
    let refuse = |why: String| {
        Err(std::io::Error::other(format!("refusing {}: {why}; remove it and try again", dir.display())))
    };
    if !m.file_type().is_dir() {
        return refuse("it is not a directory (a symlink?)".into());
    }
    if m.uid() != me {
        return refuse(format!("it belongs to uid {}, not {me}", m.uid()));
    }
    if m.permissions().mode() & 0o077 != 0 {
        return refuse(format!("others may enter it (mode {:o})", m.permissions().mode() & 0o777));
    }
    Ok(())
}

#[cfg(test)]
mod private_dir_tests {
    use super::private_dir;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_private_directory_is_made_or_refused() {
        let t = tempfile::tempdir().expect("tmp");
        let d = t.path().join("ctl");
        private_dir(&d).expect("made");
        assert_eq!(std::fs::metadata(&d).expect("meta").permissions().mode() & 0o777, 0o700);
        private_dir(&d).expect("already ours");
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        assert!(private_dir(&d).expect_err("open to others").to_string().contains("mode 755"));
        let link = t.path().join("link");
        std::os::unix::fs::symlink(t.path(), &link).expect("symlink");
        assert!(private_dir(&link).expect_err("a symlink").to_string().contains("not a directory"));
    }
}

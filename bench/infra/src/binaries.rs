//! The builds under test: which QEMU, which virtiofsd, which guest kernel. By default what is
//! installed; a scenario's `[binaries]` or `run --qemu/--virtiofsd/--kernel` choose others, so
//! two builds can be compared (a sweep can cross them). Every run records each binary's path,
//! version and SHA-256.

use crate::image::{self, GuestImage, ImageError, ImageInputs};
use crate::paths;
use crate::process;
use miglab_model::BinaryInfo;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;
use thiserror::Error;

pub const QEMU: &str = "qemu-system-x86_64";
pub const VIRTIOFSD: &str = "virtiofsd";
/// The oldest QEMU that migrates a vhost-user-fs device.
pub const QEMU_MIN: (u32, u32) = (8, 2);
/// The oldest virtiofsd with `--migration-mode`.
pub const VIRTIOFSD_MIN: (u32, u32) = (1, 11);

/// `[binaries]` of a scenario (and the `run` options): each unset one is the installed one.
/// Relative paths are relative to the scenario's directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinaryChoice {
    /// A `qemu-system-x86_64`.
    #[serde(default)]
    pub qemu: Option<PathBuf>,
    /// A `virtiofsd`.
    #[serde(default)]
    pub virtiofsd: Option<PathBuf>,
    /// An unpacked kernel package: `boot/vmlinuz-*` and `lib/modules/<release>/` (what
    /// `ci/setup` unpacks into /var/cache/miglab/kernel/current). The guest image is built for
    /// it with the current image's agent, and cached by hash.
    #[serde(default)]
    pub kernel: Option<PathBuf>,
}

#[derive(Debug, Error)]
pub enum BinariesError {
    #[error("the {role} {} does not exist: give the path of a built binary (--{role}, or [binaries] {role} = \"...\")", .path.display())]
    Missing { role: &'static str, path: PathBuf },
    #[error("the {role} {} is not an executable file: chmod +x it, or give the binary itself rather than its directory", .path.display())]
    NotExecutable { role: &'static str, path: PathBuf },
    #[error("the kernel {} is not an unpacked kernel package (boot/vmlinuz-* and lib/modules/<release>/): unpack the .deb with `dpkg-deb -x linux-image-*.deb DIR` and give DIR", .0.display())]
    NotKernelPackage(PathBuf),
    #[error("the guest image for the kernel {}: {source}", .path.display())]
    Image { path: PathBuf, source: ImageError },
}

impl BinaryChoice {
    /// Whether anything is chosen.
    pub fn is_default(&self) -> bool {
        self == &Self::default()
    }

    /// `self` with `over`'s choices on top.
    pub fn overridden(&self, over: &BinaryChoice) -> BinaryChoice {
        BinaryChoice {
            qemu: over.qemu.clone().or_else(|| self.qemu.clone()),
            virtiofsd: over.virtiofsd.clone().or_else(|| self.virtiofsd.clone()),
            kernel: over.kernel.clone().or_else(|| self.kernel.clone()),
        }
    }

    /// Relative paths made absolute against `base` (the scenario's directory).
    pub fn anchored(&self, base: &Path) -> BinaryChoice {
        let abs =
            |p: &Option<PathBuf>| p.as_ref().map(|p| if p.is_absolute() { p.clone() } else { base.join(p) });
        BinaryChoice { qemu: abs(&self.qemu), virtiofsd: abs(&self.virtiofsd), kernel: abs(&self.kernel) }
    }

    pub fn qemu_path(&self) -> PathBuf {
        self.qemu.clone().unwrap_or_else(|| paths::tool(QEMU))
    }
    pub fn virtiofsd_path(&self) -> PathBuf {
        self.virtiofsd.clone().unwrap_or_else(|| paths::tool(VIRTIOFSD))
    }

    /// Refuses a chosen binary that is not there or cannot run, and a kernel directory that is
    /// not a kernel package. The installed ones are `doctor`'s business.
    pub fn check(&self) -> Result<(), BinariesError> {
        for (role, p) in [("qemu", &self.qemu), ("virtiofsd", &self.virtiofsd)] {
            if let Some(p) = p {
                executable(role, p)?;
            }
        }
        if let Some(k) = &self.kernel {
            let has_vmlinuz = std::fs::read_dir(k.join("boot"))
                .map(|d| d.flatten().any(|e| e.file_name().to_string_lossy().starts_with("vmlinuz-")))
                .unwrap_or(false);
            if !has_vmlinuz || !k.join("lib/modules").is_dir() {
                return Err(BinariesError::NotKernelPackage(k.clone()));
            }
        }
        Ok(())
    }

    /// The guest image directory for the chosen kernel (None: the current image).
    pub fn image(&self) -> Result<Option<PathBuf>, BinariesError> {
        let Some(k) = &self.kernel else { return Ok(None) };
        self.check()?;
        let cache = paths::cache();
        let wrap = |source| BinariesError::Image { path: k.clone(), source };
        let current = GuestImage::current(&cache).map_err(wrap)?;
        let mut inputs = ImageInputs::defaults(current.agent());
        inputs.kernel_package = k.clone();
        inputs.compression = current.manifest.compression;
        inputs.busybox = current.manifest.busybox.as_ref().map(PathBuf::from);
        let img = image::build_keyed(&inputs, &cache).map_err(wrap)?;
        Ok(Some(img.dir))
    }
}

fn executable(role: &'static str, p: &Path) -> Result<(), BinariesError> {
    use std::os::unix::fs::PermissionsExt;
    let m = std::fs::metadata(p).map_err(|_| BinariesError::Missing { role, path: p.into() })?;
    if !m.is_file() || m.permissions().mode() & 0o111 == 0 {
        return Err(BinariesError::NotExecutable { role, path: p.into() });
    }
    Ok(())
}

/// The first line of `program --version`.
pub fn version(program: &Path) -> Option<String> {
    version_line(program).ok()
}

/// The first line of `program --version`, or why it could not be run.
pub fn version_line(program: &Path) -> Result<String, process::ToolError> {
    let out = process::run_tool(Command::new(program).arg("--version"), Duration::from_secs(10))?;
    Ok(out.stdout.lines().next().unwrap_or_default().trim().to_string())
}

/// `X.Y` of the first version-looking word after `prefix` in `text`.
pub fn parse_version(text: &str, prefix: &str) -> Option<(u32, u32)> {
    let rest = &text[text.find(prefix)? + prefix.len()..];
    let word = rest.split_whitespace().next()?;
    let mut it = word.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// A `--version` output judged against a minimum: `X.Y at <at>`, or what is wrong with it.
pub fn judge_version(text: &str, prefix: &str, min: Option<(u32, u32)>, at: &str) -> Result<String, String> {
    match (parse_version(text, prefix), min) {
        (Some(v), Some(m)) if v < m => Err(format!("{}.{} at {at} (need >= {}.{})", v.0, v.1, m.0, m.1)),
        (Some(v), _) => Ok(format!("{}.{} at {at}", v.0, v.1)),
        (None, Some(_)) => Err(format!("unknown version at {at}")),
        (None, None) => Ok(at.to_string()),
    }
}

/// The guest kernel of `image` as a binary under test: its vmlinuz (or its package), release and
/// SHA-256.
pub fn kernel_info(image: &GuestImage) -> BinaryInfo {
    let vmlinuz = std::fs::read_dir(Path::new(&image.manifest.kernel_package).join("boot"))
        .ok()
        .and_then(|d| d.flatten().map(|e| e.path()).find(|p| p.to_string_lossy().contains("vmlinuz-")));
    BinaryInfo {
        role: "kernel".into(),
        path: vmlinuz
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or(image.manifest.kernel_package.clone()),
        version: Some(image.manifest.kernel_release.clone()),
        sha256: vmlinuz.as_deref().and_then(sha256_file),
    }
}

/// The SHA-256 of a file, remembered per path, size and modification time (a QEMU binary is
/// tens of MiB and every repetition records it).
pub fn sha256_file(p: &Path) -> Option<String> {
    type Key = (PathBuf, u64, std::time::SystemTime);
    static SEEN: Mutex<Option<HashMap<Key, String>>> = Mutex::new(None);
    let m = std::fs::metadata(p).ok()?;
    let key = (p.to_path_buf(), m.len(), m.modified().ok()?);
    if let Some(h) = SEEN.lock().ok()?.as_ref().and_then(|s| s.get(&key)) {
        return Some(h.clone());
    }
    let mut f = std::fs::File::open(p).ok()?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).ok()?;
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    SEEN.lock().ok()?.get_or_insert_with(HashMap::new).insert(key, hex.clone());
    Some(hex)
}

/// What a run records of one binary.
pub fn info(role: &str, path: &Path) -> BinaryInfo {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    BinaryInfo {
        role: role.into(),
        path: path.display().to_string(),
        version: version(&path),
        sha256: sha256_file(&path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_real_banners() {
        assert_eq!(
            parse_version("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)", "version"),
            Some((10, 0))
        );
        assert_eq!(
            parse_version("QEMU emulator version 7.2.15 (Debian 1:7.2+dfsg-7)", "version"),
            Some((7, 2))
        );
        assert_eq!(parse_version("virtiofsd 1.14.0", "virtiofsd"), Some((1, 14)));
        assert_eq!(
            parse_version(
                "ceph version 16.2.15 (618f440892089921c3e944a991122ddc44e60516) pacific",
                "ceph version"
            ),
            Some((16, 2))
        );
        assert!(parse_version("nothing here", "version").is_none());
        assert!((7, 2) < QEMU_MIN && (10, 0) >= QEMU_MIN);
        assert_eq!(
            judge_version("virtiofsd 1.10.0", "virtiofsd", Some(VIRTIOFSD_MIN), "/v"),
            Err("1.10 at /v (need >= 1.11)".into())
        );
        assert_eq!(
            judge_version("virtiofsd 1.14.0", "virtiofsd", Some(VIRTIOFSD_MIN), "/v"),
            Ok("1.14 at /v".into())
        );
        assert_eq!(
            judge_version("?", "virtiofsd", Some(VIRTIOFSD_MIN), "/v"),
            Err("unknown version at /v".into())
        );
    }

    #[test]
    fn a_choice_overrides_field_by_field_and_relative_paths_follow_the_scenario() {
        let scen = BinaryChoice { qemu: Some("q/a".into()), virtiofsd: Some("/v".into()), kernel: None };
        let cli = BinaryChoice { qemu: Some("/b".into()), ..Default::default() };
        let o = scen.overridden(&cli);
        assert_eq!(o.qemu.as_deref(), Some(Path::new("/b")));
        assert_eq!(o.virtiofsd.as_deref(), Some(Path::new("/v")));
        let a = scen.anchored(Path::new("/s"));
        assert_eq!(a.qemu.as_deref(), Some(Path::new("/s/q/a")));
        assert_eq!(a.virtiofsd.as_deref(), Some(Path::new("/v")));
        assert!(BinaryChoice::default().is_default() && !scen.is_default());
    }

    #[test]
    fn a_missing_or_unrunnable_binary_and_a_bare_kernel_file_are_refused_by_name() {
        let d = tempfile::tempdir().expect("tmp");
        let gone = BinaryChoice { qemu: Some(d.path().join("nope")), ..Default::default() };
        assert!(matches!(gone.check(), Err(BinariesError::Missing { role: "qemu", .. })));
        let plain = d.path().join("plain");
        std::fs::write(&plain, "x").expect("write");
        let not_x = BinaryChoice { virtiofsd: Some(plain.clone()), ..Default::default() };
        let e = not_x.check().expect_err("not executable");
        assert!(e.to_string().contains("virtiofsd") && e.to_string().contains("chmod"), "{e}");
        let k = BinaryChoice { kernel: Some(plain), ..Default::default() };
        assert!(matches!(k.check(), Err(BinariesError::NotKernelPackage(_))));
    }

    #[test]
    fn a_binary_is_hashed_once_per_content() {
        let d = tempfile::tempdir().expect("tmp");
        let p = d.path().join("f");
        std::fs::write(&p, "abc").expect("write");
        assert_eq!(
            sha256_file(&p).as_deref(),
            Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
    }
}

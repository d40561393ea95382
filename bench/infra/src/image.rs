//! The guest image: the distribution's kernel (as an ELF vmlinux for PVH boot, the bzImage kept
//! as a fallback) and an initramfs miglab assembles itself: the virtio, FUSE, virtio-fs and
//! virtio-console modules, busybox for debugging, and the guest agent as `/init`.
//!
//! Images are cached under `<cache>/images/<key>`, the key a hash of every input, so a build
//! with unchanged inputs costs only the hashing.

pub mod cpio;
pub mod kernel;
pub mod kmod;

use crate::paths;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;
use thiserror::Error;

/// Bump when the image layout changes, so old cached images are not reused.
const FORMAT: u32 = 3;

/// How the initramfs is stored. Uncompressed is the default: the guest unpacks it under TCG,
/// where gunzip of ~4 MiB cost ~100 ms of boot (1.95 s → 1.85 s measured).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    None,
    Gzip,
}

/// The modules the guest needs; their dependencies are added.
pub const GUEST_MODULES: &[&str] = &["virtio_pci", "virtio_console", "virtiofs"];

/// Applets linked to busybox in the image (for `rdinit=/bin/sh` debugging).
const BUSYBOX_APPLETS: &[&str] =
    &["sh", "ls", "cat", "mount", "umount", "dmesg", "ps", "echo", "sleep", "poweroff"];

#[derive(Debug, Error)]
pub enum ImageError {
    #[error("no guest kernel in {0}: run `ci/setup`, which downloads and unpacks the distribution's kernel package")]
    NoKernel(PathBuf),
    #[error(
        "no guest agent at {0}: build it with `miglab image build` from the source tree, or pass --agent"
    )]
    NoAgent(PathBuf),
    #[error("no guest image in {0}: run `miglab image build` (ci/setup does)")]
    NotBuilt(PathBuf),
    #[error("could not {what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("the guest kernel {path}: {source}")]
    Kernel { path: PathBuf, source: kernel::KernelError },
    #[error(transparent)]
    Kmod(#[from] kmod::KmodError),
    #[error("the image manifest {path} is damaged ({source}): run `miglab image build`")]
    Manifest { path: PathBuf, source: serde_json::Error },
    #[error("building the guest agent failed: {0}")]
    AgentBuild(String),
    #[error("no guest image in {images} has this miglab's agent (build {ours}; the current image's is {found}, built by another miglab or from another tree): run `miglab image build` with this miglab")]
    OtherAgent { images: PathBuf, ours: String, found: String },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ImageError {
    let what = what.into();
    move |source| ImageError::Io { what, source }
}

/// What went into an image, and what came out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub key: String,
    pub kernel_release: String,
    /// The package directory the kernel came from.
    pub kernel_package: String,
    pub modules: Vec<String>,
    pub agent_sha256: String,
    /// The agent's build id (`miglab-agent --build-id`): which miglab the image serves. None in
    /// images built before it was recorded.
    #[serde(default)]
    pub agent_build: Option<String>,
    pub busybox: Option<String>,
    pub compression: Compression,
    pub vmlinux_bytes: u64,
    pub initramfs_bytes: u64,
    pub build_ms: u64,
}

/// A built image.
#[derive(Debug, Clone)]
pub struct GuestImage {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl GuestImage {
    /// The ELF kernel, booted through PVH.
    pub fn vmlinux(&self) -> PathBuf {
        self.dir.join("vmlinux")
    }
    /// The original bzImage, for a QEMU that cannot boot the ELF.
    pub fn bzimage(&self) -> PathBuf {
        self.dir.join("bzImage")
    }
    pub fn initramfs(&self) -> PathBuf {
        self.dir.join("initramfs.img")
    }
    /// The guest agent inside the initramfs, kept beside it so that an image for another
    /// kernel can be built with the same agent.
    pub fn agent(&self) -> PathBuf {
        self.dir.join("agent")
    }

    /// The image of this miglab's own agent: the one its `image build` made (found by the
    /// agent's build id, whatever another miglab built since), or the image `current` points
    /// at if its agent is ours. Another miglab's agent is refused here, with the fix.
    pub fn current(cache: &Path) -> Result<Self, ImageError> {
        let images = cache.join("images");
        let ours = miglab_workloads::control::AGENT_BUILD;
        if let Ok(img) = Self::at(&images.join(format!("agent-{ours}"))) {
            return Ok(img);
        }
        let img = Self::at(&images.join("current")).map_err(|e| match e {
            ImageError::NotBuilt(_) => ImageError::NotBuilt(images.clone()),
            e => e,
        })?;
        match img.manifest.agent_build.as_deref() {
            Some(b) if b == ours => Ok(img),
            found => Err(ImageError::OtherAgent {
                images,
                ours: ours.into(),
                found: found.unwrap_or("not recorded").into(),
            }),
        }
    }

    /// The image in `dir`.
    pub fn at(dir: &Path) -> Result<Self, ImageError> {
        let path = dir.join("manifest.json");
        let text = std::fs::read_to_string(&path).map_err(|_| ImageError::NotBuilt(dir.into()))?;
        let manifest = serde_json::from_str(&text)
            .map_err(|source| ImageError::Manifest { path: path.clone(), source })?;
        let dir = std::fs::canonicalize(dir).map_err(io(format!("resolve {}", dir.display())))?;
        Ok(Self { dir, manifest })
    }
}

/// The inputs of an image.
#[derive(Debug, Clone)]
pub struct ImageInputs {
    /// The unpacked kernel package (`boot/vmlinuz-*`, `lib/modules/*`).
    pub kernel_package: PathBuf,
    /// The static guest agent.
    pub agent: PathBuf,
    /// A static busybox, if one is to be included.
    pub busybox: Option<PathBuf>,
    pub compression: Compression,
}

impl ImageInputs {
    /// The defaults: the kernel `ci/setup` unpacked, busybox from the system, and `agent`.
    pub fn defaults(agent: PathBuf) -> Self {
        Self {
            kernel_package: paths::guest_kernel_dir(),
            agent,
            busybox: paths::find_tool("busybox"),
            compression: Compression::default(),
        }
    }
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// The kernel release and bzImage in an unpacked kernel package.
fn find_kernel(pkg: &Path) -> Result<(String, PathBuf), ImageError> {
    let boot = pkg.join("boot");
    let rd = std::fs::read_dir(&boot).map_err(|_| ImageError::NoKernel(pkg.to_path_buf()))?;
    rd.flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("vmlinuz-").map(|r| (r.to_string(), e.path()))
        })
        .max()
        .ok_or_else(|| ImageError::NoKernel(pkg.to_path_buf()))
}

/// Builds the image for `inputs` into `cache`, or reuses the cached one, and makes it the
/// current image. Returns the image and whether it was reused.
pub fn build(inputs: &ImageInputs, cache: &Path) -> Result<(GuestImage, bool), ImageError> {
    let (img, reused) = build_in(inputs, cache)?;
    let images = cache.join("images");
    point(&images, "current", &img.manifest.key)?;
    // Found again by its agent's build, whatever another miglab makes `current` later.
    if let Some(b) = &img.manifest.agent_build {
        point(&images, &format!("agent-{b}"), &img.manifest.key)?;
    }
    Ok((img, reused))
}

/// The build id of the agent binary at `agent` (it runs on the host: it is static).
fn agent_build(agent: &Path) -> Option<String> {
    let out = std::process::Command::new(agent).arg("--build-id").output().ok()?;
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && id.len() == 16 && id.chars().all(|c| c.is_ascii_hexdigit())).then_some(id)
}

/// Builds (or reuses) the image for `inputs` without making it current: the image of a chosen
/// kernel, next to the installed one's.
pub fn build_keyed(inputs: &ImageInputs, cache: &Path) -> Result<GuestImage, ImageError> {
    Ok(build_in(inputs, cache)?.0)
}

fn build_in(inputs: &ImageInputs, cache: &Path) -> Result<(GuestImage, bool), ImageError> {
    let start = Instant::now();
    let (release, bz_path) = find_kernel(&inputs.kernel_package)?;
    let bz = std::fs::read(&bz_path).map_err(io(format!("read {}", bz_path.display())))?;
    let tree = kmod::ModuleTree::open(&inputs.kernel_package.join("lib/modules").join(&release))?;
    let modules = tree.resolve(GUEST_MODULES)?;
    let agent = std::fs::read(&inputs.agent).map_err(|_| ImageError::NoAgent(inputs.agent.clone()))?;
    let busybox = match &inputs.busybox {
        Some(p) => Some(std::fs::read(p).map_err(io(format!("read {}", p.display())))?),
        None => None,
    };
    let module_bytes = modules
        .iter()
        .map(|p| Ok((kmod::module_name(p), kmod::read_module(p)?)))
        .collect::<Result<Vec<_>, kmod::KmodError>>()?;

    let mut h = Sha256::new();
    h.update(FORMAT.to_le_bytes());
    h.update(&bz);
    for (name, data) in &module_bytes {
        h.update(name.as_bytes());
        h.update(data);
    }
    h.update(&agent);
    h.update(busybox.as_deref().unwrap_or_default());
    h.update([inputs.compression as u8]);
    let key = hex(&h.finalize())[..16].to_string();

    let images = cache.join("images");
    let dir = images.join(&key);
    if dir.join("manifest.json").exists() {
        // Confirmed current now: the stale-agent check compares sources with this time.
        let _ = std::fs::File::options()
            .append(true)
            .open(dir.join("manifest.json"))
            .and_then(|f| f.set_modified(std::time::SystemTime::now()));
        return Ok((GuestImage::at(&dir)?, true));
    }

    let tmp = images.join(format!("{key}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io(format!("create {}", tmp.display())))?;
    let vmlinux = kernel::extract_vmlinux(&bz)
        .map_err(|source| ImageError::Kernel { path: bz_path.clone(), source })?;
    std::fs::write(tmp.join("vmlinux"), &vmlinux).map_err(io("write vmlinux"))?;
    std::fs::write(tmp.join("bzImage"), &bz).map_err(io("write bzImage"))?;

    let initramfs = initramfs(&module_bytes, &agent, busybox.as_deref(), inputs.compression)
        .map_err(io("assemble the initramfs"))?;
    std::fs::write(tmp.join("initramfs.img"), &initramfs).map_err(io("write the initramfs"))?;
    std::fs::write(tmp.join("agent"), &agent).map_err(io("write the agent"))?;
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(tmp.join("agent"), std::fs::Permissions::from_mode(0o755));
    }

    let manifest = Manifest {
        format: FORMAT,
        key: key.clone(),
        kernel_release: release,
        kernel_package: inputs.kernel_package.display().to_string(),
        modules: module_bytes.iter().map(|(n, _)| n.clone()).collect(),
        agent_sha256: sha256(&agent),
        agent_build: agent_build(&inputs.agent),
        busybox: inputs.busybox.as_ref().map(|p| p.display().to_string()),
        compression: inputs.compression,
        vmlinux_bytes: vmlinux.len() as u64,
        initramfs_bytes: initramfs.len() as u64,
        build_ms: start.elapsed().as_millis() as u64,
    };
    let text = serde_json::to_string_pretty(&manifest)
        .map_err(|e| io("encode manifest")(std::io::Error::other(e)))?;
    std::fs::write(tmp.join("manifest.json"), text).map_err(io("write manifest"))?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir).map_err(io(format!("move the image into {}", dir.display())))?;
    Ok((GuestImage::at(&dir)?, false))
}

/// Points `images/<link>` at `key`, atomically.
fn point(images: &Path, link: &str, key: &str) -> Result<(), ImageError> {
    let tmp = images.join(format!("{link}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(key, &tmp).map_err(io(format!("link the image as {link}")))?;
    std::fs::rename(&tmp, images.join(link)).map_err(io(format!("link the image as {link}")))
}

/// The initramfs: a newc cpio archive, compressed or not.
pub fn initramfs(
    modules: &[(String, Vec<u8>)],
    agent: &[u8],
    busybox: Option<&[u8]>,
    compression: Compression,
) -> std::io::Result<Vec<u8>> {
    let mut w = cpio::CpioWriter::new(Vec::new());
    for d in [
        "/dev",
        "/proc",
        "/sys",
        "/tmp",
        "/mnt",
        "/mnt/cephfs",
        "/bin",
        "/etc",
        "/etc/miglab",
        "/lib",
        "/lib/modules",
    ] {
        w.dir(d)?;
    }
    // The kernel opens /dev/console for init before devtmpfs is mounted.
    w.char_dev("/dev/console", 5, 1)?;
    let mut list = String::new();
    for (name, data) in modules {
        let path = format!("/lib/modules/{name}.ko");
        w.file(&path, 0o644, data)?;
        list.push_str(&path);
        list.push('\n');
    }
    w.file("/etc/miglab/modules", 0o644, list.as_bytes())?;
    w.file("/init", 0o755, agent)?;
    if let Some(bb) = busybox {
        w.file("/bin/busybox", 0o755, bb)?;
        for a in BUSYBOX_APPLETS {
            w.symlink(&format!("/bin/{a}"), "busybox")?;
        }
    }
    let raw = w.finish()?;
    match compression {
        Compression::None => Ok(raw),
        Compression::Gzip => {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&raw)?;
            gz.finish()
        }
    }
}

impl GuestImage {
    /// When running from a source tree: the guest agent's sources changed after this image
    /// was built, so a guest would run the old agent (the image is only rebuilt by
    /// `miglab image build`). Returns the newest changed file.
    pub fn agent_sources_newer(&self) -> Option<PathBuf> {
        let built = std::fs::metadata(self.dir.join("manifest.json")).and_then(|m| m.modified()).ok()?;
        let src = source_tree()?.join("workloads/src");
        newest(&src).filter(|(t, _)| *t > built).map(|(_, p)| p)
    }
}

/// The newest file below `dir` and when it was modified.
fn newest(dir: &Path) -> Option<(std::time::SystemTime, PathBuf)> {
    let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        let cand = if p.is_dir() {
            newest(&p)
        } else {
            e.metadata().and_then(|m| m.modified()).ok().map(|t| (t, p))
        };
        if let Some(c) = cand {
            if best.as_ref().is_none_or(|b| c.0 > b.0) {
                best = Some(c);
            }
        }
    }
    best
}

/// The source tree this miglab was built from, if it is still there.
pub fn source_tree() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?.parent()?.to_path_buf();
    root.join("Cargo.toml").exists().then_some(root)
}

/// The commit of the source tree this miglab was built from, if it is still a git checkout.
pub fn source_commit() -> Option<String> {
    let tree = source_tree()?;
    let o = crate::process::run_tool(
        std::process::Command::new("git").arg("-C").arg(tree).args(["rev-parse", "HEAD"]),
        std::time::Duration::from_secs(5),
    )
    .ok()?;
    Some(o.stdout.trim().to_string())
}

/// Builds the static guest agent from the source tree with cargo and returns its path.
pub fn build_agent(tree: &Path) -> Result<PathBuf, ImageError> {
    let target = "x86_64-unknown-linux-gnu";
    let mut cmd = std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(tree)
        .args([
            "build",
            "--release",
            "--locked",
            "-p",
            "miglab-workloads",
            "--bin",
            "miglab-agent",
            "--target",
            target,
        ])
        // A separate target directory per triple keeps the host build's flags apart.
        .env(
            "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
            "-C target-feature=+crt-static -C strip=symbols",
        );
    // A cold build takes a few minutes on two cores; an hour means something is wrong.
    crate::process::run_tool(&mut cmd, std::time::Duration::from_secs(3600))
        .map_err(|e| ImageError::AgentBuild(e.to_string()))?;
    Ok(tree.join("target").join(target).join("release/miglab-agent"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_source_is_found_in_subdirectories() {
        use std::time::Duration;
        let d = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(d.path().join("a/b")).expect("mkdir");
        let old = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        for (f, t) in [
            ("x.rs", old),
            ("a/y.rs", old + Duration::from_secs(5)),
            ("a/b/z.rs", old + Duration::from_secs(9)),
        ] {
            let p = d.path().join(f);
            std::fs::write(&p, "").expect("write");
            std::fs::File::options().append(true).open(&p).and_then(|h| h.set_modified(t)).expect("mtime");
        }
        let (t, p) = newest(d.path()).expect("newest");
        assert_eq!(p, d.path().join("a/b/z.rs"));
        assert_eq!(t, old + Duration::from_secs(9));
    }

    #[test]
    fn the_initramfs_holds_init_modules_and_their_order() {
        let mods = vec![("virtio".to_string(), b"m1".to_vec()), ("virtiofs".to_string(), b"m2".to_vec())];
        let gz = initramfs(&mods, b"\x7fELF agent", Some(b"bb"), Compression::Gzip).expect("build");
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut raw).expect("gunzip");
        let plain = initramfs(&mods, b"\x7fELF agent", Some(b"bb"), Compression::None).expect("build");
        assert_eq!(plain, raw, "gzip only compresses");
        let text = String::from_utf8_lossy(&raw);
        for name in
            ["init", "dev/console", "lib/modules/virtiofs.ko", "etc/miglab/modules", "bin/sh", "mnt/cephfs"]
        {
            assert!(text.contains(&format!("{name}\0")), "{name} missing");
        }
        assert!(text.contains("/lib/modules/virtio.ko\n/lib/modules/virtiofs.ko\n"), "load order");
        assert!(text.ends_with("TRAILER!!!\0\0\0\0") || text.contains("TRAILER!!!"));
    }

    fn fake(images: &Path, key: &str, agent_build: Option<&str>) {
        let dir = images.join(key);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let m = Manifest {
            format: FORMAT,
            key: key.into(),
            kernel_release: "6.1".into(),
            kernel_package: "/k".into(),
            modules: Vec::new(),
            agent_sha256: String::new(),
            agent_build: agent_build.map(String::from),
            busybox: None,
            compression: Compression::None,
            vmlinux_bytes: 0,
            initramfs_bytes: 0,
            build_ms: 0,
        };
        std::fs::write(dir.join("manifest.json"), serde_json::to_string(&m).expect("json")).expect("write");
    }

    /// Another miglab's `image build` moves `current` to its own agent: this miglab still finds
    /// the image of its own agent, and without one it refuses with the fix, at once.
    #[test]
    fn each_miglab_finds_the_image_of_its_own_agent() {
        let cache = tempfile::tempdir().expect("tmp");
        let images = cache.path().join("images");
        let ours = miglab_workloads::control::AGENT_BUILD;
        fake(&images, "mine", Some(ours));
        fake(&images, "theirs", Some("0123456789abcdef"));
        fake(&images, "older", None);
        point(&images, "current", "theirs").expect("link");
        let e = GuestImage::current(cache.path()).expect_err("not ours");
        assert!(
            e.to_string().contains("miglab image build") && e.to_string().contains("0123456789abcdef"),
            "{e}"
        );
        point(&images, "current", "older").expect("link");
        assert!(matches!(GuestImage::current(cache.path()), Err(ImageError::OtherAgent { .. })));
        point(&images, &format!("agent-{ours}"), "mine").expect("link");
        assert_eq!(GuestImage::current(cache.path()).expect("ours").manifest.key, "mine");
        point(&images, "current", "mine").expect("link");
        std::fs::remove_file(images.join(format!("agent-{ours}"))).expect("rm");
        assert_eq!(GuestImage::current(cache.path()).expect("current is ours").manifest.key, "mine");
    }
}

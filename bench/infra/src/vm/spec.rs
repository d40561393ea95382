//! What a VM is, as data: its spec, the identity and files of each instance, and the record a
//! site keeps of a running instance. Nothing here starts or touches a process, and nothing here
//! depends on a topology: the instance id, its process names and its directory are built here,
//! in exactly one place.

use crate::accel::{Accel, AccelWish};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

/// How virtiofsd caches: `never` sends every guest read to CephFS, which is what a migration
/// benchmark of the file system path wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FsCache {
    #[default]
    Never,
    Metadata,
    Auto,
    Always,
}

impl FsCache {
    pub fn as_str(self) -> &'static str {
        match self {
            FsCache::Never => "never",
            FsCache::Metadata => "metadata",
            FsCache::Auto => "auto",
            FsCache::Always => "always",
        }
    }
}

/// What a VM is made of; the same for every instance of it (migration needs that).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmSpec {
    pub name: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub accel: Accel,
    pub fs_cache: FsCache,
    /// Appended to the kernel command line.
    pub cmdline_extra: Option<String>,
    /// Boot the bzImage instead of the ELF vmlinux (slower; for QEMUs without PVH).
    pub bzimage: bool,
    pub boot_timeout_ms: u64,
    /// Extra virtiofsd options (`--thread-pool-size=4`, ...).
    #[serde(default)]
    pub virtiofsd_args: Vec<String>,
    /// Which QEMU and virtiofsd (default: the installed ones).
    #[serde(default)]
    pub binaries: crate::binaries::BinaryChoice,
    /// The guest image directory (default: the current image).
    #[serde(default)]
    pub image: Option<PathBuf>,
}

impl VmSpec {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            vcpus: 1,
            memory_mib: 512,
            accel: AccelWish::Auto.resolve(),
            fs_cache: FsCache::Never,
            cmdline_extra: None,
            bzimage: false,
            boot_timeout_ms: 60_000,
            virtiofsd_args: Vec::new(),
            binaries: Default::default(),
            image: None,
        }
    }
}

/// One instance of a VM: `vm0` on c1 (generation 0), then `vm0` on c2 (generation 1), ...
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InstanceId {
    pub vm: String,
    pub host: String,
    pub generation: u32,
}

impl InstanceId {
    pub fn new(vm: &str, host: &str, generation: u32) -> Self {
        Self { vm: vm.into(), host: host.into(), generation }
    }

    /// The name of one of its processes (`qemu`, `virtiofsd`): `qemu.vm0.c1.0`.
    pub fn process_name(&self, what: &str) -> String {
        format!("{what}.{}.{}.{}", self.vm, self.host, self.generation)
    }

    /// Its directory below a site's instances directory: `vm0/c1.0`.
    pub fn relative_dir(&self) -> PathBuf {
        Path::new(&self.vm).join(format!("{}.{}", self.host, self.generation))
    }

    /// The generation of an instance directory's name (`c1.0` → 0), for ordering consoles.
    pub fn generation_of_dir(dir: &Path) -> Option<u32> {
        dir.extension().and_then(|e| e.to_str()).and_then(|g| g.parse().ok())
    }
}

impl fmt::Display for InstanceId {
    /// `vm0@c1#0`: unique among all instances of all VMs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}#{}", self.vm, self.host, self.generation)
    }
}

/// The files of one VM instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmFiles {
    pub dir: PathBuf,
}

impl VmFiles {
    /// The files of `id` below a site's instances directory.
    pub fn of(instances_dir: &Path, id: &InstanceId) -> Self {
        Self { dir: instances_dir.join(id.relative_dir()) }
    }
    pub fn qmp(&self) -> PathBuf {
        self.dir.join("qmp.sock")
    }
    pub fn control(&self) -> PathBuf {
        self.dir.join("control.sock")
    }
    pub fn records(&self) -> PathBuf {
        self.dir.join("records.sock")
    }
    pub fn virtiofsd(&self) -> PathBuf {
        self.dir.join("virtiofsd.sock")
    }
    pub fn console(&self) -> PathBuf {
        self.dir.join("console.log")
    }
    pub fn qemu_log(&self) -> PathBuf {
        self.dir.join("qemu.log")
    }
    pub fn virtiofsd_log(&self) -> PathBuf {
        self.dir.join("virtiofsd.log")
    }
    /// QEMU's trace log: its migration downtime tracepoints, one line per event.
    pub fn qemu_trace(&self) -> PathBuf {
        self.dir.join("qemu-trace.log")
    }
}

/// One VM instance as a site's ledger remembers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmRecord {
    pub spec: VmSpec,
    pub id: InstanceId,
    pub files: VmFiles,
    pub image: String,
    /// Started with `-incoming` and not yet resumed by a migration.
    pub incoming: bool,
}

impl VmRecord {
    pub fn host(&self) -> &str {
        &self.id.host
    }
    pub fn qemu_name(&self) -> String {
        self.id.process_name("qemu")
    }
    pub fn virtiofsd_name(&self) -> String {
        self.id.process_name("virtiofsd")
    }
    /// A virtiofsd a fault started on the killed one's socket: the instance's too, stopped
    /// with it.
    pub fn restarted_virtiofsd_name(&self) -> String {
        format!("{}.restarted", self.virtiofsd_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_names_its_processes_and_directory_in_one_way() {
        let id = InstanceId::new("vm0", "c2", 3);
        assert_eq!(id.to_string(), "vm0@c2#3");
        assert_eq!(id.process_name("qemu"), "qemu.vm0.c2.3");
        let files = VmFiles::of(Path::new("/lab/vms"), &id);
        assert_eq!(files.dir, Path::new("/lab/vms/vm0/c2.3"));
        assert_eq!(files.qmp(), Path::new("/lab/vms/vm0/c2.3/qmp.sock"));
        assert_eq!(InstanceId::generation_of_dir(&files.dir), Some(3));
    }
}

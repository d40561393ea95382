//! VMs on the lab's client hosts: one fresh virtiofsd sharing the host's CephFS mount, and one
//! QEMU in the host's network namespace with guest RAM in shared memfd, the file system on
//! `vhost-user-fs-pci`, two virtio-serial ports (records, control), the serial console in a
//! log file and QMP on a unix socket. Boot is detected by the agent's hello, never by a sleep.
//!
//! A VM that migrates is several *instances* over time: `vm0` on c1 (generation 0), then
//! `vm0` on c2 (generation 1), ... Each instance has its own directory, sockets and logs.

use crate::accel::{self, Accel};
use crate::control::{Control, ControlError};
use crate::doctor::{parse_version, QEMU_MIN};
use crate::image::{GuestImage, ImageError};
use crate::paths;
use crate::process::{self, ProcRecord, ProcessError, ProcessSpec};
use crate::qmp::{Qmp, QmpError};
use crate::topology::lab::{Lab, LabError};
use crate::topology::Host;
use miglab_workloads::control::{Hello, CONTROL_PORT, FS_TAG, RECORDS_PORT};
use qapi::qmp;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum VmError {
    #[error(transparent)]
    Lab(#[from] LabError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error(transparent)]
    Qmp(#[from] QmpError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("QEMU {found} cannot migrate a vhost-user-fs device; QEMU >= {}.{} is needed (`ci/setup` installs it)", QEMU_MIN.0, QEMU_MIN.1)]
    QemuTooOld { found: String },
    #[error("could not run qemu-system-x86_64: {0}; `ci/setup` installs it")]
    NoQemu(String),
    #[error("virtiofsd for {instance} died before QEMU connected ({status}); the end of its log:\n{tail}")]
    VirtiofsdDied { instance: String, status: String, tail: String },
    #[error("virtiofsd for {instance} did not create its socket within {timeout:.0?}; the end of its log:\n{tail}")]
    VirtiofsdNoSocket { instance: String, timeout: Duration, tail: String },
    #[error("QEMU for {instance} exited ({status}); the end of its log:\n{tail}")]
    QemuDied { instance: String, status: String, tail: String },
    #[error("the guest {instance} did not say hello within {timeout:.0?}; the end of its console ({console}):\n{tail}")]
    NeverBooted { instance: String, timeout: Duration, console: PathBuf, tail: String },
    #[error("no VM '{0}' in this lab: start one with `miglab vm up`")]
    NoVm(String),
    #[error("VM '{0}' already runs in this lab: `miglab vm down` first, or choose another --vm")]
    VmExists(String),
    #[error("could not {what}: {source}")]
    Io { what: String, source: std::io::Error },
}

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

/// The accelerator to use: chosen from the machine, or forced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AccelWish {
    #[default]
    Auto,
    Kvm,
    Tcg,
}

impl AccelWish {
    pub fn resolve(self) -> Accel {
        match self {
            AccelWish::Auto => accel::detect().accel,
            AccelWish::Kvm => Accel::Kvm,
            AccelWish::Tcg => Accel::Tcg,
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
        }
    }
}

/// The kernel command line. Everything after `panic=-1` shortens the stock kernel's boot
/// under TCG by skipping probes, self-tests and subsystems this guest does not use (no
/// network, no LSM policy, no audit); measured QEMU start → agent hello on the development
/// machine: 1.95 s with the first line of them, ~1.75 s with all.
pub fn kernel_cmdline(extra: Option<&str>) -> String {
    let mut s = String::from(
        "console=ttyS0 quiet panic=-1 mitigations=off tsc=reliable no_timer_check rodata=off \
         cryptomgr.notests random.trust_cpu=on 8250.nr_uarts=1 pci=lastbus=0 \
         i8042.noaux i8042.nokbd i8042.nopnp \
         ipv6.disable=1 apparmor=0 security=none audit=0 hpet=disable nokaslr nowatchdog \
         rcupdate.rcu_expedited=1",
    );
    if let Some(e) = extra.filter(|e| !e.trim().is_empty()) {
        s.push(' ');
        s.push_str(e.trim());
    }
    s
}

/// The files of one VM instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmFiles {
    pub dir: PathBuf,
}

impl VmFiles {
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
}

/// The QEMU command line (without the program). `incoming` starts it waiting for a migration
/// (`-incoming defer`, so that capabilities can be set before `migrate-incoming`).
pub fn qemu_args(
    spec: &VmSpec,
    kernel: &Path,
    initrd: &Path,
    files: &VmFiles,
    incoming: bool,
) -> Vec<String> {
    let p = |p: PathBuf| p.display().to_string();
    let mem = format!("{}M", spec.memory_mib);
    let mut a: Vec<String> = vec![
        "-name".into(),
        format!("{},debug-threads=on", spec.name),
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-display".into(),
        "none".into(),
        "-machine".into(),
        "q35".into(),
    ];
    match spec.accel {
        Accel::Kvm => a.extend(["-accel", "kvm", "-cpu", "host"].map(String::from)),
        Accel::Tcg => a.extend(["-accel", "tcg", "-cpu", "max"].map(String::from)),
    }
    a.extend([
        "-smp".into(),
        spec.vcpus.to_string(),
        "-m".into(),
        mem.clone(),
        // vhost-user needs guest RAM that virtiofsd can map.
        "-object".into(),
        format!("memory-backend-memfd,id=mem,size={mem},share=on"),
        "-numa".into(),
        "node,memdev=mem".into(),
        "-kernel".into(),
        kernel.display().to_string(),
        "-initrd".into(),
        initrd.display().to_string(),
        "-append".into(),
        kernel_cmdline(spec.cmdline_extra.as_deref()),
        // A guest that panics or reboots ends its QEMU: boot failures show up as an exit.
        "-no-reboot".into(),
        "-chardev".into(),
        format!("file,id=console,path={}", p(files.console())),
        "-serial".into(),
        "chardev:console".into(),
        "-chardev".into(),
        format!("socket,id=vfs,path={}", p(files.virtiofsd())),
        "-device".into(),
        format!("vhost-user-fs-pci,id=fs0,chardev=vfs,tag={FS_TAG}"),
        "-device".into(),
        "virtio-serial-pci,id=vser0".into(),
        "-chardev".into(),
        format!("socket,id=control,path={},server=on,wait=off", p(files.control())),
        "-device".into(),
        format!("virtserialport,id=controlport,bus=vser0.0,chardev=control,name={CONTROL_PORT}"),
        "-chardev".into(),
        format!("socket,id=records,path={},server=on,wait=off", p(files.records())),
        "-device".into(),
        format!("virtserialport,id=recordsport,bus=vser0.0,chardev=records,name={RECORDS_PORT}"),
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", p(files.qmp())),
    ]);
    if incoming {
        a.extend(["-incoming".into(), "defer".into()]);
    }
    a
}

/// virtiofsd's command line: the host's CephFS mount, shared with one QEMU.
pub fn virtiofsd_args(shared: &Path, files: &VmFiles, cache: FsCache) -> Vec<String> {
    vec![
        format!("--socket-path={}", files.virtiofsd().display()),
        format!("--shared-dir={}", shared.display()),
        format!("--cache={}", cache.as_str()),
        "--log-level=info".into(),
    ]
}

/// The QEMU version, checked against what vhost-user-fs migration needs.
pub fn check_qemu() -> Result<String, VmError> {
    let out = process::run_tool(
        Command::new(paths::tool("qemu-system-x86_64")).arg("--version"),
        Duration::from_secs(10),
    )
    .map_err(|e| VmError::NoQemu(e.to_string()))?;
    let line = out.stdout.lines().next().unwrap_or_default().to_string();
    match parse_version(&line, "version") {
        Some(v) if v >= QEMU_MIN => Ok(line),
        _ => Err(VmError::QemuTooOld { found: line }),
    }
}

/// The end of a guest console, led by the kernel's panic line if there is one (a panic's
/// stack dump would push it out of the tail).
pub fn console_summary(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let panic = text.lines().find(|l| l.contains("Kernel panic"));
    let tail = process::log_tail(path, 15);
    match panic {
        Some(p) if !tail.contains(p.trim()) => format!("{}\n...\n{tail}", p.trim()),
        _ => tail,
    }
}

/// One VM instance as the lab's state file remembers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmRecord {
    pub spec: VmSpec,
    pub host: String,
    pub generation: u32,
    pub files: VmFiles,
    pub image: String,
    /// Started with `-incoming` and not yet resumed by a migration.
    pub incoming: bool,
}

impl VmRecord {
    /// `vm0@c1#0`: unique among all instances of all VMs.
    pub fn instance(&self) -> String {
        format!("{}@{}#{}", self.spec.name, self.host, self.generation)
    }
    pub fn qemu_name(&self) -> String {
        format!("qemu.{}.{}.{}", self.spec.name, self.host, self.generation)
    }
    pub fn virtiofsd_name(&self) -> String {
        format!("virtiofsd.{}.{}.{}", self.spec.name, self.host, self.generation)
    }
}

/// A running VM instance.
#[derive(Debug)]
pub struct Vm {
    pub record: VmRecord,
    pub qmp: Qmp,
    pub control: Control,
    pub qemu: ProcRecord,
    pub virtiofsd: ProcRecord,
    /// The agent's hello (None for an incoming instance until it has migrated).
    pub hello: Option<Hello>,
    /// From QEMU's start to the agent's hello.
    pub boot_ms: Option<f64>,
}

fn died(lab: &Lab, rec: &ProcRecord) -> Option<String> {
    lab.supervisor().exit_status(rec)
}

impl Vm {
    /// Starts an instance of `spec` on `host`: booted, or waiting for an incoming migration.
    /// If anything fails, whatever was started for it is stopped again.
    pub async fn start(
        lab: &Lab,
        spec: &VmSpec,
        host: &str,
        generation: u32,
        incoming: bool,
    ) -> Result<Vm, VmError> {
        let mut started = Vec::new();
        let result = Self::start_inner(lab, spec, host, generation, incoming, &mut started).await;
        if result.is_err() {
            let sup = lab.supervisor();
            tokio::task::block_in_place(|| {
                for p in started.iter().rev() {
                    let _ = sup.stop(p);
                }
            });
            let _ = lab.forget_vm(&format!("{}@{host}#{generation}", spec.name));
        }
        result
    }

    async fn start_inner(
        lab: &Lab,
        spec: &VmSpec,
        host: &str,
        generation: u32,
        incoming: bool,
        started: &mut Vec<ProcRecord>,
    ) -> Result<Vm, VmError> {
        check_qemu()?;
        let image = GuestImage::current(&paths::cache())?;
        let h = lab.lab_host(host)?;
        let files = VmFiles {
            dir: lab.layout().dir.join("vms").join(&spec.name).join(format!("{host}.{generation}")),
        };
        let _ = std::fs::remove_dir_all(&files.dir);
        std::fs::create_dir_all(&files.dir)
            .map_err(|source| VmError::Io { what: format!("create {}", files.dir.display()), source })?;
        let record = VmRecord {
            spec: spec.clone(),
            host: host.into(),
            generation,
            files: files.clone(),
            image: image.manifest.key.clone(),
            incoming,
        };
        let instance = record.instance();
        lab.record_vm(record.clone())?;
        let netns = h.netns_path();
        let sup = lab.supervisor();

        // virtiofsd first: QEMU connects to its socket at start.
        let vfsd = sup.spawn(
            &ProcessSpec::new(record.virtiofsd_name(), paths::tool("virtiofsd"), files.virtiofsd_log())
                .args(virtiofsd_args(&h.mount_point(), &files, spec.fs_cache))
                .args(&spec.virtiofsd_args)
                .in_netns(netns.clone()),
        )?;
        started.push(vfsd.clone());
        let timeout = Duration::from_secs(10);
        let start = Instant::now();
        while !files.virtiofsd().exists() {
            if let Some(status) = died(lab, &vfsd) {
                return Err(VmError::VirtiofsdDied {
                    instance,
                    status,
                    tail: process::log_tail(&vfsd.log, 15),
                });
            }
            if start.elapsed() > timeout {
                return Err(VmError::VirtiofsdNoSocket {
                    instance,
                    timeout,
                    tail: process::log_tail(&vfsd.log, 15),
                });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }

        let kernel = if spec.bzimage { image.bzimage() } else { image.vmlinux() };
        let t_qemu = Instant::now();
        let qemu = sup.spawn(
            &ProcessSpec::new(record.qemu_name(), paths::tool("qemu-system-x86_64"), files.qemu_log())
                .args(qemu_args(spec, &kernel, &image.initramfs(), &files, incoming))
                .in_netns(netns),
        )?;
        started.push(qemu.clone());
        let qemu_died = |lab: &Lab| -> Result<(), VmError> {
            match died(lab, &qemu) {
                Some(status) => Err(VmError::QemuDied {
                    instance: instance.clone(),
                    status,
                    tail: format!(
                        "{}\n{}",
                        process::log_tail(&qemu.log, 5),
                        console_summary(&files.console())
                    ),
                }),
                None => Ok(()),
            }
        };
        let q = Qmp::connect(&files.qmp(), Duration::from_secs(20), || qemu_died(lab)).await??;
        let mut control = Control::connect(&files.control()).await?;
        let (mut hello, mut boot_ms) = (None, None);
        if !incoming {
            let boot_timeout = Duration::from_millis(spec.boot_timeout_ms);
            let answer = {
                let wait = control.wait_hello(boot_timeout, Duration::from_millis(250));
                tokio::pin!(wait);
                loop {
                    tokio::select! {
                        r = &mut wait => break r,
                        _ = tokio::time::sleep(Duration::from_millis(50)) => qemu_died(lab)?,
                    }
                }
            };
            match answer {
                Ok(h) => {
                    boot_ms = Some(t_qemu.elapsed().as_secs_f64() * 1e3);
                    hello = Some(h);
                }
                Err(ControlError::TimedOut { .. }) => {
                    return Err(VmError::NeverBooted {
                        instance,
                        timeout: boot_timeout,
                        console: files.console(),
                        tail: console_summary(&files.console()),
                    })
                }
                Err(e) => {
                    // The control socket closes when QEMU exits: report the exit, which says why.
                    for _ in 0..100 {
                        qemu_died(lab)?;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    return Err(e.into());
                }
            }
        }
        Ok(Vm { record, qmp: q, control, qemu, virtiofsd: vfsd, hello, boot_ms })
    }

    /// Attaches to an instance started by another miglab process.
    pub async fn attach(lab: &Lab, record: &VmRecord) -> Result<Vm, VmError> {
        let qemu = lab.process(&record.qemu_name()).ok_or_else(|| VmError::NoVm(record.spec.name.clone()))?;
        let virtiofsd =
            lab.process(&record.virtiofsd_name()).ok_or_else(|| VmError::NoVm(record.spec.name.clone()))?;
        if died(lab, &qemu).is_some() {
            return Err(VmError::QemuDied {
                instance: record.instance(),
                status: "exited".into(),
                tail: process::log_tail(&record.files.qemu_log(), 10),
            });
        }
        let q =
            Qmp::connect(&record.files.qmp(), Duration::from_secs(10), || Ok::<(), VmError>(())).await??;
        let control = Control::connect(&record.files.control()).await?;
        Ok(Vm { record: record.clone(), qmp: q, control, qemu, virtiofsd, hello: None, boot_ms: None })
    }

    pub fn instance(&self) -> String {
        self.record.instance()
    }

    /// Stops the instance: `quit` over QMP, then the supervisor makes sure of QEMU and
    /// virtiofsd (which exits by itself once QEMU is gone).
    pub async fn stop(self, lab: &Lab) -> Result<(), VmError> {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.qmp.execute(qmp::quit {})).await;
        drop(self.qmp);
        let sup = lab.supervisor();
        let (q, v) = (self.qemu.clone(), self.virtiofsd.clone());
        tokio::task::block_in_place(|| -> Result<(), VmError> {
            sup.stop(&q)?;
            sup.stop(&v)?;
            Ok(())
        })?;
        lab.forget_vm(&self.record.instance())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(accel: Accel) -> VmSpec {
        VmSpec { accel, ..VmSpec::new("vm0") }
    }

    fn args(accel: Accel, incoming: bool) -> Vec<String> {
        let files = VmFiles { dir: "/lab/vms/vm0/c1.0".into() };
        qemu_args(&spec(accel), Path::new("/img/vmlinux"), Path::new("/img/initramfs.img"), &files, incoming)
    }

    fn value_of<'a>(a: &'a [String], flag: &str) -> Vec<&'a str> {
        a.windows(2).filter(|w| w[0] == flag).map(|w| w[1].as_str()).collect()
    }

    #[test]
    fn tcg_command_line_has_shared_memory_virtiofs_and_both_ports() {
        let a = args(Accel::Tcg, false);
        assert_eq!(value_of(&a, "-accel"), ["tcg"]);
        assert_eq!(value_of(&a, "-cpu"), ["max"]);
        assert_eq!(value_of(&a, "-object"), ["memory-backend-memfd,id=mem,size=512M,share=on"]);
        assert_eq!(value_of(&a, "-numa"), ["node,memdev=mem"]);
        let devices = value_of(&a, "-device");
        assert!(devices.contains(&"vhost-user-fs-pci,id=fs0,chardev=vfs,tag=cephfs"));
        assert!(devices.iter().any(|d| d.contains("name=miglab.control")));
        assert!(devices.iter().any(|d| d.contains("name=miglab.records")));
        assert_eq!(value_of(&a, "-qmp"), ["unix:/lab/vms/vm0/c1.0/qmp.sock,server=on,wait=off"]);
        assert_eq!(value_of(&a, "-kernel"), ["/img/vmlinux"]);
        assert!(value_of(&a, "-append")[0].starts_with("console=ttyS0 quiet panic=-1"));
        assert!(a.contains(&"-no-reboot".to_string()));
        assert!(!a.contains(&"-incoming".to_string()));
    }

    #[test]
    fn kvm_uses_the_host_cpu_and_incoming_defers() {
        let a = args(Accel::Kvm, true);
        assert_eq!(value_of(&a, "-accel"), ["kvm"]);
        assert_eq!(value_of(&a, "-cpu"), ["host"]);
        assert_eq!(value_of(&a, "-incoming"), ["defer"]);
    }

    #[test]
    fn source_and_destination_differ_only_in_files_and_incoming() {
        // Migration needs identical devices on both sides.
        let src = args(Accel::Tcg, false);
        let files = VmFiles { dir: "/lab/vms/vm0/c2.1".into() };
        let dst = qemu_args(
            &spec(Accel::Tcg),
            Path::new("/img/vmlinux"),
            Path::new("/img/initramfs.img"),
            &files,
            true,
        );
        let norm =
            |v: &[String]| v.iter().map(|s| s.replace("c1.0", "X").replace("c2.1", "X")).collect::<Vec<_>>();
        assert_eq!(norm(&dst)[..dst.len() - 2], norm(&src)[..]);
    }

    #[test]
    fn cmdline_takes_extras() {
        assert!(kernel_cmdline(Some(" rdinit=/bin/sh ")).ends_with(" rdinit=/bin/sh"));
        assert!(!kernel_cmdline(Some("  ")).ends_with(' '));
    }

    #[test]
    fn virtiofsd_shares_the_host_mount() {
        let files = VmFiles { dir: "/d".into() };
        let a = virtiofsd_args(Path::new("/lab/mnt/c1"), &files, FsCache::Never);
        assert!(a.contains(&"--shared-dir=/lab/mnt/c1".to_string()));
        assert!(a.contains(&"--socket-path=/d/virtiofsd.sock".to_string()));
        assert!(a.contains(&"--cache=never".to_string()));
    }
}

//! The command lines of a VM instance: QEMU's and virtiofsd's, and the guest kernel's.

use super::spec::{FsCache, VmFiles, VmRecord, VmSpec};
use super::VmError;
use crate::accel::Accel;
use crate::binaries::{parse_version, version_line, QEMU_MIN};
use crate::process::{ProcessSpec, Tier};
use crate::topology::Host;
use miglab_model::downtime::TRACE_EVENTS;
use miglab_workloads::control::{CONTROL_PORT, FS_TAG, RECORDS_PORT};
use std::path::{Path, PathBuf};

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
        // QEMU's own account of each downtime (checkpoints, each device's save and load time),
        // stamped with the wall clock, in a log of its own.
        "-msg".into(),
        "timestamp=on".into(),
        "-D".into(),
        p(files.qemu_trace()),
    ]);
    for event in TRACE_EVENTS {
        a.extend(["-trace".into(), format!("enable={event}")]);
    }
    if incoming {
        a.extend(["-incoming".into(), "defer".into()]);
    }
    a
}

/// virtiofsd's process for the instance of `record` on `h`, named `name` (a restart after a
/// fault is `<name>.restarted`): the one place its command line is put together.
pub fn virtiofsd_spec(h: &dyn Host, record: &VmRecord, name: String) -> ProcessSpec {
    ProcessSpec::new(name, h.virtiofsd(&record.spec.binaries.virtiofsd_path()), record.files.virtiofsd_log())
        .tier(Tier::Guest)
        .args(virtiofsd_args(&h.mount_point(), &record.files, record.spec.fs_cache))
        .args(&record.spec.virtiofsd_args)
}

/// virtiofsd's command line: the host's CephFS mount, shared with one QEMU.
pub fn virtiofsd_args(shared: &Path, files: &VmFiles, cache: FsCache) -> Vec<String> {
    vec![
        format!("--socket-path={}", files.virtiofsd().display()),
        format!("--shared-dir={}", shared.display()),
        format!("--cache={}", cache.as_str()),
        // A guest's O_DIRECT must reach ceph-fuse (which then reads from the OSDs): without it
        // virtiofsd drops the flag, and a verify pass could read the host's page cache.
        "--allow-direct-io".into(),
        "--log-level=info".into(),
    ]
}

/// The version of the QEMU at `qemu`, checked against what vhost-user-fs migration needs (once
/// per binary and process: a destination starts inside a migration's window, where every
/// millisecond shows).
pub fn check_qemu(qemu: &Path) -> Result<String, VmError> {
    static CHECKED: std::sync::Mutex<Vec<(std::path::PathBuf, String)>> = std::sync::Mutex::new(Vec::new());
    if let Some((_, v)) = CHECKED.lock().ok().and_then(|c| c.iter().find(|(p, _)| p == qemu).cloned()) {
        return Ok(v);
    }
    let v = probe_qemu(qemu)?;
    if let Ok(mut c) = CHECKED.lock() {
        c.push((qemu.to_path_buf(), v.clone()));
    }
    Ok(v)
}

fn probe_qemu(qemu: &Path) -> Result<String, VmError> {
    let line = version_line(qemu).map_err(|e| VmError::NoQemu(format!("{}: {e}", qemu.display())))?;
    match parse_version(&line, "version") {
        Some(v) if v >= QEMU_MIN => Ok(line),
        _ => Err(VmError::QemuTooOld { found: line }),
    }
}

/// The end of a guest console, led by the kernel's panic line if there is one (a panic's
/// stack dump would push it out of the tail).
pub fn console_summary(host: &dyn Host, path: &Path) -> String {
    let text = host.read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    let panic = text.lines().find(|l| l.contains("Kernel panic"));
    let tail = host.tail(path, 15);
    match panic {
        Some(p) if !tail.contains(p.trim()) => format!("{}\n...\n{tail}", p.trim()),
        _ => tail,
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
        assert!(a.contains(&"--allow-direct-io".to_string()));
    }
}

//! `miglab doctor`: every prerequisite, found or missing, with the exact fix.

use miglab_infra::accel;
use miglab_infra::binaries::{judge_version, BinaryChoice, QEMU_MIN, VIRTIOFSD_MIN};
use miglab_infra::paths;
use miglab_infra::process::run_tool;
use miglab_infra::topology::layout;
use serde::Serialize;
use std::fmt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    Missing,
    /// Absent, but miglab works around it.
    Warn,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub verdict: Verdict,
    pub found: String,
    pub fix: String,
    /// A lab cannot run without it.
    pub required: bool,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
    /// The hosts of a topology file, checked over SSH (not this machine).
    #[serde(skip)]
    pub remote: bool,
}

impl Report {
    /// Whether a lab can run here.
    pub fn lab_can_run(&self) -> bool {
        self.checks.iter().all(|c| !c.required || c.verdict == Verdict::Ok)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self.checks.iter().map(|c| c.name.len()).max().unwrap_or(5).max(5);
        let fw = self.checks.iter().map(|c| c.found.len()).max().unwrap_or(5).clamp(5, 60);
        writeln!(f, "{:<w$}  {:<7}  {:<fw$}  fix", "check", "status", "found")?;
        for c in &self.checks {
            let status = match (c.verdict, c.required) {
                (Verdict::Ok, _) => "ok",
                (Verdict::Missing, true) => "MISSING",
                (Verdict::Missing, false) | (Verdict::Warn, _) => "warn",
            };
            let fix = if c.verdict == Verdict::Ok { "" } else { c.fix.as_str() };
            let found: String = c.found.chars().take(fw).collect();
            writeln!(f, "{:<w$}  {:<7}  {:<fw$}  {}", c.name, status, found, fix)?;
        }
        match (self.remote, self.lab_can_run()) {
            (false, true) => write!(f, "a lab can run here"),
            (false, false) => {
                write!(
                    f,
                    "a lab cannot run here: fix the MISSING rows (as root: `ci/setup` installs everything)"
                )
            }
            (true, true) => write!(f, "every host of the topology can run guests"),
            (true, false) => write!(f, "fix the MISSING rows on the hosts they name"),
        }
    }
}

fn check(name: &str, required: bool, result: Result<String, String>, fix: &str) -> Check {
    let (verdict, found) = match result {
        Ok(found) => (Verdict::Ok, found),
        Err(found) => (Verdict::Missing, found),
    };
    Check { name: name.into(), verdict, found, fix: fix.into(), required }
}

/// A check whose absence miglab works around: never missing, a warning at worst.
fn warning(name: &str, result: Result<String, String>, fix: &str) -> Check {
    let mut c = check(name, false, result, fix);
    if c.verdict == Verdict::Missing {
        c.verdict = Verdict::Warn;
    }
    c
}

fn tool_version(tool: &str, arg: &str, prefix: &str, min: Option<(u32, u32)>) -> Result<String, String> {
    let path = paths::find_tool(tool).ok_or_else(|| "not found".to_string())?;
    path_version(&path, arg, prefix, min)
}

fn path_version(path: &Path, arg: &str, prefix: &str, min: Option<(u32, u32)>) -> Result<String, String> {
    if !path.exists() {
        return Err(format!("{} does not exist", path.display()));
    }
    let out = run_tool(Command::new(path).arg(arg), T).map_err(|e| e.to_string())?;
    judge_version(&format!("{}{}", out.stdout, out.stderr), prefix, min, &path.display().to_string())
}

fn present(tool: &str) -> Result<String, String> {
    paths::find_tool(tool).map(|p| p.display().to_string()).ok_or_else(|| "not found".into())
}

/// Lab ports must lie outside the ephemeral range, or an outgoing connection could hold one.
fn ephemeral_ports(range: &std::io::Result<String>) -> Check {
    let (lo, hi) = (layout::PORT_BASE, layout::PORT_LAST);
    let parsed = range.as_ref().ok().and_then(|r| {
        let mut it = r.split_whitespace().map(|n| n.parse::<u32>().ok());
        Some((it.next()??, it.next()??))
    });
    let result = match parsed {
        Some((a, b)) if b < lo as u32 || a > hi as u32 => {
            Ok(format!("ephemeral {a}-{b}, lab ports {lo}-{hi}"))
        }
        Some((a, b)) => Err(format!("ephemeral {a}-{b} overlaps lab ports {lo}-{hi}")),
        None => Err("cannot read net.ipv4.ip_local_port_range".into()),
    };
    warning(
        "lab-ports",
        result,
        &format!("reserve them: sysctl net.ipv4.ip_local_reserved_ports={lo}-{hi} (else a daemon may fail to bind)"),
    )
}

/// A scratch network namespace for the netns/tbf/netem probes, removed on drop.
struct ScratchNs(String);

impl ScratchNs {
    fn new() -> Result<Self, String> {
        let name = format!("miglab-doctor-{}", std::process::id());
        run_tool(Command::new(paths::tool("ip")).args(["netns", "add", &name]), T)
            .map_err(|e| e.to_string())?;
        let ns = ScratchNs(name);
        // veth, not dummy: the dummy module is not in every kernel (it is not here).
        ns.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d1"])?;
        Ok(ns)
    }
    fn ip(&self, args: &[&str]) -> Result<(), String> {
        run_tool(Command::new(paths::tool("ip")).args(["-n", &self.0]).args(args), T)
            .map(drop)
            .map_err(|e| e.to_string())
    }
    fn tc(&self, args: &[&str]) -> Result<(), String> {
        run_tool(Command::new(paths::tool("tc")).args(["-n", &self.0]).args(args), T)
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

impl Drop for ScratchNs {
    fn drop(&mut self) {
        let _ = run_tool(Command::new(paths::tool("ip")).args(["netns", "del", &self.0]), T);
    }
}

/// The multifd compressions `qemu` was built with. Each is asked of a QEMU started without a
/// machine (`-global migration.multifd-compression=...`), which refuses one it lacks at once
/// and otherwise quits when told to on QMP.
pub fn multifd_compressions(qemu: &Path) -> Result<Vec<&'static str>, String> {
    let mut have = vec!["none"];
    for z in ["zlib", "zstd", "qpl", "uadk"] {
        if qemu_takes_compression(qemu, z)? {
            have.push(z);
        }
    }
    Ok(have)
}

fn qemu_takes_compression(qemu: &Path, z: &str) -> Result<bool, String> {
    use std::io::Write as _;
    use std::process::Stdio;
    let global = format!("migration.multifd-compression={z}");
    let mut child = Command::new(qemu)
        .args(["-machine", "none", "-nodefaults", "-display", "none", "-monitor", "none", "-S"])
        .args(["-qmp", "stdio", "-global", &global])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", qemu.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A QEMU that refused the value has exited already: its closed pipe says nothing more.
        let _ = stdin.write_all(b"{\"execute\":\"qmp_capabilities\"}\n{\"execute\":\"quit\"}\n");
    }
    let ended =
        miglab_infra::wait::until("QEMU to quit", Duration::from_secs(10), Duration::from_millis(20), || {
            child.try_wait()
        });
    match ended {
        Ok(status) => Ok(status.success()),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!("{}: {e}", qemu.display()))
        }
    }
}

/// Runs every check, of the chosen builds where `binaries` chooses them.
pub fn run(binaries: &BinaryChoice) -> Report {
    let mut checks = Vec::new();
    let root = nix::unistd::geteuid().is_root();
    checks.push(check(
        "root",
        true,
        if root { Ok("uid 0".into()) } else { Err(format!("uid {}", nix::unistd::geteuid())) },
        "run miglab as root (namespaces, mounts)",
    ));
    let setup = "run `ci/setup` as root";
    checks.push(check(
        "qemu",
        true,
        match &binaries.qemu {
            Some(p) => path_version(p, "--version", "version", Some(QEMU_MIN)),
            None => tool_version("qemu-system-x86_64", "--version", "version", Some(QEMU_MIN)),
        },
        "QEMU >= 8.2 migrates vhost-user-fs; on Debian 12 `ci/setup` installs it from bookworm-backports",
    ));
    let qemu = binaries.qemu_path();
    checks.push(warning(
        "multifd compression",
        multifd_compressions(&qemu).map(|v| v.join(", ")),
        "a scenario's migration.tuning.multifd_compression must be one of these (`miglab check` says so)",
    ));
    checks.push(check(
        "virtiofsd",
        true,
        match &binaries.virtiofsd {
            Some(p) => path_version(p, "--version", "virtiofsd", Some(VIRTIOFSD_MIN)),
            None => tool_version("virtiofsd", "--version", "virtiofsd", Some(VIRTIOFSD_MIN)),
        },
        "`ci/setup` builds virtiofsd 1.14.0 into /opt/miglab/bin (cargo install --locked)",
    ));
    checks.push(check("ceph", true, tool_version("ceph-mon", "--version", "ceph version", None), setup));
    for t in ["ceph-mgr", "ceph-osd", "ceph-mds", "ceph-fuse", "ceph", "monmaptool"] {
        checks.push(check(t, true, present(t), setup));
    }
    let py = paths::system_python();
    checks.push(check(
        "python3-rados",
        true,
        run_tool(Command::new(&py).args(["-c", "import rados"]), T)
            .map(|_| format!("{}", py.display()))
            .map_err(|_| format!("{} cannot import rados", py.display())),
        "apt-get install python3-rados (or `ci/setup`)",
    ));
    for t in ["ip", "tc", "nft"] {
        checks.push(check(t, true, present(t), setup));
    }
    checks.push(check("busybox", false, present("busybox"), "apt-get install busybox-static (guest image)"));
    checks.push(check("fio", false, present("fio"), "apt-get install fio (storage baselines)"));
    checks.push(check(
        "fuse",
        true,
        if std::path::Path::new("/dev/fuse").exists() {
            Ok("/dev/fuse".into())
        } else {
            Err("no /dev/fuse".into())
        },
        "modprobe fuse",
    ));

    let ns = if root { ScratchNs::new() } else { Err("needs root".into()) };
    checks.push(check(
        "netns",
        true,
        ns.as_ref().map(|_| "ip netns add works".to_string()).map_err(|e| e.clone()),
        "network namespaces and veth need root and CONFIG_NET_NS",
    ));
    let tbf = match &ns {
        Ok(ns) => ns.tc(&[
            "qdisc", "add", "dev", "d0", "root", "tbf", "rate", "1mbit", "burst", "32k", "latency", "50ms",
        ]),
        Err(e) => Err(e.clone()),
    };
    checks.push(check(
        "tbf",
        true,
        tbf.map(|_| "tc qdisc tbf works".into()),
        "the kernel needs sch_tbf (link shaping)",
    ));
    let netem = match &ns {
        Ok(ns) => ns.tc(&["qdisc", "add", "dev", "d1", "root", "netem", "delay", "10ms"]),
        Err(e) => Err(e.clone()),
    };
    let netem = warning(
        "netem",
        netem.map(|_| "tc qdisc netem works".into()).map_err(|_| "no sch_netem in this kernel".into()),
        "optional: links are shaped with tbf (rate) and cut with nft; fixed delay needs netem",
    );
    checks.push(netem);
    drop(ns);

    checks.push(ephemeral_ports(&std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")));

    let a = accel::detect();
    checks.push(Check {
        name: "accelerator".into(),
        verdict: if a.accel == accel::Accel::Kvm { Verdict::Ok } else { Verdict::Warn },
        found: format!("{}: {}", a.accel, a.reason),
        fix: "guests run under TCG (slower boots and migrations; results record it)".into(),
        required: false,
    });
    let kernel = binaries.kernel.clone().unwrap_or_else(paths::guest_kernel_dir);
    let k = std::fs::read_dir(kernel.join("boot")).ok().and_then(|d| {
        d.filter_map(|e| e.ok()).map(|e| e.path()).find(|p| p.to_string_lossy().contains("vmlinuz"))
    });
    let k = match (k, kernel.join("lib/modules").is_dir()) {
        (Some(p), true) => Ok(p.display().to_string()),
        (Some(_), false) => Err(format!("no lib/modules/ in {}", kernel.display())),
        (None, _) => Err(format!("no boot/vmlinuz-* in {}", kernel.display())),
    };
    checks.push(check(
        "guest-kernel",
        binaries.kernel.is_some(),
        k,
        if binaries.kernel.is_some() {
            "--kernel takes an unpacked kernel package: `dpkg-deb -x linux-image-*.deb DIR`"
        } else {
            "`ci/setup` downloads and unpacks the distribution kernel (needed for VMs, not for the lab)"
        },
    ));
    Report { checks, remote: false }
}

/// Every host of a topology file, over SSH: reachable, QEMU ≥ 8.2, virtiofsd, KVM, the CephFS
/// mount, free memory — each with its fix.
pub fn remote(spec: &miglab_infra::topology::external::TopologySpec, file: &Path) -> Report {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            let c = check("runtime", true, Err(e.to_string()), "");
            return Report { checks: vec![c], remote: true };
        }
    };
    let config = spec.ssh_config(file);
    let timeout = Duration::from_secs(spec.ssh.connect_timeout_s.unwrap_or(10));
    let checks = rt.block_on(async {
        let per_host = spec.hosts.iter().map(|h| host_checks(spec, h, config.as_deref(), timeout));
        futures::future::join_all(per_host).await.into_iter().flatten().collect()
    });
    Report { checks, remote: true }
}

async fn host_checks(
    spec: &miglab_infra::topology::external::TopologySpec,
    h: &miglab_infra::topology::external::HostSpec,
    config: Option<&Path>,
    timeout: Duration,
) -> Vec<Check> {
    use miglab_infra::topology::external::ssh::{quote, SshHost};
    let n = &h.name;
    let mut checks = Vec::new();
    let host = match SshHost::connect(n, &h.ssh, config, timeout).await {
        Ok(s) => s,
        Err(e) => {
            checks.push(check(
                &format!("{n} ssh"),
                true,
                Err(e.to_string()),
                "a key the host accepts (ssh-copy-id), its host key in known_hosts, and the destination in the topology",
            ));
            return checks;
        }
    };
    let run = |script: String| {
        let host = &host;
        async move { host.sh(&script, T).await.map_err(|e| e.to_string()) }
    };
    let who = run("echo \"$(id -un)@$(uname -n), kernel $(uname -r)\"".into()).await;
    checks.push(check(&format!("{n} ssh"), true, who.map(|o| o.stdout), ""));
    let version = |program: Option<&std::path::PathBuf>,
                   default: &str,
                   prefix: &'static str,
                   min: (u32, u32)| {
        let p = program.map(|p| p.display().to_string()).unwrap_or_else(|| default.to_string());
        let run = &run;
        async move {
            let o = run(format!(
                "command -v {0} >/dev/null 2>&1 || {{ echo 'not found' >&2; exit 127; }}; {0} --version",
                quote(&p)
            ))
            .await?;
            if !o.ok {
                return Err(format!("{p}: {}", if o.stderr.is_empty() { "does not run" } else { &o.stderr }));
            }
            judge_version(&o.stdout, prefix, Some(min), &p)
        }
    };
    checks.push(check(
        &format!("{n} qemu"),
        true,
        version(h.qemu.as_ref(), "qemu-system-x86_64", "version", QEMU_MIN).await,
        "install QEMU >= 8.2 on the host (vhost-user-fs migration), or give its path as `qemu` in the host's [[host]]",
    ));
    checks.push(check(
        &format!("{n} virtiofsd"),
        true,
        version(h.virtiofsd.as_ref(), "virtiofsd", "virtiofsd", VIRTIOFSD_MIN).await,
        "install virtiofsd >= 1.11 on the host (Debian: /usr/libexec/virtiofsd), and give its path as `virtiofsd` in the host's [[host]]",
    ));
    let kvm = run("test -c /dev/kvm && grep -qE 'vmx|svm' /proc/cpuinfo && echo /dev/kvm".into()).await;
    let kvm = warning(
        &format!("{n} kvm"),
        match kvm {
            Ok(o) if o.ok => Ok(o.stdout),
            _ => Err("no /dev/kvm with vmx or svm: guests would run under TCG".into()),
        },
        "load kvm_intel or kvm_amd (results record the accelerator either way)",
    );
    checks.push(kvm);
    let mount = match (spec.mount_of(h), &spec.ceph.conf) {
        (Some(m), _) => {
            let m = m.display().to_string();
            match run(format!("stat -f -c %T {}", quote(&m))).await {
                Ok(o) if o.ok && (o.stdout.contains("fuse") || o.stdout.contains("ceph")) => {
                    Ok(format!("{m} ({})", o.stdout))
                }
                Ok(o) if o.ok => Err(format!("{m} is {}, not CephFS", o.stdout)),
                Ok(o) => Err(format!("{m}: {}", o.stderr)),
                Err(e) => Err(e),
            }
        }
        (None, Some(conf)) => match run("command -v ceph-fuse".into()).await {
            Ok(o) if o.ok => Ok(format!("ceph-fuse at {} with {}", o.stdout, conf.display())),
            _ => Err("no ceph-fuse".into()),
        },
        (None, None) => Err("no mount given".into()),
    };
    checks.push(check(
        &format!("{n} cephfs"),
        true,
        mount,
        "mount CephFS at the topology's `mount` on the host, or give `conf` and `keyring` for ceph-fuse (and install it)",
    ));
    let clock = host.clock_offset(5).await;
    let clock = warning(
        &format!("{n} clock"),
        match clock {
            Ok(c) if c.offset_ms.abs() <= 1000.0 => {
                Ok(format!("{:+.1} ms from this machine's (± {:.1} ms)", c.offset_ms, c.rtt_ms / 2.0))
            }
            Ok(c) => Err(format!("{:+.0} ms from this machine's", c.offset_ms)),
            Err(e) => Err(e.to_string()),
        },
        "results do not depend on it (each arrival is stamped where it arrives), but logs are easier to read with NTP",
    );
    checks.push(clock);
    let mem = run("awk '/MemAvailable/ { print int($2 / 1024) }' /proc/meminfo".into()).await;
    let mem = warning(
        &format!("{n} memory"),
        match mem.map(|o| o.stdout.parse::<u64>()) {
            Ok(Ok(mib)) if mib >= 2048 => Ok(format!("{mib} MiB available")),
            Ok(Ok(mib)) => Err(format!("{mib} MiB available")),
            _ => Err("unknown".into()),
        },
        "a migrating guest is on two hosts at once for a moment: keep twice its memory free",
    );
    checks.push(mem);
    host.close().await;
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_ephemeral_range_leaves_the_lab_ports_alone_and_a_wide_one_is_a_warning() {
        assert_eq!(ephemeral_ports(&Ok("32768\t60999\n".into())).verdict, Verdict::Ok);
        let wide = ephemeral_ports(&Ok("1024 65535".into()));
        assert_eq!(wide.verdict, Verdict::Warn);
        assert!(wide.found.contains("overlaps"), "{}", wide.found);
        assert_eq!(ephemeral_ports(&Err(std::io::ErrorKind::NotFound.into())).verdict, Verdict::Warn);
    }

    #[test]
    fn a_missing_required_check_blocks_the_lab_but_a_warning_does_not() {
        let ok = |name: &str, required| check(name, required, Ok("x".into()), "");
        let mut r = Report {
            checks: vec![ok("a", true), check("netem", false, Err("no".into()), "fine")],
            remote: false,
        };
        assert!(r.lab_can_run());
        r.checks.push(check("ceph", true, Err("not found".into()), "run ci/setup"));
        assert!(!r.lab_can_run());
        let text = r.to_string();
        assert!(text.contains("MISSING") && text.contains("run ci/setup") && text.contains("cannot run"));
    }
}

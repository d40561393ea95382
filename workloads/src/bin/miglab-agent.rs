//! The guest agent: `/init` of miglab's guest image.
//!
//! As PID 1 it mounts /proc, /sys and /dev, loads the kernel modules listed in
//! /etc/miglab/modules (in order), mounts the virtio-fs share, finds its virtio-serial ports by
//! name and says hello on the control port. Then it serves commands: it runs workloads and
//! reports their counters. PID 1 must never exit, so every failure is reported, not fatal.

use miglab_workloads::control::{self, Command, Hello, Message, Status};
use miglab_workloads::readloop::{Counters, ReadLoop};
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

const MODULE_LIST: &str = "/etc/miglab/modules";

fn log(msg: &str) {
    // stdout is the serial console (the kernel opened /dev/console for init).
    println!("miglab-agent: {msg}");
}

fn uptime_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn cstr(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}

fn mount(source: &str, target: &str, fstype: &str, data: Option<&str>) -> Result<(), String> {
    let _ = std::fs::create_dir_all(target);
    let (src, tgt, fs) = (cstr(source), cstr(target), cstr(fstype));
    let data = data.map(cstr);
    let dptr = data
        .as_ref()
        .map_or(std::ptr::null(), |d| d.as_ptr() as *const libc::c_void);
    // SAFETY: all pointers are valid NUL-terminated strings (or null data) for the call.
    let r = unsafe { libc::mount(src.as_ptr(), tgt.as_ptr(), fs.as_ptr(), 0, dptr) };
    if r == 0 {
        Ok(())
    } else {
        Err(format!(
            "mount {fstype} {source} on {target}: {}",
            std::io::Error::last_os_error()
        ))
    }
}

fn load_module(path: &str) -> Result<(), String> {
    let f = File::open(path).map_err(|e| format!("open {path}: {e}"))?;
    let params = cstr("");
    // SAFETY: finit_module reads the module from the fd we hold open for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            std::os::unix::io::AsRawFd::as_raw_fd(&f),
            params.as_ptr(),
            0,
        )
    };
    let err = std::io::Error::last_os_error();
    if r == 0 || err.raw_os_error() == Some(libc::EEXIST) {
        Ok(())
    } else {
        Err(format!("load {path}: {err}"))
    }
}

/// What PID 1 has to do before anything else.
fn setup(hello: &mut Hello) {
    let mut errors = Vec::new();
    for (src, dst, fs) in [
        ("proc", "/proc", "proc"),
        ("sysfs", "/sys", "sysfs"),
        ("devtmpfs", "/dev", "devtmpfs"),
    ] {
        if let Err(e) = mount(src, dst, fs, None) {
            errors.push(e);
        }
    }
    let start = Instant::now();
    for m in std::fs::read_to_string(MODULE_LIST)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.is_empty())
    {
        if let Err(e) = load_module(m) {
            errors.push(e);
        }
    }
    hello.modules_ms = start.elapsed().as_millis() as u64;
    match mount(control::FS_TAG, control::GUEST_MOUNT, "virtiofs", None) {
        Ok(()) => hello.fs_mounted = true,
        Err(e) => errors.push(e),
    }
    if !errors.is_empty() {
        hello.setup_error = Some(errors.join("; "));
    }
}

/// The device of the virtio-serial port called `name`, once it appears.
fn find_port(name: &str, timeout: Duration) -> Option<PathBuf> {
    let start = Instant::now();
    loop {
        if let Ok(dir) = std::fs::read_dir("/sys/class/virtio-ports") {
            for e in dir.flatten() {
                let n = std::fs::read_to_string(e.path().join("name")).unwrap_or_default();
                if n.trim() == name {
                    let dev = Path::new("/dev").join(e.file_name());
                    if dev.exists() {
                        return Some(dev);
                    }
                }
            }
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

struct Agent {
    hello: Hello,
    counters: Arc<Counters>,
    workload: Option<(String, std::thread::JoinHandle<()>)>,
}

impl Agent {
    fn status(&self) -> Status {
        let c = &self.counters;
        Status {
            boot_id: self.hello.boot_id.clone(),
            workload: self.workload.as_ref().map(|(n, _)| n.clone()),
            running: c.running.load(Ordering::Relaxed),
            ops: c.ops.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            last_error: c.last_error.lock().ok().and_then(|l| l.clone()),
            uptime_ms: uptime_ms(),
        }
    }

    fn stop_workload(&mut self) {
        if let Some((_, handle)) = self.workload.take() {
            self.counters.stop.store(true, Ordering::Relaxed);
            let _ = handle.join();
        }
    }

    fn handle(&mut self, cmd: Command) -> Message {
        match cmd {
            Command::Hello => {
                let mut h = self.hello.clone();
                h.uptime_ms = uptime_ms();
                Message::Hello(h)
            }
            Command::Status => Message::Status(self.status()),
            Command::ReadLoop {
                path,
                expect,
                pause_us,
            } => {
                if self.workload.is_some() {
                    return Message::Error {
                        cmd: Some("read-loop".into()),
                        error: "a workload is already running".into(),
                    };
                }
                let job = ReadLoop {
                    path: Path::new(control::GUEST_MOUNT).join(path),
                    expect: expect.map(String::into_bytes),
                    pause: Duration::from_micros(pause_us),
                };
                self.counters = Arc::new(Counters::default());
                let c = self.counters.clone();
                match std::thread::Builder::new()
                    .name("read-loop".into())
                    .spawn(move || job.run(&c))
                {
                    Ok(h) => {
                        self.workload = Some(("read-loop".into(), h));
                        Message::Ok {
                            cmd: "read-loop".into(),
                        }
                    }
                    Err(e) => Message::Error {
                        cmd: Some("read-loop".into()),
                        error: e.to_string(),
                    },
                }
            }
            Command::Stop => {
                self.stop_workload();
                Message::Status(self.status())
            }
            Command::Poweroff => Message::Ok {
                cmd: "poweroff".into(),
            },
        }
    }
}

fn poweroff() -> ! {
    // SAFETY: sync and reboot have no memory-safety preconditions.
    unsafe {
        libc::sync();
        libc::reboot(libc::LINUX_REBOOT_CMD_POWER_OFF);
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn idle_forever(why: &str) -> ! {
    log(why);
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn main() {
    let pid1 = std::process::id() == 1;
    let mut hello = Hello {
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        kernel: String::new(),
        boot_id: String::new(),
        uptime_ms: 0,
        modules_ms: 0,
        fs_mounted: false,
        setup_error: None,
    };
    if pid1 {
        setup(&mut hello);
    }
    hello.kernel = kernel_release();
    hello.boot_id = boot_id();
    if let Some(e) = &hello.setup_error {
        log(&format!("setup: {e}"));
    }
    let Some(port) = find_port(control::CONTROL_PORT, Duration::from_secs(10)) else {
        if pid1 {
            idle_forever("no control port: is the VM started with miglab's virtio-serial ports?");
        }
        log("no control port");
        std::process::exit(1);
    };
    let mut out = match OpenOptions::new().read(true).write(true).open(&port) {
        Ok(f) => f,
        Err(e) if pid1 => idle_forever(&format!("open {}: {e}", port.display())),
        Err(e) => {
            log(&format!("open {}: {e}", port.display()));
            std::process::exit(1);
        }
    };
    let mut input = match out.try_clone() {
        Ok(f) => BufReader::new(f),
        Err(e) => idle_forever(&format!("dup {}: {e}", port.display())),
    };
    hello.uptime_ms = uptime_ms();
    log(&format!(
        "up after {} ms (modules {} ms)",
        hello.uptime_ms, hello.modules_ms
    ));
    let _ = out.write_all(control::encode(&Message::Hello(hello.clone())).as_bytes());
    let mut agent = Agent {
        hello,
        counters: Arc::new(Counters::default()),
        workload: None,
    };
    let mut line = String::new();
    loop {
        line.clear();
        match input.read_line(&mut line) {
            // A virtio port reads as end-of-file while no host is connected (between two
            // miglab commands, or before a migration's destination attaches): wait for one.
            Ok(0) => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                log(&format!("control port: {e}"));
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        }
        if line.trim().is_empty() {
            continue;
        }
        let reply = match serde_json::from_str::<Command>(line.trim()) {
            Ok(cmd) => {
                let off = cmd == Command::Poweroff;
                let reply = agent.handle(cmd);
                if off {
                    let _ = out.write_all(control::encode(&reply).as_bytes());
                    agent.stop_workload();
                    poweroff();
                }
                reply
            }
            Err(e) => Message::Error {
                cmd: None,
                error: format!("bad command {:?}: {e}", line.trim()),
            },
        };
        let _ = out.write_all(control::encode(&reply).as_bytes());
    }
}

//! The guest agent: `/init` of miglab's guest image.
//!
//! As PID 1 it mounts /proc, /sys and /dev, loads the kernel modules listed in
//! /etc/miglab/modules (in order), mounts the virtio-fs share, finds its virtio-serial ports by
//! name and says hello on the control port. Then it serves commands: it runs workloads and
//! reports their counters. PID 1 must never exit, so every failure is reported, not fatal.

use miglab_workloads::control::{self, Command, Hello, Message, Status};
use miglab_workloads::dirty::Dirtier;
use miglab_workloads::engine::{self, RecordBuffer, Running};
use miglab_workloads::record::Record;
use miglab_workloads::verify::RunTag;
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
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default()
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
    let dptr = data.as_ref().map_or(std::ptr::null(), |d| d.as_ptr() as *const libc::c_void);
    // SAFETY: all pointers are valid NUL-terminated strings (or null data) for the call.
    let r = unsafe { libc::mount(src.as_ptr(), tgt.as_ptr(), fs.as_ptr(), 0, dptr) };
    if r == 0 {
        Ok(())
    } else {
        Err(format!("mount {fstype} {source} on {target}: {}", std::io::Error::last_os_error()))
    }
}

fn load_module(path: &str) -> Result<(), String> {
    let f = File::open(path).map_err(|e| format!("open {path}: {e}"))?;
    let params = cstr("");
    // SAFETY: finit_module reads the module from the fd we hold open for the call.
    let r = unsafe {
        libc::syscall(libc::SYS_finit_module, std::os::unix::io::AsRawFd::as_raw_fd(&f), params.as_ptr(), 0)
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
    for (src, dst, fs) in
        [("proc", "/proc", "proc"), ("sysfs", "/sys", "sysfs"), ("devtmpfs", "/dev", "devtmpfs")]
    {
        if let Err(e) = mount(src, dst, fs, None) {
            errors.push(e);
        }
    }
    let start = Instant::now();
    for m in std::fs::read_to_string(MODULE_LIST).unwrap_or_default().lines().filter(|l| !l.is_empty()) {
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
    records: Arc<RecordBuffer>,
    workload: Option<Running>,
    dirtier: Option<Dirtier>,
}

impl Agent {
    fn status(&self) -> Status {
        let mut st = Status {
            boot_id: self.hello.boot_id.clone(),
            records_dropped: self.records.dropped.load(Ordering::Relaxed),
            uptime_ms: uptime_ms(),
            ..Status::default()
        };
        if let Some(w) = &self.workload {
            let c = &w.counters;
            st.workload = Some(w.name.clone());
            st.running = !w.finished();
            st.laying_out = c.laying_out.load(Ordering::Relaxed);
            st.layout_done = c.layout_done.load(Ordering::Relaxed);
            st.layout_total = c.layout_total.load(Ordering::Relaxed);
            st.layout_error = c.layout_error.lock().ok().and_then(|l| l.clone());
            st.ops = c.ops.load(Ordering::Relaxed);
            st.errors = c.errors.load(Ordering::Relaxed);
            st.mismatches = c.mismatches.load(Ordering::Relaxed);
            st.bytes = c.bytes.load(Ordering::Relaxed);
            st.last_error = c.last_error.lock().ok().and_then(|l| l.clone());
        }
        st
    }

    fn handle(&mut self, cmd: Command) -> Message {
        match cmd {
            Command::Hello => {
                let mut h = self.hello.clone();
                h.uptime_ms = uptime_ms();
                Message::Hello(h)
            }
            Command::Status => Message::Status(self.status()),
            Command::Start { workload, seed, nonce } => {
                if self.workload.as_ref().is_some_and(|w| !w.finished()) {
                    return Message::Error {
                        cmd: Some("start".into()),
                        error: "a workload is already running".into(),
                    };
                }
                match engine::start(
                    &workload,
                    Path::new(control::GUEST_MOUNT),
                    self.records.clone(),
                    RunTag { seed, nonce },
                ) {
                    Ok(r) => {
                        self.workload = Some(r);
                        Message::Ok { cmd: "start".into() }
                    }
                    Err(e) => Message::Error { cmd: Some("start".into()), error: e },
                }
            }
            Command::Dirty { spec, nonce } => {
                if let Some(mut d) = self.dirtier.take() {
                    d.stop();
                }
                match Dirtier::start(spec, nonce) {
                    Ok(d) => {
                        self.dirtier = Some(d);
                        Message::Ok { cmd: "dirty".into() }
                    }
                    Err(e) => Message::Error { cmd: Some("dirty".into()), error: e },
                }
            }
            Command::MemoryMark => match &self.dirtier {
                Some(d) => {
                    d.mark();
                    Message::Ok { cmd: "memory-mark".into() }
                }
                None => {
                    Message::Error { cmd: Some("memory-mark".into()), error: "no dirtying load runs".into() }
                }
            },
            Command::MemoryCheck => match &self.dirtier {
                Some(d) => Message::Memory(d.check()),
                None => {
                    Message::Error { cmd: Some("memory-check".into()), error: "no dirtying load runs".into() }
                }
            },
            Command::Verify => match &mut self.workload {
                Some(w) => {
                    self.dirtier = None;
                    w.stop();
                    // The host gives up on a verify pass by stopping the guest.
                    Message::Verify(w.verify(self.records.as_ref(), &|| false))
                }
                None => Message::Error { cmd: Some("verify".into()), error: "no workload has run".into() },
            },
            Command::Stop => {
                self.dirtier = None;
                if let Some(w) = &mut self.workload {
                    w.stop();
                }
                Message::Status(self.status())
            }
            Command::Poweroff => Message::Ok { cmd: "poweroff".into() },
        }
    }
}

/// Streams the record buffer to the records port, with a heartbeat every millisecond. The
/// schedule is absolute, so heartbeats do not drift; after a pause (a migration) it restarts
/// from now instead of bursting the missed ones.
fn stream_records(port: File, records: Arc<RecordBuffer>) {
    let mut port = port;
    let period = 1_000_000u64;
    let mut next = engine::now_ns() + period;
    let mut seq = 0u32;
    let mut outbox = engine::Outbox::default();
    loop {
        let ts = libc::timespec {
            tv_sec: (next / 1_000_000_000) as libc::time_t,
            tv_nsec: (next % 1_000_000_000) as libc::c_long,
        };
        // SAFETY: clock_nanosleep reads the timespec we own; a null remainder is allowed.
        unsafe {
            libc::clock_nanosleep(libc::CLOCK_MONOTONIC, libc::TIMER_ABSTIME, &ts, std::ptr::null_mut())
        };
        let now = engine::now_ns();
        records.push_record(&Record::Heartbeat { seq, guest_ns: now });
        seq = seq.wrapping_add(1);
        outbox.refill(&records);
        // Blocks while no host is connected; the buffer's cap bounds what waits meanwhile. What
        // a failed write did not deliver is written next time, not lost.
        if outbox.send(&mut port).is_err() {
            std::thread::sleep(Duration::from_millis(10));
        }
        next += period;
        if now > next + 100 * period {
            next = now + period;
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
    // Asked on the host by `miglab image build`: which build this agent is.
    if !pid1 && std::env::args().nth(1).as_deref() == Some("--build-id") {
        println!("{}", control::AGENT_BUILD);
        return;
    }
    let mut hello = Hello {
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        protocol: control::PROTOCOL,
        build: control::AGENT_BUILD.to_string(),
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
    log(&format!("up after {} ms (modules {} ms)", hello.uptime_ms, hello.modules_ms));
    let _ = out.write_all(control::encode(&Message::Hello(hello.clone())).as_bytes());
    // Up to ~1 s of records at a high op rate wait in memory for a slow reader.
    let records = Arc::new(RecordBuffer::new(1 << 18));
    match find_port(control::RECORDS_PORT, Duration::from_secs(2))
        .map(|p| OpenOptions::new().write(true).open(&p))
    {
        Some(Ok(port)) => {
            let r = records.clone();
            if let Err(e) =
                std::thread::Builder::new().name("records".into()).spawn(move || stream_records(port, r))
            {
                log(&format!("records thread: {e}"));
            }
        }
        Some(Err(e)) => log(&format!("open the records port: {e}")),
        None => log("no records port: op records are not streamed"),
    }
    let mut agent = Agent { hello, records, workload: None, dirtier: None };
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
                    if let Some(w) = &mut agent.workload {
                        w.stop();
                    }
                    poweroff();
                }
                reply
            }
            Err(e) => Message::Error { cmd: None, error: format!("bad command {:?}: {e}", line.trim()) },
        };
        let _ = out.write_all(control::encode(&reply).as_bytes());
    }
}

//! Helpers of the lab tests: a private lab root per test, the miglab binary, a scenario
//! builder, the one way to run a scenario and read its result, and checks that nothing of a lab
//! is left behind.

#![allow(dead_code)] // each test binary uses a different subset

use miglab::session::{RunOptions, Source};
use miglab_infra::topology::lab::{leftovers, Lab, LabOptions};
use miglab_infra::topology::state::{LabState, StateFile};
use miglab_infra::topology::Topology;
use miglab_model::RunResult;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Why a lab test is ignored in a plain `cargo test`; `ci/test` runs them.
pub const NEEDS_LAB: &str = "needs the lab (root, Ceph, namespaces): cargo test -- --include-ignored";

/// A lab root of its own, removed at the end (it is outside the repository).
pub fn lab_root() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("miglab-test-").tempdir_in("/var/tmp").expect("lab root")
}

pub fn miglab() -> Command {
    Command::new(env!("CARGO_BIN_EXE_miglab"))
}

pub fn state_of(root: &Path, name: &str) -> Option<LabState> {
    StateFile::load(&root.join(name).join("state.json")).ok()
}

/// Asserts that nothing of the lab described by `state` exists any more.
pub fn assert_nothing_left(state: &LabState) {
    let left = leftovers(state);
    assert!(left.is_empty(), "left behind: {left:?}");
    for c in &state.layout.clients {
        assert!(!Path::new("/run/netns").join(&c.netns).exists(), "netns {} left", c.netns);
        assert!(!Path::new("/sys/class/net").join(&c.veth).exists(), "veth {} left", c.veth);
    }
    assert!(!Path::new("/sys/class/net").join(&state.layout.bridge).exists(), "bridge left");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let dir = state.layout.dir.display().to_string();
    assert!(!mounts.contains(&dir), "a mount under {dir} is left");
    let nft = Command::new("nft").args(["list", "tables"]).output().expect("nft");
    let tables = String::from_utf8_lossy(&nft.stdout);
    // By whole name: another lab's table may start with this one's.
    let table = |l: &str| l.split_whitespace().last() == Some(state.layout.nft_table.as_str());
    assert!(!tables.lines().any(table), "nft table left: {tables}");
    for p in &state.processes {
        assert!(!miglab_infra::process::is_alive(p), "{} (pid {}) still runs", p.name, p.pid);
    }
    assert!(!state.layout.dir.exists(), "lab directory {} left", state.layout.dir.display());
}

/// What the machine did while a test ran, said beside an assertion about the size of an
/// effect, so a reader can tell a defect from a starved machine (these machines are virtual:
/// the hypervisor steals CPU at times).
pub struct MachineLoad {
    start: Option<miglab_infra::cpu::CpuTimes>,
}

thread_local! {
    /// When the running test began (cargo runs each test on a thread of its own).
    static TEST_BEGAN: std::cell::Cell<Option<miglab_infra::cpu::CpuTimes>> = const { std::cell::Cell::new(None) };
}

impl MachineLoad {
    pub fn start() -> Self {
        Self { start: miglab_infra::cpu::CpuTimes::now() }
    }

    /// Marks the running test's beginning, for [`MachineLoad::of_test`].
    pub fn test_begins() {
        TEST_BEGAN.with(|t| t.set(miglab_infra::cpu::CpuTimes::now()));
    }

    /// Since the running test began ([`MachineLoad::test_begins`]), or since now if it never said.
    pub fn of_test() -> Self {
        Self { start: TEST_BEGAN.with(|t| t.get()).or_else(miglab_infra::cpu::CpuTimes::now) }
    }

    /// `CPU stolen since the test began: 3.2 %; load average 1.52 1.10 0.80`.
    pub fn said(&self) -> String {
        let steal = self
            .start
            .zip(miglab_infra::cpu::CpuTimes::now())
            .and_then(|(a, b)| a.steal_pct(&b))
            .map_or_else(|| "unknown".into(), |p| format!("{p:.1} %"));
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let load: Vec<&str> = load.split_whitespace().take(3).collect();
        format!("CPU stolen by the hypervisor since the test began: {steal}; load average {}", load.join(" "))
    }
}

/// Polls `cond` until it holds or `timeout` passes.
pub fn eventually(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let check = || Ok::<_, std::convert::Infallible>(cond().then_some(()));
    if let Err(e) = miglab_infra::wait::until(what, timeout, Duration::from_millis(50), check) {
        panic!("{e}");
    }
}

/// Runs `f` on a thread and fails if it does not finish within `timeout` (I/O on a FUSE
/// mount of a broken cluster can block forever).
pub fn within<T: Send + 'static>(what: &str, timeout: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(timeout).unwrap_or_else(|_| panic!("{what} did not finish within {timeout:?}"))
}

pub fn path_in(root: &Path, parts: &[&str]) -> PathBuf {
    parts.iter().fold(root.to_path_buf(), |p, s| p.join(s))
}

/// Tears lab `name` down when dropped, so that a failing test leaves nothing behind either.
/// Declare it after the root (drops run in reverse), so the lab goes before its directory.
pub struct DownOnDrop<'a> {
    pub name: &'a str,
    pub root: &'a Path,
}

impl Drop for DownOnDrop<'_> {
    fn drop(&mut self) {
        if self.root.join(self.name).exists() {
            if let Err(e) = miglab_infra::topology::lab::down(self.name, self.root, Default::default()) {
                eprintln!("cleanup of lab {} failed: {e}", self.name);
            }
        }
    }
}

/// The Python venv `ci/setup` makes, with PyPI's `hdrhistogram`.
pub fn hdrh_python() -> PathBuf {
    miglab_infra::paths::prefix().join("pyenv/bin/python")
}

/// Reads `hlog` with PyPI's `hdrhistogram` and checks, per op kind, that its count and
/// percentiles are the ones `ops` (what result.json says) holds.
pub fn hlog_agrees_with(hlog: &Path, ops: &[miglab_model::OpSummary]) {
    let py = hdrh_python();
    assert!(py.exists(), "{} is missing: run ci/setup", py.display());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/hlog_read.py");
    let out = Command::new(&py).arg(&script).arg(hlog).output().expect("run python");
    assert!(out.status.success(), "the Python reader failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("its JSON");
    assert!(v["intervals"].as_u64().unwrap_or(0) > 0, "no interval read: {v}");
    let mut seen = 0;
    for o in ops.iter().filter(|o| o.count > 0) {
        let t = &v["tags"][&o.op];
        assert_eq!(t["count"].as_u64(), Some(o.count), "{}: counts differ: {t} vs {o:?}", o.op);
        // Both report a percentile as the highest value equivalent to it (3 significant digits).
        let close = |py: &serde_json::Value, ours: u64, what: &str| {
            let py = py.as_u64().unwrap_or(0);
            let tol = ours / 500 + 1;
            assert!(py.abs_diff(ours) <= tol, "{} {what}: Python reads {py}, result.json says {ours}", o.op);
        };
        close(&t["p50"], o.guest.p50_us, "p50");
        close(&t["p90"], o.guest.p90_us, "p90");
        close(&t["p99"], o.guest.p99_us, "p99");
        close(&t["p999"], o.guest.p999_us, "p99.9");
        close(&t["max"], o.guest.max_us, "max");
        seen += 1;
    }
    assert!(seen > 0, "no op kind to compare");
}

/// A scenario file written for a test: a name and a seed, then its tables (TOML text, such as
/// a workload or a `[[fault]]`), in order.
#[derive(Debug, Clone)]
pub struct ScenarioFile {
    name: String,
    seed: u64,
    parts: Vec<String>,
}

impl ScenarioFile {
    pub fn new(name: &str) -> Self {
        Self { name: name.into(), seed: 5, parts: Vec::new() }
    }
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    /// A table or key, as TOML.
    pub fn with(mut self, toml: &str) -> Self {
        self.parts.push(toml.to_string());
        self
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn text(&self) -> String {
        let mut t = format!("name = \"{}\"\nseed = {}\n", self.name, self.seed);
        for p in &self.parts {
            t.push_str(p);
            if !p.ends_with('\n') {
                t.push('\n');
            }
        }
        t
    }
    /// Writes it as `<dir>/<name>.toml`.
    pub fn write(&self, dir: &Path) -> PathBuf {
        std::fs::create_dir_all(dir).expect("mkdir");
        let p = dir.join(format!("{}.toml", self.name));
        std::fs::write(&p, self.text()).expect("write the scenario");
        p
    }
}

/// `miglab run`'s options for `source` on lab `lab` under `root`, results under `out`.
pub fn run_options(source: Source, out: &Path, root: &Path, lab: &str) -> RunOptions {
    RunOptions {
        source,
        out: out.into(),
        lab_root: root.into(),
        repetitions: None,
        lab_name: Some(lab.into()),
        host_mode: None,
        binaries: Default::default(),
        topology: None,
    }
}

/// The result in a result directory.
pub fn read_result(dir: &Path) -> RunResult {
    let p = dir.join("result.json");
    let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Runs `s` (its first repetition) on lab `lab` under `root`; returns its result, whatever its
/// status (a failed run's error is printed).
pub fn run_scenario(root: &Path, lab: &str, s: &ScenarioFile) -> RunResult {
    let file = s.write(&root.join("scenarios"));
    let out = root.join("results");
    // A leased lab's root is shared by the tests of a binary: no earlier result may be read
    // for this run's.
    let _ = std::fs::remove_dir_all(out.join(s.name()));
    if let Err(e) = miglab::session::run(&run_options(Source::Scenario(file), &out, root, lab)) {
        eprintln!("{}: {e}", s.name());
    }
    let r = read_result(&out.join(s.name()).join("1"));
    every_completed_hop_is_attributed(&r);
    r
}

/// Every completed hop of every guest has its downtime split by QEMU's tracepoints (whatever
/// the test is about). Whether the parts add up to QEMU's whole-millisecond figure is said, not
/// asserted here: a loaded machine may preempt QEMU between its trace and its clock read.
pub fn every_completed_hop_is_attributed(r: &RunResult) {
    let hops = r.migrations.iter().chain(r.guests.iter().flat_map(|g| &g.migrations));
    for m in hops.filter(|m| m.completed()) {
        assert!(
            m.downtime_parts.is_some(),
            "guest {} hop {}: no downtime parts: {:?}",
            m.guest,
            m.hop,
            m.downtime_parts_problem
        );
        if let Some(p) = &m.downtime_parts_problem {
            eprintln!("guest {} hop {}: {p}", m.guest, m.hop);
        }
    }
}

/// A lab of a test's own, in a private root: brought up by [`TestLab::up`], checked and torn
/// down by [`TestLab::down_clean`], and torn down anyway when the test fails.
pub struct TestLab {
    name: String,
    lab: Option<Lab>,
    root: tempfile::TempDir,
}

impl TestLab {
    pub fn up(name: &str) -> Self {
        let root = lab_root();
        let lab =
            Lab::up(&LabOptions { name: name.into(), root: root.path().into(), ..LabOptions::default() })
                .unwrap_or_else(|e| panic!("lab up: {e}"));
        Self { name: name.into(), lab: Some(lab), root }
    }

    pub fn lab(&self) -> &Lab {
        self.lab.as_ref().expect("the lab is up")
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// Runs `s` on this lab; its result, whatever its status.
    pub fn run(&self, s: &ScenarioFile) -> RunResult {
        run_scenario(self.root(), &self.name, s)
    }

    /// What is not as a fresh lab has it, after waiting up to 90 s for Ceph to be healthy
    /// again: a daemon not running, a link left cut or shaped, a fault left in the journal, a
    /// guest left running, a mount that does not answer. Empty when the lab is clean.
    pub fn unclean(&self) -> Vec<String> {
        let lab = self.lab();
        let start = Instant::now();
        let mut health = String::new();
        while start.elapsed() < Duration::from_secs(90) {
            match lab.health() {
                Ok((true, _)) => {
                    health.clear();
                    break;
                }
                Ok((false, s)) => health = s,
                Err(e) => health = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        let mut p = Vec::new();
        if !health.is_empty() {
            p.push(format!("Ceph not healthy within 90 s after the run: {health}"));
        }
        match miglab_infra::topology::lab::status(&self.name, self.root()) {
            Ok(st) => {
                let dead: Vec<_> =
                    st.processes.iter().filter(|p| p.state != "running").map(|p| p.name.clone()).collect();
                if !dead.is_empty() {
                    p.push(format!("{dead:?} not running after the run"));
                }
            }
            Err(e) => p.push(format!("status: {e}")),
        }
        match lab.altered_links() {
            Ok(l) if l.is_empty() => {}
            Ok(l) => p.push(format!("links left cut or shaped: {l:?}")),
            Err(e) => p.push(format!("links: {e}")),
        }
        if !lab.journal().is_empty() {
            p.push(format!("left in the fault journal: {:?}", lab.journal()));
        }
        let vms = miglab_infra::vm::ledger::all(lab);
        if !vms.is_empty() {
            p.push(format!(
                "guests left running: {:?}",
                vms.iter().map(|r| r.id.to_string()).collect::<Vec<_>>()
            ));
        }
        for h in ["c1", "c2"] {
            match lab.ensure_mount(h, Duration::from_secs(10)) {
                Ok(None) => {}
                Ok(Some(why)) => p.push(format!("{h}'s CephFS {why}, and was mounted again")),
                Err(e) => p.push(format!("{h}'s CephFS mount: {e}")),
            }
        }
        p
    }

    /// Checks that the lab is clean ([`TestLab::unclean`]); then tears it down and checks
    /// nothing is left.
    pub fn down_clean(mut self) {
        let unclean = self.unclean();
        assert!(unclean.is_empty(), "the lab after the test: {unclean:?}");
        let lab = self.lab.take().expect("the lab is up");
        let state = lab.state();
        lab.down().unwrap_or_else(|e| panic!("lab down: {e}"));
        assert_nothing_left(&state);
    }

    /// The lab of this test binary, for one test at a time: the lab the previous test left
    /// clean, or a new one. Tests that must own a fresh lab (its life cycle, a miglab killed
    /// mid-fault) use [`TestLab::up`]. Brought up once instead of once a test, a binary of
    /// twenty lab tests spends its time on the tests.
    pub fn lease() -> Lease {
        let mut g = LEASED.lock().unwrap_or_else(|e| e.into_inner());
        if g.is_none() {
            static AT_EXIT: std::sync::Once = std::sync::Once::new();
            // libtest has no hook after the last test: the lab goes when the process exits.
            AT_EXIT.call_once(|| unsafe {
                libc::atexit(release_at_exit);
            });
            *g = Some(TestLab::up(&lease_name()));
        }
        Lease { guard: g, clean: false }
    }
}

/// The lab [`TestLab::lease`] hands out, between tests.
static LEASED: std::sync::Mutex<Option<TestLab>> = std::sync::Mutex::new(None);

extern "C" fn release_at_exit() {
    if let Ok(mut g) = LEASED.try_lock() {
        if let Some(t) = g.take() {
            let state = t.lab().state();
            drop(t);
            let left = leftovers(&state);
            if !left.is_empty() {
                eprintln!("the leased lab {} left {left:?}", state.layout.name);
            }
        }
    }
}

/// `l-<test binary>`: one name per binary, so two binaries never share a lab.
fn lease_name() -> String {
    let exe = std::env::current_exe().ok();
    let stem = exe.as_ref().and_then(|e| e.file_stem()).and_then(|s| s.to_str()).unwrap_or("tests");
    let base = stem.split('-').next().unwrap_or("tests");
    format!("l-{}", &base[..base.len().min(10)])
}

/// One test's hold on the binary's lab: [`Lease::release_clean`] hands it to the next test
/// after the checks `down_clean` makes; a test that fails, or leaves the lab unclean, has it
/// torn down, and the next test gets a new one — no test sees another's leftovers.
pub struct Lease {
    guard: std::sync::MutexGuard<'static, Option<TestLab>>,
    clean: bool,
}

impl std::ops::Deref for Lease {
    type Target = TestLab;
    fn deref(&self) -> &TestLab {
        self.guard.as_ref().expect("leased")
    }
}

impl Lease {
    /// Checks the lab clean and hands it on; if it is not, tears it down and fails the test.
    pub fn release_clean(mut self) {
        let unclean = self.unclean();
        self.clean = unclean.is_empty();
        assert!(unclean.is_empty(), "the leased lab after the test: {unclean:?}");
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.clean || std::thread::panicking() {
            drop(self.guard.take());
        }
    }
}

impl Drop for TestLab {
    fn drop(&mut self) {
        // The lab's connections go before its teardown.
        drop(self.lab.take());
        if self.root.path().join(&self.name).exists() {
            if let Err(e) =
                miglab_infra::topology::lab::down(&self.name, self.root.path(), Default::default())
            {
                eprintln!("cleanup of lab {} failed: {e}", self.name);
            }
        }
    }
}

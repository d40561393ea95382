//! Everything `run` would refuse, found before anything runs — shared by `miglab check` and
//! `miglab run`, so that `check` says all of it and a sweep is refused before its first cell:
//!
//! 1. [`load`]: the scenario (every field, every cell of a sweep) or the replayed plan, each
//!    guest against this machine's memory, each choice of builds; [`image_agent`]: the guest
//!    image is this miglab's.
//! 2. [`plans`]: every plan of every repetition of every cell, derived for the ground they will
//!    run on (its hosts and OSDs), with what that ground refuses (a fault, this machine's builds
//!    on remote hosts) and the guest image of each chosen kernel.
//!
//! `check` derives the plans for the lab a run would bring up; `run` for the site it opened.
//! What this machine can give is checked here too: a migrating guest exists twice for a moment
//! (on the source and on the destination).

use crate::plan::{Plan, PlanError};
use crate::scenario::{Cell, GuestSpec, GuestsSpec, LabSpec, Problem, Problems, Scenario, ScenarioError};
use miglab_faults::Fault;
use miglab_infra::binaries::{BinariesError, BinaryChoice};
use miglab_infra::image::{GuestImage, ImageError};
use miglab_infra::topology::ceph::ClusterSpec;
use miglab_infra::topology::lab::LabOptions;
use miglab_model::RunResult;
use miglab_workloads::job::Workload;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// What `run` refuses before anything runs.
#[derive(Debug, Error)]
pub enum PreflightError {
    #[error(transparent)]
    Scenario(#[from] crate::scenario::ScenarioError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("could not read the result to replay, {path}: {why}")]
    Replay { path: PathBuf, why: String },
    #[error(transparent)]
    Binaries(#[from] miglab_infra::binaries::BinariesError),
    #[error(transparent)]
    Image(ImageError),
    /// The ground cannot do what the plan asks (a fault, a choice of builds).
    #[error("{0}")]
    NotHere(String),
}

/// What to run.
#[derive(Debug, Clone)]
pub enum Source {
    Scenario(PathBuf),
    /// The plan of an earlier `result.json`.
    Replay(PathBuf),
}

/// What a session runs, loaded and checked: not yet tied to a ground.
#[derive(Debug)]
pub struct Loaded {
    /// The scenario's name (a replay's: the original's).
    pub name: String,
    /// The scenario file's text, kept in every result.
    pub text: String,
    pub lab: LabSpec,
    what: What,
}

#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one per run
enum What {
    Derive { scenario: Box<Scenario>, workload: Workload, repetitions: u32, cells: Vec<Cell> },
    Replay(Box<Plan>),
}

impl Loaded {
    /// The most guests any run of it drives.
    pub fn most_guests(&self) -> u32 {
        match &self.what {
            What::Derive { scenario, cells, .. } => cells
                .iter()
                .map(|c| c.scenario.guests.count)
                .chain([scenario.guests.count])
                .max()
                .unwrap_or(1),
            What::Replay(p) => p.guests.count,
        }
    }

    /// Whether any run of it has a memory-dirtying load.
    pub fn dirties(&self) -> bool {
        match &self.what {
            What::Derive { scenario, cells, .. } => {
                scenario.dirty.is_some() || cells.iter().any(|c| c.scenario.dirty.is_some())
            }
            What::Replay(p) => p.dirty.is_some(),
        }
    }

    /// Every fault any run of it injects.
    fn faults(&self) -> Vec<&miglab_faults::Fault> {
        match &self.what {
            What::Derive { scenario, cells, .. } => std::iter::once(&**scenario)
                .chain(cells.iter().map(|c| &c.scenario))
                .flat_map(|s| s.faults.iter().map(|f| &f.fault))
                .collect(),
            What::Replay(p) => p.faults.iter().map(|f| &f.fault).collect(),
        }
    }

    /// Whether its runs need the lab's CephFS clients armed for a storage delay, or must not
    /// have them armed (a fenced client armed can crash: see [`ClientArming`]).
    pub fn client_arming(&self) -> ClientArming {
        use miglab_faults::{Fault, StorageTarget};
        let faults = self.faults();
        let delays =
            faults.iter().any(|f| matches!(f, Fault::StorageDelay { target: StorageTarget::Client(_), .. }));
        let fences =
            faults.iter().any(|f| matches!(f, Fault::ClientEvict { .. } | Fault::ClientBlocklist { .. }));
        match (delays, fences) {
            (true, _) => ClientArming::Armed,
            (false, true) => ClientArming::Unarmed,
            (false, false) => ClientArming::Either,
        }
    }

    /// One line on what a valid scenario does (`miglab check`'s answer).
    pub fn summary(&self) -> String {
        match &self.what {
            What::Derive { scenario, workload, cells, .. } => {
                let sweep = match cells.len() {
                    0 => String::new(),
                    n => format!(
                        "; a sweep of {n} cells: {}",
                        cells.iter().map(|c| c.sweep.name()).collect::<Vec<_>>().join("; ")
                    ),
                };
                format!("{}{sweep}", summary(scenario, workload))
            }
            What::Replay(p) => format!("{}: ok — the plan of repetition {} again", p.scenario, p.repetition),
        }
    }
}

/// What a run needs of the lab's CephFS clients' messengers. A storage delay on a client acts
/// only on connections opened after its `ms_inject_delay_type` was set, so the client must be
/// mounted armed. But an armed ceph-fuse 16.2.15 whose MDS session is reset by an eviction can
/// abort (`FAILED ceph_assert(connection->delay_state->ready())` in
/// `ProtocolV2::handle_server_ident`, seen in the lab): a fenced client must be unarmed, as a
/// real one is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientArming {
    Armed,
    Unarmed,
    Either,
}

/// How `run`'s options change what is loaded.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// The builds under test, over the scenario's.
    pub binaries: BinaryChoice,
    pub repetitions: Option<u32>,
    pub lab_name: Option<String>,
}

/// Step 1: the source loaded and checked completely.
pub fn load(source: &Source, o: &Overrides) -> Result<Loaded, PreflightError> {
    let mut loaded = match source {
        Source::Scenario(p) => {
            let (mut s, text, w) = Scenario::load(p)?;
            let base = p.parent().unwrap_or(Path::new("."));
            host(p, &s.guest, &s.guests, s.in_flight())?;
            s.binaries = s.binaries.anchored(base).overridden(&o.binaries);
            binaries(p, &s.binaries)?;
            let mut cells = s.cells(&text, p)?;
            for c in &mut cells {
                host(p, &c.scenario.guest, &c.scenario.guests, c.scenario.in_flight())?;
                c.scenario.binaries = c.scenario.binaries.anchored(base).overridden(&o.binaries);
                binaries(p, &c.scenario.binaries)?;
            }
            let repetitions = o.repetitions.unwrap_or(s.repetitions);
            Loaded {
                name: s.name.clone(),
                text,
                lab: s.lab.clone(),
                what: What::Derive { scenario: Box::new(s), workload: w, repetitions, cells },
            }
        }
        Source::Replay(p) => {
            let r = read_result(p)?;
            let mut plan = Plan::from_result(p, &r.plan)?;
            host(p, &plan.guest, &plan.guests, plan.in_flight())?;
            plan.binaries = plan.binaries.overridden(&o.binaries);
            binaries(p, &plan.binaries)?;
            Loaded {
                name: plan.scenario.clone(),
                text: r.scenario_text,
                lab: plan.lab.clone(),
                what: What::Replay(Box::new(plan)),
            }
        }
    };
    if let Some(n) = &o.lab_name {
        loaded.lab.name = n.clone();
    }
    Ok(loaded)
}

/// A guest image of another miglab's agent is refused before any lab or host is touched (no
/// image at all is `run`'s to report when it boots the guest).
pub fn image_agent() -> Result<(), PreflightError> {
    match GuestImage::current(&miglab_infra::paths::cache()) {
        Err(e @ ImageError::OtherAgent { .. }) => Err(PreflightError::Image(e)),
        _ => Ok(()),
    }
}

fn read_result(p: &Path) -> Result<RunResult, PreflightError> {
    let bytes =
        std::fs::read(p).map_err(|e| PreflightError::Replay { path: p.into(), why: e.to_string() })?;
    serde_json::from_slice(&bytes).map_err(|e| PreflightError::Replay { path: p.into(), why: e.to_string() })
}

/// What the plans are derived for: the ground's client hosts and OSDs, and what it refuses.
pub struct Ground<'a> {
    pub hosts: Vec<String>,
    /// The OSDs a fault may pick, by their ids (a real cluster's have gaps).
    pub osds: Vec<u32>,
    /// Remote hosts run their own QEMU and virtiofsd: this machine's builds cannot be chosen.
    pub remote: bool,
    /// Why a fault cannot run here, if it cannot.
    pub refuses: &'a dyn Fn(&Fault) -> Option<String>,
    /// Build the guest image of each chosen kernel (`run`); `check` does not build anything.
    pub images: bool,
}

impl std::fmt::Debug for Ground<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ground").field("hosts", &self.hosts).field("osds", &self.osds).finish()
    }
}

impl Ground<'static> {
    /// The lab a run brings up when none runs: `check`'s ground.
    pub fn fresh_lab() -> Self {
        let clients = LabOptions::default().clients;
        Ground {
            hosts: (1..=clients).map(|i| format!("c{i}")).collect(),
            osds: (0..ClusterSpec::DEFAULT_OSDS).collect(),
            remote: false,
            refuses: &|_| None,
            images: false,
        }
    }
}

/// Step 2: every plan, in the order they run. Repetition by repetition, every cell in turn: the
/// cells' runs interleave, so that a drift of the lab or the machine (a warm cache, a
/// neighbour's load) falls on every cell alike — what makes two cells of one sweep a fair A/B
/// comparison.
pub fn plans(loaded: &Loaded, ground: &Ground<'_>) -> Result<Vec<Plan>, PreflightError> {
    let mut list = match &loaded.what {
        What::Derive { scenario, workload, repetitions, cells } if cells.is_empty() => (1..=*repetitions)
            .map(|rep| Plan::derive(scenario, workload, rep, &ground.hosts, &ground.osds))
            .collect::<Result<Vec<_>, PlanError>>()?,
        What::Derive { repetitions, cells, .. } => {
            let mut list = Vec::new();
            for rep in 1..=*repetitions {
                for c in cells {
                    let mut p = Plan::derive(&c.scenario, &c.workload, rep, &ground.hosts, &ground.osds)?;
                    p.cell = Some(c.sweep.clone());
                    list.push(p);
                }
            }
            list
        }
        What::Replay(p) => vec![(**p).clone()],
    };
    // The guest image of a chosen kernel: resolved once per choice (it hashes the kernel
    // package), not per repetition.
    let mut images: Vec<(BinaryChoice, Option<PathBuf>)> = Vec::new();
    for plan in &mut list {
        plan.lab = loaded.lab.clone();
        refused(plan, ground)?;
        if !ground.images {
            continue;
        }
        plan.image = match images.iter().find(|(c, _)| *c == plan.binaries) {
            Some((_, img)) => img.clone(),
            None => {
                let img = plan.binaries.image()?;
                images.push((plan.binaries.clone(), img.clone()));
                img
            }
        };
    }
    Ok(list)
}

/// What `ground` cannot do of `plan`.
fn refused(plan: &Plan, ground: &Ground<'_>) -> Result<(), PreflightError> {
    if ground.remote && (plan.binaries.qemu.is_some() || plan.binaries.virtiofsd.is_some()) {
        return Err(PreflightError::NotHere(
            "--qemu and --virtiofsd (or [binaries]) choose this machine's builds: on a topology each host runs its own, given as `qemu` and `virtiofsd` in its [[host]]".into(),
        ));
    }
    if let Some((kind, why)) =
        plan.faults.iter().find_map(|f| (ground.refuses)(&f.fault).map(|w| (f.fault.kind(), w)))
    {
        let cell = plan.cell.as_ref().map(|c| format!(" (cell {})", c.name())).unwrap_or_default();
        return Err(PreflightError::NotHere(format!("fault '{kind}'{cell}: {why}")));
    }
    Ok(())
}

/// Memory this machine has available now, in MiB (MemAvailable).
pub fn available_mib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024)
}

/// The guests must fit this machine with a destination instance for each migrating at once
/// (source and destination both hold a guest's memory during its switch-over).
pub fn host_problems(
    guest: &GuestSpec,
    guests: &GuestsSpec,
    in_flight: u32,
    available: Option<u64>,
) -> Vec<Problem> {
    let need = guests.peak_memory_mib(guest, in_flight);
    let what = if guests.count > 1 {
        format!("{} guests with {in_flight} migrating at once", guests.count)
    } else {
        format!("{} MiB", guest.memory_mib)
    };
    match available {
        Some(avail) if need > avail => vec![Problem {
            line: None,
            field: "guest.memory_mib".into(),
            message: format!(
                "{what} cannot migrate here: sources and destinations hold {need} MiB together, this machine has {avail} MiB available; lower it"
            ),
        }],
        _ => Vec::new(),
    }
}

/// Refuses guests this machine cannot hold.
pub fn host(
    path: &Path,
    guest: &GuestSpec,
    guests: &GuestsSpec,
    in_flight: u32,
) -> Result<(), ScenarioError> {
    let list = host_problems(guest, guests, in_flight, available_mib());
    if list.is_empty() {
        Ok(())
    } else {
        Err(ScenarioError::Invalid(Problems { path: path.into(), list }))
    }
}

/// Refuses chosen builds that are not there (relative paths from the scenario's directory).
pub fn binaries(path: &Path, b: &BinaryChoice) -> Result<(), ScenarioError> {
    match b.anchored(path.parent().unwrap_or(Path::new("."))).check() {
        Ok(()) => Ok(()),
        Err(e) => {
            let field = match &e {
                BinariesError::Missing { role, .. } | BinariesError::NotExecutable { role, .. } => {
                    format!("binaries.{role}")
                }
                _ => "binaries.kernel".into(),
            };
            Err(ScenarioError::Invalid(Problems {
                path: path.into(),
                list: vec![Problem { line: None, field, message: e.to_string() }],
            }))
        }
    }
}

/// What a valid scenario will do, for the one-line answer of `miglab check`.
pub fn summary(s: &Scenario, w: &Workload) -> String {
    let faults = match s.faults.len() {
        0 => String::new(),
        n => format!(", {n} fault(s)"),
    };
    let expect = s.expect.as_ref().map(|e| format!(", expects {e}")).unwrap_or_default();
    format!(
        "{}: ok — {} repetition(s) of '{}' in {} {} MiB / {} vCPU guest{}, {} migration(s){faults}{expect}, seed {}",
        s.name,
        s.repetitions,
        w.name(),
        match s.guests.count {
            1 => "a".to_string(),
            n => format!("{n}"),
        },
        s.guest.memory_mib,
        s.guest.vcpus,
        match (s.guests.count, s.migration.parallel) {
            (1, _) => String::new(),
            (_, Some(k)) => format!("s, {k} migrating at once"),
            (_, None) => "s, all migrating at once".into(),
        },
        s.migration.count,
        s.seed
    )
}

/// Checks the scenario at `path` completely, as `run` will before anything runs: every field,
/// every cell of its sweep, every plan of every repetition on the lab a run would bring up, the
/// chosen builds and the guest image's agent. The guest image of a chosen kernel is not built.
pub fn check(path: &Path) -> Result<String, PreflightError> {
    let loaded = load(&Source::Scenario(path.into()), &Overrides::default())?;
    let plans = plans(&loaded, &Ground::fresh_lab())?;
    image_agent()?;
    compressions_available(&plans)?;
    Ok(format!("{} ({} runs planned)", loaded.summary(), plans.len()))
}

/// Every multifd compression the plans ask for is one their QEMU was built with (a run would
/// end `unsupported`; `check` says which it has).
fn compressions_available(plans: &[Plan]) -> Result<(), PreflightError> {
    let mut asked: Vec<(PathBuf, &str)> = Vec::new();
    for p in plans {
        if let Some(z) = p.migration.params.tuning.multifd_compression.as_deref() {
            let qemu = p.binaries.qemu_path();
            if !asked.iter().any(|(q, a)| *q == qemu && *a == z) {
                asked.push((qemu, z));
            }
        }
    }
    for (qemu, z) in asked {
        let have = crate::doctor::multifd_compressions(&qemu).map_err(PreflightError::NotHere)?;
        if !have.contains(&z) {
            return Err(PreflightError::NotHere(format!(
                "migration.tuning.multifd_compression = \"{z}\": {} was built with {} only",
                qemu.display(),
                have.join(", ")
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sweep_file(dir: &Path) -> PathBuf {
        let p = dir.join("s.toml");
        std::fs::write(
            &p,
            r#"
name = "s"
repetitions = 2
[workload]
kind = "read-loop"
[[fault]]
kind = "osd-freeze"
osd = "random"
duration_ms = 1000
trigger = { at = "pre-switchover", hop = 1 }
[sweep]
"guest.memory_mib" = [256, 384]
"#,
        )
        .expect("write");
        p
    }

    /// A client storage delay needs the clients armed, a fence needs them unarmed (an armed
    /// ceph-fuse can abort when its session is reset), anything else takes them as they are.
    #[test]
    fn a_scenario_says_how_the_lab_clients_must_be_armed() {
        let dir = tempfile::tempdir().expect("tmp");
        let arming = |faults: &str| {
            let p = dir.path().join("a.toml");
            std::fs::write(&p, format!("name = \"a\"\n[workload]\nkind = \"read-loop\"\n{faults}"))
                .expect("write");
            load(&Source::Scenario(p), &Overrides::default()).expect("loads").client_arming()
        };
        let fence = "[[fault]]\nkind = \"client-evict\"\nhost = \"source\"\nduration_ms = 1000\ntrigger = { at = \"workload-start\" }\n";
        let delay = "[[fault]]\nkind = \"storage-delay\"\ntarget = \"client:c1\"\nmax_ms = 5\nduration_ms = 1000\ntrigger = { at = \"workload-start\" }\n";
        let osd_delay = delay.replace("client:c1", "osds");
        assert_eq!(arming(""), ClientArming::Either);
        assert_eq!(arming(&osd_delay), ClientArming::Either);
        assert_eq!(arming(fence), ClientArming::Unarmed);
        assert_eq!(arming(delay), ClientArming::Armed);
        assert_eq!(arming(&format!("{fence}{delay}")), ClientArming::Armed, "the delay needs it");
    }

    /// Every plan of every cell is derived before anything runs, interleaved by repetition,
    /// and a fault the ground refuses refuses the sweep as a whole.
    #[test]
    fn a_sweep_is_planned_whole_and_refused_before_its_first_cell() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = sweep_file(dir.path());
        let loaded = load(&Source::Scenario(p), &Overrides::default()).expect("loads");
        let list = plans(&loaded, &Ground::fresh_lab()).expect("plans");
        let order: Vec<(u32, Option<String>)> =
            list.iter().map(|p| (p.repetition, p.cell.as_ref().map(|c| c.name()))).collect();
        assert_eq!(order.len(), 4);
        assert_eq!((order[0].0, order[1].0, order[2].0), (1, 1, 2), "{order:?}");
        assert_ne!(order[0].1, order[1].1);

        let no_freeze =
            |f: &Fault| f.kind().contains("freeze").then(|| "not on someone else's cluster".to_string());
        let ground = Ground { refuses: &no_freeze, ..Ground::fresh_lab() };
        let e = plans(&loaded, &ground).expect_err("refused");
        assert!(e.to_string().contains("osd-freeze"), "{e}");

        let one_host = Ground { hosts: vec!["c1".into()], ..Ground::fresh_lab() };
        assert!(matches!(plans(&loaded, &one_host), Err(PreflightError::Plan(PlanError::TooFewHosts(1)))));
    }

    #[test]
    fn a_guest_larger_than_half_the_available_memory_is_refused() {
        let g = GuestSpec { memory_mib: 8192, ..GuestSpec::default() };
        let one = GuestsSpec::default();
        let p = host_problems(&g, &one, 1, Some(10_000));
        assert_eq!(p.len(), 1);
        assert!(p[0].message.contains("16384 MiB together"), "{:?}", p[0]);
        assert!(host_problems(&g, &one, 1, Some(20_000)).is_empty());
        // Four guests of 1 GiB, one with 2 GiB: all at once 5 + 5 GiB, one at a time 5 + 2.
        let g = GuestSpec { memory_mib: 1024, ..GuestSpec::default() };
        let four = GuestsSpec {
            count: 4,
            overrides: vec![crate::scenario::GuestOverride {
                guests: vec![3],
                workload: None,
                memory_mib: Some(2048),
            }],
        };
        let p = host_problems(&g, &four, 4, Some(8000));
        assert!(
            p[0].message.contains("4 guests with 4 migrating at once") && p[0].message.contains("10240 MiB"),
            "{p:?}"
        );
        assert!(host_problems(&g, &four, 1, Some(8000)).is_empty());
    }
}

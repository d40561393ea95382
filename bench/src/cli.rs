//! The `miglab` command line: argument definitions and their dispatch to the library.

mod ab;
mod bench;
mod check;
mod compare;
mod findings;
mod image;
mod lab;
mod migrate;
mod noise;
mod run;
mod vm;

pub use crate::exit::{CliError, Finished};
use clap::{Parser, Subcommand};
use miglab_faults::DaemonAction;
use miglab_infra::accel::AccelWish;
use miglab_infra::paths;
use miglab_infra::topology::ceph::ObjectStore;
use miglab_infra::topology::DaemonId;
use miglab_infra::vm::FsCache;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "miglab",
    version,
    about = "Live migration of QEMU guests on CephFS over virtio-fs: measured, with faults"
)]
pub struct Args {
    /// Show what miglab does as it does it: -v the steps (processes, faults, migrations),
    /// -vv also every tool run and QMP message, -vvv everything.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Check every prerequisite and print what is missing, with the fix.
    Doctor {
        #[arg(long)]
        json: bool,
        /// Check these builds instead of the installed ones.
        #[command(flatten)]
        binaries: BinaryArgs,
        /// Check every host of this topology file over SSH instead of this machine.
        #[arg(long, value_name = "TOPOLOGY_TOML")]
        topology: Option<PathBuf>,
    },
    /// The local lab: a Ceph cluster and client hosts in network namespaces.
    Lab {
        #[command(subcommand)]
        command: LabCmd,
    },
    /// The guest image: kernel, modules, busybox and the guest agent.
    Image {
        #[command(subcommand)]
        command: ImageCmd,
    },
    /// VMs on the lab's client hosts.
    Vm {
        #[command(subcommand)]
        command: VmCmd,
    },
    /// Live-migrate a VM between the lab's hosts, hop after hop, and print each hop's figures.
    Migrate(MigrateArgs),
    /// Validate a scenario completely, without a lab (`run` does the same first); or show how
    /// fio job files map onto miglab's engine (`--fio`).
    Check {
        /// The scenario (TOML), e.g. scenarios/smoke.toml.
        #[arg(required_unless_present = "fio")]
        scenario: Option<PathBuf>,
        /// fio job files: one line per job with what runs, and each option run, mapped or ignored.
        #[arg(long, num_args = 1.., conflicts_with = "scenario")]
        fio: Vec<PathBuf>,
        /// The directory the job files' absolute paths were written for (the scenario's
        /// `fio_mount`): paths below it are taken inside the share.
        #[arg(long, requires = "fio")]
        mount: Option<String>,
    },
    /// Run a scenario: lab, guest, workload, migrations, verification; write the result directory.
    Run(RunArgs),
    /// Render report.html of a result directory again, from its files alone (or sweep.html and
    /// sweep.csv of a sweep's directory).
    Report {
        /// A result directory (`results/smoke/1`) or a sweep's (`results/downtime-sweep`).
        dirs: Vec<PathBuf>,
    },
    /// Compare two sets of results (runs, sweeps, pooled nights) scenario by scenario: a
    /// change is called only with p < alpha, over the noise threshold and over the metric's
    /// floor. Exit 1 when anything regressed.
    Compare(CompareArgs),
    /// The nightly trend: every night under DIR (a `<date>-<commit>/results` each), its
    /// median per scenario and metric, change points found by E-divisive with a false-discovery
    /// correction across series → trend.html. Exit 1 when the newest regime of a series is
    /// worse than the one before by more than the threshold.
    Trend {
        /// The directory of nights (ci/nightly's `nightly/`).
        dir: PathBuf,
        /// Where to write the page [default: DIR/trend.html].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Noise threshold, percent of the earlier regime's median.
        #[arg(long, default_value_t = 10.0)]
        threshold: f64,
    },
    /// The noise budget of a scenario's repetitions: per figure its median, a robust spread,
    /// the smallest shift `compare` could call at 5, 10 and 20 runs per side, and which
    /// recorded covariate carries its variance. Runs the scenario (TOML) N times, or reads the
    /// results already under a directory; writes noise.json beside them.
    Noise(NoiseArgs),
    /// Re-checks the findings: runs every scenario under scenarios/findings/ (each states its
    /// claim, the builds it was seen with and the bounds on its figures) on one lab with
    /// today's builds and prints, per finding, holds / no longer holds / could not run.
    /// Exit 1 unless every one holds.
    Findings(FindingsArgs),
    /// A/B until it is known: baseline and candidate runs interleaved on one lab, pair after
    /// pair, until a sequential test (valid however often it looks) calls regression,
    /// improvement or unchanged, or the budget ends it inconclusive. Exit 1 on a regression.
    Ab(AbArgs),
    /// Figures: measured on the real lab, printed, never asserted.
    Bench {
        #[command(subcommand)]
        command: BenchCmd,
    },
}

#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// miglab's engine against fio, in host mode on a host's CephFS mount, same jobs.
    Fio {
        #[command(flatten)]
        lab: LabName,
        #[arg(long, default_value = "c1")]
        host: String,
        /// Seconds each side runs, per round.
        #[arg(long, default_value_t = 15)]
        secs: u64,
        /// Rounds, alternating miglab and fio; ratios are taken per round (the machine is noisy).
        #[arg(long, default_value_t = 5)]
        rounds: u32,
        /// fio job files (every job of each) [default: 4k randread qd1 and 1M sequential write].
        #[arg(long)]
        job: Vec<PathBuf>,
        /// Run each job file whole (its jobs together, as fio runs the file) and compare per
        /// job, instead of each job on its own.
        #[arg(long, requires = "job")]
        whole: bool,
        /// The engine skips its check of every block it reads (header and checksum), which fio,
        /// verifying nothing, does not do: what miglab's verification costs, measured.
        #[arg(long)]
        no_verify: bool,
    },
    /// `lab up` and `lab down` timed over several cycles of a lab of its own (refused if that
    /// lab exists).
    Lab {
        /// The lab brought up and down (not the default one: a running lab stays as it is).
        #[arg(long, default_value = "bench-lab")]
        name: String,
        /// Parent of the lab directory [default: $MIGLAB_LAB_ROOT or /var/lib/miglab].
        #[arg(long)]
        root: Option<PathBuf>,
        #[arg(long, default_value_t = 5)]
        count: u32,
    },
    /// The collector's memory over a long run at a high op rate (synthetic stream, no lab).
    Collector {
        #[arg(long, default_value_t = 10)]
        minutes: u64,
        /// Ops per second (each batch of 1 ms ends with a heartbeat).
        #[arg(long, default_value_t = 100_000)]
        rate: u64,
    },
    /// How long a long run's report takes to render and how big it is: a real result repeated
    /// until it lasts `--minutes` (no lab).
    Report {
        /// A result directory whose result.json is stretched.
        dir: PathBuf,
        #[arg(long, default_value_t = 10.0)]
        minutes: f64,
        #[arg(long, default_value_t = 5)]
        rounds: u32,
    },
    /// QEMU start → agent hello, over several boots on a host of a running lab.
    Boot {
        #[command(flatten)]
        vm: VmName,
        #[arg(long, default_value = "c1")]
        host: String,
        #[arg(long, default_value_t = 5)]
        count: u32,
        #[arg(long, value_enum, default_value_t = AccelWish::Auto)]
        accel: AccelWish,
        #[arg(long, default_value_t = 512)]
        memory_mib: u64,
    },
}

#[derive(Debug, clap::Args)]
pub struct VmName {
    #[command(flatten)]
    pub lab: LabName,
    /// The VM's name.
    #[arg(long, default_value = "vm0")]
    pub vm: String,
}

#[derive(Debug, Subcommand)]
pub enum VmCmd {
    /// Boot a VM on a host and start the seed's read loop in it.
    Up {
        #[command(flatten)]
        vm: VmName,
        #[arg(long, default_value = "c1")]
        host: String,
        #[arg(long, default_value_t = 512)]
        memory_mib: u64,
        #[arg(long, default_value_t = 1)]
        vcpus: u32,
        #[arg(long, value_enum, default_value_t = AccelWish::Auto)]
        accel: AccelWish,
        /// virtiofsd's cache mode.
        #[arg(long, value_enum, default_value_t = FsCache::Never)]
        fs_cache: FsCache,
        /// Appended to the guest kernel's command line.
        #[arg(long)]
        cmdline: Option<String>,
        /// An extra virtiofsd option (repeatable), e.g. `--virtiofsd-arg=--thread-pool-size=4`.
        #[arg(long = "virtiofsd-arg", allow_hyphen_values = true)]
        virtiofsd_args: Vec<String>,
        /// Boot only; do not start the read loop.
        #[arg(long)]
        no_workload: bool,
        /// Seconds to wait for the agent's hello.
        #[arg(long, default_value_t = 60)]
        boot_timeout: u64,
        #[command(flatten)]
        binaries: BinaryArgs,
    },
    /// Stop every instance of a VM.
    Down {
        #[command(flatten)]
        vm: VmName,
    },
    /// Print the VM's serial console, every instance in order.
    Console {
        #[command(flatten)]
        vm: VmName,
    },
}

#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// The baseline: a results directory (every result.json below it counts).
    pub baseline: PathBuf,
    /// The candidate.
    pub candidate: PathBuf,
    /// Significance level of the tests (rank sum for figures, Fisher for failure rates); the
    /// shift's interval is at 1 − alpha.
    #[arg(long, default_value_t = 0.01)]
    pub alpha: f64,
    /// Noise threshold, percent of the baseline median: a smaller shift is never called.
    #[arg(long, default_value_t = 10.0)]
    pub threshold: f64,
    /// A metric's own noise threshold, e.g. `--threshold-for total_ms=5` (repeatable).
    #[arg(long, value_name = "METRIC=PCT")]
    pub threshold_for: Vec<String>,
    /// A metric's absolute floor, e.g. `--floor qemu_downtime_ms=5` (repeatable).
    #[arg(long, value_name = "METRIC=VALUE")]
    pub floor: Vec<String>,
    /// Call a change only if the same metric moved the same way in two scenarios or more.
    #[arg(long)]
    pub family: bool,
    /// What the sides were meant to differ in: qemu, virtiofsd, kernel, image, ceph, miglab,
    /// scenario, host, accelerator, topology (repeatable).
    #[arg(long = "variable", value_name = "WHAT")]
    pub variables: Vec<String>,
    /// Compare although the sides differ in something not declared.
    #[arg(long)]
    pub allow_different: bool,
    /// Write compare.md, compare.html and junit.xml here.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Seed of the sampled permutations.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Compare only the outcome mix (failures, lost data), not the figures: for sides whose
    /// runs are not exchangeable (nights: a night's runs share a lab's state).
    #[arg(long)]
    pub outcomes_only: bool,
    /// Compare two cells of one sweep: the baseline's runs of this cell (its directory name,
    /// e.g. `qemu=-usr-bin-qemu-system-x86_64`) ...
    #[arg(long, requires = "candidate_cell", value_name = "CELL")]
    pub baseline_cell: Option<String>,
    /// ... against the candidate's runs of this one (BASELINE and CANDIDATE may be the same
    /// sweep directory).
    #[arg(long, requires = "baseline_cell", value_name = "CELL")]
    pub candidate_cell: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The scenario (TOML), e.g. scenarios/smoke.toml.
    #[arg(required_unless_present = "replay", conflicts_with = "replay")]
    pub scenario: Option<PathBuf>,
    /// Run the plan of an earlier result again (its result.json).
    #[arg(long, value_name = "RESULT_JSON")]
    pub replay: Option<PathBuf>,
    /// Results go to <out>/<scenario>/<repetition>/.
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
    /// Parent of lab directories [default: $MIGLAB_LAB_ROOT or /var/lib/miglab].
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Override the scenario's repetitions.
    #[arg(long)]
    pub repetitions: Option<u32>,
    /// Run on this lab instead of the scenario's (a running one is reused).
    #[arg(long)]
    pub lab: Option<String>,
    /// Host mode: run the workload on c1's CephFS mount for this many seconds, without a VM
    /// or migrations (the storage baseline of the scenario).
    #[arg(long, value_name = "SECS")]
    pub host_mode: Option<f64>,
    /// Run on the hosts of this topology file, over SSH, instead of the local lab
    /// (`miglab lab up --ssh` writes one for the lab).
    #[arg(long, value_name = "FILE")]
    pub topology: Option<PathBuf>,
    #[command(flatten)]
    pub binaries: BinaryArgs,
}

#[derive(Debug, clap::Args)]
pub struct AbArgs {
    /// The baseline's scenario (TOML).
    pub baseline: PathBuf,
    /// The candidate's scenario, when it is a variant (default: the baseline's, with the
    /// candidate's builds).
    pub candidate: Option<PathBuf>,
    /// The baseline's builds (default: the installed ones, or the scenario's [binaries]).
    #[command(flatten)]
    pub binaries: BinaryArgs,
    /// The candidate's QEMU.
    #[arg(long, value_name = "PATH")]
    pub candidate_qemu: Option<PathBuf>,
    /// The candidate's virtiofsd.
    #[arg(long, value_name = "PATH")]
    pub candidate_virtiofsd: Option<PathBuf>,
    /// The candidate's guest kernel (an unpacked kernel package).
    #[arg(long, value_name = "DIR")]
    pub candidate_kernel: Option<PathBuf>,
    /// Another miglab build that runs the baseline's runs (`PATH run …` for each; its results
    /// say its own version and commit). Default: this miglab, in this process.
    #[arg(long, value_name = "PATH")]
    pub miglab: Option<PathBuf>,
    /// Another miglab build that runs the candidate's runs, e.g. the build of a change
    /// against the one before it.
    #[arg(long, value_name = "PATH")]
    pub candidate_miglab: Option<PathBuf>,
    /// The figure that decides (any `compare` metric of the runs, e.g. total_ms,
    /// qemu_downtime_ms, downtime.vhost_user_fs_ms).
    #[arg(long, default_value = "total_ms")]
    pub metric: String,
    /// The band, percent: a change smaller than this is `unchanged`.
    #[arg(long, default_value_t = 10.0)]
    pub band: f64,
    /// The false-call rate over the whole sequence, however often it looks.
    #[arg(long, default_value_t = 0.05)]
    pub alpha: f64,
    /// Stop inconclusive after this many pairs.
    #[arg(long, default_value_t = 30)]
    pub max_pairs: u32,
    /// Stop inconclusive after this many minutes (checked between pairs).
    #[arg(long, default_value_t = 30.0)]
    pub max_minutes: f64,
    /// Results go to <out>/baseline/<pair>/ and <out>/candidate/<pair>/, with ab.json.
    #[arg(long, default_value = "results/ab")]
    pub out: PathBuf,
    /// Run on this lab instead of the scenario's (brought up once if it is not running).
    #[arg(long)]
    pub lab: Option<String>,
    /// Parent of lab directories [default: $MIGLAB_LAB_ROOT or /var/lib/miglab].
    #[arg(long)]
    pub root: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct FindingsArgs {
    /// The findings' scenarios.
    #[arg(default_value = "scenarios/findings")]
    pub dir: PathBuf,
    /// Only this finding (its scenario's name); repeat for more.
    #[arg(long, value_name = "NAME")]
    pub only: Vec<String>,
    /// Repetitions of each (default: each scenario's own).
    #[arg(long)]
    pub repetitions: Option<u32>,
    /// The builds to check them with (default: the installed ones).
    #[command(flatten)]
    pub binaries: BinaryArgs,
    /// Results go to <out>/<finding>/, with findings.json and findings.md.
    #[arg(long, default_value = "results/findings")]
    pub out: PathBuf,
    /// The lab to run on (brought up once if it is not running, and taken down after).
    #[arg(long)]
    pub lab: Option<String>,
    /// Parent of lab directories [default: $MIGLAB_LAB_ROOT or /var/lib/miglab].
    #[arg(long)]
    pub root: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct NoiseArgs {
    /// A scenario (TOML) to run, or a directory of results (`results/smoke`) to read.
    pub target: PathBuf,
    /// Repetitions to run (a scenario only).
    #[arg(long, default_value_t = 20)]
    pub repetitions: u32,
    /// Results go to <out>/<scenario>/<repetition>/ (a scenario only).
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
    /// Run on this lab instead of the scenario's (a running one is reused).
    #[arg(long)]
    pub lab: Option<String>,
    /// Parent of lab directories [default: $MIGLAB_LAB_ROOT or /var/lib/miglab].
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// The level the detectable shifts are quoted at (compare's default).
    #[arg(long, default_value_t = 0.01)]
    pub alpha: f64,
}

/// The builds under test, over the scenario's `[binaries]` (default: the installed ones).
#[derive(Debug, clap::Args, Default)]
pub struct BinaryArgs {
    /// The qemu-system-x86_64 to run guests with.
    #[arg(long, value_name = "PATH")]
    pub qemu: Option<PathBuf>,
    /// The virtiofsd to share CephFS with.
    #[arg(long, value_name = "PATH")]
    pub virtiofsd: Option<PathBuf>,
    /// An unpacked guest kernel package (boot/vmlinuz-*, lib/modules/); its image is built and
    /// cached with the current image's agent.
    #[arg(long, value_name = "DIR")]
    pub kernel: Option<PathBuf>,
}

impl BinaryArgs {
    pub fn choice(&self) -> miglab_infra::binaries::BinaryChoice {
        let abs =
            |p: &Option<PathBuf>| p.as_ref().map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()));
        miglab_infra::binaries::BinaryChoice {
            qemu: abs(&self.qemu),
            virtiofsd: abs(&self.virtiofsd),
            kernel: abs(&self.kernel),
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub vm: VmName,
    /// Number of hops: c1 → c2 → c1 → ...
    #[arg(long, default_value_t = 1)]
    pub hops: u32,
    /// QEMU's downtime-limit, ms.
    #[arg(long)]
    pub downtime_limit_ms: Option<u64>,
    /// QEMU's max-bandwidth, bytes per second.
    #[arg(long)]
    pub max_bandwidth: Option<u64>,
    /// Use multifd with this many channels.
    #[arg(long)]
    pub multifd_channels: Option<u8>,
    /// Seconds before a hop is cancelled.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// Print the records as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ImageCmd {
    /// Build the image (or reuse the cached one whose inputs are the same).
    Build {
        /// The static guest agent [default: built from the source tree].
        #[arg(long)]
        agent: Option<PathBuf>,
        /// How the initramfs is stored.
        #[arg(long, value_enum, default_value_t = miglab_infra::image::Compression::None)]
        compress: miglab_infra::image::Compression,
        /// Leave busybox out (it is there only for debugging: `--cmdline rdinit=/bin/sh`).
        #[arg(long)]
        no_busybox: bool,
    },
    /// Show the current image.
    Show,
}

#[derive(Debug, clap::Args)]
pub struct LabName {
    /// Lab name: names, subnet and ports derive from it, so labs do not collide.
    #[arg(long, default_value = "default")]
    pub name: String,
    /// Parent of the lab directory [default: $MIGLAB_LAB_ROOT or /var/lib/miglab].
    #[arg(long)]
    pub root: Option<PathBuf>,
}

impl LabName {
    fn root(&self) -> PathBuf {
        self.root.clone().unwrap_or_else(paths::lab_root)
    }
}

#[derive(Debug, Subcommand)]
pub enum LabCmd {
    /// Build the lab and wait until PGs are active+clean, an MDS is active and CephFS is mounted.
    Up {
        #[command(flatten)]
        lab: LabName,
        /// IPv4 subnet of the lab network [default: 10.77.<slot>.0/24].
        #[arg(long)]
        subnet: Option<String>,
        /// Number of client hosts (c1, c2, ...).
        #[arg(long, default_value_t = 2)]
        clients: usize,
        #[arg(long, value_enum, default_value_t = ObjectStore::Bluestore)]
        objectstore: ObjectStore,
        /// A ceph.conf setting over miglab's own, as SECTION:KEY=VALUE (repeatable),
        /// e.g. `--ceph-conf osd:osd_op_num_shards=2`.
        #[arg(long = "ceph-conf", value_name = "SECTION:KEY=VALUE")]
        ceph_conf: Vec<miglab_infra::topology::ceph::ConfOverride>,
        /// Seconds to wait for the cluster to become ready.
        #[arg(long, default_value_t = 90)]
        ready_timeout: u64,
        /// Print the time of each bring-up phase and the lab's idle memory.
        #[arg(long)]
        timings: bool,
        /// Also start an sshd in every client host and write <lab>/topology.toml, which
        /// reaches the hosts only through SSH (try the external topology on one machine).
        #[arg(long)]
        ssh: bool,
    },
    /// Tear the lab down (also after miglab itself was killed) and check nothing is left.
    /// With --topology: end every process miglab started on that topology's hosts and remove
    /// its run directories there (the lab, if any, stays up).
    Down {
        #[command(flatten)]
        lab: LabName,
        #[arg(long, value_name = "FILE")]
        topology: Option<PathBuf>,
    },
    /// Daemons, health and mounts.
    Status {
        #[command(flatten)]
        lab: LabName,
        #[arg(long)]
        json: bool,
    },
    /// Stop, freeze, resume, kill or restart a Ceph daemon (e.g. `osd.1 kill`).
    Daemon {
        #[command(flatten)]
        lab: LabName,
        daemon: DaemonId,
        action: DaemonAction,
    },
    /// Change a daemon's configuration at runtime (`ceph tell <daemon> config set`).
    Tell {
        #[command(flatten)]
        lab: LabName,
        daemon: DaemonId,
        key: String,
        value: String,
    },
    /// Shape, cut or restore a client host's link.
    Link {
        #[command(flatten)]
        lab: LabName,
        host: String,
        /// Limit the link to this rate (kbit/s, tbf).
        #[arg(long, conflicts_with_all = ["cut", "heal", "unshape"])]
        rate_kbit: Option<u64>,
        /// Drop all of the host's traffic (the link stays up).
        #[arg(long)]
        cut: bool,
        /// Undo --cut.
        #[arg(long)]
        heal: bool,
        /// Undo --rate-kbit.
        #[arg(long)]
        unshape: bool,
    },
    /// Run a command inside a client host's network namespace.
    Exec {
        #[command(flatten)]
        lab: LabName,
        host: String,
        #[arg(trailing_var_arg = true, required = true)]
        command: Vec<String>,
    },
}

/// Runs the command; errors are printed once, here, and become the exit code.
pub fn run(args: Args) -> ExitCode {
    logging(args.verbose);
    if let Err(e) = miglab_infra::interrupt::install() {
        eprintln!("miglab: warning: no Ctrl-C handler ({e}); an interrupted lab up leaves a lab for `miglab lab down`");
    }
    let result = dispatch(args);
    if let Err(e) = &result {
        eprintln!("miglab: error: {e}");
    }
    crate::exit::code(&result)
}

/// Whether a panic is `println!` failing because the reader of stdout went away.
pub fn is_stdout_gone(payload: &(dyn std::any::Any + Send)) -> bool {
    let text = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("");
    text.starts_with("failed printing to stdout") && text.contains("Broken pipe")
}

/// Tracing logs on stderr at the level `-v` asks for; warnings only without it.
fn logging(verbose: u8) {
    crate::progress::set_logging(verbose > 0);
    let level = match verbose {
        0 => tracing::Level::WARN,
        1 => tracing::Level::INFO,
        2 => tracing::Level::DEBUG,
        _ => tracing::Level::TRACE,
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn dispatch(args: Args) -> Result<Finished, CliError> {
    match args.command {
        Cmd::Doctor { json, binaries, topology } => {
            check::doctor(json, &binaries.choice(), topology.as_deref())
        }
        Cmd::Check { scenario: Some(scenario), .. } => check::check(&scenario),
        Cmd::Check { scenario: None, fio, mount } => check::fio_files(&fio, mount),
        Cmd::Lab { command: LabCmd::Down { lab, topology: Some(file) } } => {
            lab::down_topology(&file, &lab.root())
        }
        Cmd::Lab { command } => Ok(lab::lab_cmd(command)?),
        Cmd::Image { command } => Ok(image::image_cmd(command)?),
        Cmd::Vm { command } => vm::vm_cmd(command),
        Cmd::Migrate(m) => migrate::migrate_cmd(m),
        Cmd::Bench { command } => bench::bench_cmd(command),
        Cmd::Report { dirs } => {
            if dirs.is_empty() {
                return Err(CliError::Args("give one or more result directories".into()));
            }
            for d in dirs {
                println!("{}", crate::assemble::report(&d)?.display());
            }
            Ok(Finished::Clean)
        }
        Cmd::Run(a) => run::run_cmd(a),
        Cmd::Noise(a) => noise::noise_cmd(a),
        Cmd::Findings(a) => findings::findings_cmd(a),
        Cmd::Ab(a) => ab::ab_cmd(a),
        Cmd::Compare(a) => compare::compare_cmd(a),
        Cmd::Trend { dir, out, threshold } => compare::trend_cmd(&dir, out, threshold / 100.0),
    }
}

/// The command's async runtime.
/// Reads a fio job file and imports it (named after the file): a file that cannot be read is
/// the command's error; the import's answer is the caller's to report.
fn read_job_file(
    path: &std::path::Path,
    ctx: &miglab_workloads::fio::Context,
) -> Result<Result<miglab_workloads::fio::Import, miglab_workloads::fio::FioError>, CliError> {
    let text = std::fs::read_to_string(path).map_err(|source| CliError::Unreadable {
        path: path.to_path_buf(),
        source,
        hint: "",
    })?;
    Ok(miglab_workloads::fio::import(&text, &miglab_workloads::fio::file_name(path), ctx))
}

/// Runs `f` on lab `name` under `root`: the running one, or one brought up for it and taken down
/// after, whatever `f` returned (a command of many runs shares one lab). `who` prefixes what it
/// says.
fn on_lab<T>(who: &str, name: &str, root: &std::path::Path, f: impl FnOnce() -> T) -> Result<T, CliError> {
    use miglab_infra::topology::lab::{Lab, LabOptions};
    use miglab_infra::topology::state::{Phase, StateFile};
    let state = root.join(name).join("state.json");
    let ours = if StateFile::load(&state).is_ok_and(|s| s.phase == Phase::Up) {
        None
    } else {
        println!("{who}: bringing up lab '{name}'");
        Some(Lab::up(&LabOptions { name: name.into(), root: root.into(), ..LabOptions::default() })?)
    };
    let out = f();
    if let Some(lab) = ours {
        if let Err(e) = lab.down() {
            eprintln!("miglab: taking down lab '{name}': {e}");
        }
    }
    Ok(out)
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    miglab_infra::wait::runtime().map_err(CliError::Runtime)
}

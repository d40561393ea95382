//! The `miglab` command line: argument definitions and their dispatch to the library.

use crate::doctor;
use crate::paths;
use crate::topology::ceph::ObjectStore;
use crate::topology::lab::{self, Lab, LabError, LabOptions};
use crate::topology::{DaemonId, Topology};
use clap::{Parser, Subcommand};
use miglab_faults::{DaemonAction, LinkShape};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "miglab",
    version,
    about = "Live migration of QEMU guests on CephFS over virtio-fs: measured, with faults"
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Check every prerequisite and print what is missing, with the fix.
    Doctor {
        #[arg(long)]
        json: bool,
    },
    /// The local lab: a Ceph cluster and client hosts in network namespaces.
    Lab {
        #[command(subcommand)]
        command: LabCmd,
    },
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
        ceph_conf: Vec<crate::topology::ceph::ConfOverride>,
        /// Seconds to wait for the cluster to become ready.
        #[arg(long, default_value_t = 90)]
        ready_timeout: u64,
        /// Print the time of each bring-up phase and the lab's idle memory.
        #[arg(long)]
        timings: bool,
    },
    /// Tear the lab down (also after miglab itself was killed) and check nothing is left.
    Down {
        #[command(flatten)]
        lab: LabName,
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
    if let Err(e) = crate::interrupt::install() {
        eprintln!("miglab: warning: no Ctrl-C handler ({e}); an interrupted lab up leaves a lab for `miglab lab down`");
    }
    match dispatch(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("miglab: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn dispatch(args: Args) -> Result<ExitCode, LabError> {
    match args.command {
        Cmd::Doctor { json } => {
            let report = doctor::run();
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            } else {
                println!("{report}");
            }
            Ok(if report.lab_can_run() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Cmd::Lab { command } => lab_cmd(command),
    }
}

fn lab_cmd(cmd: LabCmd) -> Result<ExitCode, LabError> {
    match cmd {
        LabCmd::Up {
            lab: name,
            subnet,
            clients,
            objectstore,
            ceph_conf,
            ready_timeout,
            timings,
        } => {
            let opts = LabOptions {
                name: name.name.clone(),
                root: name.root(),
                subnet,
                clients,
                objectstore,
                conf_overrides: ceph_conf,
                ready_timeout: Duration::from_secs(ready_timeout),
                ..LabOptions::default()
            };
            eprintln!(
                "miglab: bringing up lab '{}' in {}",
                opts.name,
                opts.root.join(&opts.name).display()
            );
            let lab = Lab::up(&opts)?;
            let summary = lab.status().map(|s| s.summary()).unwrap_or_default();
            println!("lab '{}' is up: {summary}", opts.name);
            for h in lab.hosts() {
                println!(
                    "  {}  {}  CephFS at {}",
                    h.name(),
                    h.address(),
                    h.mount_point().display()
                );
            }
            if timings {
                println!("\n{}", lab.timings());
                // Idle: measured after the readiness wait, with nothing running on the mounts.
                println!(
                    "idle resident memory: {:.0} MiB",
                    lab.rss_kib() as f64 / 1024.0
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        LabCmd::Down { lab } => {
            lab::down(&lab.name, &lab.root(), Default::default())?;
            println!(
                "lab '{}' is down; logs kept in {}",
                lab.name,
                lab.root().join(format!("{}.logs", lab.name)).display()
            );
            Ok(ExitCode::SUCCESS)
        }
        LabCmd::Status { lab, json } => {
            let s = lab::status(&lab.name, &lab.root())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
            } else {
                print_status(&s);
            }
            Ok(ExitCode::SUCCESS)
        }
        LabCmd::Daemon {
            lab,
            daemon,
            action,
        } => {
            let l = Lab::open(&lab.name, &lab.root())?;
            l.daemon(&daemon, action)?;
            println!("{daemon}: {action} done");
            Ok(ExitCode::SUCCESS)
        }
        LabCmd::Tell {
            lab,
            daemon,
            key,
            value,
        } => {
            let l = Lab::open(&lab.name, &lab.root())?;
            l.config_set(&daemon, &key, &value)?;
            println!("{daemon}: {key} = {value}");
            Ok(ExitCode::SUCCESS)
        }
        LabCmd::Link {
            lab,
            host,
            rate_kbit,
            cut,
            heal,
            unshape,
        } => {
            let l = Lab::open(&lab.name, &lab.root())?;
            if let Some(r) = rate_kbit {
                l.shape_link(&host, Some(LinkShape::rate(r)))?;
            }
            if unshape {
                l.shape_link(&host, None)?;
            }
            if cut || heal {
                l.cut_link(&host, cut)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        LabCmd::Exec { lab, host, command } => {
            let l = Lab::open(&lab.name, &lab.root())?;
            let h = l.host(&host)?;
            let mut cmd = h.command(&command[0]);
            cmd.args(&command[1..]);
            let status = cmd.status().map_err(|source| LabError::Io {
                what: format!("run {}", command[0]),
                source,
            })?;
            Ok(ExitCode::from(
                status.code().unwrap_or(1).clamp(0, 255) as u8
            ))
        }
    }
}

fn print_status(s: &lab::LabStatus) {
    println!("lab '{}' ({:?}) at {}", s.name, s.phase, s.dir.display());
    println!(
        "health: {}",
        s.health.as_deref().unwrap_or("monitor not answering")
    );
    println!(
        "\n{:<14} {:>8}  {:<8} {:>9}",
        "process", "pid", "state", "rss MiB"
    );
    for p in &s.processes {
        let rss = p
            .rss_kib
            .map(|r| format!("{:.0}", r as f64 / 1024.0))
            .unwrap_or_else(|| "-".into());
        println!("{:<14} {:>8}  {:<8} {:>9}", p.name, p.pid, p.state, rss);
    }
    println!(
        "{:<14} {:>8}  {:<8} {:>9.0}",
        "total",
        "",
        "",
        s.rss_kib as f64 / 1024.0
    );
    println!("\n{:<6} {:<8} path", "host", "mounted");
    for m in &s.mounts {
        println!(
            "{:<6} {:<8} {}",
            m.host,
            if m.mounted { "yes" } else { "NO" },
            m.path.display()
        );
    }
}

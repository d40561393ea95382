//! `miglab lab ...`

use super::LabCmd;
use crate::exit::Finished;
use miglab_faults::LinkShape;
use miglab_infra::topology::lab::{self, Lab, LabError, LabOptions};
use miglab_infra::topology::Host;
use std::time::Duration;

pub(super) fn lab_cmd(cmd: LabCmd) -> Result<Finished, LabError> {
    match cmd {
        LabCmd::Up { lab: name, subnet, clients, objectstore, ceph_conf, ready_timeout, timings, ssh } => {
            let opts = LabOptions {
                name: name.name.clone(),
                root: name.root(),
                subnet,
                clients,
                objectstore,
                conf_overrides: ceph_conf,
                ready_timeout: Duration::from_secs(ready_timeout),
                ssh,
                on_step: crate::progress::step_bar(format!("lab {}", name.name)),
                ..LabOptions::default()
            };
            eprintln!("miglab: bringing up lab '{}' in {}", opts.name, opts.root.join(&opts.name).display());
            let lab = Lab::up(&opts)?;
            let summary = lab.status().map(|s| s.summary()).unwrap_or_default();
            println!("lab '{}' is up: {summary}", opts.name);
            for name in lab.layout().clients.iter().map(|c| c.name.clone()) {
                let h = lab.lab_host(&name)?;
                println!("  {}  {}  CephFS at {}", h.name(), h.address(), h.mount_point().display());
            }
            if ssh {
                let topo = miglab_infra::topology::lab::sshd::topology_file(&lab.layout().dir);
                println!(
                    "  sshd in every host; the hosts through SSH only: {} (try `miglab doctor --topology {}`)",
                    topo.display(),
                    topo.display()
                );
            }
            if timings {
                println!("\n{}", lab.timings());
                // Idle: measured after the readiness wait, with nothing running on the mounts.
                println!("idle resident memory: {:.0} MiB", lab.rss_kib() as f64 / 1024.0);
            }
            Ok(Finished::Clean)
        }
        LabCmd::Down { lab, .. } => {
            lab::down(&lab.name, &lab.root(), Default::default())?;
            println!(
                "lab '{}' is down; logs kept in {}",
                lab.name,
                lab.root().join(format!("{}.logs", lab.name)).display()
            );
            Ok(Finished::Clean)
        }
        LabCmd::Status { lab, json } => {
            let s = lab::status(&lab.name, &lab.root())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
            } else {
                print_status(&s);
            }
            Ok(Finished::Clean)
        }
        LabCmd::Daemon { lab, daemon, action } => {
            let l = Lab::open(&lab.name, &lab.root())?;
            l.daemon_action(&daemon, action)?;
            println!("{daemon}: {action} done");
            Ok(Finished::Clean)
        }
        LabCmd::Tell { lab, daemon, key, value } => {
            let l = Lab::open(&lab.name, &lab.root())?;
            l.tell(&daemon, &key, &value)?;
            println!("{daemon}: {key} = {value}");
            Ok(Finished::Clean)
        }
        LabCmd::Link { lab, host, rate_kbit, cut, heal, unshape } => {
            let l = Lab::open(&lab.name, &lab.root())?;
            if let Some(r) = rate_kbit {
                l.shape(&host, Some(LinkShape::rate(r)))?;
            }
            if unshape {
                l.shape(&host, None)?;
            }
            if cut || heal {
                l.cut(&host, cut)?;
            }
            Ok(Finished::Clean)
        }
        LabCmd::Exec { lab, host, command } => {
            let l = Lab::open(&lab.name, &lab.root())?;
            let h = l.lab_host(&host)?;
            let mut cmd = h.command(&command[0]);
            cmd.args(&command[1..]);
            let status = cmd
                .status()
                .map_err(|source| LabError::Io { what: format!("run {}", command[0]), source })?;
            Ok(Finished::Passthrough(status.code().unwrap_or(1).clamp(0, 255) as u8))
        }
    }
}

fn print_status(s: &lab::LabStatus) {
    println!("lab '{}' ({:?}) at {}", s.name, s.phase, s.dir.display());
    println!("health: {}", s.health.as_deref().unwrap_or("monitor not answering"));
    println!("\n{:<14} {:>8}  {:<8} {:>9}", "process", "pid", "state", "rss MiB");
    for p in &s.processes {
        let rss = p.rss_kib.map(|r| format!("{:.0}", r as f64 / 1024.0)).unwrap_or_else(|| "-".into());
        println!("{:<14} {:>8}  {:<8} {:>9}", p.name, p.pid, p.state, rss);
    }
    println!("{:<14} {:>8}  {:<8} {:>9.0}", "total", "", "", s.rss_kib as f64 / 1024.0);
    println!("\n{:<6} {:<8} path", "host", "mounted");
    for m in &s.mounts {
        println!("{:<6} {:<8} {}", m.host, if m.mounted { "yes" } else { "NO" }, m.path.display());
    }
}

/// `lab down --topology FILE`: every host of the topology cleaned.
pub(super) fn down_topology(
    file: &std::path::Path,
    root: &std::path::Path,
) -> Result<Finished, super::CliError> {
    let lines = miglab_infra::topology::external::site::down(file, root)
        .map_err(|e| super::CliError::Topology(e.into()))?;
    for line in lines {
        println!("{line}");
    }
    println!("the hosts of {} are clean", file.display());
    Ok(Finished::Clean)
}

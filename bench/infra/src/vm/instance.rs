//! A running VM instance: one fresh virtiofsd sharing the host's CephFS mount, one QEMU in the
//! host's network namespace, QMP and the agent's control port connected. Boot is detected by
//! the agent's hello, never by a sleep.
//!
//! A [`Vm`] owns its processes: `stop` ends them and reports what went wrong; a `Vm` dropped
//! without `stop` (an error path) kills them and says so on stderr, so nothing outlives it.
//! Starting never blocks the async runtime: process spawns and ledger writes run on the
//! blocking pool.

use super::cmdline::{check_qemu, console_summary, qemu_args, virtiofsd_spec};
use super::ledger;
use super::spec::{InstanceId, VmFiles, VmRecord, VmSpec};
use super::VmError;
use crate::control::{Control, ControlError};
use crate::image::GuestImage;
use crate::paths;
use crate::process::{ProcRecord, ProcessSpec, Tier};
use crate::qmp::Qmp;
use crate::topology::{Host, Site};
use crate::wait::{self, WaitError};
use miglab_workloads::control::Hello;
use nix::sys::signal::Signal;
use qapi::qmp;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A running VM instance.
#[derive(Debug)]
pub struct Vm {
    site: Arc<dyn Site>,
    pub record: VmRecord,
    pub qmp: Qmp,
    pub control: Control,
    pub qemu: ProcRecord,
    pub virtiofsd: ProcRecord,
    /// The records port, as this machine connects to it (forwarded from a remote host).
    pub records: PathBuf,
    /// Where this machine reaches the instance's sockets (the instance's own directory on the
    /// lab; a mirror of forwarded sockets for a remote host).
    local_dir: PathBuf,
    /// The agent's hello (None for an incoming instance until it has migrated).
    pub hello: Option<Hello>,
    /// From QEMU's start to the agent's hello.
    pub boot_ms: Option<f64>,
    /// `stop` ran: nothing left for `Drop` to do.
    stopped: bool,
}

/// The instance's directory (a booting VM's history starts afresh), its ledger entry and its
/// virtiofsd (QEMU connects to virtiofsd's socket when it starts).
async fn start_virtiofsd(
    site: &Arc<dyn Site>,
    record: &VmRecord,
    local_dir: &std::path::Path,
    fresh: bool,
) -> Result<ProcRecord, VmError> {
    let (site, record, local_dir) = (site.clone(), record.clone(), local_dir.to_path_buf());
    blocking(move || -> Result<ProcRecord, VmError> {
        let host = record.host().to_string();
        let h = site.host(&host)?;
        let files = &record.files;
        // A VM that boots starts its history: instances left by an earlier VM of the same name
        // go (their generations would push this one's up).
        for (dir, on) in [(&files.dir, h), (&local_dir, &crate::topology::LocalFiles as &dyn Host)] {
            let stale = if fresh { dir.parent() } else { Some(dir.as_path()) };
            if let Some(d) = stale {
                let _ = on.remove_all(d);
            }
            on.make_dir(dir).map_err(|source| VmError::Io {
                what: format!("create {} on {}", dir.display(), on.name()),
                source,
            })?;
        }
        ledger::record(site.as_ref(), &record)?;
        let spec = virtiofsd_spec(h, &record, record.virtiofsd_name());
        Ok(site.spawn(&host, spec)?)
    })
    .await
}

/// virtiofsd's socket is there (or virtiofsd died, with its log's end).
async fn virtiofsd_ready(
    site: &Arc<dyn Site>,
    h: &dyn Host,
    record: &VmRecord,
    vfsd: &ProcRecord,
) -> Result<(), VmError> {
    let instance = record.id.to_string();
    let timeout = Duration::from_secs(10);
    let socket = record.files.virtiofsd();
    let ready = wait::until_async("virtiofsd's socket", timeout, Duration::from_millis(5), async || {
        if let Some(status) = site.exit_status(vfsd) {
            return Err(VmError::VirtiofsdDied {
                instance: instance.clone(),
                status,
                tail: h.tail(&vfsd.log, 15),
            });
        }
        Ok(h.exists(&socket).then_some(()))
    })
    .await;
    ready.map_err(|e| match e {
        WaitError::Failed(e) => e,
        WaitError::TimedOut(..) => {
            VmError::VirtiofsdNoSocket { instance, timeout, tail: h.tail(&vfsd.log, 15) }
        }
        WaitError::Interrupted(what) => VmError::Interrupted(what),
    })
}

/// The QMP, control and records sockets as this machine reaches them: a remote host's are
/// forwarded once QEMU has made them (the QMP one last).
async fn reach_sockets(watch: &Watch<'_>, local: &VmFiles) -> Result<(PathBuf, PathBuf, PathBuf), VmError> {
    let (h, files) = (watch.h, &watch.record.files);
    if h.remote() {
        let timeout = Duration::from_secs(20);
        let made = wait::until_async("QEMU's QMP socket", timeout, Duration::from_millis(20), async || {
            watch.alive()?;
            Ok(h.exists(&files.qmp()).then_some(()))
        })
        .await;
        made.map_err(|e| match e {
            WaitError::Failed(e) => e,
            WaitError::TimedOut(..) => VmError::QemuDied {
                instance: watch.record.id.to_string(),
                status: format!("running, but no QMP socket within {timeout:.0?}"),
                tail: h.tail(&watch.qemu.log, 5),
            },
            WaitError::Interrupted(what) => VmError::Interrupted(what),
        })?;
    }
    let host = watch.record.host().to_string();
    let reach = |remote: PathBuf, local: PathBuf| {
        let (site, host) = (watch.site.clone(), host.clone());
        blocking(move || site.reach(&host, &remote, &local))
    };
    Ok((
        reach(files.qmp(), local.qmp()).await?,
        reach(files.control(), local.control()).await?,
        reach(files.records(), local.records()).await?,
    ))
}

/// The agent's hello: the guest booted, and runs this miglab's agent.
async fn await_hello(watch: &Watch<'_>, control: &mut Control) -> Result<Hello, VmError> {
    let record = watch.record;
    let boot_timeout = Duration::from_millis(record.spec.boot_timeout_ms);
    let answer = {
        let wait = control.wait_hello(boot_timeout, Duration::from_millis(250));
        tokio::pin!(wait);
        loop {
            tokio::select! {
                r = &mut wait => break r,
                _ = tokio::time::sleep(Duration::from_millis(50)) => watch.alive()?,
            }
        }
    };
    match answer {
        // An agent of another build speaks another protocol: refused now, not found out as
        // unreadable messages in the middle of the run.
        Ok(h) => match h.mismatch() {
            Some(why) => Err(VmError::AgentMismatch { instance: record.id.to_string(), why }),
            None => Ok(h),
        },
        Err(ControlError::TimedOut { .. }) => Err(VmError::NeverBooted {
            instance: record.id.to_string(),
            timeout: boot_timeout,
            console: record.files.console(),
            tail: console_summary(watch.h, &record.files.console()),
        }),
        Err(e) => {
            // The control socket closes when QEMU exits: report the exit (within a second),
            // which says why.
            let exit = async || watch.alive().map(|()| None::<()>);
            match wait::until_async("QEMU's exit", Duration::from_secs(1), Duration::from_millis(10), exit)
                .await
            {
                Err(WaitError::Failed(died)) => Err(died),
                _ => Err(e.into()),
            }
        }
    }
}

/// Runs `f` on the blocking pool: process spawns and stops, and the ledger's locked writes,
/// must not hold up the runtime's workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// What was started so far, stopped again if the start fails.
struct Partial {
    site: Arc<dyn Site>,
    id: InstanceId,
    local_dir: PathBuf,
    started: Vec<ProcRecord>,
    armed: bool,
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        for p in self.started.iter().rev() {
            if let Err(e) = self.site.stop(p) {
                eprintln!("miglab: stopping {} after a failed start: {e}", p.name);
            }
        }
        if let Err(e) = self.site.forget_instance(&self.id.to_string()) {
            eprintln!("miglab: forgetting {} after a failed start: {e}", self.id);
        }
        self.site.unreach(&self.local_dir);
    }
}

/// Whether an instance's QEMU is still running; once it has exited, the error says why (its
/// log and the guest console's end).
struct Watch<'a> {
    site: &'a Arc<dyn Site>,
    h: &'a dyn Host,
    qemu: &'a ProcRecord,
    record: &'a VmRecord,
}

impl Watch<'_> {
    fn alive(&self) -> Result<(), VmError> {
        match self.site.exit_status(self.qemu) {
            Some(status) => Err(VmError::QemuDied {
                instance: self.record.id.to_string(),
                status,
                tail: format!(
                    "{}\n{}",
                    self.h.tail(&self.qemu.log, 5),
                    console_summary(self.h, &self.record.files.console())
                ),
            }),
            None => Ok(()),
        }
    }
}

impl Vm {
    /// Starts an instance of `spec` on `host`: booted, or waiting for an incoming migration.
    /// If anything fails, whatever was started for it is stopped again (one guard, [`Partial`]).
    pub async fn start(
        site: &Arc<dyn Site>,
        spec: &VmSpec,
        host: &str,
        generation: u32,
        incoming: bool,
    ) -> Result<Vm, VmError> {
        let h = site.host(host)?;
        if !h.remote() {
            // A remote host's QEMU was checked when the topology was opened.
            check_qemu(&spec.binaries.qemu_path())?;
        }
        let image = match &spec.image {
            Some(dir) => GuestImage::at(dir)?,
            None => GuestImage::current(&paths::cache())?,
        };
        let id = InstanceId::new(&spec.name, host, generation);
        // The instance's files as its host sees them, and where this machine reaches its
        // sockets (the same directory on the lab).
        let files = VmFiles::of(&site.instances_dir_on(host), &id);
        let local = VmFiles::of(&site.instances_dir(), &id);
        let image_dir = {
            let (site, host, dir) = (site.clone(), host.to_string(), image.dir.clone());
            blocking(move || site.stage_image(&host, &dir)).await?
        };
        let record = VmRecord { spec: spec.clone(), id, files, image: image.manifest.key.clone(), incoming };
        let mut partial = Partial {
            site: site.clone(),
            id: record.id.clone(),
            local_dir: local.dir.clone(),
            started: Vec::new(),
            armed: true,
        };
        let fresh = generation == 0 && !incoming;
        let virtiofsd = start_virtiofsd(site, &record, &local.dir, fresh).await?;
        partial.started.push(virtiofsd.clone());
        virtiofsd_ready(site, h, &record, &virtiofsd).await?;
        let t_qemu = Instant::now();
        let qemu = {
            let (site, host) = (site.clone(), host.to_string());
            let kernel = image_dir.join(if spec.bzimage { "bzImage" } else { "vmlinux" });
            let qspec = ProcessSpec::new(
                record.qemu_name(),
                h.qemu(&spec.binaries.qemu_path()),
                record.files.qemu_log(),
            )
            .tier(Tier::Guest)
            .args(qemu_args(
                spec,
                &kernel,
                &image_dir.join("initramfs.img"),
                &record.files,
                incoming,
            ));
            blocking(move || site.spawn(&host, qspec)).await?
        };
        partial.started.push(qemu.clone());
        let watch = Watch { site, h, qemu: &qemu, record: &record };
        let (qmp_path, control_path, records) = reach_sockets(&watch, &local).await?;
        let q = Qmp::connect(&qmp_path, Duration::from_secs(20), || watch.alive()).await??;
        let mut control = Control::connect(&control_path).await?;
        let (mut hello, mut boot_ms) = (None, None);
        if !incoming {
            hello = Some(await_hello(&watch, &mut control).await?);
            boot_ms = Some(t_qemu.elapsed().as_secs_f64() * 1e3);
        }
        partial.armed = false;
        Ok(Vm {
            site: site.clone(),
            record,
            qmp: q,
            control,
            qemu,
            virtiofsd,
            records,
            local_dir: local.dir,
            hello,
            boot_ms,
            stopped: false,
        })
    }

    /// Attaches to an instance started by another miglab process.
    pub async fn attach(site: &Arc<dyn Site>, record: &VmRecord) -> Result<Vm, VmError> {
        let no_vm = || VmError::NoVm(record.spec.name.clone());
        let qemu = site.process(&record.qemu_name()).ok_or_else(no_vm)?;
        let virtiofsd = site.process(&record.virtiofsd_name()).ok_or_else(no_vm)?;
        let host = record.host();
        let h = site.host(host)?;
        if site.exit_status(&qemu).is_some() {
            return Err(VmError::QemuDied {
                instance: record.id.to_string(),
                status: "exited".into(),
                tail: h.tail(&record.files.qemu_log(), 10),
            });
        }
        let local = VmFiles::of(&site.instances_dir(), &record.id);
        let qmp_path = site.reach(host, &record.files.qmp(), &local.qmp())?;
        let control_path = site.reach(host, &record.files.control(), &local.control())?;
        let records = site.reach(host, &record.files.records(), &local.records())?;
        let q = Qmp::connect(&qmp_path, Duration::from_secs(10), || Ok::<(), VmError>(())).await??;
        let control = Control::connect(&control_path).await?;
        Ok(Vm {
            site: site.clone(),
            record: record.clone(),
            qmp: q,
            control,
            qemu,
            virtiofsd,
            records,
            local_dir: local.dir,
            hello: None,
            boot_ms: None,
            stopped: false,
        })
    }

    pub fn id(&self) -> &InstanceId {
        &self.record.id
    }

    pub fn host(&self) -> &str {
        self.record.host()
    }

    /// Marks an incoming instance as the one running the guest (after its migration).
    pub async fn adopt(&mut self) -> Result<(), VmError> {
        self.record.incoming = false;
        let (site, record) = (self.site.clone(), self.record.clone());
        blocking(move || ledger::record(site.as_ref(), &record)).await
    }

    /// Sets the niceness of this instance's QEMU (its main thread, where an incoming
    /// migration is loaded), through its host: `renice` runs there like every host command.
    pub async fn renice(&self, nice: i32) -> Result<(), VmError> {
        let (site, host, pid) = (self.site.clone(), self.host().to_string(), self.qemu.pid);
        blocking(move || {
            let h = site.host(&host)?;
            let out = h
                .command("renice")
                .args(["-n", &nice.to_string(), "-p", &pid.to_string()])
                .output()
                .map_err(|e| VmError::Renice(format!("renice on {host}: {e}")))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(VmError::Renice(format!(
                    "renice -n {nice} -p {pid} on {host}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )))
            }
        })
        .await
    }

    /// Leaves the instance running for a later command (`miglab vm up`): nothing stops it
    /// when this handle goes; the site's ledger still knows it, so `vm down` and `lab down` do.
    pub fn release(mut self) {
        self.stopped = true;
    }

    /// Stops the instance: `quit` over QMP, then the site makes sure of QEMU and virtiofsd
    /// (which exits by itself once QEMU is gone). Every failure is reported.
    pub async fn stop(mut self) -> Result<(), VmError> {
        self.stopped = true;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.qmp.execute(qmp::quit {})).await;
        let (site, q, v, id) =
            (self.site.clone(), self.qemu.clone(), self.virtiofsd.clone(), self.record.id.clone());
        let restarted = self.site.process(&self.record.restarted_virtiofsd_name());
        let local_dir = self.local_dir.clone();
        blocking(move || -> Result<(), VmError> {
            let stopped = site.stop(&q).and(site.stop(&v)).and(restarted.map_or(Ok(()), |r| site.stop(&r)));
            site.unreach(&local_dir);
            site.forget_instance(&id.to_string())?;
            Ok(stopped?)
        })
        .await
    }
}

impl Drop for Vm {
    /// An instance nobody stopped (an error path): kill it rather than leave it running.
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        let restarted = self.site.process(&self.record.restarted_virtiofsd_name());
        for p in [&self.qemu, &self.virtiofsd].into_iter().chain(restarted.as_ref()) {
            let _ = self.site.signal(p, Signal::SIGKILL);
        }
        let (site, q, v, id) =
            (self.site.clone(), self.qemu.clone(), self.virtiofsd.clone(), self.record.id.to_string());
        let local_dir = self.local_dir.clone();
        let cleanup = move || {
            site.unreach(&local_dir);
            for p in [&q, &v].into_iter().chain(restarted.as_ref()) {
                if let Err(e) = site.stop(p) {
                    eprintln!("miglab: stopping {} of an abandoned VM: {e}", p.name);
                }
            }
            if let Err(e) = site.forget_instance(&id) {
                eprintln!("miglab: forgetting the abandoned VM {id}: {e}");
            }
        };
        // Killed processes go within milliseconds; still, do not hold a runtime worker.
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(cleanup)
            }
            _ => cleanup(),
        }
    }
}

//! `miglab vm ...`.

use super::{runtime, CliError, VmCmd, VmName};
use crate::exit::Finished;
use crate::readloop::{start_read_loop, write_hello, HELLO_FILE};
use miglab_infra::topology::lab::Lab;
use miglab_infra::topology::Site;
use miglab_infra::vm::{ledger, InstanceId, Vm, VmError, VmSpec};
use std::sync::Arc;

/// The lab of `v`, as the site VMs act through.
pub(super) fn open_site(v: &VmName) -> Result<Arc<dyn Site>, CliError> {
    Ok(Arc::new(Lab::open(&v.lab.name, &v.lab.root())?))
}

pub(super) fn vm_cmd(cmd: VmCmd) -> Result<Finished, CliError> {
    match cmd {
        VmCmd::Up {
            vm,
            host,
            memory_mib,
            vcpus,
            accel,
            fs_cache,
            cmdline,
            virtiofsd_args,
            no_workload,
            boot_timeout,
            binaries,
        } => {
            let binaries = binaries.choice();
            binaries.check()?;
            let image = binaries.image()?;
            let site = open_site(&vm)?;
            if !ledger::of_vm(site.as_ref(), &vm.vm).is_empty() {
                return Err(VmError::VmExists(vm.vm).into());
            }
            let spec = VmSpec {
                name: vm.vm.clone(),
                vcpus,
                memory_mib,
                accel: accel.resolve(),
                fs_cache,
                cmdline_extra: cmdline,
                bzimage: false,
                boot_timeout_ms: boot_timeout * 1000,
                virtiofsd_args,
                binaries,
                image,
            };
            runtime()?.block_on(async {
                let mut v = Vm::start(&site, &spec, &host, 0, false).await?;
                let hello = v.hello.clone();
                println!(
                    "{} is up on {host} ({}, {} MiB, {} vCPU): agent hello after {:.0} ms, kernel {}",
                    v.id(),
                    spec.accel,
                    spec.memory_mib,
                    spec.vcpus,
                    v.boot_ms.unwrap_or_default(),
                    hello.as_ref().map(|h| h.kernel.as_str()).unwrap_or("?"),
                );
                if let Some(e) = hello.and_then(|h| h.setup_error) {
                    println!("warning: the agent reported a setup problem: {e}");
                }
                if !no_workload {
                    write_hello(site.host(&host)?)?;
                    start_read_loop(&mut v).await?;
                    println!("read loop running on /mnt/cephfs/{HELLO_FILE}");
                }
                // It keeps running for the next command.
                v.release();
                Ok(Finished::Clean)
            })
        }
        VmCmd::Down { vm } => {
            let site = open_site(&vm)?;
            if ledger::of_vm(site.as_ref(), &vm.vm).is_empty() {
                return Err(VmError::NoVm(vm.vm).into());
            }
            let problems = runtime()?.block_on(stop_all(&site, &vm.vm));
            if !problems.is_empty() {
                return Err(CliError::Problems(problems));
            }
            println!("{} is down", vm.vm);
            Ok(Finished::Clean)
        }
        VmCmd::Console { vm } => {
            let site = open_site(&vm)?;
            let dir = site.instances_dir().join(&vm.vm);
            let mut instances: Vec<_> = std::fs::read_dir(&dir)
                .map_err(|_| VmError::NoVm(vm.vm.clone()))?
                .flatten()
                .map(|e| e.path())
                .collect();
            instances.sort_by_key(|p| InstanceId::generation_of_dir(p));
            for p in instances {
                println!("==== {} ====", p.display());
                print!("{}", std::fs::read_to_string(p.join("console.log")).unwrap_or_default());
            }
            Ok(Finished::Clean)
        }
    }
}

/// Stops every instance of `vm`, through QMP where it answers, else through the site; returns
/// what went wrong.
async fn stop_all(site: &Arc<dyn Site>, vm: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for r in ledger::of_vm(site.as_ref(), vm) {
        let stopped = match Vm::attach(site, &r).await {
            Ok(v) => v.stop().await,
            Err(_) => {
                let site = site.clone();
                let r2 = r.clone();
                tokio::task::spawn_blocking(move || -> Result<(), VmError> {
                    for name in [r2.qemu_name(), r2.virtiofsd_name()] {
                        if let Some(p) = site.process(&name) {
                            site.stop(&p)?;
                        }
                    }
                    ledger::forget(site.as_ref(), &r2.id)
                })
                .await
                .unwrap_or_else(|e| {
                    Err(VmError::Io { what: "stop".into(), source: std::io::Error::other(e) })
                })
            }
        };
        if let Err(e) = stopped {
            problems.push(format!("stopping {}: {e}", r.id));
        }
    }
    problems
}

//! After the hops: each guest's dirtying load read back where a hop left it, and every
//! guest's files verified through the host it ended on.

use super::*;

/// The dirtying load's pages of every guest that moved, read back where the hop left it. A
/// guest that does not answer leaves its check unmeasured (the run says so), not the run
/// failed: the figures of the hop stand.
pub(super) async fn check_memory(
    guests: &mut [Guest],
    ex: &mut Execution,
    hop: u32,
    moved: &[u32],
    unmarked: &[(u32, String)],
    say: &dyn Fn(&str),
) -> Result<(), ExecError> {
    for g in guests.iter_mut().filter(|g| moved.contains(&g.plan.number)) {
        let number = g.plan.number;
        let vm = g.vm()?;
        let host = vm.host().to_string();
        let unmarked = unmarked.iter().find(|(n, _)| *n == number).map(|(_, why)| why.clone());
        let mut h = miglab_model::HopMemory { hop, host, unmarked, ..Default::default() };
        let answer = unless_interrupted(async {
            Ok::<_, ExecError>(vm.control.request(Command::MemoryCheck, MEMORY_DEADLINE).await)
        })
        .await?;
        match answer {
            Ok(Message::Memory(c)) => {
                if !c.clean() {
                    say(&format!(
                        "guest {number}: after migration {hop}, {} of {} pages stale, {} corrupt",
                        c.stale, c.pages, c.corrupt
                    ));
                }
                h.check = Some(c);
            }
            Ok(m) => h.error = Some(format!("the agent answered {m:?}")),
            Err(e) => h.error = Some(e.to_string()),
        }
        if let Some(run) = ex.guests.get_mut(number as usize - 1) {
            run.memory.push(h);
        }
    }
    Ok(())
}

/// For every guest: the agent's counters, then the verify pass (or the workload stopped). Every
/// guest's stream is watched meanwhile.
pub(super) async fn check_data(
    plan: &Plan,
    held: &mut Held,
    ex: &mut Execution,
    say: &dyn Fn(&str),
) -> Result<(), ExecError> {
    let clock = ex.clock;
    for (i, run) in ex.guests.iter_mut().enumerate() {
        let (before, rest) = held.guests.split_at_mut(i);
        let Some((g, after)) = rest.split_first_mut() else { break };
        let mut streams: Vec<&RecordStream> =
            before.iter().chain(after.iter()).filter_map(|o| o.stream.as_ref()).collect();
        streams.extend(g.stream.as_ref());
        let vm = g.vm.as_mut().ok_or(ExecError::Interrupted)?;
        check_guest(plan, vm, &streams, run, clock, say).await?;
    }
    Ok(())
}

pub(super) async fn check_guest(
    plan: &Plan,
    vm: &mut Vm,
    streams: &[&RecordStream],
    run: &mut GuestRun,
    clock: RunClock,
    say: &dyn Fn(&str),
) -> Result<(), ExecError> {
    run.agent = Some(watched(streams, plan, clock, async { Ok(vm.control.status(AGENT).await?) }).await?);
    if !plan.run.verify {
        vm.control.request(Command::Stop, AGENT).await?;
        return Ok(());
    }
    let t = Instant::now();
    run.verify_host = Some(vm.host().to_string());
    // Interrupting a verify pass (or a file system that hangs under it) leaves it incomplete;
    // stopping the guest ends it.
    let answer = watched(streams, plan, clock, async {
        Ok::<_, ExecError>(vm.control.request(Command::Verify, Duration::from_secs(1800)).await?)
    })
    .await;
    match answer {
        Ok(Message::Verify(v)) => {
            say(&format!(
                "verified {} blocks through {} in {:.1} s ({}): {} mismatched, {} missing",
                v.blocks,
                vm.host(),
                t.elapsed().as_secs_f64(),
                v.read_mode,
                v.mismatched(),
                v.missing()
            ));
            run.verify = Some(v);
            Ok(())
        }
        Ok(m) => Err(ExecError::Workload(format!("verify answered {m:?}"))),
        Err(e) => {
            run.verify_incomplete = true;
            Err(e)
        }
    }
}

/// Removes the metadata workload's files through the client that wrote them last: that client
/// holds their caps, so it is quick, where the next run's guest on the other client would wait
/// one MDS tick per file (see docs/findings.md) and outlast its start deadline. Bounded:
/// a file system that hangs leaves the files to the next run.
pub(super) async fn remove_through(site: &Arc<dyn Site>, host: &str, dir: &str, say: &dyn Fn(&str)) {
    let Ok(h) = site.host(host) else { return };
    let path = h.mount_point().join(dir);
    let p = path.clone();
    match on_mount(site, host, Duration::from_secs(60), move |h| h.remove_all(&p)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
        Ok(Err(e)) => say(&format!("could not remove {}: {e}", path.display())),
        Err(_) => say(&format!("{} not removed within 60 s; the next run removes it", path.display())),
    }
}

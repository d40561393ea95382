//! The run report's sections on each hop: what its switch-over carried, where QEMU's downtime
//! went, and how pre-copy converged.

use super::*;

/// What each switch-over carried, where it was measured: virtiofsd's descriptors on both
/// sides, the device-state phase, the bytes after STOP, and what QEMU expected.
pub(super) fn switch_over_table(h: &mut String, r: &RunResult) {
    let measured = |m: &&miglab_model::MigrationRecord| {
        m.virtiofsd.as_ref().is_some_and(|v| v.source.is_some()) || m.phases.device_state_ms().is_some()
    };
    if !r.migrations.iter().any(|m| measured(&m)) {
        return;
    }
    let fds = |o: Option<miglab_model::OpenFiles>| {
        o.map(|o| format!("{} ({} O_PATH)", o.total, o.path_only)).unwrap_or_else(|| "—".into())
    };
    let rows: Vec<Vec<String>> = r
        .migrations
        .iter()
        .map(|m| {
            let v = m.virtiofsd.clone().unwrap_or_default();
            vec![
                format!("{} {} → {}", m.hop, m.from, m.to),
                fds(v.source),
                fds(v.destination),
                opt(m.phases.device_state_ms()),
                m.bytes_after_stop.map(|b| format!("{:.2}", b as f64 / 1e6)).unwrap_or_else(|| "—".into()),
                opt(m.expected_downtime_ms.map(|d| d as f64)),
                m.params.downtime_limit().to_string(),
                opt(m.downtime_ms.map(|d| d as f64)),
            ]
        })
        .collect();
    h.push_str(&table(
        &[
            "migration",
            "virtiofsd fds, source",
            "virtiofsd fds, destination",
            "device state → RESUME ms",
            "MB after STOP",
            "QEMU expected ms",
            "downtime limit ms",
            "QEMU downtime ms",
        ],
        &rows,
    ));
    h.push_str("<p class=\"sub\">virtiofsd's descriptors: the source's before <code>migrate</code>, the destination's after RESUME (virtiofsd keeps inodes as file handles where it can, so these count mostly open files); the device-state phase runs from QEMU's <code>device</code> status to the destination's RESUME (with <code>device_phase</code>); QEMU's expectation is its last <code>expected-downtime</code> before the guest stopped</p>");
}

/// Where QEMU's downtime went, per hop: each part between two of its checkpoints, virtiofsd's
/// state saved and loaded, what the parts add up to against QEMU's figure; or why a hop has no
/// parts.
pub(super) fn downtime_parts_table(h: &mut String, r: &RunResult) {
    use miglab_model::downtime::VHOST_USER_FS;
    let shown: Vec<&miglab_model::MigrationRecord> = r
        .migrations
        .iter()
        .filter(|m| m.downtime_parts.is_some() || m.downtime_parts_problem.is_some())
        .collect();
    if shown.is_empty() {
        return;
    }
    let mut head: Vec<String> = vec!["migration".into()];
    head.extend(miglab_model::PartName::ALL.iter().map(|p| format!("{} ms", p.label())));
    head.extend(
        [
            "virtiofsd's state ms",
            "vhost-user-fs save ms",
            "vhost-user-fs load ms",
            "destination behind ms",
            "sum ms",
            "QEMU downtime ms",
            "clocks / problem",
        ]
        .map(String::from),
    );
    let rows: Vec<Vec<String>> = shown
        .iter()
        .map(|m| {
            let mut row = vec![format!("{} {} → {}", m.hop, m.from, m.to)];
            let p = m.downtime_parts.as_ref();
            let f = |v: Option<f64>| v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "—".into());
            row.extend(miglab_model::PartName::ALL.iter().map(|n| f(p.and_then(|p| p.part(*n)))));
            row.push(f(p.and_then(|p| p.vhost_user_fs_ms)));
            row.push(f(p.and_then(|p| p.device_ms(VHOST_USER_FS, false))));
            row.push(f(p.and_then(|p| p.device_ms(VHOST_USER_FS, true))));
            row.push(f(p.and_then(|p| p.destination_behind_ms)));
            row.push(f(p.map(|p| p.traced_ms)));
            row.push(opt(m.downtime_ms.map(|d| d as f64)));
            let clocks = p.map(|p| match p.clocks {
                miglab_model::downtime::Clocks::OneHost => "one host's clock".to_string(),
                miglab_model::downtime::Clocks::Offset { destination_minus_source_ms, rtt_ms } => {
                    format!("destination {destination_minus_source_ms:+.2} ms (±{:.2})", rtt_ms / 2.0)
                }
            });
            row.push(
                [clocks, m.downtime_parts_problem.clone()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join("; "),
            );
            row
        })
        .collect();
    let head: Vec<&str> = head.iter().map(String::as_str).collect();
    h.push_str(&table(&head, &rows));
    h.push_str("<p class=\"sub\">QEMU's own downtime tracepoints on both sides (<code>vmstate_downtime_checkpoint</code>, <code>_save</code>, <code>_load</code>): stop = <code>src-downtime-start</code> → <code>src-vm-stopped</code>; held = the pause before the switch-over, until QEMU's <code>device</code> state; RAM final pass → <code>src-iterable-saved</code>; device save → <code>src-non-iterable-saved</code>; transfer and load → the destination's <code>dst-precopy-loadvm-completed</code>; resume → <code>dst-precopy-bh-vm-started</code>; completion → the source's <code>src-downtime-end</code>. The parts add up to the traced downtime exactly; it agrees with QEMU's whole-millisecond figure within 1.5 ms. virtiofsd's state runs from vhost-user-fs's save beginning on the source to its load ending on the destination; its load alone includes the wait for the source's save (the stream is pipelined), so save and load overlap; the destination was <em>behind</em> by the time from the source beginning its final RAM section to the destination beginning to load it (still loading pre-copy's stream; inside transfer and load).</p>");
}

/// Pre-copy against the guest's dirtying: per hop, the knobs, QEMU's dirty rate before it, its
/// passes and throttle, and the dirtying load's pages read back after it; then every pass.
pub(super) fn convergence_section(h: &mut String, r: &RunResult) {
    let shown = r.memory.is_some() || r.migrations.iter().any(|m| !m.convergence.is_empty());
    if !shown {
        return;
    }
    h.push_str("<h2>Convergence</h2>");
    let mib =
        |b: Option<u64>| b.map(|b| format!("{:.1}", b as f64 / 1048576.0)).unwrap_or_else(|| "—".into());
    let checks = r.memory.as_ref().map(|m| m.checks.as_slice()).unwrap_or_default();
    let rows: Vec<Vec<String>> = r
        .migrations
        .iter()
        .map(|m| {
            let c = &m.convergence;
            let t = &m.params.tuning;
            let mut knobs = Vec::new();
            if let Some(b) = m.params.max_bandwidth {
                knobs.push(format!("cap {:.0} MiB/s", b as f64 / 1048576.0));
            }
            if let Some(n) = m.params.multifd_channels() {
                knobs.push(format!("multifd {n}"));
            }
            if let Some(z) = &t.multifd_compression {
                knobs.push(z.clone());
            }
            if let Some(a) = t.auto_converge {
                knobs.push(format!("auto-converge {}+{} %", a.initial_pct, a.increment_pct));
            }
            if let Some(x) = t.xbzrle_cache_mib {
                knobs.push(format!("xbzrle {x} MiB"));
            }
            if let Some(d) = t.dirty_limit_mib_s {
                knobs.push(format!("dirty-limit {d} MiB/s"));
            }
            let memory = checks
                .iter()
                .find(|h| h.hop == m.hop && m.guest == 1)
                .map_or_else(|| "—".into(), |h| h.summary());
            vec![
                format!("{} {} → {}", m.hop, m.from, m.to),
                if knobs.is_empty() { "defaults".into() } else { knobs.join(", ") },
                opt(c.dirty_rate_mib_s),
                c.passes.len().to_string(),
                c.max_throttle_pct.map(|t| t.to_string()).unwrap_or_else(|| "—".into()),
                mib(c.passes.last().and_then(|p| p.remaining_bytes)),
                opt(m.total_time_ms.map(|d| d as f64)),
                opt(m.downtime_ms.map(|d| d as f64)),
                memory,
            ]
        })
        .collect();
    h.push_str(&table(
        &[
            "migration",
            "knobs",
            "dirty rate before, MiB/s",
            "pre-copy passes sampled while active",
            "max throttle %",
            "left at the last pass, MiB",
            "total ms",
            "QEMU downtime ms",
            "dirtied memory after it",
        ],
        &rows,
    ));
    if let Some(m) = &r.memory {
        let speed =
            m.median_ms_per_gib().map(|s| format!("{s:.0} ms/GiB")).unwrap_or_else(|| "unmeasured".into());
        let spec =
            m.spec.map(|s| format!("{} MiB at {} MiB/s", s.size_mib, s.rate_mib_s)).unwrap_or_default();
        let _ = write!(
            h,
            "<p class=\"sub\">dirtying load: {spec}, every page stamped with its index, generation and the run's nonce and read back after each hop; the guest updates its memory at {speed} (median of its seconds)</p>"
        );
    }
    let passes: Vec<Vec<String>> = r
        .migrations
        .iter()
        .flat_map(|m| {
            m.convergence.passes.iter().map(move |p| {
                vec![
                    m.hop.to_string(),
                    format!("{:.0}", p.t_ms),
                    p.dirty_sync_count.to_string(),
                    mib(p.remaining_bytes),
                    p.dirty_pages_rate.map(|d| d.to_string()).unwrap_or_else(|| "—".into()),
                    opt(p.expected_downtime_ms.map(|d| d as f64)),
                    opt(p.mbps),
                    p.throttle_pct.map(|t| t.to_string()).unwrap_or_else(|| "—".into()),
                ]
            })
        })
        .collect();
    if !passes.is_empty() {
        h.push_str("<details><summary>every pre-copy pass</summary>");
        h.push_str(&table(
            &[
                "migration",
                "t ms",
                "dirty sync",
                "left MiB",
                "dirty pages/s",
                "QEMU expected ms",
                "Mbit/s",
                "throttle %",
            ],
            &passes,
        ));
        h.push_str("</details>");
    }
}

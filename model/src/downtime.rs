//! Where a hop's downtime went, in QEMU's own words: its downtime tracepoints on both sides
//! (checkpoints, and each device's save and load time) split QEMU's downtime into parts whose
//! boundaries are named. Nothing here is inferred from host-side event arrival.
//!
//! The parts run back to back from the source's `src-downtime-start` to its
//! `src-downtime-end`, the two instants QEMU's own `downtime` figure is the difference of; so
//! they add up to the traced downtime exactly, and that agrees with QEMU's figure to within its
//! whole-millisecond rounding ([`AGREEMENT_MS`]).

use serde::{Deserialize, Serialize};

/// The tracepoints a guest's QEMU enables (`-trace enable=…`): the downtime checkpoints and
/// per-device times, and the migration's state changes (the `device` state ends a hold before
/// the switch-over).
pub const TRACE_EVENTS: [&str; 2] = ["vmstate_downtime_*", "migrate_set_state"];

/// How far the traced downtime may sit from QEMU's `downtime` (whole milliseconds of another
/// clock, each end truncated) and still be the same interval.
pub const AGREEMENT_MS: f64 = 1.5;

/// One parsed trace line: its wall-clock stamp (µs since the epoch, on its host's clock; kept
/// whole, as a float of seconds would lose the last microseconds) and the event.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceEvent {
    pub unix_us: i64,
    pub what: Traced,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Traced {
    /// `vmstate_downtime_checkpoint`: one of QEMU's named instants.
    Checkpoint(String),
    /// `vmstate_downtime_save` (source) or `_load` (destination): one device's state.
    Device { load: bool, time: DeviceTime },
    /// `migrate_set_state`: the migration entered this state.
    State(String),
}

/// Parses QEMU's `log` trace backend with `-msg timestamp=on`:
/// `PID@SECONDS.MICROS:NAME ARGS`. Lines of other shapes (QEMU's own messages) are skipped.
pub fn parse_trace(text: &str) -> Vec<TraceEvent> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<TraceEvent> {
    let (pid, rest) = line.split_once('@')?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (stamp, rest) = rest.split_once(':')?;
    let (secs, micros) = stamp.split_once('.')?;
    if micros.len() != 6 {
        return None;
    }
    let unix_us =
        secs.parse::<i64>().ok()?.checked_mul(1_000_000)?.checked_add(micros.parse::<u32>().ok()?.into())?;
    let (name, args) = rest.split_once(' ').unwrap_or((rest, ""));
    let what = match name {
        "vmstate_downtime_checkpoint" => Traced::Checkpoint(args.trim().to_string()),
        "vmstate_downtime_save" | "vmstate_downtime_load" => {
            let arg = |k: &str| args.split(' ').find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='));
            Traced::Device {
                load: name.ends_with("load"),
                time: DeviceTime {
                    device: arg("idstr")?.to_string(),
                    instance: arg("instance_id")?.parse().ok()?,
                    iterable: arg("type")? == "iterable",
                    ms: arg("downtime")?.parse::<i64>().ok()? as f64 / 1e3,
                },
            }
        }
        "migrate_set_state" => Traced::State(args.trim().strip_prefix("new state ")?.to_string()),
        _ => return None,
    };
    Some(TraceEvent { unix_us, what })
}

/// One device's state saved or loaded inside the downtime, as QEMU timed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceTime {
    /// QEMU's section name (`0000:00:01.0/vhost-user-fs`, `ram`, `cpu`).
    pub device: String,
    pub instance: u32,
    /// An iterable section's final part (RAM's last pass), not a whole device state.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub iterable: bool,
    pub ms: f64,
}

impl DeviceTime {
    /// The device's kind without its PCI address: `vhost-user-fs`.
    pub fn kind(&self) -> &str {
        self.device.rsplit('/').next().unwrap_or(&self.device)
    }
}

/// A part of the downtime, between two checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartName {
    /// Stopping the source's vCPUs and devices (vhost-user-fs's rings among them).
    Stop,
    /// The switch-over held in `pre-switchover` (a fault's gate, or `device_phase`).
    Held,
    /// RAM's last dirty pages and the other iterable sections' ends, saved on the source.
    RamFinalPass,
    /// Every non-iterable device's state saved on the source (virtiofsd's blob by
    /// vhost-user-fs).
    DeviceSave,
    /// From the source's last save to the destination's load completing: the stream's tail in
    /// flight and the loads the destination had yet to make.
    TransferAndLoad,
    /// The destination's bottom half: devices started (virtiofsd's among them), the guest's
    /// vCPUs run.
    Resume,
    /// From the guest running on the destination to the source ending its downtime count
    /// (the return path's news of it).
    Completion,
}

impl PartName {
    pub const ALL: [PartName; 7] = [
        Self::Stop,
        Self::Held,
        Self::RamFinalPass,
        Self::DeviceSave,
        Self::TransferAndLoad,
        Self::Resume,
        Self::Completion,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Held => "held",
            Self::RamFinalPass => "ram_final_pass",
            Self::DeviceSave => "device_save",
            Self::TransferAndLoad => "transfer_and_load",
            Self::Resume => "resume",
            Self::Completion => "completion",
        }
    }
}

impl PartName {
    /// Its name for people: `ram final pass`.
    pub fn label(self) -> String {
        self.as_str().replace('_', " ")
    }

    /// Its headline figure's name: `downtime.<part>_ms`.
    pub fn figure(self) -> String {
        format!("downtime.{}_ms", self.as_str())
    }
}

/// Which clock a part's two boundaries were stamped on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartClock {
    Source,
    Destination,
    /// One boundary on each side: exact on one host; across hosts it carries the measured
    /// offset's error (see [`DowntimeParts::clocks`]).
    Both,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DowntimePart {
    /// stop, held, ram_final_pass, device_save, transfer_and_load, resume or completion.
    pub part: PartName,
    /// Its length, ms.
    pub ms: f64,
    /// The checkpoints (QEMU's names) that bound it.
    pub from: String,
    /// The checkpoint it ends at (it starts at `from`).
    pub to: String,
    /// Whose clock measured it: `source`, `destination` or `both` (the destination's put on the source's).
    pub clock: PartClock,
}

/// How the destination's stamps were put on the source's clock.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "clocks", rename_all = "kebab-case")]
pub enum Clocks {
    /// Both QEMUs ran on one machine's wall clock.
    OneHost,
    /// Hosts apart: the destination's clock minus the source's, as measured over SSH when the
    /// topology was opened (midpoint of the round trip; its error is up to half the round trip).
    Offset { destination_minus_source_ms: f64, rtt_ms: f64 },
}

impl Clocks {
    fn destination_minus_source_us(self) -> i64 {
        match self {
            Clocks::OneHost => 0,
            Clocks::Offset { destination_minus_source_ms, .. } => {
                (destination_minus_source_ms * 1e3).round() as i64
            }
        }
    }
}

/// A hop's downtime, split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DowntimeParts {
    /// Back to back, in order; a part QEMU did not pass through (no hold) is absent.
    pub parts: Vec<DowntimePart>,
    /// `src-downtime-end` − `src-downtime-start`: what the parts add up to.
    pub traced_ms: f64,
    /// Each device's save on the source inside the downtime (RAM's final part included),
    /// in QEMU's order.
    pub saves: Vec<DeviceTime>,
    /// Each device's load on the destination (the final RAM section included).
    pub loads: Vec<DeviceTime>,
    /// How long after the source began its final RAM section the destination began loading
    /// it: the destination was that far behind in the stream when the guest stopped (still
    /// loading pre-copy's pages), and it sits inside transfer-and-load. Absent when no final
    /// section's load was traced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_behind_ms: Option<f64>,
    /// virtiofsd's state on one clock: from the source beginning to save vhost-user-fs to the
    /// destination having loaded it. The destination's load time alone includes its wait for
    /// the source's save (the section's header goes first), so save + load would count that
    /// twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vhost_user_fs_ms: Option<f64>,
    #[serde(flatten)]
    pub clocks: Clocks,
}

impl DowntimeParts {
    pub fn part(&self, name: PartName) -> Option<f64> {
        self.parts.iter().find(|p| p.part == name).map(|p| p.ms)
    }

    /// The time of the devices of kind `kind` (`vhost-user-fs`), saved or loaded.
    pub fn device_ms(&self, kind: &str, load: bool) -> Option<f64> {
        let of: Vec<f64> = (if load { &self.loads } else { &self.saves })
            .iter()
            .filter(|d| d.kind() == kind)
            .map(|d| d.ms)
            .collect();
        (!of.is_empty()).then(|| of.iter().sum())
    }

    /// Whether the traced interval is QEMU's `downtime` figure (`qemu_ms`).
    pub fn agrees_with(&self, qemu_ms: u64) -> bool {
        (self.traced_ms - qemu_ms as f64).abs() <= AGREEMENT_MS
    }

    /// The parts and devices as headline figures: `downtime.<part>_ms`, how far behind the
    /// destination was (`downtime.destination_behind_ms`), and virtiofsd's state
    /// (`downtime.vhost_user_fs_ms` from save to load, `_save_ms`, `_load_ms`).
    pub fn figures(&self) -> Vec<(String, f64)> {
        let mut f: Vec<(String, f64)> = self.parts.iter().map(|p| (p.part.figure(), p.ms)).collect();
        if let Some(b) = self.destination_behind_ms {
            f.push(("downtime.destination_behind_ms".into(), b));
        }
        if let Some(v) = self.vhost_user_fs_ms {
            f.push(("downtime.vhost_user_fs_ms".into(), v));
        }
        for (load, side) in [(false, "save"), (true, "load")] {
            if let Some(ms) = self.device_ms(VHOST_USER_FS, load) {
                f.push((format!("downtime.vhost_user_fs_{side}_ms"), ms));
            }
        }
        f
    }
}

/// QEMU's section name for virtio-fs's vhost-user device.
pub const VHOST_USER_FS: &str = "vhost-user-fs";

/// Splits the downtime of the hop that began at `since_unix_us` (source clock). `source` and
/// `destination` are the two QEMUs' trace logs; the source's may hold earlier hops (a failed
/// one is retried from the same QEMU). Says which checkpoint is missing when it cannot.
pub fn attribute(
    source: &[TraceEvent],
    destination: &[TraceEvent],
    since_unix_us: i64,
    clocks: Clocks,
) -> Result<DowntimeParts, String> {
    let src: Vec<&TraceEvent> = source.iter().filter(|e| e.unix_us >= since_unix_us).collect();
    let checkpoint = |events: &[&TraceEvent], name: &str, after: i64| {
        events
            .iter()
            .find(|e| e.unix_us >= after && matches!(&e.what, Traced::Checkpoint(c) if c == name))
            .map(|e| e.unix_us)
    };
    let start = src
        .iter()
        .rev()
        .find(|e| matches!(&e.what, Traced::Checkpoint(c) if c == "src-downtime-start"))
        .map(|e| e.unix_us)
        .ok_or("the source's trace has no src-downtime-start for this hop")?;
    // The first `name` at or after `after`, or which side's trace lacks it.
    let need = |events: &[&TraceEvent], name: &str, after: i64, side: &str| {
        checkpoint(events, name, after).ok_or(format!("the {side}'s trace has no {name}"))
    };
    let stopped = need(&src, "src-vm-stopped", start, "source")?;
    // The hold ends when the source enters `device` (only a hop paused before its switch-over).
    let device = src
        .iter()
        .find(|e| e.unix_us >= stopped && matches!(&e.what, Traced::State(s) if s == "device"))
        .map(|e| e.unix_us);
    let iterable = need(&src, "src-iterable-saved", stopped, "source")?;
    let held_until = device.filter(|&d| d < iterable);
    let saved = need(&src, "src-non-iterable-saved", iterable, "source")?;
    let end = need(&src, "src-downtime-end", saved, "source")?;
    let shift = clocks.destination_minus_source_us();
    let dst: Vec<TraceEvent> =
        destination.iter().map(|e| TraceEvent { unix_us: e.unix_us - shift, what: e.what.clone() }).collect();
    let dst: Vec<&TraceEvent> = dst.iter().collect();
    let loaded = need(&dst, "dst-precopy-loadvm-completed", i64::MIN, "destination")?;
    let started = need(&dst, "dst-precopy-bh-vm-started", loaded, "destination")?;
    let mut bounds: Vec<(i64, &str)> = vec![(start, "src-downtime-start"), (stopped, "src-vm-stopped")];
    let mut names = vec![PartName::Stop];
    if let Some(d) = held_until {
        bounds.push((d, "migrate_set_state device"));
        names.push(PartName::Held);
    }
    bounds.extend([
        (iterable, "src-iterable-saved"),
        (saved, "src-non-iterable-saved"),
        (loaded, "dst-precopy-loadvm-completed"),
        (started, "dst-precopy-bh-vm-started"),
        (end, "src-downtime-end"),
    ]);
    names.extend([
        PartName::RamFinalPass,
        PartName::DeviceSave,
        PartName::TransferAndLoad,
        PartName::Resume,
        PartName::Completion,
    ]);
    let side = |name: &str| if name.starts_with("dst-") { PartClock::Destination } else { PartClock::Source };
    let parts = names
        .into_iter()
        .zip(bounds.windows(2))
        .map(|(part, w)| {
            let ((a, from), (b, to)) = (w[0], w[1]);
            let clock = if side(from) == side(to) { side(from) } else { PartClock::Both };
            DowntimePart { part, ms: (b - a) as f64 / 1e3, from: from.into(), to: to.into(), clock }
        })
        .collect();
    let device_times = |events: &[&TraceEvent], want_load: bool, from: i64, to: i64| {
        events
            .iter()
            .filter(|e| e.unix_us >= from && e.unix_us <= to)
            .filter_map(|e| match &e.what {
                Traced::Device { load, time } if *load == want_load => Some(time.clone()),
                _ => None,
            })
            .collect()
    };
    // A device's save or load began its `downtime` before its stamp.
    let began = |e: &TraceEvent, t: &DeviceTime| e.unix_us - (t.ms * 1e3).round() as i64;
    let final_ram_loaded = dst.iter().find_map(|e| match &e.what {
        Traced::Device { load: true, time } if time.iterable => Some(began(e, time)),
        _ => None,
    });
    let sent_from = held_until.unwrap_or(stopped);
    let fs_saved_from =
        src.iter().filter(|e| e.unix_us >= start && e.unix_us <= end).find_map(|e| match &e.what {
            Traced::Device { load: false, time } if time.kind() == VHOST_USER_FS => Some(began(e, time)),
            _ => None,
        });
    let fs_loaded = dst.iter().rev().find_map(|e| match &e.what {
        Traced::Device { load: true, time } if time.kind() == VHOST_USER_FS => Some(e.unix_us),
        _ => None,
    });
    Ok(DowntimeParts {
        destination_behind_ms: final_ram_loaded.map(|l| (l - sent_from).max(0) as f64 / 1e3),
        vhost_user_fs_ms: match (fs_saved_from, fs_loaded) {
            (Some(a), Some(b)) if b >= a => Some((b - a) as f64 / 1e3),
            _ => None,
        },
        parts,
        traced_ms: (end - start) as f64 / 1e3,
        saves: device_times(&src, false, start, end),
        loads: device_times(&dst, true, i64::MIN, started),
        clocks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both sides of a real smoke hop on the lab (QEMU 10.0.2, TCG, 512 MiB), shortened to the
    /// devices that matter; QEMU reported 13 ms of downtime.
    const SOURCE: &str = "\
1273@1796651374.300000:vmstate_downtime_checkpoint src-downtime-start
1273@1796651374.300100:vmstate_downtime_checkpoint src-downtime-end
1273@1796651374.337774:vmstate_downtime_checkpoint src-downtime-start
1273@1796651374.338875:vmstate_downtime_checkpoint src-vm-stopped
1273@1796651374.340567:vmstate_downtime_save type=iterable idstr=ram instance_id=0 downtime=1504
1273@1796651374.340578:vmstate_downtime_checkpoint src-iterable-saved
1273@1796651374.340702:vmstate_downtime_save type=non-iterable idstr=cpu instance_id=0 downtime=94
1273@1796651374.342875:vmstate_downtime_save type=non-iterable idstr=0000:00:01.0/vhost-user-fs instance_id=0 downtime=1312
1273@1796651374.343307:vmstate_downtime_checkpoint src-non-iterable-saved
1273@1796651374.351641:vmstate_downtime_checkpoint src-downtime-end
1273@1796651374.351700:migrate_set_state new state completed
";
    const DESTINATION: &str = "\
qemu-system-x86_64: some message of QEMU's own
1264@1796651374.344547:vmstate_downtime_load type=iterable idstr=ram instance_id=0 downtime=5026
1264@1796651374.349726:vmstate_downtime_load type=non-iterable idstr=0000:00:01.0/vhost-user-fs instance_id=0 downtime=2781
1264@1796651374.350757:vmstate_downtime_checkpoint dst-precopy-loadvm-completed
1264@1796651374.350806:vmstate_downtime_checkpoint dst-precopy-bh-enter
1264@1796651374.351453:vmstate_downtime_checkpoint dst-precopy-bh-vm-started
";
    const HOP_BEGAN: i64 = 1_796_651_374_330_000;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-3
    }

    #[test]
    fn a_real_hop_splits_into_parts_that_add_up_to_qemus_downtime() {
        let p = attribute(&parse_trace(SOURCE), &parse_trace(DESTINATION), HOP_BEGAN, Clocks::OneHost)
            .expect("every checkpoint is there");
        let names: Vec<PartName> = p.parts.iter().map(|p| p.part).collect();
        use PartName::*;
        assert_eq!(names, [Stop, RamFinalPass, DeviceSave, TransferAndLoad, Resume, Completion], "no hold");
        assert!(close(p.traced_ms, 13.867), "{}", p.traced_ms);
        assert!(close(p.parts.iter().map(|p| p.ms).sum(), p.traced_ms));
        assert!(p.agrees_with(13) && p.agrees_with(14) && !p.agrees_with(16));
        assert!(close(p.part(Stop).expect("present"), 1.101));
        assert!(close(p.part(DeviceSave).expect("present"), 2.729));
        assert!(close(p.part(TransferAndLoad).expect("present"), 7.450));
        assert_eq!(p.parts[3].clock, PartClock::Both);
        assert_eq!(p.parts[4].clock, PartClock::Destination);
        assert_eq!(p.device_ms(VHOST_USER_FS, false), Some(1.312));
        assert_eq!(p.device_ms(VHOST_USER_FS, true), Some(2.781));
        assert_eq!(p.saves.len(), 3, "the earlier hop's events are not this hop's");
        assert!(p.saves[0].iterable && p.saves[0].kind() == "ram");
        let f = p.figures();
        assert!(f.iter().any(|(k, v)| k == "downtime.vhost_user_fs_load_ms" && *v == 2.781), "{f:?}");
        assert!(f.iter().any(|(k, _)| k == "downtime.transfer_and_load_ms"));
        // The destination began the final RAM section 5 026 µs before 344 547: 0.646 ms after
        // the source stopped and began sending it.
        assert!(close(p.destination_behind_ms.expect("present"), 0.646), "{:?}", p.destination_behind_ms);
        // vhost-user-fs saved from 342 875 − 1 312 to its load's end at 349 726.
        assert!(close(p.vhost_user_fs_ms.expect("present"), 8.163), "{:?}", p.vhost_user_fs_ms);
    }

    /// An earlier hop's downtime in the same source log is not this hop's: a hop whose own
    /// never began has none.
    #[test]
    fn a_hop_without_its_own_checkpoints_says_which_is_missing() {
        let src = parse_trace(SOURCE);
        let e = attribute(&src, &parse_trace(DESTINATION), 1_796_651_374_360_000, Clocks::OneHost)
            .expect_err("refused");
        assert!(e.contains("src-downtime-start"), "{e}");
        let e = attribute(&src, &[], HOP_BEGAN, Clocks::OneHost).expect_err("refused");
        assert!(e.contains("destination") && e.contains("dst-precopy-loadvm-completed"), "{e}");
    }

    /// Hosts apart: the destination's stamps move onto the source's clock; the parts within a
    /// side keep their length, the cross-side ones absorb the offset, the sum stays QEMU's.
    #[test]
    fn a_destination_clock_ahead_is_brought_onto_the_sources() {
        let ahead = 250.0;
        let dst: String = DESTINATION
            .lines()
            .map(|l| match l.split_once('@').and_then(|(p, r)| Some((p, r.split_once(':')?))) {
                Some((pid, (t, rest))) => {
                    format!("{pid}@{:.6}:{rest}\n", t.parse::<f64>().expect("present") + ahead / 1e3)
                }
                None => format!("{l}\n"),
            })
            .collect();
        let clocks = Clocks::Offset { destination_minus_source_ms: ahead, rtt_ms: 0.4 };
        let p = attribute(&parse_trace(SOURCE), &parse_trace(&dst), HOP_BEGAN, clocks).expect("parts");
        let one = attribute(&parse_trace(SOURCE), &parse_trace(DESTINATION), HOP_BEGAN, Clocks::OneHost)
            .expect("present");
        for (a, b) in p.parts.iter().zip(&one.parts) {
            assert!((a.ms - b.ms).abs() < 0.01, "{a:?} v {b:?}");
        }
    }

    #[test]
    fn a_hold_before_the_switch_over_is_its_own_part() {
        let src = SOURCE.replace(
            "1273@1796651374.340567:vmstate",
            "1273@1796651374.339000:migrate_set_state new state device\n1273@1796651374.340567:vmstate",
        );
        let p = attribute(&parse_trace(&src), &parse_trace(DESTINATION), HOP_BEGAN, Clocks::OneHost)
            .expect("present");
        assert!(close(p.part(PartName::Held).expect("present"), 0.125));
        assert!(close(p.destination_behind_ms.expect("present"), 0.521), "from the device state on");
        assert!(close(p.part(PartName::RamFinalPass).expect("present"), 1.578));
        assert!(close(p.parts.iter().map(|p| p.ms).sum(), p.traced_ms));
    }

    #[test]
    fn lines_of_other_shapes_are_skipped() {
        for l in [
            "",
            "@",
            "x@1.000000:vmstate_downtime_checkpoint a",
            "1@nan:vmstate_downtime_checkpoint a",
            "1@2:vmstate_downtime_checkpoint a",
            "1@2.5:vmstate_downtime_checkpoint a",
            "1@99999999999999999.000000:vmstate_downtime_checkpoint a",
            "1@2.000000:other x",
        ] {
            assert_eq!(parse_trace(l), vec![], "{l:?}");
        }
        let d = "1@2.500000:vmstate_downtime_save type=non-iterable idstr=a/b instance_id=x downtime=3";
        assert_eq!(parse_trace(d), vec![], "a bad instance id");
    }

    #[test]
    fn parts_round_trip_through_json() {
        let p = attribute(
            &parse_trace(SOURCE),
            &parse_trace(DESTINATION),
            HOP_BEGAN,
            Clocks::Offset { destination_minus_source_ms: 0.0, rtt_ms: 1.0 },
        )
        .expect("present");
        let j = serde_json::to_value(&p).expect("present");
        assert_eq!(j["clocks"], "offset");
        assert_eq!(j["parts"][0]["part"], "stop");
        assert_eq!(serde_json::from_value::<DowntimeParts>(j).expect("present"), p);
    }
}

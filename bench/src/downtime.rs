//! A hop's downtime split by QEMU's own tracepoints: both QEMUs' trace logs read from their
//! hosts once the guest runs again, and put on one clock.

use miglab_infra::topology::Site;
use miglab_infra::vm::Vm;
use miglab_model::downtime::{attribute, parse_trace, Clocks};
use miglab_model::{DowntimeParts, TopologyRecord};
use std::sync::Arc;

/// How much earlier than the hop's start (on miglab's clock) the source's trace is read from:
/// the hosts' clock offsets are measured to within half a round trip.
const SINCE_MARGIN_US: i64 = 50_000;

/// The parts of a completed hop that began at `began_unix_us` (miglab's wall clock), or why
/// there are none, or why they are not QEMU's `downtime_ms`.
pub async fn parts(
    site: &Arc<dyn Site>,
    src: &Vm,
    dst: &Vm,
    began_unix_us: i64,
    downtime_ms: Option<u64>,
) -> (Option<DowntimeParts>, Option<String>) {
    let read = |vm: &Vm| {
        let (site, host, path) = (site.clone(), vm.host().to_string(), vm.record.files.qemu_trace());
        tokio::task::spawn_blocking(move || {
            let h = site.host(&host).map_err(|e| e.to_string())?;
            h.read(&path)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .map_err(|e| format!("{}: {e}", path.display()))
        })
    };
    let (s, d) = tokio::join!(read(src), read(dst));
    let text = |r: Result<Result<String, String>, tokio::task::JoinError>, side: &str| {
        r.map_err(|e| e.to_string()).and_then(|r| r).map_err(|e| format!("the {side}'s QEMU trace: {e}"))
    };
    let (s, d) = match (text(s, "source"), text(d, "destination")) {
        (Ok(s), Ok(d)) => (s, d),
        (Err(e), _) | (_, Err(e)) => return (None, Some(e)),
    };
    let (clocks, src_offset_us) = clocks(site.record().as_ref(), src.host(), dst.host());
    let since = began_unix_us + src_offset_us - SINCE_MARGIN_US;
    match attribute(&parse_trace(&s), &parse_trace(&d), since, clocks) {
        Ok(p) => {
            let problem = downtime_ms
                .filter(|&q| !p.agrees_with(q))
                .map(|q| format!("the traced downtime is {:.1} ms, QEMU's figure {q} ms", p.traced_ms));
            (Some(p), problem)
        }
        Err(e) => (None, Some(e)),
    }
}

/// The destination's clock against the source's, and the source's against miglab's (s): one
/// machine's clock on the lab, the offsets measured over SSH on an external topology.
fn clocks(topology: Option<&TopologyRecord>, from: &str, to: &str) -> (Clocks, i64) {
    let host = |name: &str| topology.and_then(|t| t.hosts.iter().find(|h| h.name == name));
    match (host(from), host(to)) {
        (Some(s), Some(d)) => (
            Clocks::Offset {
                destination_minus_source_ms: d.clock_offset_ms - s.clock_offset_ms,
                rtt_ms: s.clock_rtt_ms.max(d.clock_rtt_ms),
            },
            (s.clock_offset_ms * 1e3).round() as i64,
        ),
        _ => (Clocks::OneHost, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use miglab_model::HostRecord;

    #[test]
    fn hosts_apart_have_their_offsets_subtracted_and_the_lab_has_one_clock() {
        let h = |name: &str, off: f64, rtt: f64| HostRecord {
            name: name.into(),
            clock_offset_ms: off,
            clock_rtt_ms: rtt,
            ..HostRecord::default()
        };
        let t =
            TopologyRecord { hosts: vec![h("a", 10.0, 0.4), h("b", -5.0, 0.9)], ..TopologyRecord::default() };
        let (c, src) = clocks(Some(&t), "a", "b");
        assert_eq!(c, Clocks::Offset { destination_minus_source_ms: -15.0, rtt_ms: 0.9 });
        assert_eq!(src, 10_000);
        assert_eq!(clocks(None, "c1", "c2"), (Clocks::OneHost, 0));
    }
}

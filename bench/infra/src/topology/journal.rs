//! The fault journal: every change a fault makes to a site — a daemon frozen, a setting
//! changed, a link cut — is written to the site's state file, with how to undo it, *before* the
//! change is made (write-ahead, as a database's log). A fault made of several changes adds a
//! step before each, so a fault that fails half-way is undone exactly as far as it went. A step
//! leaves the journal only once its undo succeeded.
//!
//! The normal end of a fault and every crash recover through the same records: the injector
//! reverts its own entry when the fault's time is up; the next run's readiness check and
//! `lab down` revert entries whose miglab is gone (an error, a panic, a second Ctrl-C, SIGKILL).

use super::{DaemonId, Topology, TopologyError};
use crate::process::{self, ProcRecord};
use miglab_faults::DaemonAction;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// How long a healed host's mount may take to answer before it is mounted again.
const MOUNT_DEADLINE: Duration = Duration::from_secs(10);

/// One change's undo.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "undo", rename_all = "kebab-case")]
pub enum Undo {
    /// A daemon frozen is resumed, one killed is restarted.
    Daemon { daemon: DaemonId, action: DaemonAction },
    /// An OSD marked out is marked in.
    OsdIn { osd: u32 },
    /// A daemon's setting set back to the value it had.
    Config { daemon: DaemonId, key: String, value: String },
    /// A CephFS client's setting set back to the value it had.
    ClientConfig { host: String, key: String, value: String },
    /// A host's link unshaped.
    Unshape { host: String },
    /// A host's link healed (and its CephFS mounted again if its client was evicted).
    Heal { host: String },
    /// A process of the site frozen (SIGSTOP) is resumed (SIGCONT).
    Resume { process: ProcRecord },
    /// A file a third party renamed away is renamed back.
    RenameBack { away: PathBuf, back: PathBuf },
    /// A killed client's session ended at the MDS (evicted: until it times out its caps keep
    /// other clients waiting), and the blocklist entry that adds lifted.
    ForgetClient { host: String, id: u64, addr: String },
    /// An OSD marked down so that it rejoins and its peers and clients send again what its
    /// messenger dropped (they never would on their own).
    OsdDown { osd: u32 },
    /// A host's CephFS mount checked after a fault on its client: mounted again if a request
    /// the fault dropped is never answered.
    CheckMount { host: String },
    /// A file system's setting (`ceph fs set`) set back to the value it had.
    FsSetting { key: String, value: String },
    /// A fenced (evicted or blocklisted) client's address taken off the blocklist, and its
    /// mount checked: mounted again if it does not come back whole.
    Unfence { host: String, addr: String },
}

impl fmt::Display for Undo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Undo::Daemon { daemon, action } => write!(f, "{action} {daemon}"),
            Undo::OsdIn { osd } => write!(f, "mark osd.{osd} in"),
            Undo::Config { daemon, key, value } => write!(f, "set {key} = '{value}' on {daemon}"),
            Undo::ClientConfig { host, key, value } => write!(f, "set {key} = '{value}' on client.{host}"),
            Undo::Unshape { host } => write!(f, "unshape {host}'s link"),
            Undo::Heal { host } => write!(f, "heal {host}'s link"),
            Undo::Resume { process } => write!(f, "resume {} (pid {})", process.name, process.pid),
            Undo::RenameBack { away, back } => {
                write!(f, "rename {} back to {}", away.display(), back.display())
            }
            Undo::Unfence { host, addr } => write!(f, "take client.{host} ({addr}) off the blocklist"),
            Undo::FsSetting { key, value } => write!(f, "set the file system's {key} = '{value}'"),
            Undo::CheckMount { host } => write!(f, "check {host}'s CephFS mount"),
            Undo::OsdDown { osd } => write!(f, "mark osd.{osd} down (it rejoins)"),
            Undo::ForgetClient { host, id, .. } => {
                write!(f, "evict the session of {host}'s killed client (client.{id})")
            }
        }
    }
}

impl Undo {
    /// The setting this undo puts back, if it is one: whose (a daemon, or `client.<host>`) and
    /// which key. Two faults on one setting share its baseline ([`Journal::step`]).
    fn setting(&self) -> Option<(String, &str)> {
        match self {
            Undo::Config { daemon, key, .. } => Some((daemon.to_string(), key)),
            Undo::ClientConfig { host, key, .. } => Some((format!("client.{host}"), key)),
            Undo::FsSetting { key, .. } => Some(("fs".to_string(), key)),
            _ => None,
        }
    }

    /// This undo, putting back `baseline`'s value instead of its own.
    fn with_value(&self, baseline: &Undo) -> Undo {
        let (Undo::Config { value: base, .. }
        | Undo::ClientConfig { value: base, .. }
        | Undo::FsSetting { value: base, .. }) = baseline
        else {
            return self.clone();
        };
        let mut u = self.clone();
        if let Undo::Config { value, .. } | Undo::ClientConfig { value, .. } | Undo::FsSetting { value, .. } =
            &mut u
        {
            value.clone_from(base);
        }
        u
    }
}

/// The step of another entry than `id` that holds the same setting as `u`: the value from
/// before the first of the faults that changed it.
fn baseline<'j>(journal: &'j [Entry], id: &str, u: &Undo) -> Option<&'j Undo> {
    let setting = u.setting()?;
    journal
        .iter()
        .filter(|e| e.id != id)
        .flat_map(|e| &e.steps)
        .find(|o| o.setting().as_ref() == Some(&setting))
}

/// Adds `undo` to entry `id` (false: there is none), with the baseline of its setting if
/// another entry holds one.
fn add_step(journal: &mut [Entry], id: &str, undo: &Undo) -> bool {
    let u = baseline(journal, id, undo).map_or_else(|| undo.clone(), |b| undo.with_value(b));
    match journal.iter_mut().find(|e| e.id == id) {
        Some(e) => {
            e.steps.push(u);
            true
        }
        None => false,
    }
}

/// One fault's changes, newest last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Unique among the journal's entries: the owner's pid, the run's VM and the fault's index.
    pub id: String,
    /// The fault, as the run names it.
    pub fault: String,
    /// The miglab that made the changes: while it lives, nobody else reverts them.
    pub owner: ProcRecord,
    pub steps: Vec<Undo>,
}

impl Entry {
    /// Whether the miglab that made the changes is gone (killed, crashed, or exited without
    /// undoing them).
    pub fn orphaned(&self) -> bool {
        !process::is_alive(&self.owner)
    }
}

/// This miglab, as an owner of journal entries.
pub fn me() -> ProcRecord {
    let pid = std::process::id() as i32;
    ProcRecord {
        name: "miglab".into(),
        pid,
        start_ticks: process::proc_stat(pid).map_or(0, |s| s.start_ticks),
        log: PathBuf::new(),
        tier: Default::default(),
    }
}

/// A fault's entry being written: [`Journal::step`] before each change.
#[derive(Debug)]
pub struct Journal<'a> {
    topo: &'a dyn Topology,
    id: String,
}

impl<'a> Journal<'a> {
    /// Opens the entry `id` for `fault` (an entry with no step undoes nothing). An entry of
    /// that id that still has steps is never replaced: its changes would be lost to every undo.
    pub fn begin(topo: &'a dyn Topology, id: String, fault: &str) -> Result<Self, TopologyError> {
        let entry = Entry { id: id.clone(), fault: fault.into(), owner: me(), steps: Vec::new() };
        let mut clash = None;
        topo.journal_update(&mut |j| match j.iter().find(|e| e.id == entry.id && !e.steps.is_empty()) {
            Some(e) => clash = Some(e.fault.clone()),
            None => {
                j.retain(|e| e.id != entry.id);
                j.push(entry.clone());
            }
        })?;
        match clash {
            Some(other) => Err(TopologyError::Journal(format!(
                "the journal entry {id} still holds undos of '{other}': not reused (run `miglab lab down` to revert it)"
            ))),
            None => Ok(Self { topo, id }),
        }
    }

    /// Writes down `undo` — call it before making the change it undoes. A setting another
    /// fault has changed and not yet put back is journaled with that fault's value from before
    /// (one baseline per setting): whichever of them ends last restores it, the others leave
    /// it to that one ([`revert`]), in whatever order they end or are recovered.
    pub fn step(&self, undo: Undo) -> Result<(), TopologyError> {
        let id = &self.id;
        let mut found = false;
        self.topo.journal_update(&mut |j| found = add_step(j, id, &undo))?;
        if found {
            Ok(())
        } else {
            Err(TopologyError::Journal(format!(
                "the journal has no entry {id} (removed by another miglab?): '{undo}' was not written, so the change is not made"
            )))
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether the entry holds anything to undo.
    pub fn has_steps(&self) -> bool {
        self.topo.journal().iter().any(|e| e.id == self.id && !e.steps.is_empty())
    }
}

/// Carries one undo out; returns what it did.
pub fn undo(topo: &dyn Topology, u: &Undo) -> Result<String, TopologyError> {
    Ok(match u {
        Undo::Daemon { daemon, action } => {
            topo.daemon(daemon, *action)?;
            format!("{daemon} {}", if *action == DaemonAction::Resume { "resumed" } else { "restarted" })
        }
        Undo::OsdIn { osd } => {
            topo.osd_out(*osd, false)?;
            format!("osd.{osd} in")
        }
        Undo::Config { daemon, key, value } => {
            topo.config_set(daemon, key, value)?;
            format!("{key} = '{value}' on {daemon} again")
        }
        Undo::ClientConfig { host, key, value } => {
            topo.client_config_set(host, key, value)?;
            format!("{key} = '{value}' on client.{host} again")
        }
        Undo::Unshape { host } => {
            topo.shape_link(host, None)?;
            format!("{host}'s link unshaped")
        }
        Undo::Heal { host } => {
            topo.cut_link(host, false)?;
            match topo.ensure_mount(host, MOUNT_DEADLINE)? {
                Some(why) => format!("{host}'s link healed; its CephFS {why}: mounted again"),
                None => format!("{host}'s link healed"),
            }
        }
        Undo::ForgetClient { host, id, addr } => {
            super::end_session(topo, *id, addr)?;
            format!("the session of {host}'s killed client evicted")
        }
        Undo::OsdDown { osd } => {
            topo.osd_down(*osd)?;
            format!("osd.{osd} marked down to rejoin")
        }
        Undo::CheckMount { host } => match topo.ensure_mount(host, MOUNT_DEADLINE)? {
            Some(why) => format!("{host}'s CephFS {why}: mounted again"),
            None => format!("{host}'s CephFS whole"),
        },
        Undo::FsSetting { key, value } => {
            topo.fs_set(key, value)?;
            format!("the file system's {key} = '{value}' again")
        }
        Undo::Unfence { host, addr } => {
            topo.blocklist(addr, false)?;
            match topo.ensure_mount(host, MOUNT_DEADLINE)? {
                Some(why) => format!("client.{host} off the blocklist; its CephFS {why}: mounted again"),
                None => format!("client.{host} off the blocklist, its CephFS answering"),
            }
        }
        Undo::Resume { process } => {
            topo.signal(process, nix::sys::signal::Signal::SIGCONT)?;
            format!("{} resumed", process.name)
        }
        Undo::RenameBack { away, back } => {
            match std::fs::rename(away, back) {
                Ok(()) => {}
                // Renamed back already (the step's removal was what failed last time).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && back.exists() => {}
                Err(e) => return Err(TopologyError::Journal(format!("rename {} back: {e}", back.display()))),
            }
            format!("{} renamed back", back.display())
        }
    })
}

/// What reverting an entry did, and what it could not do (those steps stay in the journal).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Reverted {
    pub done: Vec<String>,
    pub failed: Vec<String>,
}

impl Reverted {
    /// One line: what was done, or that nothing was to do.
    pub fn summary(&self) -> String {
        if self.done.is_empty() {
            "nothing to undo".into()
        } else {
            self.done.join("; ")
        }
    }
}

/// Reverts entry `id`, newest step first: each step leaves the journal once undone, the entry
/// once every step has. A step that fails stays, and the rest are still tried.
pub fn revert(topo: &dyn Topology, id: &str) -> Reverted {
    let mut r = Reverted::default();
    let Some(entry) = topo.journal().into_iter().find(|e| e.id == id) else {
        return r;
    };
    let mut left = Vec::new();
    for step in entry.steps.iter().rev() {
        // Another fault still holds this setting: it puts the baseline back when it ends.
        let held = baseline(&topo.journal(), id, step).is_some();
        let result = if held {
            Ok(format!(
                "{} left to another fault still changing it (it restores the value from before both)",
                step.setting().map(|(w, k)| format!("{k} on {w}")).unwrap_or_default()
            ))
        } else {
            undo(topo, step)
        };
        match result {
            Ok(said) => {
                r.done.push(said);
                let _ = topo.journal_update(&mut |j| {
                    if let Some(e) = j.iter_mut().find(|e| e.id == id) {
                        if let Some(i) = e.steps.iter().rposition(|s| s == step) {
                            e.steps.remove(i);
                        }
                    }
                });
            }
            Err(e) => {
                r.failed.push(format!("{step}: {e}"));
                left.push(step.clone());
            }
        }
    }
    if left.is_empty() {
        if let Err(e) = topo.journal_update(&mut |j| j.retain(|e| e.id != id)) {
            r.failed.push(format!("removing the journal entry {id}: {e}"));
        }
    }
    r
}

/// Reverts every entry whose miglab is gone; returns, per entry, its fault and what was done.
/// Entries of a miglab still running are left to it.
pub fn recover(topo: &dyn Topology) -> Vec<(Entry, Reverted)> {
    topo.journal()
        .into_iter()
        .filter(Entry::orphaned)
        .map(|e| {
            let r = revert(topo, &e.id);
            (e, r)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_orphaned_only_when_its_miglab_is_gone() {
        let mine = Entry { id: "x".into(), fault: "f".into(), owner: me(), steps: Vec::new() };
        assert!(!mine.orphaned(), "this process is alive");
        let mut gone = mine.clone();
        gone.owner.start_ticks += 1;
        assert!(gone.orphaned(), "a pid with another start time is somebody else");
    }

    /// Two delays on one OSD setting, overlapping: A read 1.0 and set 0.05, B read 0.05 and
    /// set 0.2. B's undo is journaled with A's 1.0 (one baseline); while either is in the
    /// journal the other's revert leaves the setting alone, so whichever ends last — or is
    /// recovered last after a crash — restores 1.0. Before, A restored 1.0 and B then 0.05,
    /// and the delay stayed on.
    #[test]
    fn overlapping_changes_of_one_setting_share_the_value_from_before_the_first() {
        let entry = |id: &str| Entry { id: id.into(), fault: id.into(), owner: me(), steps: Vec::new() };
        let set = |d: &str, v: &str| Undo::Config {
            daemon: d.parse().expect("id"),
            key: "ms_inject_delay_max".into(),
            value: v.into(),
        };
        let mut j = vec![entry("a"), entry("b")];
        assert!(add_step(&mut j, "a", &set("osd.0", "1.0")));
        assert!(add_step(&mut j, "b", &set("osd.0", "0.05")));
        assert!(add_step(&mut j, "b", &set("osd.1", "0.05")), "another daemon: its own value");
        assert_eq!(j[1].steps, vec![set("osd.0", "1.0"), set("osd.1", "0.05")]);
        // A ends first: B holds osd.0's setting, so A's revert leaves it; B's restores 1.0.
        assert!(baseline(&j, "a", &j[0].steps[0]).is_some());
        assert!(baseline(&j, "b", &j[1].steps[1]).is_none());
        j.remove(0);
        assert!(baseline(&j, "b", &j[0].steps[0]).is_none(), "the last one restores");
        assert!(!add_step(&mut j, "gone", &set("osd.0", "1.0")), "no entry: not written");
        // Another kind of step has no setting; a client's setting is its own.
        assert_eq!(Undo::Heal { host: "c1".into() }.setting(), None);
        let c = Undo::ClientConfig { host: "c1".into(), key: "k".into(), value: "0".into() };
        assert_eq!(
            c.with_value(&set("osd.0", "9")),
            Undo::ClientConfig { host: "c1".into(), key: "k".into(), value: "9".into() }
        );
    }

    #[test]
    fn undos_read_back_from_json_as_written() {
        let steps = vec![
            Undo::Daemon { daemon: "osd.1".parse().expect("id"), action: DaemonAction::Resume },
            Undo::Config { daemon: "osd.0".parse().expect("id"), key: "k".into(), value: "1.0".into() },
            Undo::Heal { host: "c1".into() },
            Undo::RenameBack { away: "/a.miglab-away".into(), back: "/a".into() },
        ];
        let text = serde_json::to_string(&steps).expect("json");
        assert!(text.contains(r#""undo":"daemon""#), "{text}");
        assert_eq!(serde_json::from_str::<Vec<Undo>>(&text).expect("parse"), steps);
        assert_eq!(steps[0].to_string(), "resume osd.1");
    }
}

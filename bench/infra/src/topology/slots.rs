//! Which lab holds which slot, machine-wide. A lab's name hashes to its preferred slot (its
//! subnet, bridge and ports), but two names can hash alike, and labs of different roots (every
//! test has its own) share one machine's bridges and ports. `lab up` claims a slot here before
//! it creates anything: the preferred one, or the next free one; the lab's recorded layout
//! keeps it, and `lab down` gives it back. Two labs coming up at once never get the same slot.

use super::state::flock_within;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;

/// How long a claimer waits for another's claim (which takes microseconds).
const LOCK_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum SlotError {
    #[error("every lab slot of this machine is held (claims in {dir}): take a lab down with `miglab lab down --name NAME`")]
    AllHeld { dir: PathBuf },
    #[error("slot {slot} is held by the lab at {holder}: take it down first (`miglab lab down`), or choose another --name")]
    Held { slot: u16, holder: String },
    #[error("could not {what}: {source}")]
    Io { what: String, source: std::io::Error },
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> SlotError {
    move |source| SlotError::Io { what, source }
}

/// Where this machine's claims live: a file per held slot, naming the lab directory.
pub fn claims_dir() -> PathBuf {
    PathBuf::from("/run/miglab/slots")
}

/// The slots a lab preferring `preferred` may take, in order: slot 0 is `default`'s alone;
/// any other starts at its own and wraps around 1..=`last`.
fn candidates(preferred: u16, last: u16) -> Vec<u16> {
    if preferred == 0 {
        return vec![0];
    }
    (0..last).map(|i| 1 + (preferred - 1 + i) % last).collect()
}

/// Claims a slot for the lab at `lab_dir` in `dir`: `preferred` if it is free, else the next
/// one. A slot is free when no claim names a lab directory that still exists and `usable`
/// says nothing else of the machine occupies it (a lab of a build before claims).
pub fn claim(
    dir: &Path,
    preferred: u16,
    last: u16,
    lab_dir: &Path,
    usable: impl Fn(u16) -> bool,
) -> Result<u16, SlotError> {
    std::fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
    // One claimer at a time: a stale claim is replaced only by whoever holds the lock.
    let lock = dir.join(".lock");
    let _lock = flock_within(&lock, LOCK_TIMEOUT).map_err(|source| SlotError::Io {
        what: format!("lock {} within {LOCK_TIMEOUT:?}", lock.display()),
        source,
    })?;
    let mut first_holder = None;
    for slot in candidates(preferred, last) {
        let file = dir.join(slot.to_string());
        if let Ok(holder) = std::fs::read_to_string(&file) {
            if Path::new(holder.trim()).exists() {
                first_holder.get_or_insert(holder.trim().to_string());
                continue;
            }
            // Its lab is gone (removed by hand, or the machine was not rebooted but /run was
            // kept): the claim is stale.
            std::fs::remove_file(&file).map_err(io(format!("remove stale {}", file.display())))?;
        }
        if !usable(slot) {
            continue;
        }
        let mut f = std::fs::File::create(&file).map_err(io(format!("create {}", file.display())))?;
        f.write_all(lab_dir.display().to_string().as_bytes())
            .map_err(io(format!("write {}", file.display())))?;
        return Ok(slot);
    }
    Err(match (preferred, first_holder) {
        (0, Some(holder)) => SlotError::Held { slot: 0, holder },
        _ => SlotError::AllHeld { dir: dir.to_path_buf() },
    })
}

/// Gives back every slot the lab at `lab_dir` holds in `dir`.
pub fn release(dir: &Path, lab_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.file_name().is_some_and(|n| n != ".lock")
            && std::fs::read_to_string(&p).is_ok_and(|h| Path::new(h.trim()) == lab_dir)
        {
            let _ = std::fs::remove_file(&p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().expect("tempdir")
    }

    #[test]
    fn the_preferred_slot_then_the_next_free_one() {
        let (claims, labs) = (tmp(), tmp());
        let (a, b, c) = (labs.path().join("a"), labs.path().join("b"), labs.path().join("c"));
        for d in [&a, &b, &c] {
            std::fs::create_dir(d).expect("mkdir");
        }
        assert_eq!(claim(claims.path(), 7, 10, &a, |_| true).expect("a"), 7);
        // b hashes to a's slot: it gets the next one.
        assert_eq!(claim(claims.path(), 7, 10, &b, |_| true).expect("b"), 8);
        // Wrapping past the last slot skips slot 0.
        assert_eq!(claim(claims.path(), 10, 10, &c, |_| true).expect("c"), 10);
        let d = labs.path().join("d");
        std::fs::create_dir(&d).expect("mkdir");
        assert_eq!(claim(claims.path(), 10, 10, &d, |_| true).expect("d"), 1);
        // Something else of the machine on a slot (a lab without a claim): passed over.
        let e = labs.path().join("e");
        std::fs::create_dir(&e).expect("mkdir");
        assert_eq!(claim(claims.path(), 2, 10, &e, |s| s != 2).expect("e"), 3);
    }

    #[test]
    fn a_claim_whose_lab_is_gone_is_taken_and_release_gives_back_only_its_own() {
        let (claims, labs) = (tmp(), tmp());
        let (a, b) = (labs.path().join("a"), labs.path().join("b"));
        std::fs::create_dir(&b).expect("mkdir");
        // a never existed (or was removed by hand): its claim is stale.
        std::fs::write(claims.path().join("4"), a.display().to_string()).expect("write");
        assert_eq!(claim(claims.path(), 4, 10, &b, |_| true).expect("b"), 4);
        std::fs::create_dir(&a).expect("mkdir");
        assert_eq!(claim(claims.path(), 4, 10, &a, |_| true).expect("a"), 5);
        release(claims.path(), &a);
        assert!(!claims.path().join("5").exists() && claims.path().join("4").exists());
        release(claims.path(), &b);
        assert!(!claims.path().join("4").exists());
    }

    #[test]
    fn slot_zero_is_defaults_alone_and_a_full_machine_is_named() {
        let (claims, labs) = (tmp(), tmp());
        let (a, b) = (labs.path().join("a"), labs.path().join("b"));
        for d in [&a, &b] {
            std::fs::create_dir(d).expect("mkdir");
        }
        assert_eq!(claim(claims.path(), 0, 3, &a, |_| true).expect("a"), 0);
        let e = claim(claims.path(), 0, 3, &b, |_| true).expect_err("held");
        assert!(e.to_string().contains(&a.display().to_string()), "{e}");
        let e = claim(claims.path(), 1, 3, &b, |_| false).expect_err("none usable");
        assert!(matches!(e, SlotError::AllHeld { .. }), "{e}");
    }

    #[test]
    fn labs_claiming_at_once_get_different_slots() {
        let (claims, labs) = (tmp(), tmp());
        let dirs: Vec<PathBuf> = (0..8).map(|i| labs.path().join(i.to_string())).collect();
        let slots: Vec<u16> = std::thread::scope(|s| {
            let hs: Vec<_> = dirs
                .iter()
                .map(|d| {
                    std::fs::create_dir(d).expect("mkdir");
                    s.spawn(|| claim(claims.path(), 3, 20, d, |_| true).expect("claim"))
                })
                .collect();
            hs.into_iter().map(|h| h.join().expect("join")).collect()
        });
        let mut unique = slots.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), 8, "{slots:?}");
    }
}

//! Which file systems are mounted where, from /proc/self/mountinfo: the lab checks its FUSE
//! mounts with it, and teardown finds whatever is left under a lab directory.

use std::path::{Path, PathBuf};

/// Whether a FUSE file system is mounted exactly at `path`.
pub fn is_fuse_mounted(path: &Path) -> bool {
    mounts_under(path).iter().any(|(p, fstype)| p == path && fstype.starts_with("fuse"))
}

/// Mount points at or below `dir`, with their file-system types, from /proc/self/mountinfo.
pub fn mounts_under(dir: &Path) -> Vec<(PathBuf, String)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    parse_mountinfo(&text).into_iter().filter(|(p, _)| p.starts_with(dir)).collect()
}

pub fn parse_mountinfo(text: &str) -> Vec<(PathBuf, String)> {
    text.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let mount = left.split(' ').nth(4)?;
            let fstype = right.split(' ').next()?;
            Some((PathBuf::from(unescape_mount(mount)), fstype.to_string()))
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mount(s: &str) -> String {
    let mut out = String::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v as char);
            i += 4;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_parsing_finds_fuse_mounts_and_unescapes() {
        let text = "36 35 98:0 / /mnt1 rw,noatime master:1 - ext3 /dev/root rw\n\
                    88 29 0:52 / /var/lib/miglab/t/mnt/c1 rw,nosuid,nodev,relatime shared:300 - fuse.ceph-fuse ceph-fuse rw,user_id=0\n\
                    89 29 0:53 / /var/lib/miglab/t/mnt/with\\040space rw - fuse ceph-fuse rw\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 3);
        assert_eq!(m[1], (PathBuf::from("/var/lib/miglab/t/mnt/c1"), "fuse.ceph-fuse".to_string()));
        assert_eq!(m[2].0, PathBuf::from("/var/lib/miglab/t/mnt/with space"));
    }
}

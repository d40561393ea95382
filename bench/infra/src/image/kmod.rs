//! Kernel modules for the guest: found in the unpacked kernel package, their dependencies read
//! from each module's own `.modinfo` section (the package ships no modules.dep; depmod runs at
//! install time, which never happens here), ordered so that dependencies load first, and
//! decompressed when the distribution ships them as `.ko.xz` or `.ko.zst`.

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum KmodError {
    #[error("no kernel modules under {0}: is the kernel package unpacked? (`ci/setup`)")]
    NoModules(PathBuf),
    #[error("could not read module {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("module {path} is not a valid ELF object ({what})")]
    BadElf { path: PathBuf, what: &'static str },
    #[error("module '{name}' (needed by {needed_by}) is neither in the package nor built in")]
    Missing { name: String, needed_by: String },
    #[error("module dependencies form a cycle through '{0}'")]
    Cycle(String),
}

/// A module's name as the kernel knows it: file stem, dashes as underscores.
pub fn module_name(path: &Path) -> String {
    let file = path.file_name().and_then(|f| f.to_str()).unwrap_or_default();
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// Reads a module file, decompressing `.ko.xz` / `.ko.zst` / `.ko.gz`.
pub fn read_module(path: &Path) -> Result<Vec<u8>, KmodError> {
    let err = |source| KmodError::Read { path: path.to_path_buf(), source };
    let raw = std::fs::read(path).map_err(err)?;
    let name = path.to_string_lossy();
    let mut out = Vec::new();
    if name.ends_with(".xz") {
        xz2::read::XzDecoder::new(&raw[..]).read_to_end(&mut out).map_err(err)?;
    } else if name.ends_with(".zst") {
        zstd::stream::read::Decoder::new(&raw[..]).and_then(|mut d| d.read_to_end(&mut out)).map_err(err)?;
    } else if name.ends_with(".gz") {
        flate2::read::GzDecoder::new(&raw[..]).read_to_end(&mut out).map_err(err)?;
    } else {
        out = raw;
    }
    Ok(out)
}

fn rd<const N: usize>(b: &[u8], off: usize) -> Option<[u8; N]> {
    b.get(off..off + N)?.try_into().ok()
}

/// The `.modinfo` strings (`key=value`) of an ELF64 little-endian module.
pub fn modinfo(elf: &[u8]) -> Result<Vec<(String, String)>, &'static str> {
    if !elf.starts_with(b"\x7fELF") || elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        return Err("not ELF64 little-endian");
    }
    let shoff = u64::from_le_bytes(rd(elf, 0x28).ok_or("short header")?) as usize;
    let shentsize = u16::from_le_bytes(rd(elf, 0x3a).ok_or("short header")?) as usize;
    let shnum = u16::from_le_bytes(rd(elf, 0x3c).ok_or("short header")?) as usize;
    let shstrndx = u16::from_le_bytes(rd(elf, 0x3e).ok_or("short header")?) as usize;
    let section = |i: usize| -> Option<(usize, usize, usize)> {
        let h = shoff + i * shentsize;
        let name = u32::from_le_bytes(rd(elf, h)?) as usize;
        let off = u64::from_le_bytes(rd(elf, h + 0x18)?) as usize;
        let size = u64::from_le_bytes(rd(elf, h + 0x20)?) as usize;
        Some((name, off, size))
    };
    let (_, stroff, strsize) = section(shstrndx).ok_or("no section names")?;
    let strtab = elf.get(stroff..stroff + strsize).ok_or("section names out of range")?;
    for i in 0..shnum {
        let (name, off, size) = section(i).ok_or("section header out of range")?;
        let n = strtab.get(name..).and_then(|s| s.split(|b| *b == 0).next()).unwrap_or_default();
        if n == b".modinfo" {
            let data = elf.get(off..off + size).ok_or(".modinfo out of range")?;
            return Ok(data
                .split(|b| *b == 0)
                .filter_map(|kv| {
                    let s = std::str::from_utf8(kv).ok()?;
                    let (k, v) = s.split_once('=')?;
                    Some((k.to_string(), v.to_string()))
                })
                .collect());
        }
    }
    Err("no .modinfo section")
}

/// The modules of one kernel: name → file.
#[derive(Debug)]
pub struct ModuleTree {
    pub dir: PathBuf,
    pub files: BTreeMap<String, PathBuf>,
    pub builtin: HashSet<String>,
}

impl ModuleTree {
    /// Indexes `<root>/lib/modules/<release>/`.
    pub fn open(dir: &Path) -> Result<Self, KmodError> {
        let mut files = BTreeMap::new();
        let mut stack = vec![dir.join("kernel")];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.to_string_lossy().contains(".ko") {
                    files.insert(module_name(&p), p);
                }
            }
        }
        if files.is_empty() {
            return Err(KmodError::NoModules(dir.to_path_buf()));
        }
        let builtin = std::fs::read_to_string(dir.join("modules.builtin"))
            .unwrap_or_default()
            .lines()
            .map(|l| module_name(Path::new(l)))
            .collect();
        Ok(Self { dir: dir.to_path_buf(), files, builtin })
    }

    fn depends(&self, name: &str) -> Result<Vec<String>, KmodError> {
        let path = &self.files[name];
        let elf = read_module(path)?;
        let info = modinfo(&elf).map_err(|what| KmodError::BadElf { path: path.clone(), what })?;
        Ok(info
            .into_iter()
            .filter(|(k, _)| k == "depends")
            .flat_map(|(_, v)| {
                v.split(',').filter(|s| !s.is_empty()).map(|s| s.replace('-', "_")).collect::<Vec<_>>()
            })
            .collect())
    }

    /// `wanted` and everything they depend on, dependencies first. Built-in modules are
    /// skipped; so is a wanted module that is built in.
    pub fn resolve(&self, wanted: &[&str]) -> Result<Vec<PathBuf>, KmodError> {
        let mut order: Vec<String> = Vec::new();
        let mut visiting = HashSet::new();
        for w in wanted {
            self.visit(w, "the guest image", &mut order, &mut visiting)?;
        }
        Ok(order.iter().map(|n| self.files[n].clone()).collect())
    }

    fn visit(
        &self,
        name: &str,
        needed_by: &str,
        order: &mut Vec<String>,
        visiting: &mut HashSet<String>,
    ) -> Result<(), KmodError> {
        let name = name.replace('-', "_");
        if order.contains(&name) {
            return Ok(());
        }
        if !self.files.contains_key(&name) {
            if self.builtin.contains(&name) {
                return Ok(());
            }
            return Err(KmodError::Missing { name, needed_by: needed_by.into() });
        }
        if !visiting.insert(name.clone()) {
            return Err(KmodError::Cycle(name));
        }
        for dep in self.depends(&name)? {
            self.visit(&dep, &name, order, visiting)?;
        }
        visiting.remove(&name);
        order.push(name);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 object with a .modinfo section, enough for [`modinfo`].
    pub(crate) fn fake_module(info: &[&str]) -> Vec<u8> {
        let modinfo: Vec<u8> = info.iter().flat_map(|s| s.bytes().chain([0])).collect();
        let shstr = b"\0.modinfo\0.shstrtab\0".to_vec();
        let mut b = vec![0u8; 64];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        let modinfo_off = b.len();
        b.extend_from_slice(&modinfo);
        let shstr_off = b.len();
        b.extend_from_slice(&shstr);
        let shoff = b.len();
        let mut sh = |name: u32, off: usize, size: usize| {
            let mut h = vec![0u8; 64];
            h[0..4].copy_from_slice(&name.to_le_bytes());
            h[0x18..0x20].copy_from_slice(&(off as u64).to_le_bytes());
            h[0x20..0x28].copy_from_slice(&(size as u64).to_le_bytes());
            b.extend_from_slice(&h);
        };
        sh(0, 0, 0);
        sh(1, modinfo_off, modinfo.len());
        sh(10, shstr_off, shstr.len());
        b[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        b[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        b[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        b[0x3e..0x40].copy_from_slice(&2u16.to_le_bytes());
        b
    }

    #[test]
    fn reads_depends_from_modinfo() {
        let m = fake_module(&["license=GPL", "depends=virtio,virtio_ring", "name=virtio_pci"]);
        let info = modinfo(&m).expect("modinfo");
        assert!(info.contains(&("depends".into(), "virtio,virtio_ring".into())));
        assert!(modinfo(b"\x7fELF").is_err());
    }

    #[test]
    fn resolves_dependencies_first_skipping_builtins_and_decompressing() {
        use std::io::Write;
        let root = tempfile::tempdir().expect("tmp");
        let k = root.path().join("kernel/drivers");
        std::fs::create_dir_all(&k).expect("mkdir");
        std::fs::write(k.join("virtio_ring.ko"), fake_module(&["depends="])).expect("w");
        std::fs::write(k.join("virtio.ko"), fake_module(&["depends=virtio_ring"])).expect("w");
        std::fs::write(k.join("virtio_pci.ko"), fake_module(&["depends=virtio,virtio_ring,builtin_thing"]))
            .expect("w");
        let mut xz = xz2::write::XzEncoder::new(Vec::new(), 6);
        xz.write_all(&fake_module(&["depends=virtio,fuse"])).expect("xz");
        std::fs::write(k.join("virtiofs.ko.xz"), xz.finish().expect("xz")).expect("w");
        std::fs::write(k.join("fuse.ko"), fake_module(&["depends="])).expect("w");
        std::fs::write(root.path().join("modules.builtin"), "kernel/lib/builtin-thing.ko\n").expect("w");

        let tree = ModuleTree::open(root.path()).expect("open");
        let order: Vec<String> = tree
            .resolve(&["virtio_pci", "virtiofs"])
            .expect("resolve")
            .iter()
            .map(|p| module_name(p))
            .collect();
        assert_eq!(order, ["virtio_ring", "virtio", "virtio_pci", "fuse", "virtiofs"]);

        let e = tree.resolve(&["virtio_scsi"]).expect_err("missing");
        assert!(e.to_string().contains("virtio_scsi"));
    }
}

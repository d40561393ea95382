//! Job specs: what a guest runs. Written in TOML inside scenarios (or imported from a fio job
//! file, see [`crate::fio`]) and sent to the agent as JSON.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// A byte count written the fio way: `4096`, `4k`, `1M`, `2g` (powers of 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Size(pub u64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a size: write bytes or a number with k, m, g or t (powers of 1024), e.g. 4k")]
pub struct BadSize(pub String);

impl FromStr for Size {
    type Err = BadSize;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase();
        let t = t.strip_suffix("ib").or_else(|| t.strip_suffix('b')).unwrap_or(&t);
        let (num, mult) = match t.chars().last() {
            Some('k') => (&t[..t.len() - 1], 1u64 << 10),
            Some('m') => (&t[..t.len() - 1], 1 << 20),
            Some('g') => (&t[..t.len() - 1], 1 << 30),
            Some('t') => (&t[..t.len() - 1], 1 << 40),
            _ => (t, 1),
        };
        let n: u64 = num.trim().parse().map_err(|_| BadSize(s.into()))?;
        n.checked_mul(mult).map(Size).ok_or_else(|| BadSize(s.into()))
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (unit, shift) in [("g", 30), ("m", 20), ("k", 10)] {
            if n >= 1 << shift && n % (1 << shift) == 0 {
                return write!(f, "{}{unit}", n >> shift);
            }
        }
        write!(f, "{n}")
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Size(n)),
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// fio's `rw`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rw {
    Read,
    Write,
    Randread,
    Randwrite,
    Readwrite,
    Randrw,
}

impl Rw {
    pub fn random(self) -> bool {
        matches!(self, Rw::Randread | Rw::Randwrite | Rw::Randrw)
    }
    /// Share of reads, in percent, given fio's `rwmixread`.
    pub fn read_percent(self, rwmixread: u8) -> u8 {
        match self {
            Rw::Read | Rw::Randread => 100,
            Rw::Write | Rw::Randwrite => 0,
            Rw::Readwrite | Rw::Randrw => rwmixread.min(100),
        }
    }
}

impl FromStr for Rw {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(Rw::Read),
            "write" => Ok(Rw::Write),
            "randread" => Ok(Rw::Randread),
            "randwrite" => Ok(Rw::Randwrite),
            "readwrite" | "rw" => Ok(Rw::Readwrite),
            "randrw" => Ok(Rw::Randrw),
            _ => Err(format!("unknown rw '{s}': use read, write, randread, randwrite, readwrite or randrw")),
        }
    }
}

fn one() -> u32 {
    1
}
fn fifty() -> u8 {
    50
}
fn default_bs() -> Size {
    Size(4096)
}
fn default_size() -> Size {
    Size(16 << 20)
}

/// A fio-style job: `numjobs` jobs, each with `nrfiles` files of `size` bytes, doing `rw` in
/// blocks of `bs`, `iodepth` requests in flight per job (synchronous I/O, one thread per
/// request slot).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FioJob {
    #[serde(default = "FioJob::default_name")]
    pub name: String,
    pub rw: Rw,
    #[serde(default = "default_bs")]
    pub bs: Size,
    /// Per file.
    #[serde(default = "default_size")]
    pub size: Size,
    #[serde(default = "one")]
    pub nrfiles: u32,
    #[serde(default = "one")]
    pub numjobs: u32,
    #[serde(default = "one")]
    pub iodepth: u32,
    #[serde(default = "fifty")]
    pub rwmixread: u8,
    /// Seconds; absent: until stopped.
    #[serde(default)]
    pub runtime: Option<f64>,
    /// Seconds at the start whose ops are not recorded.
    #[serde(default)]
    pub ramp_time: f64,
    /// Bytes per second per job.
    #[serde(default)]
    pub rate: Option<Size>,
    /// Ops per second per job.
    #[serde(default)]
    pub rate_iops: Option<u64>,
    /// fsync after every N writes (0: never).
    #[serde(default)]
    pub fsync: u32,
    /// fdatasync after every N writes (0: never).
    #[serde(default)]
    pub fdatasync: u32,
    /// O_DIRECT.
    #[serde(default)]
    pub direct: bool,
    /// Directory of the job's files, relative to the file system's root.
    #[serde(default)]
    pub directory: Option<String>,
    /// Write verifiable blocks and keep their generations, so `verify` can check them.
    #[serde(default = "FioJob::default_verify")]
    pub verify: bool,
    /// Drop the files' pages from the page cache after laying them out (fio's default), so
    /// the first reads are not served from memory the layout just filled.
    #[serde(default = "FioJob::default_verify")]
    pub invalidate: bool,
}

impl FioJob {
    fn default_name() -> String {
        "job".into()
    }
    fn default_verify() -> bool {
        true
    }

    pub fn new(name: &str, rw: Rw) -> Self {
        Self {
            name: name.into(),
            rw,
            bs: default_bs(),
            size: default_size(),
            nrfiles: 1,
            numjobs: 1,
            iodepth: 1,
            rwmixread: 50,
            runtime: None,
            ramp_time: 0.0,
            rate: None,
            rate_iops: None,
            fsync: 0,
            fdatasync: 0,
            direct: false,
            directory: None,
            verify: true,
            invalidate: true,
        }
    }

    pub fn dir(&self) -> String {
        self.directory.clone().unwrap_or_else(|| format!("miglab/{}", self.name))
    }

    /// Checks what serde cannot: sizes that fit together.
    pub fn validate(&self) -> Result<(), String> {
        if self.bs.0 < crate::verify::HEADER_LEN as u64 && self.verify {
            return Err(format!(
                "bs {} is smaller than a verify header ({} bytes)",
                self.bs,
                crate::verify::HEADER_LEN
            ));
        }
        if self.bs.0 == 0 || self.size.0 < self.bs.0 {
            return Err(format!("size {} must hold at least one block of bs {}", self.size, self.bs));
        }
        if self.size.0 % self.bs.0 != 0 {
            return Err(format!("size {} is not a multiple of bs {}", self.size, self.bs));
        }
        if self.bs.0 > u32::MAX as u64 {
            return Err(format!("bs {} is too large", self.bs));
        }
        if self.numjobs == 0 || self.nrfiles == 0 || self.iodepth == 0 {
            return Err("numjobs, nrfiles and iodepth must be at least 1".into());
        }
        if self.rwmixread > 100 {
            return Err(format!("rwmixread {} is over 100", self.rwmixread));
        }
        Ok(())
    }
}

/// Metadata operations on a small tree of files, which keeps the MDS busy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataJob {
    #[serde(default = "MetadataJob::default_name")]
    pub name: String,
    /// Files each job keeps around.
    #[serde(default = "MetadataJob::default_files")]
    pub files: u32,
    #[serde(default = "one")]
    pub numjobs: u32,
    #[serde(default)]
    pub runtime: Option<f64>,
    /// Relative weights of the operations.
    #[serde(default = "MetadataJob::default_mix")]
    pub mix: MetadataMix,
    #[serde(default)]
    pub directory: Option<String>,
    #[serde(default)]
    pub rate_iops: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataMix {
    pub create: u32,
    pub stat: u32,
    pub rename: u32,
    pub unlink: u32,
}

impl MetadataJob {
    fn default_name() -> String {
        "metadata".into()
    }
    fn default_files() -> u32 {
        64
    }
    fn default_mix() -> MetadataMix {
        MetadataMix { create: 25, stat: 50, rename: 15, unlink: 10 }
    }
    pub fn dir(&self) -> String {
        self.directory.clone().unwrap_or_else(|| format!("miglab/{}", self.name))
    }
}

/// The seed's workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadLoopJob {
    /// Relative to the file system's root.
    #[serde(default = "ReadLoopJob::default_path")]
    pub path: String,
    /// What the file holds; the host writes it before the run.
    #[serde(default = "ReadLoopJob::default_content")]
    pub content: String,
    #[serde(default)]
    pub pause_us: u64,
    #[serde(default)]
    pub runtime: Option<f64>,
}

impl ReadLoopJob {
    fn default_path() -> String {
        "miglab/hello".into()
    }
    fn default_content() -> String {
        "Hello world\n".into()
    }
}

impl Default for ReadLoopJob {
    fn default() -> Self {
        Self { path: Self::default_path(), content: Self::default_content(), pause_us: 0, runtime: None }
    }
}

/// What a guest runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Workload {
    ReadLoop(ReadLoopJob),
    Fio(FioJob),
    Metadata(MetadataJob),
}

impl Workload {
    pub fn name(&self) -> &str {
        match self {
            Workload::ReadLoop(_) => "read-loop",
            Workload::Fio(j) => &j.name,
            Workload::Metadata(j) => &j.name,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        match self {
            Workload::Fio(j) => j.validate(),
            Workload::Metadata(j) if j.files == 0 || j.numjobs == 0 => {
                Err("files and numjobs must be at least 1".into())
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_the_fio_way() {
        for (s, n) in [
            ("4096", 4096),
            ("4k", 4096),
            ("4K", 4096),
            ("1m", 1 << 20),
            ("1MiB", 1 << 20),
            ("2g", 2 << 30),
            ("8kb", 8192),
        ] {
            assert_eq!(s.parse::<Size>(), Ok(Size(n)), "{s}");
        }
        assert!("4x".parse::<Size>().is_err());
        assert!("".parse::<Size>().is_err());
        assert_eq!(Size(1 << 20).to_string(), "1m");
        assert_eq!(Size(1000).to_string(), "1000");
    }

    #[test]
    fn jobs_read_from_toml_with_defaults() {
        let w: Workload = toml::from_str(
            r#"
            kind = "fio"
            name = "randread-4k"
            rw = "randread"
            bs = "4k"
            size = "64m"
            runtime = 30
            "#,
        )
        .expect("parses");
        let Workload::Fio(j) = &w else { panic!("fio") };
        assert_eq!((j.bs, j.size, j.numjobs, j.iodepth), (Size(4096), Size(64 << 20), 1, 1));
        assert_eq!(j.runtime, Some(30.0));
        assert_eq!(j.dir(), "miglab/randread-4k");
        assert!(w.validate().is_ok());
        let bad: Result<Workload, _> = toml::from_str("kind = \"fio\"\nrw = \"read\"\nbogus = 1\n");
        assert!(bad.expect_err("unknown field").to_string().contains("bogus"));
    }

    #[test]
    fn validation_catches_sizes_that_do_not_fit() {
        let mut j = FioJob::new("x", Rw::Write);
        j.bs = Size(4096);
        j.size = Size(6000);
        assert!(j.validate().expect_err("not a multiple").contains("multiple"));
        j.size = Size(1024);
        assert!(j.validate().is_err());
        j.bs = Size(16);
        j.size = Size(1024);
        assert!(j.validate().expect_err("too small").contains("verify header"));
    }

    #[test]
    fn mixes_follow_rw() {
        assert_eq!(Rw::Randread.read_percent(10), 100);
        assert_eq!(Rw::Write.read_percent(90), 0);
        assert_eq!(Rw::Randrw.read_percent(70), 70);
    }
}

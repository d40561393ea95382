//! Job specs: what a guest runs. Written in TOML inside scenarios (or imported from a fio job
//! file by the `fio` module) and sent to the agent as JSON.

pub use crate::pattern::{BadSize, BlockSizes, Distribution, RateProcess, Size};
use serde::{Deserialize, Serialize};
use std::str::FromStr;

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

/// fio's `ioengine`. The synchronous ones have one request in flight per job whatever `iodepth`
/// says, exactly as fio runs them; `io_uring` keeps up to `iodepth` in flight from one thread
/// per job, and `libaio` runs on the same io_uring engine with the same queue semantics
/// (submit in batches of `iodepth_batch_submit`, reap at least `iodepth_batch_complete_min`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IoEngine {
    /// pread/pwrite.
    #[default]
    Psync,
    /// read/write after lseek (miglab issues pread/pwrite: the same requests reach the file).
    Sync,
    /// preadv/pwritev of one vector (likewise).
    Pvsync,
    /// io_uring: up to `iodepth` requests in flight.
    #[serde(rename = "io_uring")]
    IoUring,
    /// Linux AIO's queue semantics, run on io_uring.
    Libaio,
}

impl IoEngine {
    pub fn as_str(self) -> &'static str {
        match self {
            IoEngine::Psync => "psync",
            IoEngine::Sync => "sync",
            IoEngine::Pvsync => "pvsync",
            IoEngine::IoUring => "io_uring",
            IoEngine::Libaio => "libaio",
        }
    }

    /// Whether requests are submitted asynchronously (several in flight per job).
    pub fn asynchronous(self) -> bool {
        matches!(self, IoEngine::IoUring | IoEngine::Libaio)
    }

    /// Requests in flight per job with this engine and `iodepth` (synchronous engines: 1).
    pub fn depth(self, iodepth: u32) -> u32 {
        if self.asynchronous() {
            iodepth.max(1)
        } else {
            1
        }
    }
}

/// A fio-style job, with fio's meanings: `numjobs` jobs, each with its own `nrfiles` files that
/// share the job's `size`, doing `rw` in blocks of `bs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FioJob {
    /// fio's `name`: the job's name in reports and figures (`p99_us.<job>.<op>`).
    #[serde(default = "FioJob::default_name")]
    pub name: String,
    /// fio's `rw`: read, write, randread, randwrite, readwrite, randrw (with `:N` skips).
    pub rw: Rw,
    /// fio's `bs`: the block size (the reads' with a separate write size).
    #[serde(default = "default_bs")]
    pub bs: Size,
    /// Per job, split evenly across its `nrfiles` files (each rounded down to whole blocks).
    #[serde(default = "default_size")]
    pub size: Size,
    /// fio's `nrfiles`: files per job, sharing its `size`.
    #[serde(default = "one")]
    pub nrfiles: u32,
    /// fio's `numjobs`: clones of the job, each a thread in the guest.
    #[serde(default = "one")]
    pub numjobs: u32,
    /// fio's `ioengine`: psync, sync, pvsync, io_uring, libaio (run on io_uring with libaio's queue semantics).
    #[serde(default)]
    pub ioengine: IoEngine,
    /// Requests in flight per job; a synchronous engine has one, as in fio.
    #[serde(default = "one")]
    pub iodepth: u32,
    /// An asynchronous engine submits this many requests at once (fio's default 1).
    #[serde(default = "one")]
    pub iodepth_batch_submit: u32,
    /// ... and waits for at least this many completions when it waits (fio's default 1) ...
    #[serde(default = "one")]
    pub iodepth_batch_complete_min: u32,
    /// ... and reaps at most this many at once (0: as many as `iodepth_batch_complete_min`,
    /// fio's default).
    #[serde(default)]
    pub iodepth_batch_complete_max: u32,
    /// fio's `rwmixread`: percent of reads in a mixed job.
    #[serde(default = "fifty")]
    pub rwmixread: u8,
    /// Seconds after the ramp; absent: until stopped (or one pass, without `time_based`).
    #[serde(default)]
    pub runtime: Option<f64>,
    /// Loop over the data until `runtime` (or until stopped). Without it a job ends after one
    /// pass over its `size`, as fio's do. Scenario jobs default to it: a workload must outlast
    /// its migrations.
    #[serde(default = "yes")]
    pub time_based: bool,
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
    /// fsync every file when the job ends.
    #[serde(default)]
    pub end_fsync: bool,
    /// O_DIRECT.
    #[serde(default)]
    pub direct: bool,
    /// Directory of the job's files, relative to the file system's root.
    #[serde(default)]
    pub directory: Option<String>,
    /// Write verifiable blocks and keep their generations, so `verify` can check them.
    #[serde(default = "yes")]
    pub verify: bool,
    /// Drop the files' pages from the page cache after laying them out (fio's default), so
    /// the first reads are not served from memory the layout just filled.
    #[serde(default = "yes")]
    pub invalidate: bool,
    /// What the job is for, as the job file says (shown in the report).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// fio's `filename`: `:`-separated names in the job's directory, shared by every clone
    /// (and every job that names them), as in fio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// fio's `filename_format` (`$jobname`, `$jobnum`, `$filenum`); default
    /// `$jobname.$jobnum.$filenum`, fio's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename_format: Option<String>,
    /// Each file's size (a range: drawn per file); then `size` is what one pass does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesize: Option<(Size, Size)>,
    /// Bytes one pass does (fio's `io_size`, or `size` when `filesize` gives the files').
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_size: Option<Size>,
    /// Block sizes of reads and of writes when they are not one `bs` (`bs=4k,8k`, `bsrange`,
    /// `bssplit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bs_read: Option<BlockSizes>,
    /// The writes' block sizes when they differ from the reads' (`bs=4k,8k`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bs_write: Option<BlockSizes>,
    /// Random offsets are aligned to this (default: the smallest block size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blockalign: Option<Size>,
    /// Random offsets may repeat within a pass (no random map).
    #[serde(default)]
    pub norandommap: bool,
    /// fio's `random_distribution`: random, zipf:θ, pareto:h, normal:σ, zoned.
    #[serde(default)]
    pub random_distribution: Distribution,
    /// Percent of a random job's ops that are random (the rest sequential).
    #[serde(default = "hundred")]
    pub percentage_random: u8,
    /// `rw=read:-8k`: bytes added to the offset after each sequential op (may be negative).
    #[serde(default)]
    pub rw_skip: i64,
    /// Where the job's region starts in each file.
    #[serde(default)]
    pub offset: Size,
    /// Passes over the data without `time_based`.
    #[serde(default = "one")]
    pub loops: u32,
    /// Seconds to wait before starting (after the jobs it waits for).
    #[serde(default)]
    pub startdelay: f64,
    /// Microseconds to sleep after every `thinktime_blocks` ops.
    #[serde(default)]
    pub thinktime_us: u64,
    /// fio's `thinktime_blocks`: blocks between two think times.
    #[serde(default = "one")]
    pub thinktime_blocks: u32,
    /// The least bytes per second the job must keep up (fio's `rate_min`): below it over a
    /// second, the job says so and ends, as fio's does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_min: Option<Size>,
    /// fio's `rate_process`: linear or poisson.
    #[serde(default)]
    pub rate_process: RateProcess,
    /// O_SYNC writes (fio's `sync=1`).
    #[serde(default)]
    pub sync: bool,
    /// fsync each file when the job closes it.
    #[serde(default)]
    pub fsync_on_close: bool,
    /// fio's `flow`: this job's weight in token-based flow control against the others with
    /// the same `flow_id`, and how long it sleeps when ahead.
    #[serde(default)]
    pub flow: i64,
    /// fio's `flow_id`: jobs with the same id share one flow.
    #[serde(default)]
    pub flow_id: u32,
    /// fio's `flow_sleep`, µs.
    #[serde(default = "flow_sleep")]
    pub flow_sleep_us: u64,
    /// Start after every job before this one has ended (implies `new_group`).
    #[serde(default)]
    pub stonewall: bool,
    /// Start after the job of this name has ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_for: Option<String>,
    /// Start a new reporting group.
    #[serde(default)]
    pub new_group: bool,
}

fn hundred() -> u8 {
    100
}

fn flow_sleep() -> u64 {
    0
}

fn yes() -> bool {
    true
}

/// fio's `:`-separated file names, where `\:` is a colon inside a name.
pub fn split_names(v: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = v.trim().chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&':') => {
                out.last_mut().into_iter().for_each(|s| s.push(':'));
                chars.next();
            }
            ':' => out.push(String::new()),
            c => out.last_mut().into_iter().for_each(|s| s.push(c)),
        }
    }
    out.into_iter().filter(|s| !s.is_empty()).collect()
}

/// Checks that `p` names something inside the shared file system: relative, no `..`.
pub fn check_relative(what: &str, p: &str) -> Result<(), String> {
    let path = std::path::Path::new(p);
    if p.is_empty() || path.is_absolute() {
        return Err(format!(
            "{what} '{p}' must be a path relative to the CephFS root (e.g. miglab/data): \
             miglab only writes inside the shared file system"
        ));
    }
    if path.components().any(|c| !matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir))
    {
        return Err(format!("{what} '{p}' must not contain '..': it would leave the CephFS mount"));
    }
    Ok(())
}

/// Block sizes fit the engine: more than 0, at most 4 GiB, ranges in order, splits with weight.
fn check_sizes(what: &str, s: &BlockSizes) -> Result<(), String> {
    if s.sizes().is_empty() || s.min() == 0 || s.max() > u32::MAX as u64 {
        return Err(format!("{what} {} must be between 1 byte and 4 GiB", s.describe()));
    }
    match s {
        BlockSizes::Range { min, max } if min.0 > max.0 => {
            Err(format!("{what} range {min}-{max}: the smaller size comes first"))
        }
        BlockSizes::Split(v) if v.iter().map(|(_, w)| u64::from(*w)).sum::<u64>() == 0 => {
            Err(format!("{what} split {}: no size has a weight", s.describe()))
        }
        _ => Ok(()),
    }
}

fn check_seconds(what: &str, v: f64) -> Result<(), String> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(format!("{what} = {v} must be a finite number of seconds, 0 or more"))
    }
}

impl FioJob {
    fn default_name() -> String {
        "job".into()
    }

    pub fn new(name: &str, rw: Rw) -> Self {
        Self {
            name: name.into(),
            rw,
            bs: default_bs(),
            size: default_size(),
            nrfiles: 1,
            numjobs: 1,
            ioengine: IoEngine::Psync,
            iodepth: 1,
            iodepth_batch_submit: 1,
            iodepth_batch_complete_min: 1,
            iodepth_batch_complete_max: 0,
            rwmixread: 50,
            runtime: None,
            time_based: true,
            ramp_time: 0.0,
            rate: None,
            rate_iops: None,
            fsync: 0,
            fdatasync: 0,
            end_fsync: false,
            direct: false,
            directory: None,
            verify: true,
            invalidate: true,
            description: String::new(),
            filename: None,
            filename_format: None,
            filesize: None,
            io_size: None,
            bs_read: None,
            bs_write: None,
            blockalign: None,
            norandommap: false,
            random_distribution: Distribution::Random,
            percentage_random: 100,
            rw_skip: 0,
            offset: Size(0),
            loops: 1,
            startdelay: 0.0,
            thinktime_us: 0,
            thinktime_blocks: 1,
            rate_min: None,
            rate_process: RateProcess::Linear,
            sync: false,
            fsync_on_close: false,
            flow: 0,
            flow_id: 0,
            flow_sleep_us: 0,
            stonewall: false,
            wait_for: None,
            new_group: false,
        }
    }

    /// The job's directory below the CephFS root: `directory`, else `miglab/<name>`, else for
    /// files named with `filename` `miglab` — fio takes them from its working directory, so
    /// every job naming a file shares it.
    pub fn dir(&self) -> String {
        match (&self.directory, &self.filename) {
            (Some(d), _) => d.clone(),
            (None, Some(_)) => "miglab".into(),
            (None, None) => format!("miglab/{}", self.name),
        }
    }

    /// The block sizes as fio would write them (`4k`, `4k,8k`, `4k/10:64k/90`).
    pub fn describe_bs(&self) -> String {
        let (r, w) = (self.sizes(true), self.sizes(false));
        if r == w {
            r.describe()
        } else {
            format!("{},{}", r.describe(), w.describe())
        }
    }

    /// Block sizes of reads (`read`) or writes.
    pub fn sizes(&self, read: bool) -> BlockSizes {
        let s = if read { &self.bs_read } else { &self.bs_write };
        s.clone().unwrap_or(BlockSizes::Fixed(self.bs))
    }

    /// The directions the job does: (reads, writes).
    pub fn directions(&self) -> (bool, bool) {
        let r = self.rw.read_percent(self.rwmixread);
        (r > 0, r < 100)
    }

    /// Every block size the job issues.
    fn all_sizes(&self) -> Vec<u64> {
        let (r, w) = self.directions();
        let mut v = Vec::new();
        if r {
            v.extend(self.sizes(true).sizes());
        }
        if w {
            v.extend(self.sizes(false).sizes());
        }
        v
    }

    /// The smallest and largest block the job issues.
    pub fn min_bs(&self) -> u64 {
        self.all_sizes().into_iter().min().unwrap_or(self.bs.0)
    }
    pub fn max_bs(&self) -> u64 {
        self.all_sizes().into_iter().max().unwrap_or(self.bs.0)
    }

    /// The verification unit: every op covers whole units at unit-aligned offsets, and each
    /// unit carries its own header and generation. With one `bs` it is the block.
    pub fn unit(&self) -> u64 {
        let mut u = self.all_sizes().into_iter().fold(0, crate::pattern::gcd);
        if let Some(a) = self.blockalign {
            u = crate::pattern::gcd(u, a.0);
        }
        if !self.rw.random() || self.rw_skip != 0 {
            u = crate::pattern::gcd(u, self.rw_skip.unsigned_abs());
        }
        u = crate::pattern::gcd(u, self.offset.0);
        u.max(1)
    }

    /// How far apart random offsets are (fio's `blockalign`, default the smallest block).
    pub fn align(&self) -> u64 {
        self.blockalign.map(|a| a.0).unwrap_or_else(|| self.min_bs()).max(1)
    }

    /// How many files each clone uses.
    pub fn files_per_clone(&self) -> u32 {
        match &self.filename {
            Some(f) => split_names(f).len() as u32,
            None => self.nrfiles,
        }
    }

    /// Clone `clone`'s file names, relative to the job's directory: fio's `filename` (shared
    /// by every clone) or its `filename_format`.
    pub fn file_names(&self, clone: u32) -> Vec<String> {
        if let Some(f) = &self.filename {
            return split_names(f);
        }
        let format = self.filename_format.as_deref().unwrap_or("$jobname.$jobnum.$filenum");
        (0..self.nrfiles)
            .map(|f| {
                format
                    .replace("$jobname", &self.name)
                    .replace("$jobnum", &clone.to_string())
                    .replace("$filenum", &f.to_string())
            })
            .collect()
    }

    /// Bytes of each file the job wants (from `filesize`, or its `size` shared by its files),
    /// beyond its `offset`, in whole units; a range is drawn per file from `r`.
    pub fn file_size_with(&self, r: u64) -> u64 {
        let unit = self.unit();
        let per = match self.filesize {
            Some((lo, hi)) if hi.0 > lo.0 => lo.0 + r % (hi.0 - lo.0 + 1),
            Some((lo, _)) => lo.0,
            None => self.size.0 / u64::from(self.files_per_clone().max(1)),
        };
        per - per % unit
    }

    /// Bytes of each file (the smallest, for a `filesize` range).
    pub fn file_size(&self) -> u64 {
        self.file_size_with(0)
    }

    /// Whole blocks of `bs` in each file (for a job of one block size).
    pub fn blocks_per_file(&self) -> u64 {
        self.file_size() / self.bs.0.max(1)
    }

    /// Bytes the engine keeps for this job: per unit two generations and a lock word, and per
    /// clone a random map (a bit per aligned offset of each file) when it uses one.
    pub fn tracked_bytes(&self) -> u64 {
        let map = if self.rw.random() && !self.norandommap && self.random_distribution.uniform() {
            (self.file_size() / self.align()).div_ceil(8)
                * u64::from(self.files_per_clone())
                * u64::from(self.numjobs)
        } else {
            0
        };
        self.total_blocks().saturating_mul(12).saturating_add(map)
    }

    /// Verification units of every file of every clone, for the memory the engine needs.
    pub fn total_blocks(&self) -> u64 {
        let hi = self.filesize.map(|(_, hi)| hi.0).unwrap_or_else(|| self.file_size());
        let files = u64::from(self.files_per_clone())
            * if self.filename.is_some() { 1 } else { u64::from(self.numjobs) };
        (hi + self.offset.0) / self.unit() * files
    }

    /// Bytes one pass does (per clone).
    pub fn pass_bytes(&self) -> u64 {
        let files = u64::from(self.files_per_clone().max(1));
        self.io_size.map(|s| s.0).unwrap_or_else(|| self.file_size() * files)
    }

    /// Requests in flight per job.
    pub fn depth(&self) -> u32 {
        self.ioengine.depth(self.iodepth)
    }

    /// The paced rate in ops/s (`rate_iops`, or `rate` in bytes/s over `bs`), if any.
    pub fn ops_rate(&self) -> Option<f64> {
        match (self.rate_iops, self.rate) {
            (Some(iops), _) => Some(iops as f64),
            (None, Some(r)) => Some(r.0 as f64 / self.bs.0 as f64),
            _ => None,
        }
    }

    /// Whether the `writes`-th write is followed by an fsync (`fsync`) or fdatasync.
    pub fn sync_due(&self, writes: u64) -> bool {
        let every = if self.fsync > 0 { self.fsync } else { self.fdatasync } as u64;
        every > 0 && writes % every == 0
    }

    /// Checks what serde cannot: sizes that fit together, times that are times, paths that
    /// stay inside the file system.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() || self.name.contains(['/', '\0']) || self.name.starts_with('.') {
            return Err(format!(
                "job name '{}' must not be empty, start with '.' or contain '/' (it names the job's files)",
                self.name
            ));
        }
        if self.numjobs == 0 || self.nrfiles == 0 || self.iodepth == 0 {
            return Err("numjobs, nrfiles and iodepth must be at least 1".into());
        }
        if self.iodepth > 1024 {
            return Err(format!("iodepth {}: at most 1024", self.iodepth));
        }
        if self.iodepth_batch_submit == 0 || self.iodepth_batch_complete_min == 0 {
            return Err("iodepth_batch_submit and iodepth_batch_complete_min must be at least 1".into());
        }
        let max = self.iodepth_batch_complete_max;
        if max != 0 && (max < self.iodepth_batch_complete_min || max > self.iodepth) {
            return Err(format!(
                "iodepth_batch_complete_max ({max}) must lie between iodepth_batch_complete_min ({}) and iodepth ({})",
                self.iodepth_batch_complete_min, self.iodepth
            ));
        }
        if self.iodepth_batch_submit > self.iodepth || self.iodepth_batch_complete_min > self.iodepth {
            return Err(format!(
                "iodepth_batch_submit ({}) and iodepth_batch_complete_min ({}) cannot exceed iodepth ({})",
                self.iodepth_batch_submit, self.iodepth_batch_complete_min, self.iodepth
            ));
        }
        if self.numjobs > 256 || self.nrfiles > 4096 {
            return Err(format!(
                "numjobs {} and nrfiles {} are limited to 256 and 4096",
                self.numjobs, self.nrfiles
            ));
        }
        for (what, sizes) in [("bs", self.sizes(true)), ("bs (writes)", self.sizes(false))] {
            check_sizes(what, &sizes)?;
        }
        if self.verify && self.unit() < crate::verify::HEADER_LEN as u64 {
            return Err(format!(
                "the block sizes {} and offsets leave verification units of {} bytes, smaller than a \
                 verify header ({} bytes): use larger blocks or verify = false",
                self.describe_bs(),
                self.unit(),
                crate::verify::HEADER_LEN
            ));
        }
        if self.file_size() < self.min_bs() {
            return Err(format!(
                "size {} split across {} files leaves less than one block of bs {} per file",
                self.filesize.map(|f| f.0).unwrap_or(self.size),
                self.files_per_clone(),
                self.describe_bs()
            ));
        }
        if let Some((lo, hi)) = self.filesize {
            if lo.0 > hi.0 {
                return Err(format!("filesize {lo}-{hi}: the smaller size comes first"));
            }
        }
        self.random_distribution.validate()?;
        if self.percentage_random > 100 {
            return Err(format!("percentage_random {} is over 100", self.percentage_random));
        }
        if self.loops == 0 || self.thinktime_blocks == 0 {
            return Err("loops and thinktime_blocks must be at least 1".into());
        }
        check_seconds("startdelay", self.startdelay)?;
        if self.rate_min.is_some_and(|r| r.0 == 0) {
            return Err("rate_min must be more than 0 (leave it out for none)".into());
        }
        for clone in [0, self.numjobs.saturating_sub(1)] {
            for name in self.file_names(clone) {
                check_relative("filename", &name)?;
            }
        }
        if self.files_per_clone() == 0 {
            return Err("filename names no file".into());
        }
        if self.rwmixread > 100 {
            return Err(format!("rwmixread {} is over 100", self.rwmixread));
        }
        if let Some(r) = self.runtime {
            check_seconds("runtime", r)?;
        }
        check_seconds("ramp_time", self.ramp_time)?;
        if self.rate.is_some_and(|r| r.0 == 0) || self.rate_iops == Some(0) {
            return Err("rate and rate_iops must be more than 0 (leave them out for no limit)".into());
        }
        if self.fsync > 0 && self.fdatasync > 0 {
            return Err("give fsync or fdatasync, not both".into());
        }
        if let Some(d) = &self.directory {
            check_relative("directory", d)?;
        }
        Ok(())
    }
}

mod file;
mod metadata;
mod readloop;
mod state;
pub use file::{FioFile, SharedFile, MAX_CLONES};
pub use metadata::{MetadataJob, MetadataMix};
pub use readloop::ReadLoopJob;
pub use state::StateJob;

/// What a guest runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
#[allow(clippy::large_enum_variant)] // one per run, never in a hot path
pub enum Workload {
    ReadLoop(ReadLoopJob),
    Fio(FioJob),
    Metadata(MetadataJob),
    /// A fio job file, all its jobs.
    FioFile(FioFile),
    /// State held in virtiofsd across the migration.
    State(StateJob),
}

impl Workload {
    pub fn name(&self) -> &str {
        match self {
            Workload::ReadLoop(_) => "read-loop",
            Workload::Fio(j) => &j.name,
            Workload::Metadata(j) => &j.name,
            Workload::FioFile(f) => &f.name,
            Workload::State(j) => &j.name,
        }
    }

    /// The fio jobs this workload runs (none for the others).
    pub fn fio_jobs(&self) -> Vec<FioJob> {
        match self {
            Workload::Fio(j) => vec![j.clone()],
            Workload::FioFile(f) => f.jobs.clone(),
            Workload::State(j) => vec![j.io_job()],
            _ => Vec::new(),
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        match self {
            Workload::Fio(j) => j.validate(),
            Workload::FioFile(f) => f.validate(),
            Workload::State(j) => j.validate(),
            Workload::Metadata(j) => {
                if j.files == 0 || j.numjobs == 0 {
                    return Err("files and numjobs must be at least 1".into());
                }
                if j.files > 1_000_000 || j.numjobs > 256 {
                    return Err("files and numjobs are limited to 1000000 and 256".into());
                }
                if let Some(r) = j.runtime {
                    check_seconds("runtime", r)?;
                }
                if j.rate_iops == Some(0) {
                    return Err("rate_iops must be more than 0 (leave it out for no limit)".into());
                }
                if j.mix.create == 0 {
                    return Err("mix.create must be more than 0: nothing else can run without files".into());
                }
                match &j.directory {
                    Some(d) => check_relative("directory", d),
                    None => Ok(()),
                }
            }
            Workload::ReadLoop(j) => {
                if let Some(r) = j.runtime {
                    check_seconds("runtime", r)?;
                }
                check_relative("path", &j.path)
            }
        }
    }

    /// The same workload for guest `i` of several (from 1): its files in a directory of its own
    /// (`g<i>` below where they would be), so that guests on one CephFS never share a file.
    pub fn for_guest(&self, i: u32) -> Workload {
        let own = |dir: String| format!("{dir}/g{i}");
        let fio = |j: &FioJob| FioJob { directory: Some(own(j.dir())), ..j.clone() };
        match self {
            Workload::Fio(j) => Workload::Fio(fio(j)),
            Workload::FioFile(f) => {
                Workload::FioFile(FioFile { jobs: f.jobs.iter().map(fio).collect(), ..f.clone() })
            }
            Workload::Metadata(j) => {
                Workload::Metadata(MetadataJob { directory: Some(own(j.dir())), ..j.clone() })
            }
            Workload::State(j) => Workload::State(StateJob { directory: Some(own(j.base())), ..j.clone() }),
            Workload::ReadLoop(j) => {
                let p = std::path::Path::new(&j.path);
                let parent = p.parent().map(|d| d.display().to_string()).unwrap_or_default();
                let file = p.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
                let dir = if parent.is_empty() { format!("g{i}") } else { own(parent) };
                Workload::ReadLoop(ReadLoopJob { path: format!("{dir}/{file}"), ..j.clone() })
            }
        }
    }

    /// Memory the engine keeps per tracked item (a block's generations, a live file's name),
    /// for checking that a workload fits the guest.
    pub fn tracked_bytes(&self) -> u64 {
        match self {
            // Two u32 generations and a lock word per unit (acknowledged, errored, in use).
            Workload::Fio(j) => j.tracked_bytes(),
            Workload::FioFile(f) => f.jobs.iter().map(FioJob::tracked_bytes).sum(),
            // A name per live file, at most twice the target population.
            Workload::Metadata(j) => u64::from(j.files) * 2 * 64 * u64::from(j.numjobs),
            Workload::ReadLoop(j) => j.content.len() as u64,
            // A descriptor and an index per held inode, and the I/O job's units.
            Workload::State(j) => u64::from(j.files) * 16 + j.io_job().tracked_bytes(),
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
        assert_eq!(j.file_size(), 4096, "rounded down to whole blocks, as fio does");
        assert!(j.validate().is_ok());
        j.size = Size(1024);
        assert!(j.validate().expect_err("no block").contains("less than one block"));
        j.bs = Size(16);
        j.size = Size(1024);
        assert!(j.validate().expect_err("too small").contains("verify header"));
        j.bs = Size(4096);
        j.size = Size(1 << 20);
        j.runtime = Some(-1.0);
        assert!(j.validate().expect_err("negative").contains("runtime"));
        j.runtime = Some(f64::NAN);
        assert!(j.validate().is_err());
    }

    #[test]
    fn size_is_per_job_and_shared_by_its_files() {
        let mut j = FioJob::new("x", Rw::Randread);
        j.size = Size(64 << 20);
        j.nrfiles = 4;
        j.numjobs = 2;
        assert_eq!(j.file_size(), 16 << 20);
        assert_eq!(j.total_blocks(), 2 * 64 * 256);
        assert_eq!(j.depth(), 1);
        j.iodepth = 32;
        assert_eq!(j.depth(), 1, "a synchronous engine has one request in flight");
    }

    #[test]
    fn each_guest_gets_files_of_its_own() {
        let mut shared = FioJob::new("s", Rw::Randwrite);
        shared.filename = Some("one".into());
        let kinds = [
            Workload::ReadLoop(ReadLoopJob::default()),
            Workload::ReadLoop(ReadLoopJob { path: "top".into(), ..ReadLoopJob::default() }),
            Workload::Fio(FioJob::new("w", Rw::Randwrite)),
            Workload::Fio(shared),
            Workload::Metadata(
                serde_json::from_str(r#"{"mix":{"create":1,"stat":1,"rename":0,"unlink":1}}"#)
                    .expect("metadata"),
            ),
            Workload::State(serde_json::from_str(r#"{"files":300}"#).expect("state")),
        ];
        for w in kinds {
            let (a, b) = (w.for_guest(1), w.for_guest(2));
            for g in [&a, &b] {
                assert_eq!(g.validate(), Ok(()), "{g:?}");
            }
            let place = |w: &Workload| match w {
                Workload::ReadLoop(j) => j.path.clone(),
                Workload::Metadata(j) => j.dir(),
                Workload::State(j) => format!("{} {}", j.dir(), j.io_job().dir()),
                w => w.fio_jobs().iter().map(FioJob::dir).collect::<Vec<_>>().join(" "),
            };
            assert_ne!(place(&a), place(&b), "{w:?}");
            assert!(place(&b).contains("g2") && !place(&a).contains("g2"), "{}", place(&b));
        }
    }

    #[test]
    fn paths_stay_inside_the_file_system() {
        for bad in ["/etc", "../x", "a/../../b", ""] {
            let mut j = FioJob::new("x", Rw::Read);
            j.directory = Some(bad.into());
            assert!(j.validate().is_err(), "{bad}");
            let r = Workload::ReadLoop(ReadLoopJob { path: bad.into(), ..ReadLoopJob::default() });
            assert!(r.validate().is_err(), "{bad}");
        }
        let mut j = FioJob::new("x", Rw::Read);
        j.directory = Some("miglab/./data".into());
        assert!(j.validate().is_ok());
        let mut j = FioJob::new("../x", Rw::Read);
        assert!(j.validate().is_err(), "a job name is part of its files' paths");
        j.name = "ok-name".into();
        assert!(j.validate().is_ok());
    }

    #[test]
    fn mixes_follow_rw() {
        assert_eq!(Rw::Randread.read_percent(10), 100);
        assert_eq!(Rw::Write.read_percent(90), 0);
        assert_eq!(Rw::Randrw.read_percent(70), 70);
    }

    /// Two jobs on one file with bs 4000 and 4k share units of 32 bytes: the agent's layout
    /// panicked on a unit smaller than its header and the run failed at the layout deadline.
    /// The file is refused up front, naming both jobs and the file; without verify it runs.
    #[test]
    fn jobs_sharing_a_file_with_too_small_a_common_unit_are_refused() {
        let job = |name: &str, bs: u64, verify: bool| {
            let mut j = FioJob::new(name, Rw::Randwrite);
            (j.bs, j.size, j.filename, j.verify) = (Size(bs), Size(1 << 20), Some("shared".into()), verify);
            j
        };
        let f = FioFile { name: "f".into(), jobs: vec![job("a", 4000, true), job("b", 4096, true)] };
        let files = f.files();
        assert_eq!(files.len(), 1);
        assert_eq!((files[0].path.as_str(), files[0].unit, files[0].verified), ("miglab/shared", 32, true));
        let e = f.validate().expect_err("a 32-byte unit");
        assert!(
            e.contains("'a' (bs 4000) and 'b' (bs 4k)")
                && e.contains("miglab/shared")
                && e.contains("32 bytes"),
            "{e}"
        );
        let f = FioFile { name: "f".into(), jobs: vec![job("a", 4000, false), job("b", 4096, true)] };
        assert!(!f.files()[0].verified);
        assert_eq!(f.validate(), Ok(()));
    }
}

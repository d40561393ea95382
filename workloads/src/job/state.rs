//! `state`: a tree of files held in virtiofsd across the migration (looked up and held, some
//! open), with a little verified I/O beside them.

use super::*;

/// State held in virtiofsd: a tree of `files` files, every one looked up and held (an `O_PATH`
/// descriptor in the guest pins its inode, so virtiofsd keeps one for it), `open` of them open
/// (a handle in virtiofsd each), and light verified I/O (`io`, an fio job on files of its own,
/// open across the migration). virtiofsd moves all of it inside the switch-over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateJob {
    /// The job's name in reports.
    #[serde(default = "StateJob::default_name")]
    pub name: String,
    /// The tree's files (N).
    pub files: u32,
    /// Subdirectories per directory; the files are spread evenly over the leaves.
    #[serde(default = "StateJob::default_fanout")]
    pub fanout: u32,
    /// Levels of directories below the tree's root (0: every file in the root).
    #[serde(default = "StateJob::default_depth")]
    pub depth: u32,
    /// Of the tree's files, how many are held open (K), spread evenly over the tree.
    #[serde(default = "StateJob::default_open")]
    pub open: u32,
    /// The verified I/O across the migration (default: 4 KiB random reads and writes, O_DIRECT,
    /// at 100 ops/s on 1 MiB).
    #[serde(default = "StateJob::default_io")]
    pub io: FioJob,
    /// Keep a complete tree of the same shape from an earlier run (its files hold no run's
    /// data), instead of creating it again.
    #[serde(default = "yes")]
    pub reuse: bool,
    /// Where in the share its tree lives (default: the run's own directory).
    #[serde(default)]
    pub directory: Option<String>,
    /// How many of the held inodes the verify pass reopens and checks (all by default).
    #[serde(default)]
    pub check: Option<u32>,
    /// Before the first migration, the destination's CephFS client looks every file of the
    /// tree up (a warm destination); without, it has not seen this tree (with `reuse = false`
    /// it never has: a cold one).
    #[serde(default)]
    pub warm_destination: bool,
}

impl StateJob {
    /// The most inodes a guest may hold: the guest's descriptor table, and far more than a
    /// virtiofsd holding one descriptor per inode can keep under common limits.
    pub const MAX_FILES: u32 = 1_000_000;

    fn default_name() -> String {
        "state".into()
    }
    fn default_fanout() -> u32 {
        16
    }
    fn default_depth() -> u32 {
        2
    }
    fn default_open() -> u32 {
        16
    }
    fn default_io() -> FioJob {
        // O_DIRECT to the OSDs: a client's cache would hide what the file really holds.
        FioJob {
            size: Size(1 << 20),
            rate_iops: Some(100),
            direct: true,
            ..FioJob::new("state-io", Rw::Randrw)
        }
    }

    /// The tree's directory below the CephFS root; its shape is in the name, so trees of
    /// different shapes never meet.
    pub fn dir(&self) -> String {
        format!("{}/tree-{}-f{}-d{}", self.base(), self.files, self.fanout, self.depth)
    }

    /// Where the job's tree and I/O files go: `directory`, else `miglab/<name>`.
    pub fn base(&self) -> String {
        self.directory.clone().unwrap_or_else(|| format!("miglab/{}", self.name))
    }

    /// The verified I/O job, its files beside the tree.
    pub fn io_job(&self) -> FioJob {
        let mut j = self.io.clone();
        if j.directory.is_none() && j.filename.is_none() {
            j.directory = Some(format!("{}/io", self.base()));
        }
        j
    }

    /// The path of file `i` below the tree's directory: `d<a>/d<b>/.../f<i>`, the files dealt
    /// round-robin over the leaves.
    pub fn file_path(&self, i: u32) -> String {
        let leaves = self.fanout.max(1).saturating_pow(self.depth).max(1);
        let mut leaf = i % leaves;
        let mut parts = Vec::with_capacity(self.depth as usize + 1);
        for _ in 0..self.depth {
            parts.push(format!("d{}", leaf % self.fanout));
            leaf /= self.fanout;
        }
        parts.push(format!("f{i}"));
        parts.join("/")
    }

    /// Which files are held open: `open` of them, evenly spaced.
    pub fn opened(&self) -> impl Iterator<Item = u32> + '_ {
        let k = self.open.min(self.files);
        (0..k).map(move |n| (u64::from(n) * u64::from(self.files) / u64::from(k.max(1))) as u32)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.files == 0 || self.files > Self::MAX_FILES {
            return Err(format!("files = {} must be 1 to {}", self.files, Self::MAX_FILES));
        }
        if self.fanout == 0 || self.fanout > 4096 {
            return Err(format!("fanout = {} must be 1 to 4096", self.fanout));
        }
        if self.depth > 8 {
            return Err(format!("depth = {} must be at most 8", self.depth));
        }
        if self.fanout.checked_pow(self.depth).is_none_or(|l| l > self.files.max(1) * 16) {
            return Err(format!(
                "fanout {} to the depth {} makes more directories than the tree has files ({}): lower one",
                self.fanout, self.depth, self.files
            ));
        }
        if self.open > self.files {
            return Err(format!("open = {} is more than files = {}", self.open, self.files));
        }
        if let Some(d) = &self.directory {
            check_relative("directory", d)?;
        }
        self.io_job().validate().map_err(|e| format!("io: {e}"))
    }
}

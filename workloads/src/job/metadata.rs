//! `metadata`: create, stat, rename and unlink on a small tree of files.

use super::*;

/// Metadata operations on a small tree of files, which keeps the MDS busy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataJob {
    /// The job's name in reports.
    #[serde(default = "MetadataJob::default_name")]
    pub name: String,
    /// Files each job keeps around.
    #[serde(default = "MetadataJob::default_files")]
    pub files: u32,
    /// Threads doing metadata operations, each on its own files.
    #[serde(default = "one")]
    pub numjobs: u32,
    /// Seconds it runs (default: until miglab stops it, after the last hop and its settle time).
    #[serde(default)]
    pub runtime: Option<f64>,
    /// Relative weights of the operations.
    #[serde(default = "MetadataJob::default_mix")]
    pub mix: MetadataMix,
    /// Where in the share its tree lives (default: the run's own directory).
    #[serde(default)]
    pub directory: Option<String>,
    /// Operations per second per thread at most (default: as fast as it can).
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

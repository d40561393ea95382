//! `read-loop`: the seed's loop — open, read, close one file, checking its content.

use super::*;

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
    /// Pause between two reads, µs.
    #[serde(default)]
    pub pause_us: u64,
    /// Seconds it runs (default: until miglab stops it, after the last hop and its settle time).
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

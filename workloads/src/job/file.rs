//! A whole fio job file: its jobs, run as fio runs them, and the files they share.

use super::*;

/// A whole fio job file: every job, in the file's order, run as fio runs them — concurrently
/// unless `stonewall` or `wait_for` orders them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FioFile {
    /// The file's own name (its jobs' names are in `jobs`).
    pub name: String,
    pub jobs: Vec<FioJob>,
}

/// Clones of all jobs of a file at most: each is a thread in the guest.
pub const MAX_CLONES: u32 = 1024;

impl FioFile {
    /// Every clone of every job, in order: (job, clone). An op record's `job` is an index
    /// into this list.
    pub fn instances(&self) -> Vec<(usize, u32)> {
        self.jobs.iter().enumerate().flat_map(|(j, job)| (0..job.numjobs).map(move |n| (j, n))).collect()
    }

    /// The jobs job `j` waits for before it starts: `stonewall` waits for every job before it,
    /// `wait_for` for the one it names.
    pub fn waits_for(&self, j: usize) -> Vec<usize> {
        let job = &self.jobs[j];
        let mut w: Vec<usize> = if job.stonewall { (0..j).collect() } else { Vec::new() };
        if let Some(name) = &job.wait_for {
            w.extend(self.jobs[..j].iter().position(|o| &o.name == name));
        }
        w.sort_unstable();
        w.dedup();
        w
    }

    /// The reporting group of each job: a new one at `stonewall` or `new_group`, as in fio.
    pub fn groups(&self) -> Vec<u32> {
        let mut g = 0;
        self.jobs
            .iter()
            .enumerate()
            .map(|(i, j)| {
                if i > 0 && (j.stonewall || j.new_group) {
                    g += 1;
                }
                g
            })
            .collect()
    }

    /// Every file the jobs name, once, in the order first named: its path below the share,
    /// the verification unit of the jobs sharing it (the gcd of theirs: a unit is what every
    /// job writes whole) and whether it is verified (only if every job naming it verifies: a
    /// job that does not would write what no header describes).
    pub fn files(&self) -> Vec<SharedFile> {
        let mut out: Vec<SharedFile> = Vec::new();
        for (j, n) in self.instances() {
            let job = &self.jobs[j];
            for name in job.file_names(n) {
                let path = format!("{}/{name}", job.dir());
                match out.iter_mut().find(|f| f.path == path) {
                    Some(f) => {
                        f.unit = crate::pattern::gcd(f.unit, job.unit());
                        f.verified &= job.verify;
                        if !f.jobs.contains(&j) {
                            f.jobs.push(j);
                        }
                    }
                    None => {
                        out.push(SharedFile { path, unit: job.unit(), verified: job.verify, jobs: vec![j] })
                    }
                }
            }
        }
        out
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.jobs.is_empty() {
            return Err("the job file has no jobs".into());
        }
        for (i, j) in self.jobs.iter().enumerate() {
            j.validate().map_err(|e| format!("job '{}': {e}", j.name))?;
            if let Some(w) = &j.wait_for {
                if !self.jobs[..i].iter().any(|o| &o.name == w) {
                    return Err(format!(
                        "job '{}': wait_for={w} names no job before it (fio waits only for earlier jobs)",
                        j.name
                    ));
                }
            }
        }
        let clones: u32 = self.jobs.iter().map(|j| j.numjobs).sum();
        if clones > MAX_CLONES {
            return Err(format!(
                "{clones} clones in all (numjobs summed over the jobs): at most {MAX_CLONES}"
            ));
        }
        if let Some(f) = self.files().iter().find(|f| f.verified && f.unit < crate::verify::HEADER_LEN as u64)
        {
            let names: Vec<String> = f
                .jobs
                .iter()
                .map(|&j| format!("'{}' (bs {})", self.jobs[j].name, self.jobs[j].describe_bs()))
                .collect();
            return Err(format!(
                "jobs {} share {}: a unit all of them write whole is {} bytes, smaller than a verify header ({} \
                 bytes): give them block sizes with a larger common divisor, separate files, or verify = false",
                names.join(" and "),
                f.path,
                f.unit,
                crate::verify::HEADER_LEN
            ));
        }
        Ok(())
    }
}

/// A file of a job file, as its jobs share it ([`FioFile::files`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedFile {
    /// Below the share: `<dir>/<name>`.
    pub path: String,
    pub unit: u64,
    pub verified: bool,
    /// The jobs naming it, by index.
    pub jobs: Vec<usize>,
}

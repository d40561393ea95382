//! Import of fio job files: an INI file whose options miglab supports becomes [`FioJob`]s,
//! one per job section, with `[global]` options inherited. Any other option is an error that
//! names it and lists what is supported — a silently ignored option would make the comparison
//! with fio a lie.

use crate::job::{FioJob, IoEngine, Rw, Size};

/// The options miglab understands, and the ones it accepts because they change nothing here.
pub const SUPPORTED: &[&str] = &[
    "rw",
    "readwrite",
    "bs",
    "blocksize",
    "size",
    "nrfiles",
    "numjobs",
    "iodepth",
    "iodepth_batch_submit",
    "iodepth_batch",
    "iodepth_batch_complete_min",
    "iodepth_batch_complete",
    "iodepth_batch_complete_max",
    "rwmixread",
    "rwmixwrite",
    "runtime",
    "ramp_time",
    "rate",
    "rate_iops",
    "fsync",
    "fdatasync",
    "direct",
    "directory",
    "verify",
    "name",
    "ioengine",
    "time_based",
    "end_fsync",
    "group_reporting",
    "thread",
    "invalidate",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FioError {
    #[error("line {line}: option '{option}' is not supported; miglab supports: {}", SUPPORTED.join(", "))]
    Unsupported { line: usize, option: String },
    #[error("line {line}: {option}={value}: {why}")]
    BadValue { line: usize, option: String, value: String, why: String },
    #[error("line {line}: '{text}' is neither a [section] nor option=value")]
    Syntax { line: usize, text: String },
    #[error("job '{job}' has no rw option")]
    NoRw { job: String },
    #[error("job '{job}': {why}")]
    Invalid { job: String, why: String },
    #[error("the file has no job sections")]
    NoJobs,
}

/// Seconds from fio's time values: `30`, `30s`, `500ms`, `2m`, `1h`.
fn seconds(v: &str) -> Option<f64> {
    let v = v.trim().to_ascii_lowercase();
    let (num, mult) = if let Some(n) = v.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = v.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (v.as_str(), 1.0)
    };
    num.trim().parse::<f64>().ok().filter(|s| *s >= 0.0).map(|s| s * mult)
}

fn apply(job: &mut FioJob, line: usize, option: &str, value: &str) -> Result<(), FioError> {
    let bad = |why: String| FioError::BadValue { line, option: option.into(), value: value.into(), why };
    let size = |v: &str| v.parse::<Size>().map_err(|e| bad(e.to_string()));
    let int = |v: &str| v.trim().parse::<u64>().map_err(|_| bad("not a whole number".into()));
    let flag = |v: &str| Ok::<bool, FioError>(!matches!(v.trim(), "0" | "false" | "none" | ""));
    // fio's "bs=4k,8k" and "rate=1m,2m" give reads and writes different values; miglab's engine
    // has one value for both, so such a file would not run the job fio runs.
    fn single(v: &str, bad: impl Fn(String) -> FioError) -> Result<&str, FioError> {
        if v.contains(',') || v.contains(':') {
            Err(bad("separate read/write values are not supported: give one value for both".into()))
        } else {
            Ok(v)
        }
    }
    match option {
        "rw" | "readwrite" => {
            // fio's "rw=randread:8" (an offset modifier) changes the access pattern.
            job.rw = single(value, bad)?.trim().parse::<Rw>().map_err(bad)?
        }
        "bs" | "blocksize" => job.bs = size(single(value, bad)?)?,
        "size" => {
            if value.trim().ends_with('%') {
                return Err(bad("a size in percent of the device is not supported: give bytes".into()));
            }
            job.size = size(value)?
        }
        "nrfiles" => job.nrfiles = u32::try_from(int(value)?).map_err(|_| bad("too large".into()))?,
        "numjobs" => job.numjobs = u32::try_from(int(value)?).map_err(|_| bad("too large".into()))?,
        "iodepth" => job.iodepth = u32::try_from(int(value)?).map_err(|_| bad("too large".into()))?,
        "iodepth_batch_submit" | "iodepth_batch" => {
            job.iodepth_batch_submit = u32::try_from(int(value)?).map_err(|_| bad("too large".into()))?
        }
        "iodepth_batch_complete_max" => {
            job.iodepth_batch_complete_max =
                u32::try_from(int(value)?).map_err(|_| bad("too large".into()))?
        }
        "iodepth_batch_complete_min" | "iodepth_batch_complete" => {
            job.iodepth_batch_complete_min =
                u32::try_from(int(value)?).map_err(|_| bad("too large".into()))?
        }
        "rwmixread" => job.rwmixread = int(value)?.min(100) as u8,
        "rwmixwrite" => job.rwmixread = 100 - int(value)?.min(100) as u8,
        "runtime" => job.runtime = Some(seconds(value).ok_or_else(|| bad("not a time".into()))?),
        "ramp_time" => job.ramp_time = seconds(value).ok_or_else(|| bad("not a time".into()))?,
        "rate" => job.rate = Some(size(single(value, bad)?)?),
        "rate_iops" => job.rate_iops = Some(int(single(value, bad)?)?),
        "fsync" => job.fsync = u32::try_from(int(value)?).map_err(|_| bad("too large".into()))?,
        "fdatasync" => job.fdatasync = u32::try_from(int(value)?).map_err(|_| bad("too large".into()))?,
        "end_fsync" => job.end_fsync = flag(value)?,
        "direct" => job.direct = flag(value)?,
        // A directory is taken relative to the CephFS root; validation refuses '..'.
        "directory" => job.directory = Some(value.trim().trim_start_matches('/').to_string()),
        "verify" => {
            // fio's verify=md5|crc32c|... writes and checks its own patterns; miglab checks every
            // block with its own header instead, which is not what such a job file asks for.
            if flag(value)? {
                return Err(bad(
                    "fio's verification is not implemented; miglab verifies every block itself \
                     (remove verify=, or set verify=0)"
                        .into(),
                ));
            }
        }
        "name" => job.name = value.trim().to_string(),
        "ioengine" => {
            job.ioengine = match value.trim() {
                "psync" => IoEngine::Psync,
                "sync" => IoEngine::Sync,
                "pvsync" => IoEngine::Pvsync,
                "io_uring" => IoEngine::IoUring,
                "libaio" => IoEngine::Libaio,
                _ => {
                    return Err(bad(
                        "miglab runs psync, sync, pvsync, io_uring and libaio (on io_uring)".into()
                    ))
                }
            }
        }
        "invalidate" => job.invalidate = flag(value)?,
        "time_based" => job.time_based = flag(value)?,
        "group_reporting" | "thread" => {}
        _ => return Err(FioError::Unsupported { line, option: option.into() }),
    }
    Ok(())
}

/// Options of one section, with their line numbers.
type Options = Vec<(usize, String, String)>;

/// Parses a fio job file.
pub fn parse(text: &str) -> Result<Vec<FioJob>, FioError> {
    let mut global: Options = Vec::new();
    let mut sections: Vec<(String, Options)> = Vec::new();
    let mut in_global = false;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
            continue;
        }
        if let Some(name) = l.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_global = name.trim() == "global";
            if !in_global {
                sections.push((name.trim().to_string(), Vec::new()));
            }
            continue;
        }
        let (k, v) = match l.split_once('=') {
            Some((k, v)) => (k.trim().to_string(), v.trim().to_string()),
            // Bare options are flags: `direct` means direct=1.
            None if !l.contains(char::is_whitespace) => (l.to_string(), "1".to_string()),
            None => return Err(FioError::Syntax { line, text: l.into() }),
        };
        if in_global {
            global.push((line, k, v));
        } else if let Some((_, opts)) = sections.last_mut() {
            opts.push((line, k, v));
        } else {
            return Err(FioError::Syntax { line, text: format!("{l} (an option before any [section])") });
        }
    }
    if sections.is_empty() {
        return Err(FioError::NoJobs);
    }
    sections
        .into_iter()
        .map(|(name, opts)| {
            let mut job = FioJob::new(&name, Rw::Read);
            // A fio job runs one pass over its data unless it says time_based.
            job.time_based = false;
            let mut has_rw = false;
            for (line, k, v) in global.iter().chain(opts.iter()) {
                has_rw |= k == "rw" || k == "readwrite";
                apply(&mut job, *line, k, v)?;
            }
            if !has_rw {
                return Err(FioError::NoRw { job: name });
            }
            job.validate().map_err(|why| FioError::Invalid { job: job.name.clone(), why })?;
            Ok(job)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_supported_file_becomes_the_expected_jobs() {
        let jobs = parse(
            "; the comparison jobs\n\
             [global]\n\
             ioengine=psync\n\
             direct=1\n\
             size=64m\n\
             runtime=30s\n\
             time_based\n\
             \n\
             [randread-4k]\n\
             rw=randread\n\
             bs=4k\n\
             iodepth=1\n\
             \n\
             [seqwrite-1m]\n\
             rw=write\n\
             bs=1M\n\
             fsync=16\n\
             rwmixwrite=30\n",
        )
        .expect("parses");
        assert_eq!(jobs.len(), 2);
        let r = &jobs[0];
        assert_eq!(
            (r.name.as_str(), r.rw, r.bs, r.size),
            ("randread-4k", Rw::Randread, Size(4096), Size(64 << 20))
        );
        assert!(r.direct);
        assert_eq!(r.runtime, Some(30.0));
        let w = &jobs[1];
        assert_eq!((w.rw, w.bs, w.fsync, w.rwmixread), (Rw::Write, Size(1 << 20), 16, 70));
        assert!(r.time_based && w.time_based, "from [global]");
    }

    /// fio's meanings: size is the job's, shared by its files; without time_based one pass;
    /// a synchronous engine has one request in flight whatever iodepth says.
    #[test]
    fn options_mean_what_fio_means() {
        let jobs = parse("[a]\nrw=randread\nsize=64m\nnrfiles=4\niodepth=16\nend_fsync=1\n").expect("parses");
        let a = &jobs[0];
        assert_eq!((a.size, a.file_size()), (Size(64 << 20), 16 << 20));
        assert!(!a.time_based, "one pass without time_based");
        assert_eq!((a.iodepth, a.depth()), (16, 1));
        assert!(a.end_fsync);
        assert_eq!(a.ioengine, IoEngine::Psync);
        let e = parse("[a]\nrw=read\ndirectory=../../etc\n").expect_err("escapes");
        assert!(e.to_string().contains(".."), "{e}");
    }

    /// Job files as people write them for queue-depth work.
    #[test]
    fn asynchronous_job_files_keep_their_depth_and_batches() {
        let randread = "[global]\nioengine=libaio\ndirect=1\nthread\ngroup_reporting\n\n[randread-qd32]\nrw=randread\nbs=4k\nsize=256m\niodepth=32\nruntime=30\ntime_based\n";
        let j = &parse(randread).expect("parses")[0];
        assert_eq!((j.ioengine, j.iodepth, j.depth()), (IoEngine::Libaio, 32, 32));
        assert!(j.direct && j.time_based);
        let mixed = "[mixed]\nioengine=io_uring\nrw=randrw\nrwmixread=70\nbs=4k\nsize=64m\niodepth=16\niodepth_batch_submit=4\niodepth_batch_complete_min=2\nnumjobs=2\n";
        let j = &parse(mixed).expect("parses")[0];
        assert_eq!(
            (j.ioengine, j.depth(), j.iodepth_batch_submit, j.iodepth_batch_complete_min, j.numjobs),
            (IoEngine::IoUring, 16, 4, 2, 2)
        );
        let e = parse("[x]\nrw=read\nioengine=io_uring\niodepth=4\niodepth_batch_submit=8\n")
            .expect_err("batch > depth");
        assert!(e.to_string().contains("iodepth_batch_submit"), "{e}");
    }

    #[test]
    fn an_unsupported_option_is_named_with_the_list() {
        let e = parse("[j]\nrw=read\nzonemode=zbd\n").expect_err("unsupported");
        let msg = e.to_string();
        assert_eq!(e, FioError::Unsupported { line: 3, option: "zonemode".into() });
        assert!(msg.contains("zonemode") && msg.contains("rwmixread") && msg.contains("line 3"), "{msg}");
        let e = parse("[j]\nrw=read\nioengine=posixaio\n").expect_err("engine");
        assert!(e.to_string().contains("io_uring") && e.to_string().contains("line 3"), "{e}");
        for refused in
            ["bs=4k,8k", "rate=1m,2m", "rate_iops=10,20", "verify=crc32c", "size=50%", "rw=randread:8"]
        {
            let e = parse(&format!("[j]\nrw=read\n{refused}\n")).expect_err(refused);
            assert!(matches!(e, FioError::BadValue { line: 3, .. }), "{refused}: {e}");
        }
        assert!(parse("[j]\nrw=read\nverify=0\n").is_ok());
        assert!(matches!(parse("[j]\nbs=4k\n"), Err(FioError::NoRw { .. })));
        assert!(matches!(parse("[global]\nrw=read\n"), Err(FioError::NoJobs)));
        assert!(matches!(parse("[j]\nrw=read\nbs=4q\n"), Err(FioError::BadValue { .. })));
        assert!(matches!(parse("[j]\nrw=read\nsize=3000\n"), Err(FioError::Invalid { .. })));
    }

    #[test]
    fn times_have_units() {
        assert_eq!(seconds("30"), Some(30.0));
        assert_eq!(seconds("2m"), Some(120.0));
        assert_eq!(seconds("500ms"), Some(0.5));
        assert_eq!(seconds("x"), None);
    }
}

//! Import of fio job files: every job of the file becomes a [`FioJob`] of a [`FioFile`], with
//! `[global]` options inherited, each option with fio's meaning. Every option is *run* (the
//! engine does what fio does), *mapped* (miglab does it its own way: `verify=` becomes
//! miglab's own verification of every unit, output options become what miglab already
//! writes), or *ignored* with a note (it changes nothing miglab measures). What miglab cannot
//! do faithfully is refused by name and line — a silently ignored option would make the
//! comparison with fio a lie.

use crate::job::{BlockSizes, Distribution, FioFile, FioJob, IoEngine, RateProcess, Rw, Size};

/// What became of one option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Treatment {
    /// The engine does what fio does.
    Ran,
    /// miglab does it its own way: how.
    Mapped(String),
    /// It changes nothing miglab measures: why.
    Ignored(String),
}

/// One option of a job, as the file gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionNote {
    pub line: usize,
    pub option: String,
    pub value: String,
    pub treatment: Treatment,
}

/// A job file, imported.
#[derive(Debug, Clone, PartialEq)]
pub struct Import {
    pub file: FioFile,
    /// Per job, every option that applied to it ([global]'s first).
    pub notes: Vec<Vec<OptionNote>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FioError {
    #[error("line {line}: option '{option}' is not supported (not an fio option miglab knows; see docs/scenarios.md, Workloads)")]
    Unsupported { line: usize, option: String },
    #[error("line {line}: {option}: {why}")]
    Refused { line: usize, option: String, why: String },
    #[error("line {line}: {option}={value}: {why}")]
    BadValue { line: usize, option: String, value: String, why: String },
    #[error("line {line}: '{text}' is neither a [section] nor option=value")]
    Syntax { line: usize, text: String },
    #[error("job '{job}': {why}")]
    Invalid { job: String, why: String },
    #[error("the file has no job sections")]
    NoJobs,
}

/// Seconds from fio's time values (`30`, `30s`, `500ms`, `2m`, `1h`), `default_unit` seconds
/// per unit for a bare number.
fn time_in(v: &str, default_unit: f64) -> Option<f64> {
    let v = v.trim().to_ascii_lowercase();
    let (num, mult) = if let Some(n) = v.strip_suffix("us").or_else(|| v.strip_suffix("usec")) {
        (n, 1e-6)
    } else if let Some(n) = v.strip_suffix("ms").or_else(|| v.strip_suffix("msec")) {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = v.strip_suffix('h') {
        (n, 3600.0)
    } else if let Some(n) = v.strip_suffix('d') {
        (n, 86400.0)
    } else {
        (v.as_str(), default_unit)
    };
    num.trim().parse::<f64>().ok().filter(|s| *s >= 0.0 && s.is_finite()).map(|s| s * mult)
}

/// Seconds from a time whose bare number means seconds (runtime, ramp_time, startdelay).
fn seconds(v: &str) -> Option<f64> {
    time_in(v, 1.0)
}

/// fio's per-direction values: `read,write[,trim]`, one value for all, or an empty part for
/// "leave this direction as it is".
fn directions(v: &str) -> (Option<&str>, Option<&str>, Option<&str>) {
    let mut p = v.split(',').map(str::trim);
    let r = p.next().filter(|x| !x.is_empty());
    match (p.next(), p.next()) {
        (None, _) => (r, r, r),
        (w, t) => (r, w.filter(|x| !x.is_empty()), t.filter(|x| !x.is_empty())),
    }
}

/// Where the job file's absolute paths lie in the share: the mount point the file was written
/// for (`fio_mount`), if one is given.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub mount: Option<String>,
}

impl Context {
    /// A path of the job file, relative to the CephFS root; `what` names the option.
    fn in_share(&self, what: &str, p: &str) -> Result<String, String> {
        let p = p.trim();
        if p.starts_with("/dev/") {
            return Err(format!(
                "'{p}' is a device: miglab runs jobs on files in the CephFS share, not on devices"
            ));
        }
        if !p.starts_with('/') {
            return Ok(p.to_string());
        }
        let inside = self.mount.as_deref().and_then(|m| {
            let m = m.trim_end_matches('/');
            p.strip_prefix(m)
                .filter(|r| r.is_empty() || r.starts_with('/'))
                .map(|r| r.trim_start_matches('/'))
        });
        match inside {
            Some("") => Ok(".".into()),
            Some(r) => Ok(r.to_string()),
            None => Err(format!(
                "{what} '{p}' is outside the share: miglab runs jobs only inside the CephFS share. If the job file \
                 was written for a file system mounted at a directory above it, say where with fio_mount = \"DIR\" \
                 in the scenario (miglab check --fio FILE --mount DIR)"
            )),
        }
    }
}

fn ran() -> Result<Treatment, FioError> {
    Ok(Treatment::Ran)
}
fn mapped(how: &str) -> Result<Treatment, FioError> {
    Ok(Treatment::Mapped(how.into()))
}
fn ignored(why: &str) -> Result<Treatment, FioError> {
    Ok(Treatment::Ignored(why.into()))
}

/// Options fio's own output takes; miglab writes its own figures (result.json, the hlog,
/// timeline.csv) whatever they say.
const OUTPUT: &[&str] = &[
    "write_bw_log",
    "write_lat_log",
    "write_iops_log",
    "write_hist_log",
    "log_avg_msec",
    "log_hist_msec",
    "log_hist_coarseness",
    "log_max_value",
    "log_offset",
    "log_compression",
    "log_store_compressed",
    "log_unix_epoch",
    "per_job_logs",
    "clat_percentiles",
    "lat_percentiles",
    "slat_percentiles",
    "percentile_list",
    "output-format",
    "output",
    "significant_figures",
    "disable_lat",
    "disable_clat",
    "disable_slat",
    "disable_bw_measurement",
    "stats",
    "unified_rw_reporting",
    "steadystate",
];

/// Options that place the job's threads or change its priority: the agent runs every clone
/// in the guest with the guest's defaults.
const SCHEDULING: &[&str] = &[
    "cpus_allowed",
    "cpus_allowed_policy",
    "cpumask",
    "nice",
    "prio",
    "prioclass",
    "numa_cpu_nodes",
    "numa_mem_policy",
    "ioscheduler",
    "clocksource",
];

/// Options about buffer contents that verifiable blocks cannot take.
const CONTENTS: &[&str] = &[
    "buffer_compress_percentage",
    "buffer_compress_chunk",
    "compress_percentage",
    "compress_chunk",
    "dedupe_percentage",
    "dedupe_mode",
    "dedupe_working_set_percentage",
    "dedupe_global",
    "buffer_pattern",
    "zero_buffers",
];

/// Options of devices and device-like engines.
const DEVICE: &[&str] = &[
    "fill_device",
    "fill_fs",
    "sprandom",
    "spr_op",
    "spr_num_regions",
    "zonemode",
    "zonesize",
    "zonerange",
    "zoneskip",
    "zonecapacity",
    "max_open_zones",
    "trim_percentage",
    "trim_backlog",
    "trim_verify_zero",
    "atomic",
    "fdp",
    "pi_act",
    "pi_chk",
];

fn apply(
    job: &mut FioJob,
    ctx: &Context,
    line: usize,
    option: &str,
    value: &str,
) -> Result<Treatment, FioError> {
    let bad = |why: String| FioError::BadValue { line, option: option.into(), value: value.into(), why };
    let refuse = |why: &str| Err(FioError::Refused { line, option: option.into(), why: why.into() });
    let size = |v: &str| v.trim().parse::<Size>().map_err(|e| bad(e.to_string()));
    let int = |v: &str| v.trim().parse::<u64>().map_err(|_| bad("not a whole number".into()));
    let u32_ = |v: &str| int(v).and_then(|n| u32::try_from(n).map_err(|_| bad("too large".into())));
    let flag = |v: &str| !matches!(v.trim(), "0" | "false" | "none" | "");
    let time = |v: &str| seconds(v).ok_or_else(|| bad("not a time".into()));
    let one_for_all = |v: &str| -> Result<String, FioError> {
        match directions(v) {
            (r, w, _) if r == w => Ok(r.unwrap_or("").to_string()),
            _ => Err(bad(
                "separate read/write values are not supported for this option: give one value".into()
            )),
        }
    };
    if value.contains("${") {
        return Err(bad("fio expands ${VAR} from its environment; miglab does not: write the value".into()));
    }
    if OUTPUT.contains(&option) {
        return mapped("miglab writes its own figures: per-op latency in result.json and latency.hlog, the 100 ms series in timeline.csv");
    }
    if SCHEDULING.contains(&option) {
        return ignored("the agent runs every clone with the guest's default scheduling");
    }
    if CONTENTS.contains(&option) {
        return refuse("buffer contents: every block miglab writes is verifiable content (a header and a checksummed pattern), which cannot be made compressible or deduplicable");
    }
    if DEVICE.contains(&option) {
        return refuse("device-specific: miglab runs jobs on regular files in the CephFS share");
    }
    if option.starts_with("verify") || option == "do_verify" {
        return mapped("miglab verifies every block of every file itself (a header with file, offset, generation and run, and a checksum), inline on every read and in a full pass after the run");
    }
    if let Some(field) = flag_option(job, option) {
        *field = flag(value);
        return ran();
    }
    if let Some(field) = count_option(job, option) {
        *field = u32_(value)?;
        return ran();
    }
    match option {
        "rw" | "readwrite" => {
            let (kind, modifier) = match value.split_once(':') {
                Some((k, m)) => (k.trim(), Some(m.trim())),
                None => (value.trim(), None),
            };
            if matches!(kind, "trim" | "randtrim" | "trimwrite" | "randtrimwrite") {
                return refuse("trims: miglab's jobs read and write; a trimmed block cannot be verified");
            }
            job.rw = kind.parse::<Rw>().map_err(bad)?;
            if let Some(m) = modifier {
                if job.rw.random() {
                    return Err(bad("rw=rand...:N (N sequential ops per random offset) is not supported".into()));
                }
                let neg = m.starts_with('-');
                let n = size(m.trim_start_matches('-'))?.0 as i64;
                // fio's modifier is the gap after each op: `read:8k` skips 8k, `read:-8k` with 4k
                // blocks walks backwards.
                job.rw_skip = if neg { -n } else { n };
            }
            ran()
        }
        "bs" | "blocksize" => {
            let (r, w, _) = directions(value);
            if let Some(r) = r {
                job.bs = size(r)?;
                job.bs_read = None;
            }
            match w {
                Some(w) if Some(w) != r => job.bs_write = Some(BlockSizes::Fixed(size(w)?)),
                Some(_) => job.bs_write = None,
                None => {}
            }
            ran()
        }
        "bsrange" | "blocksize_range" => {
            let (r, w, _) = directions(value);
            let range = |v: &str| -> Result<BlockSizes, FioError> {
                let (lo, hi) = v.split_once('-').ok_or_else(|| bad("give min-max, e.g. 4k-16k".into()))?;
                let (min, max) = (size(lo)?, size(hi)?);
                Ok(if min == max { BlockSizes::Fixed(min) } else { BlockSizes::Range { min, max } })
            };
            if let Some(r) = r {
                job.bs_read = Some(range(r)?);
            }
            if let Some(w) = w {
                job.bs_write = Some(range(w)?);
            }
            ran()
        }
        "bssplit" => {
            let (r, w, _) = directions(value);
            let split = |v: &str| -> Result<BlockSizes, FioError> {
                let mut parts = Vec::new();
                let mut blank = Vec::new();
                for (i, p) in v.split(':').filter(|p| !p.trim().is_empty()).enumerate() {
                    let (s, pct) = p.split_once('/').unwrap_or((p, ""));
                    parts.push((size(s)?, if pct.trim().is_empty() { 0 } else { u32_(pct)? }));
                    if pct.trim().is_empty() {
                        blank.push(i);
                    }
                }
                let given: u32 = parts.iter().map(|(_, w)| *w).sum();
                if given > 100 {
                    return Err(bad(format!("the percentages add up to {given}, over 100")));
                }
                // As fio: sizes without a percentage share what the others leave.
                for (k, i) in blank.iter().enumerate() {
                    let share = (100 - given) / blank.len() as u32;
                    parts[*i].1 = share + u32::from(k == 0) * ((100 - given) % blank.len() as u32);
                }
                Ok(BlockSizes::Split(parts))
            };
            if let Some(r) = r {
                job.bs_read = Some(split(r)?);
            }
            job.bs_write = match w {
                Some(w) => Some(split(w)?),
                None => job.bs_read.clone(),
            };
            ran()
        }
        "blockalign" | "ba" => {
            job.blockalign = Some(size(&one_for_all(value)?)?);
            ran()
        }
        "size" => {
            if value.trim().ends_with('%') {
                return Err(bad("a size in percent of the device is not supported: give bytes".into()));
            }
            job.size = size(value)?;
            if job.filesize.is_some() {
                job.io_size = Some(job.size);
            }
            ran()
        }
        "io_size" | "io_limit" => {
            job.io_size = Some(size(value)?);
            ran()
        }
        "filesize" => {
            let (lo, hi) = value.split_once('-').unwrap_or((value, value));
            job.filesize = Some((size(lo)?, size(hi)?));
            // fio: with filesize, size becomes what a pass does.
            job.io_size.get_or_insert(job.size);
            ran()
        }
        "rwmixread" => {
            job.rwmixread = int(value)?.min(100) as u8;
            ran()
        }
        "rwmixwrite" => {
            job.rwmixread = 100 - int(value)?.min(100) as u8;
            ran()
        }
        "runtime" | "timeout" => {
            job.runtime = Some(time(value)?);
            ran()
        }
        "ramp_time" => {
            job.ramp_time = time(value)?;
            ran()
        }
        "startdelay" => {
            if value.contains('-') {
                return Err(bad("a range of start delays is not supported: give one value".into()));
            }
            job.startdelay = time(value)?;
            ran()
        }
        "rate" => {
            let v = one_for_all(value)?;
            job.rate = Some(size(&v)?);
            ran()
        }
        "rate_iops" => {
            job.rate_iops = Some(int(&one_for_all(value)?)?);
            ran()
        }
        "rate_min" | "ratemin" => {
            job.rate_min = Some(size(&one_for_all(value)?)?);
            ran()
        }
        "ratecycle" => ignored("miglab checks rate_min once a second at most, fio's default ratecycle"),
        "rate_process" => {
            job.rate_process = match value.trim() {
                "linear" => RateProcess::Linear,
                "poisson" => RateProcess::Poisson,
                _ => return Err(bad("linear or poisson".into())),
            };
            ran()
        }
        "rate_ignore_thinktime" => ignored("pacing and thinktime are independent in miglab, as this option asks"),
        "buffered" => {
            job.direct = !flag(value);
            ran()
        }
        "sync" => {
            job.sync = match value.trim() {
                "1" | "sync" | "true" => true,
                "0" | "none" | "false" => false,
                _ => return Err(bad("O_DSYNC writes are not supported: sync=1 (O_SYNC) or 0".into())),
            };
            ran()
        }
        "directory" => {
            if value.contains(':') {
                return Err(bad("several directories are not supported: give one".into()));
            }
            job.directory = Some(ctx.in_share("directory", value).map_err(bad)?);
            ran()
        }
        "filename" => {
            let raw = crate::job::split_names(value);
            let names: Result<Vec<String>, FioError> =
                raw.iter().map(|n| ctx.in_share("filename", n).map_err(&bad)).collect();
            let names = names?;
            // An absolute name (inside the mount) is taken from the share's root, as fio
            // takes it from / whatever `directory` says.
            if raw.iter().any(|n| n.starts_with('/')) {
                job.directory = Some(".".into());
            }
            job.filename = Some(names.iter().map(|n| n.replace(':', "\\:")).collect::<Vec<_>>().join(":"));
            ran()
        }
        "filename_format" => {
            let v = value.trim();
            if v.contains('$') && v.split('$').skip(1).any(|t| !["jobname", "jobnum", "filenum"].iter().any(|k| t.starts_with(k))) {
                return Err(bad("miglab knows $jobname, $jobnum and $filenum".into()));
            }
            job.filename_format = Some(ctx.in_share("filename_format", v).map_err(bad)?);
            ran()
        }
        "name" => {
            job.name = value.trim().to_string();
            ran()
        }
        "description" => {
            job.description = value.trim().to_string();
            ran()
        }
        "ioengine" => {
            job.ioengine = match value.trim() {
                "psync" => IoEngine::Psync,
                "sync" => IoEngine::Sync,
                "pvsync" | "pvsync2" | "vsync" => IoEngine::Pvsync,
                "io_uring" => IoEngine::IoUring,
                "libaio" => IoEngine::Libaio,
                e @ ("posixaio" | "mmap") => {
                    return Err(bad(format!(
                        "{e} is not run: its semantics ({}) are not miglab's engines'; use psync, sync, pvsync, io_uring or libaio",
                        if e == "mmap" { "ops are memory copies into a mapping" } else { "POSIX AIO's own thread pool" }
                    )))
                }
                _ => {
                    return Err(bad(
                        "engine- or device-specific: miglab runs psync, sync, pvsync(2), io_uring and libaio (on io_uring) on regular files".into(),
                    ))
                }
            };
            ran()
        }
        "io_submit_mode" => match value.trim() {
            "inline" => ran(),
            "offload" => mapped("each clone submits from its own thread, as inline (fio's offload hands submission to a helper thread)"),
            _ => Err(bad("inline or offload".into())),
        },
        "randrepeat" | "randseed" | "allrandrepeat" => mapped("the run's seed makes every job's choices repeatable"),
        "random_generator" => mapped("miglab's own seeded generator draws the offsets (fio's tausworthe/lfsr give a different sequence with the same distribution)"),
        "random_distribution" => {
            job.random_distribution = distribution(value).map_err(bad)?;
            ran()
        }
        "percentage_random" => {
            job.percentage_random = int(&one_for_all(value)?)?.min(100) as u8;
            ran()
        }
        "offset" => {
            if value.trim().ends_with('%') {
                return Err(bad("an offset in percent is not supported: give bytes".into()));
            }
            job.offset = size(value)?;
            ran()
        }
        "thinktime" => {
            job.thinktime_us = (time_in(value, 1e-6).ok_or_else(|| bad("not a time".into()))? * 1e6).round() as u64;
            ran()
        }
        "thinktime_spin" => ignored("miglab sleeps the whole thinktime"),
        "flow" => {
            job.flow = value.trim().parse::<i64>().map_err(|_| bad("a whole number".into()))?;
            ran()
        }
        "flow_sleep" => {
            job.flow_sleep_us = (time_in(value, 1e-6).ok_or_else(|| bad("not a time".into()))? * 1e6) as u64;
            ran()
        }
        "wait_for" => {
            job.wait_for = Some(value.trim().to_string());
            ran()
        }
        "thread" | "threads" => mapped("the agent runs every clone as a thread"),
        "group_reporting" => mapped("result.json has every job's figures and the whole file's, as group_reporting sums them"),
        "gtod_reduce" => ignored("miglab timestamps every op whatever it says"),
        "create_on_open" | "create_serialize" | "create_fsync" | "create_only" if !(option == "create_only" && flag(value)) => {
            mapped("every file is created and laid out before the jobs start")
        }
        "fallocate" => mapped("files are laid out by writing every block (verifiable content), not preallocated"),
        "refill_buffers" | "scramble_buffers" => mapped("every block written is fresh verifiable content"),
        "continue_on_error" | "ignore_error" | "error_dump" => {
            mapped("miglab goes on after every error and records each (errno, op, time)")
        }
        "kb_base" if value.trim() == "1024" => ran(),
        "unit_base" | "exitall_on_error" => ignored("changes only fio's own report"),
        "include" | "exitall" | "exit_what" | "number_ios" | "kb_base" | "bs_unaligned" | "zoned_abs" => {
            refuse("not implemented in miglab's engine")
        }
        _ => Err(FioError::Unsupported { line, option: option.into() }),
    }
}

/// The job's field an on/off option sets (a bare option is on).
fn flag_option<'a>(job: &'a mut FioJob, option: &str) -> Option<&'a mut bool> {
    Some(match option {
        "end_fsync" => &mut job.end_fsync,
        "fsync_on_close" => &mut job.fsync_on_close,
        "direct" => &mut job.direct,
        "invalidate" => &mut job.invalidate,
        "time_based" => &mut job.time_based,
        "norandommap" => &mut job.norandommap,
        "new_group" => &mut job.new_group,
        "stonewall" | "wait_for_previous" => &mut job.stonewall,
        _ => return None,
    })
}

/// The job's field a whole-number option sets.
fn count_option<'a>(job: &'a mut FioJob, option: &str) -> Option<&'a mut u32> {
    Some(match option {
        "nrfiles" => &mut job.nrfiles,
        "numjobs" => &mut job.numjobs,
        "iodepth" => &mut job.iodepth,
        "iodepth_batch_submit" | "iodepth_batch" => &mut job.iodepth_batch_submit,
        "iodepth_batch_complete_min" | "iodepth_batch_complete" => &mut job.iodepth_batch_complete_min,
        "iodepth_batch_complete_max" => &mut job.iodepth_batch_complete_max,
        "fsync" => &mut job.fsync,
        "fdatasync" => &mut job.fdatasync,
        "loops" => &mut job.loops,
        "thinktime_blocks" => &mut job.thinktime_blocks,
        "flow_id" => &mut job.flow_id,
        _ => return None,
    })
}

/// fio's `random_distribution` values.
fn distribution(v: &str) -> Result<Distribution, String> {
    let v = v.trim();
    let (kind, rest) = v.split_once(':').unwrap_or((v, ""));
    let num = |what: &str| -> Result<f64, String> {
        if rest.contains(':') {
            return Err(format!(
                "{kind}: a center (:{}) is not supported",
                rest.split(':').nth(1).unwrap_or("")
            ));
        }
        rest.trim().parse::<f64>().map_err(|_| format!("{kind} needs its {what}, e.g. {kind}:1.2"))
    };
    let d = match kind {
        "random" => Distribution::Random,
        "zipf" => Distribution::Zipf(num("theta")?),
        "pareto" => Distribution::Pareto(num("h")?),
        "normal" | "gauss" => Distribution::Normal(num("deviation in percent")?),
        "zoned" => {
            let mut zones = Vec::new();
            for z in rest.split(':').filter(|z| !z.trim().is_empty()) {
                let (a, r) = z.split_once('/').ok_or("zoned: give access%/range%, e.g. zoned:60/10:40/90")?;
                let a: u32 = a.trim().parse().map_err(|_| format!("zoned: '{a}' is not a percentage"))?;
                let given: u32 = zones.iter().map(|(_, r)| *r).sum();
                // A blank range takes what is left, as fio's example `20/` does.
                let r: u32 = if r.trim().is_empty() {
                    100u32.saturating_sub(given)
                } else {
                    r.trim().parse().map_err(|_| format!("zoned: '{r}' is not a percentage"))?
                };
                zones.push((a, r));
            }
            Distribution::Zoned(zones)
        }
        _ => {
            return Err(
                "random, zipf:θ, pareto:h, normal:σ or zoned:... (zoned_abs and sequence are not supported)"
                    .into(),
            )
        }
    };
    d.validate()?;
    Ok(d)
}

/// Options of one section, with their line numbers.
type Options = Vec<(usize, String, String)>;

/// Strips a trailing `; comment` or `# comment` (after blank space), as fio does.
fn strip_comment(l: &str) -> &str {
    let cut =
        l.char_indices().find(|(i, c)| (*c == ';' || *c == '#') && l[..*i].ends_with(char::is_whitespace));
    match cut {
        Some((i, _)) => l[..i].trim_end(),
        None => l,
    }
}

/// The sections of a job file: [global]'s options, and each job's.
fn sections(text: &str) -> Result<(Options, Vec<(String, Options)>), FioError> {
    let mut global: Options = Vec::new();
    let mut sections: Vec<(String, Options)> = Vec::new();
    let mut in_global = false;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let l = strip_comment(raw.trim());
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
            None if l.starts_with("include ") => ("include".to_string(), l[8..].trim().to_string()),
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
    Ok((global, sections))
}

/// Imports a whole job file; `name` names it in results, `ctx` says where its absolute paths lie.
pub fn import(text: &str, name: &str, ctx: &Context) -> Result<Import, FioError> {
    let (global, sections) = sections(text)?;
    let mut jobs = Vec::new();
    let mut notes = Vec::new();
    for (section, opts) in sections {
        let mut job = FioJob::new(&section, Rw::Read);
        // A fio job runs one pass over its data unless it says time_based.
        job.time_based = false;
        let mut has_rw = false;
        let mut mine = Vec::new();
        for (line, k, v) in global.iter().chain(opts.iter()) {
            has_rw |= k == "rw" || k == "readwrite";
            let treatment = apply(&mut job, ctx, *line, k, v)?;
            mine.push(OptionNote { line: *line, option: k.clone(), value: v.clone(), treatment });
        }
        if !has_rw {
            // fio's default is rw=read; a job without rw in a job file is usually a mistake,
            // but fio's own examples rely on the default.
            mine.push(OptionNote {
                line: 0,
                option: "rw".into(),
                value: "read".into(),
                treatment: Treatment::Mapped("fio's default, rw=read".into()),
            });
        }
        job.validate().map_err(|why| FioError::Invalid { job: job.name.clone(), why })?;
        jobs.push(job);
        notes.push(mine);
    }
    let file = FioFile { name: name.into(), jobs };
    file.validate().map_err(|why| FioError::Invalid { job: name.into(), why })?;
    Ok(Import { file, notes })
}

/// A job file's name in results: its file name without the extension.
pub fn file_name(path: &std::path::Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "job-file".into())
}

/// Parses a fio job file's jobs (absolute paths refused).
pub fn parse(text: &str) -> Result<Vec<FioJob>, FioError> {
    import(text, "job-file", &Context::default()).map(|i| i.file.jobs)
}

/// One line per job: what runs (engine, pattern, sizes, distribution, rate, order).
pub fn describe_job(file: &FioFile, j: usize) -> String {
    let job = &file.jobs[j];
    let mut s = format!(
        "{} ×{}: {} {} bs {} on {} file(s) in {}, {} per file",
        job.name,
        job.numjobs,
        job.ioengine.as_str(),
        rw_text(job),
        job.describe_bs(),
        job.files_per_clone(),
        job.dir(),
        Size(job.file_size())
    );
    if job.ioengine.asynchronous() {
        s += &format!(", iodepth {}", job.iodepth);
    }
    if job.rw.random() {
        s += &format!(
            ", {}{}",
            job.random_distribution.describe(),
            if job.norandommap || !job.random_distribution.uniform() { "" } else { " (random map)" }
        );
    }
    if job.direct {
        s += ", O_DIRECT";
    }
    match (job.rate, job.rate_iops) {
        (Some(r), _) => s += &format!(", rate {r}/s"),
        (_, Some(i)) => s += &format!(", rate {i} IOPS"),
        _ => {}
    }
    if let Some(m) = job.rate_min {
        s += &format!(", rate_min {m}/s");
    }
    s += &if job.time_based {
        job.runtime.map(|r| format!(", {r} s")).unwrap_or_else(|| ", until the run stops it".into())
    } else {
        format!(", {} pass(es) of {}", job.loops, Size(job.pass_bytes()))
    };
    let waits = file.waits_for(j);
    if !waits.is_empty() {
        s += &format!(
            ", after {}",
            waits.iter().map(|w| file.jobs[*w].name.as_str()).collect::<Vec<_>>().join(", ")
        );
    }
    if job.startdelay > 0.0 {
        s += &format!(", {} s delay", job.startdelay);
    }
    s
}

fn rw_text(job: &FioJob) -> String {
    let rw =
        serde_json::to_value(job.rw).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
    match job.rw {
        Rw::Readwrite | Rw::Randrw => format!("{rw} {}% reads", job.rwmixread),
        _ if job.rw_skip != 0 => format!("{rw} skipping {} after each op", job.rw_skip),
        _ => rw,
    }
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
    fn an_unsupported_option_is_named_with_its_line() {
        let e = parse("[j]\nrw=read\nzonemode=zbd\n").expect_err("device");
        assert!(matches!(&e, FioError::Refused { line: 3, option, .. } if option == "zonemode"), "{e}");
        let e = parse("[j]\nrw=read\nfrobnicate=1\n").expect_err("unknown");
        assert_eq!(e, FioError::Unsupported { line: 3, option: "frobnicate".into() });
        for engine in ["posixaio", "mmap", "rbd"] {
            let e = parse(&format!("[j]\nrw=read\nioengine={engine}\n")).expect_err(engine);
            assert!(e.to_string().contains("io_uring") && e.to_string().contains("line 3"), "{e}");
        }
        for refused in [
            "rate=1m,2m",
            "rate_iops=10,20",
            "size=50%",
            "rw=randread:8",
            "bs=${FIO_BS}",
            "sync=dsync",
            "random_distribution=zipf:1.2:0.5",
            "startdelay=1-5",
        ] {
            let e = parse(&format!("[j]\nrw=read\n{refused}\n")).expect_err(refused);
            assert!(matches!(e, FioError::BadValue { line: 3, .. }), "{refused}: {e}");
        }
        for contents in [
            "dedupe_percentage=50",
            "buffer_compress_percentage=50",
            "fill_device=1",
            "exitall",
            "rw=randtrim",
        ] {
            let e = parse(&format!("[j]\nrw=read\n{contents}\n")).expect_err(contents);
            assert!(matches!(e, FioError::Refused { line: 3, .. }), "{contents}: {e}");
        }
        assert!(matches!(parse("[global]\nrw=read\n"), Err(FioError::NoJobs)));
        assert!(matches!(parse("[j]\nrw=read\nbs=4q\n"), Err(FioError::BadValue { .. })));
        assert!(matches!(parse("[j]\nrw=read\nsize=3000\n"), Err(FioError::Invalid { .. })));
    }

    /// fio's verify options, output options and tuning the agent cannot apply are never a
    /// refusal: mapped or ignored, each with its note.
    #[test]
    fn verify_and_output_options_are_mapped_or_ignored_with_a_note() {
        let i = import(
            "[j]\nrw=randwrite\nverify=crc32c\nverify_fatal=1\ndo_verify=1\nwrite_lat_log=lat\nlog_avg_msec=100\n\
             percentile_list=50:99\ngtod_reduce=1\nthread\ncpus_allowed=0\nrandom_generator=lfsr\n",
            "v",
            &Context::default(),
        )
        .expect("accepted");
        let t = |o: &str| i.notes[0].iter().find(|n| n.option == o).map(|n| n.treatment.clone()).expect(o);
        for o in [
            "verify",
            "verify_fatal",
            "do_verify",
            "write_lat_log",
            "log_avg_msec",
            "percentile_list",
            "thread",
            "random_generator",
        ] {
            assert!(matches!(t(o), Treatment::Mapped(_)), "{o}");
        }
        for o in ["gtod_reduce", "cpus_allowed"] {
            assert!(matches!(t(o), Treatment::Ignored(_)), "{o}");
        }
        assert!(i.file.jobs[0].verify, "miglab's own verification stays on");
    }

    /// A whole file: every job, [global] for all, fio's default rw=read, stonewall and
    /// wait_for ordering, new reporting groups, description and name.
    #[test]
    fn every_job_of_a_file_with_its_order_and_groups() {
        let i = import(
            "[global]\nsize=1m\ndescription=the file's jobs\n\n[w]\nrw=write\nbs=128k\nnumjobs=2\n\n[r]\nrw=randread\n\n\
             [after]\nstonewall\nname=third\n\n[last]\nwait_for=w\nnew_group\n\n[plain]\n",
            "f",
            &Context::default(),
        )
        .expect("accepted");
        let f = &i.file;
        let names: Vec<&str> = f.jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names, ["w", "r", "third", "last", "plain"]);
        assert_eq!(f.jobs[4].rw, Rw::Read, "fio's default");
        assert_eq!(f.jobs[1].description, "the file's jobs");
        assert_eq!(f.waits_for(0), Vec::<usize>::new());
        assert_eq!(f.waits_for(1), Vec::<usize>::new(), "concurrent with w");
        assert_eq!(f.waits_for(2), vec![0, 1], "stonewall: every job before");
        assert_eq!(f.waits_for(3), vec![0]);
        assert_eq!(f.groups(), vec![0, 0, 1, 2, 2]);
        assert_eq!(f.instances().len(), 6, "numjobs multiplies");
        let e =
            import("[a]\nrw=read\nwait_for=b\n[b]\nrw=read\n", "f", &Context::default()).expect_err("later");
        assert!(e.to_string().contains("wait_for=b"), "{e}");
    }

    /// Sizes and block sizes with fio's meanings.
    #[test]
    fn block_sizes_sizes_and_distributions_mean_what_fio_means() {
        let j = &parse("[j]\nrw=randrw\nbs=4k,8k\nsize=1m\n").expect("bs r,w")[0];
        assert_eq!(
            (j.sizes(true), j.sizes(false)),
            (BlockSizes::Fixed(Size(4096)), BlockSizes::Fixed(Size(8192)))
        );
        assert_eq!(j.unit(), 4096);
        let j = &parse("[j]\nrw=randrw\nbs=,8k\nsize=1m\n").expect("write only")[0];
        assert_eq!(
            (j.sizes(true), j.sizes(false)),
            (BlockSizes::Fixed(Size(4096)), BlockSizes::Fixed(Size(8192)))
        );
        // bssplit: blank percentages share what is left.
        let j = &parse("[j]\nrw=randread\nbssplit=4k/50:64k/:16k/\nsize=4m\n").expect("bssplit")[0];
        assert_eq!(
            j.sizes(true),
            BlockSizes::Split(vec![(Size(4096), 50), (Size(65536), 25), (Size(16384), 25)])
        );
        let j = &parse("[j]\nrw=read\nbsrange=4k-16k\nsize=1m\n").expect("bsrange")[0];
        assert_eq!(j.sizes(true).sizes(), vec![4096, 8192, 12288, 16384]);
        // filesize makes the files that size; size is then what a pass does.
        let j = &parse("[j]\nrw=read\nfilesize=2m\nsize=1m\nnrfiles=2\n").expect("filesize")[0];
        assert_eq!((j.file_size(), j.pass_bytes()), (2 << 20, 1 << 20));
        let j = &parse("[j]\nrw=randread\nsize=1m\nrandom_distribution=zipf:1.2\nnorandommap\n")
            .expect("zipf")[0];
        assert_eq!(j.random_distribution, Distribution::Zipf(1.2));
        assert!(j.norandommap);
        let j = &parse("[j]\nrw=randread\nsize=1m\nrandom_distribution=zoned:50/5:30/15:20/\n")
            .expect("zoned")[0];
        assert_eq!(j.random_distribution, Distribution::Zoned(vec![(50, 5), (30, 15), (20, 80)]));
        let j = &parse("[j]\nrw=read:-8k\nbs=4k\nsize=1m\n").expect("backwards")[0];
        assert_eq!(j.rw_skip, -8192);
        let j =
            &parse("[j]\nrw=read\nbuffered=0\nthinktime=2000\nstartdelay=4\nrate_min=1k\nsize=1m\nloops=3\n")
                .expect("misc")[0];
        assert!(j.direct);
        assert_eq!((j.thinktime_us, j.startdelay, j.rate_min, j.loops), (2000, 4.0, Some(Size(1024)), 3));
        let j =
            &parse("[j]\nrw=randread\nsize=1m\nio_submit_mode=offload\nrate_iops=50\nrate_process=poisson\n")
                .expect("poisson")[0];
        assert_eq!(j.rate_process, RateProcess::Poisson);
    }

    /// `filename` below the workload's directory, shared by every clone; a device or a path
    /// outside the share is refused by name, unless the scenario says where the file was
    /// mounted; trailing comments go.
    #[test]
    fn file_names_stay_inside_the_share() {
        let j =
            &parse("[j]\nrw=read\nsize=1m\nnumjobs=2\nfilename=a:b\\:c\t; two files\n").expect("names")[0];
        assert_eq!(j.file_names(0), vec!["a", "b:c"]);
        assert_eq!(j.file_names(1), j.file_names(0), "clones share fio's filename");
        assert_eq!(j.dir(), "miglab");
        let j = &parse("[j]\nrw=read\nsize=1m\nnrfiles=2\nfilename_format=data.$jobnum.$filenum\n")
            .expect("fmt")[0];
        assert_eq!(j.file_names(1), vec!["data.1.0", "data.1.1"]);
        let e = parse("[j]\nrw=read\nfilename=/dev/sdb\n").expect_err("device");
        assert!(e.to_string().contains("device"), "{e}");
        let e = parse("[j]\nrw=read\ndirectory=/data1\n").expect_err("outside");
        assert!(e.to_string().contains("outside the share") && e.to_string().contains("fio_mount"), "{e}");
        let ctx = Context { mount: Some("/data1".into()) };
        let i = import("[j]\nrw=read\nsize=1m\ndirectory=/data1/x\n", "m", &ctx).expect("inside the mount");
        assert_eq!(i.file.jobs[0].dir(), "x");
        let i = import("[j]\nrw=read\nsize=1m\nfilename=/data1/t\n", "m", &ctx).expect("a file in it");
        assert_eq!(
            (i.file.jobs[0].dir(), i.file.jobs[0].file_names(0)),
            (".".to_string(), vec!["t".to_string()])
        );
        assert!(import("[j]\nrw=read\ndirectory=/data10\n", "m", &ctx).is_err(), "not below /data1");
        assert!(parse("[j]\nrw=read\nfilename=../x\n").is_err());
    }

    #[test]
    fn times_have_units() {
        assert_eq!(seconds("30"), Some(30.0));
        assert_eq!(seconds("2m"), Some(120.0));
        assert_eq!(seconds("500ms"), Some(0.5));
        assert_eq!(seconds("x"), None);
    }
}

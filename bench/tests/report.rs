//! The HTML reports: their structure against a snapshot (from the example result of a real run
//! under `docs/example/`), re-rendering from the files alone, and the page opened in a real
//! headless Chromium — no console error, a screenshot that is not blank, no request for
//! anything outside the file.

mod common;

use common::miglab;
use miglab_model::{RunResult, SweepCell};
use miglab_reports::html::{external_references, run_report, structure};
use miglab_reports::sweep::Rep;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn example() -> RunResult {
    let p = repo().join("docs/example/result.json");
    serde_json::from_slice(&std::fs::read(&p).expect("docs/example/result.json")).expect("a result")
}

/// Whether the charts' font is there; without it the report cannot be drawn. `ci/test` sets
/// MIGLAB_REQUIRE_ALL, so there a missing font fails instead of skipping.
fn font_or_skip(test: &str) -> bool {
    match miglab_reports::charts::font() {
        Ok(()) => true,
        Err(e) if std::env::var_os("MIGLAB_REQUIRE_ALL").is_none() => {
            eprintln!("SKIPPED {test}: {e}");
            false
        }
        Err(e) => panic!("{test}: {e}"),
    }
}

/// Compares `got` with the snapshot `name` under tests/fixtures; MIGLAB_BLESS=1 rewrites it.
fn snapshot(name: &str, got: &str) {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    if std::env::var_os("MIGLAB_BLESS").is_some() {
        std::fs::write(&p, got).expect("write the snapshot");
        return;
    }
    let want = std::fs::read_to_string(&p).unwrap_or_default();
    assert_eq!(got, want, "{} differs from the report (MIGLAB_BLESS=1 cargo test rewrites it)", p.display());
}

/// A sweep of two cells made of the example (the second with other figures), three
/// repetitions each.
fn example_sweep() -> Vec<Rep> {
    let r = example();
    let mut reps = Vec::new();
    for (cell, scale) in [("downtime_limit_ms=50", 1.0), ("downtime_limit_ms=300", 0.5)] {
        for rep in 1..=3u32 {
            let mut x = r.clone();
            x.repetition = rep;
            for m in &mut x.migrations {
                m.downtime_ms = m.downtime_ms.map(|d| (d as f64 * scale) as u64 + rep as u64 * 7);
            }
            reps.push(Rep { cell: SweepCell::from_name(cell), result: x });
        }
    }
    reps
}

/// A sweep along a numeric axis (files held, as `virtiofsd-state`): two lines, three
/// repetitions of each point, the downtime and the device-state phase growing with the files
/// (2 ms a file on one line, 0.1 on the other).
fn scaling_sweep() -> Vec<Rep> {
    let r = example();
    let mut reps = Vec::new();
    for files in [100u64, 1000, 10000] {
        for (args, per_file) in [("none", 2.0), ("file-handles", 0.1)] {
            for rep in 1..=3u32 {
                let mut x = r.clone();
                x.repetition = rep;
                for m in &mut x.migrations {
                    let d = 60.0 + per_file * files as f64 + f64::from(rep);
                    m.downtime_ms = Some(d as u64);
                    let stop = m.phases.stop_ms.unwrap_or(m.started_ms);
                    m.phases.device_ms = Some(stop + 5.0);
                    m.phases.resume_ms = Some(stop + d);
                }
                reps.push(Rep {
                    cell: SweepCell::from_name(&format!("files={files},virtiofsd_args={args}")),
                    result: x,
                });
            }
        }
    }
    reps
}

#[test]
fn a_sweep_along_a_numeric_axis_charts_and_fits_the_cost_per_unit() {
    if !font_or_skip("a_sweep_along_a_numeric_axis_charts_and_fits_the_cost_per_unit") {
        return;
    }
    let html = miglab_reports::sweep::report("state", &scaling_sweep()).expect("render");
    let s = structure(&html);
    assert!(s.contains("section: Scaling with files\n"), "{s}");
    // 2 ms a file is 2000 µs, exactly (the repetitions add the same to every point).
    assert!(
        html.contains("<td class=\"l\">virtiofsd_args=none</td><td>9</td><td>2000 (2000–2000)</td>"),
        "{html}"
    );
    assert!(html.contains("<td class=\"l\">virtiofsd_args=file-handles</td><td>9</td><td>100 (100–100)</td>"));
    assert!(html.contains("log scale"), "the files axis is logarithmic");
    let (plain, scaled) = (
        miglab_reports::sweep::report("example", &example_sweep()).expect("render").matches("<svg").count(),
        html.matches("<svg").count(),
    );
    assert_eq!(scaled, plain + 2, "downtime and device state against files");
}

#[test]
fn the_run_report_has_its_sections_charts_and_axes() {
    if !font_or_skip("the_run_report_has_its_sections_charts_and_axes") {
        return;
    }
    let r = example();
    let html = run_report(&r).expect("render");
    let s = structure(&html);
    for section in ["Outcome", "Figures", "Over time", "Latency spectrum", "Downtime decomposition", "Faults"]
    {
        assert!(s.contains(&format!("section: {section}\n")), "no {section} section:\n{s}");
    }
    assert!(external_references(&html).is_empty(), "{:?}", external_references(&html));
    snapshot("report-structure.txt", &s);
}

fn convergence_example() -> RunResult {
    let p = repo().join("docs/example/convergence/result.json");
    serde_json::from_slice(&std::fs::read(&p).expect("docs/example/convergence/result.json"))
        .expect("a result")
}

/// A run with a dirtying load (`scenarios/auto-converge.toml`): the Convergence section names
/// the knobs, the dirty rate QEMU measured, the throttle, every pass and the pages read back.
#[test]
fn the_convergence_section_has_the_knobs_every_pass_and_the_pages() {
    if !font_or_skip("the_convergence_section_has_the_knobs_every_pass_and_the_pages") {
        return;
    }
    let r = convergence_example();
    let m = &r.migrations[0];
    let html = run_report(&r).expect("render");
    assert!(structure(&html).contains("section: Convergence\n"));
    for want in [
        "cap 16 MiB/s, auto-converge 60+20 %".to_string(),
        format!(
            "{} pages on c2: 0 stale, 0 corrupt",
            r.memory.as_ref().and_then(|m| m.checks[0].check.as_ref()).expect("the pages were checked").pages
        ),
        format!("<td>{}</td>", m.convergence.passes.len()),
        format!("<td>{}</td>", m.convergence.max_throttle_pct.expect("auto-converge throttled")),
        "every pre-copy pass".into(),
        "48 MiB at 32 MiB/s".into(),
    ] {
        assert!(html.contains(&want), "the report lacks {want:?}");
    }
    // A run without a dirtying load or pre-copy's figures has no such section.
    let mut plain = example();
    plain.memory = None;
    for m in &mut plain.migrations {
        m.convergence = Default::default();
    }
    assert!(!structure(&run_report(&plain).expect("render")).contains("section: Convergence"));
}

#[test]
fn the_sweep_report_has_its_sections_charts_and_axes() {
    if !font_or_skip("the_sweep_report_has_its_sections_charts_and_axes") {
        return;
    }
    let html = miglab_reports::sweep::report("example", &example_sweep()).expect("render");
    assert!(external_references(&html).is_empty(), "{:?}", external_references(&html));
    snapshot("sweep-structure.txt", &structure(&html));
}

/// The embedded result.json is the whole result: read back out of the page, it is the same.
#[test]
fn the_report_carries_the_whole_result() {
    if !font_or_skip("the_report_carries_the_whole_result") {
        return;
    }
    let r = example();
    let html = run_report(&r).expect("render");
    let start = html.find("<pre id=\"result-json\">").expect("an embedded result") + 22;
    let end = start + html[start..].find("</pre>").expect("its end");
    let text = html[start..end].replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&");
    let back: RunResult = serde_json::from_str(&text).expect("the embedded result parses");
    assert_eq!(serde_json::to_value(&back).expect("json"), serde_json::to_value(&r).expect("json"));
}

/// `miglab report` renders a run's report and a sweep's from the files alone, and names what is
/// wrong with a directory that is neither.
#[test]
fn miglab_report_renders_from_the_files_alone() {
    if !font_or_skip("miglab_report_renders_from_the_files_alone") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let run = tmp.path().join("run");
    std::fs::create_dir_all(&run).expect("mkdir");
    std::fs::copy(repo().join("docs/example/result.json"), run.join("result.json")).expect("copy");
    let sweep = tmp.path().join("sweep");
    for (i, rep) in example_sweep().into_iter().enumerate() {
        let mut r = rep.result;
        r.clock.started_unix_ms += i as u64 * 60_000;
        let d = sweep.join(rep.cell.name()).join(r.repetition.to_string());
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::write(d.join("result.json"), serde_json::to_vec(&r).expect("json")).expect("write");
    }
    let out = miglab().arg("report").arg(&run).arg(&sweep).output().expect("miglab report");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(run.join("report.html").exists() && sweep.join("sweep.html").exists());
    let csv = std::fs::read_to_string(sweep.join("sweep.csv")).expect("sweep.csv");
    assert_eq!(csv.lines().count(), 7, "a header and six repetitions:\n{csv}");
    // Cells in the order they ran: downtime_limit_ms=50 first although it sorts after 300.
    assert!(csv.lines().nth(1).is_some_and(|l| l.contains("downtime_limit_ms=50")), "{csv}");

    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).expect("mkdir");
    let out = miglab().arg("report").arg(&empty).output().expect("miglab report");
    assert_eq!(out.status.code(), Some(2), "bad input exits 2");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("neither result.json nor a sweep"), "{err}");
}

/// What Chromium made of a page.
struct Opened {
    console: Vec<String>,
    /// Every URL the page asked the network for.
    requests: Vec<String>,
    dom: String,
    /// Share of the screenshot's pixels that are not white, and how many colours it has.
    inked: f64,
    colours: usize,
}

/// Opens `page` in headless Chromium in a network namespace of its own (nothing it asks for can
/// leave the machine): once for the DOM, once for a screenshot with a network log.
fn open_in_chromium(page: &Path) -> Opened {
    let dir = tempfile::tempdir().expect("tmp");
    let url = format!("file://{}", page.canonicalize().expect("page").display());
    let run = |extra: &[String]| {
        let out = Command::new("unshare")
            .args(["--net", "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"])
            .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
            .arg(format!("--user-data-dir={}", dir.path().join("profile").display()))
            .args(["--enable-logging=stderr", "--virtual-time-budget=3000", "--window-size=1200,2400"])
            .args(extra)
            .arg(&url)
            .output()
            .expect("run chromium (ci/setup installs it)");
        assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
        out
    };
    let shot = dir.path().join("shot.png");
    let net = dir.path().join("net.json");
    let first = run(&["--dump-dom".into()]);
    let second =
        run(&[format!("--screenshot={}", shot.display()), format!("--log-net-log={}", net.display())]);
    let console = [&first.stderr, &second.stderr]
        .iter()
        .flat_map(|e| String::from_utf8_lossy(e).lines().map(str::to_string).collect::<Vec<_>>())
        .filter(|l| l.contains(":CONSOLE"))
        // Chromium's own pages log too (a "slow network" note from chrome://resources was seen
        // in CI); only what the page under test says counts.
        .filter(|l| !l.contains("source: chrome://"))
        .collect();

    // The page's own requests carry its origin (file://) in their network isolation key; the
    // browser's background ones do not.
    let log: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&net).expect("net log")).expect("json");
    let events = log["events"].as_array().cloned().unwrap_or_default();
    let page_sources: Vec<u64> = events
        .iter()
        .filter(|e| e["params"]["network_isolation_key"].as_str().is_some_and(|k| k.contains("file://")))
        .filter_map(|e| e["source"]["id"].as_u64())
        .collect();
    let mut requests: Vec<String> = events
        .iter()
        .filter(|e| e["source"]["id"].as_u64().is_some_and(|id| page_sources.contains(&id)))
        .filter_map(|e| e["params"]["url"].as_str().map(str::to_string))
        .collect();
    requests.dedup();

    let decoder = png::Decoder::new(std::fs::File::open(&shot).expect("screenshot"));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("its pixels");
    let px = info.color_type.samples();
    let pixels: Vec<&[u8]> = buf[..info.buffer_size()].chunks(px).collect();
    let inked =
        pixels.iter().filter(|p| p.iter().take(3).any(|c| *c < 240)).count() as f64 / pixels.len() as f64;
    let mut colours: Vec<&[u8]> = pixels.clone();
    colours.sort();
    colours.dedup();
    Opened {
        console,
        requests,
        dom: String::from_utf8_lossy(&first.stdout).into_owned(),
        inked,
        colours: colours.len(),
    }
}

/// Five runs of the example, their total migration time scaled by `scale` (and spread).
fn example_side(scale: f64) -> miglab_reports::compare::Side {
    let r = example();
    let runs = (1..=5u32)
        .map(|rep| {
            let mut x = r.clone();
            x.repetition = rep;
            x.status = miglab_model::RunStatus::Completed;
            for m in &mut x.migrations {
                m.total_time_ms = m.total_time_ms.map(|t| (t as f64 * scale) as u64 + rep as u64 * 11);
            }
            x
        })
        .collect();
    miglab_reports::compare::Side { runs, skipped: Vec::new() }
}

/// compare.html of the example against itself slowed down by half, and a trend of six nights.
fn compare_and_trend_pages(dir: &Path) -> Vec<PathBuf> {
    use miglab_reports::compare;
    let c = compare::compare(&example_side(1.0), &example_side(1.5), &compare::Options::default())
        .expect("compare");
    assert!(c.regressions() >= 1, "the slower side regressed");
    let cmp = dir.join("compare.html");
    std::fs::write(&cmp, compare::page(&c, "base", "cand").expect("render")).expect("write");
    let nights: Vec<miglab_reports::trend::Night> = [1.0, 1.0, 1.0, 1.5, 1.5, 1.5]
        .iter()
        .enumerate()
        .map(|(i, s)| miglab_reports::trend::Night {
            name: format!("2026-11-{:02}T0200-abc", i + 1),
            side: example_side(*s),
        })
        .collect();
    let trend = dir.join("trend.html");
    std::fs::write(&trend, miglab_reports::trend::page(&nights, 1).expect("render").0).expect("write");
    vec![cmp, trend]
}

fn chromium_present() {
    let ok = Command::new("chromium").arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(ok, "chromium is missing: run ci/setup (it installs Debian's chromium)");
}

/// The checks can fail: a page with a script error and an outside image is caught by both.
#[test]
#[ignore = "needs Debian's chromium (ci/setup installs it): cargo test -- --include-ignored"]
fn chromium_catches_a_broken_page() {
    chromium_present();
    let tmp = tempfile::tempdir().expect("tmp");
    let page = tmp.path().join("bad.html");
    std::fs::write(
        &page,
        "<!DOCTYPE html><html><body><p>broken</p><img src=\"http://192.0.2.1/x.png\">\
         <script>throw new Error(\"on purpose\")</script></body></html>",
    )
    .expect("write");
    let o = open_in_chromium(&page);
    assert!(o.console.iter().any(|l| l.contains("on purpose")), "no console error seen: {:?}", o.console);
    assert!(o.requests.iter().any(|u| u.contains("192.0.2.1")), "no outside request seen: {:?}", o.requests);
    assert!(o.inked < 0.01, "a near-blank page reads as blank: {}", o.inked);
}

#[test]
#[ignore = "needs Debian's chromium (ci/setup installs it): cargo test -- --include-ignored"]
fn the_reports_open_cleanly_in_chromium() {
    chromium_present();
    let tmp = tempfile::tempdir().expect("tmp");
    let r = example();
    let run = tmp.path().join("report.html");
    std::fs::write(&run, run_report(&r).expect("render")).expect("write");
    let converging = tmp.path().join("convergence.html");
    std::fs::write(&converging, run_report(&convergence_example()).expect("render")).expect("write");
    let sweep = tmp.path().join("sweep.html");
    std::fs::write(&sweep, miglab_reports::sweep::report("example", &example_sweep()).expect("render"))
        .expect("write");
    let scaled = tmp.path().join("scaled.html");
    std::fs::write(&scaled, miglab_reports::sweep::report("state", &scaling_sweep()).expect("render"))
        .expect("write");
    let more = compare_and_trend_pages(tmp.path());
    for page in [&run, &converging, &sweep, &scaled].into_iter().chain(&more) {
        let html = std::fs::read_to_string(page).expect("read");
        let o = open_in_chromium(page);
        assert!(o.console.is_empty(), "{}: console says {:?}", page.display(), o.console);
        assert!(o.requests.is_empty(), "{}: asked the network for {:?}", page.display(), o.requests);
        assert_eq!(
            o.dom.matches("<svg").count(),
            html.matches("<svg").count(),
            "{}: Chromium's DOM does not hold every chart",
            page.display()
        );
        assert!(o.dom.contains("<h2>"), "{}: no section in the DOM", page.display());
        assert!(
            o.inked > 0.02 && o.colours > 50,
            "{}: the screenshot looks blank ({:.1}% inked, {} colours)",
            page.display(),
            o.inked * 100.0,
            o.colours
        );
        eprintln!(
            "{}: {:.0}% of the screenshot inked, {} colours, {} charts",
            page.display(),
            o.inked * 100.0,
            o.colours,
            html.matches("<svg").count()
        );
    }
}

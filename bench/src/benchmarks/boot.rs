//! QEMU start → agent hello, over several boots on a host of a running site.

use miglab_infra::image::GuestImage;
use miglab_infra::paths;
use miglab_infra::topology::Site;
use miglab_infra::vm::{Vm, VmError, VmSpec};
use std::sync::Arc;

/// Boots `count` instances of `spec` on `host` one after the other; prints each and the median.
pub async fn run(site: &Arc<dyn Site>, spec: &VmSpec, host: &str, count: u32) -> Result<Vec<f64>, VmError> {
    let image = GuestImage::current(&paths::cache())?;
    println!(
        "boot: QEMU start → agent hello, {} MiB, {} on {host}, image {} (kernel {}, initramfs {:?} {:.1} MiB)",
        spec.memory_mib,
        spec.accel,
        image.manifest.key,
        image.manifest.kernel_release,
        image.manifest.compression,
        image.manifest.initramfs_bytes as f64 / 1048576.0
    );
    let mut ms = Vec::new();
    for i in 1..=count {
        let v = Vm::start(site, spec, host, i, false).await?;
        let boot = v.boot_ms.unwrap_or_default();
        let h = v.hello.clone().unwrap_or_default();
        println!(
            "  boot {i}: {boot:>6.0} ms  (guest uptime at hello {} ms, modules {} ms)",
            h.uptime_ms, h.modules_ms
        );
        ms.push(boot);
        v.stop().await?;
    }
    let mut sorted = ms.clone();
    sorted.sort_by(f64::total_cmp);
    if let (Some(lo), Some(hi)) = (sorted.first(), sorted.last()) {
        println!(
            "median {:.0} ms, min {lo:.0} ms, max {hi:.0} ms over {} boots",
            super::median(&sorted),
            sorted.len()
        );
    }
    Ok(ms)
}

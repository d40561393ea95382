//! `miglab image ...`

use super::ImageCmd;
use crate::exit::Finished;
use miglab_infra::image::{self, GuestImage, ImageError, ImageInputs};
use miglab_infra::paths;

pub(super) fn image_cmd(cmd: ImageCmd) -> Result<Finished, ImageError> {
    match cmd {
        ImageCmd::Build { agent, compress, no_busybox } => {
            let bar = crate::progress::bar("guest image", 2, crate::progress::Unit::Steps);
            let agent = match agent {
                Some(a) => a,
                None => {
                    let tree = image::source_tree().ok_or_else(|| ImageError::NoAgent("--agent".into()))?;
                    bar.set_message("building the guest agent with cargo");
                    image::build_agent(&tree)?
                }
            };
            bar.inc(1);
            bar.set_message(format!("assembling kernel, modules and a {compress:?} initramfs"));
            let mut inputs = ImageInputs::defaults(agent);
            inputs.compression = compress;
            if no_busybox {
                inputs.busybox = None;
            }
            let built = image::build(&inputs, &paths::cache());
            bar.finish_and_clear();
            let (img, reused) = built?;
            print_image(&img, if reused { "reused" } else { "built" });
            Ok(Finished::Clean)
        }
        ImageCmd::Show => {
            print_image(&GuestImage::current(&paths::cache())?, "current");
            Ok(Finished::Clean)
        }
    }
}

fn print_image(img: &GuestImage, what: &str) {
    let m = &img.manifest;
    println!("guest image {} ({what}) in {}", m.key, img.dir.display());
    println!("  kernel     {} (vmlinux {:.1} MiB)", m.kernel_release, m.vmlinux_bytes as f64 / 1048576.0);
    println!("  initramfs  {:.1} MiB: modules {}", m.initramfs_bytes as f64 / 1048576.0, m.modules.join(" "));
    println!("  agent      sha256 {}", &m.agent_sha256[..16]);
    println!("  busybox    {}", m.busybox.as_deref().unwrap_or("none"));
}

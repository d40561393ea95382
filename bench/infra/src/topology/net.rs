//! The lab network: a bridge in the root namespace, one network namespace per client host with
//! a veth into the bridge, token-bucket shaping with tc, and partitions with nftables. Only
//! the real tools are used, always with argument vectors.

use crate::paths::tool;
use crate::process::{run_tool, run_tool_with_input, ToolError, ToolOutput};
use miglab_faults::LinkShape;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use thiserror::Error;

const TOOL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum NetError {
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error("{what} '{name}' already exists: another lab (or a leftover) uses it; run `miglab lab down --name <that lab>` or choose another --name / --subnet")]
    Busy { what: &'static str, name: String },
    #[error("the link {link} is still shaped after its tbf qdisc was removed")]
    StillShaped { link: String },
}

fn run(program: &str, args: &[&str]) -> Result<ToolOutput, NetError> {
    Ok(run_tool(Command::new(tool(program)).args(args), TOOL_TIMEOUT)?)
}

/// Feeds `script` to `ip -batch -` on stdin (one process for many link commands, and no
/// script file in a shared directory).
fn ip_batch(netns: Option<&str>, script: &str) -> Result<(), NetError> {
    let mut cmd = Command::new(tool("ip"));
    if let Some(ns) = netns {
        cmd.args(["-n", ns]);
    }
    cmd.args(["-batch", "-"]);
    run_tool_with_input(&mut cmd, Some(script.as_bytes()), TOOL_TIMEOUT)?;
    Ok(())
}

pub fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

pub fn netns_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

pub fn netns_exists(name: &str) -> bool {
    netns_path(name).exists()
}

/// Creates the bridge with the lab's gateway address.
pub fn create_bridge(bridge: &str, gateway: Ipv4Addr, prefix: u8) -> Result<(), NetError> {
    if link_exists(bridge) {
        return Err(NetError::Busy { what: "bridge", name: bridge.into() });
    }
    ip_batch(
        None,
        &format!(
            "link add {bridge} type bridge forward_delay 0 stp_state 0\n\
             addr add {gateway}/{prefix} dev {bridge}\n\
             link set {bridge} up\n"
        ),
    )
}

/// Creates host namespace `netns` whose `eth0` (address `addr`) is a veth into `bridge`.
pub fn create_host(
    netns: &str,
    veth: &str,
    bridge: &str,
    addr: Ipv4Addr,
    prefix: u8,
) -> Result<(), NetError> {
    if netns_exists(netns) {
        return Err(NetError::Busy { what: "network namespace", name: netns.into() });
    }
    if link_exists(veth) {
        return Err(NetError::Busy { what: "link", name: veth.into() });
    }
    run("ip", &["netns", "add", netns])?;
    ip_batch(
        None,
        &format!(
            "link add {veth} type veth peer name eth0 netns {netns}\n\
             link set {veth} master {bridge}\n\
             link set {veth} up\n"
        ),
    )?;
    ip_batch(Some(netns), &format!("link set lo up\naddr add {addr}/{prefix} dev eth0\nlink set eth0 up\n"))
}

/// Deletes a link; a link already gone is fine.
pub fn delete_link(name: &str) -> Result<(), NetError> {
    if !link_exists(name) {
        return Ok(());
    }
    run("ip", &["link", "del", name]).map(|_| ())
}

pub fn delete_netns(name: &str) -> Result<(), NetError> {
    if !netns_exists(name) {
        return Ok(());
    }
    run("ip", &["netns", "del", name]).map(|_| ())
}

/// Shapes both directions of a host's link with tbf, or removes the shaping.
pub fn shape(netns: &str, veth: &str, shape: Option<LinkShape>) -> Result<(), NetError> {
    match shape {
        Some(s) => {
            let rate = format!("{}kbit", s.rate_kbit);
            let burst = s.burst_bytes.to_string();
            let latency = format!("{}ms", s.latency_ms);
            let tbf = ["root", "tbf", "rate", &rate, "burst", &burst, "latency", &latency];
            run("tc", &[&["qdisc", "replace", "dev", veth][..], &tbf].concat())?;
            run("tc", &[&["-n", netns, "qdisc", "replace", "dev", "eth0"][..], &tbf].concat())?;
        }
        None => {
            // Deleting the root qdisc restores the default; the error of an end that had none
            // means nothing to do, so what counts is what is left afterwards.
            let host = run("tc", &["qdisc", "del", "dev", veth, "root"]).err();
            let guest = run("tc", &["-n", netns, "qdisc", "del", "dev", "eth0", "root"]).err();
            if shaped(netns, veth)? {
                return Err(host.or(guest).unwrap_or(NetError::StillShaped { link: veth.into() }));
            }
        }
    }
    Ok(())
}

/// Whether either end of a host's link is shaped (a tbf qdisc on it).
pub fn shaped(netns: &str, veth: &str) -> Result<bool, NetError> {
    let host = run("tc", &["qdisc", "show", "dev", veth])?.stdout;
    let guest = run("tc", &["-n", netns, "qdisc", "show", "dev", "eth0"])?.stdout;
    Ok(host.contains("tbf") || guest.contains("tbf"))
}

/// The nftables script that drops all traffic of the `cut` links on the bridge (the links
/// stay up, so TCP backs off as it would on a real partition).
pub fn partition_script(table: &str, cut: &[String]) -> String {
    let mut s = format!("table bridge {table} {{}}\ndelete table bridge {table}\n");
    if cut.is_empty() {
        return s;
    }
    let set = cut.iter().map(|l| format!("\"{l}\"")).collect::<Vec<_>>().join(", ");
    s.push_str(&format!(
        "table bridge {table} {{\n\
         \tchain input {{ type filter hook input priority 0; policy accept; iifname {{ {set} }} drop; }}\n\
         \tchain forward {{ type filter hook forward priority 0; policy accept; iifname {{ {set} }} drop; oifname {{ {set} }} drop; }}\n\
         \tchain output {{ type filter hook output priority 0; policy accept; oifname {{ {set} }} drop; }}\n\
         }}\n"
    ));
    s
}

/// Installs the partition for exactly the links in `cut` (none: the table is removed).
pub fn partition(table: &str, cut: &[String]) -> Result<(), NetError> {
    let script = partition_script(table, cut);
    run_tool_with_input(Command::new(tool("nft")).args(["-f", "-"]), Some(script.as_bytes()), TOOL_TIMEOUT)?;
    Ok(())
}

pub fn nft_table_exists(table: &str) -> bool {
    run("nft", &["list", "table", "bridge", table]).is_ok()
}

pub fn delete_nft_table(table: &str) -> Result<(), NetError> {
    if !nft_table_exists(table) {
        return Ok(());
    }
    run("nft", &["delete", "table", "bridge", table]).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_script_drops_both_directions_of_each_cut_link() {
        let s = partition_script("miglab_t", &["ml3c1".into()]);
        assert!(s.starts_with("table bridge miglab_t {}\ndelete table bridge miglab_t\n"));
        assert!(s.contains("hook input") && s.contains("hook output") && s.contains("hook forward"));
        assert_eq!(s.matches("\"ml3c1\"").count(), 4);
        let healed = partition_script("miglab_t", &[]);
        assert!(!healed.contains("chain"));
    }
}

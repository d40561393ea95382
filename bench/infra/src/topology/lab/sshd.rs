//! `lab up --ssh`: a real sshd (Debian's openssh-server) inside each client host's namespace,
//! with keys of the lab's own, and a `topology.toml` that reaches the hosts only through SSH
//! and uses the lab's cluster as an existing one — the external topology, tried on one machine.

use super::super::layout::ClientLayout;
use super::super::net;
use super::{io, Lab, LabError};
use crate::paths;
use crate::process::{self, ProcessSpec, Tier};
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Where the lab keeps its SSH keys and configs.
pub fn ssh_dir(lab_dir: &Path) -> PathBuf {
    lab_dir.join("ssh")
}

/// The topology file `lab up --ssh` writes.
pub fn topology_file(lab_dir: &Path) -> PathBuf {
    lab_dir.join("topology.toml")
}

fn keygen(path: &Path, comment: &str) -> Result<String, LabError> {
    process::run_tool(
        Command::new(paths::tool("ssh-keygen"))
            .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
            .arg(path),
        Duration::from_secs(10),
    )?;
    let public = std::fs::read_to_string(path.with_extension("pub"))
        .map_err(io(format!("read {}.pub", path.display())))?;
    // `type key`, without the comment.
    Ok(public.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
}

fn sshd_config(dir: &Path, c: &ClientLayout) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# sshd of lab host {} (miglab lab up --ssh)", c.name);
    let _ = writeln!(s, "ListenAddress {}:22", c.addr);
    let _ = writeln!(s, "HostKey {}", dir.join("host_ed25519").display());
    let _ = writeln!(s, "AuthorizedKeysFile {}", dir.join("authorized_keys").display());
    for line in [
        "PermitRootLogin prohibit-password",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "UseDNS no",
        // The lab directory is root's; sshd's checks of home directories do not apply.
        "StrictModes no",
        "PidFile none",
        "AllowTcpForwarding yes",
        "AllowStreamLocalForwarding yes",
        "LogLevel VERBOSE",
    ] {
        let _ = writeln!(s, "{line}");
    }
    s
}

impl Lab {
    /// Starts an sshd in every client host and writes the lab's SSH config and topology file.
    /// Returns the topology file.
    pub(super) fn start_sshd(&self) -> Result<PathBuf, LabError> {
        let sshd = paths::find_tool("sshd").ok_or_else(|| LabError::MissingTool {
            tool: "sshd".into(),
            fix: "apt-get install openssh-server (ci/setup does); the lab's sshd runs only inside its namespaces".into(),
        })?;
        let dir = ssh_dir(&self.layout.dir);
        std::fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io(format!("restrict {}", dir.display())))?;
        let name = &self.layout.name;
        let host_key = keygen(&dir.join("host_ed25519"), &format!("miglab lab {name} hosts"))?;
        let user_key = keygen(&dir.join("id_ed25519"), &format!("miglab lab {name}"))?;
        let write = |file: &str, text: &str| {
            let p = dir.join(file);
            std::fs::write(&p, text).map_err(io(format!("write {}", p.display())))
        };
        write("authorized_keys", &format!("{user_key}\n"))?;
        let known: String = self.layout.clients.iter().map(|c| format!("{} {host_key}\n", c.addr)).collect();
        write("known_hosts", &known)?;
        // sshd's privilege separation directory (the package's tmpfiles make it at boot).
        std::fs::create_dir_all("/run/sshd").map_err(io("create /run/sshd"))?;
        let mut client_config = String::from("# The lab's hosts, for `ssh -F` (miglab lab up --ssh)\n");
        for c in &self.layout.clients {
            let conf = format!("sshd_{}.conf", c.name);
            write(&conf, &sshd_config(&dir, c))?;
            let spec = ProcessSpec::new(
                format!("sshd.{}", c.name),
                sshd.clone(),
                self.log(&format!("sshd.{}", c.name)),
            )
            .tier(Tier::Client)
            .args(["-D", "-e", "-f"])
            .arg(dir.join(&conf))
            .in_netns(Some(net::netns_path(&c.netns)));
            let rec = self.sup.spawn(&spec)?;
            let addr = SocketAddr::from((c.addr, 22));
            crate::wait::until(
                &format!("sshd of {} to listen on {addr}", c.name),
                Duration::from_secs(10),
                Duration::from_millis(20),
                || {
                    if let Some(status) = self.sup.exit_status(&rec) {
                        return Err(LabError::DaemonDied {
                            name: rec.name.clone(),
                            status,
                            log: rec.log.clone(),
                            tail: process::log_tail(&rec.log, 15),
                        });
                    }
                    Ok(TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok().map(|_| ()))
                },
            )
            .map_err(|e| match e {
                crate::wait::WaitError::Failed(e) => e,
                e => LabError::Wait(e.to_string()),
            })?;
            let _ = write!(
                client_config,
                "\nHost {}\n  HostName {}\n  User root\n  IdentityFile {}\n  IdentitiesOnly yes\n  UserKnownHostsFile {}\n  StrictHostKeyChecking yes\n  BatchMode yes\n",
                c.name,
                c.addr,
                dir.join("id_ed25519").display(),
                dir.join("known_hosts").display()
            );
        }
        write("config", &client_config)?;
        let topo = topology_file(&self.layout.dir);
        std::fs::write(&topo, self.topology_text()).map_err(io(format!("write {}", topo.display())))?;
        Ok(topo)
    }

    fn topology_text(&self) -> String {
        let mut s = format!(
            "# Written by `miglab lab up --ssh` for lab '{}': its client hosts reached only through\n# SSH, its cluster used as an existing one.\n\n[ssh]\nconfig = \"ssh/config\"\n",
            self.layout.name
        );
        for c in &self.layout.clients {
            let _ = write!(
                s,
                "\n[[host]]\nname = \"{}\"\nssh = \"{}\"\naddress = \"{}\"\nmount = \"{}\"\nqemu = \"{}\"\nvirtiofsd = \"{}\"\nwork_dir = \"{}\"\n",
                c.name,
                c.name,
                c.addr,
                c.mount.display(),
                paths::tool(crate::binaries::QEMU).display(),
                paths::tool(crate::binaries::VIRTIOFSD).display(),
                self.layout.dir.join("remote").join(&c.name).display()
            );
        }
        // `ceph` commands (faults, health) run on the first host with the lab's conf and key.
        let _ = write!(
            s,
            // The lab's own throwaway cluster: faults that change it are allowed.
            "\n[ceph]\nkind = \"existing\"\nsubdir = \"miglab\"\nconf = \"{}\"\nkeyring = \"{}\"\nallow_destructive = true\n",
            self.layout.conf().display(),
            self.layout.keyring().display()
        );
        s
    }
}

//! The migration link: where the source sends the migration stream. Directly to the
//! destination's listening socket, or through a proxy that stands in the stream's way (to delay
//! or cap it: this kernel has no netem, and a userspace proxy works on any machine).

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "link", rename_all = "kebab-case")]
pub enum MigrationLink {
    /// The source connects to the destination itself.
    #[default]
    Direct,
    /// The source connects to `via`, which forwards to the destination.
    Proxied { via: SocketAddr },
}

impl MigrationLink {
    /// The URI of `migrate` on the source, for a destination listening on `dst`.
    pub fn source_uri(&self, dst: SocketAddr) -> String {
        match self {
            MigrationLink::Direct => format!("tcp:{dst}"),
            MigrationLink::Proxied { via } => format!("tcp:{via}"),
        }
    }

    /// The URI of `migrate-incoming` on the destination.
    pub fn destination_uri(dst: SocketAddr) -> String {
        format!("tcp:{dst}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proxied_link_points_the_source_at_the_proxy() {
        let dst: SocketAddr = "10.77.0.12:4444".parse().expect("addr");
        assert_eq!(MigrationLink::Direct.source_uri(dst), "tcp:10.77.0.12:4444");
        let via: SocketAddr = "10.77.0.1:4500".parse().expect("addr");
        assert_eq!(MigrationLink::Proxied { via }.source_uri(dst), "tcp:10.77.0.1:4500");
        assert_eq!(MigrationLink::destination_uri(dst), "tcp:10.77.0.12:4444");
    }
}

# miglab's Ceph admin channel: one librados connection, many commands. miglab writes one JSON
# command per line on stdin and reads one JSON reply per line on stdout. Starting the `ceph`
# CLI costs ~0.3 s of Python start-up per command; this pays it once.
import json
import sys

import rados

conffile, keyring, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3])


def reply(rc, out, err):
    print(json.dumps({"rc": rc, "out": out, "err": err}), flush=True)


cluster = rados.Rados(conffile=conffile, name="client.admin", conf={"keyring": keyring})
try:
    cluster.connect(timeout=timeout)
except Exception as e:  # noqa: BLE001 - every failure goes back to miglab as text
    reply(-1, "", "connect: %s" % e)
    sys.exit(1)
reply(0, "connected", "")

for line in sys.stdin:
    cmd = json.loads(line)
    target = cmd.pop("_target", "mon")
    try:
        if target == "mon":
            rc, out, err = cluster.mon_command(json.dumps(cmd), b"", timeout=timeout)
        elif target == "mgr":
            rc, out, err = cluster.mgr_command(json.dumps(cmd), b"", timeout=timeout)
        elif target.startswith("osd."):
            rc, out, err = cluster.osd_command(int(target[4:]), json.dumps(cmd), b"", timeout=timeout)
        else:
            rc, out, err = -22, b"", "unknown target %s" % target
        reply(rc, out.decode("utf-8", "replace"), err)
    except Exception as e:  # noqa: BLE001
        reply(-1, "", str(e))

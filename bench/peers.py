"""The download-only baselines on one mailbox: plain imaplib, getmail6 and mbsync into a Maildir."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import imap
from tests.services import MailServer

PACKAGES = {"getmail": "getmail6", "mbsync": "isync"}


def imaplib_fetch(server: MailServer, user: str, batch: int = 500) -> tuple[int, float]:
    """`UID FETCH <batch> BODY.PEEK[]` over one TLS connection: (mails, seconds)."""
    t0 = time.perf_counter()
    client = imap(server, user)
    client.select("INBOX", readonly=True)
    uids = (client.uid("SEARCH", "ALL")[1][0] or b"").split()
    got = 0
    for start in range(0, len(uids), batch):
        part = uids[start : start + batch]
        _typ, data = client.uid("FETCH", b"%s:%s" % (part[0], part[-1]), "(BODY.PEEK[])")
        got += sum(1 for d in data if isinstance(d, tuple))
    client.logout()
    return got, time.perf_counter() - t0


def ensure_tools() -> list[str]:
    """Install getmail6 and isync when missing (as root, with apt-get); what is still missing."""
    missing = [tool for tool in PACKAGES if shutil.which(tool) is None]
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        packages = [PACKAGES[t] for t in missing]
        print(f"installing {' '.join(packages)} (apt-get install -y)...", flush=True)
        subprocess.run(
            ["apt-get", "install", "-y", *packages],
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            capture_output=True,
            check=False,
        )
        missing = [tool for tool in PACKAGES if shutil.which(tool) is None]
    for tool in missing:
        print(f"{tool} is missing: install it with `apt-get install -y {PACKAGES[tool]}`")
    return missing


def _maildir_count(path: Path) -> int:
    return sum(1 for p in path.rglob("*") if p.is_file() and p.parent.name in ("new", "cur"))


# getmail 6.18 waits for its delivery child on a threading.Condition that its SIGCHLD handler
# notifies, and installs that handler only after fork(): when the child exits first (likely on a
# busy machine) the notice is lost, getmail waits 60 s, then aborts the run. Run it with SIGCHLD
# held until the handler is in place and a condition that remembers the notice (nothing else).
_GETMAIL_RACE_FIX = """
import runpy, signal, sys, threading, time
import getmailcore.baseclasses as b
class Sticky(threading.Condition):
    fired = False
    def notify_all(self):
        self.fired = True
        super().notify_all()
    def wait(self, timeout=None):
        end = time.monotonic() + (timeout or 60)
        while not self.fired and time.monotonic() < end:
            super().wait(0.05)
        return self.fired
fork, prepare, mask = b.ForkingBase.forkchild, b.ForkingBase._prepare_child, {signal.SIGCHLD}
def forkchild(self, *a, **k):
    signal.pthread_sigmask(signal.SIG_BLOCK, mask)  # held until the handler is in place
    try:
        return fork(self, *a, **k)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, mask)
def prepare_child(self):
    prepare(self)
    self._ForkingBase__child_exited = Sticky()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, mask)
b.ForkingBase.forkchild, b.ForkingBase._prepare_child = forkchild, prepare_child
path, sys.argv = sys.argv[1], ["getmail", *sys.argv[2:]]
runpy.run_path(path, run_name="__main__")
"""


def _getmail() -> list[str]:
    return ["/usr/bin/python3", "-c", _GETMAIL_RACE_FIX, shutil.which("getmail") or "getmail"]


def _deliver_as(root: Path) -> str:
    """getmail refuses to deliver as root: as root, deliver as `nobody` (who owns the dir)."""
    if os.geteuid() != 0:
        return ""
    for path in (root, *root.rglob("*")):
        shutil.chown(path, "nobody")
    return "user = nobody\n"


def getmail6(server: MailServer, user: str, timeout: float = 3600) -> tuple[int, float]:
    """getmail6 (SimpleIMAPSSLRetriever, read_all) into a fresh Maildir: (mails, seconds)."""
    with tempfile.TemporaryDirectory(prefix="bench-getmail-") as tmp:
        root = Path(tmp)
        maildir = root / "Maildir"
        for sub in ("new", "cur", "tmp"):
            (maildir / sub).mkdir(parents=True)
        rc = root / "getmailrc"
        rc.write_text(
            "[retriever]\ntype = SimpleIMAPSSLRetriever\n"
            f"server = {server.host}\nport = {server.imaps_port}\n"
            f"username = {user}\npassword = {server.password}\nca_certs = {server.ca_file}\n"
            'mailboxes = ("INBOX",)\n\n'
            f"[destination]\ntype = Maildir\npath = {maildir}/\n{_deliver_as(root)}\n"
            "[options]\nread_all = true\ndelete = false\nverbose = 0\n"
            "received = false\ndelivered_to = false\n"
        )
        t0 = time.perf_counter()
        subprocess.run(
            [*_getmail(), f"--rcfile={rc}", f"--getmaildir={root}"],
            check=True,
            capture_output=True,
            timeout=timeout,
        )
        seconds = time.perf_counter() - t0
        return _maildir_count(maildir), seconds


def _by_name(host: str) -> str:
    """mbsync 1.4 matches the certificate's DNS names only, not its IP addresses."""
    return "localhost" if host in ("127.0.0.1", "::1") else host


def mbsync(
    server: MailServer, user: str, *, fsync: bool = True, timeout: float = 3600
) -> tuple[int, float]:
    """mbsync (isync, `Sync Pull`) of INBOX into a fresh Maildir: (mails, seconds). `fsync`:
    its `FSync` option, on by default, which flushes each mail to the disk; mailintake does
    not wait on the disk per mail, so without it is the like-for-like figure."""
    with tempfile.TemporaryDirectory(prefix="bench-mbsync-") as tmp:
        root = Path(tmp)
        config = root / "mbsyncrc"
        (root / "mail").mkdir()
        config.write_text(
            f"FSync {'yes' if fsync else 'no'}\n\n"
            f"IMAPAccount bench\nHost {_by_name(server.host)}\nPort {server.imaps_port}\n"
            f"User {user}\n"
            f'Pass "{server.password}"\nSSLType IMAPS\nCertificateFile {server.ca_file}\n\n'
            "IMAPStore bench-far\nAccount bench\n\n"
            f"MaildirStore bench-near\nPath {root}/mail/\nInbox {root}/mail/INBOX\n\n"
            "Channel bench\nFar :bench-far:\nNear :bench-near:\nPatterns INBOX\n"
            "Create Near\nSync Pull\nExpunge None\nSyncState *\n"
        )
        config.chmod(0o600)
        t0 = time.perf_counter()
        subprocess.run(
            ["mbsync", "-c", str(config), "-q", "bench"],
            check=True,
            capture_output=True,
            timeout=timeout,
        )
        seconds = time.perf_counter() - t0
        return _maildir_count(root / "mail"), seconds

"""A scripted IMAP4rev1 and POP3 server of the test suite's own, that misbehaves on purpose.

Plain TCP on 127.0.0.1 (a random port), one thread per connection. It serves a few
messages honestly, except the one its `behaviour` is about:

- `huge_literal`: that message's body is announced as a literal of 10 GB (some junk follows,
  then nothing);
- `slowloris`: its literal is announced, then sent one byte at a time, a byte every 0.2 s;
- `drop`: the connection is closed half-way through its literal;
- `lie_size`: RFC822.SIZE / LIST say 2,000 bytes, the literal (or RETR) brings 100 MiB;
- `long_line`: a response line of 50 MB with no line end;
- `silent`: the FETCH (or RETR) is never answered, until the test releases the server;
- `refuse`: a FETCH that includes it is answered `NO`;
- `pop_long_lines`: (POP3) the message has lines of 100 KB, legal and to be read;
- `big`: (IMAP) the message is an honest 20 MiB.

`uidvalidity` may be changed between passes. `stalls` counts connections that went silent
(or trickling), `closed_by_client` those the client closed, `sent` the bytes sent,
`body_fetches` the UIDs of each FETCH of bodies.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

CHUNK = b"X" * 65536
MISBEHAVIOURS = {"huge_literal", "lie_size", "slowloris", "drop", "long_line", "silent"}
TEN_GB = 10 * 1024**3
LIE = 100 * 1024 * 1024  # what a message said to be 2,000 bytes brings


def _mail(n: int, body: bytes = b"Hello\r\n") -> bytes:
    return (
        f"From: sender{n}@example.org\r\nTo: shop@example.com\r\nSubject: hostile {n}\r\n"
        f"Message-ID: <hostile-{n}@example.org>\r\n\r\n"
    ).encode() + body


@dataclass
class HostileServer:
    behaviour: str
    bad_uid: int = 2
    uids: tuple[int, ...] = (1, 2, 3)
    uidvalidity: int = 100
    sent: int = 0
    stalls: int = 0
    closed_by_client: int = 0
    logins: int = 0
    body_fetches: list[list[int]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    _sock: socket.socket | None = None
    _conns: list[socket.socket] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.messages = {uid: _mail(uid) for uid in self.uids}
        if self.behaviour == "pop_long_lines":
            line = b"L" * 100_000 + b"\r\n"
            self.messages[self.bad_uid] = _mail(self.bad_uid, line * 3)
        if self.behaviour == "big":
            line = b"B" * 998 + b"\r\n"
            self.messages[self.bad_uid] = _mail(self.bad_uid, line * (20 * 1024))

    # -- life --------------------------------------------------------------------------
    def start(self, protocol: str) -> int:
        sock = socket.create_server(("127.0.0.1", 0))
        self._sock = sock
        handler = self._imap if protocol == "imap" else self._pop3
        threading.Thread(target=self._accept, args=(sock, handler), daemon=True).start()
        return int(sock.getsockname()[1])

    def stop(self) -> None:
        self.release.set()
        if self._sock is not None:
            self._sock.close()
        for conn in list(self._conns):
            _close(conn)

    def _accept(self, sock: socket.socket, handler: object) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn, handler), daemon=True).start()

    def _serve(self, conn: socket.socket, handler: object) -> None:
        try:
            handler(conn, conn.makefile("rb"))  # type: ignore[operator]
        except (OSError, ValueError):
            pass
        finally:
            _close(conn)

    # -- sending -----------------------------------------------------------------------
    def _send(self, conn: socket.socket, data: bytes) -> None:
        conn.sendall(data)
        with self._lock:
            self.sent += len(data)

    def _stall(self, conn: socket.socket) -> None:
        """Say nothing until released; notice when the client gives up."""
        with self._lock:
            self.stalls += 1
        conn.settimeout(0.2)
        while not self.release.is_set():
            try:
                if conn.recv(65536) == b"":
                    with self._lock:
                        self.closed_by_client += 1
                    return
            except TimeoutError:
                continue

    def _trickle(self, conn: socket.socket) -> None:
        with self._lock:
            self.stalls += 1
        try:
            while not self.release.is_set():
                self._send(conn, b"x")
                time.sleep(0.2)
        except OSError:
            with self._lock:
                self.closed_by_client += 1

    def _junk(self, conn: socket.socket, total: int) -> None:
        """Up to `total` bytes of junk (as far as the client reads them), then a stall."""
        try:
            for _ in range(total // len(CHUNK)):
                self._send(conn, CHUNK)
        except OSError:
            with self._lock:
                self.closed_by_client += 1
            return
        self._stall(conn)

    # -- IMAP --------------------------------------------------------------------------
    def _imap(self, conn: socket.socket, rfile: object) -> None:
        self._send(conn, b"* OK [CAPABILITY IMAP4rev1 UIDPLUS] hostile ready\r\n")
        for tag, command, args in _commands(rfile):
            if command == "LOGOUT":
                self._send(conn, b"* BYE\r\n" + tag + b" OK bye\r\n")
                return
            if not self._imap_command(conn, tag, command, args):
                return

    def _imap_command(self, conn: socket.socket, tag: bytes, command: str, args: str) -> bool:
        ok = tag + b" OK done\r\n"
        if command == "CAPABILITY":
            self._send(conn, b"* CAPABILITY IMAP4rev1 UIDPLUS\r\n" + ok)
        elif command == "LOGIN":
            self.logins += 1
            self._send(conn, ok)
        elif command in ("SELECT", "EXAMINE"):
            head = f"* {len(self.uids)} EXISTS\r\n* OK [UIDVALIDITY {self.uidvalidity}] v\r\n"
            head += f"* OK [UIDNEXT {max(self.uids) + 1}] n\r\n"
            self._send(conn, head.encode() + tag + b" OK [READ-WRITE] selected\r\n")
        elif command == "UID SEARCH":
            low = int(m.group(1)) if (m := re.search(r"UID (\d+):", args)) else 1
            found = " ".join(str(u) for u in self.uids if u >= low)
            self._send(conn, f"* SEARCH {found}\r\n".encode() + ok)
        elif command == "UID FETCH":
            return self._fetch(conn, tag, args)
        else:  # NOOP, UID STORE, UID EXPUNGE, ...
            self._send(conn, ok)
        return True

    def _fetch(self, conn: socket.socket, tag: bytes, args: str) -> bool:
        wanted = [u for u in _uid_set(args.split(" ", 1)[0]) if u in self.messages]
        bodies = "BODY.PEEK[]" in args or "BODY.PEEK[HEADER]" in args
        if not bodies:
            for uid in wanted:
                self._send(conn, self._meta(uid))
            self._send(conn, tag + b" OK fetched\r\n")
            return True
        self.body_fetches.append(wanted)
        if self.bad_uid in wanted and self.behaviour == "refuse":
            self._send(conn, tag + b" NO [SERVERBUG] cannot read a message\r\n")
            return True
        for seq, uid in enumerate(wanted, 1):
            bad = uid == self.bad_uid and self.behaviour in MISBEHAVIOURS
            if bad and not self._misbehave(conn, seq, uid):
                return False
            if not bad:
                raw = self.messages[uid]
                item = f"* {seq} FETCH (UID {uid} BODY[] {{{len(raw)}}}\r\n".encode()
                for piece in (item, raw, b")\r\n"):  # not joined: no copy of a big one
                    self._send(conn, piece)
        self._send(conn, tag + b" OK fetched\r\n")
        return True

    def _meta(self, uid: int) -> bytes:
        size = 2000 if (uid == self.bad_uid and self.behaviour == "lie_size") else None
        raw = self.messages[uid]
        header = f"Message-ID: <hostile-{uid}@example.org>\r\n\r\n".encode()
        return (
            (
                f"* {uid} FETCH (UID {uid} RFC822.SIZE {size or len(raw)} "
                f'INTERNALDATE "01-Dec-2026 10:00:00 +0000" '
                f"BODY[HEADER.FIELDS (MESSAGE-ID)] {{{len(header)}}}\r\n"
            ).encode()
            + header
            + b")\r\n"
        )

    def _misbehave(self, conn: socket.socket, seq: int, uid: int) -> bool:
        """The bad message's answer; False when the connection is done with."""
        start = f"* {seq} FETCH (UID {uid} BODY[] ".encode()
        b = self.behaviour
        if b == "huge_literal":
            self._send(conn, start + f"{{{TEN_GB}}}\r\n".encode())
            self._junk(conn, 64 * 1024 * 1024)
        elif b == "lie_size":
            self._send(conn, start + f"{{{LIE}}}\r\n".encode())
            self._junk(conn, LIE)
        elif b == "slowloris":
            self._send(conn, start + b"{100000}\r\n")
            self._trickle(conn)
        elif b == "drop":
            self._send(conn, start + b"{100000}\r\n" + CHUNK[:1000])
        elif b == "long_line":
            self._send(conn, start)
            self._junk(conn, 50 * 1024 * 1024)
        elif b == "silent":
            self._stall(conn)
        else:
            raise ValueError(f"unknown behaviour {b!r}")
        return False

    # -- POP3 --------------------------------------------------------------------------
    def _pop3(self, conn: socket.socket, rfile: object) -> None:
        self._send(conn, b"+OK hostile POP3 ready\r\n")
        while line := rfile.readline():  # type: ignore[attr-defined]
            words = line.decode("ascii", "replace").strip().split()
            command, args = (words[0].upper() if words else ""), words[1:]
            if command == "QUIT":
                self._send(conn, b"+OK bye\r\n")
                return
            if not self._pop3_command(conn, command, args):
                return

    def _pop3_command(self, conn: socket.socket, command: str, args: list[str]) -> bool:
        numbers = {n: uid for n, uid in enumerate(self.uids, 1)}
        if command == "PASS":
            self.logins += 1
        if command in ("UIDL", "LIST") and not args:
            lines = [
                f"{n} {f'uidl-{uid}' if command == 'UIDL' else self._pop3_size(uid)}"
                for n, uid in numbers.items()
            ]
            self._send(conn, ("+OK\r\n" + "".join(f"{x}\r\n" for x in lines) + ".\r\n").encode())
        elif command in ("RETR", "TOP"):
            uid = numbers[int(args[0])]
            if uid == self.bad_uid and self.behaviour != "pop_long_lines":
                return self._pop3_misbehave(conn)
            raw = self.messages[uid].replace(b"\r\n.", b"\r\n..")
            self._send(conn, b"+OK\r\n" + raw.rstrip(b"\r\n") + b"\r\n.\r\n")
        elif command == "STAT":
            self._send(conn, f"+OK {len(self.uids)} 0\r\n".encode())
        else:  # USER, PASS, NOOP, DELE, CAPA (refused)
            self._send(conn, b"-ERR no\r\n" if command == "CAPA" else b"+OK\r\n")
        return True

    def _pop3_size(self, uid: int) -> int:
        if uid == self.bad_uid and self.behaviour == "lie_size":
            return 2000
        return len(self.messages[uid])

    def _pop3_misbehave(self, conn: socket.socket) -> bool:
        if self.behaviour == "silent":
            self._stall(conn)
        elif self.behaviour in ("lie_size", "long_line"):
            self._send(conn, b"+OK\r\n")
            self._junk(conn, LIE)
        elif self.behaviour == "drop":
            self._send(conn, b"+OK\r\nFrom: x@example.org\r\n")
        else:
            raise ValueError(f"unknown behaviour {self.behaviour!r}")
        return False


def _commands(rfile: object) -> Iterator[tuple[bytes, str, str]]:
    """(tag, command, arguments) of each command line; `UID x` commands as one word."""
    while line := rfile.readline():  # type: ignore[attr-defined]
        tag, _, rest = line.rstrip(b"\r\n").partition(b" ")
        words = rest.decode("ascii", "replace").split(" ", 2)
        command = words[0].upper()
        if command == "UID" and len(words) > 1:
            command, args = f"UID {words[1].upper()}", (words[2] if len(words) > 2 else "")
        else:
            args = " ".join(words[1:])
        yield tag, command, args


def _uid_set(text: str) -> list[int]:
    uids: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition(":")
        top = 10**9 if high == "*" else int(high or low)
        uids.extend(range(int(low), min(top, int(low) + 100_000) + 1))
    return uids


def _close(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_RDWR)
    conn.close()

#!/usr/bin/env python3
"""migctl.py: control-socket helper for the migration tests (stdlib only).

  migctl.py req SOCK LINE...
      Send each request line on one connection, print one reply line each.
  migctl.py wait SOCK TIMEOUT_S PHASE[,PHASE...]
      Poll migrate-status every 20 ms until the phase is one of PHASEs; print
      that reply. Exit 3 if a terminal phase (completed, failed, cancelled,
      in-doubt) other than those is reached, 4 on timeout.
  migctl.py kill-at SOCK TIMEOUT_S PHASE PID [MIN_ROUND]
      Poll migrate-status every 5 ms on one connection; as soon as the phase
      is PHASE (and, for precopy, the round is at least MIN_ROUND), SIGKILL
      PID and print the reply that triggered it. Exit 3 if a terminal phase
      comes first, 4 on timeout.
  migctl.py get JSON PATH...
      Print the value at each dotted PATH (strings bare, others as JSON,
      "<missing>" when absent).
Any socket error or missing reply: a message and exit 1."""
import json
import os
import signal
import socket
import sys
import time

TERMINAL = ("completed", "failed", "cancelled", "in-doubt")


class Conn:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(10)
        try:
            self.s.connect(path)
        except OSError as e:
            sys.exit("migctl: connect %s: %s" % (path, e))
        self.f = self.s.makefile("rb")

    def raw(self, line):
        try:
            self.s.sendall(line.encode() + b"\n")
            reply = self.f.readline()
        except OSError as e:
            sys.exit("migctl: request %r: %s" % (line, e))
        if not reply.endswith(b"\n"):
            sys.exit("migctl: request %r: connection closed without a reply" % line)
        return reply.decode(errors="replace").rstrip("\n")

    def status(self):
        line = self.raw('{"cmd":"migrate-status"}')
        try:
            doc = json.loads(line)
        except ValueError:
            sys.exit("migctl: not JSON: %s" % line)
        if not doc.get("ok"):
            sys.exit("migctl: migrate-status failed: %s" % line)
        return line, doc["result"]


def cmd_req(sock, lines):
    c = Conn(sock)
    for line in lines:
        print(c.raw(line), flush=True)


def cmd_wait(sock, timeout, phases):
    want = phases.split(",")
    c = Conn(sock)
    end = time.monotonic() + float(timeout)
    while True:
        line, r = c.status()
        ph = r.get("phase")
        if ph in want:
            print(line)
            return 0
        if ph in TERMINAL:
            print(line)
            return 3
        if time.monotonic() > end:
            print(line)
            return 4
        time.sleep(0.02)


def cmd_kill_at(sock, timeout, phase, pid, min_round=0):
    c = Conn(sock)
    end = time.monotonic() + float(timeout)
    polls = 0
    while True:
        line, r = c.status()
        polls += 1
        ph = r.get("phase")
        if ph == phase and (phase != "precopy" or r.get("round", 0) >= min_round):
            os.kill(pid, signal.SIGKILL)
            print(line)
            print("polls=%d" % polls, file=sys.stderr)
            return 0
        if ph in TERMINAL:
            print(line)
            return 3
        if time.monotonic() > end:
            print(line)
            return 4
        time.sleep(0.005)


def cmd_get(doc, paths):
    try:
        d = json.loads(doc)
    except ValueError:
        d = None
    for p in paths:
        v = d
        if d is None:
            v = "<bad json>"
        else:
            for k in p.split("."):
                if isinstance(v, dict) and k in v:
                    v = v[k]
                else:
                    v = "<missing>"
                    break
        print(v if isinstance(v, str) else json.dumps(v))


def main():
    a = sys.argv[1:]
    if len(a) >= 3 and a[0] == "req":
        return cmd_req(a[1], a[2:])
    if len(a) == 4 and a[0] == "wait":
        return cmd_wait(a[1], a[2], a[3])
    if len(a) in (5, 6) and a[0] == "kill-at":
        return cmd_kill_at(a[1], a[2], a[3], int(a[4]), int(a[5]) if len(a) == 6 else 0)
    if len(a) >= 3 and a[0] == "get":
        return cmd_get(a[1], a[2:])
    sys.exit(__doc__)


if __name__ == "__main__":
    sys.exit(main() or 0)

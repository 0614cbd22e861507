#!/usr/bin/env python3
"""ctl.py SOCKET LINE...: send each LINE (a request, sent as is plus a
newline) on one connection to a ferry-vmm control socket and print the reply
line to each, in order. Exits 1 (with a message) if the socket cannot be
reached, or if a reply is missing or does not arrive within 10 s."""
import socket
import sys


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: ctl.py SOCKET LINE...")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    try:
        s.connect(sys.argv[1])
    except OSError as e:
        sys.exit("ctl.py: connect %s: %s" % (sys.argv[1], e))
    f = s.makefile("rb")
    for line in sys.argv[2:]:
        try:
            s.sendall(line.encode() + b"\n")
            reply = f.readline()
        except OSError as e:  # socket.timeout included
            sys.exit("ctl.py: request %r: %s" % (line, e))
        if not reply.endswith(b"\n"):
            sys.exit("ctl.py: request %r: connection closed without a reply line" % line)
        sys.stdout.write(reply.decode(errors="replace"))
        sys.stdout.flush()
    s.close()


if __name__ == "__main__":
    main()

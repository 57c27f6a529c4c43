#!/usr/bin/env python3
# Usage: python3 scripts/rss_after_message.py target/release/sockloop 5000
# RSS per connection of an echo server after each of N connections exchanged one message.
import socket, subprocess, sys, time, os
exe, n = sys.argv[1], int(sys.argv[2])
p = subprocess.Popen([exe, "serve", "echo", "--addr", "127.0.0.1:0"] + sys.argv[3:], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
addr = p.stdout.readline().split()[3]; host, port = addr.rsplit(":", 1)
def rss():
    for l in open(f"/proc/{p.pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1]) * 1024
warm = [socket.create_connection((host, int(port))) for _ in range(50)]
for s in warm: s.sendall(b"x" * 64); s.recv(64)
for s in warm: s.close()
time.sleep(0.5); base = rss()
conns = []
for i in range(n):
    s = socket.create_connection((host, int(port))); s.sendall(b"m" * 64)
    got = b""
    while len(got) < 64: got += s.recv(64 - len(got))
    conns.append(s)
time.sleep(0.5); after = rss()
print(f"{n} connections, each after one 64 B message: {(after - base) / n:.0f} B RSS per connection")
for s in conns: s.close()
p.terminate(); p.wait()

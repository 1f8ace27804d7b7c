#!/usr/bin/env python3
"""A loopback TCP proxy for the fault tests.

    tcpproxy.py PORT UPSTREAM[,UPSTREAM...]

Each new connection goes to the next upstream in turn (round robin); an
upstream that refuses is skipped. Signals change the link for every
connection, existing and new:

    SIGUSR1  freeze: sockets stay open, nothing is forwarded (a hung peer)
    SIGHUP   down: every connection is closed, new ones are closed at once
    SIGUSR2  up: forward again

Listens on 127.0.0.1 only. Prints "ready" on stdout once listening.
"""
import asyncio
import itertools
import signal
import sys

port = int(sys.argv[1])
upstreams = []
for u in sys.argv[2].split(","):
    host, p = u.rsplit(":", 1)
    if host not in ("127.0.0.1", "localhost"):
        sys.exit(f"{u} is not loopback")
    upstreams.append((host, int(p)))
turn = itertools.cycle(range(len(upstreams)))
state = {"link": "up"}
changed = None
conns = set()


async def pump(reader, writer):
    try:
        while True:
            while state["link"] == "frozen":
                await changed.wait()
            if state["link"] == "down":
                return
            data = await reader.read(65536)
            if not data:
                return
            while state["link"] == "frozen":
                await changed.wait()
            if state["link"] == "down":
                return
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        return
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def handle(cr, cw):
    if state["link"] == "down":
        cw.close()
        return
    for _ in range(len(upstreams)):
        host, p = upstreams[next(turn)]
        try:
            sr, sw = await asyncio.wait_for(asyncio.open_connection(host, p), 5)
            break
        except (OSError, asyncio.TimeoutError):
            continue
    else:
        cw.close()
        return
    pair = (cw, sw)
    conns.add(pair)
    try:
        await asyncio.gather(pump(cr, sw), pump(sr, cw))
    finally:
        conns.discard(pair)


def set_link(link):
    global changed
    state["link"] = link
    old, changed = changed, asyncio.Event()
    old.set()
    if link == "down":
        for cw, sw in list(conns):
            for w in (cw, sw):
                try:
                    w.transport.abort()
                except Exception:
                    pass


async def main():
    global changed
    changed = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, set_link, "frozen")
    loop.add_signal_handler(signal.SIGHUP, set_link, "down")
    loop.add_signal_handler(signal.SIGUSR2, set_link, "up")
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


try:
    asyncio.run(main())
except RuntimeError:
    pass

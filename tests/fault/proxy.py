"""A TCP proxy that adds delay, for the fault suite: the kernel here has no netem, so delay
comes from user space. It runs inside a node's network namespace; an iptables REDIRECT rule
there sends the connections other nodes make to the node's port through it. Every chunk read
from either side is held for the delay that the control file gives the remote address, then
passed on in order:

    python3 proxy.py LISTEN_HOST:PORT TARGET_HOST:PORT CONTROL.json

CONTROL.json maps a peer's IP address to milliseconds ({"10.213.0.12": 200}); it is read
again every 100 ms, so a delay applies to connections already open.
"""
import asyncio
import json
import sys
import time


class Delays:
    def __init__(self, path):
        self.path = path
        self.by_ip = {}

    async def watch(self):
        while True:
            try:
                with open(self.path) as f:
                    self.by_ip = {k: float(v) / 1000.0 for k, v in json.load(f).items()}
            except (OSError, ValueError):
                self.by_ip = {}
            await asyncio.sleep(0.1)


async def pump(reader, writer, delay_of):
    queue = asyncio.Queue()

    async def read():
        while True:
            data = await reader.read(65536)
            await queue.put((time.monotonic() + delay_of(), data))
            if not data:
                return

    async def write():
        while True:
            due, data = await queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                writer.close()
                return
            writer.write(data)
            await writer.drain()

    try:
        await asyncio.gather(read(), write())
    except (ConnectionError, OSError):
        writer.close()


async def main(listen, target, control):
    delays = Delays(control)
    asyncio.ensure_future(delays.watch())
    thost, tport = target.rsplit(":", 1)

    async def serve(creader, cwriter):
        peer_ip = cwriter.get_extra_info("peername")[0]
        try:
            ureader, uwriter = await asyncio.open_connection(thost, int(tport))
        except OSError:
            cwriter.close()
            return

        def delay():
            return delays.by_ip.get(peer_ip, 0.0)
        await asyncio.gather(pump(creader, uwriter, delay), pump(ureader, cwriter, delay),
                             return_exceptions=True)

    host, port = listen.rsplit(":", 1)
    server = await asyncio.start_server(serve, host, int(port))
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))

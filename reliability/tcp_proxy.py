"""A TCP proxy in front of a database server that the reliability scripts can take down and bring back.

    python reliability/tcp_proxy.py --listen PORT --target 127.0.0.1:5432

SIGUSR1: down, as a stopped server: every open connection is cut and new ones are refused (the port
stops listening). SIGUSR2: up again. To the client this is what stopping and restarting the server
looks like, without stopping a server that other programs share. Prints `ready` once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys


async def serve(listen: int, host: str, port: int) -> None:
    writers: set[asyncio.StreamWriter] = set()
    server: asyncio.base_events.Server | None = None

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(host, port)
        except OSError:
            client_w.close()
            return
        writers.update((client_w, server_w))
        await asyncio.gather(pipe(client_r, server_w), pipe(server_r, client_w))
        writers.difference_update((client_w, server_w))

    async def up() -> None:
        nonlocal server
        if server is None:
            server = await asyncio.start_server(handle, "127.0.0.1", listen, reuse_address=True)

    def down() -> None:
        nonlocal server
        if server is not None:
            server.close()
            server = None
        for w in list(writers):
            transport = w.transport
            if transport is not None:
                transport.abort()  # a reset, as from a server that went away
        writers.clear()

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, down)
    loop.add_signal_handler(signal.SIGUSR2, lambda: asyncio.ensure_future(up()))
    await up()
    print("ready", flush=True)
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", type=int, required=True)
    parser.add_argument("--target", required=True, help="host:port")
    args = parser.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    asyncio.run(serve(args.listen, host, int(port)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

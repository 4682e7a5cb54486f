#!/usr/bin/env python3
"""Minimal HTTPS/1.1 keep-alive origin for bench/run's TLS rows: answers every request with
a fixed 13-byte body and keeps the connection open. asyncio + ssl, one process, 127.0.0.1.
Usage: tls_origin.py PORT CERT KEY"""

import asyncio
import ssl
import sys

BODY = b"hello, bench\n"
RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n"
            % len(BODY)) + BODY
HEAD_MAX = 16384  # a request head larger than this closes the connection


async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if len(head) > HEAD_MAX:
                break
            # GET only in the bench: no request body to skip.
            writer.write(RESPONSE)
            await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


async def main(port, cert, key):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server = await asyncio.start_server(serve, "127.0.0.1", port, ssl=ctx, limit=HEAD_MAX)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3]))

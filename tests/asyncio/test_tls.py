"""TLS through the standard library over stack connections: ``ssl=`` on both ends (mutual TLS
with certificates made here by trustme), ``ssl_object``, and a STARTTLS-style upgrade."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import trustme
from tcp_aio_helpers import B4, Rec, assert_no_leaks, payload, sha, tcp_pair

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@dataclass
class Pki:
    ca: trustme.CA
    server: ssl.SSLContext  # requires a client certificate
    client: ssl.SSLContext  # presents one
    anonymous_client: ssl.SSLContext  # trusts the CA, has no certificate


@pytest.fixture(scope="module")
def pki() -> Iterator[Pki]:
    ca = trustme.CA()
    server_cert = ca.issue_cert(B4, "server.test")
    client_cert = ca.issue_cert("client@example.test", common_name="client")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(server)
    ca.configure_trust(server)
    server.verify_mode = ssl.CERT_REQUIRED
    client = ssl.create_default_context()
    ca.configure_trust(client)
    client_cert.configure_cert(client)
    anonymous = ssl.create_default_context()
    ca.configure_trust(anonymous)
    yield Pki(ca, server, client, anonymous)


def common_name(cert: dict[str, object]) -> str:
    for rdn in cert["subject"]:  # type: ignore[attr-defined]
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    raise AssertionError("no commonName")


@pytest.mark.parametrize("host", [B4, "server.test"])
async def test_mutual_tls_echo(pki: Pki, host: str) -> None:
    data = payload(1_000_000, seed=31)
    async with tcp_pair() as net:
        net.a.add_host("server.test", B4)
        peers: list[str] = []

        async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            sslobj = w.get_extra_info("ssl_object")
            assert isinstance(sslobj, ssl.SSLObject) and sslobj.server_side
            peers.append(common_name(sslobj.getpeercert()))
            while chunk := await r.read(65536):
                w.write(chunk)
                await w.drain()
            w.close()
            await w.wait_closed()

        server = await net.b.start_server(echo, B4, 0, ssl=pki.server)
        reader, writer = await net.a.open_connection(host, server.addresses[0][1],
                                                     ssl=pki.client)
        sslobj = writer.get_extra_info("ssl_object")
        assert isinstance(sslobj, ssl.SSLObject) and not sslobj.server_side
        assert sslobj.version() in ("TLSv1.2", "TLSv1.3")
        assert writer.get_extra_info("peercert") is not None
        assert writer.get_extra_info("peername") == (B4, server.addresses[0][1])
        assert writer.get_extra_info("stack") is net.a
        assert writer.get_extra_info("tcp_info")["state"] == "ESTABLISHED"

        async def send() -> None:
            for i in range(0, len(data), 100_000):
                writer.write(data[i:i + 100_000])
                await writer.drain()
            if writer.can_write_eof():  # TLS transports cannot half-close
                writer.write_eof()

        task = asyncio.create_task(send())
        got = await asyncio.wait_for(reader.readexactly(len(data)), 20)
        await task
        assert sha(got) == sha(data)
        assert peers == ["client"]
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        await assert_no_leaks(net.a, net.b)


async def test_create_connection_ssl_protocol_level(pki: Pki) -> None:
    async with tcp_pair() as net:
        server = await net.b.start_server(
            lambda r, w: w.write(b"hi from tls\n"), B4, 0, ssl=pki.server)
        tr, proto = await net.a.create_connection(Rec, B4, server.addresses[0][1],
                                                  ssl=pki.client)
        assert isinstance(proto, Rec)
        assert isinstance(tr.get_extra_info("ssl_object"), ssl.SSLObject)
        assert await proto.wait_bytes(12) == b"hi from tls\n"
        tr.close()
        assert await asyncio.wait_for(proto.lost, 5) is None
        server.close()
        await server.wait_closed()
        await assert_no_leaks(net.a, net.b)


async def test_server_rejects_a_client_without_certificate(pki: Pki) -> None:
    async with tcp_pair() as net:
        handled: list[object] = []
        server = await net.b.start_server(lambda r, w: handled.append(w), B4, 0,
                                          ssl=pki.server)
        port = server.addresses[0][1]
        try:
            reader, writer = await net.a.open_connection(B4, port, ssl=pki.anonymous_client)
        except (ssl.SSLError, ConnectionError):
            pass  # TLS 1.2: the handshake itself fails
        else:
            # TLS 1.3: the server's verdict arrives after the client's handshake; like a kernel
            # socket, the client then sees the connection end without data (or an error)
            try:
                assert await asyncio.wait_for(reader.read(1), 5) == b""
            except (ssl.SSLError, ConnectionError):
                pass
            writer.close()
        assert handled == []  # the application never saw the unauthenticated client
        server.close()
        await server.wait_closed()
        await assert_no_leaks(net.a, net.b)


async def test_client_rejects_a_wrong_server_name(pki: Pki) -> None:
    async with tcp_pair() as net:
        server = await net.b.start_server(lambda r, w: w.close(), B4, 0, ssl=pki.server)
        with pytest.raises(ssl.SSLCertVerificationError):
            await net.a.open_connection(B4, server.addresses[0][1], ssl=pki.client,
                                        server_hostname="other.test")
        server.close()
        await server.wait_closed()
        await assert_no_leaks(net.a, net.b)


async def test_starttls_upgrade_with_stream_writers(pki: Pki) -> None:
    async with tcp_pair() as net:
        net.a.add_host("server.test", B4)
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            assert await r.readline() == b"STARTTLS\n"
            assert w.get_extra_info("ssl_object") is None
            w.write(b"220 go ahead\n")
            # StreamWriter.start_tls (3.11+): server side, because this writer came from
            # start_server (its protocol has a client_connected_cb)
            await w.start_tls(pki.server)
            sslobj = w.get_extra_info("ssl_object")
            assert isinstance(sslobj, ssl.SSLObject) and sslobj.server_side
            line = await r.readline()
            w.write(b"secure " + line)
            await w.drain()
            done.set_result(common_name(sslobj.getpeercert()))
            assert await r.read() == b""
            w.close()
            await w.wait_closed()

        server = await net.b.start_server(handle, B4, 0)
        reader, writer = await net.a.open_connection("server.test", server.addresses[0][1])
        writer.write(b"STARTTLS\n")
        assert await reader.readline() == b"220 go ahead\n"
        await writer.start_tls(pki.client, server_hostname="server.test")
        assert isinstance(writer.get_extra_info("ssl_object"), ssl.SSLObject)
        writer.write(b"hello\n")
        assert await reader.readline() == b"secure hello\n"
        assert await asyncio.wait_for(done, 5) == "client"
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        await assert_no_leaks(net.a, net.b)


async def test_starttls_with_loop_start_tls(pki: Pki) -> None:
    """``loop.start_tls`` on raw stack transports (the path StreamWriter.start_tls takes)."""
    loop = asyncio.get_running_loop()
    async with tcp_pair() as net:
        accepted: asyncio.Queue[Rec] = asyncio.Queue()

        def factory() -> Rec:
            p = Rec()
            accepted.put_nowait(p)
            return p

        server = await net.b.create_server(factory, B4, 0)
        tr, _proto = await net.a.create_connection(Rec, B4, server.addresses[0][1])
        sp = await accepted.get()
        await sp.made
        tr.write(b"plain")
        await sp.wait_bytes(5)
        assert sp.transport is not None
        s_app, c_app = Rec(), Rec()
        s_task = asyncio.create_task(loop.start_tls(sp.transport, s_app, pki.server,
                                                    server_side=True))
        c_tls = await loop.start_tls(tr, c_app, pki.client, server_hostname=B4)
        s_tls = await s_task
        assert c_tls is not None and s_tls is not None
        assert tr.get_protocol() is not c_app  # the raw transport now feeds the TLS layer
        c_tls.write(b"ciphertext on the wire")
        assert await s_app.wait_bytes(22) == b"ciphertext on the wire"
        s_tls.write(b"and back")
        assert await c_app.wait_bytes(8) == b"and back"
        assert isinstance(s_tls.get_extra_info("ssl_object"), ssl.SSLObject)
        c_tls.close()
        assert await asyncio.wait_for(c_app.lost, 5) is None
        await asyncio.wait_for(s_app.lost, 5)
        server.close()
        await server.wait_closed()
        await assert_no_leaks(net.a, net.b)


async def test_stalled_tls_handshake_is_aborted_without_leaks(pki: Pki) -> None:
    """A server that never speaks TLS: a timed-out connect aborts the stack connection (the
    server sees a reset); ``ssl_handshake_timeout`` makes the TLS layer close it (like CPython's
    ``_force_close`` on a socket: the server sees the ClientHello, then EOF).  Nothing leaks."""
    async with tcp_pair() as net:
        accepted: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        server = await net.b.start_server(lambda r, w: accepted.append((r, w)), B4, 0)
        port = server.addresses[0][1]
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(net.a.open_connection(B4, port, ssl=pki.client), 0.1)
        assert len(accepted) == 1
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(accepted[0][1].wait_closed(), 2)
        with pytest.raises(ConnectionAbortedError):
            await net.a.open_connection(B4, port, ssl=pki.client, ssl_handshake_timeout=0.05)
        r, w = accepted[1]
        hello = await asyncio.wait_for(r.read(), 2)
        assert hello[:1] == b"\x16"  # a TLS handshake record, then EOF
        w.close()
        await w.wait_closed()
        server.close()
        await server.wait_closed()
        await assert_no_leaks(net.a, net.b)

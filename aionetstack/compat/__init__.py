"""Adapters that let other async libraries run over a stack.

* ``aionetstack.compat.anyio`` -- ``anyio.abc.SocketStream`` / ``Listener`` over stack TCP
  (asyncio backend): ``connect_tcp(stack, host, port)``, ``create_tcp_listener(stack, ...)``.
* ``aionetstack.compat.httpcore`` -- an ``httpcore.AsyncNetworkBackend`` over a stack and
  ``httpx_transport(stack)`` for ``httpx.AsyncClient(transport=...)`` (needs the ``httpx`` extra).

The submodules are imported on demand so that ``import aionetstack`` never needs httpx.
"""

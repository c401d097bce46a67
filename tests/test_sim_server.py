"""`mavera-tui sim` on a real socket."""


async def test_the_sim_command_socket_answers_without_nagle_delays() -> None:
    """``mavera-tui sim`` binds its own socket: asyncio turns Nagle off (TCP_NODELAY) only
    on sockets whose proto says TCP, so a socket from socket.create_server (proto 0) made
    every answer wait for a delayed ACK: 44 ms a request instead of under 1 ms."""
    import asyncio
    import socket

    from mavera_tui.sim.server import _listen

    sock = _listen("127.0.0.1", 0)
    nodelay: list[int] = []

    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        s = writer.get_extra_info("socket")
        nodelay.append(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    server = await asyncio.start_server(on_conn, sock=sock)
    try:
        port = sock.getsockname()[1]
        _, w = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(100):
            if nodelay:
                break
            await asyncio.sleep(0.01)
        w.close()
    finally:
        server.close()
        await server.wait_closed()
    assert nodelay and nodelay[0] != 0

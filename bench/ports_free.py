"""Exit 1, naming them, if any of the given loopback ports already has a listener.

`just bench` and `just bench-floor` start servers on fixed spare ports; a stack
left running there would answer in place of the fresh one, and the results
would silently measure the wrong processes.
"""
import socket
import sys

busy = []
for port in sys.argv[1:]:
    s = socket.socket()
    # As the servers do: a port with only TIME_WAIT connections is free.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", int(port)))
    except OSError:
        busy.append(port)
    finally:
        s.close()
if busy:
    sys.exit(
        f"port(s) {', '.join(busy)} on 127.0.0.1 already in use: another bench stack "
        "is still running (find it with `ss -ltnp`); stop it first"
    )

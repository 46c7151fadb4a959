# The board's way to an HTTP origin on the host, for QEMU's user networking with restrict=on:
#
#   -netdev user,...,guestfwd=tcp:10.0.2.100:80-cmd:python3 guestfwd-relay.py PORT
#
# QEMU runs this for each connection the board opens to 10.0.2.100:80, with that connection as its stdin,
# stdout and stderr (so it writes nothing else), and it relays the connection to 127.0.0.1:PORT both ways,
# passing each side's end of sending on. Used by run.sh --origin and by tests/firmware.rs.
import socket
import sys
import threading

guest = socket.socket(fileno=0)
try:
    origin = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
    origin.settimeout(None)
except (OSError, IndexError, ValueError):
    sys.exit(0)


def pipe(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


upstream = threading.Thread(target=pipe, args=(guest, origin))
upstream.start()
pipe(origin, guest)
upstream.join()

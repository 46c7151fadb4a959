#!/bin/sh
# Builds the firmware and boots it in QEMU (riscv64 `virt`, M-mode, no BIOS) with a virtio-net device on
# user networking restricted to the forwarded loopback ports: the guest reaches nothing else.
#
#   ./run.sh [PORT] [--pcap FILE]
#
# PORT (default: a free one) is forwarded from 127.0.0.1 to 10.0.2.15:12000, for TCP and UDP. The UART is
# this terminal (quit QEMU with Ctrl-A X). --pcap FILE records the guest's frames (QEMU's filter-dump).
set -eu
cd "$(dirname "$0")"

port=""
pcap=""
while [ $# -gt 0 ]; do
    case "$1" in
        --pcap) pcap="$2"; shift 2 ;;
        *) port="$1"; shift ;;
    esac
done
if [ -z "$port" ]; then
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi

cargo build --release --target riscv64gc-unknown-none-elf
elf=target/riscv64gc-unknown-none-elf/release/smoltalk-firmware-riscv

netdev="user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$port-10.0.2.15:12000,hostfwd=udp:127.0.0.1:$port-10.0.2.15:12000"
dump=""
if [ -n "$pcap" ]; then
    dump="-object filter-dump,id=dump0,netdev=n0,file=$pcap"
fi

echo "run.sh: 127.0.0.1:$port (tcp, udp) -> 10.0.2.15:12000; UART below, Ctrl-A X quits" >&2
# shellcheck disable=SC2086 # $dump is empty or three words on purpose
exec qemu-system-riscv64 -machine virt -bios none -m 64M -nographic \
    -global virtio-mmio.force-legacy=false \
    -device virtio-net-device,netdev=n0 -netdev "$netdev" $dump \
    -kernel "$elf"

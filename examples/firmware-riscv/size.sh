#!/bin/sh
# The firmware's size report: builds it (release: opt-level "s", LTO) and prints flash (.text + .rodata) and
# static RAM (.data + .bss, with the driver's DMA pages and receive buffers apart), the stack, and the
# largest static objects, as a Markdown table (for docs/embedded.md). Needs readelf and nm (binutils).
set -eu
cd "$(dirname "$0")"
cargo build --release --target riscv64gc-unknown-none-elf >&2
exec python3 - target/riscv64gc-unknown-none-elf/release/smoltalk-firmware-riscv <<'PY'
import subprocess, sys
elf = sys.argv[1]
sections = {}
for line in subprocess.run(["readelf", "-S", "-W", elf], capture_output=True, text=True, check=True).stdout.splitlines():
    fields = line.replace("[ ", "[").split()
    if len(fields) > 6 and fields[1].startswith("."):
        sections[fields[1]] = int(fields[5], 16)
symbols = []
for line in subprocess.run(["nm", "-S", "-C", elf], capture_output=True, text=True, check=True).stdout.splitlines():
    parts = line.split(None, 3)
    if len(parts) == 4 and parts[2] in "bBdDrR":
        symbols.append((int(parts[1], 16), parts[3]))
size = lambda name: next((s for s, n in symbols if n == name), 0)
text, rodata = sections.get(".text", 0), sections.get(".rodata", 0)
data, bss, stack = sections.get(".data", 0), sections.get(".bss", 0), sections.get(".stack", 0)
dma, rx = size("smoltalk_firmware_riscv::nic::DMA_POOL"), size("smoltalk_firmware_riscv::nic::RX_POOL")
print("| part | bytes |\n|---|---:|")
for label, value in [
    ("flash: .text", text), ("flash: .rodata", rodata), ("**flash (.text + .rodata)**", text + rodata),
    ("RAM: .data", data), ("RAM: .bss", bss),
    ("of which the driver's DMA pages (virtqueues)", dma), ("of which the driver's receive buffers", rx),
    ("**static RAM apart from the driver's DMA (.data + .bss - DMA - receive buffers)**", data + bss - dma - rx),
    ("stack (reserved)", stack),
]:
    print(f"| {label} | {value:,} |")
print("\nLargest static objects (RAM):\n")
for s, n in sorted((s, n) for s, n in symbols if s >= 256 and not n.startswith(".L"))[-10:]:
    print(f"- `{n}`: {s:,} bytes")
PY

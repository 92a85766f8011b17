#!/usr/bin/env bash
# Native backtrace of a command that dies of SIGSEGV (no gdb needed): preloads a tiny library
# whose SIGSEGV handler prints backtrace_symbols_fd to stderr, then resolves the frames that
# fall inside shared objects with addr2line.  bash scripts/segv_backtrace.sh python3 -c "..."
set -uo pipefail
dir=$(mktemp -d)
cat > "$dir/segv.c" <<'C'
#include <execinfo.h>
#include <signal.h>
#include <unistd.h>
static void on_segv(int sig) {
  void* frames[64];
  const int n = backtrace(frames, 64);
  backtrace_symbols_fd(frames, n, 2);
  _exit(128 + sig);
}
__attribute__((constructor)) static void install(void) {
  struct sigaction sa = {0};
  sa.sa_handler = on_segv;
  sa.sa_flags = SA_RESETHAND;
  sigaction(SIGSEGV, &sa, 0);
}
C
gcc -shared -fPIC -o "$dir/libsegv.so" "$dir/segv.c" || exit 1
LD_PRELOAD="$dir/libsegv.so" "$@" 2> "$dir/err.txt"; rc=$?
echo "exit status $rc"
tail -50 "$dir/err.txt"
# Frames "lib.so(+0xOFFSET)" / "lib.so(sym+0xOFF)": resolve the +0xOFFSET ones.
grep -oE '^[^ (]+\.so[^ (]*\(\+0x[0-9a-f]+\)' "$dir/err.txt" | while read -r frame; do
  lib=${frame%%(*}; off=${frame##*(+}; off=${off%)}
  printf '%s +%s: %s\n' "$(basename "$lib")" "$off" "$(addr2line -f -C -e "$lib" "$off" 2>/dev/null | paste -sd' ')"
done

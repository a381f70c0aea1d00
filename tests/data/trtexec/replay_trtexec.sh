#!/bin/sh
# NOT TensorRT. A stand-in for trtexec used by edgeify's tests, which have no NVIDIA GPU and no TensorRT.
# It prints a REAL recorded trtexec log (replay.log next to it: a copy of one of tests/data/trtexec/*.log, see
# SOURCES.json) and writes the files the real tool writes (--saveEngine, --timingCacheFile) with placeholder
# bytes that no TensorRT can load. Its arguments are appended to calls.log. `--help` prints the recording's
# first line (the banner with the TensorRT version). A number in replay.exit makes it exit with that code.
dir=$(cd "$(dirname "$0")" && pwd)
log="$dir/replay.log"
printf '%s\n' "$*" >> "$dir/calls.log"
case " $* " in *" --help "*) head -n 1 "$log"; exit 0;; esac
plan=""; cache=""; onnx=""
for a in "$@"; do
  case "$a" in
    --saveEngine=*) plan="${a#--saveEngine=}";;
    --timingCacheFile=*) cache="${a#--timingCacheFile=}";;
    --onnx=*) onnx="${a#--onnx=}";;
  esac
done
cat "$log"
code=0
if [ -f "$dir/replay.exit" ]; then code=$(cat "$dir/replay.exit"); fi
if [ "$code" != 0 ]; then exit "$code"; fi
if [ -n "$plan" ]; then printf 'placeholder written by the edgeify test stand-in for %s\n' "$onnx" > "$plan"; fi
if [ -n "$cache" ] && [ ! -f "$cache" ]; then printf 'placeholder timing cache\n' > "$cache"; fi
exit 0

#!/usr/bin/env bash
# GPU readiness check (issue 15, item 4): on a machine with a real GPU, in under 10 minutes,
#   1. unpack the Deno carried in .device/ (and the npm packages the tests import),
#   2. check that WebGPU finds an adapter that is not a fallback (CPU) one, and print its info,
#   3. run the test suite (every kernel test runs under both the CPU and the GPU plans),
#   4. run `deno task bench step --no-tfjs` and `deno task bench conv --no-tfjs`, and `bench conv`
#      again under the CPU plans (do the GPU plans beat what lavapipe was tuned for, on a GPU?),
#   5. write a BENCHMARKS.md-style section named after the adapter and the date.
# Each part has its own time limit, so one that hangs cannot eat the others' time; a failed part
# is reported in the section and the script goes on (exit status 1 at the end if any failed).
#
# Prepare, on the machine with the checkout (.device/ is git-ignored; the device tool carries at
# most 64 MiB, so tfjs (290 MB) stays behind, and the dataset travels only when asked):
#   bash bench/device-check.sh --pack
# which writes
#   .device/deno.xz              = xz -T2 -9 -k -c node_modules/deno/deno
#   .device/node_modules.tar.xz  = the npm packages the tests and tasks import (fast-png, jpeg-js,
#                                  vega, vega-lite, the type packages the type check reads, and
#                                  their dependencies: ~2.5 MB; tfjs is left out: the benches run
#                                  with --no-tfjs and load tfjs only when asked)
#   .device/lib/libvulkan.so.1   = this machine's Vulkan loader, used where none is installed
#   .device/fashion-mnist/       = with --pack --with-data: /usr/share/datasets/fashion-mnist
#                                  (30 MB; .device/ is then ~63 MB), for the training tests
# Run there, from the repository root (the device tool: carry [".device"]; its $OUT comes back):
#   bash bench/device-check.sh
# A try on a CPU-only machine (lavapipe), one small test file and one quick bench part:
#   bash bench/device-check.sh --allow-fallback --tests tests/kernel_plan_test.ts \
#     --parts conv --quick --out /tmp/device-check
#
# Options:
#   --out DIR          where the section and the logs go (default: $OUT when set, else
#                      runs/device-check)
#   --allow-fallback   go on when only a fallback (CPU) adapter is found (to try the script)
#   --tests "FILES"    test files to run (default: tests/; files that need the fashion-mnist
#                      dataset are left out when /usr/share/datasets/fashion-mnist is missing)
#   --parts "PARTS"    bench parts (default: "step conv conv@cpu"; PART@KIND runs PART under
#                      those kernel plans); "" for none
#   --quick            pass --quick to the bench (fewer, smaller cases)
#   --kernel-plan K    the benches' kernel plans where PARTS names none (auto | gpu | cpu;
#                      default auto)
#   --pack             build .device/ from this checkout and stop (--with-data: the dataset too)
# Time limits in seconds (environment): TEST_SECONDS (default 240), STEP_SECONDS (120),
# CONV_SECONDS (75, for each conv part), other parts BENCH_SECONDS (90).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

say() { echo "device-check: $*" >&2; }

out_dir="${OUT:-$ROOT/runs/device-check}"
allow_fallback=0
tests="tests/"
parts="step conv conv@cpu"
quick=()
kernel_plan=auto
pack=0
with_data=0
# An option that takes a value must have one (under set -u a missing $2 would abort unexplained).
value_of() {
  if [ $# -lt 2 ] || [ -z "$2" ] || [ "${2#--}" != "$2" ]; then
    say "$1 needs a value (see --help)"
    exit 2
  fi
}
while [ $# -gt 0 ]; do
  case "$1" in
    --out | --tests | --parts | --kernel-plan) value_of "$@" ;;
  esac
  case "$1" in
    --out) out_dir="$2"; shift 2 ;;
    --allow-fallback) allow_fallback=1; shift ;;
    --tests) tests="$2"; shift 2 ;;
    --parts) parts="$2"; shift 2 ;;
    --quick) quick=(--quick); shift ;;
    --kernel-plan) kernel_plan="$2"; shift 2 ;;
    --pack) pack=1; shift ;;
    --with-data) with_data=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) say "unknown option $1 (see --help)"; exit 2 ;;
  esac
done
case "$kernel_plan" in
  auto | gpu | cpu) ;;
  *) say "--kernel-plan must be one of auto, gpu, cpu; got \"$kernel_plan\""; exit 2 ;;
esac

# ---- --pack: Deno and the small npm packages into .device/ ----
# The npm packages the code imports by bare name, minus tfjs (bench-only, 290 MB, loaded lazily),
# and the type packages `deno test` type-checks against.
NPM_ROOTS=(fast-png jpeg-js vega vega-lite @types/node @webgpu/types)
if [ "$pack" = 1 ]; then
  [ -x node_modules/deno/deno ] || { say "no node_modules/deno/deno here: run ./setup.sh first"; exit 1; }
  mkdir -p .device
  if [ ! -f .device/deno.xz ] || [ node_modules/deno/deno -nt .device/deno.xz ]; then
    say "compressing Deno (xz -9: a few minutes)"
    xz -T2 -9 -k -c node_modules/deno/deno >.device/deno.xz.tmp
    mv .device/deno.xz.tmp .device/deno.xz
  fi
  # The dependency closure of NPM_ROOTS in node_modules' flat layout.
  mapfile -t packages < <(node_modules/deno/deno eval '
    const seen = new Set(); const todo = Deno.args.slice();
    while (todo.length) {
      const name = todo.pop(); if (seen.has(name)) continue; seen.add(name);
      const meta = JSON.parse(Deno.readTextFileSync(`node_modules/${name}/package.json`));
      todo.push(...Object.keys(meta.dependencies ?? {}));
    }
    console.log([...seen].sort().join("\n"));' "${NPM_ROOTS[@]}")
  tar -C node_modules -cf - "${packages[@]}" | xz -T2 -9 >.device/node_modules.tar.xz.tmp
  mv .device/node_modules.tar.xz.tmp .device/node_modules.tar.xz
  # The Vulkan loader (0.5 MB), for a machine whose driver came without it.
  loader=$(ldconfig -p 2>/dev/null | sed -n 's/.*libvulkan.so.1 (libc6,x86-64) => //p' | head -1)
  if [ -n "$loader" ]; then
    mkdir -p .device/lib
    cp -L "$loader" .device/lib/libvulkan.so.1
  fi
  if [ "$with_data" = 1 ]; then
    mkdir -p .device/fashion-mnist
    cp /usr/share/datasets/fashion-mnist/*.gz .device/fashion-mnist/
  fi
  say "packed ${#packages[@]} npm packages; .device/ holds:"
  ls -l .device >&2
  exit 0
fi

mkdir -p "$out_dir"
out_dir=$(cd "$out_dir" && pwd)
LOG="$out_dir/device-check.log"
: >"$LOG"
log() { echo "$*" | tee -a "$LOG" >&2; }
started=$(date +%s)
failed=()

# ---- 1. Deno and the npm packages ----
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
DENO=
if [ -f .device/deno.xz ]; then
  if xz -dc .device/deno.xz >"$work/deno" 2>>"$LOG"; then
    chmod +x "$work/deno"
    DENO="$work/deno"
  else
    log "could not unpack .device/deno.xz (truncated? rebuild it with --pack)"
  fi
fi
if [ -n "$DENO" ]; then
  :
elif [ -x node_modules/deno/deno ]; then
  DENO="$ROOT/node_modules/deno/deno"
elif command -v deno >/dev/null 2>&1; then
  DENO=$(command -v deno)
else
  say "no Deno: carry .device/deno.xz (bash bench/device-check.sh --pack) or run ./setup.sh"
  exit 1
fi
# The carried packages go in only where no node_modules is (never over a checkout's own).
if [ ! -e node_modules ] && [ -f .device/node_modules.tar.xz ]; then
  mkdir node_modules
  tar -C node_modules -xJf .device/node_modules.tar.xz
  log "unpacked .device/node_modules.tar.xz into node_modules/"
fi
log "deno: $("$DENO" --version | head -1)"

export DENO_WEBGPU_BACKEND="${DENO_WEBGPU_BACKEND:-vulkan}" XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
export NO_COLOR=1

# ---- 2. the adapter ----
# Containers often mount the NVIDIA driver's Vulkan library without its ICD manifest: point the
# Vulkan loader at it then.
icds=$(compgen -G '/usr/share/vulkan/icd.d/*.json' || true; compgen -G '/etc/vulkan/icd.d/*.json' || true)
icds=$(echo $icds)
if [[ "$icds" != *nvidia* ]] && [ -z "${VK_ICD_FILENAMES:-}" ] &&
  [[ "$(ldconfig -p 2>/dev/null)" == *libGLX_nvidia.so.0* ]]; then
  printf '{"file_format_version":"1.0.0","ICD":{"library_path":"libGLX_nvidia.so.0","api_version":"1.3"}}\n' \
    >"$work/nvidia_icd.json"
  export VK_ICD_FILENAMES="$work/nvidia_icd.json"
  log "no NVIDIA Vulkan ICD manifest installed: using $VK_ICD_FILENAMES (libGLX_nvidia.so.0)"
fi
if [[ "$(ldconfig -p 2>/dev/null)" != *libvulkan.so.1* ]]; then
  if [ -f .device/lib/libvulkan.so.1 ]; then
    export LD_LIBRARY_PATH="$ROOT/.device/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    log "no Vulkan loader installed: using the carried .device/lib/libvulkan.so.1"
  else
    log "warning: no libvulkan.so.1 (the Vulkan loader): install libvulkan1"
  fi
fi
log "Vulkan ICDs: ${icds:-none installed}"

adapter_json=$(timeout -k 5 60 "$DENO" eval --unstable-webgpu '
  const adapter = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) { console.log("null"); Deno.exit(0); }
  const info = adapter.info;
  console.log(JSON.stringify({
    name: info.description || info.device || info.vendor,
    vendor: info.vendor, architecture: info.architecture, device: info.device,
    description: info.description, isFallbackAdapter: info.isFallbackAdapter ?? false,
    subgroupMinSize: info.subgroupMinSize, subgroupMaxSize: info.subgroupMaxSize,
    maxComputeWorkgroupStorageSize: adapter.limits.maxComputeWorkgroupStorageSize,
    maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize,
    features: [...adapter.features].sort(),
  }));' 2>>"$LOG") || adapter_json=null
log "adapter: $adapter_json"
if [ "$adapter_json" = null ] || [ -z "$adapter_json" ]; then
  log "no WebGPU adapter found (see $LOG): is the GPU's Vulkan driver installed and visible?"
  exit 1
fi
adapter_name=$(echo "$adapter_json" | "$DENO" eval 'console.log(JSON.parse(await new Response(Deno.stdin.readable).text()).name)')
if [[ "$adapter_json" == *'"isFallbackAdapter":true'* ]]; then
  if [ "$allow_fallback" = 0 ]; then
    log "only a fallback (CPU) adapter ($adapter_name): no GPU visible to Vulkan (--allow-fallback to go on)"
    exit 1
  fi
  log "going on with the fallback adapter $adapter_name (--allow-fallback)"
fi

# Run one part under a time limit; record its status and duration for the section.
declare -A status seconds
run_part() {
  local name=$1 limit=$2
  shift 2
  local t0 rc=0
  t0=$(date +%s)
  log "== $name (limit ${limit}s): $*"
  timeout -k 10 "$limit" "$@" >"$out_dir/$name.log" 2>&1 || rc=$?
  seconds[$name]=$(($(date +%s) - t0))
  case $rc in
    0) status[$name]=ok ;;
    124 | 137) status[$name]="timed out after ${limit} s" ;;
    *) status[$name]="failed (exit $rc)" ;;
  esac
  [ "$rc" = 0 ] || failed+=("$name")
  log "   $name: ${status[$name]} in ${seconds[$name]} s (log: $out_dir/$name.log)"
}

# ---- 3. the tests ----
test_files=()
skipped=()
for path in $tests; do
  if [ -d "$path" ]; then
    for f in "$path"/*_test.ts; do test_files+=("$f"); done
  else
    test_files+=("$path")
  fi
done
# The carried dataset goes where the loader looks, when that place is free and writable.
if [ ! -e /usr/share/datasets/fashion-mnist ] && [ -d .device/fashion-mnist ] &&
  mkdir -p /usr/share/datasets 2>/dev/null &&
  ln -s "$ROOT/.device/fashion-mnist" /usr/share/datasets/fashion-mnist 2>/dev/null; then
  log "linked /usr/share/datasets/fashion-mnist to the carried .device/fashion-mnist"
fi
if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  kept=()
  for f in "${test_files[@]}"; do
    if grep -qE 'TINY_TRAIN_FLAGS|dataset: "fashion-mnist"' "$f"; then skipped+=("$f"); else kept+=("$f"); fi
  done
  test_files=("${kept[@]}")
fi
[ ${#skipped[@]} -eq 0 ] || log "left out (no /usr/share/datasets/fashion-mnist): ${skipped[*]}"
# Test files run side by side on a machine with many cores (each its own WebGPU device).
parallel=()
if [ "$(nproc)" -ge 8 ]; then
  parallel=(--parallel)
  export DENO_JOBS="${DENO_JOBS:-8}"
fi
if [ ${#test_files[@]} -gt 0 ]; then
  run_part tests "${TEST_SECONDS:-240}" "$DENO" test -A --no-check=remote "${parallel[@]}" \
    "${test_files[@]}"
  test_summary=$(grep -E '^(ok|FAILED) \|' "$out_dir/tests.log" | tail -1 || true)
  test_failures=$(sed -n '/^FAILURES/,$p' "$out_dir/tests.log" | grep -F ' => ' | head -20 || true)
fi

# ---- 4. the benches ----
bench_sections=()
for spec in $parts; do
  part=${spec%@*}
  plan=$kernel_plan
  [ "$spec" = "$part" ] || plan=${spec#*@}
  case $part in
    step) limit=${STEP_SECONDS:-120} ;;
    conv) limit=${CONV_SECONDS:-75} ;;
    *) limit=${BENCH_SECONDS:-90} ;;
  esac
  report="$out_dir/bench-$spec.md"
  rm -f "$report"
  run_part "bench-$spec" "$limit" "$DENO" run -A --unstable-webgpu tasks/bench.ts "$part" \
    --no-tfjs "${quick[@]}" --kernel-plan "$plan" --report "$report"
  if [ -f "$report" ]; then bench_sections+=("$report"); fi
done

# ---- 5. the section ----
section="$out_dir/BENCHMARKS-device.md"
{
  echo "## Device check: $adapter_name ($(date -u +%Y-%m-%d))"
  echo
  echo "Written by \`bench/device-check.sh\` in $(($(date +%s) - started)) s on $(uname -n):" \
    "$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | sed 's/.*: //' || echo 'unknown CPU'), $(nproc) cores;" \
    "$(command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1 || echo 'no nvidia-smi')."
  echo
  echo "Adapter: \`$adapter_json\`"
  echo
  echo "| part | result | seconds |"
  echo "| --- | --- | --- |"
  for name in tests $(for p in $parts; do echo "bench-$p"; done); do
    [ -n "${status[$name]:-}" ] && echo "| $name | ${status[$name]} | ${seconds[$name]} |"
  done
  echo
  if [ -n "${status[tests]:-}" ]; then
    echo "Tests (${#test_files[@]} files${parallel[*]:+, ${DENO_JOBS} in parallel}; the kernel" \
      "tests run both kernel plans): ${test_summary:-no summary line (see tests.log)}"
    [ ${#skipped[@]} -eq 0 ] || echo "Left out (no fashion-mnist dataset here): ${skipped[*]}"
    if [ -n "${test_failures:-}" ]; then
      echo
      echo '```'
      echo "$test_failures"
      echo '```'
    fi
    echo
  fi
  # Each bench report is a one-section BENCHMARKS.md: drop its "# Benchmarks" head, demote its
  # "## part (date)" to a subsection named after the part and its kernel plans ("conv@cpu").
  for report in "${bench_sections[@]}"; do
    spec=$(basename "$report" .md)
    sed -n '/^## /,$p' "$report" | sed "s/^## [^(]*/### bench ${spec#bench-} /"
    echo
  done
} >"$section"
log "wrote $section"
cat "$section"
if [ ${#failed[@]} -gt 0 ]; then
  log "failed parts: ${failed[*]}"
  exit 1
fi

#!/usr/bin/env bash
# `make image-check`: builds the real image (deploy/image/Dockerfile) with podman on a stand-in for the Ray
# base -- a Debian bookworm root made here with debootstrap, plus the Ray image's user `ray`
# (debian-base.Containerfile) -- then runs the smoke study (smoke.sh) in a container and prints the image
# size and the smoke study's time. Not part of `make test` (it installs the whole lock into an image).
#   needs: podman (buildah), runc and debootstrap (apt-get install podman buildah runc debootstrap), root, network
#   to a Debian mirror (DEBIAN_MIRROR) and to the package index of the lock. The host's pip configuration
#   comes along: its file:// indexes (global.extra-index-url) and its CA bundle ($PIP_CERT or global.cert, for a
#   TLS-inspecting proxy) are mounted read-only into the build and used there.
set -euo pipefail
cd "$(dirname "$0")/../.."
work=${IMAGE_CHECK_WORK:-/var/tmp/thoraxmae-image-check}
debootstrap_image=localhost/thoraxmae-debootstrap:bookworm
base=localhost/thoraxmae-raybase:check
image=localhost/thoraxmae:check
for tool in podman runc debootstrap; do
  command -v "$tool" >/dev/null || { echo "image-check needs $tool: apt-get install -y podman buildah runc debootstrap" >&2; exit 1; }
done
mkdir -p "$work"
# runc, with the host's open-file limit and a process limit below the host's: crun refuses hybrid cgroup
# hosts, and a sandbox may refuse podman's default limits (setrlimit: operation not permitted).
podman=(podman --runtime "${IMAGE_CHECK_RUNTIME:-runc}")
limits=(--ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" --ulimit "nproc=16384:16384")

if ! podman image exists "$debootstrap_image"; then
  echo "== debootstrap bookworm (minbase + python3, python3-venv, ca-certificates)"
  rm -rf "$work/rootfs"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$work/rootfs" \
    "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$work/debootstrap.log"
  tar -C "$work/rootfs" -c . | podman import - "$debootstrap_image" >/dev/null
fi
"${podman[@]}" build -q "${limits[@]}" -f deploy/image/debian-base.Containerfile -t "$base" deploy/image >/dev/null

# The host's local (file://) package indexes, mounted where the host's pip finds them, and its CA bundle.
mounts=() pip_args=""
for url in $(python3 -m pip config get global.extra-index-url 2>/dev/null || true); do
  if [[ $url == file://* ]]; then
    dir=${url#file://}; dir=${dir%/simple*}
    mounts+=(--volume "$dir:$dir:ro") && pip_args+=" --extra-index-url $url"
  fi
done
cert=${PIP_CERT:-$(python3 -m pip config get global.cert 2>/dev/null || true)}
if [[ -f $cert ]]; then
  mounts+=(--volume "$cert:/tmp/host-ca.pem:ro") && pip_args+=" --cert /tmp/host-ca.pem"
fi

echo "== image build (deploy/image/Dockerfile on $base)"
t0=$(date +%s)
"${podman[@]}" build "${limits[@]}" -f deploy/image/Dockerfile --build-arg BASE_IMAGE="$base" --build-arg PIP_INDEX_ARGS="$pip_args" \
  "${mounts[@]}" -t "$image" . >"$work/build.log" 2>&1 || { tail -40 "$work/build.log"; exit 1; }
build_s=$(( $(date +%s) - t0 ))
size=$(podman image inspect --format '{{.Size}}' "$image")
user=$(podman image inspect --format '{{.Config.User}}' "$image")

echo "== smoke study in a container (deploy/image/smoke.sh)"
t0=$(date +%s)
"${podman[@]}" run --rm "${limits[@]}" --shm-size=2g "$image" bash /opt/thoraxmae/smoke.sh /opt/thoraxmae/configs /home/ray/smoke \
  >"$work/smoke.log" 2>&1 || { tail -40 "$work/smoke.log"; exit 1; }
smoke_s=$(( $(date +%s) - t0 ))
grep -E "^(done:|smoke study finished)" "$work/smoke.log" || true
echo "image        $image (user $user)"
echo "image size   $(( size / 1000000 )) MB"
echo "build time   ${build_s} s"
echo "smoke study  ${smoke_s} s (container start to exit; log: $work/smoke.log)"

#!/bin/sh
# deps.sh: install the Debian 12 packages a bulkhead task needs, and nothing else.
#
# Used by the Makefile (make, make run, make test, make bench) and by the Dockerfile, so the
# image and a developer's machine cannot drift apart. Usage: scripts/deps.sh SET...
# where SET is one of: build, run, test, bench, runtime, loadtest. Only missing packages are
# installed; when not root, the apt-get line is printed and the script exits 1.
set -eu

pkgs_build="gcc make pkg-config libc6-dev libhttp-parser-dev libpq-dev libjansson-dev libhiredis-dev libssl-dev libsodium-dev"
pkgs_run="postgresql-15 postgresql-client-15 util-linux"
pkgs_test="libcmocka-dev libcurl4-openssl-dev postgresql-15 postgresql-client-15 redis-server nginx-light \
chromium fonts-dejavu-core docker-compose clang libclang-rt-14-dev procps iproute2 curl prometheus"
# Commands the tests need that another source may have installed already (a kubectl from the
# Kubernetes project's repository, Node.js from NodeSource): the Debian package is installed
# only when the command is missing. Debian 12's kubectl (kubernetes-client, 1.20) embeds
# kustomize v2, which deploy/kubernetes/ is written for too; Node.js and npm install the
# schema checker's packages (tests/kube/package.json).
cmds_test="kubectl:kubernetes-client node:nodejs npm:npm"
pkgs_bench="libmicrohttpd-dev wrk hey postgresql-15 postgresql-client-15 procps curl iproute2 nginx-light libh2o-evloop-dev valgrind"
# What the server image needs: shared libraries, curl for HEALTHCHECK. Nothing else: no load
# generators in a production image.
pkgs_runtime="libhttp-parser2.9 libpq5 libjansson4 libhiredis0.14 libssl3 libsodium23 curl ca-certificates"
# The image that runs load-test.sh against the stack (Dockerfile target "loadtest").
pkgs_loadtest="hey wrk curl ca-certificates"

want=""
cmds=""
for set in "$@"; do
    case "$set" in
    build) want="$want $pkgs_build" ;;
    run) want="$want $pkgs_run" ;;
    test)
        want="$want $pkgs_test"
        cmds="$cmds $cmds_test"
        ;;
    bench) want="$want $pkgs_bench" ;;
    runtime) want="$want $pkgs_runtime" ;;
    loadtest) want="$want $pkgs_loadtest" ;;
    *)
        echo "deps.sh: unknown set '$set' (build, run, test, bench, runtime, loadtest)" >&2
        exit 2
        ;;
    esac
done

missing=""
for p in $want; do
    case " $missing " in *" $p "*) continue ;; esac
    status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [ "$status" = "installed" ] || missing="$missing $p"
done
for c in $cmds; do
    command -v "${c%%:*}" >/dev/null 2>&1 && continue
    case " $missing " in *" ${c#*:} "*) continue ;; esac
    missing="$missing ${c#*:}"
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
    echo "bulkhead needs these Debian packages:$missing" >&2
    echo "run as root:  apt-get update && apt-get install -y$missing" >&2
    exit 1
fi
echo "deps.sh: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
# A fresh machine has empty package lists: refresh once, then install.
apt-get update -q >/dev/null
# The server packages must not start system-wide daemons: tests and `make run` start their own.
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing >/dev/null

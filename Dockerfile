# syntax=docker/dockerfile:1
# The fedpod image: one binary, /usr/local/bin/fedpod, run as user 10001 — the hub,
# the pod workers and the coordinator Jobs of k8s/ all use it (docs/deploy.md).
#
#   docker build -t fedpod:0.1.0 .
#
# The build stage installs exactly what scripts/bootstrap installs, by running it,
# so the two cannot drift, and builds with scripts/build (no tests, no benchmarks).
# No Docker engine runs on fedpod's CI or development machines, so this file is not
# built there; the runtime stage checks that every library the binary needs resolves
# (`ldd`), so a missing runtime package fails the build instead of the first pod.

FROM debian:12 AS build
COPY scripts/bootstrap /src/scripts/bootstrap
RUN /src/scripts/bootstrap && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/root/.cache/ccache \
    scripts/build -DFEDPOD_BUILD_TESTS=OFF -DFEDPOD_BUILD_BENCH=OFF \
 && install -m 0755 build/cli/fedpod /usr/local/bin/fedpod

FROM debian:12-slim
# Runtime libraries only: the package behind each library the binary links
# (readelf -d build/cli/fedpod, dpkg -S, checked with apt-cache policy on Debian 12):
#   libtorch-dev          -> libtorch1.13               (libtorch, libtorch_cpu, libc10; CPU only)
#                            and libopenblas0-openmp: its BLAS (the reference libblas3
#                            that libtorch1.13 pulls in is about 10x slower)
#   libzmq3-dev           -> libzmq5
#   libcapnp-dev          -> libcapnp-0.9.2             (libcapnp, libkj)
#   libyaml-cpp-dev       -> libyaml-cpp0.7
#   libspdlog-dev         -> libspdlog1.10, libfmt9
#   libsqlite3-dev        -> libsqlite3-0
#   libsodium-dev         -> libsodium23
#   prometheus-cpp-dev    -> libprometheus-cpp-core1.0  (the pull/push libraries are not linked)
#   libcpp-httplib-dev    -> libcpp-httplib0.11
#   libseccomp-dev        -> libseccomp2; and bubblewrap, which confines job runners
#   libgfshare-dev        -> libgfshare2                (Shamir shares of secure aggregation)
#   libssl-dev            -> libssl3; and ca-certificates, the system store clients
#                            verify a hub's certificate against
# libstdc++6, libgcc-s1 and libc6 are in debian:12-slim already. Header-only
# packages (cppzmq-dev, libcli11-dev, nlohmann-json3-dev) need nothing at run time,
# and python3 is not needed. coreutils' `install` copies key files in the pods' init
# containers (k8s/base).
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libtorch1.13 libopenblas0-openmp libzmq5 libcapnp-0.9.2 libyaml-cpp0.7 libspdlog1.10 libfmt9 \
      libsqlite3-0 libsodium23 libprometheus-cpp-core1.0 libcpp-httplib0.11 \
      libseccomp2 bubblewrap libgfshare2 libssl3 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/fedpod /usr/local/bin/fedpod
RUN if ldd /usr/local/bin/fedpod | grep 'not found'; then \
      echo "fedpod needs the libraries above: add their Debian packages to this stage" >&2; exit 1; \
    fi \
 && fedpod version \
 && groupadd --system --gid 10001 fedpod \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/fedpod --no-create-home \
      --shell /usr/sbin/nologin fedpod \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/fedpod /var/lib/fedpod/hub \
      /var/lib/fedpod/state /var/lib/fedpod/output
USER 10001:10001
WORKDIR /var/lib/fedpod
ENV TMPDIR=/tmp
ENTRYPOINT ["fedpod"]
CMD ["--help"]

# syntax=docker/dockerfile:1
#
# The Coffer image: `coffer` (controller, csi, server, ...) and, when the tree has it, the
# `kubectl-coffer` plugin, on distroless: no shell, no package manager, user 65532. Nothing is
# written outside mounted volumes, so it runs with a read-only root filesystem.
#
#   make image                      # IMAGE=ghcr.io/coffer-dev/coffer, tag = Cargo.toml's version
#
# Build: the official Rust image on Debian 12 (bookworm), the same Debian and glibc as the
# runtime image. Its version is at least Cargo.toml's rust-version.
FROM docker.io/library/rust:1.95.0-bookworm AS build
WORKDIR /src
COPY . .
# The registry and target directories are BuildKit caches, kept between builds; the binaries are
# copied out of the target cache, which the final stage cannot see.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bins \
    && mkdir -p /out \
    && cp target/release/coffer /out/ \
    && if [ -f target/release/kubectl-coffer ]; then cp target/release/kubectl-coffer /out/; fi

# Runtime: glibc, libgcc, CA certificates and tzdata, nothing else.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/coffer"]
CMD ["--help"]

# delegate container image: linux/arm64 (AgentCore Runtime) and linux/amd64.
#
#   docker buildx build --platform linux/arm64,linux/amd64 -t delegate:0.1.0 .
#
# Each platform is built natively (under emulation on a foreign builder), so C dependencies
# (aws-lc, SQLite) need no cross toolchain. Checked by host/cli/tests/cli.rs
# (`dockerfile_is_multi_stage_non_root_and_listens_on_8080`, and
# `image_entrypoint_serves_ping_and_an_invocation_on_all_interfaces`, which runs the binary with
# the ENTRYPOINT + CMD below), since no Docker engine runs in CI. See docs/agentcore.md.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# The guest components (the embedded ServiceNow agent) are built for wasm32-wasip2 by
# tests/artifacts/build.rs; a build script cannot install the target itself.
RUN rustup target add wasm32-wasip2
COPY . .
# `production`: the release profile with whole-program LTO (Cargo.toml), what BENCHMARKS.md
# measures; it builds a few minutes longer than `--release`.
RUN cargo build --profile production --locked -p delegate \
    && install -D -m 0755 target/production/delegate /out/delegate

# Small runtime image: glibc, libgcc and CA certificates, no shell, runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/delegate /usr/local/bin/delegate
USER nonroot:nonroot
# The AgentCore Runtime contract: HTTP on 0.0.0.0:8080 (`server.listen`'s default).
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/delegate"]
CMD ["serve", "--config", "/etc/delegate/delegate.toml"]

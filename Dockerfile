# Multi-stage: build with the Rust toolchain, ship only the binary on a slim Debian.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY worker worker
COPY benches benches
# libjpeg-turbo (shrink-on-load) is built from the turbojpeg-sys crate's source: cmake, and nasm
# for its SIMD (chosen at run time, so the binary stays portable).
RUN apt-get update -qq && apt-get install -y -qq cmake nasm >/dev/null
# The default build is portable (x86-64 baseline; the hot loops pick AVX2 or SSE4.1 at start),
# so the image runs on other machines than the builder.
RUN cargo build --release --locked --bin shmpipe

FROM debian:bookworm-slim
COPY --from=build /src/target/release/shmpipe /usr/local/bin/shmpipe
# Workers are the same binary re-executed; no other file is needed.
USER 65534:65534
ENTRYPOINT ["shmpipe"]
CMD ["--help"]

# Multi-stage build of the relais binary.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY .cargo ./.cargo
COPY src ./src
COPY migrations ./migrations
COPY config ./config
# The patched actix-http ([patch.crates-io]) and the web client (include_bytes!).
COPY vendor ./vendor
COPY web ./web
RUN cargo build --release --locked

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/relais --create-home relais
WORKDIR /var/lib/relais
COPY --from=build /src/target/release/relais /usr/local/bin/relais
COPY config ./config
USER relais
ENV RELAIS__SERVER__BIND=0.0.0.0:8080 \
    RELAIS__SERVER__DATA_DIR=/var/lib/relais/data
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/relais"]
CMD ["serve"]
